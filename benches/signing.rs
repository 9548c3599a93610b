//! Signing cost below the RPC layer, with the real claims of a kube-apiserver Sign:
//!
//! - `raw_sign/<provider>/<alg>`: the provider's sign call alone, for aws-lc-rs (default build)
//!   and ring (always: a dev-dependency), ES512 on aws-lc-rs only;
//! - `raw_sign_2_threads/<provider>/<alg>`: the same on two threads at once, the machine's
//!   raw signing rate the RPC throughput target is compared with;
//! - `raw_sign_cold_cache/<provider>/<alg>`: one signature after 4 MiB of other memory
//!   traffic (ES256, RS256-2048), what a concurrency-1 Sign pays;
//! - `jws/check_claims` and `jws/sign/<alg>`: signet's Sign step without gRPC — claims check,
//!   key-set snapshot, signing input, signature, base64url — through this build's provider.
//!
//! Run: `cargo bench --bench signing` (add `-- raw_sign/ring` to filter).

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use signet::keyring::{KeyRing, KeySet, PublishedKey};
use signet::keys::Algorithm;
use signet::signer::TokenSigner;

#[cfg(feature = "aws-lc-rs")]
use common::provider::aws_lc_signer;
use common::provider::{ring_signer, SignFn};
use common::{KeySpec, ALL_SPECS, CLAIMS};

/// Every (provider, key) pair to measure, with the signing input a Sign with that key signs.
fn raw_signers() -> Vec<(&'static str, KeySpec, SignFn, Vec<u8>)> {
    let mut signers = Vec::new();
    for spec in ALL_SPECS {
        if !common::provider_supports(spec) {
            continue;
        }
        let (key, pkcs8) = common::generate(spec);
        let input = common::signing_input(&key);
        #[cfg(feature = "aws-lc-rs")]
        signers.push((
            "aws-lc-rs",
            spec,
            aws_lc_signer(spec, &pkcs8),
            input.clone(),
        ));
        if let Some(sign) = ring_signer(spec, &pkcs8) {
            signers.push(("ring", spec, sign, input));
        }
    }
    signers
}

fn raw_sign(c: &mut Criterion) {
    let signers = raw_signers();
    let mut group = c.benchmark_group("raw_sign");
    group.throughput(Throughput::Elements(1));
    for (provider, spec, sign, input) in &signers {
        group.bench_with_input(
            BenchmarkId::new(*provider, spec.name()),
            input,
            |b, input| b.iter(|| sign(black_box(input))),
        );
    }
    group.finish();

    // Two threads signing flat out: the rate two cores give with no RPC layer at all.
    let mut group = c.benchmark_group("raw_sign_2_threads");
    group.throughput(Throughput::Elements(1));
    for (provider, spec, sign, input) in &signers {
        group.bench_with_input(
            BenchmarkId::new(*provider, spec.name()),
            input,
            |b, input| b.iter_custom(|iters| sign_on_two_threads(sign, input, iters)),
        );
    }
    group.finish();

    // Each signature after 4 MiB of unrelated memory traffic, as between two calls of a
    // concurrency-1 load where the client and the kernel run in between: caches and branch
    // predictors start cold, which is what a Sign RPC at concurrency 1 pays.
    let mut group = c.benchmark_group("raw_sign_cold_cache");
    group.throughput(Throughput::Elements(1));
    let mut scratch = vec![0u8; 4 << 20];
    for (provider, spec, sign, input) in &signers {
        if spec.alg != Algorithm::ES256 && spec.rsa_bits != 2048 {
            continue;
        }
        group.bench_with_input(
            BenchmarkId::new(*provider, spec.name()),
            input,
            |b, input| {
                b.iter_batched(
                    || {
                        for (i, byte) in scratch.iter_mut().enumerate().step_by(64) {
                            *byte = byte.wrapping_add(i as u8);
                        }
                        black_box(&scratch);
                    },
                    |()| sign(black_box(input)),
                    BatchSize::PerIteration,
                )
            },
        );
    }
    group.finish();
}

/// Time for `iters` signatures split over two threads.
fn sign_on_two_threads(sign: &SignFn, input: &[u8], iters: u64) -> Duration {
    let started = Instant::now();
    std::thread::scope(|scope| {
        for share in [iters / 2, iters - iters / 2] {
            scope.spawn(move || {
                for _ in 0..share {
                    black_box(sign(black_box(input)));
                }
            });
        }
    });
    started.elapsed()
}

fn jws(c: &mut Criterion) {
    let mut group = c.benchmark_group("jws");
    group.throughput(Throughput::Elements(1));
    group.bench_function("check_claims", |b| {
        b.iter(|| signet::jws::check_claims(black_box(CLAIMS), 86_400).unwrap())
    });
    for spec in ALL_SPECS {
        if !common::provider_supports(spec) {
            continue;
        }
        let (key, _) = common::generate(spec);
        let keys = KeySet::new(
            Some(key.clone()),
            vec![PublishedKey::of(&key)],
            SystemTime::now(),
        )
        .unwrap();
        let signer = TokenSigner::new(
            Arc::new(KeyRing::new(keys)),
            Duration::from_secs(86_400),
            Duration::from_secs(60),
        );
        // The whole domain step of a Sign: check, snapshot, header + signing input, sign, encode.
        group.bench_function(BenchmarkId::new("sign", spec.name()), |b| {
            b.iter(|| signer.sign(black_box(CLAIMS)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, raw_sign, jws);
criterion_main!(benches);
