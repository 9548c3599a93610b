//! `signet keys ...` on a running server: check the request, make one admin call, print the
//! answer. Refusals come back as the server's message; nothing here re-decides lifecycle rules
//! except the one guard the CLI owns: `--promote-now` needs `--force`.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use super::v1;
use super::{render_keys, render_status, AdminClient, ClientError};
use crate::backend::{read_private_key_file, write_atomic, StoreError};
use crate::cli::KeysCommand;

/// Why a `signet keys` command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The command line asks for something the CLI refuses (exit 64).
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The key file to import cannot be read, or others can read it (names the file and the
    /// fix).
    #[error(transparent)]
    KeyFile(#[from] StoreError),
    #[error("cannot write {}: {source}", .path.display())]
    WriteOutput { path: PathBuf, source: io::Error },
    #[error("cannot write the JWK Set: {0}")]
    WriteJwks(StoreError),
}

impl From<tonic::Status> for CommandError {
    fn from(status: tonic::Status) -> Self {
        CommandError::Client(ClientError::Call(status))
    }
}

/// Runs one `signet keys` command against the admin socket it names.
pub async fn run(command: &KeysCommand) -> Result<(), CommandError> {
    check(command)?;
    match command {
        KeysCommand::Init(_) => Err(CommandError::Usage(
            "`signet keys init` works offline only: give it --key-dir DIR".to_owned(),
        )),
        KeysCommand::List(args) => {
            let mut client = AdminClient::connect(&args.target.admin_socket).await?;
            let keys = client
                .rpc()
                .list(v1::ListRequest {})
                .await?
                .into_inner()
                .keys;
            print(&render_keys(&keys, args.output))
        }
        KeysCommand::Status(args) => {
            let mut client = AdminClient::connect(&args.target.admin_socket).await?;
            let status = client
                .rpc()
                .status(v1::StatusRequest {})
                .await?
                .into_inner();
            print(&render_status(&status, args.output))
        }
        KeysCommand::Rotate(args) => {
            let mut client = AdminClient::connect(&args.target.admin_socket).await?;
            let request = v1::RotateRequest {
                alg: args.alg.map(|alg| alg.as_str().to_owned()),
                promote_now: args.promote_now,
            };
            let key = client.rpc().rotate(request).await?.into_inner().key;
            let key = key.unwrap_or_default();
            if args.promote_now {
                print(&format!("key {} ({}) is now active\n", key.kid, key.alg))
            } else {
                print(&format!(
                    "prepared next key {} ({}): published now, signing after `signet keys promote` once the publish lead time is over\n",
                    key.kid, key.alg
                ))
            }
        }
        KeysCommand::Promote(args) => {
            let mut client = AdminClient::connect(&args.target.admin_socket).await?;
            let request = v1::PromoteRequest { force: args.force };
            let key = client.rpc().promote(request).await?.into_inner().key;
            let key = key.unwrap_or_default();
            print(&format!("key {} ({}) is now active\n", key.kid, key.alg))
        }
        KeysCommand::Retire(args) => {
            let mut client = AdminClient::connect(&args.target.admin_socket).await?;
            let request = v1::RetireRequest {
                kid: args.kid.clone(),
            };
            let key = client.rpc().retire(request).await?.into_inner().key;
            let key = key.unwrap_or_default();
            let due = key
                .removal_due
                .and_then(|ts| std::time::SystemTime::try_from(ts).ok())
                .map(|at| crate::timestamp::rfc3339(at).to_string());
            match due {
                Some(due) => print(&format!(
                    "key {} retired: still published until its removal is due at {due}\n",
                    key.kid
                )),
                None => print(&format!("key {} retired\n", key.kid)),
            }
        }
        KeysCommand::Remove(args) => {
            let mut client = AdminClient::connect(&args.target.admin_socket).await?;
            let request = v1::RemoveRequest {
                kid: args.kid.clone(),
                force: args.force,
            };
            client.rpc().remove(request).await?;
            print(&format!("key {} removed\n", args.kid))
        }
        KeysCommand::Import(args) => {
            // The same checks as an offline import: a key others can read is refused.
            let pem = read_private_key_file(&args.file)?;
            let mut client = AdminClient::connect(&args.target.admin_socket).await?;
            // The request needs its own copy; the file's bytes are wiped when `pem` drops.
            // Nothing here prints or logs either.
            let request = v1::ImportRequest {
                pem: pem.to_vec(),
                verify_only: args.verify_only,
            };
            let key = client.rpc().import(request).await?.into_inner().key;
            let key = key.unwrap_or_default();
            let role = if key.verify_only {
                "published for verification only, never signs"
            } else {
                "next key: signs after `signet keys promote`"
            };
            print(&format!("imported key {} ({}): {role}\n", key.kid, key.alg))
        }
        KeysCommand::ExportJwks(args) => {
            let mut client = AdminClient::connect(&args.target.admin_socket).await?;
            let jwks = client
                .rpc()
                .export_jwks(v1::ExportJwksRequest {})
                .await?
                .into_inner()
                .jwks_json;
            match &args.out {
                Some(path) => write_atomically(path, &jwks).map_err(CommandError::WriteJwks),
                None => {
                    let mut out = io::stdout().lock();
                    out.write_all(&jwks)
                        .and_then(|()| {
                            if jwks.ends_with(b"\n") {
                                Ok(())
                            } else {
                                out.write_all(b"\n")
                            }
                        })
                        .and_then(|()| out.flush())
                        .map_err(|source| CommandError::WriteOutput {
                            path: PathBuf::from("<stdout>"),
                            source,
                        })
                }
            }
        }
    }
}

/// The guards the CLI applies before doing anything, online or offline.
pub fn check(command: &KeysCommand) -> Result<(), CommandError> {
    if let KeysCommand::Rotate(args) = command {
        if args.promote_now && !args.force {
            return Err(CommandError::Usage(
                "--promote-now makes the new key sign at once, skipping the publish lead time: \
                 apiservers and OIDC consumers that have not fetched it yet will reject its tokens \
                 until they refresh. Add --force to do it anyway, or rotate without --promote-now \
                 and run `signet keys promote` after the lead time"
                    .to_owned(),
            ));
        }
    }
    Ok(())
}

fn print(text: &str) -> Result<(), CommandError> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|source| CommandError::WriteOutput {
            path: PathBuf::from("<stdout>"),
            source,
        })
}

/// Writes the public JWK Set to `path` (mode 0644) so that a reader sees the old file or the
/// new one, never a part: the key store's atomic write.
fn write_atomically(path: &Path, contents: &[u8]) -> Result<(), StoreError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| StoreError::Io {
        action: "write",
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
    })?;
    write_atomic(dir, &name.to_string_lossy(), contents, 0o644)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn atomic_write_replaces_the_file_with_mode_0644() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, b"old").unwrap();
        write_atomically(&path, b"{\"keys\":[]}").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"keys\":[]}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file is left behind");
    }
}
