//! The OIDC discovery documents for relying parties outside the cluster: the JWK Set
//! (`/openid/v1/jwks`) and the OpenID provider configuration
//! (`/.well-known/openid-configuration`), built from a [`KeySet`] exactly as kube-apiserver
//! builds its own from the keys FetchKeys returns (spec §5-6):
//!
//! - keys flagged `exclude_from_oidc_discovery` are left out (they verify tokens, but are not
//!   published);
//! - each JWK carries `kid` verbatim, `use: "sig"`, `alg` from the key type (any RSA key is
//!   `RS256`; P-256/P-384/P-521 are `ES256`/`ES384`/`ES512`), `kty` and the key parameters;
//! - the configuration lists the sorted, de-duplicated algorithms of the published keys.
//!
//! How the parameters are encoded: EC keys go through RustCrypto's `PublicKey::to_jwk`
//! (`p256`/`p384`/`p521` with the `jwk` feature), which validates the point on its curve and
//! writes `crv`, `x`, `y` at full field width. RSA keys are parsed with `spki` + `pkcs1`, whose
//! unsigned integers already come without the DER sign byte, so `n` and `e` are their minimal
//! big-endian bytes in base64url. `jsonwebtoken::jwk` was the other candidate, but its
//! `KeyAlgorithm` has no `ES512`, so it cannot render a P-521 key's `alg`; the JWK object itself
//! is therefore a small serde struct here.
//!
//! The documents are built once per key set ([`OidcDocuments`] caches them by the identity of
//! the [`KeySet`] snapshot, as the FetchKeys adapter does), never per request.
//!
//! This module must never touch private keys: it sees only the published PKIX DER.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use der::Decode as _;
use p256::elliptic_curve::JwkEcKey;
use p256::pkcs8::DecodePublicKey as _;
use serde::Serialize;

use crate::keyring::{KeyRing, KeySet, PublishedKey};
use crate::keys::Algorithm;

/// Why the documents cannot be built from a key set. Messages name kids (public) only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// Every key is excluded from OIDC discovery: kube-apiserver refuses to build documents
    /// from such a set too.
    #[error("no key is published for OIDC discovery (every key is excluded_from_oidc_discovery)")]
    NoPublishedKeys,
    #[error("key {kid}: its PKIX public key is not a valid {alg} key: {reason}")]
    MalformedKey {
        kid: String,
        alg: Algorithm,
        reason: String,
    },
}

/// One JSON Web Key as kube-apiserver publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Jwk {
    #[serde(rename = "use")]
    key_use: &'static str,
    kid: String,
    #[serde(serialize_with = "serialize_alg")]
    alg: Algorithm,
    #[serde(flatten)]
    params: KeyParameters,
}

