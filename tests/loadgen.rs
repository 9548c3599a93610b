//! `signet bench` end to end: the real binary loads an in-process signet over a real Unix socket
//! for about a second and reports what it saw. No timing is asserted: figures depend on the
//! machine; only that calls were made, none failed, and the report is well-formed.

mod common;

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use signet::api::ExternalJwtSignerService;
use signet::keyring::{KeyRing, KeySet};
use signet::keys::{Algorithm, LocalKey, SigningKey};
use signet::server::{serve, Listener, SocketAddress};
use signet::signer::TokenSigner;
use tokio::sync::oneshot;

/// A signet serving an in-memory `alg` key on `socket` until the returned sender fires.
fn start_signet(
    runtime: &tokio::runtime::Runtime,
    socket: &Path,
    alg: Algorithm,
) -> oneshot::Sender<()> {
    let (key, _) = LocalKey::generate(alg, 2048).unwrap();
    let key = SigningKey::new(Arc::new(key));
    let keys = KeySet::single(key.clone());
    let signer = Arc::new(TokenSigner::new(
        Arc::new(KeyRing::new(keys)),
        Duration::from_secs(86_400),
        Duration::from_secs(60),
    ));
    // Bound before returning, so the bench's connect finds a listening socket.
    let listener = {
        let _guard = runtime.enter();
        Listener::bind(&SocketAddress::Path(socket.to_owned()), 0o600, &[]).unwrap()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    runtime.spawn(serve(
        listener,
        ExternalJwtSignerService::new(signer),
        Duration::from_secs(1),
        async {
            let _ = stopped.await;
        },
    ));
    stop
}

/// `signet bench ARGS` to its exit, killed and failed at the harness's deadline.
fn bench(args: &[&str]) -> Output {
    let mut command = common::signet_command(None);
    command.arg("bench").args(args);
    common::run_command(command, None)
}

fn run_json(socket: &Path, rpc: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "--socket",
        socket.to_str().unwrap(),
        "--rpc",
        rpc,
        "--concurrency",
        "4",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "-o",
        "json",
    ];
    args.extend_from_slice(extra);
    let output = bench(&args);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "bench failed: {}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // Not a terminal: no progress line may pollute the output.
    assert!(
        output.stderr.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|err| panic!("not JSON ({err}): {stdout}"))
}

