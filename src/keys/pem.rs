//! Reading private keys from PEM in the forms admins actually have: PKCS#8 (`PRIVATE KEY`),
//! PKCS#1 RSA (`RSA PRIVATE KEY`, what kubeadm writes for `sa.key`) and SEC1 EC
//! (`EC PRIVATE KEY`, what `openssl ecparam -genkey` writes). Everything is normalised to PKCS#8
//! DER, the one form both crypto providers load.

use der::asn1::{AnyRef, ObjectIdentifier};
use der::{Decode as _, Encode as _};
use pkcs8::{AlgorithmIdentifierRef, PrivateKeyInfo};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::PrivateKeyDer;
use zeroize::Zeroizing;

use super::spki::{OID_EC_PUBLIC_KEY, OID_RSA_ENCRYPTION};
use super::KeyError;

/// Parses exactly one private key out of PEM text and returns it as PKCS#8 DER.
///
/// Other PEM blocks (certificates, `EC PARAMETERS`) are skipped; two private keys are an error,
/// since "which one signs" must never be a guess.
pub fn pkcs8_from_pem(pem: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let mut keys = PrivateKeyDer::pem_slice_iter(pem);
    let key = match keys.next() {
        Some(Ok(key)) => key,
        Some(Err(err)) => return Err(KeyError::Malformed(pem_error(&err))),
        None => return Err(KeyError::NoPrivateKey),
    };
    if keys.next().is_some() {
        return Err(KeyError::SeveralPrivateKeys);
    }
    match key {
        PrivateKeyDer::Pkcs8(der) => Ok(Zeroizing::new(der.secret_pkcs8_der().to_vec())),
        PrivateKeyDer::Pkcs1(der) => wrap_pkcs1(der.secret_pkcs1_der()),
        PrivateKeyDer::Sec1(der) => wrap_sec1(der.secret_sec1_der()),
        _ => Err(KeyError::NoPrivateKey),
    }
}

// The PEM error's Display can quote input only for base64 problems as positions, never bytes,
// but keep it to the kind to be sure nothing of the key is echoed.
fn pem_error(err: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    match err {
        Error::MissingSectionEnd { .. } => "PEM section has no END line".into(),
        Error::IllegalSectionStart { .. } => "PEM section start line is malformed".into(),
        Error::Base64Decode(_) => "PEM body is not valid base64".into(),
        _ => "PEM input is malformed".into(),
    }
}

fn wrap_pkcs1(pkcs1: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let info = PrivateKeyInfo::new(
        AlgorithmIdentifierRef {
            oid: OID_RSA_ENCRYPTION,
            parameters: Some(AnyRef::NULL),
        },
        pkcs1,
    );
    encode(&info)
}

fn wrap_sec1(sec1: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let ec_key = sec1::EcPrivateKey::from_der(sec1)
        .map_err(|_| KeyError::Malformed("EC PRIVATE KEY is not a valid SEC1 structure".into()))?;
    let curve: ObjectIdentifier = ec_key
        .parameters
        .and_then(|params| params.named_curve())
        .ok_or_else(|| {
            KeyError::Malformed(
                "EC PRIVATE KEY does not name its curve (namedCurve parameter missing)".into(),
            )
        })?;
    let info = PrivateKeyInfo::new(
        AlgorithmIdentifierRef {
            oid: OID_EC_PUBLIC_KEY,
            parameters: Some(AnyRef::from(&curve)),
        },
        sec1,
    );
    encode(&info)
}

fn encode(info: &PrivateKeyInfo<'_>) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    info.to_der()
        .map(Zeroizing::new)
        .map_err(|_| KeyError::Malformed("cannot re-encode the key as PKCS#8".into()))
}
