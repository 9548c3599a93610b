//! An independent verifier of signet's tokens: what a relying party (or kube-apiserver's own
//! authenticator) does with the keys FetchKeys publishes.
//!
//! It parses each PKIX DER key with RustCrypto crates (`spki`, `rsa`, `p256`, `p384`, `p521`),
//! builds a `jsonwebtoken` JWK set from them and verifies tokens with `jsonwebtoken`. ES512 is
//! verified with the `p521` crate directly (SHA-512 over `header "." claims`, raw 132-byte
//! `R‖S`), since jsonwebtoken has no ES512. It must never call into signet.

use std::collections::HashMap;
use std::str::FromStr as _;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use der::asn1::ObjectIdentifier;
use der::Decode as _;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{DecodingKey, Validation};
use rsa::traits::PublicKeyParts as _;
use serde_json::{json, Value};
use spki::DecodePublicKey as _;

use signet::api::v1::FetchKeysResponse;

const OID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// The JWS algorithm kube-apiserver publishes for a PKIX key (spec §5), read from the DER with
/// the `spki` crate: any RSA key is RS256; P-256/384/521 are ES256/384/512.
pub fn algorithm_of_spki(der: &[u8]) -> Result<&'static str, String> {
    let info = spki::SubjectPublicKeyInfoRef::from_der(der)
        .map_err(|err| format!("not PKIX DER: {err}"))?;
    if info.algorithm.oid == OID_RSA_ENCRYPTION {
        return Ok("RS256");
    }
    if info.algorithm.oid != OID_EC_PUBLIC_KEY {
        return Err(format!("unexpected key algorithm {}", info.algorithm.oid));
    }
    let curve = info
        .algorithm
        .parameters_oid()
        .map_err(|err| format!("EC key without a named curve: {err}"))?;
    match curve {
        c if c == OID_P256 => Ok("ES256"),
        c if c == OID_P384 => Ok("ES384"),
        c if c == OID_P521 => Ok("ES512"),
        other => Err(format!("unexpected curve {other}")),
    }
}

/// The JWK (as JSON) for one published key, shaped like kube-apiserver's `/openid/v1/jwks`
/// entries: `kid`, `use: sig`, `alg` (left out for ES512, which jsonwebtoken cannot name),
/// `kty` and the key parameters.
pub fn jwk_json(kid: &str, der: &[u8]) -> Result<Value, String> {
    let alg = algorithm_of_spki(der)?;
    let mut jwk = match alg {
        "RS256" => {
            let key = rsa::RsaPublicKey::from_public_key_der(der)
                .map_err(|err| format!("RSA key does not parse: {err}"))?;
            json!({
                "kty": "RSA",
                "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
                "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
            })
        }
        "ES256" => serde_json::to_value(
            p256::PublicKey::from_public_key_der(der)
                .map_err(|err| format!("P-256 key does not parse: {err}"))?
                .to_jwk(),
        )
        .expect("JWK serialises"),
        "ES384" => serde_json::to_value(
            p384::PublicKey::from_public_key_der(der)
                .map_err(|err| format!("P-384 key does not parse: {err}"))?
                .to_jwk(),
        )
        .expect("JWK serialises"),
        "ES512" => {
            use p521::elliptic_curve::sec1::ToEncodedPoint as _;
            let key = p521::PublicKey::from_public_key_der(der)
                .map_err(|err| format!("P-521 key does not parse: {err}"))?;
            let point = key.to_encoded_point(false);
            json!({
                "kty": "EC",
                "crv": "P-521",
                "x": URL_SAFE_NO_PAD.encode(point.x().expect("uncompressed point")),
                "y": URL_SAFE_NO_PAD.encode(point.y().expect("uncompressed point")),
            })
        }
        _ => unreachable!(),
    };
    jwk["kid"] = json!(kid);
    jwk["use"] = json!("sig");
    if alg != "ES512" {
        jwk["alg"] = json!(alg);
    }
    Ok(jwk)
}

/// A verifier fed only the published keys.
#[derive(Debug)]
pub struct IndependentVerifier {
    /// The JWK set built from FetchKeys, as a relying party would download it.
    pub jwks: JwkSet,
    /// kid -> published algorithm.
    algs: HashMap<String, &'static str>,
    /// ES512 keys, verified with `p521` directly.
    p521_keys: HashMap<String, p521::PublicKey>,
    issuer: String,
    audiences: Vec<String>,
}

/// What verification found: the token's header and claims as JSON.
#[derive(Debug)]
pub struct Verified {
    pub header: Value,
    pub claims: Value,
}

impl IndependentVerifier {
    /// Builds the JWK set from a FetchKeys response. Excluded keys are left out of the JWKS, as
    /// kube-apiserver leaves them out of `/openid/v1/jwks`.
    pub fn from_fetch_keys(
        response: &FetchKeysResponse,
        issuer: &str,
        audiences: &[&str],
    ) -> Result<Self, String> {
        let mut keys = Vec::new();
        let mut algs = HashMap::new();
        let mut p521_keys = HashMap::new();
        for key in &response.keys {
            let alg = algorithm_of_spki(&key.key)?;
            algs.insert(key.key_id.clone(), alg);
            if key.exclude_from_oidc_discovery {
                continue;
            }
            if alg == "ES512" {
                let public = p521::PublicKey::from_public_key_der(&key.key)
                    .map_err(|err| format!("P-521 key does not parse: {err}"))?;
                p521_keys.insert(key.key_id.clone(), public);
            }
            keys.push(jwk_json(&key.key_id, &key.key)?);
        }
        let jwks: JwkSet = serde_json::from_value(json!({ "keys": keys }))
            .map_err(|err| format!("jsonwebtoken refuses the JWK set: {err}"))?;
        Ok(Self {
            jwks,
            algs,
            p521_keys,
            issuer: issuer.to_owned(),
            audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
        })
    }

