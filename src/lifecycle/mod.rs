//! The key lifecycle: which key is next, active or retired, and when each moves on.
//!
//! States: **next** (published, not yet signing) → **active** (the one signing key) →
//! **retired** (published, no longer signing) → **removed** (gone from FetchKeys and from the
//! backend). The rules, with the numbers of [`RotationPolicy`]:
//! - a key is published at least `publish_lead` before it signs;
//! - a retired key stays published at least `max_token_expiration + 60 s + refresh_hint`
//!   after its last signature (60 s: how long kube-apiserver accepts a token past its `exp`),
//!   with the longest `max_token_expiration` any server ran with while the key was active;
//! - `data_timestamp` advances exactly when the published set changes (see
//!   [`KeyRing::publish`]); keys are published oldest first, so the order is stable.
//!
//! Every state change is persisted first (state store), then published (key ring), then
//! logged (kid, alg, from → to). Key material is written to the backend *before* the state
//! that names it, and a removed key leaves the state *before* its material is deleted, so a
//! crash never leaves a state entry without its key. This module decides; it never stores
//! key bytes itself and never signs.

mod clock;
pub mod offline;
mod policy;
mod store;

use std::fmt;
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::{Duration, SystemTime};

use zeroize::Zeroizing;

use crate::backend::KeyBackend;
use crate::keyring::{KeyRing, KeySet, KeySetError, PublishedKey};
use crate::keys::{self, Algorithm, KeyError, LocalKey, SigningKey};
use crate::timestamp::rfc3339;

pub use crate::backend::StoreError;
pub use clock::{Clock, GuardedSystemClock, ManualClock, SystemClock};
pub use policy::{RotationPolicy, DEFAULT_ROTATION_PERIOD, VERIFIER_LEEWAY};
pub use store::{
    FileStateStore, KeyOrigin, LifecycleState, MemoryStateStore, StateStore, StoredKey, STATE_FILE,
};

/// Where a key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Published, not yet signing.
    Next,
    /// The one key that signs.
    Active,
    /// Published, no longer signing (or never: verify-only imports).
    Retired,
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyState::Next => "next",
            KeyState::Active => "active",
            KeyState::Retired => "retired",
        })
    }
}

/// One key as an operator sees it (`signet keys list`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyRecord {
    pub kid: String,
    #[serde(serialize_with = "serialize_alg")]
    pub alg: Algorithm,
    pub state: KeyState,
    pub created_at: SystemTime,
    /// When it first appeared in FetchKeys.
    pub published_at: SystemTime,
    pub activated_at: Option<SystemTime>,
    pub retired_at: Option<SystemTime>,
    /// When a retired key may be removed: `retired_at + max_token_expiration + 60 s +
    /// refresh_hint` (with the longest maximum in force while it was active) for a generated
    /// key that signed; `retired_at` for a generated key that never signed;
    /// `None` for imported keys (tokens they signed before the import were issued elsewhere:
    /// only an operator may remove them, with `--force`) and for keys not retired.
    pub removal_due: Option<SystemTime>,
    /// Imported with `--verify-only`: published, never signs.
    pub verify_only: bool,
    pub exclude_from_oidc_discovery: bool,
}

fn serialize_alg<S: serde::Serializer>(alg: &Algorithm, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(alg.as_str())
}

/// The lifecycle at a glance (`signet keys status`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct LifecycleStatus {
    pub active_kid: Option<String>,
    pub next_kid: Option<String>,
    /// When the next key is due to become active; `None` when automatic rotation is disabled.
    pub next_rotation_at: Option<SystemTime>,
    /// The last failed automatic step, if the latest tick failed.
    pub last_error: Option<String>,
    /// FetchKeys `data_timestamp`: when the published set last changed.
    pub data_timestamp: SystemTime,
}

/// How to import a key.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImportOptions {
    /// Publish for verification only; never sign with it.
    pub verify_only: bool,
}

/// The keys a new store starts with.
#[derive(Debug)]
pub enum InitialKeys {
    /// One freshly generated key, active.
    Generate(Algorithm),
    /// PKCS#8 DER keys: the first active, the others verify-only.
    Import(Vec<Zeroizing<Vec<u8>>>),
}

