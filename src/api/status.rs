//! The one mapping from domain errors to gRPC status codes. Messages are the domain errors'
//! own, which never carry claims, tokens or key bytes.

use tonic::{Code, Status};

use crate::keys::KeyError;
use crate::signer::SignError;

/// The gRPC status kube-apiserver sees for a failed Sign.
pub fn status_for_sign_error(err: &SignError) -> Status {
    let code = match err {
        // The request itself is wrong; retrying it cannot help.
        SignError::Claims(_) => Code::InvalidArgument,
        // The signer is up but has nothing to sign with: an operator must act.
        SignError::NoSigningKey => Code::FailedPrecondition,
        // A key that cannot sign (e.g. an HSM session lost) may recover.
        SignError::Key(KeyError::Signing { .. }) => Code::Unavailable,
        SignError::Key(_) => Code::Internal,
    };
    if code != Code::InvalidArgument {
        tracing::error!(error = %err, code = ?code, "sign failed");
    }
    Status::new(code, err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jws::ClaimsError;

    #[test]
    fn each_sign_error_has_its_code_and_its_own_message() {
        let cases = [
            (SignError::Claims(ClaimsError::Empty), Code::InvalidArgument),
            (SignError::NoSigningKey, Code::FailedPrecondition),
            (
                SignError::Key(KeyError::Signing { kid: "k1".into() }),
                Code::Unavailable,
            ),
            (SignError::Key(KeyError::Generation), Code::Internal),
        ];
        for (err, code) in cases {
            let status = status_for_sign_error(&err);
            assert_eq!(status.code(), code, "{err}");
            assert_eq!(status.message(), err.to_string());
        }
    }
}
