//! The real `signet` binary on a real socket: file modes, stale-socket recovery, refusing to
//! steal a live socket, clean SIGTERM/SIGINT exits that remove the socket, Linux abstract
//! sockets end to end, and log lines that never carry claims or token material.

mod common;

use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::Path;

use rustix::process::Signal;

use common::verifier::{self, IndependentVerifier};
use common::{Api, Clients, SignetProcess, RECORDED_ISSUER};

/// Signs every recorded claims string over both APIs and verifies each token independently;
/// returns every header and signature produced.
async fn sign_and_verify_all(clients: &mut Clients) -> Vec<String> {
    let cases = common::recorded_claims();
    let mut material = Vec::new();
    for api in Api::BOTH {
        let keys = clients.fetch_keys(api).await.expect("FetchKeys");
        let audiences = [
            "https://kubernetes.default.svc.cluster.local",
            "vault",
            "https://sts.example.com",
        ];
        let verifier =
            IndependentVerifier::from_fetch_keys(&keys, RECORDED_ISSUER, &audiences).unwrap();
        for case in &cases {
            let signed = clients.sign(api, &case.claims).await.expect("Sign");
            let token = verifier::assemble(&signed.header, &case.claims, &signed.signature);
            verifier
                .verify(&token)
                .unwrap_or_else(|err| panic!("{}: {err}", case.name));
            material.push(signed.header);
            material.push(signed.signature);
        }
    }
    material
}

fn socket_mode(path: &Path) -> u32 {
    let meta = std::fs::symlink_metadata(path).expect("socket file exists");
    assert!(
        meta.file_type().is_socket(),
        "{} is not a socket",
        path.display()
    );
    meta.permissions().mode() & 0o7777
}

