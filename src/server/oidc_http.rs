//! The plain-HTTP listener for relying parties outside the cluster (`--http-listen`): the OIDC
//! discovery documents kube-apiserver would serve (`/openid/v1/jwks`,
//! `/.well-known/openid-configuration`), built from the same key-set snapshot FetchKeys serves,
//! and `/healthz`, which signs a fixed dummy payload with the active key and verifies the
//! signature against the published key, as kubernetes-kms's health check does a real round trip.
//!
//! It serves public data only and changes nothing. It must never return, log or keep a token or
//! a signature: the health check's dummy token is dropped as soon as it is checked, and its
//! answer is "ok" or a short reason.
//!
//! It may face an untrusted network, so what a client can take of signet is bounded: the server
//! runs on a thread of its own, away from the signer's executor; connections are capped in
//! number and in lifetime; `/healthz` signs at most once a second, one check at a time.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Semaphore};

use crate::config::OidcHttpConfig;
use crate::jwks::{OidcDocumentBodies, OidcDocuments};
use crate::signer::TokenSigner;

pub const JWKS_PATH: &str = "/openid/v1/jwks";
pub const OPENID_CONFIGURATION_PATH: &str = "/.well-known/openid-configuration";
pub const HEALTHZ_PATH: &str = "/healthz";

/// The content type kube-apiserver serves its JWK Set with.
pub const JWKS_CONTENT_TYPE: &str = "application/jwk-set+json";

/// A client that has not sent its request headers by then is disconnected (slow-loris).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests here are a line and a few headers; nothing legitimate needs more.
const MAX_REQUEST_BUFFER: usize = 16 * 1024;
/// Connections open at once, beyond which new ones are closed as soon as accepted. Each costs a
/// file descriptor, and signet shares its limit (1024 under systemd) with the apiserver's gRPC
/// socket and the key store's files: 256 leaves most of it to them, and is far more than the few
/// relying parties that fetch a JWK Set now and then ever hold open.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a connection may stay open in all. hyper bounds reading a request
/// ([`HEADER_READ_TIMEOUT`], which also closes a keep-alive connection idle that long) but not
/// writing a response, so a client that pipelines requests and never reads the answers would
/// hold its connection, and a [`MAX_CONNECTIONS`] slot, forever. A relying party needs
/// milliseconds per fetch; one that reuses its connection for longer reconnects, as HTTP
/// clients do when a server closes a keep-alive connection.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// How long a `/healthz` probe waits for the check: a signer stuck in a key backend (an HSM, a
/// KMS) is reported unhealthy, rather than the probe hanging until the connection's lifetime.
/// The check itself goes on, and a later probe gets its verdict.
pub const HEALTH_PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// `/healthz` signs at most once per this interval, however often it is asked: the listener
/// may face the internet, and a probe must not become a way to burn signing capacity.
const HEALTH_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// The claims `/healthz` signs: fixed, obviously not a service-account token (and expired
/// since 1970, with the `exp` and `iat` every Sign needs), and never returned. base64url of
/// `{"sub":"signet:healthz","iat":0,"exp":0}`.
const HEALTH_CLAIMS: &str = "eyJzdWIiOiJzaWduZXQ6aGVhbHRoeiIsImlhdCI6MCwiZXhwIjowfQ";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    #[error("cannot listen for HTTP on {addr} (--http-listen): {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the HTTP server's thread (--http-listen): {0}")]
    Thread(std::io::Error),
}

/// What a client can take of the HTTP server: how many connections at once, for how long
/// each, and how long a `/healthz` probe waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// See [`MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// See [`CONNECTION_LIFETIME`].
    pub lifetime: Duration,
    /// See [`HEALTH_PROBE_TIMEOUT`].
    pub health_probe_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: MAX_CONNECTIONS,
            lifetime: CONNECTION_LIFETIME,
            health_probe_timeout: HEALTH_PROBE_TIMEOUT,
        }
    }
}

