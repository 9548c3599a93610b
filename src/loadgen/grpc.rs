//! The load tool's gRPC client: unary ExternalJWTSigner calls over one HTTP/2 connection,
//! written on the `h2` crate.
//!
//! Why not tonic's generated client: the load tool shares the cores with the signer it
//! measures, and at concurrency 1 its own work sits on the latency it reports. tonic's client
//! (an encoding body stream, a boxed future per call, hyper's dispatch task, a decoding stream)
//! cost a mean 21.4 µs of CPU per ES256 Sign at concurrency 16; these prepared requests cost
//! 16.5 µs, and a call at concurrency 1 is 15-17 µs shorter (BENCHMARKS.md, "Its own gRPC
//! client on `h2`"). Each call leaves as grpc-go (kube-apiserver) sends it: HEADERS, then one
//! DATA frame that carries the whole message and ends the stream.
//!
//! It checks each answer as kube-apiserver would: HTTP 200, a gRPC content type, one
//! uncompressed message that decodes, and `grpc-status` 0 in the trailers. Anything else is
//! counted as an error with its gRPC code, or as `InvalidResponse`.

use std::time::Duration;

use bytes::{Buf as _, Bytes, BytesMut};
use tonic::codegen::http;
use tonic::Code;

use super::{ApiVersion, CallError, Rpc};
use crate::api::v1::{
    FetchKeysRequest, FetchKeysResponse, MetadataRequest, MetadataResponse, SignJwtRequest,
    SignJwtResponse,
};
use crate::keys::Algorithm;
use crate::signer::MIN_MAX_TOKEN_EXPIRATION;

/// Answers larger than this are refused, as gRPC clients refuse by default (4 MiB). A JWKS of
/// a few keys is a few KiB.
const MAX_RESPONSE: usize = 4 * 1024 * 1024;

/// One HTTP/2 connection's sending half, shared by the tasks that call over it.
pub(crate) type Sender = h2::client::SendRequest<Bytes>;

/// Opens the HTTP/2 connection (cleartext, prior knowledge) over `io` and drives it on a task
/// of its own until it closes.
pub(crate) async fn handshake<T>(io: T) -> Result<Sender, h2::Error>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) = h2::client::handshake(io).await?;
    super::drive_connection(connection);
    Ok(send)
}

/// A request prepared once per run: its head (path, authority, gRPC headers) and its framed
/// message. A call clones both; the message's bytes are shared, not copied.
#[derive(Clone)]
struct Prepared {
    head: http::Request<()>,
    message: Bytes,
}

/// The message is left out: a Sign request carries the claims, which may be a real token's.
impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("path", &self.head.uri().path())
            .field("message_bytes", &self.message.len())
            .finish()
    }
}

impl Prepared {
    fn new(
        api: ApiVersion,
        method: &str,
        message: &impl prost::Message,
        timeout: Duration,
    ) -> Self {
        let package = match api {
            ApiVersion::V1 => "v1",
            ApiVersion::V1alpha1 => "v1alpha1",
        };
        // kube-apiserver dials with authority "localhost"; h2 takes the scheme and the
        // authority from the URI.
        let head = http::Request::post(format!(
            "http://localhost/{package}.ExternalJWTSigner/{method}"
        ))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .header("grpc-timeout", grpc_timeout(timeout))
        .header(
            http::header::USER_AGENT,
            concat!("signet-bench/", env!("CARGO_PKG_VERSION")),
        )
        .body(())
        .expect("a fixed, valid request head");
        Self {
            head,
            message: frame(&message.encode_to_vec()),
        }
    }
}

/// A gRPC length-prefixed message: no compression, a 4-byte big-endian length, the bytes.
fn frame(message: &[u8]) -> Bytes {
    // The largest message is a Sign request, and its claims are capped at 4 MiB
    // (`MAX_CLAIMS_FILE`), far under the 4 GiB a gRPC length prefix can say.
    let length = u32::try_from(message.len()).expect("a request message under 4 GiB");
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.extend_from_slice(&[0]);
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(message);
    framed.freeze()
}