/// SIGTERM → exit 0 and the socket file is gone.
fn terminate_cleanly(process: &mut SignetProcess, socket: &Path, signal: Signal) {
    process.signal(signal);
    let status = process.wait_exit();
    assert_eq!(
        status.code(),
        Some(0),
        "signet should exit 0 on {signal:?}; stderr:\n{}",
        process.stderr_text()
    );
    assert!(
        !socket.exists(),
        "socket file left behind after a clean shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_socket_mode_is_0600_and_sigterm_exits_0_removing_it() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("signet.sock");
    let mut process = SignetProcess::spawn(&["serve", "--socket", socket.to_str().unwrap()]);
    process.wait_ready();
    assert_eq!(socket_mode(&socket), 0o600);
    // No temporary socket names are left beside it: only the socket and the admin socket
    // signet binds beside it by default (`admin.sock`).
    let mut entries: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        ["admin.sock", "signet.sock"],
        "stray files beside the socket"
    );

    let mut clients = common::connect_path(&socket).await;
    sign_and_verify_all(&mut clients).await;
    terminate_cleanly(&mut process, &socket, Signal::TERM);
    assert!(process.stderr_text().contains("received SIGTERM"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_mode_0660_admits_the_group_and_sigint_also_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("signet.sock");
    let mut process = SignetProcess::spawn(&[
        "serve",
        "--socket",
        socket.to_str().unwrap(),
        "--socket-mode",
        "0660",
    ]);
    process.wait_ready();
    assert_eq!(socket_mode(&socket), 0o660);
    let mut clients = common::connect_path(&socket).await;
    clients.metadata(Api::V1).await.expect("Metadata");
    terminate_cleanly(&mut process, &socket, Signal::INT);
    assert!(process.stderr_text().contains("received SIGINT"));
}

/// A client that never finishes its calls cannot hold shutdown beyond --shutdown-grace: signet
/// still exits 0 and removes the socket.
#[test]
fn shutdown_is_bounded_by_the_grace_period_even_with_a_stuck_client() {
    use std::io::{Read as _, Write as _};
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("signet.sock");
    let mut process = SignetProcess::spawn(&[
        "serve",
        "--socket",
        socket.to_str().unwrap(),
        "--shutdown-grace",
        "1s",
    ]);
    process.wait_ready();
    // An HTTP/2 client that sends its preface and then nothing, never answering GOAWAY.
    let mut stuck = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    stuck.set_read_timeout(Some(common::DEADLINE)).unwrap();
    stuck
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .unwrap();
    // The server's own SETTINGS frame proves it accepted and is serving this connection;
    // without it, SIGTERM could land while the connection still waits in the backlog.
    let mut first_frame = [0u8; 9];
    stuck.read_exact(&mut first_frame).unwrap();
    assert_eq!(first_frame[3], 0x4, "expected the server's SETTINGS frame");
    let signalled = std::time::Instant::now();
    terminate_cleanly(&mut process, &socket, Signal::TERM);
    // The stuck connection holds shutdown for the whole grace period given, and no longer: the
    // default (10 s) would overshoot the upper bound, which leaves a loaded machine 7 s of slack.
    let took = signalled.elapsed();
    assert!(
        took >= std::time::Duration::from_secs(1) && took < std::time::Duration::from_secs(8),
        "shutdown took {took:?} with --shutdown-grace 1s"
    );
    assert!(
        process.stderr_text().contains("grace period over"),
        "{}",
        process.stderr_text()
    );
    drop(stuck);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_socket_directory_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/signet/signet.sock");
    let mut process = SignetProcess::spawn(&["serve", "--socket", socket.to_str().unwrap()]);
    process.wait_ready();
    let mode = std::fs::metadata(socket.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o007,
        0,
        "socket directory must not be world-accessible"
    );
    let mut clients = common::connect_path(&socket).await;
    clients.fetch_keys(Api::V1).await.expect("FetchKeys");
    terminate_cleanly(&mut process, &socket, Signal::TERM);
}

#[test]
fn the_created_socket_directory_is_0750_under_a_strict_umask() {
    // Under umask 077 mkdir alone would make it 0700, and `--socket-mode 0660` would then
    // admit no group member: the directory gets 0750 whatever the umask.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("signet/signet.sock");
    let mut process = SignetProcess::spawn_with_umask(
        &[
            "serve",
            "--socket",
            socket.to_str().unwrap(),
            "--socket-mode",
            "0660",
        ],
        0o077,
    );
    process.wait_ready();
    let directory = std::fs::metadata(socket.parent().unwrap()).unwrap();
    assert_eq!(directory.permissions().mode() & 0o7777, 0o750);
    assert_eq!(socket_mode(&socket), 0o660);
    terminate_cleanly(&mut process, &socket, Signal::TERM);
}

#[test]
fn the_socket_is_created_with_its_mode_under_a_permissive_umask() {
    // The socket file gets its mode from the umask signet sets for the bind, with no chmod
    // after: under umask 000 it must still come out owner-only.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("signet.sock");
    let mut process =
        SignetProcess::spawn_with_umask(&["serve", "--socket", socket.to_str().unwrap()], 0o000);
    process.wait_ready();
    assert_eq!(socket_mode(&socket), 0o600);
    terminate_cleanly(&mut process, &socket, Signal::TERM);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("signet.sock");
    // What a crash leaves: a socket file nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(std::fs::symlink_metadata(&socket)
        .unwrap()
        .file_type()
        .is_socket());

    let mut process = SignetProcess::spawn(&["serve", "--socket", socket.to_str().unwrap()]);
    process.wait_ready();
    assert!(process.stderr_text().contains("stale socket"));
    assert_eq!(socket_mode(&socket), 0o600);
    let mut clients = common::connect_path(&socket).await;
    sign_and_verify_all(&mut clients).await;
    terminate_cleanly(&mut process, &socket, Signal::TERM);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_socket_is_not_stolen() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("signet.sock");
    let socket_arg = socket.to_str().unwrap();
    let mut first = SignetProcess::spawn(&["serve", "--socket", socket_arg]);
    first.wait_ready();
    let inode = std::fs::symlink_metadata(&socket).unwrap().ino();

    let mut second = SignetProcess::spawn(&["serve", "--socket", socket_arg]);
    let status = second.wait_exit();
    let stderr = second.stderr_text();
    assert!(!status.success(), "second signet must not start:\n{stderr}");
    assert!(
        stderr.contains("in use by another live process"),
        "unclear message:\n{stderr}"
    );
    assert!(stderr.contains(socket_arg));

    // The first one still owns the same socket file and still serves.
    assert_eq!(std::fs::symlink_metadata(&socket).unwrap().ino(), inode);
    assert!(first.is_running());
    let mut clients = common::connect_path(&socket).await;
    sign_and_verify_all(&mut clients).await;
    terminate_cleanly(&mut first, &socket, Signal::TERM);
}

#[test]
fn a_live_socket_with_a_full_queue_is_not_stolen_and_the_start_does_not_hang() {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("signet.sock");
    // A live server that accepts nothing, with its queue of pending connections full: a
    // blocking connect to it would wait until one is accepted, that is, forever.
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let address = SocketAddrUnix::new(&socket).unwrap();
    let mut queued = Vec::new();
    loop {
        let client = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        match rustix::net::connect(&client, &address) {
            Ok(()) => queued.push(client),
            Err(rustix::io::Errno::AGAIN) => break,
            Err(err) => panic!("connect: {err}"),
        }
        assert!(queued.len() < 100_000, "the queue never filled");
    }
    let (status, stderr) = common::run_to_exit(&["serve", "--socket", socket.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("in use by another live process"),
        "unclear message:\n{stderr}"
    );
    assert!(socket.exists(), "the live server's socket was removed");
}

/// Whether `/proc/locks` shows `pid` waiting for a lock.
fn waits_for_a_lock(pid: rustix::process::Pid) -> bool {
    let locks = std::fs::read_to_string("/proc/locks").unwrap();
    locks.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "1: -> FLOCK ADVISORY WRITE <pid> <dev>:<inode> 0 EOF" for a blocked request.
        fields.get(1) == Some(&"->")
            && fields.get(5) == Some(&pid.as_raw_nonzero().to_string().as_str())
    })
}

