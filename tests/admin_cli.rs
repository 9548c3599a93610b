//! `signet keys ...` end to end: the real CLI against a real `signet serve --key-dir` over its
//! admin socket. Every state change must show in the next FetchKeys over the apiserver socket
//! (a real tonic client), tokens are checked by the independent verifier, and every refusal
//! must give a clear `signet: error:` line, the right exit code, and change nothing.

mod admin_support;
mod common;

use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};

use admin_support::{
    data_timestamp, header_kid, path_str, published_kids, run_signet, run_signet_with_umask,
    AdminServer,
};
use common::verifier::{jwk_json, IndependentVerifier};
use common::RECORDED_ISSUER;
use signet::api::v1::FetchKeysResponse;

/// The audiences of the recorded claims set the servers here sign.
fn audiences() -> Vec<String> {
    use base64::Engine as _;
    let claims = &common::recorded_claims()[0].claims;
    let json: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .expect("base64url claims"),
    )
    .expect("JSON claims");
    json["aud"]
        .as_array()
        .expect("aud array")
        .iter()
        .map(|aud| aud.as_str().unwrap().to_owned())
        .collect()
}

/// Verifies `token` with only the published keys, as a relying party would.
fn verify_with(keys: &FetchKeysResponse, token: &str) {
    let audiences = audiences();
    let audiences: Vec<&str> = audiences.iter().map(String::as_str).collect();
    let verifier = IndependentVerifier::from_fetch_keys(keys, RECORDED_ISSUER, &audiences)
        .expect("the published keys form a JWK set");
    verifier
        .verify(token)
        .unwrap_or_else(|err| panic!("token does not verify against FetchKeys: {err}"));
}

#[tokio::test]
async fn admin_socket_is_owner_only_and_not_the_apiserver_socket() {
    let server = AdminServer::start();
    let admin = std::fs::symlink_metadata(&server.admin_socket).expect("admin socket exists");
    assert!(admin.file_type().is_socket());
    assert_eq!(
        admin.permissions().mode() & 0o777,
        0o600,
        "admin socket mode"
    );
    assert_ne!(server.admin_socket, server.api_socket);

    // The admin socket does not serve ExternalJWTSigner, and the apiserver socket does not
    // serve KeyAdmin.
    let mut over_admin = common::connect_path(&server.admin_socket).await;
    let status = over_admin
        .fetch_keys(common::Api::V1)
        .await
        .expect_err("FetchKeys over the admin socket");
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    let channel = common::channel_to_path(&server.api_socket).await;
    let mut admin_over_api = signet::admin::v1::key_admin_client::KeyAdminClient::new(channel);
    let status = admin_over_api
        .list(signet::admin::v1::ListRequest {})
        .await
        .expect_err("KeyAdmin over the apiserver socket");
    assert_eq!(status.code(), tonic::Code::Unimplemented);
}

