//! The published key set and the one active signing key, held as an immutable snapshot that is
//! swapped atomically. Readers (every Sign and FetchKeys) load it without a lock; writers
//! (startup, rotation) build a new [`KeySet`] and publish it in one step, so a reader sees
//! either the old set or the new one, never a mix.
//!
//! This module decides nothing about rotation: it only enforces the invariants every set must
//! hold (non-empty, unique kids, the signing key published and not excluded).

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use bytes::Bytes;

use crate::keys::{Algorithm, SigningKey};

/// A verification key as FetchKeys publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedKey {
    pub kid: Arc<str>,
    pub alg: Algorithm,
    /// PKIX DER.
    pub public_key_der: Bytes,
    /// Verifies tokens but is left out of OIDC discovery and never signs (e.g. a legacy
    /// `sa.key` imported for verification only).
    pub exclude_from_oidc_discovery: bool,
}

impl PublishedKey {
    pub fn of(key: &SigningKey) -> Self {
        Self {
            kid: key.kid().into(),
            alg: key.algorithm(),
            public_key_der: key.public_key_der().clone(),
            exclude_from_oidc_discovery: false,
        }
    }
}

/// Why a key set cannot be published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeySetError {
    #[error("a key set must publish at least one key")]
    Empty,
    #[error("kid {0} is published twice; a kid must name exactly one key")]
    DuplicateKid(String),
    #[error("the signing key {0} is not in the published set")]
    SigningKeyNotPublished(String),
    #[error("the signing key {0} is excluded from OIDC discovery; kube-apiserver refuses tokens it signs")]
    SigningKeyExcluded(String),
}

/// One consistent view: what signs now, what verifies, and since when this view holds.
#[derive(Debug)]
pub struct KeySet {
    signing: Option<SigningKey>,
    published: Vec<PublishedKey>,
    changed_at: SystemTime,
}

impl KeySet {
    /// Builds a set, checking its invariants. `published` keeps its order: kube-apiserver
    /// compares kids position by position to detect a change, so order must be stable.
    pub fn new(
        signing: Option<SigningKey>,
        published: Vec<PublishedKey>,
        changed_at: SystemTime,
    ) -> Result<Self, KeySetError> {
        if published.is_empty() {
            return Err(KeySetError::Empty);
        }
        for (i, key) in published.iter().enumerate() {
            if published[..i].iter().any(|earlier| earlier.kid == key.kid) {
                return Err(KeySetError::DuplicateKid(key.kid.to_string()));
            }
        }
        if let Some(signing) = &signing {
            let entry = published
                .iter()
                .find(|p| &*p.kid == signing.kid())
                .ok_or_else(|| KeySetError::SigningKeyNotPublished(signing.kid().to_owned()))?;
            if entry.exclude_from_oidc_discovery {
                return Err(KeySetError::SigningKeyExcluded(signing.kid().to_owned()));
            }
        }
        Ok(Self {
            signing,
            published,
            changed_at,
        })
    }

    /// The set one static key makes: it signs and is the only key published, as of now.
    /// Cannot fail: one key is never a duplicate, and it is published and not excluded.
    pub fn single(key: SigningKey) -> Self {
        Self {
            published: vec![PublishedKey::of(&key)],
            signing: Some(key),
            changed_at: SystemTime::now(),
        }
    }

    /// The key that signs now, if any (a set may be verification-only for a moment during
    /// startup of a replica that has not been handed its signing key).
    pub fn signing_key(&self) -> Option<&SigningKey> {
        self.signing.as_ref()
    }

    pub fn published(&self) -> &[PublishedKey] {
        &self.published
    }

    /// When the published set last changed: FetchKeys' `data_timestamp`.
    pub fn changed_at(&self) -> SystemTime {
        self.changed_at
    }

    /// Whether `other` publishes the same keys, in the same order, with the same flags.
    pub fn publishes_same_keys_as(&self, other: &KeySet) -> bool {
        self.published == other.published
    }
}

