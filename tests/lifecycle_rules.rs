//! Each lifecycle rule, fast-forwarded with a manual clock over the in-memory backend.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use signet::backend::{KeyBackend, MemoryBackend, StoreError};
use signet::keys::{Algorithm, KeyError, SigningKey};
use signet::lifecycle::Clock as _;
use signet::lifecycle::{
    ImportOptions, InitialKeys, KeyLifecycle, KeyState, LifecycleError, LifecycleState,
    ManualClock, MemoryStateStore, RotationPolicy, StateStore, VERIFIER_LEEWAY,
};
use signet::signer::TokenSigner;

const REFRESH: Duration = Duration::from_secs(60);
const LEAD: Duration = Duration::from_secs(120);
const MAX_EXP: Duration = Duration::from_secs(24 * 3600);
const PERIOD: Duration = Duration::from_secs(30 * 24 * 3600);
const SECOND: Duration = Duration::from_secs(1);

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn policy() -> RotationPolicy {
    RotationPolicy::new(REFRESH, MAX_EXP)
}

/// A backend whose `generate` can be made to fail, as an HSM that lost its session would, or
/// to take time (the clock moves on by that much while it runs), as RSA-4096 or an HSM does.
#[derive(Debug, Default)]
struct FlakyBackend {
    inner: MemoryBackend,
    failing: AtomicBool,
    generate_takes: std::sync::Mutex<Option<(Arc<ManualClock>, Duration)>>,
}

impl KeyBackend for FlakyBackend {
    fn name(&self) -> &'static str {
        "flaky"
    }
    fn generate(&self, alg: Algorithm, rsa_bits: usize) -> Result<SigningKey, StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Key(KeyError::Generation));
        }
        if let Some((clock, takes)) = &*self.generate_takes.lock().unwrap() {
            clock.advance(*takes);
        }
        self.inner.generate(alg, rsa_bits)
    }
    fn import(&self, pkcs8_der: &[u8]) -> Result<SigningKey, StoreError> {
        self.inner.import(pkcs8_der)
    }
    fn load(&self, kid: &str) -> Result<SigningKey, StoreError> {
        self.inner.load(kid)
    }
    fn kids(&self) -> Result<Vec<String>, StoreError> {
        self.inner.kids()
    }
    fn delete(&self, kid: &str) -> Result<(), StoreError> {
        self.inner.delete(kid)
    }
}

/// A state store whose saves can be made to fail (a full disk), to land without being
/// durable (the state file renamed into place, the fsync of its directory failed), or to wait
/// at a gate.
#[derive(Debug, Default)]
struct FlakyStateStore {
    inner: MemoryStateStore,
    failing: AtomicBool,
    not_durable: AtomicBool,
    gate: std::sync::Mutex<Option<SaveGate>>,
}

/// Holds the next save back: it says on `entered` that it began, then waits for `release`.
#[derive(Debug)]
struct SaveGate {
    entered: tokio::sync::oneshot::Sender<()>,
    release: std::sync::mpsc::Receiver<()>,
}

impl StateStore for FlakyStateStore {
    fn location(&self) -> &std::path::Path {
        self.inner.location()
    }
    fn load(&self) -> Result<Option<LifecycleState>, StoreError> {
        self.inner.load()
    }
    fn save(&self, state: &LifecycleState) -> Result<(), StoreError> {
        let gate = self.gate.lock().unwrap().take();
        if let Some(gate) = gate {
            gate.entered.send(()).unwrap();
            gate.release.recv().unwrap();
        }
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Io {
                action: "write",
                path: "(test)".into(),
                source: std::io::Error::other("disk full"),
            });
        }
        self.inner.save(state)?;
        if self.not_durable.load(Ordering::SeqCst) {
            return Err(StoreError::NotDurable {
                path: "(test)".into(),
                source: std::io::Error::other("I/O error"),
            });
        }
        Ok(())
    }
}

struct Fixture {
    clock: Arc<ManualClock>,
    backend: Arc<FlakyBackend>,
    store: Arc<FlakyStateStore>,
    lifecycle: Arc<KeyLifecycle>,
}

fn fixture_with(policy: RotationPolicy) -> Fixture {
    let clock = Arc::new(ManualClock::new(t0()));
    let backend = Arc::new(FlakyBackend::default());
    let store = Arc::new(FlakyStateStore::default());
    let lifecycle = KeyLifecycle::create(
        backend.clone(),
        store.clone(),
        policy,
        clock.clone(),
        InitialKeys::Generate(Algorithm::ES256),
    )
    .unwrap();
    Fixture {
        clock,
        backend,
        store,
        lifecycle: Arc::new(lifecycle),
    }
}

