//! `signet keys init|rotate|import --key-dir DIR`: the lifecycle run directly on a key
//! directory, without a server. The directory is locked while a command runs, so an offline
//! command never races a server using the same store (a running server is changed through its
//! admin socket instead).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{
    FileStateStore, ImportOptions, InitialKeys, KeyLifecycle, KeyRecord, LifecycleError,
    RotationPolicy, SystemClock,
};
use crate::backend::DirectoryBackend;
use crate::keys::Algorithm;

/// The policy offline commands use. They never tick, so only the lead (for a promotion
/// without `--force`) matters; the server's own flags apply once it loads the store.
fn offline_policy(rsa_bits: usize) -> RotationPolicy {
    let mut policy = RotationPolicy::new(Duration::from_secs(60), Duration::from_secs(24 * 3600));
    policy.rsa_bits = rsa_bits;
    policy
}

/// Creates a new store in `dir` (new or empty) with one active key.
pub fn init(dir: &Path, alg: Algorithm, rsa_bits: usize) -> Result<KeyRecord, LifecycleError> {
    let backend = Arc::new(DirectoryBackend::create(dir)?);
    let store = Arc::new(FileStateStore::new(dir));
    let mut policy = offline_policy(rsa_bits);
    policy.initial_alg = alg;
    let lifecycle = KeyLifecycle::create(
        backend,
        store,
        policy,
        Arc::new(SystemClock),
        InitialKeys::Generate(alg),
    )?;
    run(async move { Ok(lifecycle.list().await.remove(0)) })
}

/// Prepares a next key in the store in `dir`; with `promote_now`, promotes it at once.
pub fn rotate(
    dir: &Path,
    alg: Option<Algorithm>,
    rsa_bits: usize,
    promote_now: bool,
) -> Result<KeyRecord, LifecycleError> {
    let lifecycle = open(dir, rsa_bits)?;
    run(async move { lifecycle.rotate(alg, promote_now).await })
}

/// Imports a PEM private key into the store in `dir`.
pub fn import(dir: &Path, pem: &[u8], opts: ImportOptions) -> Result<KeyRecord, LifecycleError> {
    let lifecycle = open(dir, 2048)?;
    run(async move { lifecycle.import(pem, opts).await })
}

/// Opens the store in `dir` for an offline command (blocking; takes the store's lock).
pub fn open(dir: &Path, rsa_bits: usize) -> Result<KeyLifecycle, LifecycleError> {
    let backend = Arc::new(DirectoryBackend::open(dir)?);
    let store = Arc::new(FileStateStore::new(dir));
    KeyLifecycle::open(
        backend,
        store,
        offline_policy(rsa_bits),
        Arc::new(SystemClock),
    )
}

fn run<T>(
    work: impl std::future::Future<Output = Result<T, LifecycleError>>,
) -> Result<T, LifecycleError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| LifecycleError::Internal(format!("cannot start a runtime: {err}")))?
        .block_on(work)
}
