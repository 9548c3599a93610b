//! PKIX (SubjectPublicKeyInfo) DER for the public half of a key, built the same way for both
//! crypto providers so kids do not depend on which provider signed.

use der::asn1::{AnyRef, BitStringRef, ObjectIdentifier};
use der::Encode as _;
use spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};

use super::{Algorithm, KeyError};

pub(crate) const OID_RSA_ENCRYPTION: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
pub(crate) const OID_EC_PUBLIC_KEY: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
pub(crate) const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
pub(crate) const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
pub(crate) const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// The algorithm a PKCS#8 private key signs with, read from its AlgorithmIdentifier.
pub(crate) fn algorithm_of_pkcs8(pkcs8_der: &[u8]) -> Result<Algorithm, KeyError> {
    use der::Decode as _;
    let info = pkcs8::PrivateKeyInfo::from_der(pkcs8_der)
        .map_err(|_| KeyError::Malformed("not a valid PKCS#8 PrivateKeyInfo".into()))?;
    let oid = info.algorithm.oid;
    if oid == OID_RSA_ENCRYPTION {
        return Ok(Algorithm::RS256);
    }
    if oid != OID_EC_PUBLIC_KEY {
        return Err(KeyError::UnsupportedKeyType(format!(
            "with algorithm OID {oid}"
        )));
    }
    let curve = info
        .algorithm
        .parameters_oid()
        .map_err(|_| KeyError::Malformed("EC key does not name its curve".into()))?;
    match curve {
        c if c == OID_P256 => Ok(Algorithm::ES256),
        c if c == OID_P384 => Ok(Algorithm::ES384),
        c if c == OID_P521 => Ok(Algorithm::ES512),
        other => Err(KeyError::UnsupportedKeyType(format!("EC curve {other}"))),
    }
}

/// SubjectPublicKeyInfo DER for an RSA `RSAPublicKey` (PKCS#1) or an EC uncompressed point.
pub(crate) fn spki_der(alg: Algorithm, public_key: &[u8]) -> Result<Vec<u8>, KeyError> {
    let curve = match alg {
        Algorithm::RS256 => None,
        Algorithm::ES256 => Some(OID_P256),
        Algorithm::ES384 => Some(OID_P384),
        Algorithm::ES512 => Some(OID_P521),
    };
    let algorithm = match &curve {
        None => AlgorithmIdentifierRef {
            oid: OID_RSA_ENCRYPTION,
            parameters: Some(AnyRef::NULL),
        },
        Some(curve) => AlgorithmIdentifierRef {
            oid: OID_EC_PUBLIC_KEY,
            parameters: Some(AnyRef::from(curve)),
        },
    };
    let subject_public_key = BitStringRef::from_bytes(public_key)
        .map_err(|_| KeyError::Malformed("public key is too long".into()))?;
    SubjectPublicKeyInfoRef {
        algorithm,
        subject_public_key,
    }
    .to_der()
    .map_err(|_| KeyError::Malformed("cannot encode the public key as PKIX".into()))
}
