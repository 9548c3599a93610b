//! The Unix socket kube-apiserver dials: address parsing with the apiserver's own rules,
//! stale-socket recovery without stealing a live one, a socket file that is never
//! world-accessible, peer checks for abstract sockets, and removal on exit.

use std::fmt;
use std::io;
use std::os::unix::fs::{
    DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::Stream;
use tokio::net::{UnixListener, UnixStream};

/// Longest socket path the kernel takes (`sun_path` is 108 bytes with the NUL).
const MAX_PATH_LEN: usize = 107;

/// Where signet listens, in the forms `--service-account-signing-endpoint` accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketAddress {
    /// An absolute filesystem path.
    Path(PathBuf),
    /// A Linux abstract socket name, written `@name`.
    Abstract(String),
}

impl SocketAddress {
    /// Parses with kube-apiserver's rules: `@` followed by dot-separated segments of
    /// `[A-Za-z0-9_-]`, or an absolute path without spaces.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(name) = s.strip_prefix('@') {
            let valid_segment = |seg: &str| {
                !seg.is_empty()
                    && seg
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            };
            if !name.split('.').all(valid_segment) {
                return Err(format!(
                    "{s:?} is not a valid abstract socket name: use @ and dot-separated segments of letters, digits, '_' and '-'"
                ));
            }
            // The name fills `sun_path` after its leading NUL, with no terminator: up to 107
            // bytes, as Go's dialer (and so kube-apiserver) accepts.
            if name.len() > MAX_PATH_LEN {
                return Err(format!("abstract socket name {s:?} is too long"));
            }
            return Ok(SocketAddress::Abstract(name.to_owned()));
        }
        if !s.starts_with('/') {
            return Err(format!("{s:?} is neither an absolute path nor an @abstract name (kube-apiserver needs one of them)"));
        }
        if s.contains(char::is_whitespace) {
            return Err(format!(
                "{s:?} contains white space, which kube-apiserver does not accept"
            ));
        }
        if s.len() > MAX_PATH_LEN {
            return Err(format!(
                "{s:?} is longer than the {MAX_PATH_LEN} bytes a Unix socket path may have"
            ));
        }
        if s.ends_with('/') {
            return Err(format!("{s:?} names a directory, not a socket"));
        }
        Ok(SocketAddress::Path(PathBuf::from(s)))
    }
}

impl SocketAddress {
    /// Connects to this address as a client (the admin CLI, `signet verify`, the load tool).
    pub async fn connect(&self) -> io::Result<UnixStream> {
        match self {
            SocketAddress::Path(path) => UnixStream::connect(path).await,
            SocketAddress::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt as _;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
                // std has no async abstract connect; a local connect does not block for long.
                let stream = std::os::unix::net::UnixStream::connect_addr(&addr)?;
                stream.set_nonblocking(true)?;
                UnixStream::from_std(stream)
            }
        }
    }
}

impl fmt::Display for SocketAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketAddress::Path(path) => write!(f, "{}", path.display()),
            SocketAddress::Abstract(name) => write!(f, "@{name}"),
        }
    }
}

/// Why the socket could not be bound.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SocketError {
    #[error("{0} is in use by another live process; refusing to take it over (stop that process or pick another --socket)")]
    InUse(SocketAddress),
    #[error("{} exists and is not a socket; refusing to replace it", .0.display())]
    NotASocket(PathBuf),
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_error<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SocketError + 'a {
    move |source| SocketError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Which peers may talk to us. File sockets rely on file permissions; an abstract socket has
/// none, so its peers are checked by UID (SO_PEERCRED), as KEP-740 expects.
#[derive(Debug, Clone)]
struct PeerPolicy {
    allowed_uids: Option<Arc<[u32]>>,
    refusals: RefusalLog,
}

impl PeerPolicy {
    fn new(allowed_uids: Option<Arc<[u32]>>) -> Self {
        Self {
            allowed_uids,
            refusals: RefusalLog::default(),
        }
    }

    fn admits(&mut self, stream: &UnixStream) -> bool {
        let Some(allowed) = &self.allowed_uids else {
            return true;
        };
        let cred = stream.peer_cred();
        if cred
            .as_ref()
            .is_ok_and(|cred| allowed.contains(&cred.uid()))
        {
            return true;
        }
        if let Some(unlogged) = self.refusals.on_refusal(Instant::now()) {
            match cred {
                Ok(cred) => {
                    tracing::warn!(uid = cred.uid(), pid = ?cred.pid(), refused_unlogged = unlogged, "refused connection from a UID that is not allowed");
                }
                Err(err) => {
                    tracing::warn!(error = %err, refused_unlogged = unlogged, "refused connection whose peer credentials cannot be read");
                }
            }
        }
        false
    }
}

