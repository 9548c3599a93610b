//! `signet verify`: an operator's check that a token verifies against the keys a running signer
//! publishes. The keys come from FetchKeys over the signer's socket, exactly what kube-apiserver
//! sees; the signature and time claims are checked by jsonwebtoken, an implementation
//! independent of signet's signing code. Like the apiserver, every published key verifies,
//! including keys excluded from OIDC discovery.
//!
//! It prints the header's kid and alg and the verified claims, and must never print, log or
//! keep the token or its signature: error messages describe what failed, not the input.

use std::io::{Read as _, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use der::Decode as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, Validation};
use tonic::transport::{Endpoint, Uri};

use crate::api::v1::external_jwt_signer_client::ExternalJwtSignerClient;
use crate::api::v1::{FetchKeysRequest, Key};
use crate::cli::VerifyArgs;
use crate::keys::Algorithm;
use crate::server::SocketAddress;

/// Exit code when the token does not verify.
pub const EXIT_INVALID: u8 = 1;
/// Exit code when the token could not be checked (signer unreachable, unsupported algorithm,
/// unreadable token file).
pub const EXIT_CANNOT_CHECK: u8 = 2;

/// How long to wait for the signer to accept and answer FetchKeys.
const SIGNER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a token was not verified. No variant holds token bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    #[error("cannot read the token file {path}: {source}")]
    ReadToken {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot reach the signer at {socket}: {reason}")]
    Connect { socket: String, reason: String },
    #[error("FetchKeys failed: {code:?}: {message}")]
    FetchKeys { code: tonic::Code, message: String },
    #[error("the token is not a compact JWS (header.payload.signature with a base64url JSON header carrying alg and kid)")]
    Malformed,
    #[error("{path} holds over {} bytes: not a token", MAX_TOKEN_BYTES)]
    TokenTooLarge { path: std::path::PathBuf },
    // The token's own strings are quoted with escapes: a crafted header cannot write control
    // characters to the operator's terminal.
    #[error("alg {0:?} is not one kube-apiserver accepts (RS256, ES256, ES384, ES512)")]
    UnknownAlgorithm(String),
    #[error("{0} tokens cannot be checked by `signet verify` (jsonwebtoken has no ES512); the signer's FetchKeys still lists the key")]
    Unsupported(Algorithm),
    #[error("kid {0:?} is not among the keys the signer publishes")]
    UnknownKid(String),
    #[error("the token does not verify with key {kid}: {reason}")]
    Invalid { kid: String, reason: String },
}

impl VerifyError {
    fn exit_code(&self) -> u8 {
        match self {
            VerifyError::Malformed
            | VerifyError::TokenTooLarge { .. }
            | VerifyError::UnknownAlgorithm(_)
            | VerifyError::UnknownKid(_)
            | VerifyError::Invalid { .. } => EXIT_INVALID,
            VerifyError::ReadToken { .. }
            | VerifyError::Connect { .. }
            | VerifyError::FetchKeys { .. }
            | VerifyError::Unsupported(_) => EXIT_CANNOT_CHECK,
        }
    }
}

/// What a relying party would additionally insist on.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    /// Any one of these must be in `aud`; empty means `aud` is not checked.
    pub audiences: Vec<String>,
    pub issuer: Option<String>,
    /// Check the signature and other claims of an expired (or not yet valid) token.
    pub allow_expired: bool,
}

/// A verified token. Its Debug leaves out the claims (printed on purpose by `signet verify`
/// only).
#[derive(Clone)]
pub struct Verified {
    pub kid: String,
    pub alg: Algorithm,
    /// The key verifies tokens but is left out of the OIDC documents.
    pub excluded_from_oidc_discovery: bool,
    pub claims: serde_json::Value,
}

impl std::fmt::Debug for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verified")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field(
                "excluded_from_oidc_discovery",
                &self.excluded_from_oidc_discovery,
            )
            .finish_non_exhaustive()
    }
}

