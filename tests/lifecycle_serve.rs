//! `signet serve --key-dir` as a real process: keys survive a restart, automatic rotation runs
//! in the background (a key is published before it signs), the store is locked against
//! offline commands while served, and a bad store is refused at start with exit 64.
//!
//! Every child runs under a deadline ([`common::DEADLINE`]): one that hangs fails the test.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

use signet::api::v1::external_jwt_signer_client::ExternalJwtSignerClient;
use signet::api::v1::{FetchKeysRequest, SignJwtRequest};

/// `signet <args>`, with nothing from the environment that would change what it does.
fn signet(args: &[&str]) -> Command {
    let mut command = common::signet_command(None);
    command.args(args);
    command
}

/// Runs `command` (from [`signet`]) to its exit, bounded by [`common::DEADLINE`]: a child still
/// running then is killed and the test fails. Returns the exit status and stderr.
fn run(command: Command) -> (ExitStatus, String) {
    let output = common::run_command(command, None);
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn init_store(root: &Path) -> String {
    let store = root.join("keys");
    let store = store.to_str().unwrap().to_owned();
    let (status, stderr) = run(signet(&["keys", "init", "--key-dir", &store]));
    assert!(status.success(), "{status}: {stderr}");
    store
}

/// `signet serve --key-dir` as a child process ([`common::SignetProcess`]: stderr drained on a
/// thread, bounded waits, killed on drop if a test fails before stopping it).
struct Served {
    process: common::SignetProcess,
    socket: PathBuf,
}

impl Served {
    /// Starts `signet serve` and waits (bounded) for its startup line, logged once every socket
    /// listens; fails with its stderr if it exits first.
    fn start(root: &Path, store: &str, extra: &[&str]) -> Self {
        let socket = root.join("signet.sock");
        // A client connection may outlive its handle briefly; do not wait long to drain it.
        let mut args = vec![
            "serve",
            "--socket",
            socket.to_str().unwrap(),
            "--key-dir",
            store,
            "--shutdown-grace",
            "1s",
        ];
        args.extend_from_slice(extra);
        let mut process = common::SignetProcess::spawn(&args);
        process.wait_ready();
        Self { process, socket }
    }

    async fn client(&self) -> ExternalJwtSignerClient<Channel> {
        let path = self.socket.clone();
        let channel = Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move { UnixStream::connect(path).await.map(TokioIo::new) }
            }))
            .await
            .unwrap();
        ExternalJwtSignerClient::new(channel)
    }

    /// SIGTERM, then a bounded wait for a clean exit.
    fn stop(mut self) {
        self.process.signal(rustix::process::Signal::TERM);
        let status = self.process.wait_exit();
        assert!(
            status.success(),
            "{status}; stderr:\n{}",
            self.process.stderr_text()
        );
    }
}

