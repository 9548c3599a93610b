//! The wire: generated `v1` and `v1alpha1` code and the thin adapter that serves both.
//!
//! The two packages are identical on the wire, so `build.rs` maps the `v1alpha1` messages onto
//! the `v1` Rust types and one [`ExternalJwtSignerService`] implements both service traits.
//! The adapter translates messages and errors; all decisions live in [`crate::signer`]. The
//! one thing it chooses is where a signature is computed: on the executor thread between calls
//! or on the signing threads, by the key's [`crate::keys::SignatureCost`].

mod activity;
mod signing_pool;
mod status;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tonic::{Request, Response, Status};

use crate::keyring::KeySet;
use crate::signer::TokenSigner;
use activity::Activity;

pub use status::status_for_sign_error;

#[allow(
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations,
    missing_docs
)]
pub mod v1 {
    tonic::include_proto!("v1");

    // prost's derived Debug would print the raw claims; this one says only how long they are.
    // (`v1alpha1` reuses these types, so this covers both packages.)
    impl std::fmt::Debug for SignJwtRequest {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("SignJwtRequest")
                .field(
                    "claims",
                    &format_args!("<{} bytes redacted>", self.claims.len()),
                )
                .finish()
        }
    }
}

#[allow(
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations,
    missing_docs
)]
pub mod v1alpha1 {
    tonic::include_proto!("v1alpha1");
}

use v1::{
    FetchKeysRequest, FetchKeysResponse, Key, MetadataRequest, MetadataResponse, SignJwtRequest,
    SignJwtResponse,
};

/// The FetchKeys response built once per published key set, reused until the set changes.
#[derive(Debug)]
struct PreparedKeys {
    /// The set this response was built from; compared by pointer.
    source: Arc<KeySet>,
    response: FetchKeysResponse,
}

/// Serves `ExternalJWTSigner` (both `v1` and `v1alpha1`) over a [`TokenSigner`].
#[derive(Debug, Clone)]
pub struct ExternalJwtSignerService {
    signer: Arc<TokenSigner>,
    prepared: Arc<ArcSwapOption<PreparedKeys>>,
    signing_pool: Arc<signing_pool::SigningPool>,
    /// Calls in flight, and the busy-poll window after them.
    activity: Arc<Activity>,
}

impl ExternalJwtSignerService {
    pub fn new(signer: Arc<TokenSigner>) -> Self {
        Self {
            signer,
            prepared: Arc::new(ArcSwapOption::empty()),
            signing_pool: Arc::default(),
            activity: Arc::new(Activity::new(Duration::ZERO)),
        }
    }

    /// Keeps the executor polling the socket for `window` after the last call in flight ends
    /// (see [`Activity`]); zero, the default, lets it sleep at once. Worth it on a
    /// current-thread runtime only: on a multi-thread one the idle worker that sleeps in the
    /// I/O driver takes the wake-up anyway.
    #[must_use]
    pub fn with_busy_poll(mut self, window: Duration) -> Self {
        self.activity = Arc::new(Activity::new(window));
        self
    }

    /// The `v1` service (kube-apiserver 1.34+).
    pub fn v1(&self) -> v1::external_jwt_signer_server::ExternalJwtSignerServer<Self> {
        v1::external_jwt_signer_server::ExternalJwtSignerServer::new(self.clone())
    }

    /// The `v1alpha1` service (kube-apiserver 1.32 and 1.33).
    pub fn v1alpha1(&self) -> v1alpha1::external_jwt_signer_server::ExternalJwtSignerServer<Self> {
        v1alpha1::external_jwt_signer_server::ExternalJwtSignerServer::new(self.clone())
    }