/// The HTTP listener, bound and ready to serve.
#[derive(Debug)]
pub struct OidcHttpServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    limits: HttpLimits,
    state: Arc<State>,
}

/// The HTTP server running on its own thread ([`OidcHttpServer::spawn`]).
#[derive(Debug)]
pub struct OidcHttpThread {
    /// Never sent: closed when the thread ends, however it ends.
    ended: oneshot::Receiver<Infallible>,
}

impl OidcHttpThread {
    /// Resolves once the server has stopped and drained.
    pub async fn stopped(self) {
        let _ = self.ended.await;
    }
}

#[derive(Debug)]
struct State {
    documents: OidcDocuments,
    /// `public, max-age=<refresh hint>`: a relying party re-reads as often as the apiserver.
    cache_control: HeaderValue,
    health: Arc<Health>,
}

/// `/healthz`'s check, run at most once per [`HEALTH_MIN_INTERVAL`] and never twice at once.
#[derive(Debug)]
struct Health {
    signer: Arc<TokenSigner>,
    /// Never held across an await.
    state: Mutex<HealthState>,
}

#[derive(Debug, Default)]
struct HealthState {
    /// The last verdict and when it was reached.
    last: Option<(Instant, Verdict)>,
    /// The check in flight, if any; it sends its verdict here.
    running: Option<watch::Receiver<Option<Verdict>>>,
}

type Verdict = Result<(), String>;

impl OidcHttpServer {
    /// Binds `config.listen` (port 0 picks a free port: see [`Self::local_addr`]).
    pub async fn bind(
        config: &OidcHttpConfig,
        signer: Arc<TokenSigner>,
    ) -> Result<Self, HttpError> {
        let bind_error = |source| HttpError::Bind {
            addr: config.listen,
            source,
        };
        let listener = TcpListener::bind(config.listen).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let cache_control = HeaderValue::try_from(format!(
            "public, max-age={}",
            signer.refresh_hint().as_secs()
        ))
        .expect("digits are a valid header value");
        let documents = OidcDocuments::new(
            signer.keyring().clone(),
            config.issuer.clone(),
            config.jwks_uri.clone(),
        );
        // Build now, so a key set that cannot be published is reported at start.
        if let Err(err) = documents.current() {
            tracing::warn!(error = %err, "the OIDC discovery documents are not available yet");
        }
        Ok(Self {
            listener,
            local_addr,
            limits: HttpLimits::default(),
            state: Arc::new(State {
                documents,
                cache_control,
                health: Arc::new(Health {
                    signer,
                    state: Mutex::default(),
                }),
            }),
        })
    }