async fn published(client: &mut ExternalJwtSignerClient<Channel>) -> Vec<String> {
    client
        .fetch_keys(FetchKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys
        .into_iter()
        .map(|k| k.key_id)
        .collect()
}

async fn signing_kid(client: &mut ExternalJwtSignerClient<Channel>) -> String {
    use base64::Engine as _;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!(r#"{{"exp":{},"iat":{now}}}"#, now + 600));
    let header = client
        .sign(SignJwtRequest { claims })
        .await
        .unwrap()
        .into_inner()
        .header;
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_served_store_rotates_in_the_background_and_survives_a_restart() {
    let root = tempfile::tempdir().unwrap();
    let store = init_store(root.path());
    // Seconds instead of days: refresh 1s, lead 4s, period 6s. The lead is what the check
    // below relies on: a correct server is only caught out if the test stalls for longer than
    // the lead between a FetchKeys and the next Sign, so it is far longer than a scheduling
    // stall on a loaded 2-core CI machine (and at least the refresh hint, as signet requires,
    // with a period longer than the lead). The next key
    // is published ~2s after start and signs ~6s after it, well inside the deadline.
    let flags = [
        "--refresh-hint",
        "1s",
        "--publish-lead",
        "4s",
        "--rotation-period",
        "6s",
        "--max-token-expiration",
        "600s",
    ];
    let served = Served::start(root.path(), &store, &flags);
    let mut client = served.client().await;
    let first = signing_kid(&mut client).await;
    assert_eq!(published(&mut client).await, vec![first.clone()]);

    // While served, the store is locked against offline commands.
    let (status, stderr) = run(signet(&["keys", "rotate", "--key-dir", &store]));
    assert!(!status.success(), "{status}: {stderr}");
    assert!(stderr.contains("--admin-socket"), "{stderr}");

    // Poll (bounded) until the background rotation has promoted a new key; every kid seen
    // signing must have been seen published by an earlier FetchKeys. The pause below only paces
    // the poll: what is checked is the order of what the calls return, not their timing.
    let deadline = Instant::now() + common::DEADLINE;
    let mut seen_published: Vec<String> = Vec::new();
    let second = loop {
        let kid = signing_kid(&mut client).await;
        if kid != first {
            assert!(
                seen_published.contains(&kid),
                "{kid} signed before any FetchKeys published it"
            );
            break kid;
        }
        for kid in published(&mut client).await {
            if !seen_published.contains(&kid) {
                seen_published.push(kid);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no rotation within {:?}",
            common::DEADLINE
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let keys = published(&mut client).await;
    assert_eq!(&keys[..2], &[first.clone(), second.clone()], "oldest first");
    drop(client); // an open connection would hold the drain for the grace period
    served.stop();

    // The store on disk says the same, and a restart serves the same keys.
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(Path::new(&store).join("state.json")).unwrap())
            .unwrap();
    let states: Vec<(&str, &str)> = state["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["kid"].as_str().unwrap(), k["state"].as_str().unwrap()))
        .collect();
    assert!(states.contains(&(first.as_str(), "retired")), "{states:?}");
    let served = Served::start(root.path(), &store, &["--rotation-period", "0"]);
    let mut client = served.client().await;
    let now_signing = signing_kid(&mut client).await;
    let keys = published(&mut client).await;
    assert!(
        keys.contains(&first),
        "retired key still published: {keys:?}"
    );
    assert!(keys.contains(&now_signing));
    assert_ne!(now_signing, first);
    drop(client);
    served.stop();
}

fn serve_fails(root: &Path, store: &str, extra: &[&str]) -> String {
    let socket = root.join("refused.sock");
    let mut args = vec!["serve", "--socket", socket.to_str().unwrap()];
    if !store.is_empty() {
        args.extend(["--key-dir", store]);
    }
    args.extend_from_slice(extra);
    let (status, stderr) = run(signet(&args));
    assert_eq!(status.code(), Some(64), "{status}: {stderr}");
    assert!(!socket.exists(), "nothing bound");
    stderr
}

#[test]
fn serve_refuses_a_bad_store_before_binding() {
    let root = tempfile::tempdir().unwrap();
    let missing = root.path().join("missing");
    let stderr = serve_fails(root.path(), missing.to_str().unwrap(), &[]);
    assert!(stderr.contains("signet keys init --key-dir"), "{stderr}");

    let store = init_store(root.path());
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o755)).unwrap();
    let stderr = serve_fails(root.path(), &store, &[]);
    assert!(stderr.contains("chmod 0700"), "{stderr}");
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o700)).unwrap();

    let stderr = serve_fails(root.path(), &store, &["--publish-lead", "10s"]);
    assert!(stderr.contains("--publish-lead"), "{stderr}");
    let stderr = serve_fails(root.path(), &store, &["--key-file", "/nonexistent.pem"]);
    assert!(stderr.contains("--key-file"), "{stderr}");
    let stderr = serve_fails(
        root.path(),
        "",
        &["--key-file", "/x.pem", "--rotation-period", "1d"],
    );
    assert!(stderr.contains("--rotation-period"), "{stderr}");
}

fn config(args: &[&str]) -> signet::config::ServeConfig {
    use clap::Parser as _;
    let mut argv = vec!["signet", "serve", "--socket", "/run/test/signet.sock"];
    argv.extend_from_slice(args);
    let cli = signet::cli::Cli::try_parse_from(argv).unwrap();
    let signet::cli::Command::Serve(serve) = cli.command else {
        panic!("not serve")
    };
    signet::config::ServeConfig::from_args(&serve).unwrap()
}

#[tokio::test]
async fn without_key_dir_serve_keeps_its_in_memory_and_key_file_behaviour() {
    // Default: one generated ES256 key, rotating in memory every 30 days.
    let lifecycle = signet::server::build_lifecycle(&config(&[])).unwrap();
    let keys = lifecycle.list().await;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].alg, signet::keys::Algorithm::ES256);
    let status = lifecycle.status().await;
    assert_eq!(status.active_kid.as_deref(), Some(keys[0].kid.as_str()));
    assert!(status.next_rotation_at.is_some());

    // --key-file: the first signs, the others are published verify-only; no rotation.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let first = fixtures.join("lifecycle-ec-sec1.key");
    let second = fixtures.join("lifecycle-sa-pkcs1.key");
    let lifecycle = signet::server::build_lifecycle(&config(&[
        "--key-file",
        first.to_str().unwrap(),
        "--key-file",
        second.to_str().unwrap(),
    ]))
    .unwrap();
    let keys = lifecycle.list().await;
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].state, signet::lifecycle::KeyState::Active);
    assert_eq!(keys[0].alg, signet::keys::Algorithm::ES256);
    assert!(keys[1].verify_only);
    assert_eq!(lifecycle.status().await.next_rotation_at, None);
    let snapshot = lifecycle.keyring().snapshot();
    assert_eq!(snapshot.signing_key().unwrap().kid(), keys[0].kid);
    assert_eq!(snapshot.published().len(), 2);
}