fn fixture() -> Fixture {
    fixture_with(policy())
}

/// The kid of the key `lifecycle` signs with now.
fn signing_kid_of(lifecycle: &KeyLifecycle) -> String {
    lifecycle
        .keyring()
        .snapshot()
        .signing_key()
        .unwrap()
        .kid()
        .to_owned()
}

impl Fixture {
    fn signing_kid(&self) -> String {
        signing_kid_of(&self.lifecycle)
    }
    fn published(&self) -> Vec<String> {
        self.lifecycle
            .keyring()
            .snapshot()
            .published()
            .iter()
            .map(|k| k.kid.to_string())
            .collect()
    }
    /// The lifecycle's record of the key `kid`.
    async fn record_of(&self, kid: &str) -> signet::lifecycle::KeyRecord {
        self.lifecycle
            .list()
            .await
            .into_iter()
            .find(|r| r.kid == kid)
            .unwrap()
    }
    /// Each key's kid and state, as the lifecycle lists them.
    async fn listed_states(&self) -> Vec<(String, KeyState)> {
        self.lifecycle
            .list()
            .await
            .into_iter()
            .map(|r| (r.kid, r.state))
            .collect()
    }
    /// Each key's kid and state, as the state store holds them.
    fn saved_states(&self) -> Vec<(String, KeyState)> {
        self.store
            .inner
            .load()
            .unwrap()
            .unwrap()
            .keys
            .iter()
            .map(|k| (k.kid.clone(), k.state))
            .collect()
    }
    fn data_timestamp(&self) -> SystemTime {
        self.lifecycle.keyring().snapshot().changed_at()
    }
    /// Signs a token through the same path as the Sign RPC.
    fn sign(&self) -> Result<String, signet::signer::SignError> {
        let signer = TokenSigner::new(self.lifecycle.keyring().clone(), MAX_EXP, REFRESH);
        let now = self.clock.now_secs();
        let claims =
            URL_SAFE_NO_PAD.encode(format!(r#"{{"exp":{},"iat":{now},"sub":"x"}}"#, now + 600));
        signer.sign(&claims).map(|jws| jws.header)
    }
}

trait NowSecs {
    fn now_secs(&self) -> u64;
}

impl NowSecs for ManualClock {
    fn now_secs(&self) -> u64 {
        use signet::lifecycle::Clock as _;
        self.now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }
}

#[tokio::test]
async fn a_new_key_is_published_at_least_the_lead_before_it_signs() {
    let f = fixture();
    let first = f.signing_kid();
    let next = f.lifecycle.rotate(None, false).await.unwrap();
    assert_eq!(next.state, KeyState::Next);
    assert_eq!(f.published(), vec![first.clone(), next.kid.clone()]);
    assert_eq!(f.signing_kid(), first, "a next key does not sign");

    f.clock.advance(LEAD - SECOND);
    match f.lifecycle.promote(false).await {
        Err(LifecycleError::NextKeyNotReady { kid, ready_at }) => {
            assert_eq!(kid, next.kid);
            assert_eq!(ready_at, t0() + LEAD);
        }
        other => panic!("expected NextKeyNotReady, got {other:?}"),
    }
    assert_eq!(f.signing_kid(), first);

    f.clock.advance(SECOND);
    let active = f.lifecycle.promote(false).await.unwrap();
    assert_eq!(active.kid, next.kid);
    assert_eq!(active.activated_at, Some(t0() + LEAD));
    assert_eq!(f.signing_kid(), next.kid);
}

#[tokio::test]
async fn force_promotes_before_the_lead_and_promote_now_needs_no_second_call() {
    let f = fixture();
    f.lifecycle.rotate(None, false).await.unwrap();
    let promoted = f.lifecycle.promote(true).await.unwrap();
    assert_eq!(f.signing_kid(), promoted.kid);

    let now = f
        .lifecycle
        .rotate(Some(Algorithm::ES384), true)
        .await
        .unwrap();
    assert_eq!(now.state, KeyState::Active);
    assert_eq!(
        now.alg,
        Algorithm::ES384,
        "a rotation may change the algorithm"
    );
    assert_eq!(f.signing_kid(), now.kid);
}

#[tokio::test]
async fn a_retired_key_stays_published_for_max_expiration_leeway_and_refresh_after_its_last_signature(
) {
    let f = fixture();
    let old = f.signing_kid();
    f.lifecycle.rotate(None, false).await.unwrap();
    f.clock.advance(LEAD);
    f.lifecycle.promote(false).await.unwrap();
    let retired_at = t0() + LEAD;
    let record = f.record_of(&old).await;
    assert_eq!(record.state, KeyState::Retired);
    assert_eq!(record.retired_at, Some(retired_at));
    let due = retired_at + MAX_EXP + VERIFIER_LEEWAY + REFRESH;
    assert_eq!(record.removal_due, Some(due));

    f.clock.set(due - SECOND);
    match f.lifecycle.remove(&old, false).await {
        Err(LifecycleError::StillVerifiesLiveTokens { kid, removal_due }) => {
            assert_eq!((kid.as_str(), removal_due), (old.as_str(), due));
        }
        other => panic!("expected StillVerifiesLiveTokens, got {other:?}"),
    }
    f.lifecycle.tick(due - SECOND).await.unwrap();
    assert!(
        f.published().contains(&old),
        "kept until the retention is over"
    );

    f.clock.set(due);
    f.lifecycle.tick(due).await.unwrap();
    assert!(!f.published().contains(&old), "removed once it is over");
    assert!(matches!(
        f.backend.load(&old),
        Err(StoreError::KeyNotFound(_))
    ));
}

#[tokio::test]
async fn data_timestamp_moves_exactly_when_the_published_set_changes() {
    let f = fixture();
    assert_eq!(f.data_timestamp(), t0());

    let t1 = f.clock.advance(Duration::from_secs(3600));
    f.lifecycle.tick(t1).await.unwrap();
    assert_eq!(f.data_timestamp(), t0(), "nothing changed");

    let next = f.lifecycle.rotate(None, false).await.unwrap();
    assert_eq!(f.data_timestamp(), t1, "a key was added");

    let t2 = f.clock.advance(LEAD);
    f.lifecycle.promote(false).await.unwrap();
    assert_eq!(
        f.data_timestamp(),
        t1,
        "promotion changes what signs, not what is published"
    );
    assert_eq!(f.published()[1], next.kid, "order stays: oldest first");

    let old = f.published()[0].clone();
    let t3 = f.clock.advance(Duration::from_secs(600));
    f.lifecycle.remove(&old, true).await.unwrap();
    assert_eq!(f.data_timestamp(), t3, "a key was removed");
    assert_ne!(t2, t3);

    let err = f.lifecycle.remove("no-such-kid", true).await.unwrap_err();
    assert!(matches!(err, LifecycleError::UnknownKid(_)), "{err}");
    assert_eq!(f.data_timestamp(), t3, "a refused change changes nothing");
}

#[tokio::test]
async fn promote_without_a_next_key_is_refused() {
    let f = fixture();
    let err = f.lifecycle.promote(true).await.unwrap_err();
    assert!(matches!(err, LifecycleError::NoNextKey), "{err}");
    assert!(err.to_string().contains("signet keys rotate"), "{err}");
}

#[tokio::test]
async fn only_one_next_key_at_a_time() {
    let f = fixture();
    let next = f.lifecycle.rotate(None, false).await.unwrap();
    let err = f.lifecycle.rotate(None, false).await.unwrap_err();
    assert!(
        matches!(&err, LifecycleError::NextKeyAlreadyPrepared(kid) if *kid == next.kid),
        "{err}"
    );
    assert_eq!(f.published().len(), 2);
}

#[tokio::test]
async fn removing_a_live_key_needs_force_and_the_active_key_is_never_removed() {
    let f = fixture();
    let first = f.signing_kid();
    let err = f.lifecycle.remove(&first, true).await.unwrap_err();
    assert!(
        matches!(err, LifecycleError::ActiveKeyCannotBeRemoved(_)),
        "{err}"
    );

    let next = f.lifecycle.rotate(None, false).await.unwrap();
    let err = f.lifecycle.remove(&next.kid, true).await.unwrap_err();
    assert!(matches!(err, LifecycleError::NotRetired(_)), "{err}");

    f.clock.advance(LEAD);
    f.lifecycle.promote(false).await.unwrap();
    let err = f.lifecycle.remove(&first, false).await.unwrap_err();
    assert!(
        matches!(err, LifecycleError::StillVerifiesLiveTokens { .. }),
        "{err}"
    );
    assert!(f.published().contains(&first));

    f.lifecycle.remove(&first, true).await.unwrap();
    assert_eq!(f.published(), vec![next.kid]);
}

#[tokio::test]
async fn retire_moves_only_a_next_key_and_a_never_used_key_may_go_at_once() {
    let f = fixture();
    let active = f.signing_kid();
    let err = f.lifecycle.retire(&active).await.unwrap_err();
    assert!(
        matches!(err, LifecycleError::CannotRetireActive(_)),
        "{err}"
    );
    let err = f.lifecycle.retire("nope").await.unwrap_err();
    assert!(matches!(err, LifecycleError::UnknownKid(_)), "{err}");

    let next = f.lifecycle.rotate(None, false).await.unwrap();
    let retired = f.lifecycle.retire(&next.kid).await.unwrap();
    assert_eq!(retired.state, KeyState::Retired);
    assert_eq!(
        retired.removal_due,
        Some(t0()),
        "a generated key that never signed verifies no token"
    );
    let err = f.lifecycle.retire(&next.kid).await.unwrap_err();
    assert!(matches!(err, LifecycleError::AlreadyRetired(_)), "{err}");
    f.lifecycle.remove(&next.kid, false).await.unwrap();
    assert_eq!(f.published(), vec![active]);
}

#[tokio::test]
async fn automatic_rotation_prepares_the_lead_before_due_and_promotes_when_due() {
    let f = fixture();
    let first = f.signing_kid();
    let due = t0() + PERIOD;
    assert_eq!(f.lifecycle.status().await.next_rotation_at, Some(due));

    f.lifecycle.tick(due - LEAD - SECOND).await.unwrap();
    assert_eq!(f.published().len(), 1, "too early to prepare");

    f.clock.set(due - LEAD);
    f.lifecycle.tick(due - LEAD).await.unwrap();
    let status = f.lifecycle.status().await;
    let next = status.next_kid.expect("prepared");
    assert_eq!(f.signing_kid(), first);

    f.clock.set(due - SECOND);
    f.lifecycle.tick(due - SECOND).await.unwrap();
    assert_eq!(f.signing_kid(), first, "not due yet");

    f.clock.set(due);
    f.lifecycle.tick(due).await.unwrap();
    assert_eq!(f.signing_kid(), next, "promoted when due");
    let status = f.lifecycle.status().await;
    assert_eq!(status.next_rotation_at, Some(due + PERIOD));
    assert_eq!(status.last_error, None);
}

#[tokio::test]
async fn rotation_period_none_disables_automatic_rotation() {
    let mut policy = policy();
    policy.rotation_period = None;
    let f = fixture_with(policy);
    let far = t0() + PERIOD * 3;
    f.lifecycle.tick(far).await.unwrap();
    assert_eq!(f.published().len(), 1);
    assert_eq!(f.lifecycle.status().await.next_rotation_at, None);
}

#[tokio::test]
async fn a_failed_rotation_step_is_recorded_retried_and_never_stops_signing() {
    let f = fixture();
    let first = f.signing_kid();
    let due = t0() + PERIOD;
    f.backend.failing.store(true, Ordering::SeqCst);
    f.clock.set(due - LEAD);
    assert!(f.lifecycle.tick(due - LEAD).await.is_err());
    let status = f.lifecycle.status().await;
    let error = status.last_error.expect("recorded");
    assert!(error.contains("key generation failed"), "{error}");
    assert_eq!(f.published(), vec![first.clone()], "nothing half-done");
    assert!(f.sign().is_ok(), "signing continues");
    assert_eq!(f.signing_kid(), first);

    // Still failing when due: the active key keeps signing past its period.
    f.clock.set(due);
    assert!(f.lifecycle.tick(due).await.is_err());
    assert!(f.sign().is_ok());

    // The backend recovers: the next tick retries and succeeds.
    f.backend.failing.store(false, Ordering::SeqCst);
    f.lifecycle.tick(due).await.unwrap();
    let status = f.lifecycle.status().await;
    assert_eq!(status.last_error, None);
    let next = status.next_kid.expect("prepared on retry");
    // Prepared late, so it still gets its full lead before it signs.
    f.lifecycle.tick(due + LEAD - SECOND).await.unwrap();
    assert_eq!(f.signing_kid(), first);
    f.clock.set(due + LEAD);
    f.lifecycle.tick(due + LEAD).await.unwrap();
    assert_eq!(f.signing_kid(), next);
}

#[tokio::test]
async fn a_change_that_cannot_be_persisted_is_not_published() {
    let f = fixture();
    let before = f.published();
    f.store.failing.store(true, Ordering::SeqCst);
    let err = f.lifecycle.rotate(None, false).await.unwrap_err();
    assert!(err.to_string().contains("disk full"), "{err}");
    assert_eq!(f.published(), before);
    assert_eq!(f.lifecycle.list().await.len(), 1);
    assert_eq!(f.data_timestamp(), t0());
    f.store.failing.store(false, Ordering::SeqCst);
    f.lifecycle.rotate(None, false).await.unwrap();
    assert_eq!(f.published().len(), 2);
}

#[tokio::test]
async fn a_change_saved_but_not_made_durable_is_served_as_the_file_holds_it() {
    let f = fixture();
    let old = f.signing_kid();
    let next = f.lifecycle.rotate(None, false).await.unwrap().kid;
    f.clock.set(t0() + LEAD);
    f.store.not_durable.store(true, Ordering::SeqCst);
    // In effect, so reported as done (the server logs the failed fsync as an error).
    f.lifecycle.promote(false).await.unwrap();
    // The file records the old key as retired from now on; had this process kept signing
    // with it, its retention would count from a time after which it still signed.
    let saved = f.store.inner.load().unwrap().unwrap();
    let state_of = |kid: &str| saved.keys.iter().find(|k| k.kid == kid).unwrap().state;
    assert_eq!(state_of(&next), KeyState::Active);
    assert_eq!(state_of(&old), KeyState::Retired);
    assert_eq!(f.signing_kid(), next);
    assert!(f.sign().is_ok());
    let listed = f.listed_states().await;
    assert_eq!(listed, f.saved_states());
    // Both stay in FetchKeys: the retired key verifies the tokens it signed.
    let mut published = f.published();
    published.sort();
    let mut kids = vec![old, next];
    kids.sort();
    assert_eq!(published, kids);
}

const SA_KEY: &[u8] = include_bytes!("fixtures/lifecycle-sa-pkcs1.key");
const WEAK_KEY: &[u8] = include_bytes!("fixtures/lifecycle-rsa1024-weak.key");
const EC_KEY: &[u8] = include_bytes!("fixtures/lifecycle-ec-sec1.key");

#[tokio::test]
async fn a_verify_only_import_is_published_never_signs_and_is_removed_only_by_force() {
    let f = fixture();
    let active = f.signing_kid();
    let record = f
        .lifecycle
        .import(SA_KEY, ImportOptions { verify_only: true })
        .await
        .unwrap();
    assert_eq!(record.alg, Algorithm::RS256);
    assert_eq!(record.state, KeyState::Retired);
    assert!(record.verify_only);
    assert!(!record.exclude_from_oidc_discovery, "see docs/lifecycle.md");
    assert_eq!(record.removal_due, None);
    assert_eq!(f.published(), vec![active.clone(), record.kid.clone()]);
    assert_eq!(f.signing_kid(), active);

    // Never removed automatically, however long it has been.
    let far = t0() + PERIOD * 12;
    f.lifecycle.tick(far).await.unwrap();
    assert!(f.published().contains(&record.kid));
    assert!(f.signing_kid() != record.kid);

    let err = f.lifecycle.remove(&record.kid, false).await.unwrap_err();
    assert!(
        matches!(err, LifecycleError::ImportedKeyNeedsForce(_)),
        "{err}"
    );
    f.lifecycle.remove(&record.kid, true).await.unwrap();
    assert!(!f.published().contains(&record.kid));
}

#[tokio::test]
async fn an_imported_key_becomes_next_under_the_in_tree_kid() {
    let f = fixture();
    let record = f
        .lifecycle
        .import(EC_KEY, ImportOptions::default())
        .await
        .unwrap();
    assert_eq!(record.state, KeyState::Next);
    // kube-apiserver's kid for this key, derived without signet's code.
    let der = common::fixture_public_key_der(
        &common::repo_root().join("tests/fixtures/lifecycle-ec-sec1.key"),
    );
    assert_eq!(record.kid, common::expected_kid(&der));
    let err = f
        .lifecycle
        .import(EC_KEY, ImportOptions { verify_only: true })
        .await
        .unwrap_err();
    assert!(matches!(err, LifecycleError::AlreadyPresent(_)), "{err}");
    f.clock.advance(LEAD);
    f.lifecycle.promote(false).await.unwrap();
    assert_eq!(f.signing_kid(), record.kid);
    // An imported key may have signed elsewhere before: once retired, it is never removed
    // automatically and removing it takes --force.
    f.lifecycle.rotate(None, true).await.unwrap();
    let retired = f
        .lifecycle
        .list()
        .await
        .into_iter()
        .find(|r| r.kid == record.kid)
        .unwrap();
    assert_eq!(retired.state, KeyState::Retired);
    assert_eq!(retired.removal_due, None);
    f.lifecycle.tick(t0() + PERIOD * 12).await.unwrap();
    assert!(f.published().contains(&record.kid));
    let err = f.lifecycle.remove(&record.kid, false).await.unwrap_err();
    assert!(
        matches!(err, LifecycleError::ImportedKeyNeedsForce(_)),
        "{err}"
    );
}

#[tokio::test]
async fn bad_imports_are_refused_and_change_nothing() {
    let f = fixture();
    let before = f.published();
    let err = f
        .lifecycle
        .import(WEAK_KEY, ImportOptions { verify_only: true })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LifecycleError::Key(KeyError::RsaTooSmall { bits: 1024 })
        ),
        "{err}"
    );
    let err = f
        .lifecycle
        .import(
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            ImportOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, LifecycleError::Key(KeyError::NoPrivateKey)),
        "{err}"
    );
    assert_eq!(f.published(), before);
    assert_eq!(f.backend.kids().unwrap().len(), 1, "nothing stored");
    assert_eq!(f.data_timestamp(), t0());
}

