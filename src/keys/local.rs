//! In-process keys signed through the crypto provider: aws-lc-rs by default, ring with
//! `--no-default-features --features ring`. Both expose the same ring-style API, so this is the
//! one module that names the provider; the differences are a handful of `cfg` lines.

use std::fmt;

use zeroize::Zeroizing;

use super::spki::{algorithm_of_pkcs8, spki_der};
use super::{Algorithm, JwsSignature, JwsSigner, KeyError, SignatureCost};

#[cfg(feature = "aws-lc-rs")]
use aws_lc_rs as provider;
#[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
use ring as provider;

#[cfg(not(any(feature = "aws-lc-rs", feature = "ring")))]
compile_error!(
    "signet needs a crypto provider: enable the `aws-lc-rs` (default) or `ring` feature"
);

use provider::rand::{SecureRandom as _, SystemRandom};
use provider::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair};

/// The name of the provider this build signs with, for logs and `--version`.
#[cfg(feature = "aws-lc-rs")]
pub const PROVIDER: &str = "aws-lc-rs";
#[cfg(all(feature = "ring", not(feature = "aws-lc-rs")))]
pub const PROVIDER: &str = "ring";

/// Seeds the provider's random generator on a thread of its own, and returns at once.
///
/// aws-lc seeds from two independent sources, the OS and CPU Jitter entropy, and sets the
/// jitter source up at a process's first random number: about 90 ms of CPU on the 2-vCPU VM
/// of BENCHMARKS.md ("Startup: aws-lc's entropy setup"). ECDSA draws a nonce per signature, so
/// with loaded keys (`--key-file`, `--key-dir`) the first Sign after a start carried that
/// setup. `serve` calls this once the keys are loaded, so the setup runs beside opening the
/// sockets; where a key was generated at start the setup is done and this costs a thread
/// spawn. ring reads `getrandom` directly and has nothing to set up.
///
/// Keep the returned guard until the process is about to exit: dropping it waits for the
/// thread. aws-lc frees its entropy source in the process's exit handlers, and a thread still
/// seeding its generator then aborts the process (seen as SIGABRT in aws-lc's
/// `tree_jitter_drbg_derive_seed`, once in 300 to 700 starts that failed within milliseconds).
pub fn warm_up_rng() -> RngWarmUp {
    let spawned = std::thread::Builder::new()
        .name("rng-warm-up".into())
        .spawn(|| {
            // Discarded: only the generator's setup matters here.
            let _ = SystemRandom::new().fill(&mut [0_u8; 1]);
        });
    // Without the thread the first random number pays the setup instead, as it did before.
    RngWarmUp(spawned.ok())
}

/// The thread [`warm_up_rng`] started; dropping this waits for it to end.
#[must_use = "dropping the guard waits for the warm-up: keep it until the process exits"]
#[derive(Debug)]
pub struct RngWarmUp(Option<std::thread::JoinHandle<()>>);

impl Drop for RngWarmUp {
    fn drop(&mut self) {
        if let Some(thread) = self.0.take() {
            // A panic there has nothing to report: the first random number retries the setup.
            let _ = thread.join();
        }
    }
}

pub(crate) fn sha256(data: &[u8]) -> impl AsRef<[u8]> {
    provider::digest::digest(&provider::digest::SHA256, data)
}

enum KeyPair {
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A private key held in this process's memory, signing through the crypto provider.
pub struct LocalKey {
    alg: Algorithm,
    key_pair: KeyPair,
    public_key_der: Vec<u8>,
    rng: SystemRandom,
}

impl LocalKey {
    /// Loads a PKCS#8 private key; the algorithm follows from the key type and size.
    pub fn from_pkcs8(pkcs8_der: &[u8]) -> Result<Self, KeyError> {
        let alg = algorithm_of_pkcs8(pkcs8_der)?;
        let rng = SystemRandom::new();
        let key_pair = match alg {
            Algorithm::RS256 => {
                let key_pair = RsaKeyPair::from_pkcs8(pkcs8_der)
                    .map_err(|err| rsa_rejection(pkcs8_der, err))?;
                check_rsa_size(rsa_modulus_len(&key_pair) * 8)?;
                KeyPair::Rsa(key_pair)
            }
            _ => KeyPair::Ecdsa(ecdsa_from_pkcs8(alg, pkcs8_der, &rng)?),
        };
        let public_key = match &key_pair {
            KeyPair::Ecdsa(kp) => kp.public_key().as_ref(),
            KeyPair::Rsa(kp) => kp.public_key().as_ref(),
        };
        let public_key_der = spki_der(alg, public_key)?;
        Ok(Self {
            alg,
            key_pair,
            public_key_der,
            rng,
        })
    }