#[test]
fn offline_import_refuses_bad_input_and_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let store = init_store(root.path());
    let state = || std::fs::read(Path::new(&store).join("state.json")).unwrap();
    let before = state();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let import = |file: &Path| {
        let mut command = signet(&["keys", "import", "--key-dir", &store, "--file"]);
        command.arg(file);
        let (status, stderr) = run(command);
        assert_eq!(status.code(), Some(1), "{status}: {stderr}");
        stderr
    };

    let readable = root.path().join("readable.key");
    std::fs::copy(fixtures.join("lifecycle-sa-pkcs1.key"), &readable).unwrap();
    std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o644)).unwrap();
    let stderr = import(&readable);
    assert!(stderr.contains("chmod 0600"), "{stderr}");

    let weak = root.path().join("weak.key");
    std::fs::copy(fixtures.join("lifecycle-rsa1024-weak.key"), &weak).unwrap();
    std::fs::set_permissions(&weak, std::fs::Permissions::from_mode(0o600)).unwrap();
    let stderr = import(&weak);
    assert!(stderr.contains("1024 bits is too small"), "{stderr}");

    let garbage = root.path().join("garbage.key");
    std::fs::write(&garbage, b"not a key").unwrap();
    std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o600)).unwrap();
    let stderr = import(&garbage);
    assert!(stderr.contains("no private key found"), "{stderr}");

    let stderr = import(&root.path().join("missing.key"));
    assert!(stderr.contains("missing.key"), "{stderr}");

    assert_eq!(state(), before, "nothing changed");
    let pem_files = std::fs::read_dir(&store)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("pem".as_ref()))
        .count();
    assert_eq!(pem_files, 1, "no key file was added");
}

#[test]
fn init_with_a_bad_rsa_size_creates_nothing_and_can_be_run_again() {
    let root = tempfile::tempdir().unwrap();
    let store = root.path().join("keys");
    let init_rs256 = |extra: &[&str]| {
        let mut args = vec!["keys", "init", "--key-dir", store.to_str().unwrap()];
        args.extend(["--alg", "RS256"]);
        args.extend(extra);
        run(signet(&args))
    };
    let (status, stderr) = init_rs256(&["--rsa-bits", "1000"]);
    assert_eq!(status.code(), Some(64), "{status}: {stderr}");
    assert!(stderr.contains("2048, 3072 or 4096"), "{stderr}");
    assert!(!store.exists(), "nothing created");
    let (status, stderr) = init_rs256(&[]);
    assert!(status.success(), "{status}: {stderr}");
}
