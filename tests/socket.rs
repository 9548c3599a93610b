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
    use std::io::Write as _;
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
    stuck
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .unwrap();
    // Wait until the server serves this connection (it sends its SETTINGS frame), so the
    // signal below cannot overtake the accept.
    {
        use std::io::Read as _;
        stuck.set_read_timeout(Some(common::DEADLINE)).unwrap();
        let mut frame_header = [0u8; 9];
        stuck
            .read_exact(&mut frame_header)
            .expect("the server answers the HTTP/2 preface");
    }
    terminate_cleanly(&mut process, &socket, Signal::TERM);
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
    for rust_log in [None, Some("signet=trace,info")] {
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
        assert!(!lines.is_empty());
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
