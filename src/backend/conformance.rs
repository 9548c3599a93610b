//! The behaviour every [`KeyBackend`] must show, as one suite to run against each
//! implementation (the memory and directory backends in `tests/lifecycle_backends.rs`; a
//! PKCS#11 or KMS backend in its own tests). Each function panics with a message naming the
//! broken rule.

use super::{KeyBackend, StoreError};
use crate::keys::{kid_for_public_key, Algorithm};

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
        let signature = loaded.sign(b"header.claims").expect("a loaded key signs");
        assert_eq!(Some(signature.len()), alg.ecdsa_signature_len());
        assert!(backend.kids().unwrap().iter().any(|k| k == key.kid()));
    }
    let first = backend.generate(Algorithm::ES256, 2048).unwrap();
    let second = backend.generate(Algorithm::ES256, 2048).unwrap();
    assert_ne!(first.kid(), second.kid(), "{}: fresh keys", backend.name());
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
    assert_eq!(loaded.sign(b"h.c").unwrap().len(), 256);
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
    let mut loaded: Vec<String> = backend
        .load_all()
        .unwrap()
        .iter()
        .map(|k| k.kid().to_owned())
        .collect();
    kids.sort();
    loaded.sort();
    assert_eq!(kids, loaded);
}