    /// Replaces the [`HttpLimits::default`] limits.
    pub fn with_limits(mut self, limits: HttpLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves on a thread of its own until `shutdown` completes, then stops accepting and gives
    /// open connections at most `grace` to finish.
    ///
    /// The thread runs its own single-threaded runtime: the signer's executor is one thread
    /// (src/main.rs), and HTTP requests from an untrusted network must not queue ahead of the
    /// apiserver's Sign calls on it.
    pub fn spawn(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> Result<OidcHttpThread, HttpError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("signet-http")
            .build()
            .map_err(HttpError::Thread)?;
        // The listener is registered with the caller's runtime; move it to the new one.
        let listener = self.listener.into_std().map_err(HttpError::Thread)?;
        let listener = {
            let _entered = runtime.enter();
            TcpListener::from_std(listener).map_err(HttpError::Thread)?
        };
        let server = Self { listener, ..self };
        let (ended_tx, ended) = oneshot::channel();
        std::thread::Builder::new()
            .name("signet-http".to_owned())
            .spawn(move || {
                runtime.block_on(server.serve(shutdown, grace));
                // Dropping the runtime would wait for a health check stuck in a key backend
                // (an HSM, a KMS), and keep signet from exiting.
                runtime.shutdown_background();
                drop(ended_tx);
            })
            .map_err(HttpError::Thread)?;
        Ok(OidcHttpThread { ended })
    }

    async fn serve(self, shutdown: impl Future<Output = ()>, grace: Duration) {
        let Self {
            listener,
            local_addr,
            limits,
            state,
        } = self;
        tracing::info!(
            addr = %local_addr,
            issuer = %state.documents.issuer(),
            jwks_uri = %state.documents.jwks_uri(),
            "serving OIDC discovery documents and /healthz over HTTP"
        );
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(MAX_REQUEST_BUFFER);
        let connections = hyper_util::server::graceful::GracefulShutdown::new();
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        // Warn when the limit is reached, and again only after half the slots have freed: a
        // flood that keeps the server at its limit logs once, not once per connection.
        let mut refusing = false;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        // Full: close at once rather than stop accepting. The client fails
                        // fast (and retries, or its load balancer tries another signer)
                        // instead of waiting in the kernel's backlog until its own timeout,
                        // and a connection its client gave up on never takes a slot.
                        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                            if !refusing {
                                refusing = true;
                                tracing::warn!(
                                    peer = %peer,
                                    max_connections = limits.max_connections,
                                    "too many HTTP connections: closing new ones until some end"
                                );
                            }
                            drop(stream);
                            continue;
                        };
                        if slots.available_permits() >= limits.max_connections / 2 {
                            refusing = false;
                        }
                        let state = state.clone();
                        let probe_timeout = limits.health_probe_timeout;
                        let service = hyper::service::service_fn(move |request| {
                            let state = state.clone();
                            async move {
                                Ok::<_, Infallible>(route(&state, &request, probe_timeout).await)
                            }
                        });
                        let connection =
                            connections.watch(http.serve_connection(TokioIo::new(stream), service));
                        let lifetime = limits.lifetime;
                        tokio::spawn(async move {
                            match tokio::time::timeout(lifetime, connection).await {
                                Ok(Ok(())) => {}
                                Ok(Err(err)) => {
                                    tracing::debug!(error = %err, "HTTP connection ended with an error");
                                }
                                Err(_) => tracing::debug!(
                                    peer = %peer,
                                    lifetime = ?lifetime,
                                    "closing an HTTP connection open too long"
                                ),
                            }
                            // Freed in the same poll that closed the socket: a client that sees
                            // its connection end can connect again at once.
                            drop(slot);
                        });
                    }
                    Err(err) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %err, "cannot accept an HTTP connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                () = &mut shutdown => break,
            }
        }
        drop(listener);
        if tokio::time::timeout(grace, connections.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("grace period over: closing HTTP connections still open");
        }
    }
}

async fn route(
    state: &State,
    request: &Request<Incoming>,
    health_probe_timeout: Duration,
) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    if ![JWKS_PATH, OPENID_CONFIGURATION_PATH, HEALTHZ_PATH].contains(&path) {
        return plain(StatusCode::NOT_FOUND, "not found");
    }
    // hyper writes no body in answer to HEAD, but keeps the headers and Content-Length.
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        JWKS_PATH => state.document(JWKS_CONTENT_TYPE, |docs| docs.jwks.clone()),
        OPENID_CONFIGURATION_PATH => {
            state.document("application/json", |docs| docs.openid_configuration.clone())
        }
        _ => match state.health.verdict(health_probe_timeout).await {
            Ok(()) => plain(StatusCode::OK, "ok"),
            Err(reason) => plain(StatusCode::SERVICE_UNAVAILABLE, &reason),
        },
    }
}

/// A short `text/plain` answer that no cache keeps.
fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

impl State {
    fn document(
        &self,
        content_type: &'static str,
        body: impl FnOnce(&OidcDocumentBodies) -> Bytes,
    ) -> Response<Full<Bytes>> {
        match self.documents.current() {
            Ok(docs) => {
                let mut response = Response::new(Full::new(body(&docs)));
                let headers = response.headers_mut();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
                headers.insert(CACHE_CONTROL, self.cache_control.clone());
                response
            }
            Err(err) => plain(StatusCode::SERVICE_UNAVAILABLE, &err.to_string()),
        }
    }
}