#[tokio::test]
async fn every_change_is_persisted_before_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys");
    let clock = Arc::new(ManualClock::new(t0()));
    let open = || common::open_key_dir(&path, policy(), clock.clone()).unwrap();
    let lifecycle = common::create_key_dir(&path, policy(), clock.clone());
    let next = lifecycle.rotate(None, false).await.unwrap();
    let before = lifecycle.list().await;
    drop(lifecycle);

    // The next key was prepared while nothing served it: it was not visible to anyone, so its
    // lead counts from when this process started publishing.
    clock.advance(Duration::from_secs(3600));
    let lifecycle = open();
    assert_eq!(lifecycle.list().await, before);
    let err = lifecycle.promote(false).await.unwrap_err();
    assert!(
        matches!(err, LifecycleError::NextKeyNotReady { ready_at, .. } if ready_at == t0() + Duration::from_secs(3600) + LEAD),
        "{err}"
    );
    clock.advance(LEAD);
    lifecycle.promote(false).await.unwrap();
    let before = lifecycle.list().await;
    drop(lifecycle);

    let lifecycle = open();
    assert_eq!(lifecycle.list().await, before);
    assert_eq!(
        lifecycle.keyring().snapshot().signing_key().unwrap().kid(),
        next.kid
    );
}

/// One server run over a shared store, as `signet serve` starts one.
fn run_with(
    backend: &Arc<FlakyBackend>,
    store: &Arc<FlakyStateStore>,
    clock: &Arc<ManualClock>,
    policy: RotationPolicy,
) -> KeyLifecycle {
    let mut lifecycle =
        KeyLifecycle::open(backend.clone(), store.clone(), policy, clock.clone()).unwrap();
    lifecycle.begin_serving().unwrap();
    lifecycle
}

