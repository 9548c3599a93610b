//! `signet verify` end to end: the binary fetches keys over a real Unix socket from a signer
//! served in this process and checks tokens signed through Sign, by keys outside the set, by
//! an independent signer (jsonwebtoken, RS256 and ES256), tampered, expired, for the wrong
//! audience. Every run of the binary has a deadline.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use tokio::sync::oneshot;

use signet::api::ExternalJwtSignerService;
use signet::keyring::{KeyRing, KeySet, PublishedKey};
use signet::keys::{pkcs8_from_pem, Algorithm, LocalKey, SigningKey};
use signet::server::{Listener, SocketAddress};
use signet::signer::TokenSigner;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/jwks")
        .join(name)
}

fn generated(alg: Algorithm) -> SigningKey {
    SigningKey::new(Arc::new(LocalKey::generate(alg, 0).unwrap().0))
}

fn rsa_fixture() -> SigningKey {
    let pem = std::fs::read(fixture("rsa-2048.pem")).unwrap();
    SigningKey::new(Arc::new(
        LocalKey::from_pkcs8(&pkcs8_from_pem(&pem).unwrap()).unwrap(),
    ))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Service-account-shaped claims valid from `iat` for `lifetime` seconds.
fn claims(iat: i64, lifetime: i64) -> serde_json::Value {
    serde_json::json!({
        "aud": ["https://kubernetes.default.svc.cluster.local"],
        "exp": iat + lifetime,
        "iat": iat,
        "iss": "https://kubernetes.default.svc.cluster.local",
        "nbf": iat,
        "sub": "system:serviceaccount:default:verify-test",
    })
}

fn encode(claims: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap())
}

/// A token signed directly with `key` (for keys the server does not sign with).
fn signed_by(key: &SigningKey, claims: &serde_json::Value) -> String {
    let payload = encode(claims);
    let signed = signet::jws::sign(key, &payload).unwrap();
    format!("{}.{payload}.{}", signed.header, signed.signature)
}

struct Signer {
    dir: tempfile::TempDir,
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Signer {
    fn start(keys: KeySet) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("signet.sock");
        let signer = Arc::new(TokenSigner::new(
            Arc::new(KeyRing::new(keys)),
            Duration::from_secs(86_400),
            Duration::from_secs(60),
        ));
        let address = SocketAddress::parse(socket.to_str().unwrap()).unwrap();
        let listener = Listener::bind(&address, 0o600, &[]).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            signet::server::serve(
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
        Self {
            dir,
            socket,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Runs `signet verify --socket <this signer> ARGS` (with `stdin` on standard input).
    async fn verify(&self, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
        let mut command = common::signet_command(None);
        command
            .args(["verify", "--socket", self.socket.to_str().unwrap()])
            .args(args);
        let stdin = stdin.map(str::to_owned);
        // The signer answers on this runtime: run the child off it.
        let output: Output = tokio::task::spawn_blocking(move || {
            common::run_command(command, stdin.as_deref().map(str::as_bytes))
        })
        .await
        .unwrap();
        (
            output.status.code().expect("exited, not killed"),
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8(output.stderr).unwrap(),
        )
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(common::DEADLINE, self.task.take().unwrap())
            .await
            .expect("the signer did not stop after shutdown")
            .unwrap();
    }
}

/// Neither output may repeat the token's signature (its header and payload are printed as
/// parsed claims at most).
fn assert_no_signature(token: &str, outputs: &[&str]) {
    let signature = token.rsplit('.').next().unwrap();
    for output in outputs {
        assert!(!output.contains(signature), "the signature was printed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifies_signet_tokens_and_refuses_bad_ones() {
    let active = generated(Algorithm::ES256);
    let legacy = rsa_fixture();
    let outsider = generated(Algorithm::ES256);
    let published = vec![
        PublishedKey::of(&active),
        PublishedKey {
            exclude_from_oidc_discovery: true,
            ..PublishedKey::of(&legacy)
        },
    ];
    let signer =
        Signer::start(KeySet::new(Some(active.clone()), published, SystemTime::now()).unwrap());
    let valid = claims(now(), 3600);

    // A token signed by the active key, passed inline.
    let token = signed_by(&active, &valid);
    let (code, stdout, stderr) = signer.verify(&["--token", &token], None).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&format!("kid: {}", active.kid())),
        "{stdout}"
    );
    assert!(stdout.contains("alg: ES256"), "{stdout}");
    assert!(
        stdout.contains("system:serviceaccount:default:verify-test"),
        "{stdout}"
    );
    assert_no_signature(&token, &[&stdout, &stderr]);

    // From a file (with a trailing newline) and from standard input.
    let file = signer.dir.path().join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let (code, _, stderr) = signer
        .verify(&["--token-file", file.to_str().unwrap()], None)
        .await;
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = signer.verify(&["--token-file", "-"], Some(&token)).await;
    assert_eq!(code, 0, "{stderr}");

    // The expected audience and issuer, when asked for.
    let (code, _, stderr) = signer
        .verify(
            &[
                "--token",
                &token,
                "--audience",
                "https://kubernetes.default.svc.cluster.local",
                "--issuer",
                "https://kubernetes.default.svc.cluster.local",
            ],
            None,
        )
        .await;
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = signer
        .verify(&["--token", &token, "--audience", "vault"], None)
        .await;
    assert_eq!(code, 1);
    assert!(stderr.contains("aud names none"), "{stderr}");

    // An excluded (verify-only) key still verifies, as in kube-apiserver, and is named so.
    let legacy_token = signed_by(&legacy, &valid);
    let (code, stdout, stderr) = signer.verify(&["--token", &legacy_token], None).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("alg: RS256"), "{stdout}");
    assert!(stdout.contains("excluded from OIDC discovery"), "{stdout}");

    // A key the signer does not publish.
    let foreign = signed_by(&outsider, &valid);
    let (code, _, stderr) = signer.verify(&["--token", &foreign], None).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("is not among the keys"), "{stderr}");

    // Same kid, another key's signature: the signature does not match.
    let forged = format!(
        "{}.{}",
        token.rsplit_once('.').unwrap().0,
        foreign.rsplit('.').next().unwrap()
    );
    let (code, _, stderr) = signer.verify(&["--token", &forged], None).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("signature does not match"), "{stderr}");
    assert_no_signature(&forged, &[&stderr]);