/// Probing a stale socket, unlinking it and binding are done under a lock on the directory,
/// so two signets started at once cannot both take the stale file's place.
#[test]
fn the_stale_socket_is_replaced_under_a_lock_on_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("signet.sock");
    // A stale socket: its listener is gone, the file stays.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let stale = std::fs::symlink_metadata(&socket).unwrap().ino();

    // Another starting signet holds the directory.
    let held = std::fs::File::open(dir.path()).unwrap();
    rustix::fs::flock(&held, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let mut process = SignetProcess::spawn(&["serve", "--socket", socket.to_str().unwrap()]);
    let deadline = std::time::Instant::now() + common::DEADLINE;
    while !waits_for_a_lock(process.pid()) {
        assert!(
            std::time::Instant::now() < deadline,
            "signet never waited for the directory lock:\n{}",
            process.stderr_text()
        );
        assert!(process.is_running(), "{}", process.stderr_text());
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // Waiting, it has not touched the stale file: still there, still nobody behind it.
    assert_eq!(std::fs::symlink_metadata(&socket).unwrap().ino(), stale);
    let refused = std::os::unix::net::UnixStream::connect(&socket).unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    drop(held);
    process.wait_ready();
    std::os::unix::net::UnixStream::connect(&socket).expect("signet serves on the socket");
    terminate_cleanly(&mut process, &socket, Signal::TERM);
}

#[test]
fn a_file_that_is_not_a_socket_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("important.txt");
    std::fs::write(&path, "operator data").unwrap();
    let (status, stderr) = common::run_to_exit(&["serve", "--socket", path.to_str().unwrap()]);
    assert!(!status.success());
    assert!(stderr.contains("not a socket"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "operator data");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abstract_socket_works_end_to_end_and_is_not_stolen() {
    let name = common::unique_abstract_name();
    let address = format!("@{name}");
    let mut process = SignetProcess::spawn(&["serve", "--socket", &address]);
    let startup = process.wait_ready();
    assert_eq!(startup["socket"], address.as_str());

    let mut clients = common::connect_abstract(&name).await;
    sign_and_verify_all(&mut clients).await;

    let mut second = SignetProcess::spawn(&["serve", "--socket", &address]);
    let status = second.wait_exit();
    assert!(!status.success());
    assert!(
        second
            .stderr_text()
            .contains("in use by another live process"),
        "{}",
        second.stderr_text()
    );
    clients
        .metadata(Api::V1Alpha1)
        .await
        .expect("first still serves");

    process.signal(Signal::TERM);
    assert_eq!(process.wait_exit().code(), Some(0));
}

/// The startup line names the socket, kids and algorithms; no line ever carries claims, tokens
/// or key material, whatever was signed or refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_name_socket_kids_and_algs_but_never_claims_or_tokens() {
    for rust_log in [None, Some("signet=trace,info"), Some("trace")] {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("signet.sock");
        let key_file = common::key_path("test-rsa2048-pkcs1.pem");
        let second_key = common::key_path("test-ec384-sec1.pem");
        let args = [
            "serve",
            "--socket",
            socket.to_str().unwrap(),
            "--key-file",
            key_file.to_str().unwrap(),
            "--key-file",
            second_key.to_str().unwrap(),
        ];
        let env: Vec<(&str, &str)> = rust_log.iter().map(|v| ("RUST_LOG", *v)).collect();
        let mut process = SignetProcess::spawn_with_env(&args, &env);
        let startup = process.wait_ready();

        let mut clients = common::connect_path(&socket).await;
        let keys = clients.fetch_keys(Api::V1).await.unwrap();
        assert_eq!(startup["socket"], socket.to_str().unwrap());
        let kids = startup["kids"].as_str().expect("kids field");
        let algs = startup["algs"].as_str().expect("algs field");
        for key in &keys.keys {
            assert!(kids.contains(&key.key_id), "startup line lacks a kid");
        }
        assert!(algs.contains("RS256") && algs.contains("ES384"), "{algs}");

        let mut material = sign_and_verify_all(&mut clients).await;
        // A refused request must not be logged with its claims either.
        let refused = "bm90IGpzb24gU0VDUkVULUNMQUlNLU1BVEVSSUFM"; // "not json SECRET-CLAIM-MATERIAL"
        clients.sign(Api::V1, refused).await.expect_err("not JSON");
        material.push(refused.to_owned());
        for case in common::recorded_claims() {
            material.push(case.claims.clone());
            // Decoded claim values too: a jti or uid is bearer-token material in context.
            let json = common::verifier::decode_segment(&case.claims);
            material.push(json["jti"].as_str().unwrap().to_owned());
            material.push(
                json["kubernetes.io"]["serviceaccount"]["uid"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }

        process.signal(Signal::TERM);
        assert_eq!(process.wait_exit().code(), Some(0));
        let lines = process.stderr_lines();
        let startup_lines = lines
            .iter()
            .filter(|line| line.contains("signet serving"))
            .count();
        assert_eq!(startup_lines, 1, "one startup line");
        if rust_log == Some("trace") {
            // The filter took effect: the transport's own trace lines are checked too.
            assert!(lines.len() > 50, "only {} lines at trace", lines.len());
        }
        for line in &lines {
            let json: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|_| panic!("--log-format json printed a non-JSON line: {line}"));
            assert!(json["level"].is_string());
            for secret in &material {
                assert!(
                    !line.contains(secret.as_str()),
                    "log line (RUST_LOG={rust_log:?}) carries token material: {line}"
                );
            }
            assert!(!line.contains("SECRET-CLAIM-MATERIAL"));
            assert!(!line.contains("BEGIN"), "log line carries PEM: {line}");
        }
        for key in [&key_file, &second_key] {
            let pem = std::fs::read_to_string(key).unwrap();
            for body in pem.lines().filter(|l| !l.starts_with("-----")) {
                assert!(
                    !process.stderr_text().contains(body),
                    "key bytes in the log"
                );
            }
        }
    }
}

/// The README's first command: no key options, an ES256 key generated in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_with_no_key_options_signs_with_a_generated_es256_key() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("signet.sock");
    let mut process = SignetProcess::spawn(&["serve", "--socket", socket.to_str().unwrap()]);
    let startup = process.wait_ready();
    assert!(startup["algs"].as_str().unwrap().contains("ES256"));
    let mut clients = common::connect_path(&socket).await;
    let keys = clients.fetch_keys(Api::V1).await.unwrap();
    assert_eq!(keys.keys.len(), 1);
    assert_eq!(
        verifier::algorithm_of_spki(&keys.keys[0].key).unwrap(),
        "ES256"
    );
    sign_and_verify_all(&mut clients).await;
    terminate_cleanly(&mut process, &socket, Signal::TERM);
}

/// Set in the environment of the helper process below: the abstract name to call.
const PEER_HELPER_ENV: &str = "SIGNET_TEST_PEER_HELPER_SOCKET";
/// What the helper prints when its Metadata call succeeded or was turned away.
const PEER_ADMITTED: &str = "PEER-ADMITTED";
const PEER_REFUSED: &str = "PEER-REFUSED";

/// Not a test on its own: `an_abstract_socket_admits_only_allowed_uids` runs this test binary
/// again as another user with `--ignored --exact` and this variable set, to call signet from a
/// process with a different UID.
#[test]
#[ignore = "helper process for an_abstract_socket_admits_only_allowed_uids"]
fn peer_helper() {
    let Ok(name) = std::env::var(PEER_HELPER_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome = runtime.block_on(async {
        use std::os::linux::net::SocketAddrExt as _;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let channel = tonic::transport::Endpoint::try_from("http://localhost")
            .unwrap()
            .connect_timeout(std::time::Duration::from_secs(10))
            .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                let addr = addr.clone();
                async move {
                    let stream = std::os::unix::net::UnixStream::connect_addr(&addr)?;
                    stream.set_nonblocking(true)?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::from_std(stream)?,
                    ))
                }
            }))
            .await;
        let Ok(channel) = channel else {
            return PEER_REFUSED;
        };
        let mut client =
            signet::api::v1::external_jwt_signer_client::ExternalJwtSignerClient::new(channel);
        let mut request = tonic::Request::new(signet::api::v1::MetadataRequest {});
        request.set_timeout(std::time::Duration::from_secs(10));
        match client.metadata(request).await {
            Ok(_) => PEER_ADMITTED,
            Err(_) => PEER_REFUSED,
        }
    });
    println!("{outcome}");
}

