//! Rotation without a single failed token: signing and independent verification run
//! continuously across several automatic rotations driven by a manual clock. Tokens are signed
//! over a real Unix socket by a real tonic client; the verifier is jsonwebtoken fed only what
//! FetchKeys returns, refreshed every refresh hint like kube-apiserver (and, stricter than the
//! apiserver, never fetching on an unknown kid). Also: a token signed with an `sa.key` by
//! jsonwebtoken before the migration verifies against FetchKeys after the import.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint};

use signet::api::v1::external_jwt_signer_client::ExternalJwtSignerClient;
use signet::api::v1::{FetchKeysRequest, SignJwtRequest};
use signet::api::ExternalJwtSignerService;
use signet::backend::MemoryBackend;
use signet::keys::Algorithm;
use signet::lifecycle::{
    ImportOptions, InitialKeys, KeyLifecycle, ManualClock, MemoryStateStore, RotationPolicy,
};
use signet::server::{serve, Listener, SocketAddress};
use signet::signer::TokenSigner;

const REFRESH: Duration = Duration::from_secs(60);
const LEAD: Duration = Duration::from_secs(120);
const MAX_EXP: Duration = Duration::from_secs(600);
const PERIOD: Duration = Duration::from_secs(1800);
const STEP: Duration = Duration::from_secs(20);

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
}

struct Server {
    client: ExternalJwtSignerClient<Channel>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(lifecycle: &KeyLifecycle) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signet.sock");
        let listener = Listener::bind(&SocketAddress::Path(path.clone()), 0o600, &[]).unwrap();
        let signer = Arc::new(TokenSigner::new(
            lifecycle.keyring().clone(),
            MAX_EXP,
            REFRESH,
        ));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve(
                listener,
                ExternalJwtSignerService::new(signer),
                Duration::from_secs(5),
                async {
                    let _ = stopped.await;
                },
            )
            .await
            .unwrap();
        });
        let client = ExternalJwtSignerClient::new(connect(&path).await);
        Self {
            client,
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("the server did not stop after shutdown")
            .unwrap();
    }

    async fn sign(&mut self, now: SystemTime) -> (String, u64) {
        let iat = unix(now);
        let exp = iat + MAX_EXP.as_secs();
        let claims = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"aud":["https://kubernetes.default.svc"],"exp":{exp},"iat":{iat},"iss":"https://kubernetes.default.svc","nbf":{iat},"sub":"system:serviceaccount:default:rotation"}}"#
        ));
        let signed = self
            .client
            .sign(SignJwtRequest {
                claims: claims.clone(),
            })
            .await
            .expect("Sign")
            .into_inner();
        (
            format!("{}.{claims}.{}", signed.header, signed.signature),
            exp,
        )
    }
}

async fn connect(path: &Path) -> Channel {
    let path = path.to_owned();
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
        .expect("connect to the signer socket")
}

/// A relying party: the keys of its last FetchKeys, refreshed when the hint says.
struct Verifier {
    /// kid → (PKIX DER, decoding key).
    keys: HashMap<String, (Vec<u8>, jsonwebtoken::DecodingKey)>,
    order: Vec<String>,
    data_timestamp: Option<prost_types::Timestamp>,
    next_refresh: SystemTime,
    refreshes: usize,
}

fn decoding_key(alg: jsonwebtoken::Algorithm, pkix_der: &[u8]) -> jsonwebtoken::DecodingKey {
    let pem =
        pem_rfc7468::encode_string("PUBLIC KEY", pem_rfc7468::LineEnding::LF, pkix_der).unwrap();
    match alg {
        jsonwebtoken::Algorithm::RS256 => {
            jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes()).unwrap()
        }
        _ => jsonwebtoken::DecodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
    }
}

impl Verifier {
    fn new() -> Self {
        Self {
            keys: HashMap::new(),
            order: Vec::new(),
            data_timestamp: None,
            next_refresh: SystemTime::UNIX_EPOCH,
            refreshes: 0,
        }
    }