/// Why a lifecycle operation was refused or failed. Nothing changed when one is returned,
/// except where a variant says so.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LifecycleError {
    #[error("no key has kid {0}")]
    UnknownKid(String),
    #[error("there is no next key to promote; prepare one with `signet keys rotate`")]
    NoNextKey,
    #[error("next key {kid} has not been published for the publish lead yet; it can be promoted at {} (or now with --force, if every verifier already has it)", rfc3339(*.ready_at))]
    NextKeyNotReady { kid: String, ready_at: SystemTime },
    #[error("key {0} is already prepared as the next key; promote it, or retire it first")]
    NextKeyAlreadyPrepared(String),
    #[error("key {kid} may still verify live tokens until {}; remove it then, or now with --force", rfc3339(*.removal_due))]
    StillVerifiesLiveTokens {
        kid: String,
        removal_due: SystemTime,
    },
    #[error("key {0} was imported: tokens it signed before the import were issued outside signet and their lifetime is unknown; remove it with --force once none is in use")]
    ImportedKeyNeedsForce(String),
    #[error("key {0} is the active key and cannot be removed; promote a next key first")]
    ActiveKeyCannotBeRemoved(String),
    #[error("key {0} is the active key and cannot be retired; promote a next key first")]
    CannotRetireActive(String),
    #[error("key {0} is already retired")]
    AlreadyRetired(String),
    #[error("key {0} is the next key; retire it before removing it")]
    NotRetired(String),
    #[error("key {0} is already in the store")]
    AlreadyPresent(String),
    #[error("{0} already holds a key store")]
    AlreadyInitialized(String),
    #[error("{0}")]
    Key(KeyError),
    #[error("{0}")]
    Store(StoreError),
    #[error("the key set is inconsistent: {0}")]
    KeySet(#[from] KeySetError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for LifecycleError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Key(key) => LifecycleError::Key(key),
            other => LifecycleError::Store(other),
        }
    }
}

impl From<KeyError> for LifecycleError {
    fn from(err: KeyError) -> Self {
        LifecycleError::Key(err)
    }
}

#[derive(Debug, Clone)]
struct Entry {
    stored: StoredKey,
    key: SigningKey,
}

/// The key lifecycle over one backend and one state store, publishing into a [`KeyRing`].
/// Shared as `Arc<KeyLifecycle>`; every state change is serialised by one async lock.
///
/// The state-changing calls (`rotate`, `promote`, `retire`, `remove`, `import`, `tick`) must
/// run to their end once started: one dropped between saving the state and publishing it
/// leaves this process serving keys the state no longer records. A caller that may be
/// cancelled runs them in a task of its own, as the admin service does.
#[derive(Debug)]
pub struct KeyLifecycle {
    backend: Arc<dyn KeyBackend>,
    store: Arc<dyn StateStore>,
    policy: RotationPolicy,
    clock: Arc<dyn Clock>,
    keyring: Arc<KeyRing>,
    entries: tokio::sync::Mutex<Vec<Entry>>,
    last_error: StdMutex<Option<String>>,
    /// When this process started publishing. A next key prepared while no server ran (offline
    /// `signet keys rotate`) was not visible to anyone before: its lead counts from here.
    serving_since: SystemTime,
    /// The publish lead of the server that served the store before this process (from the
    /// state): a next key also waits that long after `serving_since`.
    previous_lead: Duration,
    /// What the state records as the last serving server's lead; this server's own once
    /// [`begin_serving`](Self::begin_serving) ran, else the stored value, kept as it was.
    served_lead_secs: Option<u64>,
}