#[tokio::test]
async fn list_and_status_describe_the_running_store() {
    let server = AdminServer::start();
    let fetched = server.fetch_keys().await;
    assert_eq!(fetched.keys.len(), 1);
    let kid = &fetched.keys[0].key_id;

    let keys = server.list();
    assert_eq!(keys.len(), 1, "{keys:#?}");
    assert_eq!(keys[0]["kid"], kid.as_str());
    assert_eq!(keys[0]["alg"], "ES256");
    assert_eq!(keys[0]["state"], "active");
    assert!(keys[0]["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(keys[0]["activated_at"].is_string());
    assert!(keys[0]["retired_at"].is_null());
    assert!(keys[0]["removal_due"].is_null());

    let table = server.keys(&["list"]);
    let table = table.ok();
    let mut lines = table.lines();
    let header = lines.next().expect("header line");
    for column in [
        "KID",
        "ALG",
        "STATE",
        "CREATED",
        "ACTIVATED",
        "RETIRED",
        "REMOVAL DUE",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let row = lines.next().expect("one key row");
    assert!(row.starts_with(kid.as_str()) && row.contains(" ES256 ") && row.contains(" active "));
    assert!(lines.next().is_none());

    let status = server.keys(&["status"]);
    let status = status.ok();
    assert!(
        status.contains(&format!("active key:    {kid}")),
        "{status}"
    );
    assert!(status.contains("next key:      none"), "{status}");
    let status = server.keys(&["status", "-o", "json"]);
    let status: serde_json::Value = serde_json::from_str(status.ok()).unwrap();
    assert_eq!(status["active_kid"], kid.as_str());
    assert!(status["next_kid"].is_null());
    assert!(
        status["next_rotation_at"].is_string(),
        "30-day rotation is on by default"
    );
    assert!(status["last_error"].is_null());
}

#[tokio::test]
async fn every_state_change_shows_in_the_next_fetch_keys() {
    let server = AdminServer::start();
    let initial = server.fetch_keys().await;
    let old = initial.keys[0].key_id.clone();
    assert_eq!(header_kid(&server.sign_token().await), old);

    // rotate: a next key is published at once, but does not sign.
    let rotated = server.keys(&["rotate", "--alg", "ES384"]);
    let new = server.kid_in_state("next");
    assert!(rotated.ok().contains(&new), "{}", rotated.stdout);
    let after_rotate = server.fetch_keys().await;
    assert_eq!(published_kids(&after_rotate), [old.clone(), new.clone()]);
    assert!(data_timestamp(&after_rotate) > data_timestamp(&initial));
    assert_eq!(header_kid(&server.sign_token().await), old);

    // promote without --force within the publish lead: refused, nothing changes.
    server
        .keys(&["promote"])
        .refused(1, "has not been published for the publish lead");
    let unchanged = server.fetch_keys().await;
    assert_eq!(unchanged, after_rotate);

    // promote --force: the new key signs, the old one is retired but still published.
    let promoted = server.keys(&["promote", "--force"]);
    assert!(promoted.ok().contains(&new));
    let after_promote = server.fetch_keys().await;
    let token = server.sign_token().await;
    assert_eq!(header_kid(&token), new);
    verify_with(&after_promote, &token);
    assert_eq!(published_kids(&after_promote), [old.clone(), new.clone()]);
    let keys = server.list();
    let old_entry = keys.iter().find(|k| k["kid"] == old.as_str()).unwrap();
    assert_eq!(old_entry["state"], "retired");
    assert!(old_entry["removal_due"].is_string(), "{old_entry}");

    // remove a key that may still verify live tokens: refused without --force.
    server
        .keys(&["remove", &old])
        .refused(1, "may still verify live tokens");
    assert_eq!(server.fetch_keys().await, after_promote);

    // remove --force: gone from FetchKeys.
    let removed = server.keys(&["remove", &old, "--force"]);
    assert!(removed.ok().contains(&old));
    let after_remove = server.fetch_keys().await;
    assert_eq!(published_kids(&after_remove), std::slice::from_ref(&new));
    assert!(data_timestamp(&after_remove) > data_timestamp(&after_promote));

    // retire a next key: it stays published, never signs, and is listed as retired.
    server.keys(&["rotate"]).ok();
    let next = server.kid_in_state("next");
    let retired = server.keys(&["retire", &next]);
    assert!(retired.ok().contains(&next));
    let after_retire = server.fetch_keys().await;
    assert_eq!(published_kids(&after_retire), [new.clone(), next.clone()]);
    let keys = server.list();
    let entry = keys.iter().find(|k| k["kid"] == next.as_str()).unwrap();
    assert_eq!(entry["state"], "retired");
    assert_eq!(header_kid(&server.sign_token().await), new);
    server.keys(&["remove", &next, "--force"]).ok();
    assert_eq!(
        published_kids(&server.fetch_keys().await),
        std::slice::from_ref(&new)
    );

    // Every change above was persisted: a restarted server publishes the same set.
    let final_keys = server.fetch_keys().await;
    let restarted = restart(server);
    let reloaded = restarted.fetch_keys().await;
    assert_eq!(published_kids(&reloaded), published_kids(&final_keys));
}

/// Stops `server` with SIGTERM and starts a new one on the same key directory and sockets.
fn restart(mut server: AdminServer) -> AdminServer {
    server.process.signal(rustix::process::Signal::TERM);
    let status = server.process.wait_exit();
    assert!(status.success(), "{status:?}");
    let mut process = common::SignetProcess::spawn(&[
        "serve",
        "--key-dir",
        path_str(&server.key_dir),
        "--socket",
        path_str(&server.api_socket),
        "--admin-socket",
        path_str(&server.admin_socket),
    ]);
    process.wait_ready();
    AdminServer { process, ..server }
}

#[tokio::test]
async fn rotate_promote_now_needs_force_and_then_signs_at_once() {
    let server = AdminServer::start();
    let before = server.fetch_keys().await;

    let refused = server.keys(&["rotate", "--promote-now"]);
    refused.refused(64, "skipping the publish lead time");
    assert!(refused.stderr.contains("--force"), "{}", refused.stderr);
    assert_eq!(
        server.fetch_keys().await,
        before,
        "a refused rotate changes nothing"
    );

    let rotated = server.keys(&["rotate", "--promote-now", "--force"]);
    let active = server.kid_in_state("active");
    assert!(rotated.ok().contains(&active));
    assert_ne!(active, before.keys[0].key_id);
    let token = server.sign_token().await;
    assert_eq!(header_kid(&token), active);
    verify_with(&server.fetch_keys().await, &token);
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_change_nothing() {
    let server = AdminServer::start();
    let active = server.kid_in_state("active");
    let before = server.fetch_keys().await;
    let key = |name: &str| path_str(&server.private_key_copy(name)).to_owned();

    // Unknown kid.
    server
        .keys(&["retire", "no-such-kid"])
        .refused(1, "no key has kid no-such-kid");
    server
        .keys(&["remove", "no-such-kid", "--force"])
        .refused(1, "no key has kid no-such-kid");
    // Malformed key files.
    server
        .keys(&["import", "--file", &key("test-garbage.pem")])
        .refused(1, "malformed");
    server
        .keys(&["import", "--file", &key("test-not-pem.txt")])
        .refused(1, "no private key found");
    server
        .keys(&["import", "--file", &key("test-ed25519-unsupported.pem")])
        .refused(1, "unsupported key type");
    // A weak RSA key.
    server
        .keys(&["import", "--file", &key("test-rsa1024-too-small.pem")])
        .refused(1, "1024 bits is too small");
    // A key file that is not there.
    let missing = server.dir.path().join("missing.key");
    server
        .keys(&["import", "--file", path_str(&missing)])
        .refused(1, &missing.display().to_string());
    // A key file other users can read: maybe already leaked; refused with the fix.
    let readable = server.private_key_copy("test-ec256-pkcs8.pem");
    std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o644)).unwrap();
    server
        .keys(&["import", "--file", path_str(&readable)])
        .refused(1, &format!("chmod 0600 {}", readable.display()));
    // Promote with nothing prepared.
    server
        .keys(&["promote", "--force"])
        .refused(1, "there is no next key to promote");
    // The active key can be neither retired nor removed, even with --force.
    server
        .keys(&["retire", &active])
        .refused(1, "is the active key and cannot be retired");
    server
        .keys(&["remove", &active, "--force"])
        .refused(1, "is the active key and cannot be removed");
    // Usage errors never reach the server.
    let bad_alg = server.keys(&["rotate", "--alg", "HS256"]);
    assert_eq!(bad_alg.code, Some(64), "{}", bad_alg.stderr);

    let after = server.fetch_keys().await;
    assert_eq!(
        after, before,
        "no refused command changed the published set"
    );
    assert_eq!(server.list().len(), 1);
}

/// The `KeyAdmin` API itself, without the CLI: each refusal carries the precise gRPC code
/// (the CLI shows them all as exit 1), and none changes the published set.
#[tokio::test]
async fn admin_api_refusals_carry_precise_codes() {
    use signet::admin::v1::{ImportRequest, PromoteRequest, RetireRequest, RotateRequest};
    use tonic::Code;

    let server = AdminServer::start();
    let active = server.kid_in_state("active");
    let before = server.fetch_keys().await;
    let mut client = signet::admin::AdminClient::connect(&signet::server::SocketAddress::Path(
        server.admin_socket.clone(),
    ))
    .await
    .unwrap();
    fn code<T>(result: Result<T, tonic::Status>) -> (Code, String) {
        match result {
            Ok(_) => panic!("the call must be refused"),
            Err(status) => (status.code(), status.message().to_owned()),
        }
    }
    let retire = |kid: &str| RetireRequest { kid: kid.into() };

    let (got, message) = code(client.rpc().retire(retire("no-such-kid")).await);
    assert_eq!(got, Code::NotFound, "{message}");
    let (got, message) = code(client.rpc().retire(retire("")).await);
    assert_eq!(got, Code::InvalidArgument, "{message}");
    let (got, message) = code(client.rpc().retire(retire(&active)).await);
    assert_eq!(got, Code::FailedPrecondition, "{message}");
    let (got, message) = code(client.rpc().promote(PromoteRequest { force: true }).await);
    assert_eq!(got, Code::FailedPrecondition, "{message}");
    let (got, message) = code(
        client
            .rpc()
            .rotate(RotateRequest {
                alg: Some("HS256".into()),
                promote_now: false,
            })
            .await,
    );
    assert_eq!(got, Code::InvalidArgument, "{message}");
    let (got, message) = code(
        client
            .rpc()
            .import(ImportRequest {
                pem: b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n".to_vec(),
                verify_only: true,
            })
            .await,
    );
    assert_eq!(got, Code::InvalidArgument, "{message}");
    assert_eq!(
        server.fetch_keys().await,
        before,
        "no refusal changed the set"
    );

    // The same key twice: the second is already there.
    let pem = std::fs::read(common::key_path("test-ec256-pkcs8.pem")).unwrap();
    let import = || ImportRequest {
        pem: pem.clone(),
        verify_only: true,
    };
    client.rpc().import(import()).await.expect("first import");
    let (got, message) = code(client.rpc().import(import()).await);
    assert_eq!(got, Code::AlreadyExists, "{message}");
}

#[tokio::test]
async fn import_prepares_the_key_under_the_in_tree_kid() {
    let server = AdminServer::start();
    let fixture = server.private_key_copy("test-ec256-sec1.pem");
    let kid = common::expected_kid(&common::fixture_public_key_der(&fixture));

    let imported = server.keys(&["import", "--file", fixture.to_str().unwrap()]);
    assert!(imported.ok().contains(&kid), "{}", imported.stdout);
    assert_eq!(server.kid_in_state("next"), kid);
    let fetched = server.fetch_keys().await;
    assert!(published_kids(&fetched).contains(&kid));
    let published = fetched.keys.iter().find(|k| k.key_id == kid).unwrap();
    assert_eq!(
        published.key.as_ref(),
        common::fixture_public_key_der(&fixture).as_slice(),
        "FetchKeys publishes the imported key's PKIX DER"
    );

    // The same key again: refused as a duplicate.
    server
        .keys(&[
            "import",
            "--file",
            fixture.to_str().unwrap(),
            "--verify-only",
        ])
        .refused(1, "already in the store");

    server.keys(&["promote", "--force"]).ok();
    let token = server.sign_token().await;
    assert_eq!(header_kid(&token), kid);
    verify_with(&server.fetch_keys().await, &token);
}

#[tokio::test]
async fn export_jwks_prints_the_published_keys_to_stdout_or_a_file() {
    let server = AdminServer::start();
    // An RSA key beside the EC one (imported: generating RSA is slow on the ring build).
    let rsa = server.private_key_copy("test-rsa2048-pkcs1.pem");
    server
        .keys(&["import", "--file", rsa.to_str().unwrap()])
        .ok();
    let fetched = server.fetch_keys().await;

    let printed = server.keys(&["export-jwks"]);
    let jwks: serde_json::Value = serde_json::from_str(printed.ok()).expect("JWKS JSON");
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .expect("keys array")
        .iter()
        .map(|jwk| jwk["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, published_kids(&fetched));
    assert_eq!(jwks["keys"][0]["kty"], "EC");
    assert_eq!(jwks["keys"][1]["kty"], "RSA");
    assert_eq!(jwks["keys"][1]["alg"], "RS256");
    // Each JWK carries the key material FetchKeys publishes under its kid: the JWK the
    // independent verifier builds from that PKIX DER (RustCrypto), field for field (kty, crv,
    // x, y or n, e, kid, use, alg).
    for (exported, published) in jwks["keys"].as_array().unwrap().iter().zip(&fetched.keys) {
        let expected =
            jwk_json(&published.key_id, &published.key).expect("FetchKeys publishes a PKIX key");
        assert_eq!(
            exported, &expected,
            "export-jwks entry for {}",
            published.key_id
        );
    }
    // The RSA key is the imported file's, read from that file without signet.
    let rsa_der = common::fixture_public_key_der(&rsa);
    let rsa_kid = common::expected_kid(&rsa_der);
    assert_eq!(jwks["keys"][1], jwk_json(&rsa_kid, &rsa_der).unwrap());
    // A relying party's JWK library takes it as is.
    let parsed: jsonwebtoken::jwk::JwkSet =
        serde_json::from_value(jwks.clone()).expect("jsonwebtoken parses the JWK set");
    assert_eq!(parsed.keys.len(), 2);

    let out = server.dir.path().join("out").join("jwks.json");
    std::fs::create_dir(out.parent().unwrap()).unwrap();
    std::fs::write(&out, b"stale").unwrap();
    server.keys(&["export-jwks", "--out", path_str(&out)]).ok();
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out).unwrap()).expect("JWKS file");
    assert_eq!(written, jwks);
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    let entries = std::fs::read_dir(out.parent().unwrap()).unwrap().count();
    assert_eq!(entries, 1, "no temporary file is left behind");

    // The JWK Set is public: 0644 even under an operator's owner-only umask.
    let strict = out.with_file_name("strict.json");
    let argv = ["keys", "export-jwks", "--out", path_str(&strict)];
    let admin = ["--admin-socket", path_str(&server.admin_socket)];
    run_signet_with_umask(&[&argv[..], &admin[..]].concat(), 0o077).ok();
    let mode = std::fs::metadata(&strict).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "export-jwks under umask 077");
}

#[test]
fn a_server_that_is_not_running_gets_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("admin.sock");
    let run = run_signet(&["keys", "list", "--admin-socket", path_str(&absent)]);
    run.refused(
        1,
        &format!(
            "cannot connect to the admin socket {}: is signet serve running?",
            absent.display()
        ),
    );

    // A stale socket file left by a crashed server: same answer.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let run = run_signet(&["keys", "status", "--admin-socket", path_str(&stale)]);
    run.refused(1, "is signet serve running?");
}

