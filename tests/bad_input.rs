//! Bad input gets a precise, clear error and loses nothing: malformed Sign requests get
//! INVALID_ARGUMENT (never echoing the claims) and the server keeps serving; bad key files and
//! bad flags make the real binary exit 64 before it binds, naming the problem and never
//! printing key bytes.

mod common;

use std::path::Path;

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use tonic::Code;

use common::{Api, Clients, InProcessSigner};

/// Appears inside every malformed payload below; no error message may contain it.
const MARKER: &str = "SECRET-CLAIM-MATERIAL";

fn b64(json: &str) -> String {
    URL_SAFE_NO_PAD.encode(json)
}

/// Asserts a Sign is refused with `code`, a message containing `hint`, and nothing of `claims`.
async fn assert_refused(clients: &mut Clients, claims: &str, code: Code, hint: &str, case: &str) {
    for api in Api::BOTH {
        let status = clients
            .sign(api, claims)
            .await
            .expect_err(&format!("{case}: Sign over {api:?} must fail"));
        assert_eq!(
            status.code(),
            code,
            "{case} over {api:?}: {}",
            status.message()
        );
        let message = status.message();
        assert!(
            message.to_lowercase().contains(&hint.to_lowercase()),
            "{case}: message {message:?} does not say {hint:?}"
        );
        assert!(!message.contains(MARKER), "{case}: message echoes claims");
        if claims.len() >= 8 {
            assert!(
                !message.contains(claims),
                "{case}: message echoes the claims string"
            );
        }
        // Claims material in binary metadata or details would leak the same way.
        assert!(status.details().is_empty(), "{case}: unexpected details");
    }
}

/// A good Sign still works (the server was not hurt by what came before).
async fn assert_still_serves(clients: &mut Clients) {
    let case = &common::recorded_claims()[0];
    for api in Api::BOTH {
        let signed = clients
            .sign(api, &case.claims)
            .await
            .unwrap_or_else(|status| panic!("good Sign after bad input failed: {status:?}"));
        assert!(!signed.signature.is_empty());
    }
}