/// Runs [`peer_helper`] as `uid` against `@name`; returns what it printed.
fn call_as_uid(name: &str, uid: u32) -> String {
    use std::os::unix::process::CommandExt as _;
    // A copy of this test binary in a world-readable directory, so the other user can run it
    // wherever the repository is checked out.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.path().join("socket-test-helper");
    let this_exe = std::env::current_exe().unwrap();
    if std::fs::hard_link(&this_exe, &exe).is_err() {
        std::fs::copy(&this_exe, &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut child = std::process::Command::new(&exe)
        .args(["--ignored", "--exact", "peer_helper", "--nocapture"])
        .env(PEER_HELPER_ENV, name)
        .uid(uid)
        .gid(uid)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the helper as another user");
    let mut stdout = child.stdout.take().unwrap();
    let status = common::wait_child(&mut child, common::DEADLINE);
    let mut out = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut out).unwrap();
    assert!(status.success(), "helper failed: {out}");
    out
}

/// An abstract socket has no file permissions: signet admits only its own UID, root and
/// `--allowed-uid` (SO_PEERCRED). Needs root to act as another user; CI runs as root.
#[test]
fn an_abstract_socket_admits_only_allowed_uids() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to connect as another UID");
        return;
    }
    const OTHER_UID: u32 = 65_534; // nobody
    let name = common::unique_abstract_name();
    let address = format!("@{name}");

    let mut process = SignetProcess::spawn(&["serve", "--socket", &address]);
    process.wait_ready();
    let out = call_as_uid(&name, OTHER_UID);
    assert!(
        out.contains(PEER_REFUSED),
        "UID {OTHER_UID} was admitted: {out}"
    );
    assert!(
        process.stderr_text().contains("refused connection"),
        "{}",
        process.stderr_text()
    );
    process.signal(Signal::TERM);
    assert_eq!(process.wait_exit().code(), Some(0));

    let name = common::unique_abstract_name();
    let address = format!("@{name}");
    let mut process = SignetProcess::spawn(&[
        "serve",
        "--socket",
        &address,
        "--allowed-uid",
        &OTHER_UID.to_string(),
    ]);
    process.wait_ready();
    let out = call_as_uid(&name, OTHER_UID);
    assert!(out.contains(PEER_ADMITTED), "allowed UID refused: {out}");
    process.signal(Signal::TERM);
    assert_eq!(process.wait_exit().code(), Some(0));
}

