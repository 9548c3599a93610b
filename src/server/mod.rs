//! Running the signer: bind the apiserver socket and the admin socket, serve both API versions
//! and the admin API, drain both on SIGTERM/SIGINT within a bounded grace period, remove the
//! sockets on the way out.

mod oidc_http;
mod socket;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use crate::admin::{KeyAdminService, ADMIN_SOCKET_MODE};
use crate::api::ExternalJwtSignerService;
use crate::backend::{DirectoryBackend, MemoryBackend};
use crate::config::{ConfigError, KeySource, ServeConfig};
use crate::keys::{self, LocalKey, SigningKey};
use crate::lifecycle::{
    FileStateStore, GuardedSystemClock, InitialKeys, KeyLifecycle, LifecycleError, MemoryStateStore,
};
use crate::signer::TokenSigner;

pub use oidc_http::{
    HttpError, HttpLimits, OidcHttpServer, OidcHttpThread, CONNECTION_LIFETIME, HEALTHZ_PATH,
    HEALTH_PROBE_TIMEOUT, JWKS_CONTENT_TYPE, JWKS_PATH, MAX_CONNECTIONS, OPENID_CONFIGURATION_PATH,
};
pub use socket::{Listener, SocketAddress, SocketError, SocketFile};

/// Largest request message accepted. Above [`crate::jws::MAX_CLAIMS_LEN`] so that oversized
/// claims get a precise INVALID_ARGUMENT from the claims check; beyond this the transport
/// refuses the message itself (OUT_OF_RANGE).
pub const MAX_REQUEST_BYTES: usize = 2 * crate::jws::MAX_CLAIMS_LEN;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error(transparent)]
    Socket(#[from] SocketError),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot install the signal handler: {0}")]
    Signal(std::io::Error),
    #[error(transparent)]
    Http(#[from] HttpError),
}

/// Builds the key lifecycle `signet serve` runs with: the `--key-dir` store, the `--key-file`
/// keys (first active, others verify-only), or one generated in-memory key. Blocking (reads
/// files, may generate an RSA key): call it before the runtime starts or from
/// `spawn_blocking`.
pub fn build_lifecycle(config: &ServeConfig) -> Result<Arc<KeyLifecycle>, ConfigError> {
    let policy = config.rotation_policy();
    let clock = Arc::new(GuardedSystemClock::new());
    let mut lifecycle = match &config.key_source {
        KeySource::Directory(dir) => KeyLifecycle::open(
            Arc::new(
                DirectoryBackend::open(dir)
                    .map_err(LifecycleError::from)?
                    .with_archive(config.archive_removed_keys),
            ),
            Arc::new(FileStateStore::new(dir)),
            policy,
            clock,
        )?,
        KeySource::Generated { alg } => KeyLifecycle::create(
            Arc::new(MemoryBackend::new()),
            Arc::new(MemoryStateStore::new()),
            policy,
            clock,
            InitialKeys::Generate(*alg),
        )
        .map_err(|err| match err {
            LifecycleError::Key(source) => ConfigError::Generate { alg: *alg, source },
            other => ConfigError::KeyStore(other),
        })?,
        KeySource::Files(paths) => {
            let mut keys: Vec<(std::path::PathBuf, String, zeroize::Zeroizing<Vec<u8>>)> =
                Vec::with_capacity(paths.len());
            for path in paths {
                let pem = crate::backend::read_key_file_any_mode(path)
                    .map_err(ConfigError::ReadKeyFile)?;
                // `keys import` refuses such a file; a static key given at start is only
                // warned about, as kube-apiserver's own --service-account-key-file is.
                if let Err(err) = crate::backend::check_private_mode(path, 0o600) {
                    tracing::warn!(error = %err, "key file readable by other users: anyone who can read it can sign tokens for this cluster");
                }
                let key_error = |source| ConfigError::KeyFile {
                    path: path.clone(),
                    source,
                };
                let pkcs8 = keys::pkcs8_from_pem(&pem).map_err(key_error)?;
                let kid =
                    SigningKey::new(Arc::new(LocalKey::from_pkcs8(&pkcs8).map_err(key_error)?))
                        .kid()
                        .to_owned();
                if let Some((first, _, _)) = keys.iter().find(|(_, k, _)| *k == kid) {
                    return Err(ConfigError::DuplicateKey {
                        first: first.clone(),
                        second: path.clone(),
                        kid,
                    });
                }
                keys.push((path.clone(), kid, pkcs8));
            }
            KeyLifecycle::create(
                Arc::new(MemoryBackend::new()),
                Arc::new(MemoryStateStore::new()),
                policy,
                clock,
                InitialKeys::Import(keys.into_iter().map(|(_, _, pkcs8)| pkcs8).collect()),
            )?
        }
    };
    lifecycle.begin_serving()?;
    Ok(Arc::new(lifecycle))
}

/// The admin service for `lifecycle`. Keys from `--key-file` live only in memory, and signet
/// already refuses to rotate them automatically (`--rotation-period`); the admin socket refuses
/// to change them for the same reason.
fn admin_service(lifecycle: Arc<KeyLifecycle>, source: &KeySource) -> KeyAdminService {
    let admin = KeyAdminService::new(lifecycle);
    match source {
        KeySource::Files(_) => admin.read_only(
            "this signer's keys come from --key-file and live only in memory: a key rotated, \
             promoted, imported, retired or removed here would be undone by the next restart, \
             and tokens signed with a key made here would then stop verifying; serve from a \
             --key-dir store to manage keys on a running signer",
        ),
        KeySource::Directory(_) | KeySource::Generated { .. } => admin,
    }
}

/// Binds the configured socket and the admin socket and serves both until SIGTERM or SIGINT,
/// with automatic rotation running in the background.
pub async fn run(
    config: ServeConfig,
    lifecycle: Arc<KeyLifecycle>,
    admin_socket: SocketAddress,
) -> Result<(), ServeError> {
    // Handlers first: once the socket exists (and the startup line says so), a SIGTERM must
    // mean a clean shutdown that removes the socket, never death by the default action.
    let shutdown = shutdown_signal().map_err(ServeError::Signal)?;
    let listener = Listener::bind(&config.socket, config.socket_mode, &config.allowed_uids)?;
    // Owner only; on an abstract socket, only our own UID and root.
    let admin_listener = Listener::bind(&admin_socket, ADMIN_SOCKET_MODE, &[])?;
    let keyring = Arc::clone(lifecycle.keyring());
    let keys = keyring.snapshot();
    let kids: Vec<String> = keys.published().iter().map(|k| k.kid.to_string()).collect();
    let algs: Vec<&str> = keys.published().iter().map(|k| k.alg.as_str()).collect();
    let signer = Arc::new(TokenSigner::new(
        keyring,
        config.max_token_expiration,
        config.refresh_hint,
    ));
    // Bound and started before the announcement below, so "serving" means every listener is
    // up, and a failure to start is reported as a failure to bind is.
    let oidc_http = match &config.oidc_http {
        Some(http) => Some(OidcHttpServer::bind(http, signer.clone()).await?),
        None => None,
    };
    let (shutdown, oidc_http) = spawn_beside(oidc_http, shutdown, config.shutdown_grace)?;
    let policy = lifecycle.policy();
    tracing::info!(
        socket = %listener.address(),
        admin_socket = %admin_listener.address(),
        kids = %kids.join(","),
        algs = %algs.join(","),
        signing_kid = keys.signing_key().map(|k| k.kid()).unwrap_or(""),
        provider = crate::keys::PROVIDER,
        max_token_expiration_seconds = signer.max_token_expiration_secs(),
        refresh_hint_seconds = config.refresh_hint.as_secs(),
        publish_lead_seconds = policy.publish_lead.as_secs(),
        rotation_period_seconds = policy.rotation_period.map_or(0, |p| p.as_secs()),
        "signet serving ExternalJWTSigner v1 and v1alpha1"
    );
    let rotation = lifecycle.spawn_rotation_task();
    let served = serve_with_admin(
        listener,
        ExternalJwtSignerService::new(signer).with_busy_poll(config.busy_poll),
        admin_listener,
        admin_service(lifecycle, &config.key_source),
        config.shutdown_grace,
        shutdown,
    )
    .await;
    rotation.abort();
    if let Some(oidc_http) = oidc_http {
        oidc_http.stopped().await;
    }
    served
}

/// Serves the signer on `listener` and the admin API on `admin_listener` until `shutdown`
/// completes or either server fails; both then stop together, each draining within `grace`.
pub async fn serve_with_admin(
    listener: Listener,
    service: ExternalJwtSignerService,
    admin_listener: Listener,
    admin: KeyAdminService,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let stop = watch::Sender::new(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    // Whichever server ends first (on error) takes the other one down with it.
    let stop_after = |result: Result<(), ServeError>| {
        stop.send_replace(true);
        result
    };
    let api = async {
        let router = signer_router(&service);
        stop_after(serve_router(listener, router, grace, stopped(stop.subscribe())).await)
    };
    let admin = async {
        let router = grpc_server().add_service(admin.server());
        stop_after(serve_router(admin_listener, router, grace, stopped(stop.subscribe())).await)
    };
    let signal = async {
        tokio::select! {
            () = shutdown => { stop.send_replace(true); }
            () = stopped(stop.subscribe()) => {}
        }
    };
    let ((), api, admin) = tokio::join!(signal, api, admin);
    api.and(admin)
}

/// Runs the `--http-listen` server beside the gRPC one, on its own thread: it stops at the
/// moment `shutdown` fires (when gRPC starts draining), or when the gRPC server ends on its own
/// (the returned future is then dropped). Returns the shutdown future for the gRPC server and
/// the HTTP server's thread.
fn spawn_beside(
    oidc_http: Option<OidcHttpServer>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Result<(impl Future<Output = ()>, Option<OidcHttpThread>), HttpError> {
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = oidc_http
        .map(|server| {
            server.spawn(
                async {
                    let _ = stop_rx.await;
                },
                grace,
            )
        })
        .transpose()?;
    let shutdown = async move {
        shutdown.await;
        let _ = stop_tx.send(());
    };
    Ok((shutdown, thread))
}

/// Serves `service` on `listener` until `shutdown` completes, then stops accepting, removes
/// the socket file and lets in-flight calls finish for at most `grace`.
pub async fn serve(
    listener: Listener,
    service: ExternalJwtSignerService,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    serve_router(listener, signer_router(&service), grace, shutdown).await
}

/// Calls in flight on one HTTP/2 connection. tonic, unlike hyper, sets no limit by default,
/// so one client could make the server hold any number of requests (up to 128 KiB each) and
/// queue any number of signatures. 256 in flight is some milliseconds of ES256 signing, and
/// more than kube-apiserver has outstanding; a gRPC client queues calls past the limit itself
/// rather than failing them.
pub const MAX_CONCURRENT_STREAMS: u32 = 256;

/// Streams the server may reset for a client's protocol errors before it closes the
/// connection: hyper's default, which tonic turns off, against the reset-flood attack
/// (RUSTSEC-2024-0003).
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// The HTTP/2 settings both gRPC sockets (the signer's and the admin one) serve with.
fn grpc_server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS))
}

