//! The one mapping from lifecycle errors to the gRPC status an admin client sees. Messages are
//! the lifecycle's own, which name kids and files but never key material.

use tonic::{Code, Status};

use crate::lifecycle::LifecycleError;

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
        | LifecycleError::StillVerifiesLiveTokens { .. }
        | LifecycleError::ActiveKeyCannotBeRemoved(_)
        | LifecycleError::CannotRetireActive(_) => Code::FailedPrecondition,
        LifecycleError::AlreadyPresent(_) => Code::AlreadyExists,
        // Malformed, unsupported or weak key material supplied by the caller.
        LifecycleError::Key(_) => Code::InvalidArgument,
        LifecycleError::Store(_) => Code::Internal,
    }
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
