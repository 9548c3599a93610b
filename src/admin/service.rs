//! The `KeyAdmin` server: translate each message, call [`KeyLifecycle`], translate back. Every
//! state-changing call is logged with the caller's UID (from the Unix socket's peer
//! credentials), the kid and the outcome; never with key bytes.

use std::sync::Arc;
use std::time::SystemTime;

use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use super::status_for_lifecycle_error;
use super::v1::{self, key_admin_server::KeyAdmin};
use crate::jwks::{JwkSet, JwksError};
use crate::keys::Algorithm;
use crate::lifecycle::{
    ImportOptions, KeyLifecycle, KeyRecord, KeyState, LifecycleError, LifecycleStatus,
};

/// Serves `signet.admin.v1.KeyAdmin` over a shared [`KeyLifecycle`].
#[derive(Debug, Clone)]
pub struct KeyAdminService {
    lifecycle: Arc<KeyLifecycle>,
    /// Why state-changing calls are refused, when they are (see [`Self::read_only`]).
    read_only: Option<&'static str>,
}

impl KeyAdminService {
    pub fn new(lifecycle: Arc<KeyLifecycle>) -> Self {
        Self {
            lifecycle,
            read_only: None,
        }
    }

    /// Refuses every state-changing call with `FAILED_PRECONDITION` and `why`; listing, status
    /// and export still answer. For keys that live only in memory but were given as the
    /// signer's keys (`--key-file`): a change would be undone by the next restart, and tokens
    /// signed with a key made here would then stop verifying.
    #[must_use]
    pub fn read_only(mut self, why: &'static str) -> Self {
        self.read_only = Some(why);
        self
    }

    /// `Ok` when state-changing calls are allowed; otherwise the refusal, audited.
    fn allow_change(&self, call: &'static str, uid: Option<u32>) -> Result<(), Status> {
        let Some(why) = self.read_only else {
            return Ok(());
        };
        let status = Status::failed_precondition(why);
        log_refusal(call, uid, "-", &status, &why);
        Err(status)
    }

    /// The generated tonic service, ready for a router.
    pub fn server(&self) -> v1::key_admin_server::KeyAdminServer<Self> {
        v1::key_admin_server::KeyAdminServer::new(self.clone())
    }
}

/// Who made a call: the peer's UID as the kernel reports it (SO_PEERCRED), if known.
fn caller_uid<T>(request: &Request<T>) -> Option<u32> {
    request
        .extensions()
        .get::<UdsConnectInfo>()
        .and_then(|info| info.peer_cred)
        .map(|cred| cred.uid())
}

/// Runs a state-changing call, with its audit line, to its end in a task of its own. tonic
/// drops a handler's future when its client goes away (Ctrl-C, a deadline, a reset stream);
/// a lifecycle change dropped between saving the state and publishing it would leave this
/// process serving keys the state file no longer records (see [`KeyLifecycle`]). The change
/// and its audit line happen whether or not anyone is still waiting for the answer.
async fn to_completion<T: Send + 'static>(
    change: impl std::future::Future<Output = Result<T, Status>> + Send + 'static,
) -> Result<T, Status> {
    tokio::spawn(change).await.unwrap_or_else(|err| {
        // A panic's message is not passed on: it is not the client's business.
        tracing::error!(panicked = err.is_panic(), "admin call task failed");
        Err(Status::internal("the admin call failed inside the server"))
    })
}

/// Logs the outcome of a state-changing call and turns a lifecycle error into its status.
fn audited<T>(
    call: &'static str,
    uid: Option<u32>,
    kid: Option<&str>,
    result: Result<T, LifecycleError>,
    kid_of: impl Fn(&T) -> Option<&str>,
) -> Result<T, Status> {
    match result {
        Ok(value) => {
            let kid = kid_of(&value).or(kid).unwrap_or("-");
            tracing::info!(call, uid, kid, outcome = "ok", "admin call applied");
            Ok(value)
        }
        Err(err) => {
            let status = status_for_lifecycle_error(&err);
            log_refusal(call, uid, kid.unwrap_or("-"), &status, &err);
            Err(status)
        }
    }
}

/// The audit line of a refused state-changing call.
fn log_refusal(
    call: &'static str,
    uid: Option<u32>,
    kid: &str,
    status: &Status,
    error: &dyn std::fmt::Display,
) {
    tracing::warn!(call, uid, kid, outcome = "refused", code = ?status.code(), error = %error, "admin call refused");
}

fn timestamp(at: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(at)
}

fn key_message(record: &KeyRecord) -> v1::Key {
    let state = match record.state {
        KeyState::Next => v1::KeyState::Next,
        KeyState::Active => v1::KeyState::Active,
        KeyState::Retired => v1::KeyState::Retired,
    };
    v1::Key {
        kid: record.kid.clone(),
        alg: record.alg.as_str().to_owned(),
        state: state.into(),
        created_at: Some(timestamp(record.created_at)),
        published_at: Some(timestamp(record.published_at)),
        activated_at: record.activated_at.map(timestamp),
        retired_at: record.retired_at.map(timestamp),
        removal_due: record.removal_due.map(timestamp),
        verify_only: record.verify_only,
        exclude_from_oidc_discovery: record.exclude_from_oidc_discovery,
    }
}

fn status_message(status: LifecycleStatus) -> v1::StatusResponse {
    v1::StatusResponse {
        active_kid: status.active_kid,
        next_kid: status.next_kid,
        next_rotation_at: status.next_rotation_at.map(timestamp),
        last_error: status.last_error,
        data_timestamp: Some(timestamp(status.data_timestamp)),
    }
}

