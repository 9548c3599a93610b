//! Shared test harness: signet on a real Unix socket (in-process or the real binary), real tonic
//! clients for both API versions, the fixture keys, the apiserver's recorded claims, and an
//! independent token verifier.
//!
//! The verifier must never use signet's code: it turns the FetchKeys PKIX DER into JWKs with
//! RustCrypto parsers and verifies with `jsonwebtoken` (ES512, which jsonwebtoken lacks, with
//! the `p521` crate directly). A test that "verifies" with signet's own signer proves nothing.
//!
//! Nothing here sleeps to synchronise: readiness is a log line from the child or a socket that
//! accepts, and every wait has a deadline.

#![allow(dead_code)]

pub mod verifier;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser as _;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint, Uri};

use signet::api::v1::{
    FetchKeysRequest, FetchKeysResponse, MetadataRequest, MetadataResponse, SignJwtRequest,
    SignJwtResponse,
};
use signet::api::{v1, v1alpha1, ExternalJwtSignerService};
use signet::cli::{Cli, Command as CliCommand};
use signet::config::ServeConfig;
use signet::server::{Listener, ServeError};
use signet::signer::TokenSigner;

/// How long any wait in these tests may take before the test fails (generous for a loaded
/// 2-core CI machine; a passing run never waits this long).
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The issuer the recorded claims carry (`--service-account-issuer` of the cluster that sent them).
pub const RECORDED_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The repository root (where `keys/` lives).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fixture key file in `keys/`.
pub fn key_path(name: &str) -> PathBuf {
    let path = repo_root().join("keys").join(name);
    assert!(path.is_file(), "fixture key {} is missing", path.display());
    path
}

/// One recorded Sign request: the case name and the `claims` string exactly as received.
#[derive(Debug, Clone)]
pub struct RecordedClaims {
    pub name: String,
    pub claims: String,
}

/// Where the apiserver's recorded claims live: `../shared/testdata/` beside the repository
/// (CI clones the repo with `shared/` as a sibling), or `/work/shared` on a developer machine
/// whose worktree is nested deeper. `SIGNET_APISERVER_CLAIMS` overrides both.
pub fn claims_file() -> PathBuf {
    let mut candidates = Vec::new();
    if let Some(path) = std::env::var_os("SIGNET_APISERVER_CLAIMS") {
        candidates.push(PathBuf::from(path));
    }
    candidates.push(repo_root().join("../shared/testdata/apiserver-claims.txt"));
    candidates.push(PathBuf::from("/work/shared/testdata/apiserver-claims.txt"));
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "apiserver-claims.txt not found; looked at {candidates:?}. The contract tests need \
                 the real kube-apiserver payloads from shared/testdata (set SIGNET_APISERVER_CLAIMS)"
            )
        })
}

/// Every recorded claims string, verbatim.
pub fn recorded_claims() -> Vec<RecordedClaims> {
    let path = claims_file();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    let cases: Vec<RecordedClaims> = text
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (name, claims) = line
                .split_once('\t')
                .unwrap_or_else(|| panic!("{}: line without a TAB: {line:?}", path.display()));
            RecordedClaims {
                name: name.to_owned(),
                claims: claims.to_owned(),
            }
        })
        .collect();
    assert!(
        cases.len() >= 3,
        "{} holds only {} cases",
        path.display(),
        cases.len()
    );
    cases
}

/// Which of the two wire packages a call goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    V1,
    V1Alpha1,
}

impl Api {
    pub const BOTH: [Api; 2] = [Api::V1, Api::V1Alpha1];
}

/// Real tonic clients for both packages over one channel to one socket.
#[derive(Debug, Clone)]
pub struct Clients {
    pub v1: v1::external_jwt_signer_client::ExternalJwtSignerClient<Channel>,
    pub v1alpha1: v1alpha1::external_jwt_signer_client::ExternalJwtSignerClient<Channel>,
}

impl Clients {
    pub fn new(channel: Channel) -> Self {
        Self {
            v1: v1::external_jwt_signer_client::ExternalJwtSignerClient::new(channel.clone()),
            v1alpha1: v1alpha1::external_jwt_signer_client::ExternalJwtSignerClient::new(channel),
        }
    }

    pub async fn sign(&mut self, api: Api, claims: &str) -> Result<SignJwtResponse, tonic::Status> {
        let request = SignJwtRequest {
            claims: claims.to_owned(),
        };
        let response = match api {
            Api::V1 => self.v1.sign(request).await?,
            Api::V1Alpha1 => self.v1alpha1.sign(request).await?,
        };
        Ok(response.into_inner())
    }

