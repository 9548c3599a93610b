//! The behaviour every [`KeyBackend`] must show, as one suite to run against each
//! implementation (the memory and directory backends in `tests/lifecycle_backends.rs`; a
//! PKCS#11 or KMS backend in its own tests). Each function panics with a message naming the
//! broken rule.
//!
//! Every signature a backend makes is checked against the public key published for its kid,
//! the way a relying party checks it: with `jsonwebtoken`'s RustCrypto verifier fed the PKIX
//! DER (parsed with `spki`), never with signet's own signing or verification code. A backend
//! that maps a kid to the wrong key handle (right kid, right public key, another private key)
//! therefore fails here, however well-formed its signatures look.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use der::Decode as _;
use jsonwebtoken::DecodingKey;

use super::{KeyBackend, StoreError};
use crate::keys::{kid_for_public_key, Algorithm, SigningKey};

/// What the suite's panics say when a signature does not verify, so a test of the suite itself
/// can tell this failure from any other.
pub const SIGNATURE_MISMATCH: &str = "does not verify under the public key published for its kid";

/// Runs every check. `rsa_pkcs8` is an RSA key to import (PKCS#8 DER), so the suite covers RSA
/// without slow key generation.
pub fn run_all(backend: &dyn KeyBackend, rsa_pkcs8: &[u8]) {
    generated_keys_are_stored_and_named_by_the_in_tree_rule(backend);
    unknown_kids_are_not_found(backend);
    import_names_keys_by_the_in_tree_rule_and_is_idempotent(backend, rsa_pkcs8);
    malformed_imports_store_nothing(backend);
    delete_forgets_a_key(backend);
    load_all_returns_every_key(backend);
}

pub fn generated_keys_are_stored_and_named_by_the_in_tree_rule(backend: &dyn KeyBackend) {
    for alg in [Algorithm::ES256, Algorithm::ES384] {
        let key = backend.generate(alg, 2048).expect("generate");
        assert_eq!(
            key.algorithm(),
            alg,
            "{}: generated algorithm",
            backend.name()
        );
        assert_eq!(
            key.kid(),
            kid_for_public_key(key.public_key_der()),
            "{}: kid must be the in-tree rule",
            backend.name()
        );
        let loaded = backend.load(key.kid()).expect("load a generated key");
        assert_eq!(loaded.kid(), key.kid());
        assert_eq!(loaded.public_key_der(), key.public_key_der());
        // Both the key `generate` returned and the one `load` finds sign as the published
        // key: a loaded kid must reach the same private key.
        let published = published_key(alg, key.public_key_der());
        assert_signs_as(backend, &key, "generated", &published);
        assert_signs_as(backend, &loaded, "loaded", &published);
        assert!(backend.kids().unwrap().iter().any(|k| k == key.kid()));
    }
    let first = backend.generate(Algorithm::ES256, 2048).unwrap();
    let second = backend.generate(Algorithm::ES256, 2048).unwrap();
    assert_ne!(first.kid(), second.kid(), "{}: fresh keys", backend.name());
    // The check above tells keys apart: one key's signature fails under another's public key.
    let signature = first.sign(SIGNING_INPUT).expect("a generated key signs");
    assert!(
        verify(
            Algorithm::ES256,
            &published_key(Algorithm::ES256, second.public_key_der()),
            SIGNING_INPUT,
            &signature,
        )
        .is_err(),
        "{}: a signature of {} verifies under the public key of {}",
        backend.name(),
        first.kid(),
        second.kid()
    );
}

pub fn unknown_kids_are_not_found(backend: &dyn KeyBackend) {
    assert!(matches!(
        backend.load("no-such-kid"),
        Err(StoreError::KeyNotFound(_))
    ));
    assert!(matches!(
        backend.delete("no-such-kid"),
        Err(StoreError::KeyNotFound(_))
    ));
}

pub fn import_names_keys_by_the_in_tree_rule_and_is_idempotent(
    backend: &dyn KeyBackend,
    rsa_pkcs8: &[u8],
) {
    let imported = backend.import(rsa_pkcs8).expect("import RSA PKCS#8");
    assert_eq!(imported.algorithm(), Algorithm::RS256);
    assert_eq!(
        imported.kid(),
        kid_for_public_key(imported.public_key_der())
    );
    let count = backend.kids().unwrap().len();
    let again = backend
        .import(rsa_pkcs8)
        .expect("importing twice is harmless");
    assert_eq!(again.kid(), imported.kid());
    assert_eq!(
        backend.kids().unwrap().len(),
        count,
        "no duplicate on re-import"
    );
    let loaded = backend.load(imported.kid()).unwrap();
    assert_eq!(loaded.public_key_der(), imported.public_key_der());
    assert_signs_as(
        backend,
        &loaded,
        "imported",
        &published_key(Algorithm::RS256, imported.public_key_der()),
    );
    // And the key it signs with is the one given: checked against n and e read from the
    // PKCS#8 input itself, not from anything the backend returned.
    assert_signs_as(backend, &loaded, "imported", &rsa_public_key_of(rsa_pkcs8));
}

pub fn malformed_imports_store_nothing(backend: &dyn KeyBackend) {
    let before = backend.kids().unwrap().len();
    assert!(matches!(
        backend.import(b"not a key"),
        Err(StoreError::Key(_))
    ));
    assert_eq!(backend.kids().unwrap().len(), before);
}

