//! The one mapping from lifecycle errors to the gRPC status an admin client sees. Messages are
//! the lifecycle's own, which name kids and files but never key material.

use tonic::{Code, Status};

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
        // Malformed, unsupported or weak key material supplied by the caller.
        LifecycleError::Key(_) => Code::InvalidArgument,
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
        StoreError::Key(_) => Code::InvalidArgument,
        // The backend (e.g. an HSM) cannot do this at all.
        StoreError::Unsupported { .. } => Code::FailedPrecondition,
        // The store is held by someone else, or an I/O error that may pass: try again.
        StoreError::Locked { .. } => Code::Unavailable,
        StoreError::Io { source, .. } if is_transient(source) => Code::Unavailable,
        // Files an operator must repair: permissions, corrupt or missing state, I/O.
        _ => Code::Internal,
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
    use crate::keys::KeyError;

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
        ];
        for (err, code) in cases {
            let status = status_for_lifecycle_error(&err);
            assert_eq!(status.code(), code, "{err}");
            assert_eq!(status.message(), err.to_string());
        }
    }
}
