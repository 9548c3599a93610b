//! The heap allocations of the Sign step, counted: issue 4's hot-path rule is "no per-request
//! allocation that can be avoided". The domain step of a Sign (claims check, snapshot, signing
//! input, signature, encoding) allocates only the two strings the protobuf response is made of,
//! plus what its two crates allocate inside themselves, which is measured apart on the same
//! input and subtracted:
//! - the crypto provider's sign call (aws-lc-rs allocates a varying number of times for one
//!   ECDSA signature, ring's RSA allocates its big integers);
//! - serde_json's stack of nested values it skips (one small allocation when the claims hold an
//!   array or an object, as every real token's do).
//!
//! `allocation-counter` installs a counting global allocator in this test binary only, and
//! counts per thread, so the test harness's other threads do not disturb the figures.

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use signet::keyring::{KeyRing, KeySet};
use signet::keys::{
    Algorithm, JwsSignature, JwsSigner, KeyError, LocalKey, SignatureCost, SigningKey, PROVIDER,
};
use signet::signer::TokenSigner;

/// `SignJwtResponse.header` and `.signature`: prost gives `string` fields the type `String`.
const RESPONSE_STRINGS: u64 = 2;

/// A real key whose provider call is not counted; everything around it is.
#[derive(Debug)]
struct ProviderUncounted(LocalKey);

impl JwsSigner for ProviderUncounted {
    fn algorithm(&self) -> Algorithm {
        self.0.algorithm()
    }

    fn public_key_der(&self) -> &[u8] {
        self.0.public_key_der()
    }

    fn sign(&self, signing_input: &[u8]) -> Result<JwsSignature, KeyError> {
        let mut signed = None;
        allocation_counter::opt_out(|| signed = Some(self.0.sign(signing_input)));
        signed.expect("the closure ran")
    }

    fn signature_cost(&self) -> SignatureCost {
        self.0.signature_cost()
    }
}

#[test]
fn a_sign_allocates_only_the_strings_of_its_response() {
    let mut keys = vec![
        (Algorithm::ES256, 0),
        (Algorithm::ES384, 0),
        (Algorithm::RS256, 2048),
    ];
    if PROVIDER == "aws-lc-rs" {
        keys.push((Algorithm::ES512, 0));
    }
    let cases = common::recorded_claims();
    for (alg, rsa_bits) in keys {
        let (key, _pkcs8) = LocalKey::generate(alg, rsa_bits.max(2048)).expect("generate");
        let signer = TokenSigner::new(
            Arc::new(KeyRing::new(KeySet::single(SigningKey::new(Arc::new(
                ProviderUncounted(key),
            ))))),
            Duration::from_secs(86_400),
            Duration::from_secs(60),
        );
        for case in &cases {
            let what = format!("{alg} ({rsa_bits} bits), {}", case.name);
            let json = URL_SAFE_NO_PAD.decode(&case.claims).expect("base64url");
            let json_skips = allocation_counter::measure(|| {
                black_box(serde_json::from_slice::<serde::de::IgnoredAny>(black_box(
                    &json,
                )))
                .expect("JSON");
            });
            // Once before counting: one-time work (lazy set-up) is not per call.
            signer.sign(&case.claims).expect("sign");
            let step = allocation_counter::measure(|| {
                black_box(signer.sign(black_box(&case.claims)).expect("sign"));
            });
            assert_eq!(
                step.count_total,
                RESPONSE_STRINGS + json_skips.count_total,
                "{what}: the Sign step allocated {} times; serde_json skipping the claims' \
                 nested values allocates {} times",
                step.count_total,
                json_skips.count_total
            );
        }
    }
}

/// The signature bytes a local key returns stay off the heap up to RSA-4096 (the test above
/// counts around the provider call, inside which a local key makes them).
#[test]
fn a_signature_up_to_rsa_4096_is_held_inline() {
    let counted = allocation_counter::measure(|| {
        black_box(JwsSignature::zeroed(black_box(512)));
        black_box(JwsSignature::from_slice(black_box(&[7; 132])));
    });
    assert_eq!(counted.count_total, 0);
    // RSA-8192 spills, and the count sees it: the measurement above can fail.
    let counted = allocation_counter::measure(|| {
        black_box(JwsSignature::zeroed(black_box(1024)));
    });
    assert_eq!(counted.count_total, 1);
}