/// The three calls of the chosen API package, prepared; cloned into each load task.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    send: Sender,
    prepared: [Prepared; 3],
    /// The last Sign header found valid: a signer returns the same header for every token of
    /// a key, so it is checked once per key, not once per call (the load tool's CPU is taken
    /// from the signer's cores).
    valid_header: Option<String>,
    /// The last FetchKeys and Metadata messages found valid, checked again only when they
    /// change (a signer serves them from a snapshot).
    valid_fetch_keys: Option<Bytes>,
    valid_metadata: Option<Bytes>,
}

impl Client {
    /// `timeout` is announced to the server on every call (`grpc-timeout`).
    pub(crate) fn new(send: Sender, api: ApiVersion, claims: &str, timeout: Duration) -> Self {
        let sign = SignJwtRequest {
            claims: claims.to_owned(),
        };
        // Indexed by `Rpc::index`. The v1alpha1 messages are the v1 messages on the wire.
        let prepared = Rpc::ALL.map(|rpc| match rpc {
            Rpc::Sign => Prepared::new(api, "Sign", &sign, timeout),
            Rpc::FetchKeys => Prepared::new(api, "FetchKeys", &FetchKeysRequest {}, timeout),
            Rpc::Metadata => Prepared::new(api, "Metadata", &MetadataRequest {}, timeout),
        });
        Self {
            send,
            prepared,
            valid_header: None,
            valid_fetch_keys: None,
            valid_metadata: None,
        }
    }

    /// Makes one call and checks its answer as kube-apiserver checks it (the wire contract's
    /// sections 3 and 4); a signature is not verified (the apiserver does not either).
    pub(crate) async fn call(&mut self, rpc: Rpc) -> Result<(), CallError> {
        let message = self.exchange(rpc).await?;
        match rpc {
            Rpc::Sign => {
                let response = decode::<SignJwtResponse>(message)?;
                if response.signature.is_empty() {
                    return Err(CallError::InvalidResponse(
                        "Sign returned an empty signature",
                    ));
                }
                if self.valid_header.as_deref() != Some(response.header.as_str()) {
                    check_sign_header(&response.header).map_err(CallError::InvalidResponse)?;
                    self.valid_header = Some(response.header);
                }
            }
            Rpc::FetchKeys => {
                if self.valid_fetch_keys.as_ref() != Some(&message) {
                    check_fetch_keys(&decode::<FetchKeysResponse>(message.clone())?)
                        .map_err(CallError::InvalidResponse)?;
                    self.valid_fetch_keys = Some(message);
                }
            }
            Rpc::Metadata => {
                if self.valid_metadata.as_ref() != Some(&message) {
                    let max =
                        decode::<MetadataResponse>(message.clone())?.max_token_expiration_seconds;
                    if u64::try_from(max)
                        .map_or(true, |max| max < MIN_MAX_TOKEN_EXPIRATION.as_secs())
                    {
                        return Err(CallError::InvalidResponse(
                            "Metadata's max_token_expiration_seconds is under 600",
                        ));
                    }
                    self.valid_metadata = Some(message);
                }
            }
        }
        Ok(())
    }

