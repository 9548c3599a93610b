//! The one mapping from lifecycle errors to the gRPC status an admin client sees. Messages are
//! the lifecycle's own, which name kids and files but never key material.

use tonic::{Code, Status};

use crate::keys::KeyError;
use crate::lifecycle::{LifecycleError, StoreError};

/// The gRPC status for a refused or failed admin call.
pub fn status_for_lifecycle_error(err: &LifecycleError) -> Status {
    Status::new(code_for(err), err.to_string())
}

fn code_for(err: &LifecycleError) -> Code {
    match err {
        LifecycleError::UnknownKid(_) => Code::NotFound,
        // The store is fine and the request well-formed, but the lifecycle refuses the step
        // in the current state: the operator must change the state (or force) first.
        LifecycleError::NoNextKey
        | LifecycleError::NextKeyNotReady { .. }
        | LifecycleError::NextKeyAlreadyPrepared(_)
        | LifecycleError::StillVerifiesLiveTokens { .. }
        | LifecycleError::ImportedKeyNeedsForce(_)
        | LifecycleError::ActiveKeyCannotBeRemoved(_)
        | LifecycleError::CannotRetireActive(_)
        | LifecycleError::AlreadyRetired(_)
        | LifecycleError::NotRetired(_) => Code::FailedPrecondition,
        LifecycleError::AlreadyPresent(_) | LifecycleError::AlreadyInitialized(_) => {
            Code::AlreadyExists
        }
        LifecycleError::Key(err) => code_for_key_error(err),
        LifecycleError::Store(err) => code_for_store_error(err),
        // A set that breaks the key ring's invariants, or a bug: nothing the caller can fix.
        LifecycleError::KeySet(_) | LifecycleError::Internal(_) => Code::Internal,
    }
}

fn code_for_store_error(err: &StoreError) -> Code {
    match err {
        // A key the state names has vanished from the backend.
        StoreError::KeyNotFound(_) => Code::NotFound,
        StoreError::InvalidKid(_) => Code::InvalidArgument,
        StoreError::Key(err) => code_for_key_error(err),
        // The backend (e.g. an HSM) cannot do this at all.
        StoreError::Unsupported { .. } => Code::FailedPrecondition,
        // The store is held by someone else, or an I/O error that may pass: try again.
        StoreError::Locked { .. } => Code::Unavailable,
        StoreError::Io { source, .. } if is_transient(source) => Code::Unavailable,
        // Files an operator must repair: permissions, corrupt or missing state, I/O.
        _ => Code::Internal,
    }
}

fn code_for_key_error(err: &KeyError) -> Code {
    match err {
        // The provider failed to make or use a key of ours: the request was fine.
        KeyError::Generation | KeyError::Signing { .. } => Code::Internal,
        // Malformed, unsupported or weak key material (or algorithm) supplied by the caller.
        KeyError::NoPrivateKey
        | KeyError::SeveralPrivateKeys
        | KeyError::Malformed(_)
        | KeyError::UnsupportedKeyType(_)
        | KeyError::RsaTooSmall { .. }
        | KeyError::RsaTooLarge { .. }
        | KeyError::UnsupportedByProvider(_)
        | KeyError::Rejected(_) => Code::InvalidArgument,
    }
}

fn is_transient(err: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        err.kind(),
        ErrorKind::Interrupted
            | ErrorKind::WouldBlock
            | ErrorKind::TimedOut
            | ErrorKind::StorageFull
            | ErrorKind::ResourceBusy
    )
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    #[test]
    fn each_error_has_a_precise_code() {
        let now = SystemTime::now();
        let cases = [
            (LifecycleError::UnknownKid("k".into()), Code::NotFound),
            (LifecycleError::NoNextKey, Code::FailedPrecondition),
            (
                LifecycleError::NextKeyNotReady {
                    kid: "k".into(),
                    ready_at: now,
                },
                Code::FailedPrecondition,
            ),
            (
                LifecycleError::StillVerifiesLiveTokens {
                    kid: "k".into(),
                    removal_due: now,
                },
                Code::FailedPrecondition,
            ),
            (
                LifecycleError::AlreadyPresent("k".into()),
                Code::AlreadyExists,
            ),
            (
                LifecycleError::Key(KeyError::RsaTooSmall { bits: 1024 }),
                Code::InvalidArgument,
            ),
            (
                LifecycleError::Key(KeyError::NoPrivateKey),
                Code::InvalidArgument,
            ),
            // A rotation whose key generation failed: the server's fault, not the request's.
            (LifecycleError::Key(KeyError::Generation), Code::Internal),
            (
                LifecycleError::Store(StoreError::Key(KeyError::Signing { kid: "k".into() })),
                Code::Internal,
            ),
            (
                LifecycleError::Store(StoreError::TooLarge {
                    path: "big".into(),
                    limit: 1,
                }),
                Code::Internal,
            ),
            // An out-of-range time (from a damaged state file) still makes a message.
            (
                LifecycleError::StillVerifiesLiveTokens {
                    kid: "k".into(),
                    removal_due: SystemTime::UNIX_EPOCH
                        + std::time::Duration::from_secs(300_000_000_000),
                },
                Code::FailedPrecondition,
            ),
        ];
        for (err, code) in cases {
            let status = status_for_lifecycle_error(&err);
            assert_eq!(status.code(), code, "{err}");
            assert_eq!(status.message(), err.to_string());
        }
    }
}