#[test]
fn sigterm_stops_both_servers_and_removes_both_sockets() {
    let mut server = AdminServer::start();
    assert!(server.admin_socket.exists() && server.api_socket.exists());
    server.process.signal(rustix::process::Signal::TERM);
    let status = server.process.wait_exit();
    assert!(
        status.success(),
        "{status:?}; stderr:\n{}",
        server.process.stderr_text()
    );
    assert!(!server.admin_socket.exists(), "admin socket removed");
    assert!(!server.api_socket.exists(), "apiserver socket removed");
}

/// The next JSON log line of `process` with `message` that records `call` with `outcome`,
/// blocking on the stderr reader (each wait bounded by [`common::DEADLINE`]), skipping others.
fn next_audit_line(
    process: &mut common::SignetProcess,
    message: &str,
    call: &str,
    outcome: &str,
) -> serde_json::Value {
    loop {
        let line = process.wait_for_line(message);
        let json: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|err| panic!("audit line is not JSON ({err}): {line}"));
        if json["call"] == call && json["outcome"] == outcome {
            return json;
        }
    }
}

#[tokio::test]
async fn admin_calls_are_logged_with_the_caller_uid_and_never_the_key() {
    let mut server = AdminServer::start();
    let fixture = server.private_key_copy("test-rsa2048-pkcs1.pem");
    let kid = common::expected_kid(&common::fixture_public_key_der(&fixture));
    server
        .keys(&[
            "import",
            "--file",
            fixture.to_str().unwrap(),
            "--verify-only",
        ])
        .ok();
    server
        .keys(&["retire", "no-such-kid"])
        .refused(1, "no key has kid");
    // The log lines are written before the responses, so they are in the server's stderr by
    // now, but its stderr reader may lag: block (bounded) on each audit line as it is read.
    let uid = rustix::process::getuid().as_raw();
    let applied = next_audit_line(&mut server.process, "admin call applied", "import", "ok");
    let refused = next_audit_line(
        &mut server.process,
        "admin call refused",
        "retire",
        "refused",
    );
    assert_eq!(applied["uid"], uid);
    assert_eq!(applied["kid"], kid.as_str());
    assert_eq!(refused["uid"], uid);
    assert_eq!(refused["kid"], "no-such-kid");
    assert_eq!(refused["code"], "NotFound");

    // Not one line of the PEM body appears in the server's log.
    let pem = std::fs::read_to_string(&fixture).unwrap();
    let log = server.process.stderr_text();
    for body_line in pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!log.contains(body_line), "key material in the log");
    }
}

