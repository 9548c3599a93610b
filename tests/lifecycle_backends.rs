//! The backend conformance suite against every backend, and the directory store's refusals:
//! each broken store is refused at load with a message naming the file and the fix.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use signet::backend::{conformance, DirectoryBackend, KeyBackend, MemoryBackend, StoreError};
use signet::keys::{
    pkcs8_from_pem, Algorithm, JwsSignature, JwsSigner, KeyError, LocalKey, SigningKey,
};
use signet::lifecycle::{KeyLifecycle, LifecycleError, ManualClock, RotationPolicy, STATE_FILE};

const RSA_PKCS8_PEM: &[u8] = include_bytes!("fixtures/lifecycle-rsa2048.pem");
/// Another RSA key (PKCS#1), the wrong handle the crossed backend below signs RSA with.
const OTHER_RSA_PEM: &[u8] = include_bytes!("fixtures/lifecycle-sa-pkcs1.key");

fn rsa_pkcs8() -> Vec<u8> {
    pkcs8_from_pem(RSA_PKCS8_PEM).unwrap().to_vec()
}

fn private_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

#[test]
fn memory_backend_conforms() {
    conformance::run_all(&MemoryBackend::new(), &rsa_pkcs8());
}

#[test]
fn directory_backend_conforms() {
    let dir = private_tempdir();
    let backend = DirectoryBackend::create(dir.path().join("keys")).unwrap();
    conformance::run_all(&backend, &rsa_pkcs8());
}

/// A signer that shows one key's public half but signs with another key: what a PKCS#11 or KMS
/// backend that maps a kid to the wrong key handle hands out.
#[derive(Debug)]
struct CrossedSigner {
    published: SigningKey,
    handle: SigningKey,
}

impl JwsSigner for CrossedSigner {
    fn algorithm(&self) -> Algorithm {
        self.published.algorithm()
    }

    fn public_key_der(&self) -> &[u8] {
        self.published.public_key_der()
    }

    fn sign(&self, signing_input: &[u8]) -> Result<JwsSignature, KeyError> {
        self.handle.sign(signing_input)
    }
}

/// The memory backend with crossed handles: `load` returns the right kid, algorithm and public
/// key, but signs with a decoy key of the same algorithm. Signatures are well-formed (right
/// length, right algorithm), so only a check against the published key can catch it.
#[derive(Debug)]
struct CrossedHandles {
    inner: MemoryBackend,
    decoys: Vec<SigningKey>,
}

impl CrossedHandles {
    fn new() -> Self {
        let rsa = LocalKey::from_pkcs8(&pkcs8_from_pem(OTHER_RSA_PEM).unwrap()).unwrap();
        let mut decoys = vec![SigningKey::new(Arc::new(rsa))];
        for alg in [Algorithm::ES256, Algorithm::ES384] {
            decoys.push(SigningKey::new(Arc::new(
                LocalKey::generate(alg, 0).unwrap().0,
            )));
        }
        Self {
            inner: MemoryBackend::new(),
            decoys,
        }
    }

    fn crossed(&self, key: SigningKey) -> SigningKey {
        let handle = self
            .decoys
            .iter()
            .find(|decoy| decoy.algorithm() == key.algorithm())
            .expect("a decoy per algorithm")
            .clone();
        SigningKey::new(Arc::new(CrossedSigner {
            published: key,
            handle,
        }))
    }
}

impl KeyBackend for CrossedHandles {
    fn name(&self) -> &'static str {
        "crossed-handles"
    }

    fn generate(&self, alg: Algorithm, rsa_bits: usize) -> Result<SigningKey, StoreError> {
        self.inner.generate(alg, rsa_bits)
    }

    fn import(&self, pkcs8_der: &[u8]) -> Result<SigningKey, StoreError> {
        self.inner.import(pkcs8_der)
    }

    fn load(&self, kid: &str) -> Result<SigningKey, StoreError> {
        self.inner.load(kid).map(|key| self.crossed(key))
    }

    fn kids(&self) -> Result<Vec<String>, StoreError> {
        self.inner.kids()
    }

    fn delete(&self, kid: &str) -> Result<(), StoreError> {
        self.inner.delete(kid)
    }
}