/// Refused peers are logged at most once per [`REFUSAL_LOG_INTERVAL`], with how many were
/// refused unlogged since the last line: any local user may connect to an abstract socket as
/// often as it likes, and must not be able to flood the log.
#[derive(Debug, Clone, Default)]
struct RefusalLog {
    last_logged: Option<Instant>,
    unlogged: u64,
}

const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

impl RefusalLog {
    /// Whether a refusal at `now` is logged: `Some` with the count of refusals left unlogged
    /// since the last line, or `None` (counted, not logged).
    fn on_refusal(&mut self, now: Instant) -> Option<u64> {
        match self.last_logged {
            Some(at) if now.saturating_duration_since(at) < REFUSAL_LOG_INTERVAL => {
                self.unlogged += 1;
                None
            }
            _ => {
                self.last_logged = Some(now);
                Some(std::mem::take(&mut self.unlogged))
            }
        }
    }
}

/// The socket file this process created; removed on drop, but only while it is still ours
/// (same device and inode), so a successor's socket is never deleted.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if meta.dev() == self.dev && meta.ino() == self.ino {
                if let Err(err) = std::fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), error = %err, "could not remove the socket file");
                }
            }
        }
    }
}

/// A bound, listening socket ready to serve.
#[derive(Debug)]
pub struct Listener {
    inner: UnixListener,
    address: SocketAddress,
    peers: PeerPolicy,
    file: Option<SocketFile>,
}

impl Listener {
    /// Binds `address`. A file socket is created with the permission bits `mode`; a stale socket
    /// left by a crash is replaced, a live one is not. For an abstract socket, peers other
    /// than our own UID, root and `allowed_uids` are turned away.
    pub fn bind(
        address: &SocketAddress,
        mode: u32,
        allowed_uids: &[u32],
    ) -> Result<Self, SocketError> {
        match address {
            SocketAddress::Path(path) => bind_path(path, mode),
            SocketAddress::Abstract(name) => bind_abstract(name, allowed_uids),
        }
    }

    pub fn address(&self) -> &SocketAddress {
        &self.address
    }

    /// Splits into the stream of admitted connections and the guard that removes the file.
    pub fn into_incoming(
        self,
    ) -> (
        impl Stream<Item = io::Result<UnixStream>>,
        Option<SocketFile>,
    ) {
        let stream = futures_util::stream::unfold(
            (self.inner, self.peers),
            |(listener, mut peers)| async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) if peers.admits(&stream) => {
                            return Some((Ok(stream), (listener, peers)))
                        }
                        Ok(_) => continue,
                        Err(err) => {
                            // Typically EMFILE: back off instead of spinning, keep serving.
                            tracing::warn!(error = %err, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            },
        );
        (stream, self.file)
    }
}

fn bind_path(path: &Path, mode: u32) -> Result<Listener, SocketError> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    if !parent.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(parent)
            .map_err(io_error("cannot create the socket directory", parent))?;
        // mkdir(2) narrows the mode by the umask: set it, so that `--socket-mode 0660` admits
        // the group whatever umask signet was started with.
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o750)).map_err(
            io_error("cannot set the mode of the socket directory", parent),
        )?;
    }
    // Two signets started at once over a stale socket would race: each probes the stale file,
    // one unlinks it and binds, then the other unlinks that new socket and binds its own, and
    // the first serves on a socket nobody can reach. An exclusive lock on the directory, held
    // from the probe to the bind, orders them: the second finds a live socket. It is held for
    // a few system calls only (the probe does not block).
    let _directory_lock = lock_directory(parent);
    remove_stale(path)?;

    // bind(2) creates the socket file with the mode 0777 & !umask. With the umask set to the
    // complement of `mode` for the bind, the file has its final mode the instant it exists, so
    // no chmod follows: a chmod by path would follow a symbolic link put in the socket's place
    // meanwhile. The umask is process-wide, but nothing else writes files then: the key store
    // is loaded before and the rotation task starts after the sockets are bound, and signet
    // creates its files owner-only (0600), which no umask widens.
    let bind_umask = rustix::fs::Mode::from_raw_mode(0o777 & !mode);
    let previous = rustix::process::umask(bind_umask);
    let bound = std::os::unix::net::UnixListener::bind(path);
    rustix::process::umask(previous);
    let std_listener = bound.map_err(|err| {
        if err.kind() == io::ErrorKind::AddrInUse {
            SocketError::InUse(SocketAddress::Path(path.to_owned()))
        } else {
            io_error("cannot bind", path)(err)
        }
    })?;
    let meta = std::fs::symlink_metadata(path).map_err(io_error("cannot stat", path))?;
    let file = SocketFile {
        path: path.to_owned(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    Ok(Listener {
        inner: into_tokio(std_listener, path)?,
        address: SocketAddress::Path(path.to_owned()),
        peers: PeerPolicy::new(None),
        file: Some(file),
    })
}

/// An exclusive `flock` on `dir`, released when the returned file is dropped. `None` when the
/// directory cannot be opened for reading (one signet may write in but not list): the bind
/// then goes on unordered, as it did before the lock.
fn lock_directory(dir: &Path) -> Option<std::fs::File> {
    let file = std::fs::File::open(dir).ok()?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).ok()?;
    Some(file)
}