    pub async fn fetch_keys(&mut self, api: Api) -> Result<FetchKeysResponse, tonic::Status> {
        let response = match api {
            Api::V1 => self.v1.fetch_keys(FetchKeysRequest {}).await?,
            Api::V1Alpha1 => self.v1alpha1.fetch_keys(FetchKeysRequest {}).await?,
        };
        Ok(response.into_inner())
    }

    pub async fn metadata(&mut self, api: Api) -> Result<MetadataResponse, tonic::Status> {
        let response = match api {
            Api::V1 => self.v1.metadata(MetadataRequest {}).await?,
            Api::V1Alpha1 => self.v1alpha1.metadata(MetadataRequest {}).await?,
        };
        Ok(response.into_inner())
    }
}

/// A channel to a Unix socket path, dialled as kube-apiserver does (authority `localhost`,
/// HTTP/2 cleartext). The connector runs per (re)connect. A connection or a call that takes
/// longer than [`DEADLINE`] fails the test instead of hanging it.
pub async fn channel_to_path(path: &Path) -> Channel {
    let path = path.to_owned();
    Endpoint::try_from("http://localhost")
        .expect("static URI")
        .connect_timeout(DEADLINE)
        .timeout(DEADLINE)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
        .await
        .expect("connect to the signet socket")
}

/// Clients for both packages over one channel to a socket path.
pub async fn connect_path(path: &Path) -> Clients {
    Clients::new(channel_to_path(path).await)
}

/// A channel to a Linux abstract socket `@name` (given without the `@`).
pub async fn connect_abstract(name: &str) -> Clients {
    let name = name.to_owned();
    let channel = Endpoint::try_from("http://localhost")
        .expect("static URI")
        .connect_timeout(DEADLINE)
        .timeout(DEADLINE)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let name = name.clone();
            async move {
                use std::os::linux::net::SocketAddrExt as _;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
                let std_stream = std::os::unix::net::UnixStream::connect_addr(&addr)?;
                std_stream.set_nonblocking(true)?;
                Ok::<_, std::io::Error>(TokioIo::new(UnixStream::from_std(std_stream)?))
            }
        }))
        .await
        .expect("connect to the abstract signet socket");
    Clients::new(channel)
}

/// signet served in this test process on a real socket file in a temporary directory, built
/// from `signet serve` flags as the binary builds it (clap, [`ServeConfig`],
/// `build_lifecycle`), without the background rotation task and the HTTP listener.
#[derive(Debug)]
pub struct InProcessSigner {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    /// The checked configuration it was started with.
    pub config: ServeConfig,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), ServeError>>>,
}

impl InProcessSigner {
    /// Starts with `signet serve` flags (without `--socket`, which is set to a temp path).
    pub async fn start(flags: &[&str]) -> Self {
        Self::try_start(flags)
            .await
            .unwrap_or_else(|err| panic!("signet did not start with {flags:?}: {err}"))
    }

    /// Like [`Self::start`], returning the configuration or key-loading error as text.
    pub async fn try_start(flags: &[&str]) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("signet.sock");
        let socket_str = socket.to_str().expect("utf-8 temp path").to_owned();
        let mut argv = vec!["signet", "serve", "--socket", &socket_str];
        argv.extend_from_slice(flags);
        let cli = Cli::try_parse_from(&argv).map_err(|err| err.to_string())?;
        let CliCommand::Serve(args) = cli.command else {
            unreachable!("argv starts with `signet serve`");
        };
        let config = ServeConfig::from_args(&args).map_err(|err| err.to_string())?;
        let lifecycle = {
            let config = config.clone();
            // What `signet serve` does before its runtime starts: key loading and generation
            // are blocking work, kept off the runtime here.
            tokio::task::spawn_blocking(move || signet::server::build_lifecycle(&config))
                .await
                .expect("key loading panicked")
                .map_err(|err| err.to_string())?
        };
        let listener = Listener::bind(&config.socket, config.socket_mode, &config.allowed_uids)
            .map_err(|err| err.to_string())?;
        let signer = Arc::new(TokenSigner::new(
            Arc::clone(lifecycle.keyring()),
            config.max_token_expiration,
            config.refresh_hint,
        ));
        let (shutdown_tx, shutdown_rx) = oneshot::channel();
        let task = tokio::spawn(signet::server::serve(
            listener,
            ExternalJwtSignerService::new(signer),
            config.shutdown_grace,
            async {
                let _ = shutdown_rx.await;
            },
        ));
        Ok(Self {
            dir,
            socket,
            config,
            shutdown: Some(shutdown_tx),
            task: Some(task),
        })
    }

    pub async fn clients(&self) -> Clients {
        connect_path(&self.socket).await
    }

    /// Triggers the shutdown future and waits for `serve` to return.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().expect("serve task");
        tokio::time::timeout(DEADLINE, task)
            .await
            .expect("serve did not return after shutdown")
            .expect("serve task panicked")
    }
}

