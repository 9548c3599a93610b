//! The admin socket's client, as `signet keys ...` uses it: connect (with an error that tells
//! the operator what is wrong), then one call per command.

use std::io;
use std::sync::{Arc, Mutex};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::Status;

use super::v1::key_admin_client::KeyAdminClient;
use crate::server::SocketAddress;

/// Why an admin command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("cannot connect to the admin socket {socket}: is signet serve running? ({source})")]
    NotRunning {
        socket: SocketAddress,
        source: io::Error,
    },
    #[error("cannot connect to the admin socket {socket}: permission denied (it is owner-only, mode 0600: run this as the user signet serve runs as)")]
    PermissionDenied { socket: SocketAddress },
    #[error("cannot connect to the admin socket {socket}: {source}")]
    Connect {
        socket: SocketAddress,
        source: io::Error,
    },
    #[error("admin socket {socket}: {source}")]
    Transport {
        socket: SocketAddress,
        source: tonic::transport::Error,
    },
    /// The server refused or failed the call; its message is shown as is.
    #[error("{}", call_message(.0))]
    Call(#[from] Status),
}

/// The server's own message; a bare code when it sent none (e.g. an older server that lacks
/// the call answers UNIMPLEMENTED without text).
fn call_message(status: &Status) -> String {
    if status.message().is_empty() {
        format!("the admin API answered {:?}", status.code())
    } else {
        status.message().to_owned()
    }
}

/// A connected `KeyAdmin` client.
#[derive(Debug, Clone)]
pub struct AdminClient {
    inner: KeyAdminClient<Channel>,
}

impl AdminClient {
    /// Connects to the admin socket at `socket`.
    pub async fn connect(socket: &SocketAddress) -> Result<Self, ClientError> {
        // Connect once by hand so a missing server gets a plain answer, not a transport error.
        let first = socket
            .connect()
            .await
            .map_err(|source| match source.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                    ClientError::NotRunning {
                        socket: socket.clone(),
                        source,
                    }
                }
                io::ErrorKind::PermissionDenied => ClientError::PermissionDenied {
                    socket: socket.clone(),
                },
                _ => ClientError::Connect {
                    socket: socket.clone(),
                    source,
                },
            })?;
        let first = Arc::new(Mutex::new(Some(first)));
        let address = socket.clone();
        // The URI is required by the HTTP/2 layer but never resolved: the connector below
        // hands over the Unix stream.
        let channel = Endpoint::from_static("http://signet-admin.invalid")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let first = first.lock().ok().and_then(|mut first| first.take());
                let address = address.clone();
                async move {
                    let stream = match first {
                        Some(stream) => stream,
                        None => address.connect().await?,
                    };
                    Ok::<_, io::Error>(TokioIo::new(stream))
                }
            }))
            .await
            .map_err(|source| ClientError::Transport {
                socket: socket.clone(),
                source,
            })?;
        Ok(Self {
            inner: KeyAdminClient::new(channel),
        })
    }

    /// The generated client, for the calls themselves.
    pub fn rpc(&mut self) -> &mut KeyAdminClient<Channel> {
        &mut self.inner
    }
}