/// A call in flight when SIGTERM arrives still completes (the drain), then signet exits 0.
///
/// A raw HTTP/2 client opens a Sign stream and sends only part of its message, so the call is
/// provably open on the server when the signal arrives; it sends the rest after signet has
/// logged that it is draining.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_sign_finish() {
    use prost::Message as _;
    use tonic::codegen::http;

    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("signet.sock");
    let mut process = SignetProcess::spawn(&["serve", "--socket", socket.to_str().unwrap()]);
    process.wait_ready();
    let mut clients = common::connect_path(&socket).await;
    let keys = clients.fetch_keys(Api::V1).await.unwrap();
    drop(clients);

    let io = tokio::net::UnixStream::connect(&socket).await.unwrap();
    let (client, connection) = h2::client::handshake(io).await.expect("HTTP/2 handshake");
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let grpc_request = |path: &str| {
        http::Request::builder()
            .method("POST")
            .uri(format!("http://localhost{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap()
    };
    let grpc_frame = |message: &[u8]| {
        let mut frame = vec![0u8];
        frame.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
        frame.extend_from_slice(message);
        bytes::Bytes::from(frame)
    };

    let case = &common::recorded_claims()[0];
    let sign = grpc_frame(
        &signet::api::v1::SignJwtRequest {
            claims: case.claims.clone(),
        }
        .encode_to_vec(),
    );
    let (sign_response, mut sign_body) = client
        .send_request(grpc_request("/v1.ExternalJWTSigner/Sign"), false)
        .unwrap();
    sign_body.send_data(sign.slice(..10), false).unwrap();

    // A complete call on a later stream: once it is answered, the server has opened the Sign
    // stream too (stream ids open in order on one connection).
    let mut client = client.ready().await.unwrap();
    let (metadata_response, mut metadata_body) = client
        .send_request(grpc_request("/v1.ExternalJWTSigner/Metadata"), false)
        .unwrap();
    metadata_body.send_data(grpc_frame(&[]), true).unwrap();
    let metadata_response = metadata_response.await.expect("Metadata answered");
    assert_eq!(metadata_response.status(), 200);

    process.signal(Signal::TERM);
    process.wait_for_line("draining in-flight calls");

    sign_body.send_data(sign.slice(10..), true).unwrap();
    let response = sign_response.await.expect("Sign answered during the drain");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut payload = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        payload.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.unwrap().expect("gRPC trailers");
    assert_eq!(trailers["grpc-status"], "0", "{trailers:?}");
    assert_eq!(payload[0], 0, "uncompressed gRPC frame");
    let signed = signet::api::v1::SignJwtResponse::decode(&payload[5..]).unwrap();

    let audiences = ["https://kubernetes.default.svc.cluster.local"];
    let verifier =
        IndependentVerifier::from_fetch_keys(&keys, RECORDED_ISSUER, &audiences).unwrap();
    verifier
        .verify(&verifier::assemble(
            &signed.header,
            &case.claims,
            &signed.signature,
        ))
        .expect("the drained Sign verifies");

    drop(client);
    let status = process.wait_exit();
    assert_eq!(status.code(), Some(0), "{}", process.stderr_text());
    assert!(!socket.exists());
    assert!(
        !process.stderr_text().contains("grace period over"),
        "the call should finish within the grace period"
    );
    let _ = connection.await;
}

/// kube-apiserver keeps its connection open between calls. An idle kept-alive connection must
/// not hold shutdown until the grace period runs out: the server's GOAWAY lets the client close
/// it, and signet exits as soon as it has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_does_not_hold_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("signet.sock");
    let mut process = SignetProcess::spawn(&[
        "serve",
        "--socket",
        socket.to_str().unwrap(),
        "--shutdown-grace",
        "120s",
    ]);
    process.wait_ready();
    let mut clients = common::connect_path(&socket).await;
    clients.metadata(Api::V1).await.unwrap();
    // The client stays alive (and its connection task keeps running on this runtime).
    process.signal(Signal::TERM);
    let (status, stderr) = tokio::task::spawn_blocking(move || {
        let status = process.wait_exit();
        (status, process.stderr_text())
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("grace period over"), "{stderr}");
    drop(clients);
}

/// The HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` a server at `socket` announces.
async fn announced_max_concurrent_streams(socket: &Path) -> usize {
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (_send, mut connection) = h2::client::handshake(stream).await.unwrap();
    let mut ping_pong = connection.ping_pong().expect("ping_pong is taken once");
    // The server's SETTINGS open its side of the connection, so once a PING is answered they
    // have been read.
    tokio::select! {
        ended = &mut connection => panic!("connection ended before the PING was answered: {ended:?}"),
        pong = ping_pong.ping(h2::Ping::opaque()) => {
            pong.unwrap();
        }
    }
    connection.max_concurrent_send_streams()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sockets_limit_the_calls_in_flight_on_a_connection() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("signet.sock");
    let mut process = SignetProcess::spawn(&["serve", "--socket", socket.to_str().unwrap()]);
    process.wait_ready();
    // Without a limit (tonic's default) the client may open any number of streams at once.
    for path in [socket.clone(), dir.path().join("admin.sock")] {
        assert_eq!(
            announced_max_concurrent_streams(&path).await,
            signet::server::MAX_CONCURRENT_STREAMS as usize,
            "{}",
            path.display()
        );
    }
    terminate_cleanly(&mut process, &socket, Signal::TERM);
}