impl KeyLifecycle {
    /// Opens an existing store: loads and checks the state and every key it names, and
    /// publishes them. Blocking (reads files, parses keys): call it before the runtime starts
    /// or from `spawn_blocking`.
    pub fn open(
        backend: Arc<dyn KeyBackend>,
        store: Arc<dyn StateStore>,
        policy: RotationPolicy,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, LifecycleError> {
        let location = store.location().to_owned();
        let state = store.load()?.ok_or_else(|| StoreError::NotInitialized {
            dir: location
                .parent()
                .map(|p| p.to_owned())
                .unwrap_or_else(|| location.clone()),
            file: STATE_FILE,
        })?;
        state.validate(&location)?;
        let served_lead_secs = state.served_publish_lead_secs;
        let mut entries = Vec::with_capacity(state.keys.len());
        for stored in state.keys {
            let key = match backend.load(&stored.kid) {
                Ok(key) => key,
                Err(StoreError::KeyNotFound(kid)) => {
                    return Err(StoreError::MissingKeyFile {
                        path: location,
                        key_file: backend.key_location(&kid),
                        kid,
                    }
                    .into())
                }
                Err(err) => return Err(err.into()),
            };
            if key.algorithm() != stored.alg {
                return Err(StoreError::CorruptState {
                    path: location,
                    reason: format!(
                        "key {} is recorded as {} but the stored key is {}",
                        stored.kid,
                        stored.alg,
                        key.algorithm()
                    ),
                }
                .into());
            }
            entries.push(Entry { stored, key });
        }
        for kid in backend.kids()? {
            if !entries.iter().any(|e| e.stored.kid == kid) {
                tracing::warn!(
                    kid = %kid,
                    key = %backend.key_location(&kid),
                    state = %location.display(),
                    "stored key has no lifecycle state entry: left alone (it may be a half-finished generate or import); delete it by hand if it is not needed"
                );
            }
        }
        let mut lifecycle = Self::assemble(backend, store, policy, clock, entries)?;
        lifecycle.previous_lead = Duration::from_secs(served_lead_secs.unwrap_or(0));
        lifecycle.served_lead_secs = served_lead_secs;
        let snapshot = lifecycle.keyring.snapshot();
        tracing::info!(
            store = %location.display(),
            keys = snapshot.published().len(),
            signing_kid = snapshot.signing_key().map(|k| k.kid()).unwrap_or(""),
            "key store loaded"
        );
        Ok(lifecycle)
    }

    /// Creates a new store with its first keys. Refuses a store that already holds state.
    /// Blocking, like [`open`](Self::open).
    pub fn create(
        backend: Arc<dyn KeyBackend>,
        store: Arc<dyn StateStore>,
        policy: RotationPolicy,
        clock: Arc<dyn Clock>,
        initial: InitialKeys,
    ) -> Result<Self, LifecycleError> {
        if store.load()?.is_some() {
            return Err(LifecycleError::AlreadyInitialized(
                store.location().display().to_string(),
            ));
        }
        let now = clock.now();
        let mut entries: Vec<Entry> = Vec::new();
        match initial {
            InitialKeys::Generate(alg) => {
                let key = backend.generate(alg, policy.rsa_bits)?;
                let mut stored = new_stored(&key, KeyState::Active, KeyOrigin::Generated, now);
                record_token_lifetime(&mut stored, policy.max_token_expiration);
                entries.push(Entry { stored, key });
            }
            InitialKeys::Import(keys) => {
                for pkcs8 in keys {
                    let key = backend.import(&pkcs8)?;
                    if entries.iter().any(|e| e.stored.kid == key.kid()) {
                        return Err(LifecycleError::AlreadyPresent(key.kid().to_owned()));
                    }
                    let stored = if entries.is_empty() {
                        let mut stored =
                            new_stored(&key, KeyState::Active, KeyOrigin::Imported, now);
                        record_token_lifetime(&mut stored, policy.max_token_expiration);
                        stored
                    } else {
                        let mut stored =
                            new_stored(&key, KeyState::Retired, KeyOrigin::Imported, now);
                        stored.verify_only = true;
                        stored
                    };
                    entries.push(Entry { stored, key });
                }
            }
        }
        let state = LifecycleState::new(entries.iter().map(|e| e.stored.clone()).collect());
        state.validate(store.location())?;
        store.save(&state)?;
        for entry in &entries {
            log_transition(&entry.stored, "none");
        }
        Self::assemble(backend, store, policy, clock, entries)
    }

    fn assemble(
        backend: Arc<dyn KeyBackend>,
        store: Arc<dyn StateStore>,
        policy: RotationPolicy,
        clock: Arc<dyn Clock>,
        entries: Vec<Entry>,
    ) -> Result<Self, LifecycleError> {
        let serving_since = clock.now();
        let keyring = Arc::new(KeyRing::new(key_set(&entries, serving_since)?));
        Ok(Self {
            serving_since,
            previous_lead: Duration::ZERO,
            served_lead_secs: None,
            backend,
            store,
            policy,
            clock,
            keyring,
            entries: tokio::sync::Mutex::new(entries),
            last_error: StdMutex::new(None),
        })
    }

    /// For a server about to sign: records in the state that the active key may now sign
    /// tokens as long as this server's `max_token_expiration`, before the first Sign, so that a
    /// later run with a shorter maximum still keeps the key published for them once it
    /// retires; and records this server's publish lead for the next one (see
    /// [`LifecycleState::served_publish_lead_secs`]). Writes the state only when either
    /// changes. Takes `&mut self`, so it runs before the lifecycle is shared; blocking, like
    /// [`open`](Self::open).
    pub fn begin_serving(&mut self) -> Result<(), LifecycleError> {
        let lead = Some(self.policy.publish_lead.as_secs());
        let entries = self.entries.get_mut();
        let mut keys: Vec<StoredKey> = entries.iter().map(|e| e.stored.clone()).collect();
        if let Some(active) = keys.iter_mut().find(|k| k.state == KeyState::Active) {
            record_token_lifetime(active, self.policy.max_token_expiration);
        }
        let unchanged = self.served_lead_secs == lead
            && keys.iter().zip(entries.iter()).all(|(k, e)| *k == e.stored);
        if unchanged {
            return Ok(());
        }
        let state = checked_state(self.store.as_ref(), keys, lead)?;
        self.store.save(&state)?;
        for (entry, stored) in entries.iter_mut().zip(state.keys) {
            entry.stored = stored;
        }
        self.served_lead_secs = lead;
        Ok(())
    }

    /// The key ring Sign and FetchKeys read.
    pub fn keyring(&self) -> &Arc<KeyRing> {
        &self.keyring
    }

    pub fn policy(&self) -> &RotationPolicy {
        &self.policy
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Every key, in publication order.
    pub async fn list(&self) -> Vec<KeyRecord> {
        let entries = self.entries.lock().await;
        entries.iter().map(|e| self.record(&e.stored)).collect()
    }

    pub async fn status(&self) -> LifecycleStatus {
        let entries = self.entries.lock().await;
        let kid_in = |state| {
            entries
                .iter()
                .find(|e| e.stored.state == state)
                .map(|e| e.stored.kid.clone())
        };
        LifecycleStatus {
            active_kid: kid_in(KeyState::Active),
            next_kid: kid_in(KeyState::Next),
            next_rotation_at: self.rotation_due(&entries),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            data_timestamp: self.keyring.snapshot().changed_at(),
        }
    }

    /// Prepares a next key now (published, not signing). `alg` `None` keeps the active key's
    /// algorithm. `promote_now` also promotes it at once, skipping the publish lead.
    pub async fn rotate(
        &self,
        alg: Option<Algorithm>,
        promote_now: bool,
    ) -> Result<KeyRecord, LifecycleError> {
        let mut entries = self.entries.lock().await;
        let now = self.clock.now();
        let record = self.rotate_locked(&mut entries, alg, now).await?;
        if promote_now {
            self.promote_locked(&mut entries, true, now).await
        } else {
            Ok(record)
        }
    }

    /// Makes the next key active; the active key becomes retired. Without `force`, refuses
    /// until the next key has been published for the publish lead.
    pub async fn promote(&self, force: bool) -> Result<KeyRecord, LifecycleError> {
        let mut entries = self.entries.lock().await;
        let now = self.clock.now();
        self.promote_locked(&mut entries, force, now).await
    }

    /// Retires a next key (it stays published until its removal is due). The active key
    /// cannot be retired: promote another key instead.
    pub async fn retire(&self, kid: &str) -> Result<KeyRecord, LifecycleError> {
        let mut entries = self.entries.lock().await;
        let now = self.clock.now();
        let index = find(&entries, kid)?;
        match entries[index].stored.state {
            KeyState::Active => return Err(LifecycleError::CannotRetireActive(kid.to_owned())),
            KeyState::Retired => return Err(LifecycleError::AlreadyRetired(kid.to_owned())),
            KeyState::Next => {}
        }
        let mut next = entries.clone();
        next[index].stored.state = KeyState::Retired;
        next[index].stored.retired_at = Some(now);
        self.commit(&mut entries, next, now).await?;
        log_transition(&entries[index].stored, "next");
        Ok(self.record(&entries[index].stored))
    }

    /// Removes a retired key from FetchKeys and from the backend. Without `force`, refuses
    /// while it may still verify live tokens.
    pub async fn remove(&self, kid: &str, force: bool) -> Result<(), LifecycleError> {
        let mut entries = self.entries.lock().await;
        let now = self.clock.now();
        self.remove_locked(&mut entries, kid, force, now).await
    }

    /// Imports a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC) under the in-tree kid.
    /// Verify-only keys are published (not excluded from OIDC discovery, see
    /// `docs/lifecycle.md`) and never sign; other keys become the next key.
    pub async fn import(
        &self,
        pem: &[u8],
        opts: ImportOptions,
    ) -> Result<KeyRecord, LifecycleError> {
        let pkcs8 = keys::pkcs8_from_pem(pem)?;
        let mut entries = self.entries.lock().await;
        let now = self.clock.now();
        // Check the key (type, size) and find its kid before anything is stored.
        let kid = {
            let pkcs8 = pkcs8.clone();
            blocking(move || {
                let key = LocalKey::from_pkcs8(&pkcs8)?;
                Ok(SigningKey::new(Arc::new(key)).kid().to_owned())
            })
            .await?
        };
        if entries.iter().any(|e| e.stored.kid == kid) {
            return Err(LifecycleError::AlreadyPresent(kid));
        }
        if !opts.verify_only {
            if let Some(next) = entries.iter().find(|e| e.stored.state == KeyState::Next) {
                return Err(LifecycleError::NextKeyAlreadyPrepared(
                    next.stored.kid.clone(),
                ));
            }
        }
        let backend = Arc::clone(&self.backend);
        let key = blocking(move || backend.import(&pkcs8)).await?;
        // Published when the state is saved, after the checks and the store above.
        let now = now.max(self.clock.now());
        let stored = if opts.verify_only {
            let mut stored = new_stored(&key, KeyState::Retired, KeyOrigin::Imported, now);
            stored.verify_only = true;
            stored
        } else {
            new_stored(&key, KeyState::Next, KeyOrigin::Imported, now)
        };
        let mut next = entries.clone();
        next.push(Entry { stored, key });
        self.commit(&mut entries, next, now).await?;
        let entry = entries.last().expect("just added");
        log_transition(&entry.stored, "none");
        Ok(self.record(&entry.stored))
    }

    /// One step of automatic rotation at `now`: prepares the next key when the rotation is due
    /// within the publish lead, promotes it when the rotation is due and the lead has passed,
    /// and removes retired keys whose retention is over. A failure is logged and kept as
    /// [`LifecycleStatus::last_error`]; nothing changes in what signs, and the next tick
    /// retries.
    pub async fn tick(&self, now: SystemTime) -> Result<(), LifecycleError> {
        let result = self.tick_locked(now).await;
        let mut last_error = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match &result {
            Ok(()) => *last_error = None,
            Err(err) => {
                tracing::error!(error = %err, "automatic key rotation step failed; signing continues with the active key, retrying next tick");
                *last_error = Some(format!("{}: {err}", rfc3339(now)));
            }
        }
        result
    }

    /// Runs [`tick`](Self::tick) every [`RotationPolicy::tick_interval`] until the task is
    /// aborted.
    pub fn spawn_rotation_task(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let lifecycle = Arc::clone(self);
        let interval = self.policy.tick_interval();
        tokio::spawn(async move {
            let mut timer = tokio::time::interval(interval);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                timer.tick().await;
                let now = lifecycle.clock.now();
                // Errors are logged and recorded by tick itself.
                let _ = lifecycle.tick(now).await;
            }
        })
    }

    async fn tick_locked(&self, now: SystemTime) -> Result<(), LifecycleError> {
        let mut entries = self.entries.lock().await;
        // Whether a lead or a retention is over is judged by elapsed time; what is recorded
        // is `now` (see `Clock::judge`).
        let judged = self.clock.judge(now);
        if let Some(due) = self.rotation_due(&entries) {
            let lead = self.policy.publish_lead;
            match entries.iter().find(|e| e.stored.state == KeyState::Next) {
                None if judged + lead >= due => {
                    let record = self.rotate_locked(&mut entries, None, now).await?;
                    tracing::info!(kid = %record.kid, due = %rfc3339(due), "automatic rotation: next key prepared");
                }
                Some(next) if judged >= due && judged >= self.ready_at(&next.stored) => {
                    let record = self.promote_locked(&mut entries, false, now).await?;
                    tracing::info!(kid = %record.kid, "automatic rotation: next key promoted");
                }
                _ => {}
            }
        }
        let expired: Vec<String> = entries
            .iter()
            .filter(|e| self.removal_due(&e.stored).is_some_and(|due| due <= judged))
            .map(|e| e.stored.kid.clone())
            .collect();
        for kid in expired {
            self.remove_locked(&mut entries, &kid, false, now).await?;
        }
        Ok(())
    }

    /// When the active key is due to be replaced, if automatic rotation is on.
    fn rotation_due(&self, entries: &[Entry]) -> Option<SystemTime> {
        let period = self.policy.rotation_period?;
        let active = entries
            .iter()
            .find(|e| e.stored.state == KeyState::Active)?;
        Some(
            active
                .stored
                .activated_at
                .unwrap_or(active.stored.published_at)
                + period,
        )
    }

    async fn rotate_locked(
        &self,
        entries: &mut Vec<Entry>,
        alg: Option<Algorithm>,
        now: SystemTime,
    ) -> Result<KeyRecord, LifecycleError> {
        if let Some(next) = entries.iter().find(|e| e.stored.state == KeyState::Next) {
            return Err(LifecycleError::NextKeyAlreadyPrepared(
                next.stored.kid.clone(),
            ));
        }
        let alg = match alg {
            Some(alg) => alg,
            None => entries
                .iter()
                .find(|e| e.stored.state == KeyState::Active)
                .map(|e| e.stored.alg)
                .unwrap_or(self.policy.initial_alg),
        };
        let backend = Arc::clone(&self.backend);
        let rsa_bits = self.policy.rsa_bits;
        // The key is stored before the state names it: a crash here leaves an orphan key,
        // never a state entry without its key.
        let key = blocking(move || backend.generate(alg, rsa_bits)).await?;
        // Generating an RSA-4096 key (or asking an HSM) can take seconds: the key is published
        // when the state is saved, after that, so its lead counts from then.
        let now = now.max(self.clock.now());
        let mut next = entries.clone();
        next.push(Entry {
            stored: new_stored(&key, KeyState::Next, KeyOrigin::Generated, now),
            key,
        });
        self.commit(entries, next, now).await?;
        let entry = entries.last().expect("just added");
        log_transition(&entry.stored, "none");
        Ok(self.record(&entry.stored))
    }

    async fn promote_locked(
        &self,
        entries: &mut Vec<Entry>,
        force: bool,
        now: SystemTime,
    ) -> Result<KeyRecord, LifecycleError> {
        let next_index = entries
            .iter()
            .position(|e| e.stored.state == KeyState::Next)
            .ok_or(LifecycleError::NoNextKey)?;
        let ready_at = self.ready_at(&entries[next_index].stored);
        let early = self.clock.judge(now) < ready_at;
        if !force && early {
            return Err(LifecycleError::NextKeyNotReady {
                kid: entries[next_index].stored.kid.clone(),
                ready_at,
            });
        }
        let active_index = entries
            .iter()
            .position(|e| e.stored.state == KeyState::Active);
        // The old key signs until the new state is published, which is after whatever the
        // caller waited for since reading `now` (the lock, an RSA or HSM key generation for
        // `rotate --promote-now`): its retention counts from the latest time, never earlier.
        let now = now.max(self.clock.now());
        let mut next = entries.clone();
        if let Some(i) = active_index {
            next[i].stored.state = KeyState::Retired;
            next[i].stored.retired_at = Some(now);
        }
        next[next_index].stored.state = KeyState::Active;
        next[next_index].stored.activated_at = Some(now);
        record_token_lifetime(
            &mut next[next_index].stored,
            self.policy.max_token_expiration,
        );
        self.commit(entries, next, now).await?;
        if let Some(i) = active_index {
            log_transition(&entries[i].stored, "active");
        }
        log_transition(&entries[next_index].stored, "next");
        if force && early {
            tracing::warn!(kid = %entries[next_index].stored.kid, "promoted before the publish lead was over (forced): verifiers that have not refreshed yet reject its tokens until they do");
        }
        Ok(self.record(&entries[next_index].stored))
    }

    async fn remove_locked(
        &self,
        entries: &mut Vec<Entry>,
        kid: &str,
        force: bool,
        now: SystemTime,
    ) -> Result<(), LifecycleError> {
        let index = find(entries, kid)?;
        let stored = &entries[index].stored;
        match stored.state {
            KeyState::Active => {
                return Err(LifecycleError::ActiveKeyCannotBeRemoved(kid.to_owned()))
            }
            KeyState::Next => return Err(LifecycleError::NotRetired(kid.to_owned())),
            KeyState::Retired => {}
        }
        if !force {
            if stored.origin == KeyOrigin::Imported {
                return Err(LifecycleError::ImportedKeyNeedsForce(kid.to_owned()));
            }
            if let Some(removal_due) = self.removal_due(stored) {
                if self.clock.judge(now) < removal_due {
                    return Err(LifecycleError::StillVerifiesLiveTokens {
                        kid: kid.to_owned(),
                        removal_due,
                    });
                }
            }
        }
        let mut next = entries.clone();
        let removed = next.remove(index);
        // The state forgets the key before its material goes: a crash in between leaves an
        // orphan key (logged at the next start), never a state entry without its key.
        if self.commit(entries, next, now).await? == Saved::NotDurably {
            // After a power loss the old state, which names this key, may come back: with
            // its file deleted, the store would not load. Keep the file as an orphan.
            tracing::warn!(kid = %kid, "key removed from the lifecycle state, which is not durable yet: its stored copy is kept as an orphan; delete it by hand once the store is healthy");
            log_removed(kid, &removed, force);
            return Ok(());
        }
        let backend = Arc::clone(&self.backend);
        let owned_kid = kid.to_owned();
        if let Err(err) = blocking(move || backend.delete(&owned_kid)).await {
            tracing::warn!(kid = %kid, error = %err, "key removed from the lifecycle state but its stored copy could not be deleted; it may be left as an orphan");
        }
        log_removed(kid, &removed, force);
        Ok(())
    }

    /// Persists `next`, then publishes it, then makes it the current entries. On error
    /// nothing changed. One failure is not an error here: the state file was replaced and only
    /// the fsync of its directory failed ([`Saved::NotDurably`]). The file then holds `next`,
    /// which a restart would read, so this process serves `next` too, logs the failure as an
    /// error, and the caller goes on as after any change, except that it destroys nothing the
    /// old state names (a removed key's file stays). Serving the old set instead would let a
    /// key that the file records as retired at a given time keep signing after it, while its
    /// retention counts from that time.
    ///
    /// Not cancel-safe: a future dropped after the save and before the publish leaves this
    /// process serving what the state no longer records. Callers that can be cancelled (an
    /// admin RPC whose client goes away) run the change in a task of its own.
    async fn commit(
        &self,
        entries: &mut Vec<Entry>,
        next: Vec<Entry>,
        now: SystemTime,
    ) -> Result<Saved, LifecycleError> {
        let state = checked_state(
            self.store.as_ref(),
            next.iter().map(|e| e.stored.clone()).collect(),
            self.served_lead_secs,
        )?;
        let key_set = key_set(&next, now)?;
        let store = Arc::clone(&self.store);
        let saved = match blocking(move || store.save(&state)).await {
            Ok(()) => Saved::Durably,
            Err(LifecycleError::Store(err @ StoreError::NotDurable { .. })) => {
                tracing::error!(error = %err, "key state saved but not made durable");
                Saved::NotDurably
            }
            Err(err) => return Err(err),
        };
        self.keyring.publish(key_set);
        *entries = next;
        Ok(saved)
    }

    /// When a next key has been visible in FetchKeys for the publish lead: since it was
    /// published, and since this process started serving it, for the longer of this server's
    /// lead and the previous server's (verifiers told to refresh less often before a restart
    /// keep that schedule until their next fetch).
    fn ready_at(&self, stored: &StoredKey) -> SystemTime {
        let lead = self.policy.publish_lead;
        (stored.published_at + lead).max(self.serving_since + lead.max(self.previous_lead))
    }

    /// When a retired key may go. Imported keys have none: they may have signed tokens
    /// before the import (kube-apiserver's `sa.key` signed tokens of up to a year, legacy
    /// Secret tokens never expire) and signet cannot know when the last one expires.
    fn removal_due(&self, stored: &StoredKey) -> Option<SystemTime> {
        if stored.state != KeyState::Retired || stored.origin == KeyOrigin::Imported {
            return None;
        }
        let retired_at = stored.retired_at?;
        if stored.activated_at.is_none() {
            return Some(retired_at); // generated, never signed anything
        }
        let lifetime = Duration::from_secs(stored.longest_token_lifetime_secs.unwrap_or(0));
        Some(retired_at + self.policy.retention_for(lifetime))
    }

    fn record(&self, stored: &StoredKey) -> KeyRecord {
        KeyRecord {
            kid: stored.kid.clone(),
            alg: stored.alg,
            state: stored.state,
            created_at: stored.created_at,
            published_at: stored.published_at,
            activated_at: stored.activated_at,
            retired_at: stored.retired_at,
            removal_due: self.removal_due(stored),
            verify_only: stored.verify_only,
            exclude_from_oidc_discovery: stored.exclude_from_oidc_discovery,
        }
    }
}

/// How a committed state reached its store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Saved {
    Durably,
    /// In place (what a restart reads) but perhaps not after a power loss.
    NotDurably,
}