    /// Sends the prepared request and returns the one message of a successful answer.
    async fn exchange(&mut self, rpc: Rpc) -> Result<Bytes, CallError> {
        let prepared = &self.prepared[rpc.index()];
        // A failure to open a stream is the connection's, whatever h2 calls it.
        std::future::poll_fn(|cx| self.send.poll_ready(cx))
            .await
            .map_err(connection_lost)?;
        let (response, mut request_body) = self
            .send
            .send_request(prepared.head.clone(), false)
            .map_err(connection_lost)?;
        request_body
            .send_data(prepared.message.clone(), true)
            .map_err(transport)?;
        let (head, mut body) = response.await.map_err(transport)?.into_parts();

        if head.status != http::StatusCode::OK {
            return Err(CallError::Status(
                code_for_http_status(head.status),
                format!("HTTP status {}", head.status),
            ));
        }
        let grpc_content = head
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| {
                // grpc-go's rule: exactly application/grpc, or a subtype after `+` or `;`
                // (not application/grpc-web).
                value
                    .strip_prefix("application/grpc")
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(['+', ';']))
            });
        if !grpc_content {
            return Err(CallError::InvalidResponse(
                "the answer's content-type is not application/grpc",
            ));
        }
        // Trailers-only: an error (or a bare OK) with no message and no trailers.
        if let Some(status) = tonic::Status::from_header_map(&head.headers) {
            return Err(match status.code() {
                Code::Ok => CallError::InvalidResponse("OK without a response message"),
                _ => status.into(),
            });
        }

        let mut received = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(transport)?;
            // Give the window back, or a long run would stall once it is spent.
            let _ = body.flow_control().release_capacity(chunk.len());
            // The 5-byte prefix (compression flag, length) is not part of the message.
            if received.len() + chunk.len() > MAX_RESPONSE + 5 {
                return Err(CallError::InvalidResponse("the answer is over 4 MiB"));
            }
            received.extend_from_slice(&chunk);
        }
        let trailers = body.trailers().await.map_err(transport)?;
        match trailers.as_ref().and_then(tonic::Status::from_header_map) {
            None => Err(CallError::InvalidResponse("no grpc-status in the trailers")),
            Some(status) if status.code() != Code::Ok => Err(status.into()),
            Some(_) => unframe(received.freeze()),
        }
    }
}

/// A kid kube-apiserver takes: 1 to 1024 bytes.
fn kid_fits(kid: &str) -> bool {
    (1..=1024).contains(&kid.len())
}

/// The JWS header of a Sign answer, as kube-apiserver decodes it: base64url without padding
/// of a JSON object with exactly `alg`, `kid` and `typ`.
fn check_sign_header(header: &str) -> Result<(), &'static str> {
    use base64::Engine as _;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Header {
        alg: String,
        kid: String,
        typ: String,
    }
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| "Sign's header is not base64url without padding")?;
    let header: Header = serde_json::from_slice(&json)
        .map_err(|_| "Sign's header is not a JSON object of alg, kid and typ alone")?;
    // Exact names: kube-apiserver compares case-sensitively.
    if !Algorithm::ALL.iter().any(|alg| alg.as_str() == header.alg) {
        return Err("Sign's header names an alg kube-apiserver does not take");
    }
    if header.typ != "JWT" {
        return Err("Sign's header has a typ other than JWT");
    }
    if !kid_fits(&header.kid) {
        return Err("Sign's header has a kid that is empty or over 1024 bytes");
    }
    Ok(())
}

/// A FetchKeys answer as kube-apiserver checks it: any violation rejects the whole set.
fn check_fetch_keys(response: &FetchKeysResponse) -> Result<(), &'static str> {
    use spki::der::Decode as _;
    // protobuf's Timestamp range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
    const TIMESTAMP_SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;
    if response.refresh_hint_seconds <= 0 {
        return Err("FetchKeys' refresh_hint_seconds is not positive");
    }
    match &response.data_timestamp {
        Some(at)
            if TIMESTAMP_SECONDS.contains(&at.seconds)
                && (0..1_000_000_000).contains(&at.nanos) => {}
        _ => return Err("FetchKeys' data_timestamp is missing or out of range"),
    }
    if response.keys.is_empty() {
        return Err("FetchKeys returned no keys");
    }
    for key in &response.keys {
        if !kid_fits(&key.key_id) {
            return Err("FetchKeys returned a key_id that is empty or over 1024 bytes");
        }
        if spki::SubjectPublicKeyInfoRef::from_der(&key.key).is_err() {
            return Err("FetchKeys returned a key that is not PKIX DER");
        }
    }
    Ok(())
}

/// The one message of a unary answer.
fn unframe(mut received: Bytes) -> Result<Bytes, CallError> {
    if received.len() < 5 {
        return Err(CallError::InvalidResponse("no response message"));
    }
    let compressed = received.get_u8();
    let length = received.get_u32() as usize;
    if compressed != 0 {
        // Nothing asked for compression (no grpc-accept-encoding was sent).
        return Err(CallError::InvalidResponse(
            "a compressed message that was not asked for",
        ));
    }
    if length != received.len() {
        return Err(CallError::InvalidResponse(
            "the message's length prefix does not match the bytes received",
        ));
    }
    Ok(received)
}