    async fn refresh(&mut self, server: &mut Server, now: SystemTime) {
        let response = server
            .client
            .fetch_keys(FetchKeysRequest {})
            .await
            .expect("FetchKeys")
            .into_inner();
        assert!(!response.keys.is_empty());
        let kids: Vec<String> = response.keys.iter().map(|k| k.key_id.clone()).collect();
        let timestamp = response.data_timestamp.expect("data_timestamp set");
        if let Some(previous) = &self.data_timestamp {
            if kids == self.order {
                assert_eq!(
                    &timestamp, previous,
                    "same keys: data_timestamp must not move"
                );
            } else {
                assert!(
                    (timestamp.seconds, timestamp.nanos) > (previous.seconds, previous.nanos),
                    "changed keys: data_timestamp must advance"
                );
                // Stable order: keys still published keep their relative order.
                let kept: Vec<&String> = self.order.iter().filter(|k| kids.contains(k)).collect();
                let now_order: Vec<&String> =
                    kids.iter().filter(|k| self.order.contains(k)).collect();
                assert_eq!(kept, now_order, "key order must be stable");
            }
        }
        self.keys = response
            .keys
            .iter()
            .map(|k| {
                let der = k.key.to_vec();
                let key = match self.keys.get(&k.key_id) {
                    Some((known, key)) if *known == der => key.clone(),
                    Some(_) => panic!("kid {} now names a different key", k.key_id),
                    None => decoding_key(jsonwebtoken::Algorithm::ES256, &der),
                };
                (k.key_id.clone(), (der, key))
            })
            .collect();
        self.order = kids;
        self.data_timestamp = Some(timestamp);
        self.next_refresh = now + Duration::from_secs(response.refresh_hint_seconds as u64);
        self.refreshes += 1;
    }

    /// Full verification: kid lookup in the cached set, then the signature.
    fn verify(&self, token: &str) -> Result<(), String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
        let kid = header.kid.ok_or("no kid")?;
        let (_, key) = self
            .keys
            .get(&kid)
            .ok_or_else(|| format!("kid {kid} not in the cached key set"))?;
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        // Expiry is judged against the manual clock by the caller.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<serde_json::Value>(token, key, &validation)
            .map(drop)
            .map_err(|e| format!("kid {kid}: {e}"))
    }

    /// Whether the cached set still has the key `kid` names, with the bytes it had when a
    /// token was verified against it: a token that verified then verifies now.
    fn still_has(&self, kid: &str, der: &[u8]) -> bool {
        self.keys.get(kid).is_some_and(|(known, _)| known == der)
    }
}

struct LiveToken {
    kid: String,
    key_der: Vec<u8>,
    exp: u64,
}

#[tokio::test]
async fn tokens_never_fail_before_exp_across_automatic_rotations() {
    let clock = Arc::new(ManualClock::new(t0()));
    let mut policy = RotationPolicy::new(REFRESH, MAX_EXP);
    policy.publish_lead = LEAD;
    policy.rotation_period = Some(PERIOD);
    let lifecycle = KeyLifecycle::create(
        Arc::new(MemoryBackend::new()),
        Arc::new(MemoryStateStore::new()),
        policy,
        clock.clone(),
        InitialKeys::Generate(Algorithm::ES256),
    )
    .unwrap();
    let mut server = Server::start(&lifecycle).await;
    // Three relying parties whose refresh schedules have every phase a step allows relative to
    // the rotation schedule; each fetches at the start of its instant, before the signer's
    // tick, the worst case.
    let mut verifiers: Vec<Verifier> = Vec::new();
    for phase in [0, 20, 40] {
        let mut verifier = Verifier::new();
        verifier.refresh(&mut server, t0()).await;
        verifier.next_refresh = t0() + Duration::from_secs(phase);
        verifiers.push(verifier);
    }

    let mut live: Vec<LiveToken> = Vec::new();
    let mut signing_kids: Vec<String> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut signed = 0usize;
    let mut max_published = 0usize;
    let end = t0() + PERIOD * 4 + MAX_EXP * 2;
    let mut now = t0();
    while now < end {
        now = clock.advance(STEP);
        let at = unix(now) - unix(t0());
        for verifier in &mut verifiers {
            if now >= verifier.next_refresh {
                verifier.refresh(&mut server, now).await;
                max_published = max_published.max(verifier.order.len());
            }
        }
        lifecycle.tick(now).await.expect("tick");
        // Tokens are judged at `now`: those past exp no longer count.
        let now_secs = unix(now);
        live.retain(|t| t.exp > now_secs);
        for (v, verifier) in verifiers.iter().enumerate() {
            for t in &live {
                // The signature was verified in full at issuance against these exact key
                // bytes; while the verifier still holds them, the token still verifies.
                if !verifier.still_has(&t.kid, &t.key_der) {
                    failures.push(format!(
                        "verifier {v} at +{at}s: token of kid {} (exp +{}s) lost its key",
                        t.kid,
                        t.exp - unix(t0())
                    ));
                }
            }
        }
        let (token, exp) = server.sign(now).await;
        signed += 1;
        let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
        if signing_kids.last() != Some(&kid) {
            signing_kids.push(kid.clone());
        }
        let key_der = lifecycle
            .keyring()
            .snapshot()
            .published()
            .iter()
            .find(|k| *k.kid == *kid)
            .expect("the signing key is published")
            .public_key_der
            .to_vec();
        // In full (kid lookup + signature) once; the other verifiers hold the same bytes or
        // fail the lookup. Debug-build ECDSA verification is slow, so it is not repeated.
        for (v, verifier) in verifiers.iter().enumerate() {
            let verified = if v == 0 {
                verifier.verify(&token)
            } else if verifier.still_has(&kid, &key_der) {
                Ok(())
            } else {
                Err(format!("kid {kid} not in the cached key set"))
            };
            if let Err(err) = verified {
                failures.push(format!("verifier {v} at +{at}s (just issued): {err}"));
            }
        }
        live.push(LiveToken { key_der, kid, exp });
    }
    assert!(
        failures.is_empty(),
        "{} failures: {failures:#?}",
        failures.len()
    );
    assert!(
        signing_kids.len() >= 4,
        "at least three rotations: {signing_kids:?}"
    );
    let refreshes = verifiers[0].refreshes;
    assert!(
        signed >= 400 && refreshes >= 130,
        "{signed} tokens, {refreshes} refreshes"
    );
    // Retired keys were removed along the way, not kept forever.
    assert!(max_published <= 3, "published set grew to {max_published}");
    let verifier = &verifiers[0];
    assert!(verifier.order.len() <= 2, "{:?}", verifier.order);

    // The verifier is strict enough to catch a violation: promoting with --force skips the
    // lead, and a verifier that has not refreshed rejects the new key's tokens.
    lifecycle.rotate(None, true).await.unwrap();
    let (token, _) = server.sign(now).await;
    let err = verifier.verify(&token).unwrap_err();
    assert!(err.contains("not in the cached key set"), "{err}");

    server.stop().await;
}