impl Drop for InProcessSigner {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The real `signet` binary as a child process, its stderr collected line by line.
#[derive(Debug)]
pub struct SignetProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// The path of the `signet` binary Cargo built for these tests (same features as the tests).
pub fn signet_binary() -> &'static str {
    env!("CARGO_BIN_EXE_signet")
}

/// A command that runs the `signet` binary with nothing from the environment that would change
/// what it does (`RUST_LOG` and the `SIGNET_*` variables its flags read); with `umask`, through
/// `sh` after `umask UMASK`, so that what signet creates can be checked under an operator's
/// strict umask.
pub fn signet_command(umask: Option<u32>) -> Command {
    let mut command = match umask {
        None => Command::new(signet_binary()),
        Some(umask) => {
            let mut command = Command::new("sh");
            command.args([
                "-c",
                &format!("umask {umask:03o} && exec \"$0\" \"$@\""),
                signet_binary(),
            ]);
            command
        }
    };
    command
        .env_remove("RUST_LOG")
        .env_remove("SIGNET_SOCKET")
        .env_remove("SIGNET_ADMIN_SOCKET")
        .env_remove("SIGNET_LOG_FORMAT");
    command
}

/// Runs `command` to its exit with `stdin` (or nothing) on its standard input and what it
/// prints collected. The pipes are drained on threads, so a chatty child never blocks on a
/// full pipe, and a child still running at [`DEADLINE`] is killed and fails the test.
pub fn run_command(mut command: Command, stdin: Option<&[u8]>) -> std::process::Output {
    use std::io::{Read, Write as _};
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn the signet binary");
    if let Some(input) = stdin {
        // Dropped at the end of the statement: the child sees end of input.
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input)
            .expect("write to the child's stdin");
    }
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let status = wait_child(&mut child, DEADLINE);
    std::process::Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

impl SignetProcess {
    /// Spawns `signet <args>` with JSON logs on stderr.
    pub fn spawn(args: &[&str]) -> Self {
        Self::spawn_with_env(args, &[])
    }

    pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_command(signet_command(None), args, env)
    }

    /// Spawns `signet <args>` under `umask`.
    pub fn spawn_with_umask(args: &[&str], umask: u32) -> Self {
        Self::spawn_command(signet_command(Some(umask)), args, &[])
    }

    fn spawn_command(mut command: Command, args: &[&str], env: &[(&str, &str)]) -> Self {
        command
            .args(["--log-format", "json"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn the signet binary");
        let stderr_pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::channel();
        let collected = Arc::clone(&stderr);
        // The reader ends when the child closes stderr (exits), which also ends `lines`.
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines() {
                let Ok(line) = line else { break };
                collected.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        Self {
            child,
            lines,
            stderr,
            reader: Some(reader),
        }
    }

    pub fn pid(&self) -> rustix::process::Pid {
        rustix::process::Pid::from_child(&self.child)
    }

    /// Waits for the startup line ("signet serving ..."), which signet logs after the socket
    /// is bound and listening. Panics with the collected stderr if the child exits first.
    pub fn wait_ready(&mut self) -> serde_json::Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) {
                        let message = json["message"].as_str().unwrap_or_default();
                        if message.starts_with("signet serving") {
                            return json;
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    panic!(
                        "signet did not report readiness within {DEADLINE:?}; stderr:\n{}",
                        self.stderr_text()
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    panic!(
                        "signet exited ({status:?}) before it was ready; stderr:\n{}",
                        self.stderr_text()
                    );
                }
            }
        }
    }

    /// Waits (bounded) for a stderr line containing `needle`, skipping earlier lines.
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(err) => panic!(
                    "no stderr line with {needle:?} ({err}); stderr:\n{}",
                    self.stderr_text()
                ),
            }
        }
    }

    /// Sends `signal` to the child.
    pub fn signal(&self, signal: rustix::process::Signal) {
        rustix::process::kill_process(self.pid(), signal).expect("signal the signet child");
    }

    /// Waits (bounded) for the child to exit and for its stderr to be fully read.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let status = wait_child(&mut self.child, DEADLINE);
        if let Some(reader) = self.reader.take() {
            reader.join().expect("stderr reader thread");
        }
        status
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for SignetProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits for `child` to exit within `limit`, killing it and failing the test otherwise. The
/// wait runs on a helper thread so the deadline is a channel timeout, not a polling loop.
pub fn wait_child(child: &mut Child, limit: Duration) -> ExitStatus {
    let pid = rustix::process::Pid::from_child(child);
    let (tx, rx) = mpsc::channel();
    let watchdog = std::thread::spawn(move || {
        if rx.recv_timeout(limit).is_err() {
            // Still running at the deadline: end it so `wait` below returns.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            return true;
        }
        false
    });
    let status = child.wait().expect("wait for signet");
    let _ = tx.send(());
    let timed_out = watchdog.join().expect("watchdog thread");
    assert!(!timed_out, "signet did not exit within {limit:?}");
    status
}