    // Expired: refused, unless asked to look anyway.
    let expired = signed_by(&active, &claims(now() - 7200, 3600));
    let (code, _, stderr) = signer.verify(&["--token", &expired], None).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("expired"), "{stderr}");
    let (code, _, stderr) = signer
        .verify(&["--token", &expired, "--allow-expired"], None)
        .await;
    assert_eq!(code, 0, "{stderr}");

    // Not a JWS at all.
    let (code, _, stderr) = signer.verify(&["--token", "not-a-token"], None).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("not a compact JWS"), "{stderr}");
    assert!(!stderr.contains("not-a-token"), "{stderr}");

    signer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_asked_for_must_be_there_and_the_times_must_make_sense() {
    let active = generated(Algorithm::ES256);
    let signer = Signer::start(
        KeySet::new(
            Some(active.clone()),
            vec![PublishedKey::of(&active)],
            SystemTime::now(),
        )
        .unwrap(),
    );
    let issuer = "https://kubernetes.default.svc.cluster.local";
    let without = |claim: &str| {
        let mut claims = claims(now(), 3600);
        claims.as_object_mut().unwrap().remove(claim);
        signed_by(&active, &claims)
    };
    let with = |claim: &str, value: serde_json::Value| {
        let mut claims = claims(now(), 3600);
        claims[claim] = value;
        signed_by(&active, &claims)
    };
    let cases = [
        (without("aud"), vec!["--audience", issuer], "no aud claim"),
        (
            with("aud", 7.into()),
            vec!["--audience", issuer],
            "no aud claim",
        ),
        (without("iss"), vec!["--issuer", issuer], "no iss claim"),
        (
            with("iss", 42.into()),
            vec!["--issuer", issuer],
            "no iss claim",
        ),
        (without("exp"), vec![], "no exp claim"),
        (
            with("iat", (now() + 3600).into()),
            vec![],
            "issued in the future",
        ),
        (
            with("iat", "yesterday".into()),
            vec![],
            "iat claim has the wrong type",
        ),
    ];
    for (token, flags, reason) in &cases {
        let mut args = vec!["--token", token.as_str()];
        args.extend(flags.iter().copied());
        let (code, _, stderr) = signer.verify(&args, None).await;
        assert_eq!(code, 1, "{flags:?}, expected {reason:?}: {stderr}");
        assert!(stderr.contains(reason), "{flags:?}: {stderr}");
        assert_no_signature(token, &[&stderr]);
    }
    // Without the flags, a token lacking aud or iss is fine; --allow-expired takes one with no
    // exp (a legacy Secret-based token) or one issued ahead of this clock.
    for (token, flags) in [
        (without("aud"), vec![]),
        (without("iss"), vec![]),
        (without("exp"), vec!["--allow-expired"]),
        (with("iat", (now() + 3600).into()), vec!["--allow-expired"]),
    ] {
        let mut args = vec!["--token", token.as_str()];
        args.extend(flags.iter().copied());
        let (code, _, stderr) = signer.verify(&args, None).await;
        assert_eq!(code, 0, "{flags:?}: {stderr}");
    }
    signer.stop().await;
}

/// A token signed by an independent implementation (jsonwebtoken) with a key whose public half
/// signet publishes — the `sa.key` migration case — verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifies_a_token_signed_by_an_independent_signer() {
    let key = rsa_fixture();
    let signer = Signer::start(KeySet::single(key.clone()));
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(key.kid().to_owned());
    let pem = std::fs::read(fixture("rsa-2048.pem")).unwrap();
    let token = jsonwebtoken::encode(
        &header,
        &claims(now(), 600),
        &jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap();
    let (code, stdout, stderr) = signer.verify(&["--token", &token], None).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("alg: RS256"), "{stdout}");
    signer.stop().await;
}