/// The live key set. Cloning a `KeyRing` handle is not supported; share it in an `Arc`.
#[derive(Debug)]
pub struct KeyRing {
    current: ArcSwap<KeySet>,
}

impl KeyRing {
    pub fn new(initial: KeySet) -> Self {
        Self {
            current: ArcSwap::from_pointee(initial),
        }
    }

    /// The current set. Cheap and lock-free; hold it for the duration of one request.
    pub fn snapshot(&self) -> Arc<KeySet> {
        self.current.load_full()
    }

    /// A lighter borrow for the hot path: no reference-count traffic in the common case.
    pub fn load(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.current.load()
    }

    /// Publishes `next`. If it publishes exactly the keys already published, the existing
    /// `changed_at` is kept, so `data_timestamp` moves only when the published set changes.
    pub fn publish(&self, next: KeySet) {
        let current = self.current.load();
        let next = if current.publishes_same_keys_as(&next) {
            KeySet {
                changed_at: current.changed_at,
                ..next
            }
        } else {
            next
        };
        self.current.store(Arc::new(next));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::keys::LocalKey;

    #[test]
    fn a_single_key_set_is_what_new_builds_from_that_key() {
        let pem = include_bytes!("../keys/test-ec256-pkcs8.pem");
        let pkcs8 = crate::keys::pkcs8_from_pem(pem).unwrap();
        let key = SigningKey::new(Arc::new(LocalKey::from_pkcs8(&pkcs8).unwrap()));
        let single = KeySet::single(key.clone());
        let built = KeySet::new(
            Some(key.clone()),
            vec![PublishedKey::of(&key)],
            single.changed_at(),
        )
        .unwrap();
        assert_eq!(single.signing_key().map(SigningKey::kid), Some(key.kid()));
        assert!(single.publishes_same_keys_as(&built));
        assert_eq!(single.published().len(), 1);
        assert!(!single.published()[0].exclude_from_oidc_discovery);
    }

    /// A key from a PEM file (shared with other modules' tests).
    pub(crate) fn key(pem: &[u8]) -> SigningKey {
        let pkcs8 = crate::keys::pkcs8_from_pem(pem).unwrap();
        SigningKey::new(Arc::new(LocalKey::from_pkcs8(&pkcs8).unwrap()))
    }

    #[test]
    fn a_set_that_breaks_an_invariant_is_refused() {
        let a = key(include_bytes!("../keys/test-ec256-pkcs8.pem"));
        let b = key(include_bytes!("../keys/test-ec256-sec1.pem"));
        let now = SystemTime::now();
        let kid = |k: &SigningKey| k.kid().to_owned();
        let set = |signing: Option<&SigningKey>, published: Vec<PublishedKey>| {
            KeySet::new(signing.cloned(), published, now).map(|_| ())
        };
        assert_eq!(set(None, vec![]), Err(KeySetError::Empty));
        assert_eq!(
            set(Some(&a), vec![]),
            Err(KeySetError::Empty),
            "a signing key alone is not a published set"
        );
        assert_eq!(
            set(None, vec![PublishedKey::of(&a), PublishedKey::of(&a)]),
            Err(KeySetError::DuplicateKid(kid(&a)))
        );
        assert_eq!(
            set(Some(&a), vec![PublishedKey::of(&b)]),
            Err(KeySetError::SigningKeyNotPublished(kid(&a)))
        );
        let excluded = |k: &SigningKey| PublishedKey {
            exclude_from_oidc_discovery: true,
            ..PublishedKey::of(k)
        };
        assert_eq!(
            set(Some(&a), vec![excluded(&a), PublishedKey::of(&b)]),
            Err(KeySetError::SigningKeyExcluded(kid(&a)))
        );
        // An excluded key may be published, and verify, as long as it does not sign.
        assert_eq!(
            set(Some(&b), vec![excluded(&a), PublishedKey::of(&b)]),
            Ok(())
        );
        assert_eq!(set(None, vec![PublishedKey::of(&b)]), Ok(()), "verify-only");
    }
}
