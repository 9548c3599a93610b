//! Whole RPCs as kube-apiserver makes them: tonic's generated client (over
//! `signet::loadgen::connect`'s HTTP/2 connection) over a real Unix socket to a signet
//! server in the same process (each on its own current-thread runtime and thread, the server
//! with `signet serve`'s default busy-poll window), one call at a time, so each figure is
//! the concurrency-1 latency of that RPC:
//!
//! - `rpc/metadata`: the empty-RPC floor (transport, HTTP/2, protobuf, dispatch);
//! - `rpc/sign/<alg>`: a Sign with the real claims of a pod-bound token;
//! - `rpc/fetch_keys/<n>`: FetchKeys with 3 and 20 published keys.
//!
//! Run: `cargo bench --bench rpc`. For throughput under concurrency use `signet bench`.

mod common;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use signet::api::v1::external_jwt_signer_client::ExternalJwtSignerClient;
use signet::api::v1::{FetchKeysRequest, MetadataRequest, SignJwtRequest};
use signet::api::ExternalJwtSignerService;
use signet::keyring::{KeyRing, KeySet, PublishedKey};
use signet::keys::{Algorithm, SigningKey};
use signet::loadgen::Connection;
use signet::server::{serve, Listener, SocketAddress};
use signet::signer::TokenSigner;
use tokio::runtime::{Handle, Runtime};

use common::{KeySpec, CLAIMS};

/// A signet serving `keys` on a socket in its own temporary directory, and a client for it.
/// The server runs on `server` (one current-thread runtime on its own thread, as in
/// `signet serve`), the client's connection on `client` (one thread, as in `signet bench`).
/// The server lives as long as the process; the directory as long as the guard.
fn start(
    server: &Handle,
    client: &Runtime,
    keys: Vec<SigningKey>,
) -> (ExternalJwtSignerClient<Connection>, tempfile::TempDir) {
    let runtime = server;
    let published = keys.iter().map(PublishedKey::of).collect();
    let set = KeySet::new(keys.into_iter().next(), published, SystemTime::now()).unwrap();
    let signer = Arc::new(TokenSigner::new(
        Arc::new(KeyRing::new(set)),
        Duration::from_secs(86_400),
        Duration::from_secs(60),
    ));
    let dir = tempfile::tempdir().unwrap();
    let address = SocketAddress::Path(dir.path().join("signet.sock"));
    let listener = {
        let _guard = runtime.enter();
        Listener::bind(&address, 0o600, &[]).unwrap()
    };
    runtime.spawn(serve(
        listener,
        // `signet serve`'s default --busy-poll.
        ExternalJwtSignerService::new(signer).with_busy_poll(Duration::from_micros(200)),
        Duration::from_secs(1),
        std::future::pending(),
    ));
    let connection = client.block_on(signet::loadgen::connect(&address)).unwrap();
    let origin = tonic::codegen::http::Uri::from_static("http://localhost");
    (
        ExternalJwtSignerClient::with_origin(connection, origin),
        dir,
    )
}

/// `rpc/sign/<name>`: one Sign with the real claims, one call at a time.
fn bench_sign(
    group: &mut BenchmarkGroup<'_, WallTime>,
    runtime: &Runtime,
    name: &str,
    client: &ExternalJwtSignerClient<Connection>,
) {
    group.bench_function(BenchmarkId::new("sign", name), |b| {
        b.to_async(runtime).iter(|| {
            let mut client = client.clone();
            async move {
                client
                    .sign(SignJwtRequest {
                        claims: black_box(CLAIMS).to_owned(),
                    })
                    .await
                    .unwrap()
            }
        })
    });
}

/// A current-thread runtime driven by a thread of its own, as `signet serve` runs.
fn server_runtime() -> Handle {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let handle = runtime.handle().clone();
    std::thread::spawn(move || runtime.block_on(std::future::pending::<()>()));
    handle
}

fn rpc(c: &mut Criterion) {
    let server = server_runtime();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("rpc");
    group.throughput(Throughput::Elements(1));

    let (es256, _) = common::generate(KeySpec::ec(Algorithm::ES256));
    let (client, _dir) = start(&server, &runtime, vec![es256]);
    group.bench_function("metadata", |b| {
        b.to_async(&runtime).iter(|| {
            let mut client = client.clone();
            async move { client.metadata(MetadataRequest {}).await.unwrap() }
        })
    });
    bench_sign(&mut group, &runtime, "ES256", &client);

    let (rs2048, _) = common::generate(KeySpec::rsa(2048));
    let (rsa_client, _rsa_dir) = start(&server, &runtime, vec![rs2048]);
    bench_sign(&mut group, &runtime, "RS256-2048", &rsa_client);

    for count in [3, 20] {
        let keys = (0..count)
            .map(|_| common::generate(KeySpec::ec(Algorithm::ES256)).0)
            .collect();
        let (client, _dir) = start(&server, &runtime, keys);
        group.bench_function(BenchmarkId::new("fetch_keys", count), |b| {
            b.to_async(&runtime).iter(|| {
                let mut client = client.clone();
                async move {
                    let keys = client.fetch_keys(FetchKeysRequest {}).await.unwrap();
                    assert_eq!(keys.get_ref().keys.len(), count);
                    keys
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, rpc);
criterion_main!(benches);