fn parse_algorithm(alg: Option<&str>) -> Result<Option<Algorithm>, Status> {
    alg.map(|alg| {
        alg.parse::<Algorithm>()
            .map_err(|err| Status::invalid_argument(err.to_string()))
    })
    .transpose()
}

fn required_kid(kid: &str) -> Result<&str, Status> {
    if kid.is_empty() {
        return Err(Status::invalid_argument("a kid is required"));
    }
    Ok(kid)
}

#[tonic::async_trait]
impl KeyAdmin for KeyAdminService {
    async fn list(
        &self,
        _request: Request<v1::ListRequest>,
    ) -> Result<Response<v1::ListResponse>, Status> {
        let keys = self
            .lifecycle
            .list()
            .await
            .iter()
            .map(key_message)
            .collect();
        Ok(Response::new(v1::ListResponse { keys }))
    }

    async fn status(
        &self,
        _request: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        Ok(Response::new(status_message(self.lifecycle.status().await)))
    }

    async fn rotate(
        &self,
        request: Request<v1::RotateRequest>,
    ) -> Result<Response<v1::RotateResponse>, Status> {
        let uid = caller_uid(&request);
        self.allow_change("rotate", uid)?;
        let request = request.into_inner();
        let alg = parse_algorithm(request.alg.as_deref())?;
        let lifecycle = Arc::clone(&self.lifecycle);
        let record = to_completion(async move {
            let result = lifecycle.rotate(alg, request.promote_now).await;
            audited("rotate", uid, None, result, |r| Some(r.kid.as_str()))
        })
        .await?;
        Ok(Response::new(v1::RotateResponse {
            key: Some(key_message(&record)),
        }))
    }

    async fn promote(
        &self,
        request: Request<v1::PromoteRequest>,
    ) -> Result<Response<v1::PromoteResponse>, Status> {
        let uid = caller_uid(&request);
        self.allow_change("promote", uid)?;
        let force = request.into_inner().force;
        let lifecycle = Arc::clone(&self.lifecycle);
        let record = to_completion(async move {
            let result = lifecycle.promote(force).await;
            audited("promote", uid, None, result, |r| Some(r.kid.as_str()))
        })
        .await?;
        Ok(Response::new(v1::PromoteResponse {
            key: Some(key_message(&record)),
        }))
    }

    async fn retire(
        &self,
        request: Request<v1::RetireRequest>,
    ) -> Result<Response<v1::RetireResponse>, Status> {
        let uid = caller_uid(&request);
        self.allow_change("retire", uid)?;
        let request = request.into_inner();
        let kid = required_kid(&request.kid)?.to_owned();
        let lifecycle = Arc::clone(&self.lifecycle);
        let record = to_completion(async move {
            let result = lifecycle.retire(&kid).await;
            audited("retire", uid, Some(&kid), result, |r| Some(r.kid.as_str()))
        })
        .await?;
        Ok(Response::new(v1::RetireResponse {
            key: Some(key_message(&record)),
        }))
    }

    async fn remove(
        &self,
        request: Request<v1::RemoveRequest>,
    ) -> Result<Response<v1::RemoveResponse>, Status> {
        let uid = caller_uid(&request);
        self.allow_change("remove", uid)?;
        let request = request.into_inner();
        let kid = required_kid(&request.kid)?.to_owned();
        let lifecycle = Arc::clone(&self.lifecycle);
        to_completion(async move {
            let result = lifecycle.remove(&kid, request.force).await;
            audited("remove", uid, Some(&kid), result, |()| None)
        })
        .await?;
        Ok(Response::new(v1::RemoveResponse {}))
    }

    async fn import(
        &self,
        request: Request<v1::ImportRequest>,
    ) -> Result<Response<v1::ImportResponse>, Status> {
        let uid = caller_uid(&request);
        self.allow_change("import", uid)?;
        let request = request.into_inner();
        let verify_only = request.verify_only;
        // The key is wiped from this buffer when the call ends, whatever the outcome.
        let pem = Zeroizing::new(request.pem);
        let lifecycle = Arc::clone(&self.lifecycle);
        let record = to_completion(async move {
            let result = lifecycle.import(&pem, ImportOptions { verify_only }).await;
            audited("import", uid, None, result, |r| Some(r.kid.as_str()))
        })
        .await?;
        Ok(Response::new(v1::ImportResponse {
            key: Some(key_message(&record)),
        }))
    }

    async fn export_jwks(
        &self,
        _request: Request<v1::ExportJwksRequest>,
    ) -> Result<Response<v1::ExportJwksResponse>, Status> {
        let keys = self.lifecycle.keyring().snapshot();
        let jwks_json = jwks_json(&keys)?;
        Ok(Response::new(v1::ExportJwksResponse { jwks_json }))
    }
}

/// The JWK Set document the HTTP JWKS endpoint serves for `keys`: the same builder, so the
/// two can never disagree.
fn jwks_json(keys: &crate::keyring::KeySet) -> Result<Vec<u8>, Status> {
    let set = JwkSet::from_key_set(keys).map_err(|err| {
        let code = match err {
            // Every published key is excluded from discovery: nothing to export yet.
            JwksError::NoPublishedKeys => tonic::Code::FailedPrecondition,
            _ => tonic::Code::Internal,
        };
        Status::new(code, err.to_string())
    })?;
    Ok(set.to_json().into_bytes())
}