    /// Generates a fresh key for `alg`, returning it with its PKCS#8 encoding, which a
    /// persistent backend stores and the in-memory backend drops.
    ///
    /// RSA keys are `rsa_bits` long (2048, 3072 or 4096); the value is ignored for EC.
    /// RSA generation takes from tens of milliseconds to seconds: never call this on an async
    /// executor thread.
    pub fn generate(
        alg: Algorithm,
        rsa_bits: usize,
    ) -> Result<(Self, Zeroizing<Vec<u8>>), KeyError> {
        let pkcs8 = match alg {
            Algorithm::RS256 => generate_rsa_pkcs8(rsa_bits)?,
            _ => {
                let rng = SystemRandom::new();
                let doc = EcdsaKeyPair::generate_pkcs8(ecdsa_signing_alg(alg)?, &rng)
                    .map_err(|_| KeyError::Generation)?;
                Zeroizing::new(doc.as_ref().to_vec())
            }
        };
        let key = Self::from_pkcs8(&pkcs8)?;
        Ok((key, pkcs8))
    }
}

impl JwsSigner for LocalKey {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }

    fn public_key_der(&self) -> &[u8] {
        &self.public_key_der
    }

    // Measured per provider (BENCHMARKS.md, raw signing): ES256 takes ~16-20 µs with either;
    // aws-lc-rs signs ES384 in ~0.1 ms, ES512 in ~0.18 ms and RSA-2048 in ~0.25 ms (0.7 ms on
    // the slower host of run P, where FetchKeys then waits for at most that); ring takes
    // ~0.57 ms for ES384 and ~0.6 ms for RSA-2048, and RSA-3072/4096 take 0.9-5 ms with
    // either: long enough that FetchKeys must not wait for one.
    fn signature_cost(&self) -> SignatureCost {
        let short = match (&self.key_pair, self.alg) {
            (_, Algorithm::ES256) => true,
            (KeyPair::Rsa(kp), _) => cfg!(feature = "aws-lc-rs") && rsa_modulus_len(kp) <= 256,
            (_, Algorithm::ES384 | Algorithm::ES512) => cfg!(feature = "aws-lc-rs"),
            _ => false,
        };
        if short {
            SignatureCost::Short
        } else {
            SignatureCost::Long
        }
    }

    fn sign(&self, signing_input: &[u8]) -> Result<JwsSignature, KeyError> {
        let failed = || KeyError::Signing {
            kid: super::kid_for_public_key(&self.public_key_der),
        };
        match &self.key_pair {
            // The *_FIXED_SIGNING algorithms produce JWS-form R‖S directly.
            KeyPair::Ecdsa(kp) => kp
                .sign(&self.rng, signing_input)
                .map(|sig| JwsSignature::from_slice(sig.as_ref()))
                .map_err(|_| failed()),
            KeyPair::Rsa(kp) => {
                let mut sig = JwsSignature::zeroed(rsa_modulus_len(kp));
                kp.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &self.rng,
                    signing_input,
                    &mut sig,
                )
                .map_err(|_| failed())?;
                Ok(sig)
            }
        }
    }
}

impl fmt::Debug for LocalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKey")
            .field("alg", &self.alg)
            .field("provider", &PROVIDER)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "aws-lc-rs")]
fn rsa_modulus_len(key_pair: &RsaKeyPair) -> usize {
    key_pair.public_modulus_len()
}

#[cfg(not(feature = "aws-lc-rs"))]
fn rsa_modulus_len(key_pair: &RsaKeyPair) -> usize {
    key_pair.public().modulus_len()
}

fn check_rsa_size(bits: usize) -> Result<(), KeyError> {
    if bits < 2048 {
        Err(KeyError::RsaTooSmall { bits })
    } else if bits > 8192 {
        Err(KeyError::RsaTooLarge { bits })
    } else {
        Ok(())
    }
}

/// Providers refuse small RSA keys with a generic rejection; find the size ourselves so the
/// operator reads "too small" rather than "invalid".
fn rsa_rejection(pkcs8_der: &[u8], err: provider::error::KeyRejected) -> KeyError {
    use der::Decode as _;
    let bits = pkcs8::PrivateKeyInfo::from_der(pkcs8_der)
        .ok()
        .and_then(|info| pkcs1::RsaPrivateKey::from_der(info.private_key).ok())
        .map(|key| key.modulus.as_bytes().len() * 8);
    match bits {
        Some(bits) if bits < 2048 => KeyError::RsaTooSmall { bits },
        Some(bits) if bits > 8192 => KeyError::RsaTooLarge { bits },
        _ => KeyError::Rejected(err.to_string()),
    }
}

fn ecdsa_signing_alg(
    alg: Algorithm,
) -> Result<&'static signature::EcdsaSigningAlgorithm, KeyError> {
    match alg {
        Algorithm::ES256 => Ok(&signature::ECDSA_P256_SHA256_FIXED_SIGNING),
        Algorithm::ES384 => Ok(&signature::ECDSA_P384_SHA384_FIXED_SIGNING),
        #[cfg(feature = "aws-lc-rs")]
        Algorithm::ES512 => Ok(&signature::ECDSA_P521_SHA512_FIXED_SIGNING),
        #[cfg(not(feature = "aws-lc-rs"))]
        Algorithm::ES512 => Err(KeyError::UnsupportedByProvider(Algorithm::ES512)),
        Algorithm::RS256 => Err(KeyError::UnsupportedKeyType("RSA as ECDSA".into())),
    }
}