#[tokio::test]
async fn after_a_restart_a_next_key_also_waits_out_the_previous_servers_lead() {
    // Run 1 tells verifiers to refresh every 10 minutes (lead 20 minutes) and prepares a key.
    let f = fixture();
    drop(f.lifecycle);
    let slow = RotationPolicy::new(10 * 60 * SECOND, MAX_EXP);
    let run1 = run_with(&f.backend, &f.store, &f.clock, slow);
    let next = run1.rotate(None, false).await.unwrap().kid;
    drop(run1);
    assert_eq!(
        f.store.load().unwrap().unwrap().served_publish_lead_secs,
        Some(20 * 60)
    );

    // Run 2 starts a minute later with a 60 s hint (lead 120 s). Verifiers still on run 1's
    // schedule may not refetch for 10 minutes: the key waits 20 minutes from the restart.
    let restart = f.clock.advance(60 * SECOND);
    let run2 = run_with(&f.backend, &f.store, &f.clock, policy());
    f.clock.set(restart + LEAD + SECOND);
    match run2.promote(false).await {
        Err(LifecycleError::NextKeyNotReady { kid, ready_at }) => {
            assert_eq!((kid, ready_at), (next.clone(), restart + 20 * 60 * SECOND));
        }
        other => panic!("expected NextKeyNotReady, got {other:?}"),
    }
    f.clock.set(restart + 20 * 60 * SECOND);
    run2.promote(false).await.unwrap();
    drop(run2);
    assert_eq!(
        f.store.load().unwrap().unwrap().served_publish_lead_secs,
        Some(LEAD.as_secs()),
        "the next restart waits out run 2's own lead"
    );

    // Run 3, with run 2's settings: the usual lead from the restart.
    let restart = f.clock.advance(SECOND);
    let run3 = run_with(&f.backend, &f.store, &f.clock, policy());
    run3.rotate(None, false).await.unwrap();
    f.clock.set(restart + LEAD);
    run3.promote(false).await.unwrap();
}