fn assert_clean_run(report: &serde_json::Value, rpcs: &[&str]) {
    let requests = report["requests"].as_u64().unwrap();
    assert!(requests > 0, "{report:#}");
    assert_eq!(report["errors"].as_u64(), Some(0), "{report:#}");
    assert!(report["throughput_per_second"].as_f64().unwrap() > 0.0);
    let latency = &report["latency_us"];
    let p50 = latency["p50"].as_f64().unwrap();
    let p99 = latency["p99"].as_f64().unwrap();
    let max = latency["max"].as_f64().unwrap();
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{latency:#}");
    let by_rpc = report["by_rpc"].as_object().unwrap();
    let called: Vec<&str> = by_rpc.keys().map(String::as_str).collect();
    assert_eq!(called, rpcs, "{report:#}");
    let sum: u64 = by_rpc
        .values()
        .map(|r| r["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(sum, requests);
    // The machine's cores over the measured window, from the kernel's counters.
    if cfg!(target_os = "linux") {
        for share in ["idle_percent", "steal_percent"] {
            let percent = report["cpu"][share].as_f64();
            assert!(
                percent.is_some_and(|p| (0.0..=100.0).contains(&p)),
                "{share}: {report:#}"
            );
        }
    }
}

#[test]
fn bench_drives_signet_over_v1_and_v1alpha1() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("signet.sock");
    let stop = start_signet(&runtime, &socket, Algorithm::ES256);

    let sign = run_json(&socket, "sign", &[]);
    assert_clean_run(&sign, &["sign"]);
    assert_eq!(sign["api"], "v1");
    assert_eq!(sign["connections"], 1);
    assert_eq!(sign["spin"], false);

    // A spinning load generator measures the same calls, and says it spun.
    let spun = run_json(&socket, "sign", &["--spin"]);
    assert_clean_run(&spun, &["sign"]);
    assert_eq!(spun["spin"], true);

    // The mix over the older package, spread over two connections.
    let mix = run_json(&socket, "mix", &["--api", "v1alpha1", "--connections", "2"]);
    assert_clean_run(&mix, &["fetchkeys", "metadata", "sign"]);
    assert_eq!(mix["api"], "v1alpha1");

    let _ = stop.send(());
}

#[test]
fn bench_drives_signs_that_run_on_the_signing_threads() {
    // ES384 signs off the executor (on signet's signing threads): the path must answer every
    // call, under concurrency, over the socket.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("signet.sock");
    let stop = start_signet(&runtime, &socket, Algorithm::ES384);

    let mix = run_json(&socket, "mix", &[]);
    assert_clean_run(&mix, &["fetchkeys", "metadata", "sign"]);

    let _ = stop.send(());
}

#[test]
fn bench_counts_refused_signs_by_grpc_code() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("signet.sock");
    let stop = start_signet(&runtime, &socket, Algorithm::ES256);
    // Valid base64url, but of a JSON array: signet answers INVALID_ARGUMENT.
    let claims = dir.path().join("claims.txt");
    std::fs::write(&claims, "WzFd\n").unwrap();

    let output = bench(&[
        "--socket",
        socket.to_str().unwrap(),
        "--claims-file",
        claims.to_str().unwrap(),
        "--duration",
        "300ms",
        "--warmup",
        "0s",
        "-o",
        "json",
    ]);
    assert_eq!(output.status.code(), Some(1), "errors make the run fail");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let requests = report["requests"].as_u64().unwrap();
    assert!(requests > 0);
    assert_eq!(report["errors"].as_u64(), Some(requests));
    assert_eq!(
        report["errors_by_code"]["InvalidArgument"].as_u64(),
        Some(requests)
    );
    assert!(report["latency_us"].is_null());

    let _ = stop.send(());
}

#[test]
fn bench_reports_an_unreachable_socket_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody-here.sock");
    let output = bench(&["--socket", socket.to_str().unwrap(), "--duration", "1s"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("cannot connect to"), "{stderr}");
    assert!(stderr.contains("nobody-here.sock"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let output = bench(&["--socket", "relative.sock"]);
    assert_eq!(output.status.code(), Some(64));
}

#[test]
fn bench_refuses_a_claims_file_no_grpc_server_would_take() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("never-dialled.sock");
    let claims = dir.path().join("claims.txt");
    let cases: [(Vec<u8>, &str); 2] = [
        // One byte over the 4 MiB a gRPC server takes by default.
        (vec![b'x'; 4 * 1024 * 1024 + 1], "is over 4 MiB"),
        (b"\xff\xfe xxxx".to_vec(), "not UTF-8 text"),
    ];
    for (contents, refusal) in cases {
        std::fs::write(&claims, contents).unwrap();
        let output = bench(&[
            "--socket",
            socket.to_str().unwrap(),
            "--claims-file",
            claims.to_str().unwrap(),
        ]);
        assert_eq!(output.status.code(), Some(64), "a flag mistake");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains(refusal), "{stderr}");
        assert!(
            !stderr.contains("xxxx"),
            "the claims never reach the message"
        );
    }
}

/// A peer on a new socket in `dir` that accepts every connection and then does `with` to it,
/// on a thread of its own (left blocked in `accept` when the test ends).
fn peer(
    dir: &Path,
    with: impl Fn(std::os::unix::net::UnixStream) + Send + 'static,
) -> std::path::PathBuf {
    let socket = dir.join("peer.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            with(stream.unwrap());
        }
    });
    socket
}

#[test]
fn bench_ends_calls_a_server_never_answers_at_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    let holder = held.clone();
    // Reads nothing, answers nothing, closes nothing: a stuck signer.
    let socket = peer(dir.path(), move |stream| {
        holder.lock().unwrap().push(stream)
    });
    let output = bench(&[
        "--socket",
        socket.to_str().unwrap(),
        "--concurrency",
        "2",
        "--duration",
        "200ms",
        "--warmup",
        "0s",
        "--timeout",
        "300ms",
        "-o",
        "json",
    ]);
    assert_eq!(output.status.code(), Some(1), "timeouts make the run fail");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["requests"].as_u64(), Some(2), "{report}");
    assert_eq!(
        report["errors_by_code"]["DeadlineExceeded"].as_u64(),
        Some(2)
    );
    assert!(report["error_examples"]["DeadlineExceeded"]
        .as_str()
        .unwrap()
        .contains("--timeout"));
    assert_eq!(report["throughput_per_second"].as_f64(), Some(0.0));
}

#[test]
fn bench_stops_a_task_whose_connection_closed_and_says_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    // Reads the client's connection preface, then goes away: a signer that died.
    let socket = peer(dir.path(), |mut stream| {
        use std::io::Read as _;
        let mut preface = [0u8; 24];
        let _ = stream.read_exact(&mut preface);
    });
    let output = bench(&[
        "--socket",
        socket.to_str().unwrap(),
        "--concurrency",
        "4",
        "--duration",
        "30s",
        "--warmup",
        "0s",
        "-o",
        "json",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    // One failure per task, not a failure per turn of its loop for 30 s.
    let requests = report["requests"].as_u64().unwrap();
    assert!((1..=4).contains(&requests), "{report}");
    assert_eq!(
        report["errors_by_code"]["Unavailable"].as_u64(),
        Some(requests),
        "{report}"
    );
}
