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

use bytes::{Buf as _, Bytes, BytesMut};
use tonic::codegen::http;
use tonic::Code;

use super::{ApiVersion, CallError, Rpc};
use crate::api::v1::{
    FetchKeysRequest, FetchKeysResponse, MetadataRequest, MetadataResponse, SignJwtRequest,
    SignJwtResponse,
};

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
    fn new(api: ApiVersion, method: &str, message: &impl prost::Message) -> Self {
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
}

impl Client {
    pub(crate) fn new(send: Sender, api: ApiVersion, claims: &str) -> Self {
        let sign = SignJwtRequest {
            claims: claims.to_owned(),
        };
        // Indexed by `Rpc::index`. The v1alpha1 messages are the v1 messages on the wire.
        let prepared = Rpc::ALL.map(|rpc| match rpc {
            Rpc::Sign => Prepared::new(api, "Sign", &sign),
            Rpc::FetchKeys => Prepared::new(api, "FetchKeys", &FetchKeysRequest {}),
            Rpc::Metadata => Prepared::new(api, "Metadata", &MetadataRequest {}),
        });
        Self { send, prepared }
    }

    /// Makes one call and checks its answer.
    pub(crate) async fn call(&mut self, rpc: Rpc) -> Result<(), CallError> {
        let message = self.exchange(rpc).await?;
        match rpc {
            Rpc::Sign => {
                let response = decode::<SignJwtResponse>(message)?;
                if response.header.is_empty() || response.signature.is_empty() {
                    return Err(CallError::InvalidResponse(
                        "Sign returned an empty header or signature",
                    ));
                }
            }
            Rpc::FetchKeys => {
                if decode::<FetchKeysResponse>(message)?.keys.is_empty() {
                    return Err(CallError::InvalidResponse("FetchKeys returned no keys"));
                }
            }
            Rpc::Metadata => {
                decode::<MetadataResponse>(message)?;
            }
        }
        Ok(())
    }

    /// Sends the prepared request and returns the one message of a successful answer.
    async fn exchange(&mut self, rpc: Rpc) -> Result<Bytes, CallError> {
        let prepared = &self.prepared[rpc.index()];
        std::future::poll_fn(|cx| self.send.poll_ready(cx))
            .await
            .map_err(transport)?;
        let (response, mut request_body) = self
            .send
            .send_request(prepared.head.clone(), false)
            .map_err(transport)?;
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
            .is_some_and(|value| value.starts_with("application/grpc"));
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
            if received.len() + chunk.len() > MAX_RESPONSE {
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

/// A failure below gRPC (the connection, or a stream reset), mapped to the code gRPC clients
/// give it (an `h2` reset reason maps as the gRPC HTTP/2 spec says).
fn transport(err: h2::Error) -> CallError {
    tonic::Status::from_error(Box::new(err)).into()
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
        );
        let shown = format!("{sign:?}");
        assert!(!shown.contains(claims), "{shown}");
        assert!(shown.contains("/v1.ExternalJWTSigner/Sign"), "{shown}");
        assert!(shown.contains(&sign.message.len().to_string()), "{shown}");
    }

    fn signed() -> Bytes {
        framed(&SignJwtResponse {
            header: "eyJhbGciOiJFUzI1NiJ9".into(),
            signature: "c2ln".into(),
        })
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
        let mut client = Client::new(send, api, "Y2xhaW1z");
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
            // The whole message in one DATA frame, which ends the stream.
            assert_eq!(seen.data_frames, 1);
            let request = SignJwtRequest::decode(unframe(seen.message).unwrap()).unwrap();
            assert_eq!(request.claims, "Y2xhaW1z");
        }
    }

    #[tokio::test]
    async fn fetch_keys_and_metadata_answers_are_checked() {
        let keys = framed(&FetchKeysResponse {
            keys: vec![crate::api::v1::Key {
                key_id: "k".into(),
                key: Bytes::from_static(&[1]),
                exclude_from_oidc_discovery: false,
            }],
            data_timestamp: None,
            refresh_hint_seconds: 60,
        });
        let (outcome, seen) = call(ApiVersion::V1, Rpc::FetchKeys, ok(keys)).await;
        assert_eq!(outcome, Ok(()));
        assert_eq!(seen.head.uri.path(), "/v1.ExternalJWTSigner/FetchKeys");

        let no_keys = framed(&FetchKeysResponse::default());
        let (outcome, _) = call(ApiVersion::V1, Rpc::FetchKeys, ok(no_keys)).await;
        assert_eq!(
            outcome,
            Err(CallError::InvalidResponse("FetchKeys returned no keys"))
        );

        let metadata = framed(&MetadataResponse {
            max_token_expiration_seconds: 3600,
        });
        let (outcome, seen) = call(ApiVersion::V1alpha1, Rpc::Metadata, ok(metadata)).await;
        assert_eq!(outcome, Ok(()));
        assert_eq!(seen.head.uri.path(), "/v1alpha1.ExternalJWTSigner/Metadata");
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
                ok(framed(&SignJwtResponse::default())),
                CallError::InvalidResponse("Sign returned an empty header or signature"),
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
