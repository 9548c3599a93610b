//! Turning `signet serve` flags into a checked [`ServeConfig`]. Every configuration mistake is
//! found here, before any socket is bound, and reported as a [`ConfigError`] (exit code 64).

use std::net::SocketAddr;
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
    #[error("--http-listen needs --issuer: the issuer URL the discovery document names (kube-apiserver's --service-account-issuer)")]
    IssuerRequired,
    #[error("invalid --issuer {url:?}: {reason}")]
    Issuer { url: String, reason: &'static str },
    #[error("invalid --jwks-uri {url:?}: {reason}")]
    JwksUri { url: String, reason: &'static str },
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
    /// The OIDC discovery documents over HTTP, when `--http-listen` is given.
    pub oidc_http: Option<OidcHttpConfig>,
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
        let oidc_http = args
            .http_listen
            .map(|listen| {
                OidcHttpConfig::from_args(listen, args.issuer.as_deref(), args.jwks_uri.as_deref())
            })
            .transpose()?;
        Ok(Self {
            socket,
            socket_mode: args.socket_mode,
            allowed_uids: args.allowed_uids.clone(),
            key_source,
            rsa_bits: args.rsa_bits,
            max_token_expiration: args.max_token_expiration,
            refresh_hint: args.refresh_hint,
            shutdown_grace: args.shutdown_grace,
            oidc_http,
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

/// Where and under which names the OIDC discovery documents are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcHttpConfig {
    pub listen: SocketAddr,
    /// `issuer` in the discovery document, verbatim.
    pub issuer: String,
    /// `jwks_uri` in the discovery document.
    pub jwks_uri: String,
}

impl OidcHttpConfig {
    /// Checks the URLs as kube-apiserver does before it serves these documents: the issuer must
    /// be https with no query or fragment, the JWKS URI https.
    pub fn from_args(
        listen: SocketAddr,
        issuer: Option<&str>,
        jwks_uri: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let issuer = issuer.ok_or(ConfigError::IssuerRequired)?;
        check_https_url(issuer, true).map_err(|reason| ConfigError::Issuer {
            url: issuer.to_owned(),
            reason,
        })?;
        let jwks_uri = match jwks_uri {
            Some(uri) => {
                check_https_url(uri, false).map_err(|reason| ConfigError::JwksUri {
                    url: uri.to_owned(),
                    reason,
                })?;
                uri.to_owned()
            }
            None => format!("{}/openid/v1/jwks", issuer.trim_end_matches('/')),
        };
        Ok(Self {
            listen,
            issuer: issuer.to_owned(),
            jwks_uri,
        })
    }
}

/// An absolute https URL with a host; for an issuer, also without query or fragment.
fn check_https_url(url: &str, issuer: bool) -> Result<(), &'static str> {
    // `http::Uri` drops a fragment silently, so look for one first.
    if issuer && url.contains('#') {
        return Err("an issuer URL may not include a fragment");
    }
    let uri: http::Uri = url.parse().map_err(|_| "not a valid absolute URL")?;
    if !uri
        .scheme_str()
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https"))
    {
        return Err("the URL must use the https scheme");
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("the URL has no host");
    }
    if issuer && uri.query().is_some_and(|query| !query.is_empty()) {
        return Err("an issuer URL may not include a query");
    }
    Ok(())
}