    /// Signs where the active key's `SignatureCost` says (see `SigningPool::run`), so a slow
    /// signature never holds up the executor. The key that was placed is the key that signs:
    /// the job carries the snapshot it was placed by.
    async fn sign_placed(&self, request: SignJwtRequest) -> Result<SignJwtResponse, Status> {
        let keys = self.signer.keyring().snapshot();
        let Some(cost) = keys.signing_key().map(|key| key.signature_cost()) else {
            // A verification-only set: fails at once with the signer's own error.
            return sign(&self.signer, &keys, request);
        };
        // The job needs the signer and the snapshot only, not the whole service.
        let signer = Arc::clone(&self.signer);
        self.signing_pool
            .run(cost, move || sign(&signer, &keys, request))
            .await
            .unwrap_or_else(|| Err(Status::internal("the signing thread failed")))
    }

    fn fetch_keys(&self) -> FetchKeysResponse {
        let keys = self.signer.verification_keys();
        if let Some(prepared) = &*self.prepared.load() {
            if Arc::ptr_eq(&prepared.source, &keys) {
                return prepared.response.clone();
            }
        }
        let response = self.prepare(&keys);
        self.prepared.store(Some(Arc::new(PreparedKeys {
            source: keys,
            response: response.clone(),
        })));
        response
    }

    fn prepare(&self, keys: &KeySet) -> FetchKeysResponse {
        FetchKeysResponse {
            keys: keys
                .published()
                .iter()
                .map(|key| Key {
                    key_id: key.kid.to_string(),
                    key: key.public_key_der.clone(),
                    exclude_from_oidc_discovery: key.exclude_from_oidc_discovery,
                })
                .collect(),
            data_timestamp: Some(prost_types::Timestamp::from(keys.changed_at())),
            refresh_hint_seconds: i64::try_from(self.signer.refresh_hint().as_secs())
                .unwrap_or(i64::MAX)
                .max(1),
        }
    }

    fn metadata(&self) -> MetadataResponse {
        MetadataResponse {
            max_token_expiration_seconds: self.signer.max_token_expiration_secs(),
        }
    }
}

/// Signs the request's claims with the active key of `keys`, the error mapped to its gRPC
/// status.
fn sign(
    signer: &TokenSigner,
    keys: &KeySet,
    request: SignJwtRequest,
) -> Result<SignJwtResponse, Status> {
    let signed = signer
        .sign_with(keys, &request.claims)
        .map_err(|err| status_for_sign_error(&err))?;
    Ok(SignJwtResponse {
        header: signed.header,
        signature: signed.signature,
    })
}

/// Both generated traits have the same methods over the same message types; one body each.
macro_rules! impl_external_jwt_signer {
    ($package:ident) => {
        #[tonic::async_trait]
        impl $package::external_jwt_signer_server::ExternalJwtSigner for ExternalJwtSignerService {
            async fn sign(
                &self,
                request: Request<SignJwtRequest>,
            ) -> Result<Response<SignJwtResponse>, Status> {
                let _call = self.activity.enter();
                self.sign_placed(request.into_inner())
                    .await
                    .map(Response::new)
            }

            async fn fetch_keys(
                &self,
                _request: Request<FetchKeysRequest>,
            ) -> Result<Response<FetchKeysResponse>, Status> {
                let _call = self.activity.enter();
                Ok(Response::new(ExternalJwtSignerService::fetch_keys(self)))
            }

            async fn metadata(
                &self,
                _request: Request<MetadataRequest>,
            ) -> Result<Response<MetadataResponse>, Status> {
                let _call = self.activity.enter();
                Ok(Response::new(ExternalJwtSignerService::metadata(self)))
            }
        }
    };
}

impl_external_jwt_signer!(v1);
impl_external_jwt_signer!(v1alpha1);

#[cfg(test)]
mod tests {
    use super::v1::SignJwtRequest;

    #[test]
    fn a_sign_requests_debug_never_shows_the_claims() {
        let request = SignJwtRequest {
            claims: "eyJzdWIiOiJzZWNyZXQifQ".to_owned(),
        };
        let debug = format!("{request:?}");
        assert!(!debug.contains("eyJ"), "{debug}");
        assert!(debug.contains("<22 bytes redacted>"), "{debug}");
    }
}