/// With `--archive-removed-keys`, `keys remove` takes the key out of FetchKeys and the store
/// but keeps its file, private, in the key directory's archive; without `--key-dir` the flag
/// is a usage error.
#[tokio::test]
async fn removed_keys_are_archived_when_asked() {
    let server = AdminServer::start_with(&[], &["--archive-removed-keys"]);
    server.keys(&["rotate"]).ok();
    let next = server.kid_in_state("next");
    server.keys(&["retire", &next]).ok();
    server.keys(&["remove", &next, "--force"]).ok();
    assert!(!published_kids(&server.fetch_keys().await).contains(&next));
    assert!(!server.key_dir.join(format!("{next}.pem")).exists());
    let archived = server.key_dir.join("archive").join(format!("{next}.pem"));
    let mode = std::fs::metadata(&archived)
        .expect("the removed key is in the archive")
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    let (status, stderr) = common::run_to_exit(&["serve", "--archive-removed-keys"]);
    assert_eq!(status.code(), Some(64), "{stderr}");
}

#[test]
fn a_key_file_signer_answers_reads_and_refuses_changes_it_could_not_keep() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("sa.pem");
    std::fs::copy(common::key_path("test-ec256-pkcs8.pem"), &key).expect("copy the key");
    // Readable by others: signet starts, and says so.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let api_socket = dir.path().join("signet.sock");
    let admin_socket = dir.path().join("admin.sock");
    let mut process = common::SignetProcess::spawn(&[
        "serve",
        "--key-file",
        path_str(&key),
        "--socket",
        path_str(&api_socket),
        "--admin-socket",
        path_str(&admin_socket),
    ]);
    process.wait_ready();
    let warning = process
        .stderr_lines()
        .into_iter()
        .find(|line| line.contains("key file readable by other users"))
        .expect("a warning about the key file's mode");
    assert!(warning.contains("mode 0644"), "{warning}");
    assert!(warning.contains("chmod 0600"), "{warning}");
    let keys = |args: &[&str]| {
        let mut argv = vec!["keys"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--admin-socket", path_str(&admin_socket)]);
        run_signet(&argv)
    };

    let listed: serde_json::Value =
        serde_json::from_str(keys(&["list", "-o", "json"]).ok()).expect("JSON");
    let kid = listed[0]["kid"].as_str().expect("a kid").to_owned();
    keys(&["status"]).ok();
    let import = dir.path().join("other.pem");
    std::fs::copy(common::key_path("test-ec256-sec1.pem"), &import).unwrap();
    std::fs::set_permissions(&import, std::fs::Permissions::from_mode(0o600)).unwrap();
    for change in [
        vec!["rotate"],
        vec!["promote", "--force"],
        vec!["retire", kid.as_str()],
        vec!["remove", kid.as_str(), "--force"],
        vec!["import", "--file", path_str(&import)],
    ] {
        keys(&change).refused(1, "come from --key-file and live only in memory");
    }
    let after: serde_json::Value =
        serde_json::from_str(keys(&["list", "-o", "json"]).ok()).expect("JSON");
    assert_eq!(after, listed, "nothing changed");
}
