//! Signing keys as domain objects: a key knows its kid, its JWS algorithm and its public key
//! (PKIX DER), and signs a JWS signing input. Nothing here knows about gRPC or about where a key
//! is stored; private key bytes never leave this module tree except as PKCS#8 handed to a backend
//! that persists them.

mod algorithm;
mod local;
mod pem;
mod spki;

use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use smallvec::SmallVec;

pub use algorithm::{Algorithm, ParseAlgorithmError};
pub(crate) use local::verify_signature;
pub use local::{warm_up_rng, LocalKey, RngWarmUp, PROVIDER};
pub use pem::pkcs8_from_pem;

/// Everything that can go wrong when loading, generating or using a key.
///
/// Messages name the key (kid or file) and the reason, never key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("no private key found in PEM input (expected PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)")]
    NoPrivateKey,
    #[error("the PEM input holds more than one private key; give one key per file")]
    SeveralPrivateKeys,
    #[error("malformed private key: {0}")]
    Malformed(String),
    #[error(
        "unsupported key type {0}; signet signs with RSA (>= 2048 bits) or EC P-256/P-384/P-521"
    )]
    UnsupportedKeyType(String),
    #[error(
        "RSA key of {bits} bits is too small: kube-apiserver token keys must be at least 2048 bits"
    )]
    RsaTooSmall { bits: usize },
    #[error("RSA key of {bits} bits is too large: at most 8192 bits are supported")]
    RsaTooLarge { bits: usize },
    #[error(
        "{0} is not supported with the ring provider; build with the default aws-lc-rs provider"
    )]
    UnsupportedByProvider(Algorithm),
    #[error("the crypto provider rejected the key: {0}")]
    Rejected(String),
    #[error("key generation failed")]
    Generation,
    #[error("signing failed with key {kid}")]
    Signing { kid: String },
}

/// The operation that turns a JWS signing input into the JWS signature bytes.
///
/// Implemented by in-process keys ([`LocalKey`]) and, later, by HSM and KMS backends. The
/// signature must already be in JWS form: RSASSA-PKCS1-v1_5 bytes for RS256, raw `R‖S` of the
/// curve's fixed width for ES256/384/512 (never DER).
pub trait JwsSigner: Send + Sync + fmt::Debug {
    /// The JWS algorithm this key signs with.
    fn algorithm(&self) -> Algorithm;
    /// The public key as PKIX DER (SubjectPublicKeyInfo).
    fn public_key_der(&self) -> &[u8];
    /// Signs `signing_input` (`header "." claims`), returning the JWS signature bytes.
    fn sign(&self, signing_input: &[u8]) -> Result<JwsSignature, KeyError>;
    /// How long one signature takes, which decides where the server computes it. The
    /// default, [`SignatureCost::Long`], suits keys that compute for milliseconds or wait on a
    /// device or a network.
    fn signature_cost(&self) -> SignatureCost {
        SignatureCost::Long
    }
}

/// A JWS signature's bytes, as [`JwsSigner::sign`] returns them.
///
/// Held inline up to 512 bytes, which covers every EC curve and RSA up to 4096 bits, so a
/// signature costs the Sign path no heap allocation (the hot-path rule); an RSA-8192
/// signature spills to the heap.
#[derive(Clone, PartialEq, Eq)]
pub struct JwsSignature(SmallVec<[u8; 512]>);

impl JwsSignature {
    /// A copy of `bytes`.
    pub fn from_slice(bytes: &[u8]) -> Self {
        Self(SmallVec::from_slice(bytes))
    }

    /// `len` zero bytes, for a provider that writes the signature into a buffer it is given.
    pub fn zeroed(len: usize) -> Self {
        Self(SmallVec::from_elem(0, len))
    }
}

impl std::ops::Deref for JwsSignature {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::ops::DerefMut for JwsSignature {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl AsRef<[u8]> for JwsSignature {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for JwsSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JwsSignature({} bytes)", self.0.len())
    }
}

/// How long one signature takes, and so where the server computes it (measured in
/// BENCHMARKS.md, "Where signing runs").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureCost {
    /// Up to about 0.3 ms of CPU and no waiting (ES256 takes ~20 µs): the executor thread
    /// computes it when it has nothing else to do, so a lone call is signed with no hand-off
    /// and another call waits for at most one such signature; under load the signing threads
    /// take the rest, so the cores the protocol work leaves idle sign too.
    Short,
    /// Longer, or waits on a device or a network: the signing threads only, so it never holds
    /// up another call.
    Long,
}

/// The kid rule kube-apiserver uses for its own keys: base64url (no padding) of the SHA-256 of
/// the public key's PKIX DER. A migrated `sa.key` therefore keeps the kid its tokens carry.
pub fn kid_for_public_key(spki_der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(local::sha256(spki_der))
}

/// A key ready to sign JWTs: the signer plus what is derived from it once, at load time, so the
/// Sign path only signs — the kid and the encoded JWS header are computed here, never per call.
#[derive(Clone)]
pub struct SigningKey {
    kid: Arc<str>,
    alg: Algorithm,
    public_key_der: Bytes,
    encoded_header: Arc<str>,
    signature_cost: SignatureCost,
    signer: Arc<dyn JwsSigner>,
}

impl SigningKey {
    /// Wraps `signer`, naming it with the kube-apiserver kid rule.
    pub fn new(signer: Arc<dyn JwsSigner>) -> Self {
        let kid = kid_for_public_key(signer.public_key_der());
        Self::with_kid(kid, signer)
    }

    /// Wraps `signer` under an explicit kid (for backends that name keys themselves).
    pub fn with_kid(kid: String, signer: Arc<dyn JwsSigner>) -> Self {
        let alg = signer.algorithm();
        let encoded_header = crate::jws::encode_header(alg, &kid);
        Self {
            public_key_der: Bytes::copy_from_slice(signer.public_key_der()),
            kid: kid.into(),
            alg,
            encoded_header: encoded_header.into(),
            signature_cost: signer.signature_cost(),
            signer,
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The public key, PKIX DER, reference-counted so snapshots share it.
    pub fn public_key_der(&self) -> &Bytes {
        &self.public_key_der
    }

    /// The JWS protected header for this key, already base64url-encoded without padding.
    pub fn encoded_header(&self) -> &str {
        &self.encoded_header
    }

    /// See [`JwsSigner::signature_cost`].
    pub fn signature_cost(&self) -> SignatureCost {
        self.signature_cost
    }

    /// Signs a complete JWS signing input.
    pub fn sign(&self, signing_input: &[u8]) -> Result<JwsSignature, KeyError> {
        self.signer.sign(signing_input)
    }
}

impl fmt::Debug for SigningKey {
    // Only public facts: the signer's own Debug is never shown, whatever it holds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}
