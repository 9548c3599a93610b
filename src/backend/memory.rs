//! The in-memory backend: keys live only in this process and vanish when it exits. The
//! zero-configuration default, and the reference every other backend is tested against.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::{KeyBackend, StoreError};
use crate::keys::{Algorithm, LocalKey, SigningKey};

/// Keys held in this process's memory; nothing is ever written anywhere.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    keys: Mutex<HashMap<String, SigningKey>>,
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::default()
    }

    fn insert(&self, key: SigningKey) -> SigningKey {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.kid().to_owned(), key.clone());
        key
    }
}

impl KeyBackend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn generate(&self, alg: Algorithm, rsa_bits: usize) -> Result<SigningKey, StoreError> {
        // The PKCS#8 copy is dropped (and zeroised) here: the key never leaves memory.
        let (key, _pkcs8) = LocalKey::generate(alg, rsa_bits)?;
        Ok(self.insert(SigningKey::new(Arc::new(key))))
    }

    fn import(&self, pkcs8_der: &[u8]) -> Result<SigningKey, StoreError> {
        let key = LocalKey::from_pkcs8(pkcs8_der)?;
        Ok(self.insert(SigningKey::new(Arc::new(key))))
    }

    fn load(&self, kid: &str) -> Result<SigningKey, StoreError> {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(kid)
            .cloned()
            .ok_or_else(|| StoreError::KeyNotFound(kid.to_owned()))
    }

    fn kids(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect())
    }

    fn delete(&self, kid: &str) -> Result<(), StoreError> {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(kid)
            .map(drop)
            .ok_or_else(|| StoreError::KeyNotFound(kid.to_owned()))
    }
}
