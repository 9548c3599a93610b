//! The JWS algorithms kube-apiserver accepts from an external signer (spec §5).

use std::fmt;
use std::str::FromStr;

/// A JWS signature algorithm kube-apiserver allows: RS256, ES256, ES384 or ES512.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    RS256,
    ES256,
    ES384,
    ES512,
}

impl Algorithm {
    pub const ALL: [Algorithm; 4] = [
        Algorithm::RS256,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::ES512,
    ];

    /// The name used in the JWS `alg` header and in JWKs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::ES512 => "ES512",
        }
    }

    /// The byte length of an ECDSA signature in JWS form (`R‖S`), or `None` for RSA, whose
    /// signature is as long as the modulus.
    pub const fn ecdsa_signature_len(self) -> Option<usize> {
        match self {
            Algorithm::RS256 => None,
            Algorithm::ES256 => Some(64),
            Algorithm::ES384 => Some(96),
            Algorithm::ES512 => Some(132),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown algorithm {0:?}: expected one of RS256, ES256, ES384, ES512")]
pub struct ParseAlgorithmError(String);

impl FromStr for Algorithm {
    type Err = ParseAlgorithmError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|alg| alg.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| ParseAlgorithmError(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_case_insensitively_and_rejects_others() {
        assert_eq!("es256".parse::<Algorithm>().unwrap(), Algorithm::ES256);
        assert_eq!("RS256".parse::<Algorithm>().unwrap(), Algorithm::RS256);
        assert!("PS256".parse::<Algorithm>().is_err());
        assert!("EdDSA".parse::<Algorithm>().is_err());
    }
}