impl Jwk {
    /// The JWK for one published key, with `alg` following from the key type.
    pub fn from_published(key: &PublishedKey) -> Result<Self, JwksError> {
        let malformed = |reason: String| JwksError::MalformedKey {
            kid: key.kid.to_string(),
            alg: key.alg,
            reason,
        };
        let der = &key.public_key_der[..];
        let params = match key.alg {
            Algorithm::RS256 => {
                KeyParameters::Rsa(RsaParameters::from_spki(der).map_err(malformed)?)
            }
            Algorithm::ES256 => KeyParameters::Ec(
                p256::PublicKey::from_public_key_der(der)
                    .map_err(|err| malformed(err.to_string()))?
                    .to_jwk(),
            ),
            Algorithm::ES384 => KeyParameters::Ec(
                p384::PublicKey::from_public_key_der(der)
                    .map_err(|err| malformed(err.to_string()))?
                    .to_jwk(),
            ),
            Algorithm::ES512 => KeyParameters::Ec(
                p521::PublicKey::from_public_key_der(der)
                    .map_err(|err| malformed(err.to_string()))?
                    .to_jwk(),
            ),
        };
        Ok(Self {
            key_use: "sig",
            kid: key.kid.to_string(),
            alg: key.alg,
            params,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

fn serialize_alg<S: serde::Serializer>(alg: &Algorithm, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(alg.as_str())
}

/// `kty` and the key parameters.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
enum KeyParameters {
    Rsa(RsaParameters),
    /// Serialises as `kty: "EC"`, `crv`, `x`, `y` (a public key: never `d`).
    Ec(JwkEcKey),
}

impl fmt::Debug for KeyParameters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyParameters::Rsa(rsa) => rsa.fmt(f),
            KeyParameters::Ec(ec) => f
                .debug_struct("Ec")
                .field("crv", &ec.crv())
                .finish_non_exhaustive(),
        }
    }
}

/// `rsaEncryption`, the PKIX algorithm of every RSA public key.
const RSA_ENCRYPTION: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct RsaParameters {
    kty: &'static str,
    n: String,
    e: String,
}

impl RsaParameters {
    fn from_spki(der: &[u8]) -> Result<Self, String> {
        let spki = spki::SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|err| format!("not PKIX DER ({err})"))?;
        if spki.algorithm.oid != RSA_ENCRYPTION {
            return Err(format!(
                "algorithm {} is not rsaEncryption",
                spki.algorithm.oid
            ));
        }
        let bits = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| "the public key bit string has unused bits".to_owned())?;
        let rsa = pkcs1::RsaPublicKey::from_der(bits)
            .map_err(|err| format!("not a PKCS#1 RSAPublicKey ({err})"))?;
        // `UintRef::as_bytes` is the unsigned value without DER's leading zero sign byte,
        // which is exactly the JWA (RFC 7518 §6.3.1) encoding of n and e.
        Ok(Self {
            kty: "RSA",
            n: URL_SAFE_NO_PAD.encode(rsa.modulus.as_bytes()),
            e: URL_SAFE_NO_PAD.encode(rsa.public_exponent.as_bytes()),
        })
    }
}

/// The JWK Set served at `/openid/v1/jwks`: the published keys, in FetchKeys order, without the
/// excluded ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JwkSet {
    keys: Vec<Jwk>,
}

impl JwkSet {
    /// Builds the set from the keys FetchKeys publishes. Errors when no key is left after the
    /// excluded ones are removed, or when a key cannot be rendered (as kube-apiserver does).
    pub fn from_key_set(keys: &KeySet) -> Result<Self, JwksError> {
        let keys: Vec<Jwk> = keys
            .published()
            .iter()
            .filter(|key| !key.exclude_from_oidc_discovery)
            .map(Jwk::from_published)
            .collect::<Result<_, _>>()?;
        if keys.is_empty() {
            return Err(JwksError::NoPublishedKeys);
        }
        Ok(Self { keys })
    }

    pub fn keys(&self) -> &[Jwk] {
        &self.keys
    }

    /// The algorithms of the keys, sorted by name and de-duplicated (as Go's `sort.Strings`
    /// orders them in the apiserver's discovery document).
    pub fn algorithms(&self) -> Vec<&'static str> {
        let mut algs: Vec<&'static str> = self.keys.iter().map(|key| key.alg.as_str()).collect();
        algs.sort_unstable();
        algs.dedup();
        algs
    }

    /// The set as compact JSON, as served over HTTP and by `signet keys export-jwks`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a JWK Set of strings always serialises")
    }
}

/// The OpenID provider configuration kube-apiserver serves at
/// `/.well-known/openid-configuration`: these five fields and no others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenIdConfiguration {
    pub issuer: String,
    pub jwks_uri: String,
    pub response_types_supported: Vec<&'static str>,
    pub subject_types_supported: Vec<&'static str>,
    pub id_token_signing_alg_values_supported: Vec<&'static str>,
}

/// The discovery document for `issuer`, pointing relying parties at `jwks_uri`, listing the
/// algorithms of the keys in `keys`.
pub fn openid_configuration(issuer: &str, jwks_uri: &str, keys: &JwkSet) -> OpenIdConfiguration {
    OpenIdConfiguration {
        issuer: issuer.to_owned(),
        jwks_uri: jwks_uri.to_owned(),
        response_types_supported: vec!["id_token"],
        subject_types_supported: vec!["public"],
        id_token_signing_alg_values_supported: keys.algorithms(),
    }
}

