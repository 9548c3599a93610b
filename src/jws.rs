//! The JWS compact-serialisation pieces signet produces: the protected header and the
//! signature over `header "." claims`. The claims are the apiserver's and stay opaque: they are
//! checked to be base64url of a JSON object and, when they carry numeric `exp` and `iat`, that
//! the lifetime is within the advertised maximum — nothing else in them is interpreted.
//!
//! Errors never quote the claims: they are bearer-token material.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;
use smallvec::SmallVec;

use crate::keys::{Algorithm, KeyError, SigningKey};

/// The largest `claims` string accepted (base64url characters). Real service-account claims are
/// under 1 KiB; the limit only bounds the work a single request can ask for.
pub const MAX_CLAIMS_LEN: usize = 64 * 1024;

/// Bytes the Sign path keeps on the stack for the decoded claims and for the signing input:
/// the largest real claims (`../shared/testdata/apiserver-claims.txt`) are 711 characters,
/// 818 bytes of signing input with a 106-character header, so 2 KiB holds 2.5 times that and
/// a Sign allocates nothing of its own but the two strings of its response.
/// Longer claims, up to [`MAX_CLAIMS_LEN`], spill to the heap.
const INLINE_BYTES: usize = 2048;

/// Why a `claims` string was refused. Each message tells the caller what is wrong without
/// repeating any of the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimsError {
    #[error("claims are empty")]
    Empty,
    #[error("claims are {len} bytes long; at most {max} bytes are accepted")]
    TooLarge { len: usize, max: usize },
    #[error(
        "claims carry base64 padding ('='); the JWS payload must be base64url without padding"
    )]
    Padded,
    #[error(
        "claims are not base64url without padding (invalid character or length at byte {offset})"
    )]
    NotBase64Url { offset: usize },
    #[error("claims are not valid JSON ({0})")]
    NotJson(String),
    #[error("claims are JSON but not a JSON object")]
    NotObject,
    #[error("token lifetime exp - iat = {lifetime}s exceeds the maximum of {max}s this signer advertises")]
    LifetimeTooLong { lifetime: i64, max: i64 },
    #[error("claims must carry numeric exp and iat: a token without them could outlive the time its key stays published")]
    NoLifetime,
}

/// Checks that `claims` is a JWS payload signet may sign, under a maximum token lifetime.
pub fn check_claims(claims: &str, max_lifetime_secs: i64) -> Result<(), ClaimsError> {
    if claims.is_empty() {
        return Err(ClaimsError::Empty);
    }
    if claims.len() > MAX_CLAIMS_LEN {
        return Err(ClaimsError::TooLarge {
            len: claims.len(),
            max: MAX_CLAIMS_LEN,
        });
    }
    if claims.ends_with('=') {
        return Err(ClaimsError::Padded);
    }
    let mut json =
        SmallVec::<[u8; INLINE_BYTES]>::from_elem(0, base64::decoded_len_estimate(claims.len()));
    let decoded = URL_SAFE_NO_PAD
        .decode_slice(claims, &mut json)
        .map_err(|err| match err {
            base64::DecodeSliceError::DecodeError(base64::DecodeError::InvalidByte(offset, _))
            | base64::DecodeSliceError::DecodeError(base64::DecodeError::InvalidLastSymbol(
                offset,
                _,
            )) => ClaimsError::NotBase64Url { offset },
            _ => ClaimsError::NotBase64Url {
                offset: claims.len(),
            },
        })?;
    json.truncate(decoded);
    let first = json.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        // Valid JSON of another kind (array, string, number) or not JSON at all.
        return match serde_json::from_slice::<serde::de::IgnoredAny>(&json) {
            Ok(_) => Err(ClaimsError::NotObject),
            Err(err) => Err(json_error(&err)),
        };
    }
    let lifetime: Lifetime = serde_json::from_slice(&json).map_err(|err| json_error(&err))?;
    // kube-apiserver always sets both. Without them, the retention that keeps a retired key
    // published for its tokens (the longest lifetime signed) would not bound anything.
    let lifetime = lifetime.seconds().ok_or(ClaimsError::NoLifetime)?;
    if lifetime > max_lifetime_secs as f64 {
        return Err(ClaimsError::LifetimeTooLong {
            lifetime: lifetime.ceil() as i64,
            max: max_lifetime_secs,
        });
    }
    Ok(())
}

/// Only position and category: serde_json's own messages can quote parts of the input.
fn json_error(err: &serde_json::Error) -> ClaimsError {
    use serde_json::error::Category;
    let what = match err.classify() {
        Category::Eof => "unexpected end of input",
        Category::Syntax => "syntax error",
        Category::Data => "a claim has an unexpected form",
        Category::Io => "read error",
    };
    ClaimsError::NotJson(format!(
        "{what} at line {} column {}",
        err.line(),
        err.column()
    ))
}

