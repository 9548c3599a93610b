//! The token-signing service the gRPC layer adapts: Sign, FetchKeys and Metadata in domain
//! terms. It holds the policy numbers the apiserver is told (maximum token lifetime, refresh
//! hint) and enforces them; it knows nothing of protobuf.

use std::sync::Arc;
use std::time::Duration;

use crate::jws::{self, ClaimsError, SignedJws};
use crate::keyring::{KeyRing, KeySet};
use crate::keys::KeyError;

/// kube-apiserver refuses a signer whose maximum token lifetime is below 600 s.
pub const MIN_MAX_TOKEN_EXPIRATION: Duration = Duration::from_secs(600);

/// Why a Sign request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    #[error(transparent)]
    Claims(#[from] ClaimsError),
    #[error("no signing key is active")]
    NoSigningKey,
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// Sign, FetchKeys and Metadata over a [`KeyRing`].
#[derive(Debug)]
pub struct TokenSigner {
    keyring: Arc<KeyRing>,
    max_token_expiration: Duration,
    refresh_hint: Duration,
}

impl TokenSigner {
    pub fn new(
        keyring: Arc<KeyRing>,
        max_token_expiration: Duration,
        refresh_hint: Duration,
    ) -> Self {
        Self {
            keyring,
            max_token_expiration,
            refresh_hint,
        }
    }

    /// Checks and signs the apiserver's `claims`, returning the header and signature segments.
    pub fn sign(&self, claims: &str) -> Result<SignedJws, SignError> {
        jws::check_claims(claims, self.max_token_expiration_secs())?;
        let keys = self.keyring.load();
        let key = keys.signing_key().ok_or(SignError::NoSigningKey)?;
        Ok(jws::sign(key, claims)?)
    }

    /// The keys FetchKeys returns, with when they last changed.
    pub fn verification_keys(&self) -> Arc<KeySet> {
        self.keyring.snapshot()
    }

    pub fn keyring(&self) -> &Arc<KeyRing> {
        &self.keyring
    }

    pub fn refresh_hint(&self) -> Duration {
        self.refresh_hint
    }

    pub fn max_token_expiration_secs(&self) -> i64 {
        i64::try_from(self.max_token_expiration.as_secs()).unwrap_or(i64::MAX)
    }
}