/// Removes a socket file nobody listens on; refuses a live socket or a non-socket file.
fn remove_stale(path: &Path) -> Result<(), SocketError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(io_error("cannot stat", path)(err)),
    };
    if !meta.file_type().is_socket() {
        return Err(SocketError::NotASocket(path.to_owned()));
    }
    match probe(path) {
        // EAGAIN: a live server whose queue of connections not yet accepted is full (a
        // blocking connect would wait for it, and this start would hang).
        Ok(()) | Err(rustix::io::Errno::AGAIN) => {
            Err(SocketError::InUse(SocketAddress::Path(path.to_owned())))
        }
        Err(rustix::io::Errno::CONNREFUSED) => {
            tracing::info!(path = %path.display(), "removing a stale socket left by an earlier run");
            std::fs::remove_file(path).map_err(io_error("cannot remove the stale socket", path))
        }
        Err(err) => Err(io_error("cannot probe the existing socket", path)(
            err.into(),
        )),
    }
}

/// Connects to the socket at `path` without waiting: `Ok` when a server accepted the
/// connection into its queue.
fn probe(path: &Path) -> Result<(), rustix::io::Errno> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let socket = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::connect(&socket, &SocketAddrUnix::new(path)?)
}

fn bind_abstract(name: &str, allowed_uids: &[u32]) -> Result<Listener, SocketError> {
    use std::os::linux::net::SocketAddrExt as _;
    let display = PathBuf::from(format!("@{name}"));
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(io_error("invalid abstract socket name", &display))?;
    let std_listener = std::os::unix::net::UnixListener::bind_addr(&addr).map_err(|err| {
        if err.kind() == io::ErrorKind::AddrInUse {
            SocketError::InUse(SocketAddress::Abstract(name.to_owned()))
        } else {
            io_error("cannot bind", &display)(err)
        }
    })?;
    let own_uid = rustix::process::getuid().as_raw();
    let mut allowed: Vec<u32> = vec![own_uid, 0];
    allowed.extend_from_slice(allowed_uids);
    Ok(Listener {
        inner: into_tokio(std_listener, &display)?,
        address: SocketAddress::Abstract(name.to_owned()),
        peers: PeerPolicy::new(Some(allowed.into())),
        file: None,
    })
}

fn into_tokio(
    listener: std::os::unix::net::UnixListener,
    path: &Path,
) -> Result<UnixListener, SocketError> {
    listener
        .set_nonblocking(true)
        .map_err(io_error("cannot make non-blocking", path))?;
    UnixListener::from_std(listener).map_err(io_error("cannot register with the runtime", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_peers_are_logged_once_a_second_with_a_count_of_the_rest() {
        let mut log = RefusalLog::default();
        let start = Instant::now();
        assert_eq!(log.on_refusal(start), Some(0));
        for ms in [1, 10, 500, 999] {
            assert_eq!(log.on_refusal(start + Duration::from_millis(ms)), None);
        }
        assert_eq!(log.on_refusal(start + Duration::from_secs(1)), Some(4));
        assert_eq!(log.on_refusal(start + Duration::from_millis(1500)), None);
        assert_eq!(log.on_refusal(start + Duration::from_secs(5)), Some(1));
    }

    #[test]
    fn parses_the_endpoint_forms_kube_apiserver_accepts() {
        assert_eq!(
            SocketAddress::parse("@ebc.sock").unwrap(),
            SocketAddress::Abstract("ebc.sock".into())
        );
        assert!(SocketAddress::parse("@ebc.eng.hij").is_ok());
        assert!(SocketAddress::parse("/e/an_b-d/efg").is_ok());
        for bad in [
            "@abc@",
            "@a b",
            "@",
            "@a..b",
            "abc",
            "/e /xyz /efg",
            "/tmp/",
        ] {
            assert!(
                SocketAddress::parse(bad).is_err(),
                "{bad} should be refused"
            );
        }
        assert!(SocketAddress::parse(&format!("/{}", "a".repeat(200))).is_err());
    }

    #[test]
    fn the_longest_abstract_name_binds_and_one_byte_more_is_refused() {
        let name = format!("signet-test-{}-", std::process::id());
        let longest = format!("{name}{}", "a".repeat(MAX_PATH_LEN - name.len()));
        assert_eq!(longest.len(), 107);
        let address = SocketAddress::parse(&format!("@{longest}")).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let listener = Listener::bind(&address, 0o600, &[]).expect("bind 107 bytes");
        drop(listener);
        assert!(SocketAddress::parse(&format!("@{longest}a")).is_err());
    }
}