/// The two claims signet reads. Any other member is skipped (but still syntax-checked).
#[derive(Deserialize)]
struct Lifetime {
    #[serde(default)]
    exp: Option<serde_json::Value>,
    #[serde(default)]
    iat: Option<serde_json::Value>,
}

impl Lifetime {
    fn seconds(&self) -> Option<f64> {
        let exp = self.exp.as_ref()?.as_f64()?;
        let iat = self.iat.as_ref()?.as_f64()?;
        Some(exp - iat)
    }
}

/// The base64url (no padding) JWS protected header for a key: exactly `alg`, `kid`, `typ`,
/// in that order, as kube-apiserver requires.
pub fn encode_header(alg: Algorithm, kid: &str) -> String {
    #[derive(serde::Serialize)]
    struct Header<'a> {
        alg: &'static str,
        kid: &'a str,
        typ: &'static str,
    }
    let json = serde_json::to_vec(&Header {
        alg: alg.as_str(),
        kid,
        typ: "JWT",
    })
    .expect("serialising three strings cannot fail");
    URL_SAFE_NO_PAD.encode(json)
}

/// A signed token's first and third segments: the caller already holds the second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedJws {
    /// base64url JWS header, no padding.
    pub header: String,
    /// base64url JWS signature, no padding.
    pub signature: String,
}

/// Signs `claims` (already checked) with `key`: signing input is `header "." claims`, byte for
/// byte as the apiserver will assemble the token.
pub fn sign(key: &SigningKey, claims: &str) -> Result<SignedJws, KeyError> {
    let header = key.encoded_header();
    let mut signing_input = SmallVec::<[u8; INLINE_BYTES]>::new();
    signing_input.reserve_exact(header.len() + 1 + claims.len());
    signing_input.extend_from_slice(header.as_bytes());
    signing_input.push(b'.');
    signing_input.extend_from_slice(claims.as_bytes());
    let signature = key.sign(&signing_input)?;
    Ok(SignedJws {
        header: header.to_owned(),
        signature: URL_SAFE_NO_PAD.encode(signature),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn header_is_alg_kid_typ_without_padding() {
        let header = encode_header(Algorithm::ES256, "k1");
        assert!(!header.contains('='));
        let json = URL_SAFE_NO_PAD.decode(&header).unwrap();
        assert_eq!(json, br#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#);
    }

    #[test]
    fn accepts_an_object_and_a_lifetime_at_the_maximum() {
        check_claims(&b64(r#"{"exp":1600,"iat":1000,"sub":"x"}"#), 600).unwrap();
    }

    #[test]
    fn refuses_claims_without_a_numeric_lifetime() {
        for claims in [
            r#"{"sub":"no lifetime"}"#,
            r#"{"exp":1600}"#,
            r#"{"iat":1000}"#,
            r#"{"exp":"later","iat":1000}"#,
            r#"{"exp":1600,"iat":null}"#,
        ] {
            assert_eq!(
                check_claims(&b64(claims), 600),
                Err(ClaimsError::NoLifetime),
                "{claims}"
            );
        }
    }

    #[test]
    fn refuses_each_malformed_form_without_echoing_it() {
        let secret = "topsecret";
        let cases = [
            (String::new(), ClaimsError::Empty),
            (format!("{}=", b64(r#"{"a":1}"#)), ClaimsError::Padded),
            (
                format!("{secret}!"),
                ClaimsError::NotBase64Url { offset: 9 },
            ),
            (b64(&format!("[\"{secret}\"]")), ClaimsError::NotObject),
            (b64(&format!("\"{secret}\"")), ClaimsError::NotObject),
        ];
        for (claims, want) in cases {
            let err = check_claims(&claims, 600).unwrap_err();
            assert_eq!(err, want);
            assert!(!err.to_string().contains(secret));
        }
        let err = check_claims(&b64(&format!("{{\"{secret}\":")), 600).unwrap_err();
        assert!(matches!(err, ClaimsError::NotJson(_)), "{err:?}");
        assert!(!err.to_string().contains(secret));
    }

    #[test]
    fn refuses_lifetime_over_maximum_and_oversized_claims() {
        let err = check_claims(&b64(r#"{"exp":1601,"iat":1000}"#), 600).unwrap_err();
        assert_eq!(
            err,
            ClaimsError::LifetimeTooLong {
                lifetime: 601,
                max: 600
            }
        );
        let big = "a".repeat(MAX_CLAIMS_LEN + 4);
        assert!(matches!(
            check_claims(&big, 600),
            Err(ClaimsError::TooLarge { .. })
        ));
    }
}