/// A JSON object whose standard base64 has '+' or '/': the URL-safe alphabet has neither.
fn claims_in_standard_alphabet() -> String {
    for i in 0.. {
        let json = format!(r#"{{"sub":"{MARKER}-{i}>>>???"}}"#);
        let standard = STANDARD_NO_PAD.encode(&json);
        if standard.contains('+') || standard.contains('/') {
            return standard;
        }
    }
    unreachable!()
}

#[tokio::test]
async fn malformed_claims_get_invalid_argument_and_the_server_keeps_serving() {
    let signer = InProcessSigner::start(&[]).await;
    let mut clients = signer.clients().await;

    // Padded: a JSON length that is not a multiple of 3 gets '=' from the padded encoder.
    let padded_json = format!(r#"{{"sub":"{MARKER}x"}}"#);
    assert_ne!(padded_json.len() % 3, 0);
    let padded = URL_SAFE.encode(&padded_json);
    assert!(padded.ends_with('='));

    let big_object = format!(r#"{{"sub":"{MARKER}","pad":"{}"}}"#, "a".repeat(60 * 1024));
    let oversized = b64(&big_object);
    assert!(oversized.len() > signet::jws::MAX_CLAIMS_LEN);
    assert!(oversized.len() < signet::server::MAX_REQUEST_BYTES);

    let cases: Vec<(&str, String, &str)> = vec![
        ("empty claims", String::new(), "empty"),
        ("padded claims", padded, "padding"),
        (
            "not base64url at all",
            format!("{MARKER}!!!not*base64"),
            "base64url",
        ),
        (
            "standard base64 alphabet",
            claims_in_standard_alphabet(),
            "base64url",
        ),
        (
            "base64url with a trailing newline",
            format!("{}\n", b64(&format!(r#"{{"sub":"{MARKER}"}}"#))),
            "base64url",
        ),
        ("not JSON", b64(&format!("not json {MARKER}")), "JSON"),
        (
            "truncated JSON object",
            b64(&format!(r#"{{"sub":"{MARKER}""#)),
            "JSON",
        ),
        (
            "JSON object with trailing garbage",
            b64(&format!(r#"{{"sub":"x"}} {MARKER}"#)),
            "JSON",
        ),
        ("a JSON array", b64(&format!(r#"["{MARKER}"]"#)), "object"),
        ("a JSON string", b64(&format!(r#""{MARKER}""#)), "object"),
        ("JSON null", b64("null"), "object"),
        (
            "a JSON object without exp",
            b64(&format!(r#"{{"iat":1700000000,"sub":"{MARKER}"}}"#)),
            "exp and iat",
        ),
        (
            "a JSON object with a string exp",
            b64(&format!(
                r#"{{"exp":"1700003600","iat":1700000000,"sub":"{MARKER}"}}"#
            )),
            "exp and iat",
        ),
        ("claims over 64 KiB", oversized, "at most"),
    ];
    for (case, claims, hint) in &cases {
        assert_refused(&mut clients, claims, Code::InvalidArgument, hint, case).await;
        assert_still_serves(&mut clients).await;
    }
    signer.stop().await.expect("clean stop");
}

/// A request message over the transport limit (128 KiB) is refused by tonic before signet's
/// claims check; the status is the transport's. The server keeps serving.
#[tokio::test]
async fn a_message_over_the_transport_limit_is_refused_and_the_server_keeps_serving() {
    let signer = InProcessSigner::start(&[]).await;
    let mut clients = signer.clients().await;
    let huge = b64(&format!(
        r#"{{"sub":"{MARKER}","pad":"{}"}}"#,
        "a".repeat(200 * 1024)
    ));
    assert!(huge.len() > signet::server::MAX_REQUEST_BYTES);
    for api in Api::BOTH {
        let status = clients.sign(api, &huge).await.expect_err("huge message");
        // Observed with tonic 0.14: the server's decoder answers OUT_OF_RANGE ("decoded message
        // length too large").
        assert_eq!(
            status.code(),
            Code::OutOfRange,
            "over {api:?}: {}",
            status.message()
        );
        assert!(!status.message().contains(MARKER));
        assert!(!status.message().contains(&huge[..64]));
    }
    assert_still_serves(&mut clients).await;
    signer.stop().await.expect("clean stop");
}

#[tokio::test]
async fn lifetime_over_the_maximum_is_refused_at_the_maximum_accepted() {
    let signer = InProcessSigner::start(&["--max-token-expiration", "1h"]).await;
    let mut clients = signer.clients().await;
    for api in Api::BOTH {
        assert_eq!(
            clients
                .metadata(api)
                .await
                .unwrap()
                .max_token_expiration_seconds,
            3600
        );
    }

    let at_max = b64(r#"{"exp":1700003600,"iat":1700000000,"sub":"at-max"}"#);
    for api in Api::BOTH {
        clients
            .sign(api, &at_max)
            .await
            .expect("exactly 1h is fine");
    }
    let over = b64(&format!(
        r#"{{"exp":1700003601,"iat":1700000000,"sub":"{MARKER}"}}"#
    ));
    assert_refused(
        &mut clients,
        &over,
        Code::InvalidArgument,
        "exceeds the maximum",
        "1h+1s",
    )
    .await;

    // The recorded claims: the 1h ones pass, the 2h and 24h ones exceed a 1h signer.
    for case in common::recorded_claims() {
        let claims = URL_SAFE_NO_PAD.decode(&case.claims).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&claims).unwrap();
        let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
        if lifetime > 3600 {
            assert_refused(
                &mut clients,
                &case.claims,
                Code::InvalidArgument,
                "exceeds the maximum",
                &case.name,
            )
            .await;
        } else {
            clients.sign(Api::V1, &case.claims).await.expect(&case.name);
        }
    }
    assert_still_serves(&mut clients).await;
    signer.stop().await.expect("clean stop");
}

/// Runs the real binary with `serve --socket <tmp> <flags>`, expecting exit 64 before any
/// socket is bound; returns stderr.
fn expect_config_error(flags: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("signet.sock");
    let mut args = vec!["serve", "--socket", socket.to_str().unwrap()];
    args.extend_from_slice(flags);
    let (status, stderr) = common::run_to_exit(&args);
    assert_eq!(
        status.code(),
        Some(64),
        "signet {args:?} should exit 64; stderr:\n{stderr}"
    );
    assert!(
        !socket.exists(),
        "a configuration error must be reported before binding the socket"
    );
    assert!(!stderr.contains("panicked"), "panic in stderr:\n{stderr}");
    stderr
}

/// No line of a key file's PEM body (nor its text) may appear in `stderr`.
fn assert_no_key_bytes(stderr: &str, key_file: &Path) {
    let Ok(text) = std::fs::read_to_string(key_file) else {
        return;
    };
    for line in text.lines() {
        let line = line.trim();
        if line.len() >= 12 && !line.starts_with("-----") {
            assert!(
                !stderr.contains(line),
                "stderr quotes {}:\n{stderr}",
                key_file.display()
            );
        }
    }
    assert!(!stderr.contains("-----BEGIN"), "stderr quotes PEM");
}

#[test]
fn bad_key_files_exit_64_naming_the_file_without_key_bytes() {
    let missing_dir = tempfile::tempdir().unwrap();
    let missing = missing_dir.path().join("no-such-key.pem");
    let directory = tempfile::tempdir().unwrap();
    // Sparse, 2 MiB: past the 1 MiB a key file may hold, so it is not read at all (a wrong
    // path to a disk image or a device must not exhaust memory).
    let oversized = missing_dir.path().join("oversized.pem");
    std::fs::File::create(&oversized)
        .unwrap()
        .set_len(2 << 20)
        .unwrap();
    let cases: Vec<(String, &str)> = vec![
        (missing.display().to_string(), "cannot read key file"),
        (
            oversized.display().to_string(),
            "is larger than 1048576 bytes",
        ),
        (
            directory.path().display().to_string(),
            "cannot read key file",
        ),
        (key("test-garbage.pem"), "malformed"),
        (key("test-garbage-der.pem"), "not a valid pkcs#8"),
        (key("test-not-pem.txt"), "no private key"),
        (key("test-rsa1024-too-small.pem"), "too small"),
        (key("test-ed25519-unsupported.pem"), "unsupported key type"),
        (key("test-two-keys.pem"), "more than one private key"),
    ];
    for (path, hint) in &cases {
        let stderr = expect_config_error(&["--key-file", path]);
        assert!(
            stderr.contains(path.as_str()),
            "stderr does not name {path}:\n{stderr}"
        );
        assert!(
            stderr.to_lowercase().contains(hint),
            "stderr for {path} does not say {hint:?}:\n{stderr}"
        );
        assert_no_key_bytes(&stderr, Path::new(path));
    }
}

#[test]
fn a_bad_key_file_after_good_ones_is_still_refused() {
    let good = key("test-ec256-pkcs8.pem");
    let bad = key("test-rsa1024-too-small.pem");
    let stderr = expect_config_error(&["--key-file", &good, "--key-file", &bad]);
    assert!(stderr.contains(&bad), "{stderr}");
    assert_no_key_bytes(&stderr, Path::new(&good));
    assert_no_key_bytes(&stderr, Path::new(&bad));
}

#[test]
fn duplicate_key_files_exit_64_naming_both() {
    // The same file twice, and the same key in two encodings (SEC1 and PKCS#8).
    let sec1 = key("test-ec256-sec1.pem");
    let pkcs8 = key("test-ec256-sec1-as-pkcs8.pem");
    for (first, second) in [(&sec1, &sec1), (&sec1, &pkcs8)] {
        let stderr = expect_config_error(&["--key-file", first, "--key-file", second]);
        assert!(stderr.contains("same key"), "{stderr}");
        assert!(stderr.contains(first.as_str()) && stderr.contains(second.as_str()));
        assert_no_key_bytes(&stderr, Path::new(first));
    }
}

#[cfg(not(feature = "aws-lc-rs"))]
#[test]
fn p521_key_file_exits_64_on_the_ring_provider() {
    let path = key("test-ec521-pkcs8.pem");
    let stderr = expect_config_error(&["--key-file", &path]);
    assert!(
        stderr.contains("not supported with the ring provider"),
        "{stderr}"
    );
    assert!(stderr.contains(&path));
    let stderr = expect_config_error(&["--generate-alg", "ES512"]);
    assert!(
        stderr.contains("not supported with the ring provider"),
        "{stderr}"
    );
}

#[test]
fn bad_flags_exit_64_before_binding() {
    let cases: [(&[&str], &str); 9] = [
        (&["--no-such-flag"], "--no-such-flag"),
        (
            &["--allowed-uid", "1000"],
            "--allowed-uid applies to abstract sockets",
        ),
        (&["--max-token-expiration", "5m"], "600"),
        (&["--max-token-expiration", "soon"], "max-token-expiration"),
        (&["--refresh-hint", "0s"], "refresh-hint"),
        (&["--busy-poll", "1s"], "--busy-poll must be at most 10ms"),
        (&["--socket-mode", "0666"], "every user"),
        (&["--generate-alg", "PS256"], "unknown algorithm"),
        (
            &["--rsa-bits", "1024", "--generate-alg", "RS256"],
            "too small",
        ),
    ];
    for (flags, hint) in cases {
        let stderr = expect_config_error(flags);
        assert!(
            stderr.contains(hint),
            "{flags:?}: stderr does not say {hint:?}:\n{stderr}"
        );
    }
}

#[test]
fn bad_socket_addresses_exit_64() {
    for socket in [
        "relative.sock",
        "@bad name",
        "@abc@",
        "/tmp/with space/signet.sock",
        "/tmp/",
    ] {
        let (status, stderr) = common::run_to_exit(&["serve", "--socket", socket]);
        assert_eq!(status.code(), Some(64), "--socket {socket:?}:\n{stderr}");
        assert!(stderr.contains("--socket"), "{socket:?}: {stderr}");
    }
}

/// With the log filtered off, a failed start still says why on stderr, once.
#[test]
fn a_failed_start_says_why_even_with_logging_off() {
    for filter in ["off", "signet=off"] {
        let mut process = common::SignetProcess::spawn_with_env(
            &["serve", "--socket", "relative.sock"],
            &[("RUST_LOG", filter)],
        );
        let status = process.wait_exit();
        let stderr = process.stderr_text();
        assert_eq!(status.code(), Some(64), "RUST_LOG={filter}:\n{stderr}");
        assert_eq!(
            stderr.matches("configuration error").count(),
            1,
            "RUST_LOG={filter}:\n{stderr}"
        );
        assert!(stderr.contains("--socket"), "RUST_LOG={filter}:\n{stderr}");
    }
    // With the log on, the reason is a log line, not a second copy on stderr.
    let (status, stderr) = common::run_to_exit(&["serve", "--socket", "relative.sock"]);
    assert_eq!(status.code(), Some(64));
    assert_eq!(stderr.matches("configuration error").count(), 1, "{stderr}");
    assert!(stderr.contains(r#""level":"ERROR""#), "{stderr}");
}

fn key(name: &str) -> String {
    common::key_path(name).to_str().unwrap().to_owned()
}

/// A key whose signing can be made to fail, as an HSM key does when its session is lost.
#[derive(Debug)]
struct FlakyKey {
    key: signet::keys::SigningKey,
    failing: std::sync::atomic::AtomicBool,
}

impl signet::keys::JwsSigner for FlakyKey {
    fn algorithm(&self) -> signet::keys::Algorithm {
        self.key.algorithm()
    }

    fn public_key_der(&self) -> &[u8] {
        self.key.public_key_der()
    }

    fn sign(
        &self,
        signing_input: &[u8],
    ) -> Result<signet::keys::JwsSignature, signet::keys::KeyError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(signet::keys::KeyError::Signing {
                kid: self.key.kid().to_owned(),
            });
        }
        self.key.sign(signing_input)
    }
}

/// signet serving `keys` on a socket in `dir` until the returned sender fires.
async fn serve_key_set(
    dir: &Path,
    keys: signet::keyring::KeySet,
) -> (Clients, tokio::sync::oneshot::Sender<()>) {
    use signet::server::{Listener, SocketAddress};
    let socket = dir.join("signet.sock");
    let signer = std::sync::Arc::new(signet::signer::TokenSigner::new(
        std::sync::Arc::new(signet::keyring::KeyRing::new(keys)),
        std::time::Duration::from_secs(86_400),
        std::time::Duration::from_secs(60),
    ));
    let listener = Listener::bind(&SocketAddress::Path(socket.clone()), 0o600, &[]).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(signet::server::serve(
        listener,
        signet::api::ExternalJwtSignerService::new(signer),
        std::time::Duration::from_secs(1),
        async {
            let _ = stopped.await;
        },
    ));
    (common::connect_path(&socket).await, stop)
}

/// Serving errors that are not the request's fault, over the socket: a key that fails to sign
/// answers UNAVAILABLE (kube-apiserver may retry) and one that recovers signs again; a key set
/// with nothing to sign with answers FAILED_PRECONDITION. FetchKeys and Metadata keep working
/// throughout, and no message carries the claims.
#[tokio::test]
async fn a_key_that_cannot_sign_is_unavailable_and_recovers() {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use signet::keyring::{KeySet, PublishedKey};
    use signet::keys::{Algorithm, LocalKey, SigningKey};

    let dir = tempfile::tempdir().unwrap();
    let real = SigningKey::new(Arc::new(LocalKey::generate(Algorithm::ES256, 0).unwrap().0));
    let flaky = Arc::new(FlakyKey {
        key: real.clone(),
        failing: true.into(),
    });
    let (mut clients, stop) =
        serve_key_set(dir.path(), KeySet::single(SigningKey::new(flaky.clone()))).await;
    let case = &common::recorded_claims()[0];
    for api in Api::BOTH {
        let status = clients.sign(api, &case.claims).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
        assert!(
            status.message().contains(real.kid()),
            "{}",
            status.message()
        );
        assert!(!status.message().contains(&case.claims));
        clients
            .metadata(api)
            .await
            .expect("Metadata while Sign fails");
        clients
            .fetch_keys(api)
            .await
            .expect("FetchKeys while Sign fails");
    }
    flaky.failing.store(false, Ordering::SeqCst);
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&case.claims).unwrap()).unwrap();
    let audiences: Vec<&str> = claims["aud"]
        .as_array()
        .unwrap()
        .iter()
        .map(|aud| aud.as_str().unwrap())
        .collect();
    for api in Api::BOTH {
        let keys = clients.fetch_keys(api).await.unwrap();
        let verifier = common::verifier::IndependentVerifier::from_fetch_keys(
            &keys,
            common::RECORDED_ISSUER,
            &audiences,
        )
        .unwrap();
        let signed = clients.sign(api, &case.claims).await.expect("recovered");
        let token = common::verifier::assemble(&signed.header, &case.claims, &signed.signature);
        verifier
            .verify(&token)
            .expect("the recovered key's token verifies");
    }
    let _ = stop.send(());

    // Published, but nothing signs: a key set the key ring allows, though no store signet
    // opens produces one (a state without an active key is refused at start).
    let dir = tempfile::tempdir().unwrap();
    let verify_only = KeySet::new(
        None,
        vec![PublishedKey::of(&real)],
        std::time::SystemTime::now(),
    )
    .unwrap();
    let (mut clients, stop) = serve_key_set(dir.path(), verify_only).await;
    for api in Api::BOTH {
        let status = clients.sign(api, &case.claims).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::FailedPrecondition,
            "{}",
            status.message()
        );
        assert!(!status.message().contains(&case.claims));
        let keys = clients
            .fetch_keys(api)
            .await
            .expect("FetchKeys without a signing key");
        assert_eq!(keys.keys.len(), 1);
    }
    let _ = stop.send(());
}