impl Health {
    /// The last verdict if younger than [`HEALTH_MIN_INTERVAL`], else that of the check in
    /// flight, started here if none is, waited for at most `probe_timeout`.
    async fn verdict(self: &Arc<Self>, probe_timeout: Duration) -> Verdict {
        let mut running = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((at, verdict)) = &state.last {
                if at.elapsed() < HEALTH_MIN_INTERVAL {
                    return verdict.clone();
                }
            }
            state
                .running
                .get_or_insert_with(|| Arc::clone(self).start())
                .clone()
        };
        // Bound before it is returned: the answer borrows `running` until this statement ends.
        let verdict = match tokio::time::timeout(probe_timeout, running.wait_for(Option::is_some)).await {
            Ok(Ok(verdict)) => verdict.clone().expect("waited for a verdict"),
            // The runtime is shutting down.
            Ok(Err(_)) => Err("the health check was abandoned".to_owned()),
            // The check goes on; the next probe shares it.
            Err(_) => Err(format!(
                "the health check has not finished within {probe_timeout:?}: signing is stuck or slow"
            )),
        };
        verdict
    }

    /// Starts a check in a task of its own, which records its verdict itself: hyper drops a
    /// request's future when its client disconnects, and a check tied to it would be abandoned
    /// with its verdict unrecorded, so that a client connecting and hanging up in a loop would
    /// start a signature each time.
    fn start(self: Arc<Self>) -> watch::Receiver<Option<Verdict>> {
        let (done, running) = watch::channel(None);
        tokio::spawn(async move {
            let signer = Arc::clone(&self.signer);
            // A backend may block while signing (an HSM, a KMS): keep it off the executor.
            let verdict = tokio::task::spawn_blocking(move || sign_and_verify(&signer))
                .await
                .unwrap_or_else(|_| Err("the health check panicked".to_owned()));
            if let Err(reason) = &verdict {
                tracing::warn!(reason = %reason, "health check failed");
            }
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.last = Some((Instant::now(), verdict.clone()));
            state.running = None;
            drop(state);
            done.send_replace(Some(verdict));
        });
        running
    }
}

/// Signs [`HEALTH_CLAIMS`] through the real Sign path, then checks the signature with the
/// public key published under the header's kid: a signer whose key does not match what it
/// publishes issues tokens nobody can verify. The reason names kids only.
fn sign_and_verify(signer: &TokenSigner) -> Result<(), String> {
    let signed = signer.sign(HEALTH_CLAIMS).map_err(|err| err.to_string())?;
    let header: Header = URL_SAFE_NO_PAD
        .decode(&signed.header)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .ok_or_else(|| "the signing key produced a malformed JWS header".to_owned())?;
    let keys = signer.verification_keys();
    let published = keys
        .published()
        .iter()
        .find(|key| *key.kid == header.kid)
        .ok_or_else(|| format!("the signing key {} is not published", header.kid))?;
    if published.exclude_from_oidc_discovery || published.alg.as_str() != header.alg {
        return Err(format!(
            "the signing key {} is published as excluded or under another algorithm",
            header.kid
        ));
    }
    let signature = URL_SAFE_NO_PAD
        .decode(&signed.signature)
        .map_err(|_| "the signature is not base64url".to_owned())?;
    let signing_input = format!("{}.{HEALTH_CLAIMS}", signed.header);
    crate::keys::verify_signature(
        published.alg,
        &published.public_key_der,
        signing_input.as_bytes(),
        &signature,
    )
    .map_err(|()| {
        format!(
            "a signature by key {} does not verify with its published public key",
            header.kid
        )
    })
}

#[derive(serde::Deserialize)]
struct Header {
    alg: String,
    kid: String,
}