/// Both API versions of the signer, with the request size limit.
fn signer_router(service: &ExternalJwtSignerService) -> tonic::transport::server::Router {
    grpc_server()
        .add_service(service.v1().max_decoding_message_size(MAX_REQUEST_BYTES))
        .add_service(
            service
                .v1alpha1()
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
}

/// Serves `router` on `listener` until `shutdown`, then removes the socket file and drains.
async fn serve_router(
    listener: Listener,
    router: tonic::transport::server::Router,
    grace: Duration,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let address = listener.address().clone();
    let (incoming, socket_file) = listener.into_incoming();
    let (drain_tx, drain_rx) = oneshot::channel::<()>();
    let mut server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = drain_rx.await;
    }));

    tokio::pin!(shutdown);
    let result = tokio::select! {
        ended = &mut server => ended.unwrap_or_else(|join| panic!("server task failed: {join}")),
        () = &mut shutdown => {
            tracing::info!(socket = %address, grace = ?grace, "shutting down: draining in-flight calls");
            // New clients get "no such file" at once instead of queueing on a closing socket.
            drop(socket_file);
            let _ = drain_tx.send(());
            match tokio::time::timeout(grace, &mut server).await {
                Ok(ended) => ended.unwrap_or_else(|join| panic!("server task failed: {join}")),
                Err(_) => {
                    tracing::warn!("grace period over: abandoning calls still in flight");
                    server.abort();
                    Ok(())
                }
            }
        }
    };
    result.map_err(ServeError::from)
}

/// Resolves on the first SIGTERM or SIGINT.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("received SIGTERM"),
            _ = int.recv() => tracing::info!("received SIGINT"),
        }
    })
}

/// An error and its sources, joined with ": ". tonic's and hyper's transport errors say little
/// at the top level ("transport error"); the cause (no such file, permission denied) is in
/// their sources. For client-side messages (`signet verify`, `signet bench`).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