fn log_removed(kid: &str, removed: &Entry, force: bool) {
    tracing::info!(
        kid = %kid,
        alg = %removed.stored.alg,
        from = "retired",
        to = "removed",
        forced = force,
        "key state changed"
    );
}

fn find(entries: &[Entry], kid: &str) -> Result<usize, LifecycleError> {
    entries
        .iter()
        .position(|e| e.stored.kid == kid)
        .ok_or_else(|| LifecycleError::UnknownKid(kid.to_owned()))
}

fn new_stored(key: &SigningKey, state: KeyState, origin: KeyOrigin, now: SystemTime) -> StoredKey {
    StoredKey {
        kid: key.kid().to_owned(),
        alg: key.algorithm(),
        state,
        origin,
        created_at: now,
        published_at: now,
        activated_at: (state == KeyState::Active).then_some(now),
        retired_at: (state == KeyState::Retired).then_some(now),
        verify_only: false,
        exclude_from_oidc_discovery: false,
        longest_token_lifetime_secs: None,
    }
}

/// The state to persist for `keys` and the last serving server's lead, checked.
fn checked_state(
    store: &dyn StateStore,
    keys: Vec<StoredKey>,
    served_lead_secs: Option<u64>,
) -> Result<LifecycleState, StoreError> {
    let mut state = LifecycleState::new(keys);
    state.served_publish_lead_secs = served_lead_secs;
    state.validate(store.location())?;
    Ok(state)
}

