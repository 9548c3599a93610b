//! `--http-listen`: the OIDC discovery documents and `/healthz` over real HTTP on 127.0.0.1,
//! checked against FetchKeys over the real Unix socket and with an independent verifier
//! (jsonwebtoken fed the served JWK Set) and against the JWKs the tests' own verifier builds
//! from the FetchKeys DER. Then what an untrusted client can take: `/healthz` probes that hang
//! up, connections beyond the limit or open too long, HTTP served while the signer's executor is
//! busy. The last tests run the `signet` binary itself: flag checks (exit 64), a clear bind
//! error, and HTTP stopping with gRPC on SIGTERM.

mod common;

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use clap::Parser as _;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::{Channel, Endpoint, Uri};

use common::verifier;
use signet::api::v1::external_jwt_signer_client::ExternalJwtSignerClient;
use signet::api::v1::{FetchKeysRequest, FetchKeysResponse, SignJwtRequest};
use signet::api::ExternalJwtSignerService;
use signet::cli::ServeArgs;
use signet::config::ServeConfig;
use signet::keyring::{KeyRing, KeySet, PublishedKey};
use signet::keys::{
    pkcs8_from_pem, Algorithm, JwsSignature, JwsSigner, KeyError, LocalKey, SigningKey,
};
use signet::server::{HttpLimits, Listener, OidcHttpServer};
use signet::signer::TokenSigner;

const ISSUER: &str = "https://issuer.example/cluster-1";
const REFRESH_HINT_SECS: u64 = 45;

/// A real apiserver Sign request (shared testdata/apiserver-claims.txt, `default-sa-1h`).
fn recorded_claims() -> String {
    common::recorded_claims()
        .into_iter()
        .find(|case| case.name == "default-sa-1h")
        .expect("the recorded claims hold default-sa-1h")
        .claims
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwks")
        .join(name)
}

fn key(alg: Algorithm) -> SigningKey {
    let local = match alg {
        // A fixture: RSA generation in a debug build of the ring variant takes seconds.
        Algorithm::RS256 => {
            let pem = std::fs::read(fixture("rsa-2048.pem")).unwrap();
            LocalKey::from_pkcs8(&pkcs8_from_pem(&pem).unwrap()).unwrap()
        }
        _ => LocalKey::generate(alg, 0).unwrap().0,
    };
    SigningKey::new(Arc::new(local))
}

fn excluded(key: &SigningKey) -> PublishedKey {
    PublishedKey {
        exclude_from_oidc_discovery: true,
        ..PublishedKey::of(key)
    }
}

/// `signet serve`'s flags, parsed by the real CLI definition.
#[derive(clap::Parser)]
struct ServeFlags {
    #[command(flatten)]
    serve: ServeArgs,
}

/// signet in this process: the gRPC socket and the HTTP listener, wired as `signet serve`
/// wires them, from flags parsed by the real CLI.
struct Signet {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    http: SocketAddr,
    keyring: Arc<KeyRing>,
    stop: Option<(oneshot::Sender<()>, oneshot::Sender<()>)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Signet {
    async fn start(keys: KeySet) -> Self {
        Self::start_with(keys, HttpLimits::default()).await
    }

    async fn start_with(keys: KeySet, limits: HttpLimits) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("signet.sock");
        let refresh_hint = format!("{REFRESH_HINT_SECS}s");
        let args = ServeFlags::try_parse_from([
            "signet serve",
            "--socket",
            socket.to_str().unwrap(),
            "--refresh-hint",
            &refresh_hint,
            "--http-listen",
            "127.0.0.1:0",
            "--issuer",
            ISSUER,
        ])
        .unwrap()
        .serve;
        let config = ServeConfig::from_args(&args).unwrap();
        let keyring = Arc::new(KeyRing::new(keys));
        let signer = Arc::new(TokenSigner::new(
            keyring.clone(),
            config.max_token_expiration,
            config.refresh_hint,
        ));
        let listener =
            Listener::bind(&config.socket, config.socket_mode, &config.allowed_uids).unwrap();
        let http = OidcHttpServer::bind(config.oidc_http.as_ref().unwrap(), signer.clone())
            .await
            .unwrap()
            .with_limits(limits);
        let http_addr = http.local_addr();
        let (grpc_stop, grpc_stopped) = oneshot::channel::<()>();
        let (http_stop, http_stopped) = oneshot::channel::<()>();
        let grace = Duration::from_secs(5);
        let tasks = vec![
            tokio::spawn(async move {
                signet::server::serve(
                    listener,
                    ExternalJwtSignerService::new(signer),
                    grace,
                    async {
                        let _ = grpc_stopped.await;
                    },
                )
                .await
                .unwrap();
            }),
            tokio::spawn(
                http.spawn(
                    async {
                        let _ = http_stopped.await;
                    },
                    grace,
                )
                .unwrap()
                .stopped(),
            ),
        ];
        Self {
            _dir: dir,
            socket,
            http: http_addr,
            keyring,
            stop: Some((grpc_stop, http_stop)),
            tasks,
        }
    }