/// Runs `signet verify` and prints the outcome: the report on stdout, an error on stderr.
pub async fn run(args: &VerifyArgs) -> ExitCode {
    if !args.unexpected.is_empty() {
        eprintln!(
            "signet verify: {} unexpected argument(s), not shown in case one is a token; give the token with --token-file (or --token)",
            args.unexpected.len()
        );
        return ExitCode::from(crate::config::EXIT_CONFIG);
    }
    let expect = Expectations {
        audiences: args.audiences.clone(),
        issuer: args.issuer.clone(),
        allow_expired: args.allow_expired,
    };
    let outcome = async {
        let token = read_token(args)?;
        let socket = SocketAddress::parse(&args.socket).map_err(|reason| VerifyError::Connect {
            socket: args.socket.clone(),
            reason,
        })?;
        let keys = fetch_keys(&socket).await?;
        verify(&token, &keys, &expect)
    }
    .await;
    match outcome {
        Ok(verified) => {
            let claims = serde_json::to_string_pretty(&verified.claims)
                .expect("a JSON value always serialises");
            let published = if verified.excluded_from_oidc_discovery {
                "published, excluded from OIDC discovery"
            } else {
                "published"
            };
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(
                stdout,
                "verified\nkid: {}\nalg: {}\nkey: {published}\nclaims: {claims}",
                verified.kid, verified.alg
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("signet verify: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

/// The largest token file read. signet signs claims of up to 64 KiB, so its tokens stay under
/// 100 KiB; the bound keeps a wrong path (a device, an image) from exhausting memory.
const MAX_TOKEN_BYTES: u64 = 1 << 20;

fn read_token(args: &VerifyArgs) -> Result<zeroize::Zeroizing<String>, VerifyError> {
    let token = match (&args.token, &args.token_file) {
        (Some(inline), _) => zeroize::Zeroizing::new(inline.expose().to_owned()),
        (None, Some(path)) => {
            let mut bytes = zeroize::Zeroizing::new(Vec::new());
            let read = if path.as_os_str() == "-" {
                std::io::stdin()
                    .take(MAX_TOKEN_BYTES + 1)
                    .read_to_end(&mut bytes)
            } else {
                std::fs::File::open(path)
                    .and_then(|file| file.take(MAX_TOKEN_BYTES + 1).read_to_end(&mut bytes))
            };
            read.map_err(|source| VerifyError::ReadToken {
                path: path.clone(),
                source,
            })?;
            if bytes.len() as u64 > MAX_TOKEN_BYTES {
                return Err(VerifyError::TokenTooLarge { path: path.clone() });
            }
            // Text that is not UTF-8 is no token: it does not verify (exit 1), like any other
            // malformed token, rather than "cannot check".
            zeroize::Zeroizing::new(
                std::str::from_utf8(&bytes)
                    .map_err(|_| VerifyError::Malformed)?
                    .to_owned(),
            )
        }
        (None, None) => unreachable!("clap requires --token or --token-file"),
    };
    // A file usually ends in a newline; the token itself has no whitespace.
    Ok(zeroize::Zeroizing::new(token.trim().to_owned()))
}

/// The keys the signer publishes, over the `v1` API.
pub async fn fetch_keys(socket: &SocketAddress) -> Result<Vec<Key>, VerifyError> {
    let connect_error = |reason: String| VerifyError::Connect {
        socket: socket.to_string(),
        reason,
    };
    let target = socket.clone();
    let channel = Endpoint::from_static("http://localhost")
        .connect_timeout(SIGNER_TIMEOUT)
        .timeout(SIGNER_TIMEOUT)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let target = target.clone();
            async move { target.connect().await.map(hyper_util::rt::TokioIo::new) }
        }))
        .await
        .map_err(|err| connect_error(crate::server::error_chain(&err)))?;
    let response = ExternalJwtSignerClient::new(channel)
        .fetch_keys(FetchKeysRequest {})
        .await
        .map_err(|status| VerifyError::FetchKeys {
            code: status.code(),
            message: status.message().to_owned(),
        })?;
    Ok(response.into_inner().keys)
}

#[derive(serde::Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

/// Verifies `token` with the published `keys`: every key under the header's kid is tried, as
/// kube-apiserver does.
pub fn verify(token: &str, keys: &[Key], expect: &Expectations) -> Result<Verified, VerifyError> {
    let header = token
        .split('.')
        .next()
        .and_then(|header| URL_SAFE_NO_PAD.decode(header).ok())
        .and_then(|json| serde_json::from_slice::<Header>(&json).ok())
        .ok_or(VerifyError::Malformed)?;
    let kid = header.kid.ok_or(VerifyError::Malformed)?;
    let alg: Algorithm = header
        .alg
        .parse()
        .map_err(|_| VerifyError::UnknownAlgorithm(header.alg.clone()))?;
    let jwt_alg = match alg {
        Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
        Algorithm::ES384 => jsonwebtoken::Algorithm::ES384,
        Algorithm::ES512 => return Err(VerifyError::Unsupported(alg)),
    };
    let mut validation = Validation::new(jwt_alg);
    // jsonwebtoken checks `aud` and `iss` only when they are present as strings: a claim the
    // caller asked for must be required too, or a token without it passes.
    let mut required = Vec::new();
    if !expect.allow_expired {
        required.push("exp");
    }
    if !expect.audiences.is_empty() {
        required.push("aud");
    }
    if expect.issuer.is_some() {
        required.push("iss");
    }
    validation.set_required_spec_claims(&required);
    validation.leeway = LEEWAY_SECS;
    validation.validate_exp = !expect.allow_expired;
    validation.validate_nbf = !expect.allow_expired;
    if expect.audiences.is_empty() {
        validation.validate_aud = false;
    } else {
        validation.set_audience(&expect.audiences);
    }
    if let Some(issuer) = &expect.issuer {
        validation.set_issuer(&[issuer]);
    }

    let candidates: Vec<&Key> = keys.iter().filter(|key| key.key_id == kid).collect();
    if candidates.is_empty() {
        return Err(VerifyError::UnknownKid(kid));
    }
    let mut last_reason = String::new();
    for key in candidates {
        let decoding = match decoding_key(alg, &key.key) {
            Ok(decoding) => decoding,
            Err(reason) => {
                last_reason = reason;
                continue;
            }
        };
        match jsonwebtoken::decode::<serde_json::Value>(token, &decoding, &validation) {
            Ok(data) => {
                if !expect.allow_expired {
                    check_issued_at(&data.claims).map_err(|reason| VerifyError::Invalid {
                        kid: kid.clone(),
                        reason,
                    })?;
                }
                return Ok(Verified {
                    kid,
                    alg,
                    excluded_from_oidc_discovery: key.exclude_from_oidc_discovery,
                    claims: data.claims,
                });
            }
            Err(err) => last_reason = describe(err.kind()),
        }
    }
    Err(VerifyError::Invalid {
        kid,
        reason: last_reason,
    })
}

/// How far a token's times may be off the local clock: kube-apiserver's verifier (go-jose)
/// allows a minute, and so does jsonwebtoken by default.
const LEEWAY_SECS: u64 = 60;

/// kube-apiserver's verifier (go-jose) refuses a token issued in the future; jsonwebtoken does
/// not look at `iat`.
fn check_issued_at(claims: &serde_json::Value) -> Result<(), String> {
    let Some(iat) = claims.get("iat") else {
        return Ok(());
    };
    let iat = iat
        .as_f64()
        .ok_or_else(|| "the iat claim has the wrong type".to_owned())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64());
    if iat > now + LEEWAY_SECS as f64 {
        return Err("the token was issued in the future (iat is after now; --allow-expired checks it anyway)".to_owned());
    }
    Ok(())
}

/// jsonwebtoken's key from PKIX DER: the subject public key is the PKCS#1 RSAPublicKey for RSA
/// and the SEC1 point for EC, which are the forms its `from_*_der` take.
fn decoding_key(alg: Algorithm, spki_der: &[u8]) -> Result<DecodingKey, String> {
    let spki = spki::SubjectPublicKeyInfoRef::from_der(spki_der)
        .map_err(|_| "the published key is not PKIX DER".to_owned())?;
    let public_key = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| "the published key is malformed".to_owned())?;
    Ok(match alg {
        Algorithm::RS256 => DecodingKey::from_rsa_der(public_key),
        _ => DecodingKey::from_ec_der(public_key),
    })
}