#[tokio::test]
async fn a_key_stays_published_for_the_longest_maximum_it_signed_under_across_restarts() {
    const HOUR: Duration = Duration::from_secs(3600);
    // Run 1 signs with key A under a 1 h maximum, run 2 under 48 h, run 3 is back to 1 h.
    let f = fixture_with(RotationPolicy::new(REFRESH, HOUR));
    let a = f.signing_kid();
    drop(f.lifecycle);
    let run2 = run_with(
        &f.backend,
        &f.store,
        &f.clock,
        RotationPolicy::new(REFRESH, 48 * HOUR),
    );
    let saved = f.store.load().unwrap().unwrap();
    assert_eq!(
        saved.keys[0].longest_token_lifetime_secs,
        Some(48 * 3600),
        "recorded before run 2 signs anything"
    );
    drop(run2);
    let run3 = run_with(
        &f.backend,
        &f.store,
        &f.clock,
        RotationPolicy::new(REFRESH, HOUR),
    );
    assert_eq!(
        f.store.load().unwrap().unwrap().keys[0].longest_token_lifetime_secs,
        Some(48 * 3600),
        "a shorter maximum never lowers it"
    );

    // Run 3 retires A: the 48 h tokens of run 2 keep it published, not run 3's 1 h.
    run3.rotate(None, false).await.unwrap();
    f.clock.advance(LEAD);
    run3.promote(false).await.unwrap();
    let retired_at = t0() + LEAD;
    let due = retired_at + 48 * HOUR + VERIFIER_LEEWAY + REFRESH;
    let record = run3.list().await.into_iter().find(|r| r.kid == a).unwrap();
    assert_eq!(record.removal_due, Some(due));
    let published = |lifecycle: &KeyLifecycle| {
        lifecycle
            .keyring()
            .snapshot()
            .published()
            .iter()
            .any(|k| k.kid.as_ref() == a)
    };
    run3.tick(retired_at + 2 * HOUR).await.unwrap();
    assert!(published(&run3), "run 2's tokens are still live");
    run3.tick(due - SECOND).await.unwrap();
    assert!(published(&run3));
    run3.tick(due).await.unwrap();
    assert!(!published(&run3), "removed once the longest tokens expired");

    // The key promoted in run 3 records run 3's maximum.
    let state = f.store.load().unwrap().unwrap();
    assert_eq!(state.keys[0].longest_token_lifetime_secs, Some(3600));
}

