//! Shared by the benches: the real claims, key generation once per run, and the algorithm list.

#![allow(dead_code)]

pub mod provider;

use std::sync::Arc;

use signet::keys::{Algorithm, LocalKey, SigningKey};
use zeroize::Zeroizing;

/// A real kube-apiserver v1.36 Sign payload (see benches/fixtures/README.md).
pub const CLAIMS: &str = include_str!("../fixtures/apiserver-claims-pod-bound.txt");

/// What the benches sign: an algorithm and, for RSA, a modulus size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    pub alg: Algorithm,
    pub rsa_bits: usize,
}

impl KeySpec {
    pub const fn ec(alg: Algorithm) -> Self {
        Self { alg, rsa_bits: 0 }
    }

    pub const fn rsa(bits: usize) -> Self {
        Self {
            alg: Algorithm::RS256,
            rsa_bits: bits,
        }
    }

    /// `ES256`, `RS256-2048`, ...
    pub fn name(self) -> String {
        match self.alg {
            Algorithm::RS256 => format!("RS256-{}", self.rsa_bits),
            alg => alg.to_string(),
        }
    }
}

/// Every algorithm and size issue 4 measures.
pub const ALL_SPECS: [KeySpec; 6] = [
    KeySpec::ec(Algorithm::ES256),
    KeySpec::ec(Algorithm::ES384),
    KeySpec::ec(Algorithm::ES512),
    KeySpec::rsa(2048),
    KeySpec::rsa(3072),
    KeySpec::rsa(4096),
];

/// Whether signet's own provider in this build signs `spec` (ring has no P-521).
pub fn provider_supports(spec: KeySpec) -> bool {
    signet::keys::PROVIDER == "aws-lc-rs" || spec.alg != Algorithm::ES512
}

/// A fresh key through signet's provider, with its PKCS#8 (RSA generation takes up to seconds
/// for 4096 bits: done once per bench run).
pub fn generate(spec: KeySpec) -> (SigningKey, Zeroizing<Vec<u8>>) {
    let bits = if spec.rsa_bits == 0 {
        2048
    } else {
        spec.rsa_bits
    };
    let (key, pkcs8) = LocalKey::generate(spec.alg, bits).expect("generate bench key");
    (SigningKey::new(Arc::new(key)), pkcs8)
}

/// `header "." claims`, exactly what a Sign with `key` signs.
pub fn signing_input(key: &SigningKey) -> Vec<u8> {
    format!("{}.{}", key.encoded_header(), CLAIMS).into_bytes()
}