/// The suite is not satisfied by well-formed signatures: a backend whose loaded keys sign with
/// the wrong private key fails it, on the signature check, for EC and for RSA.
#[test]
fn the_conformance_suite_refuses_a_backend_that_signs_with_the_wrong_key() {
    let expect_mismatch = |check: &dyn Fn(&CrossedHandles)| {
        let backend = CrossedHandles::new();
        let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&backend)))
            .expect_err("the suite passed a backend that signs with the wrong key");
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        assert!(
            message.contains(conformance::SIGNATURE_MISMATCH),
            "the suite failed for another reason: {message}"
        );
    };
    expect_mismatch(&|backend| conformance::run_all(backend, &rsa_pkcs8()));
    expect_mismatch(&|backend| {
        conformance::import_names_keys_by_the_in_tree_rule_and_is_idempotent(backend, &rsa_pkcs8())
    });
    // The honest backend under the same checks passes them (so the failures above are the
    // crossing, not the harness).
    conformance::import_names_keys_by_the_in_tree_rule_and_is_idempotent(
        &CrossedHandles::new().inner,
        &rsa_pkcs8(),
    );
}

#[test]
fn directory_keys_survive_reopening_as_private_pem_files() {
    let dir = private_tempdir();
    let path = dir.path().join("keys");
    let kid = {
        let backend = DirectoryBackend::create(&path).unwrap();
        backend
            .generate(Algorithm::ES256, 2048)
            .unwrap()
            .kid()
            .to_owned()
    };
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o700);
    let key_file = path.join(format!("{kid}.pem"));
    assert_eq!(mode(&key_file), 0o600);
    let pem = fs::read_to_string(&key_file).unwrap();
    assert!(
        pem.starts_with("-----BEGIN PRIVATE KEY-----\n"),
        "PEM PKCS#8"
    );
    // No temp file is left behind by an atomic write.
    let names: Vec<String> = fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    let backend = DirectoryBackend::open(&path).unwrap();
    assert_eq!(backend.load(&kid).unwrap().kid(), kid);
}

#[test]
fn a_directory_store_is_locked_by_one_process_at_a_time() {
    let dir = private_tempdir();
    let path = dir.path().join("keys");
    let first = DirectoryBackend::create(&path).unwrap();
    let err = DirectoryBackend::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("--admin-socket"), "{err}");
    drop(first);
    DirectoryBackend::open(&path).unwrap();
}

#[test]
fn kids_that_are_not_file_names_are_refused() {
    let dir = private_tempdir();
    let backend = DirectoryBackend::create(dir.path().join("keys")).unwrap();
    for kid in ["../escape", "a/b", "", ".lock"] {
        assert!(
            matches!(backend.load(kid), Err(StoreError::InvalidKid(_))),
            "{kid:?}"
        );
    }
}

// ---- the store as a whole: state file + key files ----

fn policy() -> RotationPolicy {
    RotationPolicy::new(Duration::from_secs(60), Duration::from_secs(24 * 3600))
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ))
}

/// A store with one active key; returns the store path and the active kid.
fn new_store(root: &Path) -> (std::path::PathBuf, String) {
    let path = root.join("keys");
    let lifecycle = common::create_key_dir(&path, policy(), clock());
    let kid = lifecycle
        .keyring()
        .snapshot()
        .signing_key()
        .unwrap()
        .kid()
        .to_owned();
    (path, kid)
}

fn open(path: &Path) -> Result<KeyLifecycle, LifecycleError> {
    common::open_key_dir(path, policy(), clock())
}

fn open_err(path: &Path) -> String {
    open(path).map(|_| ()).unwrap_err().to_string()
}

#[test]
fn a_new_store_loads_back_with_the_same_signing_key() {
    let dir = private_tempdir();
    let (path, kid) = new_store(dir.path());
    let lifecycle = open(&path).unwrap();
    let snapshot = lifecycle.keyring().snapshot();
    assert_eq!(snapshot.signing_key().unwrap().kid(), kid);
    assert_eq!(snapshot.published().len(), 1);
}

#[test]
fn a_missing_store_names_the_init_command() {
    let dir = private_tempdir();
    let err = open_err(&dir.path().join("nowhere"));
    assert!(err.contains("signet keys init --key-dir"), "{err}");
    // An existing but empty directory, too.
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    fs::set_permissions(&empty, fs::Permissions::from_mode(0o700)).unwrap();
    let err = open_err(&empty);
    assert!(err.contains("signet keys init --key-dir"), "{err}");
}

#[test]
fn group_or_world_accessible_files_or_directory_are_refused() {
    let dir = private_tempdir();
    let (path, kid) = new_store(dir.path());
    let key_file = path.join(format!("{kid}.pem"));
    let state_file = path.join(STATE_FILE);
    for (target, mode, fix) in [
        (&path, 0o750, "chmod 0700"),
        (&key_file, 0o640, "chmod 0600"),
        (&state_file, 0o604, "chmod 0600"),
    ] {
        let before = fs::metadata(target).unwrap().permissions().mode() & 0o777;
        fs::set_permissions(target, fs::Permissions::from_mode(mode)).unwrap();
        let err = open_err(&path);
        assert!(err.contains(&target.display().to_string()), "{err}");
        assert!(err.contains(fix), "{err}");
        fs::set_permissions(target, fs::Permissions::from_mode(before)).unwrap();
    }
    open(&path).unwrap();
}

