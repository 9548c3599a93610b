//! Key administration on a running server: the `KeyAdmin` gRPC service (package
//! `signet.admin.v1`) served on its own Unix socket, and the client `signet keys ...` uses.
//!
//! The service is a thin adapter over [`crate::lifecycle::KeyLifecycle`]: it translates
//! messages, maps [`crate::lifecycle::LifecycleError`] to a gRPC status once (in [`status`]),
//! and logs who changed what. It decides nothing about rotation.
//!
//! It must never be served on the apiserver's socket, never log key bytes (an import request
//! carries a private key), and never put key material in an error message.

mod client;
pub mod commands;
mod output;
mod service;
mod status;

use std::path::{Path, PathBuf};

pub use client::{AdminClient, ClientError};
pub use output::{render_keys, render_status, OutputFormat};
pub use service::KeyAdminService;
pub use status::status_for_lifecycle_error;

use crate::server::SocketAddress;

#[allow(
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations,
    missing_docs
)]
pub mod v1 {
    tonic::include_proto!("signet.admin.v1");

    // prost's derived Debug would print the PEM bytes; this one says only how many there are.
    impl std::fmt::Debug for ImportRequest {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("ImportRequest")
                .field("pem", &format_args!("<{} bytes redacted>", self.pem.len()))
                .field("verify_only", &self.verify_only)
                .finish()
        }
    }
}

/// Where `signet serve` and `signet keys` meet when no `--admin-socket` is given.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/signet/admin.sock";

/// The admin socket's permission bits: only the owner (root in a normal deployment) may
/// rotate, import or remove keys.
pub const ADMIN_SOCKET_MODE: u32 = 0o600;

/// File name of the admin socket when it is derived from `--socket`.
const ADMIN_SOCKET_FILE_NAME: &str = "admin.sock";

/// The admin socket `signet serve` binds: `explicit` if given, else `admin.sock` beside the
/// apiserver socket (so the default `--socket /run/signet/signet.sock` gives
/// [`DEFAULT_ADMIN_SOCKET`], and two servers with different `--socket` directories never
/// fight over one admin socket). For an abstract `--socket @name` the default is
/// `@name.admin`. It is never the apiserver's socket.
pub fn admin_socket_address(
    explicit: Option<&str>,
    apiserver_socket: &SocketAddress,
) -> Result<SocketAddress, String> {
    let address = match explicit {
        Some(explicit) => SocketAddress::parse(explicit)
            .map_err(|err| format!("invalid --admin-socket: {err}"))?,
        None => {
            let derived = match apiserver_socket {
                SocketAddress::Path(path) => SocketAddress::Path(sibling_admin_socket(path)),
                SocketAddress::Abstract(name) => SocketAddress::Abstract(format!("{name}.admin")),
            };
            // The derived name is longer than the one it comes from: it may pass the limit.
            SocketAddress::parse(&derived.to_string()).map_err(|err| {
                format!("the default admin socket {derived} cannot be used ({err}); choose one with --admin-socket")
            })?
        }
    };
    if &address == apiserver_socket {
        return Err(format!(
            "--admin-socket {address} is the apiserver's --socket: the admin API needs a socket of its own"
        ));
    }
    Ok(address)
}

fn sibling_admin_socket(apiserver_socket: &Path) -> PathBuf {
    let candidate = apiserver_socket.with_file_name(ADMIN_SOCKET_FILE_NAME);
    if candidate == apiserver_socket {
        apiserver_socket.with_file_name(format!("signet-{ADMIN_SOCKET_FILE_NAME}"))
    } else {
        candidate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(s: &str) -> SocketAddress {
        SocketAddress::Path(PathBuf::from(s))
    }

    #[test]
    fn admin_socket_defaults_beside_the_apiserver_socket() {
        let default = admin_socket_address(None, &path("/run/signet/signet.sock")).unwrap();
        assert_eq!(default, path(DEFAULT_ADMIN_SOCKET));
        assert_eq!(
            admin_socket_address(None, &path("/tmp/x/api.sock")).unwrap(),
            path("/tmp/x/admin.sock")
        );
        assert_eq!(
            admin_socket_address(None, &path("/tmp/x/admin.sock")).unwrap(),
            path("/tmp/x/signet-admin.sock")
        );
        assert_eq!(
            admin_socket_address(None, &SocketAddress::Abstract("signet".into())).unwrap(),
            SocketAddress::Abstract("signet.admin".into())
        );
    }

    #[test]
    fn a_default_admin_socket_past_the_length_limit_asks_for_the_flag() {
        // `.admin` adds 6 bytes to an abstract name; names may have 107.
        let fits = SocketAddress::Abstract("a".repeat(101));
        assert_eq!(
            admin_socket_address(None, &fits).unwrap(),
            SocketAddress::Abstract(format!("{}.admin", "a".repeat(101)))
        );
        let err =
            admin_socket_address(None, &SocketAddress::Abstract("a".repeat(102))).unwrap_err();
        assert!(err.contains("--admin-socket"), "{err}");
        let long_dir = format!("/{}/s.sock", "d".repeat(96));
        let err = admin_socket_address(None, &path(&long_dir)).unwrap_err();
        assert!(err.contains("--admin-socket"), "{err}");
    }

    #[test]
    fn admin_socket_is_never_the_apiserver_socket() {
        let err = admin_socket_address(Some("/tmp/a.sock"), &path("/tmp/a.sock")).unwrap_err();
        assert!(err.contains("socket of its own"), "{err}");
        assert!(admin_socket_address(Some("relative.sock"), &path("/tmp/a.sock")).is_err());
        assert_eq!(
            admin_socket_address(Some("/tmp/b.sock"), &path("/tmp/a.sock")).unwrap(),
            path("/tmp/b.sock")
        );
    }

    #[test]
    fn import_request_debug_never_shows_the_key() {
        let request = v1::ImportRequest {
            pem: b"-----BEGIN PRIVATE KEY-----\nSECRETSECRET\n".to_vec(),
            verify_only: true,
        };
        let shown = format!("{request:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(!shown.contains("BEGIN"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }
}
