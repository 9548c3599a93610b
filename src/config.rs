//! Turning `signet serve` flags into a checked [`ServeConfig`]. Every configuration mistake is
//! found here, before any socket is bound, and reported as a [`ConfigError`] (exit code 64).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::cli::ServeArgs;
use crate::keyring::{KeySet, PublishedKey};
use crate::keys::{self, Algorithm, KeyError, LocalKey, SigningKey};
use crate::server::SocketAddress;
use crate::signer::MIN_MAX_TOKEN_EXPIRATION;

/// Exit code for configuration errors (BSD `EX_USAGE`).
pub const EXIT_CONFIG: u8 = 64;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("invalid --socket: {0}")]
    Socket(String),
    #[error("--max-token-expiration {0:?} is below 600s, which kube-apiserver refuses")]
    MaxTokenExpirationTooShort(Duration),
    #[error("--refresh-hint must be at least 1s")]
    RefreshHintTooShort,
    #[error("cannot read key file {path}: {source}")]
    ReadKeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {path}: {source}")]
    KeyFile { path: PathBuf, source: KeyError },
    #[error("key files {first} and {second} hold the same key (kid {kid})")]
    DuplicateKey {
        first: PathBuf,
        second: PathBuf,
        kid: String,
    },
    #[error("cannot generate the in-memory {alg} key: {source}")]
    Generate { alg: Algorithm, source: KeyError },
}

/// Where the keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// One key generated in memory at start (the zero-configuration default).
    Generated { alg: Algorithm },
    /// PEM files; the first signs.
    Files(Vec<PathBuf>),
}

/// A checked `serve` configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub socket: SocketAddress,
    pub socket_mode: u32,
    pub allowed_uids: Vec<u32>,
    pub key_source: KeySource,
    pub rsa_bits: usize,
    pub max_token_expiration: Duration,
    pub refresh_hint: Duration,
    pub shutdown_grace: Duration,
}

impl ServeConfig {
    pub fn from_args(args: &ServeArgs) -> Result<Self, ConfigError> {
        let socket = SocketAddress::parse(&args.socket).map_err(ConfigError::Socket)?;
        if args.max_token_expiration < MIN_MAX_TOKEN_EXPIRATION {
            return Err(ConfigError::MaxTokenExpirationTooShort(
                args.max_token_expiration,
            ));
        }
        if args.refresh_hint < Duration::from_secs(1) {
            return Err(ConfigError::RefreshHintTooShort);
        }
        let key_source = if args.key_files.is_empty() {
            KeySource::Generated {
                alg: args.generate_alg,
            }
        } else {
            KeySource::Files(args.key_files.clone())
        };
        Ok(Self {
            socket,
            socket_mode: args.socket_mode,
            allowed_uids: args.allowed_uids.clone(),
            key_source,
            rsa_bits: args.rsa_bits,
            max_token_expiration: args.max_token_expiration,
            refresh_hint: args.refresh_hint,
            shutdown_grace: args.shutdown_grace,
        })
    }

    /// Loads or generates the keys: the first signs, all are published.
    pub fn load_keys(&self) -> Result<KeySet, ConfigError> {
        let keys = match &self.key_source {
            KeySource::Generated { alg } => {
                let (key, _pkcs8) = LocalKey::generate(*alg, self.rsa_bits)
                    .map_err(|source| ConfigError::Generate { alg: *alg, source })?;
                vec![SigningKey::new(Arc::new(key))]
            }
            KeySource::Files(paths) => {
                let mut keys: Vec<(PathBuf, SigningKey)> = Vec::with_capacity(paths.len());
                for path in paths {
                    let key = load_key_file(path)?;
                    if let Some((first, _)) = keys.iter().find(|(_, k)| k.kid() == key.kid()) {
                        return Err(ConfigError::DuplicateKey {
                            first: first.clone(),
                            second: path.clone(),
                            kid: key.kid().to_owned(),
                        });
                    }
                    keys.push((path.clone(), key));
                }
                keys.into_iter().map(|(_, key)| key).collect()
            }
        };
        let published = keys.iter().map(PublishedKey::of).collect();
        let signing = keys.into_iter().next();
        // Unique kids were checked above, and the signing key is the first published one.
        Ok(KeySet::new(signing, published, SystemTime::now()).expect("key set invariants hold"))
    }
}

/// Reads one PEM private key file into a signing key.
pub fn load_key_file(path: &Path) -> Result<SigningKey, ConfigError> {
    let pem = zeroize::Zeroizing::new(std::fs::read(path).map_err(|source| {
        ConfigError::ReadKeyFile {
            path: path.to_owned(),
            source,
        }
    })?);
    let key_error = |source| ConfigError::KeyFile {
        path: path.to_owned(),
        source,
    };
    let pkcs8 = keys::pkcs8_from_pem(&pem).map_err(key_error)?;
    let key = LocalKey::from_pkcs8(&pkcs8).map_err(key_error)?;
    Ok(SigningKey::new(Arc::new(key)))
}