/// Runs `signet <args>` to completion (bounded), returning its exit status and stderr.
pub fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    let mut process = SignetProcess::spawn(args);
    let status = process.wait_exit();
    (status, process.stderr_text())
}

/// A new key directory at `path` holding one generated ES256 key, as `signet keys init` leaves
/// it, under `policy` and `clock`.
pub fn create_key_dir(
    path: &Path,
    policy: signet::lifecycle::RotationPolicy,
    clock: Arc<dyn signet::lifecycle::Clock>,
) -> signet::lifecycle::KeyLifecycle {
    signet::lifecycle::KeyLifecycle::create(
        Arc::new(signet::backend::DirectoryBackend::create(path).unwrap()),
        Arc::new(signet::lifecycle::FileStateStore::new(path)),
        policy,
        clock,
        signet::lifecycle::InitialKeys::Generate(signet::keys::Algorithm::ES256),
    )
    .unwrap()
}

/// Opens the key directory at `path` as `signet serve --key-dir` does (taking its lock).
pub fn open_key_dir(
    path: &Path,
    policy: signet::lifecycle::RotationPolicy,
    clock: Arc<dyn signet::lifecycle::Clock>,
) -> Result<signet::lifecycle::KeyLifecycle, signet::lifecycle::LifecycleError> {
    signet::lifecycle::KeyLifecycle::open(
        Arc::new(signet::backend::DirectoryBackend::open(path)?),
        Arc::new(signet::lifecycle::FileStateStore::new(path)),
        policy,
        clock,
    )
}

/// A unique Linux abstract socket name (without the `@`).
pub fn unique_abstract_name() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    format!(
        "signet-test-{}-{:016x}",
        std::process::id(),
        hasher.finish()
    )
}

/// The PKIX DER public key of a fixture private key, derived with RustCrypto (not signet): what
/// kube-apiserver computes for its own `sa.key`, so kids can be checked against it.
pub fn fixture_public_key_der(path: &Path) -> Vec<u8> {
    use p256::pkcs8::{DecodePrivateKey as _, EncodePublicKey as _};
    use rsa::pkcs1::DecodeRsaPrivateKey as _;
    let pem = std::fs::read_to_string(path).expect("read fixture");
    let block = |label: &str| -> String {
        let begin = format!("-----BEGIN {label}-----");
        let end = format!("-----END {label}-----");
        let start = pem.find(&begin).expect("PEM block start");
        let stop = pem[start..].find(&end).expect("PEM block end") + start + end.len();
        pem[start..stop].to_owned()
    };
    let der = if pem.contains("-----BEGIN RSA PRIVATE KEY-----") {
        rsa::RsaPrivateKey::from_pkcs1_pem(&block("RSA PRIVATE KEY"))
            .expect("PKCS#1 RSA fixture")
            .to_public_key()
            .to_public_key_der()
    } else if pem.contains("-----BEGIN EC PRIVATE KEY-----") {
        let sec1 = block("EC PRIVATE KEY");
        if let Ok(key) = p256::SecretKey::from_sec1_pem(&sec1) {
            key.public_key().to_public_key_der()
        } else if let Ok(key) = p384::SecretKey::from_sec1_pem(&sec1) {
            key.public_key().to_public_key_der()
        } else {
            p521::SecretKey::from_sec1_pem(&sec1)
                .expect("SEC1 fixture on P-256, P-384 or P-521")
                .public_key()
                .to_public_key_der()
        }
    } else {
        let pkcs8 = block("PRIVATE KEY");
        if let Ok(key) = rsa::RsaPrivateKey::from_pkcs8_pem(&pkcs8) {
            key.to_public_key().to_public_key_der()
        } else if let Ok(key) = p256::SecretKey::from_pkcs8_pem(&pkcs8) {
            key.public_key().to_public_key_der()
        } else if let Ok(key) = p384::SecretKey::from_pkcs8_pem(&pkcs8) {
            key.public_key().to_public_key_der()
        } else {
            p521::SecretKey::from_pkcs8_pem(&pkcs8)
                .expect("PKCS#8 fixture of a supported key type")
                .public_key()
                .to_public_key_der()
        }
    };
    der.expect("encode PKIX DER").as_bytes().to_vec()
}

/// kube-apiserver's kid rule, computed with `sha2` (not signet): base64url, no padding, of the
/// SHA-256 of the PKIX DER.
pub fn expected_kid(der: &[u8]) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(der))
}