/// The same for ES256: a P-256 key's token signed by jsonwebtoken (RustCrypto `p256`), under
/// the kid computed without signet, verifies; the same token with one signature bit flipped,
/// or with its subject changed, does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifies_an_es256_token_signed_by_an_independent_signer() {
    let path = common::key_path("test-ec256-pkcs8.pem");
    let pem = std::fs::read(&path).unwrap();
    let key = SigningKey::new(Arc::new(
        LocalKey::from_pkcs8(&pkcs8_from_pem(&pem).unwrap()).unwrap(),
    ));
    let kid = common::expected_kid(&common::fixture_public_key_der(&path));
    assert_eq!(
        key.kid(),
        kid,
        "signet names the fixture by the in-tree rule"
    );
    let signer = Signer::start(KeySet::single(key));
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.clone());
    let token = jsonwebtoken::encode(
        &header,
        &claims(now(), 600),
        &jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap(),
    )
    .unwrap();

    let (code, stdout, stderr) = signer.verify(&["--token", &token], None).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(&format!("kid: {kid}")), "{stdout}");
    assert!(stdout.contains("alg: ES256"), "{stdout}");
    assert!(
        stdout.contains("system:serviceaccount:default:verify-test"),
        "{stdout}"
    );

    for tampered in [
        common::verifier::tamper_signature(&token),
        common::verifier::tamper_payload(&token),
    ] {
        let (code, _, stderr) = signer.verify(&["--token", &tampered], None).await;
        assert_eq!(code, 1, "{stderr}");
        assert!(stderr.contains("signature does not match"), "{stderr}");
        assert_no_signature(&tampered, &[&stderr]);
    }
    signer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cannot_check_is_exit_2_and_says_why() {
    let key = generated(Algorithm::ES256);
    let signer = Signer::start(KeySet::single(key.clone()));
    let token = signed_by(&key, &claims(now(), 600));

    // No signer behind the socket.
    let missing = signer.dir.path().join("nobody.sock");
    let output = tokio::task::spawn_blocking(move || {
        let mut command = common::signet_command(None);
        command.args([
            "verify",
            "--socket",
            missing.to_str().unwrap(),
            "--token",
            &token,
        ]);
        common::run_command(command, None)
    })
    .await
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot reach the signer"), "{stderr}");

    // An unreadable token file.
    let (code, _, stderr) = signer
        .verify(&["--token-file", "/nonexistent/token"], None)
        .await;
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/token"), "{stderr}");

    // Neither --token nor --token-file: a usage error.
    let (code, _, _) = signer.verify(&[], None).await;
    assert_eq!(code, 64);
    signer.stop().await;
}

/// jsonwebtoken has no ES512: the verifier says so instead of calling the token invalid.
#[cfg(feature = "aws-lc-rs")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es512_is_reported_as_not_checkable() {
    let key = generated(Algorithm::ES512);
    let signer = Signer::start(KeySet::single(key.clone()));
    let token = signed_by(&key, &claims(now(), 600));
    let (code, _, stderr) = signer.verify(&["--token", &token], None).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("ES512"), "{stderr}");
    signer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_that_is_no_token_is_refused_without_being_echoed() {
    let key = generated(Algorithm::ES256);
    let signer = Signer::start(KeySet::single(key.clone()));
    let token = signed_by(&key, &claims(now(), 600));

    // Over the 1 MiB a token file may hold (sparse: nothing is written), and not UTF-8: both
    // are no token, so they do not verify (exit 1), rather than "cannot check".
    let huge = signer.dir.path().join("huge");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(2 << 20)
        .unwrap();
    let (code, _, stderr) = signer
        .verify(&["--token-file", huge.to_str().unwrap()], None)
        .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("not a token"), "{stderr}");
    let binary = signer.dir.path().join("binary");
    std::fs::write(&binary, b"\xff\xfe\xfd").unwrap();
    let (code, _, stderr) = signer
        .verify(&["--token-file", binary.to_str().unwrap()], None)
        .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("not a compact JWS"), "{stderr}");

    // A token given without --token, alone or beside --token-file: a usage error that does
    // not print it.
    let file = signer.dir.path().join("token");
    std::fs::write(&file, &token).unwrap();
    for args in [
        vec![token.as_str()],
        vec!["--token-file", file.to_str().unwrap(), token.as_str()],
    ] {
        let (code, stdout, stderr) = signer.verify(&args, None).await;
        assert_eq!(code, 64, "{args:?}: {stderr}");
        assert!(!stderr.contains(&token), "{args:?}: the token is echoed");
        assert!(!stdout.contains(&token), "{args:?}: the token is echoed");
    }
    signer.stop().await;
}