#[tokio::test]
async fn a_state_without_recorded_lifetimes_uses_the_current_maximum() {
    // States written before the lifetime was recorded: the current maximum applies.
    let f = fixture();
    let old = f.signing_kid();
    let mut state = f.store.load().unwrap().unwrap();
    state.keys[0].longest_token_lifetime_secs = None;
    f.store.save(&state).unwrap();
    drop(f.lifecycle);
    let lifecycle = KeyLifecycle::open(
        f.backend.clone(),
        f.store.clone(),
        policy(),
        f.clock.clone(),
    )
    .unwrap();
    lifecycle.rotate(None, false).await.unwrap();
    f.clock.advance(LEAD);
    lifecycle.promote(false).await.unwrap();
    let record = lifecycle
        .list()
        .await
        .into_iter()
        .find(|r| r.kid == old)
        .unwrap();
    assert_eq!(
        record.removal_due,
        Some(t0() + LEAD + MAX_EXP + VERIFIER_LEEWAY + REFRESH)
    );
}

/// A wall clock that was stepped: it reads `wall`, but only `real` has passed (as a
/// `GuardedSystemClock` judges it).
#[derive(Debug)]
struct SteppedClock {
    wall: ManualClock,
    real: ManualClock,
}

impl signet::lifecycle::Clock for SteppedClock {
    fn now(&self) -> SystemTime {
        self.wall.now()
    }
    fn judge(&self, now: SystemTime) -> SystemTime {
        now.min(self.real.now())
    }
}

