//! STAND-IN for the key lifecycle owned by branch wt-life (see LIFECYCLE-API.md): the same
//! public surface, in memory only, so the admin socket and CLI can be built and tested before
//! the real module lands. Merging wt-life replaces this file wholesale; nothing here is meant
//! to survive that merge.
//!
//! It must never be used for a real store: nothing is persisted.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Mutex;

use crate::keyring::{KeyRing, KeySet, PublishedKey};
use crate::keys::{self, Algorithm, KeyError, LocalKey, SigningKey};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    Next,
    Active,
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

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyRecord {
    pub kid: String,
    #[serde(serialize_with = "serialize_alg")]
    pub alg: Algorithm,
    pub state: KeyState,
    pub created_at: SystemTime,
    pub published_at: SystemTime,
    pub activated_at: Option<SystemTime>,
    pub retired_at: Option<SystemTime>,
    pub removal_due: Option<SystemTime>,
    pub verify_only: bool,
    pub exclude_from_oidc_discovery: bool,
}

fn serialize_alg<S: serde::Serializer>(alg: &Algorithm, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(alg.as_str())
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LifecycleStatus {
    pub active_kid: Option<String>,
    pub next_kid: Option<String>,
    pub next_rotation_at: Option<SystemTime>,
    pub last_error: Option<String>,
    pub data_timestamp: SystemTime,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ImportOptions {
    pub verify_only: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(String);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LifecycleError {
    #[error("no key with kid {0}")]
    UnknownKid(String),
    #[error("there is no next key to promote: run `signet keys rotate` first")]
    NoNextKey,
    #[error("next key {kid} is not ready before {ready_at:?}: use --force to skip the lead time")]
    NextKeyNotReady { kid: String, ready_at: SystemTime },
    #[error("key {kid} may still verify live tokens until {removal_due:?}: use --force")]
    StillVerifiesLiveTokens {
        kid: String,
        removal_due: SystemTime,
    },
    #[error("key {0} is the active key: promote a next key first")]
    ActiveKeyCannotBeRemoved(String),
    #[error("key {0} is the active key: promote a next key first")]
    CannotRetireActive(String),
    #[error("key {0} is already in the store")]
    AlreadyPresent(String),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug)]
struct Entry {
    record: KeyRecord,
    key: SigningKey,
}

#[derive(Debug)]
pub struct KeyLifecycle {
    keyring: Arc<KeyRing>,
    entries: Mutex<Vec<Entry>>,
    lead: Duration,
    retention: Duration,
}

impl KeyLifecycle {
    /// Adopts the signing key of the ring's current set as the active key.
    pub fn new(keyring: Arc<KeyRing>, lead: Duration, retention: Duration) -> Self {
        let now = SystemTime::now();
        let entries = keyring
            .snapshot()
            .signing_key()
            .map(|key| {
                let mut record = new_record(key, now, false);
                record.state = KeyState::Active;
                record.activated_at = Some(now);
                Entry {
                    record,
                    key: key.clone(),
                }
            })
            .into_iter()
            .collect();
        let lifecycle = Self {
            keyring,
            entries: Mutex::new(entries),
            lead,
            retention,
        };
        lifecycle.publish(&lifecycle.entries.try_lock().expect("not shared yet"));
        lifecycle
    }

    pub fn keyring(&self) -> &Arc<KeyRing> {
        &self.keyring
    }

    pub async fn list(&self) -> Vec<KeyRecord> {
        self.entries
            .lock()
            .await
            .iter()
            .map(|e| e.record.clone())
            .collect()
    }

    pub async fn status(&self) -> LifecycleStatus {
        let entries = self.entries.lock().await;
        let kid_in = |state| {
            entries
                .iter()
                .find(|e| e.record.state == state)
                .map(|e| e.record.kid.clone())
        };
        LifecycleStatus {
            active_kid: kid_in(KeyState::Active),
            next_kid: kid_in(KeyState::Next),
            next_rotation_at: None,
            last_error: None,
            data_timestamp: self.keyring.snapshot().changed_at(),
        }
    }

    pub async fn rotate(
        &self,
        alg: Option<Algorithm>,
        promote_now: bool,
    ) -> Result<KeyRecord, LifecycleError> {
        let mut entries = self.entries.lock().await;
        let alg = alg
            .or_else(|| {
                entries
                    .iter()
                    .find(|e| e.record.state == KeyState::Active)
                    .map(|e| e.record.alg)
            })
            .unwrap_or(Algorithm::ES256);
        let (key, _) = tokio::task::spawn_blocking(move || LocalKey::generate(alg, 2048))
            .await
            .map_err(|e| StoreError(e.to_string()))??;
        let key = SigningKey::new(Arc::new(key));
        entries.retain(|e| e.record.state != KeyState::Next);
        let now = SystemTime::now();
        entries.push(Entry {
            record: new_record(&key, now, false),
            key,
        });
        if promote_now {
            Self::promote_locked(&mut entries, now, self.retention);
        }
        self.publish(&entries);
        Ok(entries
            .last()
            .map(|e| e.record.clone())
            .expect("just pushed"))
    }

    pub async fn promote(&self, force: bool) -> Result<KeyRecord, LifecycleError> {
        let mut entries = self.entries.lock().await;
        let next = entries
            .iter()
            .find(|e| e.record.state == KeyState::Next)
            .ok_or(LifecycleError::NoNextKey)?;
        let ready_at = next.record.published_at + self.lead;
        let now = SystemTime::now();
        if !force && now < ready_at {
            return Err(LifecycleError::NextKeyNotReady {
                kid: next.record.kid.clone(),
                ready_at,
            });
        }
        let kid = Self::promote_locked(&mut entries, now, self.retention);
        self.publish(&entries);
        Ok(entries
            .iter()
            .find(|e| e.record.kid == kid)
            .map(|e| e.record.clone())
            .expect("promoted"))
    }

    fn promote_locked(entries: &mut [Entry], now: SystemTime, retention: Duration) -> String {
        for e in entries.iter_mut() {
            if e.record.state == KeyState::Active {
                e.record.state = KeyState::Retired;
                e.record.retired_at = Some(now);
                e.record.removal_due = Some(now + retention);
            }
        }
        let next = entries
            .iter_mut()
            .find(|e| e.record.state == KeyState::Next)
            .expect("checked");
        next.record.state = KeyState::Active;
        next.record.activated_at = Some(now);
        next.record.kid.clone()
    }

    pub async fn retire(&self, kid: &str) -> Result<KeyRecord, LifecycleError> {
        let mut entries = self.entries.lock().await;
        let entry = entries
            .iter_mut()
            .find(|e| e.record.kid == kid)
            .ok_or_else(|| LifecycleError::UnknownKid(kid.to_owned()))?;
        if entry.record.state == KeyState::Active {
            return Err(LifecycleError::CannotRetireActive(kid.to_owned()));
        }
        if entry.record.state == KeyState::Next {
            let now = SystemTime::now();
            entry.record.state = KeyState::Retired;
            entry.record.retired_at = Some(now);
            entry.record.removal_due = Some(now + self.retention);
        }
        let record = entry.record.clone();
        self.publish(&entries);
        Ok(record)
    }

    pub async fn remove(&self, kid: &str, force: bool) -> Result<(), LifecycleError> {
        let mut entries = self.entries.lock().await;
        let entry = entries
            .iter()
            .find(|e| e.record.kid == kid)
            .ok_or_else(|| LifecycleError::UnknownKid(kid.to_owned()))?;
        if entry.record.state == KeyState::Active {
            return Err(LifecycleError::ActiveKeyCannotBeRemoved(kid.to_owned()));
        }
        if let Some(removal_due) = entry.record.removal_due {
            if !force && SystemTime::now() < removal_due {
                return Err(LifecycleError::StillVerifiesLiveTokens {
                    kid: kid.to_owned(),
                    removal_due,
                });
            }
        }
        entries.retain(|e| e.record.kid != kid);
        self.publish(&entries);
        Ok(())
    }

    pub async fn import(
        &self,
        pem: &[u8],
        opts: ImportOptions,
    ) -> Result<KeyRecord, LifecycleError> {
        let pkcs8 = keys::pkcs8_from_pem(pem)?;
        let key = SigningKey::new(Arc::new(LocalKey::from_pkcs8(&pkcs8)?));
        let mut entries = self.entries.lock().await;
        if entries.iter().any(|e| e.record.kid == key.kid()) {
            return Err(LifecycleError::AlreadyPresent(key.kid().to_owned()));
        }
        let now = SystemTime::now();
        let mut record = new_record(&key, now, opts.verify_only);
        if opts.verify_only {
            record.state = KeyState::Retired;
            record.retired_at = Some(now);
            record.removal_due = Some(now + self.retention);
        } else {
            entries.retain(|e| e.record.state != KeyState::Next);
        }
        entries.push(Entry {
            record: record.clone(),
            key,
        });
        self.publish(&entries);
        Ok(record)
    }

    fn publish(&self, entries: &[Entry]) {
        let signing = entries
            .iter()
            .find(|e| e.record.state == KeyState::Active)
            .map(|e| e.key.clone());
        let published = entries
            .iter()
            .map(|e| PublishedKey {
                exclude_from_oidc_discovery: e.record.exclude_from_oidc_discovery,
                ..PublishedKey::of(&e.key)
            })
            .collect();
        let set = KeySet::new(signing, published, SystemTime::now())
            .expect("stand-in keeps the invariants");
        self.keyring.publish(set);
    }
}

fn new_record(key: &SigningKey, now: SystemTime, verify_only: bool) -> KeyRecord {
    KeyRecord {
        kid: key.kid().to_owned(),
        alg: key.algorithm(),
        state: KeyState::Next,
        created_at: now,
        published_at: now,
        activated_at: None,
        retired_at: None,
        removal_due: None,
        verify_only,
        exclude_from_oidc_discovery: verify_only,
    }
}