/// Both documents, serialised, ready to be written to a response body as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcDocumentBodies {
    /// `application/jwk-set+json`.
    pub jwks: Bytes,
    /// `application/json`.
    pub openid_configuration: Bytes,
}

impl OidcDocumentBodies {
    pub fn build(issuer: &str, jwks_uri: &str, keys: &KeySet) -> Result<Self, JwksError> {
        let jwks = JwkSet::from_key_set(keys)?;
        let configuration = openid_configuration(issuer, jwks_uri, &jwks);
        Ok(Self {
            jwks: Bytes::from(jwks.to_json()),
            openid_configuration: Bytes::from(
                serde_json::to_vec(&configuration)
                    .expect("a configuration of strings always serialises"),
            ),
        })
    }
}

/// The documents built from one key-set snapshot.
#[derive(Debug)]
struct Prepared {
    /// The snapshot these were built from; compared by pointer.
    source: Arc<KeySet>,
    /// What to serve for `source`: its documents; or, when it cannot be rendered, the last good
    /// documents (kube-apiserver keeps its previous documents in that case); or the error when
    /// there never were any.
    served: Result<Arc<OidcDocumentBodies>, JwksError>,
}

/// The documents for the live [`KeyRing`], rebuilt only when the ring publishes a new set.
#[derive(Debug)]
pub struct OidcDocuments {
    keyring: Arc<KeyRing>,
    issuer: String,
    jwks_uri: String,
    prepared: ArcSwapOption<Prepared>,
}

