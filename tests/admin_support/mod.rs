//! A real `signet serve` with a key directory, its apiserver socket and its admin socket in a
//! temporary directory, and the real `signet keys ...` CLI run against it. Shared by the admin
//! CLI and migration tests (it builds on the team harness in `tests/common`).
//!
//! Nothing here sleeps: the server is ready when it logs its startup line (after both sockets
//! are bound and listening), every CLI run and every wait has a deadline.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use signet::api::v1::FetchKeysResponse;

use crate::common::{self, Api, SignetProcess};

/// What one `signet ...` run printed, and how it ended.
#[derive(Debug)]
pub struct CliRun {
    /// The exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliRun {
    /// Asserts exit code 0 and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code,
            Some(0),
            "expected success; stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        &self.stdout
    }

    /// Asserts a failure with exit `code`, a `signet: error:` line naming `fragment` on
    /// stderr, and nothing on stdout.
    #[track_caller]
    pub fn refused(&self, code: i32, fragment: &str) {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit {code}; stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        assert!(
            self.stderr.contains("signet: error: ") && self.stderr.contains(fragment),
            "stderr should say `signet: error: ...{fragment}...`, got:\n{}",
            self.stderr
        );
        assert!(
            self.stdout.is_empty(),
            "a refused command prints nothing on stdout, got:\n{}",
            self.stdout
        );
    }
}

/// Runs the `signet` binary with `args` to completion (bounded by [`common::DEADLINE`]).
pub fn run_signet(args: &[&str]) -> CliRun {
    run_to_completion(common::signet_command(None), args)
}

/// [`run_signet`] under `umask`.
pub fn run_signet_with_umask(args: &[&str], umask: u32) -> CliRun {
    run_to_completion(common::signet_command(Some(umask)), args)
}

fn run_to_completion(mut command: Command, args: &[&str]) -> CliRun {
    command.args(args);
    let output = common::run_command(command, None);
    CliRun {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A running `signet serve --key-dir` with its sockets in a temporary directory.
#[derive(Debug)]
pub struct AdminServer {
    pub dir: tempfile::TempDir,
    pub key_dir: PathBuf,
    pub api_socket: PathBuf,
    pub admin_socket: PathBuf,
    pub process: SignetProcess,
}

impl AdminServer {
    /// `signet keys init --key-dir` (ES256), then `signet serve` on it.
    pub fn start() -> Self {
        Self::start_with(&[], &[])
    }

    /// Like [`Self::start`], with extra `keys init` and `serve` flags.
    pub fn start_with(init_flags: &[&str], serve_flags: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let key_dir = dir.path().join("keys");
        let api_socket = dir.path().join("signet.sock");
        let admin_socket = dir.path().join("admin.sock");
        let mut init = vec!["keys", "init", "--key-dir", path_str(&key_dir)];
        init.extend_from_slice(init_flags);
        run_signet(&init).ok();
        let mut serve = vec![
            "serve",
            "--key-dir",
            path_str(&key_dir),
            "--socket",
            path_str(&api_socket),
            "--admin-socket",
            path_str(&admin_socket),
        ];
        serve.extend_from_slice(serve_flags);
        let mut process = SignetProcess::spawn(&serve);
        process.wait_ready();
        Self {
            dir,
            key_dir,
            api_socket,
            admin_socket,
            process,
        }
    }

    /// `signet keys <args> --admin-socket <this server's admin socket>`.
    pub fn keys(&self, args: &[&str]) -> CliRun {
        let mut argv = vec!["keys"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--admin-socket", path_str(&self.admin_socket)]);
        run_signet(&argv)
    }

    /// `signet keys list -o json`, parsed.
    pub fn list(&self) -> Vec<serde_json::Value> {
        let run = self.keys(&["list", "-o", "json"]);
        let parsed: serde_json::Value =
            serde_json::from_str(run.ok()).expect("`keys list -o json` prints JSON");
        parsed.as_array().expect("a JSON array of keys").clone()
    }

    /// The kid of the one key in `state`, per `keys list`.
    pub fn kid_in_state(&self, state: &str) -> String {
        let keys = self.list();
        let matching: Vec<&serde_json::Value> =
            keys.iter().filter(|key| key["state"] == state).collect();
        assert_eq!(matching.len(), 1, "one {state} key expected in {keys:#?}");
        matching[0]["kid"].as_str().unwrap().to_owned()
    }

    /// A copy of the fixture key `keys/<name>` in this server's temporary directory, mode
    /// 0600 as an operator keeps a private key (import refuses one others can read).
    pub fn private_key_copy(&self, name: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let copy = self.dir.path().join(name);
        std::fs::copy(common::key_path(name), &copy).expect("copy the fixture key");
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600))
            .expect("chmod 0600");
        copy
    }

    /// FetchKeys over the apiserver socket, with a real tonic client.
    pub async fn fetch_keys(&self) -> FetchKeysResponse {
        common::connect_path(&self.api_socket)
            .await
            .fetch_keys(Api::V1)
            .await
            .expect("FetchKeys")
    }

    /// Signs one recorded apiserver claims set over the apiserver socket and returns the
    /// compact token.
    pub async fn sign_token(&self) -> String {
        let claims = &common::recorded_claims()[0].claims;
        let signed = common::connect_path(&self.api_socket)
            .await
            .sign(Api::V1, claims)
            .await
            .expect("Sign");
        common::verifier::assemble(&signed.header, claims, &signed.signature)
    }
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// The kids FetchKeys publishes, in order.
pub fn published_kids(keys: &FetchKeysResponse) -> Vec<String> {
    keys.keys.iter().map(|key| key.key_id.clone()).collect()
}

/// `data_timestamp` as (seconds, nanos), for ordering.
pub fn data_timestamp(keys: &FetchKeysResponse) -> (i64, i32) {
    let ts = keys.data_timestamp.as_ref().expect("data_timestamp is set");
    (ts.seconds, ts.nanos)
}

/// The `kid` in a compact token's protected header.
pub fn header_kid(token: &str) -> String {
    use base64::Engine as _;
    let header = token.split('.').next().expect("header segment");
    let json: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .expect("base64url header"),
    )
    .expect("JSON header");
    json["kid"].as_str().expect("kid in header").to_owned()
}