/// What failed, in words that repeat nothing of the token.
fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidSignature => "the signature does not match".into(),
        ErrorKind::ExpiredSignature => {
            "the token has expired (exp is in the past; --allow-expired checks it anyway)".into()
        }
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf is in the future)".into(),
        ErrorKind::InvalidAudience => "aud names none of the expected audiences".into(),
        ErrorKind::InvalidIssuer => "iss is not the expected issuer".into(),
        ErrorKind::InvalidAlgorithm => "the key's type does not match the header's alg".into(),
        ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat => {
            "the published key does not fit the header's alg".into()
        }
        ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => "the token has no exp claim (a legacy Secret-based token has none; --allow-expired checks it anyway)".into(),
        ErrorKind::MissingRequiredClaim(claim) => {
            format!("the token has no {claim} claim of the form the check needs (a string, or for aud an array of strings)")
        }
        ErrorKind::InvalidClaimFormat(claim) => format!("the {claim} claim has the wrong type"),
        _ => "the token is malformed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_from_the_token_are_quoted_with_escapes() {
        let escape = "\u{1b}[2J";
        for err in [
            VerifyError::UnknownAlgorithm(escape.into()),
            VerifyError::UnknownKid(escape.into()),
        ] {
            let message = err.to_string();
            assert!(!message.contains('\u{1b}'), "{message:?}");
            assert!(message.contains(r#""\u{1b}[2J""#), "{message}");
        }
    }
}