    async fn grpc(&self) -> ExternalJwtSignerClient<Channel> {
        let path = self.socket.clone();
        let channel =
            Endpoint::try_from("http://localhost")
                .unwrap()
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                    }
                }))
                .await
                .unwrap();
        ExternalJwtSignerClient::new(channel)
    }

    async fn fetch_keys(&self) -> FetchKeysResponse {
        self.grpc()
            .await
            .fetch_keys(FetchKeysRequest {})
            .await
            .unwrap()
            .into_inner()
    }

    async fn sign(&self) -> String {
        let claims = recorded_claims();
        let signed = self
            .grpc()
            .await
            .sign(SignJwtRequest {
                claims: claims.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        format!("{}.{claims}.{}", signed.header, signed.signature)
    }

    async fn get(&self, path: &str) -> HttpResponse {
        request(self.http, Method::GET, path).await
    }

    async fn stop(mut self) {
        let (grpc, http) = self.stop.take().unwrap();
        let _ = grpc.send(());
        let _ = http.send(());
        for task in self.tasks.drain(..) {
            tokio::time::timeout(common::DEADLINE, task)
                .await
                .expect("a server task did not end after shutdown")
                .unwrap();
        }
    }
}

#[derive(Debug)]
struct HttpResponse {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl HttpResponse {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {self:?}"))
            .to_str()
            .unwrap()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

/// One HTTP/1.1 request on a fresh connection, with hyper's client.
async fn request(addr: SocketAddr, method: Method, path: &str) -> HttpResponse {
    try_request(addr, method, path)
        .await
        .unwrap_or_else(|err| panic!("GET {path}: {err}"))
}

/// [`request`], failing if the server closes the connection instead of answering; bounded by
/// [`common::DEADLINE`].
async fn try_request(
    addr: SocketAddr,
    method: Method,
    path: &str,
) -> Result<HttpResponse, hyper::Error> {
    let exchange = async {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        Ok(HttpResponse {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await?.to_bytes(),
        })
    };
    tokio::time::timeout(common::DEADLINE, exchange)
        .await
        .unwrap_or_else(|_| panic!("no answer to {path} within the deadline"))
}

/// A request written in full on a connection of its own, its answer not read yet: unlike
/// hyper's client, this says when the server has the request.
struct RawRequest(TcpStream);

impl RawRequest {
    /// `GET path`, asking the server to close the connection after its answer.
    async fn get(addr: SocketAddr, path: &str) -> Self {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        Self(stream)
    }

    /// Everything the server sends until it closes the connection (bounded by
    /// [`common::DEADLINE`]).
    async fn answer(mut self) -> String {
        let mut answer = Vec::new();
        tokio::time::timeout(common::DEADLINE, self.0.read_to_end(&mut answer))
            .await
            .expect("the server neither answered nor closed the connection")
            .unwrap();
        String::from_utf8(answer).unwrap()
    }

    /// Hangs up before the answer, as a client that gives up does: the server sees the end of
    /// the stream while the request is in flight. Returns once the server has closed its side,
    /// with what it sent before.
    async fn hang_up(mut self) -> String {
        self.0.shutdown().await.unwrap();
        self.answer().await
    }
}

/// An ES256 key that counts its signatures and holds each one until [`Self::open`]; it says
/// when one starts and when one is done.
#[derive(Debug)]
struct GatedKey {
    key: LocalKey,
    signs: AtomicUsize,
    open: Mutex<bool>,
    opened: Condvar,
    started: mpsc::UnboundedSender<()>,
    done: mpsc::UnboundedSender<()>,
}

/// The receiving ends of a [`GatedKey`]'s announcements: a signature started, one is done.
struct GateEvents {
    started: mpsc::UnboundedReceiver<()>,
    done: mpsc::UnboundedReceiver<()>,
}

impl GateEvents {
    async fn started(&mut self) {
        tokio::time::timeout(common::DEADLINE, self.started.recv())
            .await
            .expect("no signature started")
            .unwrap();
    }

    async fn done(&mut self) {
        tokio::time::timeout(common::DEADLINE, self.done.recv())
            .await
            .expect("no signature finished")
            .unwrap();
    }
}

impl GatedKey {
    fn new() -> (Arc<Self>, GateEvents) {
        let (started, started_rx) = mpsc::unbounded_channel();
        let (done, done_rx) = mpsc::unbounded_channel();
        let key = Self {
            key: LocalKey::generate(Algorithm::ES256, 0).unwrap().0,
            signs: AtomicUsize::new(0),
            open: Mutex::new(false),
            opened: Condvar::new(),
            started,
            done,
        };
        let events = GateEvents {
            started: started_rx,
            done: done_rx,
        };
        (Arc::new(key), events)
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }

    fn signs(&self) -> usize {
        self.signs.load(Ordering::SeqCst)
    }
}

impl JwsSigner for GatedKey {
    fn algorithm(&self) -> Algorithm {
        self.key.algorithm()
    }

    fn public_key_der(&self) -> &[u8] {
        self.key.public_key_der()
    }

    fn sign(&self, signing_input: &[u8]) -> Result<JwsSignature, KeyError> {
        self.signs.fetch_add(1, Ordering::SeqCst);
        let _ = self.started.send(());
        drop(
            self.opened
                .wait_while(self.open.lock().unwrap(), |open| !*open)
                .unwrap(),
        );
        let signature = self.key.sign(signing_input);
        let _ = self.done.send(());
        signature
    }
}

fn jsonwebtoken_alg(alg: Algorithm) -> jsonwebtoken::Algorithm {
    match alg {
        Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
        Algorithm::ES384 => jsonwebtoken::Algorithm::ES384,
        Algorithm::ES512 => unreachable!("jsonwebtoken does not verify ES512"),
    }
}

/// Verifies `token` as a relying party would: the key named by the header's kid, from the
/// served JWK Set, with jsonwebtoken.
fn verify_with_jwks(jwks: &JwkSet, token: &str, alg: Algorithm) -> serde_json::Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    let kid = header.kid.expect("signet's header carries a kid");
    let jwk = jwks
        .find(&kid)
        .unwrap_or_else(|| panic!("kid {kid} is not in the served JWK Set"));
    let mut validation = Validation::new(jsonwebtoken_alg(alg));
    // Real apiserver claims: their exp is in the past and their audience is the cluster's.
    validation.validate_exp = false;
    validation.validate_aud = false;
    jsonwebtoken::decode::<serde_json::Value>(
        token,
        &DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .unwrap_or_else(|err| panic!("a {alg} token does not verify with the served JWKS: {err}"))
    .claims
}

/// Checks every served JWK, not only the one that signs, against the key FetchKeys publishes
/// under its kid. The expected JWK is built by the tests' independent verifier
/// (`verifier::jwk_json`, RustCrypto only) from the FetchKeys PKIX DER. The served set must hold
/// the same keys in the same order, excluded ones left out, and each JWK must equal the expected
/// one: `kid`, `use`, `alg`, `kty` and the key material (`n`/`e`, `crv`/`x`/`y`). A retired key
/// published with another key's parameters under its kid fails here.
fn assert_served_jwks_match_fetch_keys(served: &serde_json::Value, fetched: &FetchKeysResponse) {
    let expected: Vec<serde_json::Value> = fetched
        .keys
        .iter()
        .filter(|key| !key.exclude_from_oidc_discovery)
        .map(|key| {
            let mut jwk = verifier::jwk_json(&key.key_id, &key.key)
                .unwrap_or_else(|err| panic!("FetchKeys key {}: {err}", key.key_id));
            // The verifier leaves ES512's `alg` out (jsonwebtoken cannot name it); the served
            // JWK carries it, as kube-apiserver's does.
            if jwk.get("alg").is_none() {
                jwk["alg"] = verifier::algorithm_of_spki(&key.key).unwrap().into();
            }
            jwk
        })
        .collect();
    let served = served["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("the served JWK Set has no keys array: {served}"));
    let kids = |jwks: &[serde_json::Value]| -> Vec<String> {
        jwks.iter().map(|jwk| jwk["kid"].to_string()).collect()
    };
    assert_eq!(
        kids(served),
        kids(&expected),
        "the served JWK Set lists other keys than FetchKeys publishes"
    );
    for (served, expected) in served.iter().zip(&expected) {
        assert_eq!(
            served, expected,
            "the served JWK for kid {} is not the key FetchKeys publishes under it",
            expected["kid"]
        );
    }
}

#[tokio::test]
async fn served_jwks_matches_fetch_keys_and_verifies_signed_tokens() {
    for signing_alg in [Algorithm::ES256, Algorithm::RS256, Algorithm::ES384] {
        let signing = key(signing_alg);
        let others = [key(Algorithm::ES256), key(Algorithm::ES384)];
        let published = vec![
            excluded(&others[1]),
            PublishedKey::of(&others[0]),
            PublishedKey::of(&signing),
        ];
        let keys = KeySet::new(Some(signing.clone()), published, SystemTime::now()).unwrap();
        let signet = Signet::start(keys).await;

        let fetched = signet.fetch_keys().await;
        assert_eq!(fetched.refresh_hint_seconds, REFRESH_HINT_SECS as i64);
        let response = signet.get("/openid/v1/jwks").await;
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.header("content-type"), "application/jwk-set+json");
        assert_eq!(
            response.header("cache-control"),
            format!("public, max-age={}", fetched.refresh_hint_seconds)
        );
        let jwks: JwkSet = serde_json::from_slice(&response.body).unwrap();

        // Same kids, same order, excluded ones left out.
        let fetched_kids: Vec<&str> = fetched
            .keys
            .iter()
            .filter(|key| !key.exclude_from_oidc_discovery)
            .map(|key| key.key_id.as_str())
            .collect();
        let served_kids: Vec<&str> = jwks
            .keys
            .iter()
            .map(|jwk| jwk.common.key_id.as_deref().unwrap())
            .collect();
        assert_eq!(served_kids, fetched_kids);
        assert_eq!(served_kids, [others[0].kid(), signing.kid()]);
        assert_eq!(
            fetched.keys.len(),
            3,
            "FetchKeys still lists the excluded key"
        );
        // Every JWK's key material, not just the signing key's (which the token below checks).
        assert_served_jwks_match_fetch_keys(&response.json(), &fetched);

        let claims = verify_with_jwks(&jwks, &signet.sign().await, signing_alg);
        assert_eq!(claims["sub"], "system:serviceaccount:default:default");

        let config = signet.get("/.well-known/openid-configuration").await;
        assert_eq!(config.status, StatusCode::OK);
        assert_eq!(config.header("content-type"), "application/json");
        assert_eq!(
            config.header("cache-control"),
            format!("public, max-age={REFRESH_HINT_SECS}")
        );
        let mut algs = vec!["ES256", signing_alg.as_str()];
        algs.sort_unstable();
        algs.dedup();
        assert_eq!(
            config.json(),
            serde_json::json!({
                "issuer": ISSUER,
                "jwks_uri": format!("{ISSUER}/openid/v1/jwks"),
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": algs,
            })
        );
        signet.stop().await;
    }
}

#[tokio::test]
async fn documents_follow_the_keyring_when_keys_change() {
    let first = key(Algorithm::ES256);
    let keys = KeySet::single(first.clone());
    let signet = Signet::start(keys).await;
    let before = signet.get("/openid/v1/jwks").await.json();
    assert_eq!(before["keys"].as_array().unwrap().len(), 1);
    assert_served_jwks_match_fetch_keys(&before, &signet.fetch_keys().await);

    // A rotation: a new ES384 key signs, the old one stays published.
    let second = key(Algorithm::ES384);
    signet.keyring.publish(
        KeySet::new(
            Some(second.clone()),
            vec![PublishedKey::of(&first), PublishedKey::of(&second)],
            SystemTime::now(),
        )
        .unwrap(),
    );
    let response = signet.get("/openid/v1/jwks").await;
    let after: JwkSet = serde_json::from_slice(&response.body).unwrap();
    let kids: Vec<_> = after
        .keys
        .iter()
        .map(|jwk| jwk.common.key_id.clone().unwrap())
        .collect();
    assert_eq!(kids, [first.kid(), second.kid()]);
    // The retired key's JWK too: its kid alone says nothing of the key material served under it.
    assert_served_jwks_match_fetch_keys(&response.json(), &signet.fetch_keys().await);
    verify_with_jwks(&after, &signet.sign().await, Algorithm::ES384);
    let config = signet.get("/.well-known/openid-configuration").await.json();
    assert_eq!(
        config["id_token_signing_alg_values_supported"],
        serde_json::json!(["ES256", "ES384"])
    );
    signet.stop().await;
}

#[tokio::test]
async fn other_methods_and_paths_are_refused() {
    let signing = key(Algorithm::ES256);
    let keys = KeySet::single(signing.clone());
    let signet = Signet::start(keys).await;

    let get = signet.get("/openid/v1/jwks").await;
    let head = request(signet.http, Method::HEAD, "/openid/v1/jwks").await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-type"), "application/jwk-set+json");
    assert_eq!(
        head.header("content-length"),
        get.body.len().to_string().as_str()
    );

    for method in [Method::POST, Method::PUT, Method::DELETE] {
        for path in [
            "/openid/v1/jwks",
            "/.well-known/openid-configuration",
            "/healthz",
        ] {
            let response = request(signet.http, method.clone(), path).await;
            assert_eq!(
                response.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            assert_eq!(response.header("allow"), "GET, HEAD");
        }
    }
    for path in [
        "/",
        "/openid/v1/jwks/",
        "/openid/v1/jwks.json",
        "/.well-known/openid-configuration/x",
        "/metrics",
    ] {
        assert_eq!(
            signet.get(path).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    signet.stop().await;
}

#[tokio::test]
async fn healthz_signs_with_the_active_key_and_shows_nothing_of_it() {
    let signing = key(Algorithm::ES256);
    let keys = KeySet::single(signing.clone());
    let signet = Signet::start(keys).await;
    let health = signet.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.text(), "ok\n");
    assert_eq!(health.header("cache-control"), "no-store");
    signet.stop().await;

    // No signing key: unhealthy, with the reason.
    let keys = KeySet::new(None, vec![PublishedKey::of(&signing)], SystemTime::now()).unwrap();
    let signet = Signet::start(keys).await;
    let health = signet.get("/healthz").await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health.text(), "no signing key is active\n");
    signet.stop().await;

    // The kid that signs publishes another key's public half: every token it signs would fail
    // verification. The health check catches it, and says so by kid only.
    let impostor = SigningKey::with_kid(
        signing.kid().to_owned(),
        Arc::new(LocalKey::generate(Algorithm::ES256, 0).unwrap().0),
    );
    let keys = KeySet::new(
        Some(impostor),
        vec![PublishedKey::of(&signing)],
        SystemTime::now(),
    )
    .unwrap();
    let signet = Signet::start(keys).await;
    let health = signet.get("/healthz").await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    let text = health.text();
    assert!(text.contains("does not verify"), "{text}");
    assert!(text.contains(signing.kid()), "{text}");
    // Nothing token-like: no base64url JSON ("eyJ", outside the kid, which is random
    // base64url and may hold it by chance) and nothing but one short line.
    let without_kid = text.replace(signing.kid(), "");
    assert!(
        !without_kid.contains("eyJ") && text.lines().count() == 1 && text.len() < 200,
        "{text}"
    );
    signet.stop().await;
}

#[tokio::test]
async fn a_set_with_nothing_to_publish_is_unavailable_not_empty() {
    // Only a verification key excluded from discovery: like the apiserver, serve no documents.
    let legacy = key(Algorithm::ES256);
    let keys = KeySet::new(None, vec![excluded(&legacy)], SystemTime::now()).unwrap();
    let signet = Signet::start(keys).await;
    for path in ["/openid/v1/jwks", "/.well-known/openid-configuration"] {
        let response = signet.get(path).await;
        assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(response.header("cache-control"), "no-store");
        assert!(response.text().contains("no key is published"), "{path}");
    }
    signet.stop().await;
}

#[tokio::test]
async fn a_healthz_probe_that_hangs_up_neither_abandons_its_check_nor_starts_another() {
    let (key, mut events) = GatedKey::new();
    let signet = Signet::start(KeySet::single(SigningKey::new(key.clone()))).await;

    // A probe starts the check, then hangs up while it runs; so do others meanwhile.
    let first = RawRequest::get(signet.http, "/healthz").await;
    events.started().await;
    assert_eq!(first.hang_up().await, "", "answered before the check ended");
    for _ in 0..3 {
        let probe = RawRequest::get(signet.http, "/healthz").await;
        assert_eq!(probe.hang_up().await, "");
    }
    // The check ends with no probe left to wait for it, and records its verdict all the same:
    // a probe now (well within the second) gets that verdict without a new signature.
    key.open();
    events.done().await;
    assert_eq!(signet.get("/healthz").await.text(), "ok\n");
    assert_eq!(key.signs(), 1, "probes that hung up started more checks");
    signet.stop().await;
}

#[tokio::test]
async fn a_check_that_does_not_finish_in_time_is_unhealthy_and_goes_on() {
    let (key, mut events) = GatedKey::new();
    let limits = HttpLimits {
        health_probe_timeout: Duration::from_millis(200),
        ..HttpLimits::default()
    };
    let signet = Signet::start_with(KeySet::single(SigningKey::new(key.clone())), limits).await;
    // The key is stuck (an HSM that does not answer): the probe gets 503 at its timeout, not
    // an answer only when the connection's lifetime ends.
    let stuck = signet.get("/healthz").await;
    assert_eq!(
        stuck.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        stuck.text()
    );
    assert!(
        stuck.text().contains("has not finished within"),
        "{}",
        stuck.text()
    );
    events.started().await;
    // The check went on; once it ends, a probe gets its verdict without another signature.
    key.open();
    events.done().await;
    assert_eq!(signet.get("/healthz").await.text(), "ok\n");
    assert_eq!(key.signs(), 1);
    signet.stop().await;
}

#[tokio::test]
async fn healthz_probes_that_arrive_while_a_check_runs_share_it() {
    let (key, mut events) = GatedKey::new();
    let signet = Signet::start(KeySet::single(SigningKey::new(key.clone()))).await;
    let first = RawRequest::get(signet.http, "/healthz").await;
    events.started().await;
    let mut probes = vec![first];
    for _ in 0..3 {
        probes.push(RawRequest::get(signet.http, "/healthz").await);
    }
    key.open();
    for probe in probes {
        let answer = probe.answer().await;
        assert!(
            answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.ends_with("\r\n\r\nok\n"),
            "{answer}"
        );
    }
    assert_eq!(key.signs(), 1);
    signet.stop().await;
}

#[tokio::test]
async fn a_connection_beyond_the_limit_is_closed_and_a_freed_slot_serves_again() {
    let (key, mut events) = GatedKey::new();
    let limits = HttpLimits {
        max_connections: 1,
        ..HttpLimits::default()
    };
    let signet = Signet::start_with(KeySet::single(SigningKey::new(key.clone())), limits).await;

    // The only slot, held for as long as the health check takes.
    let holder = RawRequest::get(signet.http, "/healthz").await;
    events.started().await;
    let refused = try_request(signet.http, Method::GET, "/openid/v1/jwks").await;
    assert!(
        refused.is_err(),
        "a connection beyond the limit was served: {refused:?}"
    );

    key.open();
    let answer = holder.answer().await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    // The holder's connection is closed (Connection: close), so its slot is free again.
    assert_eq!(signet.get("/openid/v1/jwks").await.status, StatusCode::OK);
    signet.stop().await;
}

#[tokio::test]
async fn a_client_that_never_reads_its_answers_is_cut_off_at_the_connection_lifetime() {
    let limits = HttpLimits {
        max_connections: 1,
        lifetime: Duration::from_millis(500),
        ..HttpLimits::default()
    };
    let signet = Signet::start_with(KeySet::single(key(Algorithm::ES256)), limits).await;

    // Pipelined requests, their answers never read: once the socket buffers fill, the server
    // cannot write, and stops reading; then the client cannot write either. Only the lifetime
    // ends the connection, and the client's next write then fails.
    let mut stalled = TcpStream::connect(signet.http).await.unwrap();
    let requests = format!(
        "GET /openid/v1/jwks HTTP/1.1\r\nHost: {}\r\n\r\n",
        signet.http
    )
    .repeat(1000);
    let cut_off = tokio::time::timeout(common::DEADLINE, async {
        loop {
            if let Err(err) = stalled.write_all(requests.as_bytes()).await {
                return err;
            }
        }
    })
    .await
    .expect("a client that never reads held its connection past the lifetime");
    assert!(
        matches!(
            cut_off.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        "{cut_off}"
    );
    // The only slot is free again.
    assert_eq!(signet.get("/openid/v1/jwks").await.status, StatusCode::OK);
    signet.stop().await;
}

#[tokio::test]
async fn http_is_served_while_the_signers_executor_is_busy() {
    let signet = Signet::start(KeySet::single(key(Algorithm::ES256))).await;
    // This test's runtime is single-threaded, as `signet serve`'s is. Block its only thread, as
    // a burst of Sign calls keeps it busy: the HTTP server must answer all the same.
    let mut stream = std::net::TcpStream::connect(signet.http).unwrap();
    stream.set_read_timeout(Some(common::DEADLINE)).unwrap();
    write!(
        stream,
        "GET /openid/v1/jwks HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        signet.http
    )
    .unwrap();
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .expect("no answer while the signer's executor was busy");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    signet.stop().await;
}

// --- the binary -----------------------------------------------------------------------------

/// Runs `signet serve` with `args` (and its sockets in `dir`) and waits, bounded by
/// [`common::DEADLINE`], for it to exit: a flag accepted by mistake makes signet serve, and the
/// test then fails at the deadline instead of hanging.
fn serve_exits(dir: &Path, args: &[&str]) -> (i32, String) {
    let socket = dir.join("s.sock");
    let mut argv = vec!["serve", "--socket", socket.to_str().unwrap()];
    argv.extend_from_slice(args);
    let (status, stderr) = common::run_to_exit(&argv);
    (status.code().expect("exited, not killed"), stderr)
}

#[test]
fn flag_mistakes_exit_64_with_a_message_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--http-listen", "127.0.0.1:0"], "--issuer"),
        (
            &[
                "--http-listen",
                "127.0.0.1:0",
                "--issuer",
                "http://issuer.example",
            ],
            "https",
        ),
        (
            &[
                "--http-listen",
                "127.0.0.1:0",
                "--issuer",
                "https://issuer.example/?a=b",
            ],
            "query",
        ),
        (
            &[
                "--http-listen",
                "127.0.0.1:0",
                "--issuer",
                "https://issuer.example/#frag",
            ],
            "fragment",
        ),
        (
            &["--http-listen", "127.0.0.1:0", "--issuer", "issuer.example"],
            "--issuer",
        ),
        (
            &[
                "--http-listen",
                "127.0.0.1:0",
                "--issuer",
                "https://issuer.example",
                "--jwks-uri",
                "http://issuer.example/jwks",
            ],
            "--jwks-uri",
        ),
        (&["--issuer", "https://issuer.example"], "--http-listen"),
        (&["--http-listen", "localhost"], "--http-listen"),
    ];
    for (args, expected) in cases {
        let (code, stderr) = serve_exits(dir.path(), args);
        assert_eq!(code, 64, "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(
            !dir.path().join("s.sock").exists(),
            "bound before checking flags"
        );
    }
}

#[test]
fn a_taken_http_port_is_a_clear_error_and_leaves_no_socket() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, stderr) = serve_exits(
        dir.path(),
        &["--http-listen", &addr, "--issuer", "https://issuer.example"],
    );
    assert_ne!(code, 0);
    assert!(
        stderr.contains(&format!("cannot listen for HTTP on {addr}")),
        "{stderr}"
    );
    assert!(!dir.path().join("s.sock").exists());
    assert!(!dir.path().join("admin.sock").exists());
}

#[tokio::test]
async fn the_binary_serves_http_beside_grpc_and_stops_both_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("s.sock");
    let admin = dir.path().join("admin.sock");
    // Killed on drop if the test fails before it exits.
    let mut signet = common::SignetProcess::spawn(&[
        "serve",
        "--socket",
        socket.to_str().unwrap(),
        "--admin-socket",
        admin.to_str().unwrap(),
        "--http-listen",
        "127.0.0.1:0",
        "--issuer",
        ISSUER,
        "--jwks-uri",
        "https://keys.example/cluster-1/jwks",
        "--refresh-hint",
        "30s",
    ]);
    // The bound address comes from the log line that announces the listener (bounded wait).
    let line = signet.wait_for_line("serving OIDC discovery documents");
    let announced: serde_json::Value = serde_json::from_str(&line).unwrap();
    let addr: SocketAddr = announced["addr"]
        .as_str()
        .unwrap_or_else(|| panic!("no addr in {line}"))
        .parse()
        .unwrap();

    let jwks = request(addr, Method::GET, "/openid/v1/jwks").await;
    assert_eq!(jwks.status, StatusCode::OK);
    assert_eq!(jwks.header("cache-control"), "public, max-age=30");
    let config = request(addr, Method::GET, "/.well-known/openid-configuration")
        .await
        .json();
    assert_eq!(config["issuer"], ISSUER);
    assert_eq!(config["jwks_uri"], "https://keys.example/cluster-1/jwks");
    assert_eq!(request(addr, Method::GET, "/healthz").await.text(), "ok\n");
    assert!(socket.exists());

    signet.signal(rustix::process::Signal::TERM);
    // Bounded: fails (and kills signet) at the deadline if it does not stop. `signet serve`
    // exits only once the HTTP server's task has ended, so a clean exit here is HTTP stopping
    // with gRPC.
    let status = signet.wait_exit();
    assert!(status.success(), "{status:?}\n{}", signet.stderr_text());
    assert!(!socket.exists());
    // Nothing token-like ("eyJ", base64url JSON) in the log, outside the kid: random
    // base64url, which the startup line names and which may hold it by chance.
    let kid = jwks.json()["keys"][0]["kid"].as_str().unwrap().to_owned();
    let log = signet.stderr_text();
    assert!(log.contains(&kid), "the startup line names the kid: {log}");
    assert!(
        !log.replace(&kid, "").contains("eyJ"),
        "a token-like string reached the log"
    );
}
