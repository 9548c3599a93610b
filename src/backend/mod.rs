//! Where private keys live and how they sign: the [`KeyBackend`] trait and its implementations.
//!
//! A backend stores keys and signs with them. It never decides anything about rotation: which
//! key signs, when a key is published or removed is the business of [`crate::lifecycle`], which
//! drives every backend through this trait alone. A backend also never hands out private key
//! bytes: what leaves it is a [`SigningKey`] (kid, algorithm, public key, `sign`).
//!
//! Implementations today:
//! - [`MemoryBackend`]: keys generated or imported into this process's memory and lost when it
//!   exits (the zero-configuration default);
//! - [`DirectoryBackend`]: one PEM PKCS#8 file per key in a directory (`--key-dir`), mode 0600,
//!   written atomically.
//!
//! # Plugging in another backend (PKCS#11, Vault/OpenBao transit, a cloud KMS)
//! Implement [`KeyBackend`] for a type that talks to the device or service, and give the
//! [`SigningKey`]s it returns a [`crate::keys::JwsSigner`] that calls the device per signature
//! (returning JWS-form signatures: raw `R‖S` for ECDSA, so a KMS's DER output is converted
//! there). `import` may refuse with [`StoreError::Unsupported`] when the device cannot take
//! key material. Run the shared suite in [`conformance`] against it. The methods are blocking:
//! the lifecycle calls them from `tokio::task::spawn_blocking`, never on an executor thread.
//! The lifecycle *state* (which key is in which state) is stored separately, behind
//! [`crate::lifecycle::StateStore`], so a replicated state store can pair with any backend.

pub mod conformance;
mod directory;
mod fs;
mod memory;

use std::fmt;
use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::keys::{Algorithm, KeyError, SigningKey};

pub use directory::DirectoryBackend;
pub use memory::MemoryBackend;

pub(crate) use fs::{check_private_mode, read_private, write_atomic, Symlinks};

/// Reads a private key file given by an operator (e.g. `sa.key` to import), refusing one that
/// group or other users can read: such a key may already be compromised, and importing it
/// would hide that.
pub fn read_private_key_file(path: &std::path::Path) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    fs::read_private(path, fs::Symlinks::Follow)
}

/// Reads a key file given to `serve --key-file`, with the same 1 MiB bound, whatever its mode:
/// a readable key file is warned about there, as kube-apiserver does for its own
/// `--service-account-key-file`, not refused.
pub fn read_key_file_any_mode(path: &std::path::Path) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    fs::read_any_mode(path)
}

/// Stores keys and signs with them. Blocking; object-safe so backends are chosen at run time
/// (`Arc<dyn KeyBackend>`).
pub trait KeyBackend: Send + Sync + fmt::Debug {
    /// A short name for logs and errors: `memory`, `directory`, `pkcs11`, ...
    fn name(&self) -> &'static str;

    /// Creates and stores a new key. RSA uses `rsa_bits` (2048, 3072 or 4096).
    /// Slow for RSA: call it off the async executor.
    fn generate(&self, alg: Algorithm, rsa_bits: usize) -> Result<SigningKey, StoreError>;

    /// Stores an existing private key given as PKCS#8 DER, named with the kube-apiserver kid
    /// rule. Storing a key whose kid is already stored replaces it by the same key (a kid
    /// names exactly one public key), so a repeated import after a crash is harmless.
    fn import(&self, pkcs8_der: &[u8]) -> Result<SigningKey, StoreError>;

    /// The stored key named `kid`, or [`StoreError::KeyNotFound`].
    fn load(&self, kid: &str) -> Result<SigningKey, StoreError>;

    /// The kids of every stored key, in no particular order. Cheap: keys are not loaded.
    fn kids(&self) -> Result<Vec<String>, StoreError>;

    /// Every stored key, in no particular order.
    fn load_all(&self) -> Result<Vec<SigningKey>, StoreError> {
        self.kids()?.iter().map(|kid| self.load(kid)).collect()
    }

    /// Deletes the key named `kid` for good, or [`StoreError::KeyNotFound`].
    fn delete(&self, kid: &str) -> Result<(), StoreError>;

    /// Where the key `kid` lives, for messages (a file path, a PKCS#11 label, a KMS key ARN).
    fn key_location(&self, kid: &str) -> String {
        format!("{} backend key {kid}", self.name())
    }
}

/// What went wrong storing or loading keys or lifecycle state. Every message names the file
/// (or store) and says how to fix it; none carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file was renamed into place (every reader, and a restart, sees it), but the fsync
    /// of its directory failed, so the rename may not survive a power loss.
    #[error("{path} was replaced, but the fsync of its directory failed ({source}): the new file may not survive a power loss")]
    NotDurable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} has mode {mode:04o}, which lets other users read it; fix: chmod {fix:04o} {path}"
    )]
    InsecurePermissions { path: PathBuf, mode: u32, fix: u32 },
    #[error("{path} is owned by uid {owner}, not by the user signet runs as (uid {us}): its owner could replace the keys in it; fix: chown {us} {path}")]
    ForeignOwner { path: PathBuf, owner: u32, us: u32 },
    #[error("{path} is larger than {limit} bytes: it is not a key or state file signet wrote")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error(
        "{dir} holds no key store (no {file}); create one with `signet keys init --key-dir {dir}`"
    )]
    NotInitialized { dir: PathBuf, file: &'static str },
    #[error(
        "{dir} is not empty; `signet keys init` only creates a store in a new or empty directory{}",
        if *.only_keys { " (it holds key files and no state, as an interrupted `keys init` leaves it: if nothing else created them, delete them and run init again)" } else { "" }
    )]
    NotEmpty { dir: PathBuf, only_keys: bool },
    #[error("another signet process uses the key store {dir} (it holds {lock}); stop it, or change a running server's keys with `signet keys ... --admin-socket`")]
    Locked { dir: PathBuf, lock: PathBuf },
    #[error("no stored key has kid {0}")]
    KeyNotFound(String),
    #[error("kid {0:?} cannot name a key file: a stored kid is base64url (A-Z a-z 0-9 - _)")]
    InvalidKid(String),
    #[error("key file {path}: {source}")]
    KeyFile { path: PathBuf, source: KeyError },
    #[error("key file {path} holds the key with kid {actual}, not {expected}; a kid must name exactly one key: restore the right file from backup")]
    KidMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("state file {path} names key {kid}, but its key ({key_file}) is missing; restore it from backup (or, if the key is truly gone and no live token uses it, delete its entry from {path})")]
    MissingKeyFile {
        path: PathBuf,
        kid: String,
        key_file: String,
    },
    #[error("state file {path} is not valid: {reason}; fix the file or restore it from backup")]
    CorruptState { path: PathBuf, reason: String },
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("the {backend} backend does not support {operation}")]
    Unsupported {
        backend: &'static str,
        operation: &'static str,
    },
}

/// PEM (`PRIVATE KEY`) text of a PKCS#8 DER key, for backends that keep PEM files.
pub fn pkcs8_to_pem(pkcs8_der: &[u8]) -> Result<Zeroizing<String>, KeyError> {
    pem_rfc7468::encode_string("PRIVATE KEY", pem_rfc7468::LineEnding::LF, pkcs8_der)
        .map(Zeroizing::new)
        .map_err(|_| KeyError::Malformed("cannot encode the key as PEM".into()))
}