#[tokio::test]
async fn a_forward_step_of_the_wall_clock_neither_promotes_nor_removes_early() {
    let clock = Arc::new(SteppedClock {
        wall: ManualClock::new(t0()),
        real: ManualClock::new(t0()),
    });
    let lifecycle = KeyLifecycle::create(
        Arc::new(MemoryBackend::new()),
        Arc::new(MemoryStateStore::new()),
        // Rotation due a day after activation: the two-day step below would make it due, and
        // the next key ready, if the tick judged by the wall clock.
        RotationPolicy {
            rotation_period: Some(24 * 3600 * SECOND),
            ..policy()
        },
        clock.clone(),
        InitialKeys::Generate(Algorithm::ES256),
    )
    .unwrap();
    let old = signing_kid_of(&lifecycle);
    let published = |kid: &str| {
        lifecycle
            .keyring()
            .snapshot()
            .published()
            .iter()
            .any(|k| &*k.kid == kid)
    };
    lifecycle.rotate(None, false).await.unwrap();

    // The wall clock jumps two days ahead, a second after the key was published.
    let stepped = clock.wall.advance(2 * 24 * 3600 * SECOND);
    clock.real.advance(SECOND);
    assert!(matches!(
        lifecycle.promote(false).await,
        Err(LifecycleError::NextKeyNotReady { .. })
    ));
    lifecycle.tick(stepped).await.unwrap();
    assert_eq!(
        signing_kid_of(&lifecycle),
        old,
        "the step must not promote the next key"
    );

    // Once the lead has really passed, the promotion goes ahead (stamped with the wall clock).
    clock.real.advance(LEAD);
    lifecycle.promote(false).await.unwrap();
    let due = stepped + MAX_EXP + VERIFIER_LEEWAY + REFRESH;

    // Another step, past the retention: the old key stays until the retention really passed.
    clock.wall.set(due + 24 * 3600 * SECOND);
    lifecycle.tick(clock.wall.now()).await.unwrap();
    assert!(published(&old), "its tokens may still be live");
    assert!(matches!(
        lifecycle.remove(&old, false).await,
        Err(LifecycleError::StillVerifiesLiveTokens { .. })
    ));
    clock.real.set(due);
    lifecycle.tick(clock.wall.now()).await.unwrap();
    assert!(!published(&old), "removed once the retention really passed");
}