fn edit_state(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let file = path.join(STATE_FILE);
    let mut state: serde_json::Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
    edit(&mut state);
    fs::write(&file, serde_json::to_vec(&state).unwrap()).unwrap();
}

#[test]
fn a_state_entry_whose_key_file_is_missing_is_refused() {
    let dir = private_tempdir();
    let (path, kid) = new_store(dir.path());
    fs::remove_file(path.join(format!("{kid}.pem"))).unwrap();
    let err = open_err(&path);
    assert!(err.contains(&kid), "{err}");
    assert!(err.contains("state.json"), "{err}");
    assert!(err.contains("restore it from backup"), "{err}");
}

#[test]
fn two_active_keys_are_refused() {
    let dir = private_tempdir();
    let (path, _) = new_store(dir.path());
    edit_state(&path, |state| {
        let first = state["keys"][0].clone();
        let mut second = first.clone();
        second["kid"] = "other".into();
        state["keys"] = serde_json::json!([first, second]);
    });
    let err = open_err(&path);
    assert!(err.contains("2 keys are active"), "{err}");
    assert!(err.contains("state.json"), "{err}");
}

#[test]
fn an_unknown_state_is_refused() {
    let dir = private_tempdir();
    let (path, _) = new_store(dir.path());
    edit_state(&path, |state| state["keys"][0]["state"] = "sleeping".into());
    let err = open_err(&path);
    assert!(err.contains("sleeping"), "{err}");
    assert!(
        err.contains("fix the file or restore it from backup"),
        "{err}"
    );
}

#[test]
fn durations_no_server_writes_are_refused_before_they_reach_a_clock() {
    // Added to a time, either would overflow it: the store must refuse them, not panic.
    let dir = private_tempdir();
    let (path, _) = new_store(dir.path());
    edit_state(&path, |state| {
        state["keys"][0]["longest_token_lifetime_secs"] = u64::MAX.into();
    });
    let err = open_err(&path);
    assert!(err.contains("longest_token_lifetime_secs"), "{err}");
    assert!(err.contains("state.json is not valid"), "{err}");
    edit_state(&path, |state| {
        state["keys"][0]["longest_token_lifetime_secs"] = 3600.into();
        state["served_publish_lead_secs"] = u64::MAX.into();
    });
    let err = open_err(&path);
    assert!(err.contains("served_publish_lead_secs"), "{err}");
    edit_state(&path, |state| {
        state["served_publish_lead_secs"] = 120.into();
    });
    open(&path).unwrap();
}

#[test]
fn unparsable_state_is_refused() {
    let dir = private_tempdir();
    let (path, _) = new_store(dir.path());
    fs::write(path.join(STATE_FILE), b"{\"version\": 1, \"keys\": [").unwrap();
    let err = open_err(&path);
    assert!(err.contains("state.json is not valid"), "{err}");
}

#[test]
fn an_orphan_key_file_is_left_alone() {
    let dir = private_tempdir();
    let (path, kid) = new_store(dir.path());
    let orphan = {
        let backend = DirectoryBackend::open(&path).unwrap();
        backend
            .generate(Algorithm::ES256, 2048)
            .unwrap()
            .kid()
            .to_owned()
    };
    let lifecycle = open(&path).unwrap();
    let published: Vec<String> = lifecycle
        .keyring()
        .snapshot()
        .published()
        .iter()
        .map(|k| k.kid.to_string())
        .collect();
    assert_eq!(published, vec![kid], "an orphan is not published");
    assert!(path.join(format!("{orphan}.pem")).exists(), "never deleted");
}

#[test]
fn init_refuses_a_non_empty_directory() {
    let dir = private_tempdir();
    let (path, _) = new_store(dir.path());
    let err = DirectoryBackend::create(&path).unwrap_err();
    // A whole store (its state file too) gets no hint to delete anything.
    assert!(
        matches!(
            err,
            StoreError::NotEmpty {
                only_keys: false,
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.to_string().contains("delete"), "{err}");
}

#[test]
fn a_store_owned_by_another_user_is_refused() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = private_tempdir();
    let (path, _) = new_store(dir.path());
    let us = fs::metadata(&path).unwrap().uid();
    // Giving the directory away needs root (as signet runs in a static pod or systemd unit);
    // CI runs as root and says so. As root the chown must work: a root without CAP_CHOWN (a
    // rootless container) fails here rather than passing without checking anything.
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to chown");
        return;
    }
    std::os::unix::fs::chown(&path, Some(us + 1), None)
        .expect("root could not chown: this test needs CAP_CHOWN");
    let err = DirectoryBackend::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::ForeignOwner { .. }), "{err}");
    assert!(err.to_string().contains(&format!("chown {us}")), "{err}");
    std::os::unix::fs::chown(&path, Some(us), None).unwrap();
    DirectoryBackend::open(&path).expect("ours again");
}