fn decode<M: prost::Message + Default>(message: Bytes) -> Result<M, CallError> {
    M::decode(message)
        .map_err(|_| CallError::InvalidResponse("the response message does not decode"))
}

/// A failure below gRPC: the connection's (it closed, or the server sent GOAWAY), or one
/// stream's reset, mapped to the code gRPC clients give it (a reset reason maps as the gRPC
/// HTTP/2 spec says).
fn transport(err: h2::Error) -> CallError {
    if err.is_io() || err.is_go_away() {
        return connection_lost(err);
    }
    tonic::Status::from_error(Box::new(err)).into()
}

fn connection_lost(err: h2::Error) -> CallError {
    CallError::ConnectionLost(format!("the connection closed: {err}"))
}

/// `grpc-timeout`'s form: at most 8 digits and a unit; milliseconds unless that needs more.
fn grpc_timeout(timeout: Duration) -> String {
    let millis = timeout.as_millis().max(1);
    if millis < 100_000_000 {
        format!("{millis}m")
    } else {
        format!("{}S", timeout.as_secs())
    }
}

/// gRPC's mapping of an HTTP status without a `grpc-status` to a code
/// (doc/http-grpc-status-mapping.md in grpc/grpc).
fn code_for_http_status(status: http::StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    const DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

    /// What the test server answers to one call.
    #[derive(Clone, Default)]
    struct Answer {
        status: u16,
        content_type: Option<&'static str>,
        /// Sent on the response head: a trailers-only answer when there is no body.
        head_status: Option<(&'static str, &'static str)>,
        body: Option<Bytes>,
        trailer_status: Option<(&'static str, &'static str)>,
        reset: Option<h2::Reason>,
    }

    fn ok(body: Bytes) -> Answer {
        Answer {
            status: 200,
            content_type: Some("application/grpc"),
            body: Some(body),
            trailer_status: Some(("0", "")),
            ..Answer::default()
        }
    }

    #[test]
    fn grpc_timeout_has_at_most_eight_digits() {
        assert_eq!(grpc_timeout(Duration::from_micros(10)), "1m");
        assert_eq!(grpc_timeout(Duration::from_secs(60)), "60000m");
        assert_eq!(grpc_timeout(Duration::from_secs(100_000)), "100000S");
    }

    fn framed(message: &impl prost::Message) -> Bytes {
        frame(&message.encode_to_vec())
    }

    #[test]
    fn a_prepared_sign_request_never_shows_its_claims() {
        let claims = "eyJzZWNyZXQiOiJ0b2tlbiJ9";
        let sign = Prepared::new(
            ApiVersion::V1,
            "Sign",
            &SignJwtRequest {
                claims: claims.to_owned(),
            },
            Duration::from_secs(10),
        );
        let shown = format!("{sign:?}");
        assert!(!shown.contains(claims), "{shown}");
        assert!(shown.contains("/v1.ExternalJWTSigner/Sign"), "{shown}");
        assert!(shown.contains(&sign.message.len().to_string()), "{shown}");
    }

    /// base64url of `{"alg":"ES256","kid":"k1","typ":"JWT"}`.
    const HEADER: &str = "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0";

    fn signed() -> Bytes {
        signed_with(HEADER)
    }

    fn signed_with(header: &str) -> Bytes {
        framed(&SignJwtResponse {
            header: header.into(),
            signature: "c2ln".into(),
        })
    }

    fn b64(json: &str) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    /// What the server saw of the call.
    #[derive(Debug)]
    struct Seen {
        head: http::request::Parts,
        message: Bytes,
        data_frames: usize,
    }

    /// Serves one call over an in-memory duplex with `answer`, makes it with a client of
    /// `api`, and returns the client's outcome and what the server saw.
    async fn call(api: ApiVersion, rpc: Rpc, answer: Answer) -> (Result<(), CallError>, Seen) {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let mut connection = h2::server::handshake(server_io).await.unwrap();
            let (request, mut respond) = connection.accept().await.unwrap().unwrap();
            // Keep the connection driven while this call is answered.
            let driver = tokio::spawn(async move { while connection.accept().await.is_some() {} });
            let (head, mut body) = request.into_parts();
            let mut message = BytesMut::new();
            let mut data_frames = 0;
            while let Some(chunk) = body.data().await {
                message.extend_from_slice(&chunk.unwrap());
                data_frames += 1;
            }
            if let Some(reason) = answer.reset {
                respond.send_reset(reason);
            } else {
                let mut response = http::Response::builder().status(answer.status);
                if let Some(content_type) = answer.content_type {
                    response = response.header(http::header::CONTENT_TYPE, content_type);
                }
                if let Some((code, message)) = answer.head_status {
                    response = response
                        .header("grpc-status", code)
                        .header("grpc-message", message);
                }
                let end_at_head = answer.body.is_none() && answer.trailer_status.is_none();
                let mut stream = respond
                    .send_response(response.body(()).unwrap(), end_at_head)
                    .unwrap();
                if let Some(body) = answer.body {
                    stream
                        .send_data(body, answer.trailer_status.is_none())
                        .unwrap();
                }
                if let Some((code, message)) = answer.trailer_status {
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", code.parse().unwrap());
                    trailers.insert("grpc-message", message.parse().unwrap());
                    stream.send_trailers(trailers).unwrap();
                }
            }
            let seen = Seen {
                head,
                message: message.freeze(),
                data_frames,
            };
            (seen, driver)
        });
        let send = handshake(client_io).await.unwrap();
        let mut client = Client::new(send, api, "Y2xhaW1z", Duration::from_secs(10));
        // A client that never sends a whole call, or never sees the answer, fails the test
        // instead of hanging it.
        let outcome = tokio::time::timeout(DEADLINE, client.call(rpc))
            .await
            .expect("the call ended");
        let (seen, driver) = tokio::time::timeout(DEADLINE, server)
            .await
            .unwrap_or_else(|_| panic!("the server saw no whole call; the client got {outcome:?}"))
            .unwrap();
        driver.abort();
        (outcome, seen)
    }

    #[tokio::test]
    async fn a_sign_is_sent_as_grpc_go_sends_it_and_its_answer_is_checked() {
        for (api, path) in [
            (ApiVersion::V1, "/v1.ExternalJWTSigner/Sign"),
            (ApiVersion::V1alpha1, "/v1alpha1.ExternalJWTSigner/Sign"),
        ] {
            let (outcome, seen) = call(api, Rpc::Sign, ok(signed())).await;
            assert_eq!(outcome, Ok(()));
            assert_eq!(seen.head.method, http::Method::POST);
            assert_eq!(seen.head.uri.path(), path);
            assert_eq!(seen.head.uri.authority().unwrap().as_str(), "localhost");
            assert_eq!(seen.head.headers["content-type"], "application/grpc");
            assert_eq!(seen.head.headers["te"], "trailers");
            assert_eq!(seen.head.headers["grpc-timeout"], "10000m");
            // The whole message in one DATA frame, which ends the stream.
            assert_eq!(seen.data_frames, 1);
            let request = SignJwtRequest::decode(unframe(seen.message).unwrap()).unwrap();
            assert_eq!(request.claims, "Y2xhaW1z");
        }
    }

    /// A FetchKeys answer kube-apiserver takes, with one real P-256 key.
    fn valid_key_set() -> FetchKeysResponse {
        let (key, _) =
            crate::keys::LocalKey::generate(crate::keys::Algorithm::ES256, 2048).unwrap();
        let key = crate::keys::SigningKey::new(std::sync::Arc::new(key));
        FetchKeysResponse {
            keys: vec![crate::api::v1::Key {
                key_id: key.kid().into(),
                key: key.public_key_der().clone(),
                exclude_from_oidc_discovery: false,
            }],
            data_timestamp: Some(prost_types::Timestamp {
                seconds: 1_800_000_000,
                nanos: 0,
            }),
            refresh_hint_seconds: 60,
        }
    }

    #[tokio::test]
    async fn fetch_keys_and_metadata_answers_are_checked() {
        let (outcome, seen) =
            call(ApiVersion::V1, Rpc::FetchKeys, ok(framed(&valid_key_set()))).await;
        assert_eq!(outcome, Ok(()));
        assert_eq!(seen.head.uri.path(), "/v1.ExternalJWTSigner/FetchKeys");

        type Breaks = fn(&mut FetchKeysResponse);
        let broken: [(Breaks, &str); 7] = [
            (|r| r.keys.clear(), "FetchKeys returned no keys"),
            (
                |r| r.refresh_hint_seconds = 0,
                "FetchKeys' refresh_hint_seconds is not positive",
            ),
            (
                |r| r.data_timestamp = None,
                "FetchKeys' data_timestamp is missing or out of range",
            ),
            (
                |r| r.data_timestamp.as_mut().unwrap().nanos = 1_000_000_000,
                "FetchKeys' data_timestamp is missing or out of range",
            ),
            (
                |r| r.keys[0].key_id = String::new(),
                "FetchKeys returned a key_id that is empty or over 1024 bytes",
            ),
            (
                |r| r.keys[0].key_id = "k".repeat(1025),
                "FetchKeys returned a key_id that is empty or over 1024 bytes",
            ),
            (
                |r| r.keys[0].key = Bytes::from_static(b"-----BEGIN PUBLIC KEY-----"),
                "FetchKeys returned a key that is not PKIX DER",
            ),
        ];
        for (breaks, expected) in broken {
            let mut response = valid_key_set();
            breaks(&mut response);
            let (outcome, _) = call(ApiVersion::V1, Rpc::FetchKeys, ok(framed(&response))).await;
            assert_eq!(outcome, Err(CallError::InvalidResponse(expected)));
        }

        let metadata = framed(&MetadataResponse {
            max_token_expiration_seconds: 3600,
        });
        let (outcome, seen) = call(ApiVersion::V1alpha1, Rpc::Metadata, ok(metadata)).await;
        assert_eq!(outcome, Ok(()));
        assert_eq!(seen.head.uri.path(), "/v1alpha1.ExternalJWTSigner/Metadata");
        let too_short = framed(&MetadataResponse {
            max_token_expiration_seconds: 599,
        });
        let (outcome, _) = call(ApiVersion::V1, Rpc::Metadata, ok(too_short)).await;
        assert_eq!(
            outcome,
            Err(CallError::InvalidResponse(
                "Metadata's max_token_expiration_seconds is under 600"
            ))
        );
    }

    #[tokio::test]
    async fn a_grpc_status_is_counted_by_its_code_with_its_message() {
        // Trailers-only, as servers answer an error before any message.
        let refused = Answer {
            status: 200,
            content_type: Some("application/grpc"),
            head_status: Some(("3", "claims%20are%20not%20JSON")),
            ..Answer::default()
        };
        let (outcome, _) = call(ApiVersion::V1, Rpc::Sign, refused).await;
        assert_eq!(
            outcome,
            Err(CallError::Status(
                Code::InvalidArgument,
                "claims are not JSON".into()
            ))
        );
        // In the trailers, after a message.
        let mut failed = ok(signed());
        failed.trailer_status = Some(("13", "broken"));
        let (outcome, _) = call(ApiVersion::V1, Rpc::Sign, failed).await;
        assert_eq!(
            outcome,
            Err(CallError::Status(Code::Internal, "broken".into()))
        );
    }

    #[tokio::test]
    async fn a_grpc_subtype_content_type_is_taken() {
        for content_type in ["application/grpc+proto", "application/grpc;charset=utf-8"] {
            let answer = Answer {
                content_type: Some(content_type),
                ..ok(signed())
            };
            let (outcome, _) = call(ApiVersion::V1, Rpc::Sign, answer).await;
            assert_eq!(outcome, Ok(()), "{content_type}");
        }
    }

    #[tokio::test]
    async fn answers_kube_apiserver_would_reject_are_invalid() {
        let cases: Vec<(Answer, CallError)> = vec![
            (
                Answer {
                    status: 503,
                    ..Answer::default()
                },
                CallError::Status(
                    Code::Unavailable,
                    "HTTP status 503 Service Unavailable".into(),
                ),
            ),
            (
                Answer {
                    content_type: Some("text/plain"),
                    ..ok(signed())
                },
                CallError::InvalidResponse("the answer's content-type is not application/grpc"),
            ),
            (
                Answer {
                    content_type: Some("application/grpc-web"),
                    ..ok(signed())
                },
                CallError::InvalidResponse("the answer's content-type is not application/grpc"),
            ),
            (
                Answer {
                    trailer_status: None,
                    ..ok(signed())
                },
                CallError::InvalidResponse("no grpc-status in the trailers"),
            ),
            (
                Answer {
                    head_status: Some(("0", "")),
                    ..Answer {
                        status: 200,
                        content_type: Some("application/grpc"),
                        ..Answer::default()
                    }
                },
                CallError::InvalidResponse("OK without a response message"),
            ),
            (
                ok(Bytes::new()),
                CallError::InvalidResponse("no response message"),
            ),
            (
                ok({
                    let mut compressed = BytesMut::from(&signed()[..]);
                    compressed[0] = 1;
                    compressed.freeze()
                }),
                CallError::InvalidResponse("a compressed message that was not asked for"),
            ),
            (
                ok(signed().slice(..10)),
                CallError::InvalidResponse(
                    "the message's length prefix does not match the bytes received",
                ),
            ),
            (
                ok(frame(&[0xff, 0xff])),
                CallError::InvalidResponse("the response message does not decode"),
            ),
            (
                ok(framed(&SignJwtResponse {
                    header: HEADER.into(),
                    signature: String::new(),
                })),
                CallError::InvalidResponse("Sign returned an empty signature"),
            ),
            (
                ok(signed_with(&format!("{HEADER}="))),
                CallError::InvalidResponse("Sign's header is not base64url without padding"),
            ),
            (
                ok(signed_with(&b64(
                    r#"{"alg":"ES256","kid":"k1","typ":"JWT","x5u":"u"}"#,
                ))),
                CallError::InvalidResponse(
                    "Sign's header is not a JSON object of alg, kid and typ alone",
                ),
            ),
            (
                ok(signed_with(&b64(r#"{"alg":"ES256","kid":"k1"}"#))),
                CallError::InvalidResponse(
                    "Sign's header is not a JSON object of alg, kid and typ alone",
                ),
            ),
            (
                ok(signed_with(&b64(
                    r#"{"alg":"HS256","kid":"k1","typ":"JWT"}"#,
                ))),
                CallError::InvalidResponse(
                    "Sign's header names an alg kube-apiserver does not take",
                ),
            ),
            (
                ok(signed_with(&b64(
                    r#"{"alg":"ES256","kid":"k1","typ":"at+jwt"}"#,
                ))),
                CallError::InvalidResponse("Sign's header has a typ other than JWT"),
            ),
            (
                ok(signed_with(&b64(r#"{"alg":"ES256","kid":"","typ":"JWT"}"#))),
                CallError::InvalidResponse(
                    "Sign's header has a kid that is empty or over 1024 bytes",
                ),
            ),
        ];
        for (answer, expected) in cases {
            let (outcome, _) = call(ApiVersion::V1, Rpc::Sign, answer).await;
            assert_eq!(outcome, Err(expected));
        }
    }

    #[tokio::test]
    async fn a_reset_stream_maps_as_grpc_maps_its_reason() {
        let refused = Answer {
            reset: Some(h2::Reason::REFUSED_STREAM),
            ..Answer::default()
        };
        let (outcome, _) = call(ApiVersion::V1, Rpc::Sign, refused).await;
        assert!(
            matches!(outcome, Err(CallError::Status(Code::Unavailable, _))),
            "{outcome:?}"
        );
    }

    #[test]
    fn http_statuses_without_grpc_status_map_as_grpc_says() {
        for (status, code) in [
            (400, Code::Internal),
            (401, Code::Unauthenticated),
            (403, Code::PermissionDenied),
            (404, Code::Unimplemented),
            (429, Code::Unavailable),
            (502, Code::Unavailable),
            (503, Code::Unavailable),
            (504, Code::Unavailable),
            (500, Code::Unknown),
        ] {
            let status = http::StatusCode::from_u16(status).unwrap();
            assert_eq!(code_for_http_status(status), code, "{status}");
        }
    }
}