#[tokio::test]
async fn an_admin_change_whose_caller_goes_away_still_completes_and_is_served() {
    use signet::admin::v1::key_admin_server::KeyAdmin as _;
    use signet::admin::{v1, KeyAdminService};

    let f = fixture();
    let old = f.signing_kid();
    let next = f.lifecycle.rotate(None, false).await.unwrap().kid;
    f.clock.advance(LEAD);
    let (entered_tx, entered) = tokio::sync::oneshot::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    *f.store.gate.lock().unwrap() = Some(SaveGate {
        entered: entered_tx,
        release: release_rx,
    });
    let service = KeyAdminService::new(f.lifecycle.clone());
    let call = tokio::spawn(async move {
        service
            .promote(tonic::Request::new(v1::PromoteRequest { force: false }))
            .await
    });
    entered.await.unwrap();
    // The client goes away while the new state is being saved: tonic drops the handler.
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    release.send(()).unwrap();

    // The listing waits for the change in progress; then what this process serves is what
    // the state holds. Cut between the save and the publish, the old key would go on
    // signing after the time the state records as its retirement.
    let listed = f.listed_states().await;
    assert_eq!(
        listed,
        [(old, KeyState::Retired), (next.clone(), KeyState::Active)]
    );
    assert_eq!(f.signing_kid(), next);
    assert_eq!(listed, f.saved_states());
}

#[tokio::test]
async fn the_old_key_retires_when_a_promote_now_rotation_ends_not_when_it_began() {
    let f = fixture();
    let old = f.signing_kid();
    // Generating the new key takes five minutes (RSA-4096 on a slow host, an HSM): the old
    // key signs all that time, so its retention must count from after it.
    let generation = Duration::from_secs(300);
    *f.backend.generate_takes.lock().unwrap() = Some((f.clock.clone(), generation));
    let promoted = f.lifecycle.rotate(None, true).await.unwrap();
    assert_eq!(promoted.activated_at, Some(t0() + generation));
    let retired = f.record_of(&old).await;
    assert_eq!(retired.retired_at, Some(t0() + generation));
    assert_eq!(
        retired.removal_due,
        Some(t0() + generation + MAX_EXP + VERIFIER_LEEWAY + REFRESH)
    );
}

#[tokio::test]
async fn a_removal_whose_state_is_not_durable_keeps_the_key_file() {
    let f = fixture();
    let old = f.signing_kid();
    f.lifecycle.rotate(None, false).await.unwrap();
    f.clock.advance(LEAD);
    f.lifecycle.promote(false).await.unwrap();
    let due = t0() + LEAD + MAX_EXP + VERIFIER_LEEWAY + REFRESH;
    f.clock.set(due);
    f.store.not_durable.store(true, Ordering::SeqCst);
    f.lifecycle.remove(&old, false).await.unwrap();
    assert!(!f.published().contains(&old));
    // After a power loss the previous state, which names the key, may be what is on disk:
    // without the key's file the store would not load.
    assert!(f.backend.load(&old).is_ok(), "the key file was deleted");
    // A durable removal deletes the file, as before.
    f.store.not_durable.store(false, Ordering::SeqCst);
    let second = f.signing_kid();
    f.lifecycle.rotate(None, false).await.unwrap();
    f.clock.advance(LEAD);
    f.lifecycle.promote(false).await.unwrap();
    f.clock.advance(MAX_EXP + VERIFIER_LEEWAY + REFRESH);
    f.lifecycle.remove(&second, false).await.unwrap();
    assert!(matches!(
        f.backend.load(&second),
        Err(StoreError::KeyNotFound(_))
    ));
}