/// A directory store at `root/keys` holding one generated ES256 key (no lifecycle state).
fn store_with_one_key(root: &Path) -> (std::path::PathBuf, DirectoryBackend, String) {
    let path = root.join("keys");
    let backend = DirectoryBackend::create(&path).unwrap();
    let kid = backend
        .generate(Algorithm::ES256, 2048)
        .unwrap()
        .kid()
        .to_owned();
    (path, backend, kid)
}

#[test]
fn a_key_file_swapped_for_a_link_is_refused_but_an_operators_link_is_followed() {
    let dir = private_tempdir();
    let (path, backend, kid) = store_with_one_key(dir.path());
    let key_file = path.join(format!("{kid}.pem"));
    let elsewhere = dir.path().join("elsewhere.pem");
    fs::rename(&key_file, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &key_file).unwrap();
    let err = backend.load(&kid).unwrap_err();
    assert!(
        matches!(err, StoreError::Io { action: "open", .. }),
        "{err}"
    );

    // `keys import --file` reads an operator's file, where a link to the real key is normal.
    let link = dir.path().join("sa.key");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    let pem = signet::backend::read_private_key_file(&link).unwrap();
    assert_eq!(*pem, fs::read(&elsewhere).unwrap());
    // Its mode is checked on the file read, not on the link.
    fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o644)).unwrap();
    let err = signet::backend::read_private_key_file(&link).unwrap_err();
    assert!(
        matches!(err, StoreError::InsecurePermissions { .. }),
        "{err}"
    );
}

#[test]
fn init_may_run_again_where_a_failed_init_left_only_its_lock() {
    let dir = private_tempdir();
    let path = dir.path().join("keys");
    // A `keys init` that failed after taking the lock, before storing any key.
    drop(DirectoryBackend::create(&path).unwrap());
    assert!(path.join(DirectoryBackend::LOCK_FILE).exists());
    let backend = DirectoryBackend::create(&path).expect("only the lock is there");
    backend.generate(Algorithm::ES256, 2048).unwrap();
    drop(backend);
    // Once it holds a key, it is a store (or its remains), never silently reused; the
    // refusal says what an interrupted init leaves and what to do.
    let err = DirectoryBackend::create(&path).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NotEmpty {
                only_keys: true,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("interrupted `keys init`"), "{err}");
}

#[test]
fn an_archiving_directory_store_moves_removed_keys_aside() {
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = private_tempdir();
    let path = dir.path().join("keys");
    let backend = DirectoryBackend::create(&path).unwrap().with_archive(true);
    let kid = backend
        .generate(Algorithm::ES256, 2048)
        .unwrap()
        .kid()
        .to_owned();
    backend.delete(&kid).unwrap();

    // Gone from the store: not listed, not loadable.
    assert!(!backend.kids().unwrap().contains(&kid));
    assert!(matches!(
        backend.load(&kid),
        Err(StoreError::KeyNotFound(_))
    ));
    // Kept, private, in the archive, and still the same key.
    let archive = path.join(DirectoryBackend::ARCHIVE_DIR);
    let archived = archive.join(format!("{kid}.pem"));
    assert_eq!(mode(&archive), 0o700);
    assert_eq!(mode(&archived), 0o600);
    let pkcs8 = signet::keys::pkcs8_from_pem(&fs::read(&archived).unwrap()).unwrap();
    let key = signet::keys::LocalKey::from_pkcs8(&pkcs8).unwrap();
    assert_eq!(signet::keys::SigningKey::new(Arc::new(key)).kid(), kid);

    // The store reopens with an archive in it, and refuses one others can read.
    drop(backend);
    drop(DirectoryBackend::open(&path).unwrap());
    fs::set_permissions(&archive, fs::Permissions::from_mode(0o750)).unwrap();
    let err = DirectoryBackend::open(&path).unwrap_err();
    assert!(
        matches!(err, StoreError::InsecurePermissions { .. }),
        "{err}"
    );
}

#[test]
fn without_the_archive_a_removed_key_file_is_deleted() {
    let dir = private_tempdir();
    let (path, backend, kid) = store_with_one_key(dir.path());
    backend.delete(&kid).unwrap();
    assert!(!path.join(format!("{kid}.pem")).exists());
    assert!(!path.join(DirectoryBackend::ARCHIVE_DIR).exists());
}