const SA_KEY: &[u8] = include_bytes!("fixtures/lifecycle-sa-pkcs1.key");
/// Computed with openssl, see tests/fixtures/README-lifecycle.md.
const SA_KEY_IN_TREE_KID: &str = "o0arMtdzToljOGwvC-emRgr6lPsJAPd66i4Cr7oqwdw";

#[tokio::test]
async fn a_token_signed_with_sa_key_before_migration_verifies_after_import() {
    // Before the switch: "kube-apiserver" (here jsonwebtoken) signs with its sa.key.
    let now = unix(SystemTime::now());
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(SA_KEY_IN_TREE_KID.into());
    let claims = serde_json::json!({
        "aud": ["https://kubernetes.default.svc"], "exp": now + 3600, "iat": now,
        "iss": "https://kubernetes.default.svc", "nbf": now,
        "sub": "system:serviceaccount:default:legacy",
    });
    let token = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(SA_KEY).unwrap(),
    )
    .unwrap();

    let lifecycle = KeyLifecycle::create(
        Arc::new(MemoryBackend::new()),
        Arc::new(MemoryStateStore::new()),
        RotationPolicy::new(REFRESH, MAX_EXP),
        Arc::new(signet::lifecycle::SystemClock),
        InitialKeys::Generate(Algorithm::ES256),
    )
    .unwrap();
    let imported = lifecycle
        .import(SA_KEY, ImportOptions { verify_only: true })
        .await
        .unwrap();
    assert_eq!(imported.kid, SA_KEY_IN_TREE_KID);

    let mut server = Server::start(&lifecycle).await;
    let response = server
        .client
        .fetch_keys(FetchKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    let key = response
        .keys
        .iter()
        .find(|k| k.key_id == SA_KEY_IN_TREE_KID)
        .expect("the sa.key is published under its in-tree kid");
    assert!(!key.exclude_from_oidc_discovery);
    let decoding = decoding_key(jsonwebtoken::Algorithm::RS256, &key.key);
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&["https://kubernetes.default.svc"]);
    jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation)
        .expect("the pre-migration token verifies");

    // And signet never signs with it.
    let (signed, _) = server.sign(SystemTime::now()).await;
    let kid = jsonwebtoken::decode_header(&signed).unwrap().kid.unwrap();
    assert_ne!(kid, SA_KEY_IN_TREE_KID);
    server.stop().await;
}