pub fn delete_forgets_a_key(backend: &dyn KeyBackend) {
    let key = backend.generate(Algorithm::ES256, 2048).unwrap();
    backend.delete(key.kid()).expect("delete");
    assert!(matches!(
        backend.load(key.kid()),
        Err(StoreError::KeyNotFound(_))
    ));
    assert!(!backend.kids().unwrap().iter().any(|k| k == key.kid()));
    assert!(matches!(
        backend.delete(key.kid()),
        Err(StoreError::KeyNotFound(_))
    ));
}

pub fn load_all_returns_every_key(backend: &dyn KeyBackend) {
    let mut kids = backend.kids().unwrap();
    let all = backend.load_all().unwrap();
    let mut loaded: Vec<String> = all.iter().map(|k| k.kid().to_owned()).collect();
    kids.sort();
    loaded.sort();
    assert_eq!(kids, loaded);
    for key in &all {
        // Each key is its kid's key and signs as its published public key.
        assert_eq!(key.kid(), kid_for_public_key(key.public_key_der()));
        assert_eq!(
            backend.load(key.kid()).unwrap().public_key_der(),
            key.public_key_der(),
            "{}: load_all and load disagree on {}",
            backend.name(),
            key.kid()
        );
        // The suite itself stores no ES512 key; one a caller stored beforehand cannot be
        // checked here (jsonwebtoken has no ES512).
        if key.algorithm() != Algorithm::ES512 {
            let published = published_key(key.algorithm(), key.public_key_der());
            assert_signs_as(backend, key, "load_all", &published);
        }
    }
}

/// The JWS signing input the suite signs (any bytes do; this is what a token's look like).
const SIGNING_INPUT: &[u8] = b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJjb25mb3JtYW5jZSJ9";

/// Asserts that `key` signs [`SIGNING_INPUT`] with a JWS-form signature that verifies under
/// `published` (`what` names where the key came from, for the message).
fn assert_signs_as(
    backend: &dyn KeyBackend,
    key: &SigningKey,
    what: &str,
    published: &DecodingKey,
) {
    let alg = key.algorithm();
    let signature = key.sign(SIGNING_INPUT).unwrap_or_else(|err| {
        panic!(
            "{}: {what} key {} does not sign: {err}",
            backend.name(),
            key.kid()
        )
    });
    if let Some(len) = alg.ecdsa_signature_len() {
        assert_eq!(
            signature.len(),
            len,
            "{}: {what} {alg} key {} must sign in JWS form (raw R||S)",
            backend.name(),
            key.kid()
        );
    }
    if let Err(reason) = verify(alg, published, SIGNING_INPUT, &signature) {
        panic!(
            "{}: the signature of the {what} {alg} key {} {SIGNATURE_MISMATCH} ({reason})",
            backend.name(),
            key.kid()
        );
    }
}

/// jsonwebtoken's key for a published PKIX DER public key: the subject public key is the
/// PKCS#1 RSAPublicKey for RSA and the SEC1 point for EC, the forms its `from_*_der` take.
fn published_key(alg: Algorithm, spki_der: &[u8]) -> DecodingKey {
    let spki = spki::SubjectPublicKeyInfoRef::from_der(spki_der)
        .unwrap_or_else(|err| panic!("the published {alg} key is not PKIX DER: {err}"));
    let public_key = spki
        .subject_public_key
        .as_bytes()
        .unwrap_or_else(|| panic!("the published {alg} key has a malformed bit string"));
    match alg {
        Algorithm::RS256 => DecodingKey::from_rsa_der(public_key),
        _ => DecodingKey::from_ec_der(public_key),
    }
}

/// jsonwebtoken's key for the public half of an RSA PKCS#8 private key, read with `pkcs8` and
/// `pkcs1` from the bytes the test gave.
fn rsa_public_key_of(pkcs8_der: &[u8]) -> DecodingKey {
    let info = pkcs8::PrivateKeyInfo::try_from(pkcs8_der).expect("the RSA input is PKCS#8 DER");
    let key = pkcs1::RsaPrivateKey::try_from(info.private_key)
        .expect("the PKCS#8 input holds a PKCS#1 RSA private key");
    DecodingKey::from_rsa_raw_components(key.modulus.as_bytes(), key.public_exponent.as_bytes())
}

/// Verifies a JWS signature with jsonwebtoken (its RustCrypto provider). ES512 is not among
/// the algorithms the suite signs with: jsonwebtoken has none.
fn verify(
    alg: Algorithm,
    key: &DecodingKey,
    signing_input: &[u8],
    signature: &[u8],
) -> Result<(), String> {
    let jwt_alg = match alg {
        Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
        Algorithm::ES384 => jsonwebtoken::Algorithm::ES384,
        Algorithm::ES512 => panic!("the conformance suite cannot check ES512 signatures"),
    };
    match jsonwebtoken::crypto::verify(
        &URL_SAFE_NO_PAD.encode(signature),
        signing_input,
        key,
        jwt_alg,
    ) {
        Ok(true) => Ok(()),
        Ok(false) => Err("jsonwebtoken: the signature does not match".into()),
        Err(err) => Err(format!("jsonwebtoken: {err}")),
    }
}