fn ecdsa_from_pkcs8(
    alg: Algorithm,
    pkcs8_der: &[u8],
    rng: &SystemRandom,
) -> Result<EcdsaKeyPair, KeyError> {
    let signing_alg = ecdsa_signing_alg(alg)?;
    #[cfg(feature = "aws-lc-rs")]
    let parsed = {
        let _ = rng;
        EcdsaKeyPair::from_pkcs8(signing_alg, pkcs8_der)
    };
    #[cfg(not(feature = "aws-lc-rs"))]
    let parsed = EcdsaKeyPair::from_pkcs8(signing_alg, pkcs8_der, rng);
    parsed.map_err(|err| KeyError::Rejected(err.to_string()))
}

fn rsa_generation_bits(bits: usize) -> Result<usize, KeyError> {
    match bits {
        2048 | 3072 | 4096 => Ok(bits),
        bits if bits < 2048 => Err(KeyError::RsaTooSmall { bits }),
        bits => Err(KeyError::Rejected(format!(
            "cannot generate an RSA key of {bits} bits: choose 2048, 3072 or 4096"
        ))),
    }
}

#[cfg(feature = "aws-lc-rs")]
fn generate_rsa_pkcs8(bits: usize) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    use provider::encoding::AsDer as _;
    use provider::rsa::KeySize;
    let size = match rsa_generation_bits(bits)? {
        2048 => KeySize::Rsa2048,
        3072 => KeySize::Rsa3072,
        _ => KeySize::Rsa4096,
    };
    let key_pair = RsaKeyPair::generate(size).map_err(|_| KeyError::Generation)?;
    let der = key_pair.as_der().map_err(|_| KeyError::Generation)?;
    Ok(Zeroizing::new(der.as_ref().to_vec()))
}

// ring cannot generate RSA keys, so the ring build generates them with the `rsa` crate and
// signs with ring as usual.
#[cfg(not(feature = "aws-lc-rs"))]
fn generate_rsa_pkcs8(bits: usize) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    use rsa::pkcs8::EncodePrivateKey as _;
    let bits = rsa_generation_bits(bits)?;
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, bits)
        .map_err(|_| KeyError::Generation)?;
    let der = key.to_pkcs8_der().map_err(|_| KeyError::Generation)?;
    Ok(Zeroizing::new(der.as_bytes().to_vec()))
}

/// Verifies a JWS signature with a PKIX public key through the crypto provider (for
/// self-checks such as `/healthz`; tests verify with independent implementations instead).
pub(crate) fn verify_signature(
    alg: Algorithm,
    spki_der: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), ()> {
    use der::Decode as _;
    use signature::{UnparsedPublicKey, VerificationAlgorithm};

    let spki = spki::SubjectPublicKeyInfoRef::from_der(spki_der).map_err(|_| ())?;
    // RSA: the PKCS#1 RSAPublicKey; EC: the uncompressed point. Both are the bit string.
    let public_key = spki.subject_public_key.as_bytes().ok_or(())?;
    let verification: &'static dyn VerificationAlgorithm = match alg {
        Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::ES256 => &signature::ECDSA_P256_SHA256_FIXED,
        Algorithm::ES384 => &signature::ECDSA_P384_SHA384_FIXED,
        #[cfg(feature = "aws-lc-rs")]
        Algorithm::ES512 => &signature::ECDSA_P521_SHA512_FIXED,
        // ring cannot sign ES512 either, so a ring build never has such a key to check.
        #[cfg(not(feature = "aws-lc-rs"))]
        Algorithm::ES512 => return Err(()),
    };
    UnparsedPublicKey::new(verification, public_key)
        .verify(message, signature)
        .map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost_of(pem: &[u8]) -> SignatureCost {
        let pkcs8 = crate::keys::pkcs8_from_pem(pem).unwrap();
        LocalKey::from_pkcs8(&pkcs8).unwrap().signature_cost()
    }

    #[test]
    fn signature_cost_follows_the_measured_signing_times() {
        let ec256 = cost_of(include_bytes!("../../keys/test-ec256-pkcs8.pem"));
        let ec384 = cost_of(include_bytes!("../../keys/test-ec384-sec1.pem"));
        let rsa2048 = cost_of(include_bytes!("../../keys/test-rsa2048-pkcs1.pem"));
        let rsa3072 = cost_of(include_bytes!("../../keys/test-rsa3072-pkcs8.pem"));
        let rsa4096 = cost_of(include_bytes!("../../keys/test-rsa4096-pkcs1.pem"));
        assert_eq!(ec256, SignatureCost::Short);
        assert_eq!(rsa3072, SignatureCost::Long);
        assert_eq!(rsa4096, SignatureCost::Long);
        // aws-lc-rs: 0.1 ms and 0.25 ms; ring: ~0.6 ms each.
        let expected = if cfg!(feature = "aws-lc-rs") {
            SignatureCost::Short
        } else {
            SignatureCost::Long
        };
        assert_eq!(ec384, expected);
        assert_eq!(rsa2048, expected);
    }
}