    /// Verifies a compact token. Expiry is not checked (the recorded claims expired long
    /// ago); signature, algorithm/key match, issuer and audience are.
    pub fn verify(&self, token: &str) -> Result<Verified, String> {
        let mut parts = token.split('.');
        let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a three-segment compact JWS".into());
        };
        let header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(header_b64)
                .map_err(|err| format!("header is not base64url: {err}"))?,
        )
        .map_err(|err| format!("header is not JSON: {err}"))?;
        let kid = header["kid"]
            .as_str()
            .ok_or("header has no kid")?
            .to_owned();
        let kid = kid.as_str();
        let header_alg = header["alg"]
            .as_str()
            .ok_or("header has no alg")?
            .to_owned();
        let published_alg = *self
            .algs
            .get(kid)
            .ok_or_else(|| format!("kid {kid} is not published"))?;
        if header_alg != published_alg {
            return Err(format!(
                "header alg {header_alg} does not match the published key's {published_alg}"
            ));
        }

        if published_alg == "ES512" {
            return self.verify_es512(kid, header, header_b64, claims_b64, signature_b64);
        }

        let jwk: &Jwk = self
            .jwks
            .find(kid)
            .ok_or_else(|| format!("kid {kid} is not in the JWK set"))?;
        let key = DecodingKey::from_jwk(jwk).map_err(|err| format!("JWK unusable: {err}"))?;
        let alg = jsonwebtoken::Algorithm::from_str(published_alg).expect("known algorithm");
        let mut validation = Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_required_spec_claims(&["iss", "aud", "sub"]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&self.audiences);
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation)
            .map_err(|err| format!("jsonwebtoken rejects the token: {err}"))?;
        Ok(Verified {
            header,
            claims: data.claims,
        })
    }

    fn verify_es512(
        &self,
        kid: &str,
        header: Value,
        header_b64: &str,
        claims_b64: &str,
        signature_b64: &str,
    ) -> Result<Verified, String> {
        use p521::ecdsa::signature::Verifier as _;
        let public = self
            .p521_keys
            .get(kid)
            .ok_or_else(|| format!("ES512 kid {kid} is not in the JWK set"))?;
        let key = p521::ecdsa::VerifyingKey::from_affine(*public.as_affine())
            .map_err(|err| format!("P-521 verifying key: {err}"))?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|err| format!("signature is not base64url: {err}"))?;
        if signature.len() != 132 {
            return Err(format!(
                "ES512 signature is {} bytes, not 132",
                signature.len()
            ));
        }
        let signature = p521::ecdsa::Signature::from_slice(&signature)
            .map_err(|err| format!("not an R||S signature: {err}"))?;
        // p521's Verifier hashes with SHA-512, as ES512 requires.
        let signing_input = format!("{header_b64}.{claims_b64}");
        key.verify(signing_input.as_bytes(), &signature)
            .map_err(|_| "ES512 signature does not verify".to_owned())?;
        let claims: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(claims_b64)
                .map_err(|err| format!("claims are not base64url: {err}"))?,
        )
        .map_err(|err| format!("claims are not JSON: {err}"))?;
        if claims["iss"] != json!(self.issuer) {
            return Err("issuer mismatch".into());
        }
        let audiences = claims["aud"].as_array().ok_or("aud is not an array")?;
        if !audiences
            .iter()
            .any(|a| self.audiences.iter().any(|want| a == want))
        {
            return Err("audience mismatch".into());
        }
        Ok(Verified { header, claims })
    }
}

/// The token kube-apiserver assembles: `header "." claims "." signature`, its own claims string.
pub fn assemble(header: &str, claims: &str, signature: &str) -> String {
    format!("{header}.{claims}.{signature}")
}

/// The same token with one bit of the signature flipped (in a byte, not in base64 padding bits).
pub fn tamper_signature(token: &str) -> String {
    let (rest, signature) = token.rsplit_once('.').expect("three segments");
    let mut bytes = URL_SAFE_NO_PAD
        .decode(signature)
        .expect("base64url signature");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    format!("{rest}.{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The same token with its payload changed but still valid base64url JSON (the subject renamed),
/// so only the signature check can catch it.
pub fn tamper_payload(token: &str) -> String {
    let mut parts: Vec<&str> = token.split('.').collect();
    let claims = URL_SAFE_NO_PAD.decode(parts[1]).expect("base64url claims");
    let mut claims: Value = serde_json::from_slice(&claims).expect("JSON claims");
    claims["sub"] = json!("system:serviceaccount:kube-system:attacker");
    let forged = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    parts[1] = &forged;
    parts.join(".")
}

/// A JWS segment (header or claims) decoded as base64url without padding, then JSON.
pub fn decode_segment(segment: &str) -> Value {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .unwrap_or_else(|err| panic!("segment is not base64url without padding: {err}"));
    serde_json::from_slice(&bytes).expect("segment is JSON")
}