impl OidcDocuments {
    pub fn new(keyring: Arc<KeyRing>, issuer: String, jwks_uri: String) -> Self {
        Self {
            keyring,
            issuer,
            jwks_uri,
            prepared: ArcSwapOption::empty(),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn jwks_uri(&self) -> &str {
        &self.jwks_uri
    }

    /// The documents for the current key set, built at most once per set. When the current set
    /// cannot be rendered, the last good documents are served (the failure is logged once per
    /// set); only when there never were any is the error returned.
    pub fn current(&self) -> Result<Arc<OidcDocumentBodies>, JwksError> {
        let keys = self.keyring.snapshot();
        let prepared = self.prepared.load_full();
        if let Some(prepared) = &prepared {
            if Arc::ptr_eq(&prepared.source, &keys) {
                return prepared.served.clone();
            }
        }
        let served = match OidcDocumentBodies::build(&self.issuer, &self.jwks_uri, &keys) {
            Ok(bodies) => Ok(Arc::new(bodies)),
            Err(err) => {
                let previous = prepared.and_then(|p| p.served.as_ref().ok().cloned());
                tracing::warn!(
                    error = %err,
                    keeping_previous_documents = previous.is_some(),
                    "cannot build the OIDC discovery documents for the current key set"
                );
                previous.ok_or(err)
            }
        };
        self.prepared.store(Some(Arc::new(Prepared {
            source: keys,
            served: served.clone(),
        })));
        served
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use jsonwebtoken::jwk::{AlgorithmParameters, KeyAlgorithm, PublicKeyUse};
    use jsonwebtoken::{DecodingKey, Validation};

    use super::*;
    use crate::keys::{LocalKey, SigningKey};

    /// A real apiserver Sign request (testdata/apiserver-claims.txt, `default-sa-1h`).
    const CLAIMS: &str = "eyJhdWQiOlsiaHR0cHM6Ly9rdWJlcm5ldGVzLmRlZmF1bHQuc3ZjLmNsdXN0ZXIubG9jYWwiXSwiZXhwIjoxNzk1ODA2MzU1LCJpYXQiOjE3OTU4MDI3NTUsImlzcyI6Imh0dHBzOi8va3ViZXJuZXRlcy5kZWZhdWx0LnN2Yy5jbHVzdGVyLmxvY2FsIiwianRpIjoiMTQwOTY1NDAtNzM3YS00MjRhLTkzMjQtODhlYjQwYmIwMWZmIiwia3ViZXJuZXRlcy5pbyI6eyJuYW1lc3BhY2UiOiJkZWZhdWx0Iiwic2VydmljZWFjY291bnQiOnsibmFtZSI6ImRlZmF1bHQiLCJ1aWQiOiI4MzFlMTM0Mi1iMmFjLTRiODMtYWQ1ZS1hNWM2MGI1YzNiOWYifX0sIm5iZiI6MTc5NTgwMjc1NSwic3ViIjoic3lzdGVtOnNlcnZpY2VhY2NvdW50OmRlZmF1bHQ6ZGVmYXVsdCJ9";

    const RSA_2048_PEM: &[u8] = include_bytes!("../tests/fixtures/jwks/rsa-2048.pem");

    fn key(alg: Algorithm) -> SigningKey {
        let local = match alg {
            Algorithm::RS256 => {
                let pkcs8 = crate::keys::pkcs8_from_pem(RSA_2048_PEM).unwrap();
                LocalKey::from_pkcs8(&pkcs8).unwrap()
            }
            _ => LocalKey::generate(alg, 0).unwrap().0,
        };
        SigningKey::new(Arc::new(local))
    }

    fn excluded(key: &SigningKey) -> PublishedKey {
        PublishedKey {
            exclude_from_oidc_discovery: true,
            ..PublishedKey::of(key)
        }
    }

    fn key_set(signing: Option<SigningKey>, published: Vec<PublishedKey>) -> KeySet {
        KeySet::new(signing, published, SystemTime::now()).unwrap()
    }

    /// The set as an independent library reads it.
    fn parsed(set: &JwkSet) -> jsonwebtoken::jwk::JwkSet {
        serde_json::from_str(&set.to_json()).unwrap()
    }

    fn token(key: &SigningKey) -> String {
        let signed = crate::jws::sign(key, CLAIMS).unwrap();
        format!("{}.{CLAIMS}.{}", signed.header, signed.signature)
    }

    fn b64(field: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(field).unwrap()
    }

    #[test]
    fn each_jwk_verifies_a_token_signet_signed_with_jsonwebtoken() {
        for (alg, jwt_alg) in [
            (Algorithm::RS256, jsonwebtoken::Algorithm::RS256),
            (Algorithm::ES256, jsonwebtoken::Algorithm::ES256),
            (Algorithm::ES384, jsonwebtoken::Algorithm::ES384),
        ] {
            let key = key(alg);
            let set =
                JwkSet::from_key_set(&key_set(Some(key.clone()), vec![PublishedKey::of(&key)]))
                    .unwrap();
            let jwks = parsed(&set);
            let jwk = jwks.find(key.kid()).expect("the kid is published verbatim");
            assert_eq!(jwk.common.public_key_use, Some(PublicKeyUse::Signature));
            assert_eq!(
                jwk.common.key_algorithm,
                Some(alg.as_str().parse::<KeyAlgorithm>().unwrap())
            );
            let decoding = DecodingKey::from_jwk(jwk).unwrap();
            let mut validation = Validation::new(jwt_alg);
            // Real apiserver claims: their exp is in the past, and their aud is the cluster's.
            validation.validate_exp = false;
            validation.validate_aud = false;
            let verified =
                jsonwebtoken::decode::<serde_json::Value>(token(&key), &decoding, &validation)
                    .unwrap_or_else(|err| panic!("{alg} token does not verify: {err}"));
            assert_eq!(verified.header.kid.as_deref(), Some(key.kid()));
            assert_eq!(
                verified.claims["sub"],
                "system:serviceaccount:default:default"
            );

            // And the same JWK refuses a token signed by another key of the same algorithm.
            if alg != Algorithm::RS256 {
                let forged = token(&self::key(alg));
                assert!(
                    jsonwebtoken::decode::<serde_json::Value>(forged, &decoding, &validation)
                        .is_err()
                );
            }
        }
    }

    /// jsonwebtoken cannot verify ES512; the point is rebuilt from the JWK's x and y with
    /// RustCrypto's p521 instead, and the signature checked with it.
    #[cfg(feature = "aws-lc-rs")]
    #[test]
    fn es512_jwk_rebuilds_the_point_that_verifies_a_signet_token() {
        use p521::ecdsa::signature::Verifier as _;

        let key = key(Algorithm::ES512);
        let set = JwkSet::from_key_set(&key_set(Some(key.clone()), vec![PublishedKey::of(&key)]))
            .unwrap();
        let json: serde_json::Value = serde_json::from_str(&set.to_json()).unwrap();
        let jwk = &json["keys"][0];
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-521");
        assert_eq!(jwk["alg"], "ES512");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["kid"], key.kid());
        let (x, y) = (
            b64(jwk["x"].as_str().unwrap()),
            b64(jwk["y"].as_str().unwrap()),
        );
        assert_eq!((x.len(), y.len()), (66, 66));
        // SEC1 uncompressed form: 0x04 ‖ x ‖ y.
        let point = [&[0x04][..], &x, &y].concat();
        let verifying = p521::ecdsa::VerifyingKey::from_sec1_bytes(&point).unwrap();
        let token = token(&key);
        let (signing_input, signature) = token.rsplit_once('.').unwrap();
        let signature = p521::ecdsa::Signature::from_slice(&b64(signature)).unwrap();
        verifying
            .verify(signing_input.as_bytes(), &signature)
            .unwrap();
        assert!(verifying.verify(b"another input", &signature).is_err());
    }

    #[test]
    fn excluded_keys_are_left_out_and_order_is_kept() {
        let (a, b, c) = (
            key(Algorithm::ES256),
            key(Algorithm::ES384),
            key(Algorithm::ES256),
        );
        let set = JwkSet::from_key_set(&key_set(
            Some(a.clone()),
            vec![PublishedKey::of(&a), excluded(&b), PublishedKey::of(&c)],
        ))
        .unwrap();
        let kids: Vec<&str> = set.keys().iter().map(Jwk::kid).collect();
        assert_eq!(kids, [a.kid(), c.kid()]);
        assert_eq!(set.algorithms(), ["ES256"]);

        let only_excluded = key_set(None, vec![excluded(&b)]);
        assert_eq!(
            JwkSet::from_key_set(&only_excluded),
            Err(JwksError::NoPublishedKeys)
        );
    }

    #[test]
    fn rsa_n_has_no_leading_zero_and_e_is_minimal() {
        let key = key(Algorithm::RS256);
        let set = JwkSet::from_key_set(&key_set(Some(key.clone()), vec![PublishedKey::of(&key)]))
            .unwrap();
        let jwks = parsed(&set);
        let AlgorithmParameters::RSA(rsa) = &jwks.keys[0].algorithm else {
            panic!("not an RSA JWK: {:?}", jwks.keys[0]);
        };
        let n = b64(&rsa.n);
        // A 2048-bit modulus has its top bit set: DER adds a zero sign byte, the JWK must not.
        assert_eq!(n.len(), 256);
        assert_ne!(n[0], 0);
        assert!(n[0] & 0x80 != 0);
        assert_eq!(rsa.e, "AQAB");
    }

    #[test]
    fn ec_coordinates_are_full_width_even_with_leading_zeros() {
        // About one key in 128 has a coordinate whose first byte is zero; a minimal encoding
        // would drop it. Search a bounded number of keys for one and check both widths on all.
        let mut saw_leading_zero = false;
        for i in 0..4000 {
            let alg = if i % 2 == 0 {
                Algorithm::ES256
            } else {
                Algorithm::ES384
            };
            let width = if alg == Algorithm::ES256 { 32 } else { 48 };
            let key = key(alg);
            let set = JwkSet::from_key_set(&key_set(None, vec![PublishedKey::of(&key)])).unwrap();
            let jwks = parsed(&set);
            let AlgorithmParameters::EllipticCurve(ec) = &jwks.keys[0].algorithm else {
                panic!("not an EC JWK");
            };
            let (x, y) = (b64(&ec.x), b64(&ec.y));
            assert_eq!((x.len(), y.len()), (width, width), "{alg}");
            if x[0] == 0 || y[0] == 0 {
                saw_leading_zero = true;
                break;
            }
        }
        assert!(
            saw_leading_zero,
            "no key with a leading zero coordinate in 4000 tries"
        );
    }

    #[test]
    fn a_key_whose_der_does_not_match_its_algorithm_is_refused_by_kid() {
        let es256 = key(Algorithm::ES256);
        let wrong = PublishedKey {
            alg: Algorithm::ES384,
            ..PublishedKey::of(&es256)
        };
        let err = JwkSet::from_key_set(&key_set(None, vec![wrong])).unwrap_err();
        assert!(
            matches!(&err, JwksError::MalformedKey { kid, .. } if kid == es256.kid()),
            "{err:?}"
        );
        let garbage = PublishedKey {
            public_key_der: Bytes::from_static(b"not der"),
            ..PublishedKey::of(&key(Algorithm::RS256))
        };
        assert!(JwkSet::from_key_set(&key_set(None, vec![garbage])).is_err());
    }

    #[test]
    fn openid_configuration_is_the_apiservers_document() {
        let (a, b, c) = (
            key(Algorithm::ES384),
            key(Algorithm::RS256),
            key(Algorithm::ES256),
        );
        let set = JwkSet::from_key_set(&key_set(
            Some(a.clone()),
            vec![
                PublishedKey::of(&a),
                PublishedKey::of(&b),
                PublishedKey::of(&c),
                excluded(&key(Algorithm::ES256)),
            ],
        ))
        .unwrap();
        let doc = openid_configuration(
            "https://issuer.example",
            "https://issuer.example/openid/v1/jwks",
            &set,
        );
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "issuer": "https://issuer.example",
                "jwks_uri": "https://issuer.example/openid/v1/jwks",
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256", "ES384", "RS256"],
            })
        );
    }

    #[test]
    fn documents_are_built_once_per_key_set_and_survive_a_bad_set() {
        let a = key(Algorithm::ES256);
        let ring = Arc::new(KeyRing::new(key_set(
            Some(a.clone()),
            vec![PublishedKey::of(&a)],
        )));
        let docs = OidcDocuments::new(ring.clone(), "https://i".into(), "https://i/jwks".into());
        let first = docs.current().unwrap();
        assert!(
            Arc::ptr_eq(&first, &docs.current().unwrap()),
            "rebuilt for the same set"
        );

        // A set with nothing to publish keeps the previous documents, as the apiserver does.
        ring.publish(key_set(None, vec![excluded(&a)]));
        assert!(Arc::ptr_eq(&first, &docs.current().unwrap()));

        // A new publishable set is picked up.
        let b = key(Algorithm::ES384);
        ring.publish(key_set(Some(b.clone()), vec![PublishedKey::of(&b)]));
        let second = docs.current().unwrap();
        let jwks: serde_json::Value = serde_json::from_slice(&second.jwks).unwrap();
        assert_eq!(jwks["keys"][0]["kid"], b.kid());
        let config: serde_json::Value =
            serde_json::from_slice(&second.openid_configuration).unwrap();
        assert_eq!(
            config["id_token_signing_alg_values_supported"],
            serde_json::json!(["ES384"])
        );

        // Without documents before, an unpublishable set is an error.
        let fresh = OidcDocuments::new(
            Arc::new(KeyRing::new(key_set(None, vec![excluded(&a)]))),
            "https://i".into(),
            "https://i/jwks".into(),
        );
        assert_eq!(fresh.current().unwrap_err(), JwksError::NoPublishedKeys);
    }
}