/// Records that `stored`, an active key, may sign tokens that live up to `lifetime`. The
/// longest lifetime ever recorded is kept: tokens signed under it outlive a restart with a
/// shorter maximum.
fn record_token_lifetime(stored: &mut StoredKey, lifetime: Duration) {
    let secs = lifetime.as_secs();
    stored.longest_token_lifetime_secs = Some(
        stored
            .longest_token_lifetime_secs
            .map_or(secs, |recorded| recorded.max(secs)),
    );
}

/// The published set: every key in publication order; the active one signs.
fn key_set(entries: &[Entry], now: SystemTime) -> Result<KeySet, KeySetError> {
    let signing = entries
        .iter()
        .find(|e| e.stored.state == KeyState::Active)
        .map(|e| e.key.clone());
    let published = entries
        .iter()
        .map(|e| PublishedKey {
            exclude_from_oidc_discovery: e.stored.exclude_from_oidc_discovery,
            ..PublishedKey::of(&e.key)
        })
        .collect();
    KeySet::new(signing, published, now)
}

fn log_transition(stored: &StoredKey, from: &str) {
    tracing::info!(
        kid = %stored.kid,
        alg = %stored.alg,
        from,
        to = %stored.state,
        verify_only = stored.verify_only,
        "key state changed"
    );
}

/// Runs blocking store or backend work off the async executor.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, LifecycleError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| LifecycleError::Internal(format!("blocking task failed: {err}")))?
        .map_err(LifecycleError::from)
}
