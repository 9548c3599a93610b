//! The directory backend (`--key-dir DIR`): one PEM PKCS#8 file per key, named `<kid>.pem`,
//! mode 0600, in a directory of mode 0700 that one signet process holds locked. Files are
//! written atomically and durably; a key file is never rewritten under a different key.
//! With the archive on, a removed key's file is moved into `DIR/archive/` (mode 0700) instead of
//! being deleted: it is no longer published or loaded, but an auditor can still prove which
//! key signed an old token.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::fs::{
    check_private_mode, io_error, read_private, remove_durably, write_atomic, Symlinks, TEMP_SUFFIX,
};
use super::{pkcs8_to_pem, KeyBackend, StoreError};
use crate::keys::{self, Algorithm, LocalKey, SigningKey};

/// Extension of key files.
const KEY_FILE_SUFFIX: &str = ".pem";

/// Keys as PEM files in one private directory.
#[derive(Debug)]
pub struct DirectoryBackend {
    dir: PathBuf,
    /// Held (flock, exclusive) for this value's lifetime: a second process working on the same
    /// store would overwrite the other's state. The kernel releases it when the process dies.
    _lock: File,
    /// Move removed keys into [`Self::ARCHIVE_DIR`] instead of deleting them.
    archive: bool,
}

impl DirectoryBackend {
    /// The lock file every process using the store holds.
    pub const LOCK_FILE: &'static str = ".lock";
    /// The subdirectory removed keys are moved into when the archive is on.
    pub const ARCHIVE_DIR: &'static str = "archive";

    /// Opens an existing store directory: checks it is private, locks it, and checks every key
    /// file in it is private.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        match fs::metadata(&dir) {
            Ok(meta) if meta.is_dir() => {
                // Mode 0700 protects the keys only if the owner is us: another owner could
                // chmod it back, or replace the key files and the state in it.
                let owner = meta.uid();
                let us = rustix::process::geteuid().as_raw();
                if owner != us {
                    return Err(StoreError::ForeignOwner {
                        path: dir,
                        owner,
                        us,
                    });
                }
            }
            Ok(_) => return Err(StoreError::NotADirectory { path: dir }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotInitialized {
                    dir,
                    file: crate::lifecycle::STATE_FILE,
                })
            }
            Err(source) => {
                return Err(StoreError::Io {
                    action: "open key store directory",
                    path: dir,
                    source,
                })
            }
        }
        check_private_mode(&dir, 0o700)?;
        let lock = lock(&dir)?;
        let backend = Self {
            dir,
            _lock: lock,
            archive: false,
        };
        backend.remove_stale_temp_files()?;
        let archive = backend.dir.join(Self::ARCHIVE_DIR);
        if archive.exists() {
            check_private_mode(&archive, 0o700)?;
        }
        for kid in backend.kids()? {
            check_private_mode(&backend.key_path(&kid)?, 0o600)?;
        }
        Ok(backend)
    }

    /// Creates a new store directory (mode 0700), or takes an existing empty one, and opens it.
    pub fn create(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        match fs::read_dir(&dir) {
            Ok(entries) => {
                // The lock file and stale temp files are what a `keys init` that failed (or
                // died) before its first key was stored leaves: they hold no key, so the
                // directory still counts as empty and the command can be run again.
                let held: Vec<String> = entries
                    .flatten()
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .filter(|name| {
                        name != Self::LOCK_FILE
                            && !(name.starts_with('.') && name.ends_with(TEMP_SUFFIX))
                    })
                    .collect();
                if !held.is_empty() {
                    // Key files and nothing else, no state: what a `keys init` that died
                    // after storing its key leaves (no server ever signed with it).
                    let only_keys = held.iter().all(|name| name.ends_with(KEY_FILE_SUFFIX));
                    return Err(StoreError::NotEmpty { dir, only_keys });
                }
                // Empty, so nothing in it was ever exposed: make it private ourselves.
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                    .map_err(io_error("chmod 0700", &dir))?;
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                super::fs::create_dir_durably(&dir, 0o700)?;
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotADirectory => {
                return Err(StoreError::NotADirectory { path: dir })
            }
            Err(source) => {
                return Err(StoreError::Io {
                    action: "read directory",
                    path: dir,
                    source,
                })
            }
        }
        Self::open(dir)
    }

    /// Temp files are left by a process that died between creating and renaming one. With the
    /// lock held no other writer exists, so every temp file is stale; none is named by the
    /// state (a file is named only after its rename), so removing them loses nothing.
    fn remove_stale_temp_files(&self) -> Result<(), StoreError> {
        let entries = fs::read_dir(&self.dir).map_err(io_error("read directory", &self.dir))?;
        for entry in entries {
            let entry = entry.map_err(io_error("read directory", &self.dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') && name.ends_with(TEMP_SUFFIX) {
                let path = entry.path();
                fs::remove_file(&path).map_err(io_error("remove stale temp file", &path))?;
                tracing::info!(file = %path.display(), "removed a stale temp file left by an interrupted write");
            }
        }
        Ok(())
    }

    /// Keep removed keys in `DIR/archive/` instead of deleting them (`--archive-removed-keys`).
    pub fn with_archive(mut self, archive: bool) -> Self {
        self.archive = archive;
        self
    }

    /// Moves a key file into the archive directory, durably: the rename is fsynced in both
    /// directories, so after a crash the file is in exactly one of them.
    fn archive_key_file(&self, kid: &str, path: &Path) -> Result<(), StoreError> {
        let archive = self.dir.join(Self::ARCHIVE_DIR);
        if !archive.exists() {
            DirBuilder::new()
                .mode(0o700)
                .create(&archive)
                .map_err(io_error("create archive directory", &archive))?;
            super::fs::sync_dir(&self.dir)?;
        }
        let target = archive.join(format!("{kid}{KEY_FILE_SUFFIX}"));
        fs::rename(path, &target).map_err(io_error("move into the archive", &target))?;
        super::fs::sync_dir(&archive)?;
        super::fs::sync_dir(&self.dir)
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that holds the key `kid`.
    pub fn key_path(&self, kid: &str) -> Result<PathBuf, StoreError> {
        let valid = !kid.is_empty()
            && kid.len() <= 200
            && kid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(StoreError::InvalidKid(kid.to_owned()));
        }
        Ok(self.dir.join(format!("{kid}{KEY_FILE_SUFFIX}")))
    }

    fn store(&self, key: LocalKey, pkcs8_der: &[u8]) -> Result<SigningKey, StoreError> {
        let key = SigningKey::new(Arc::new(key));
        let pem = pkcs8_to_pem(pkcs8_der)?;
        let path = self.key_path(key.kid())?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("key file names are ASCII");
        write_atomic(&self.dir, name, pem.as_bytes(), 0o600)?;
        Ok(key)
    }
}

fn lock(dir: &Path) -> Result<File, StoreError> {
    use rustix::fs::{flock, FlockOperation};
    let path = dir.join(DirectoryBackend::LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io_error("open lock file", &path))?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(StoreError::Locked {
            dir: dir.to_owned(),
            lock: path,
        }),
        Err(err) => Err(StoreError::Io {
            action: "lock",
            path,
            source: err.into(),
        }),
    }
}

impl KeyBackend for DirectoryBackend {
    fn name(&self) -> &'static str {
        "directory"
    }

    fn generate(&self, alg: Algorithm, rsa_bits: usize) -> Result<SigningKey, StoreError> {
        let (key, pkcs8) = LocalKey::generate(alg, rsa_bits)?;
        self.store(key, &pkcs8)
    }

    fn import(&self, pkcs8_der: &[u8]) -> Result<SigningKey, StoreError> {
        let key = LocalKey::from_pkcs8(pkcs8_der)?;
        self.store(key, pkcs8_der)
    }

    fn load(&self, kid: &str) -> Result<SigningKey, StoreError> {
        let path = self.key_path(kid)?;
        if !path.exists() {
            return Err(StoreError::KeyNotFound(kid.to_owned()));
        }
        let pem = read_private(&path, Symlinks::Refuse)?;
        let key_file = |source| StoreError::KeyFile {
            path: path.clone(),
            source,
        };
        let pkcs8 = keys::pkcs8_from_pem(&pem).map_err(key_file)?;
        let key = SigningKey::new(Arc::new(LocalKey::from_pkcs8(&pkcs8).map_err(key_file)?));
        if key.kid() != kid {
            return Err(StoreError::KidMismatch {
                path,
                expected: kid.to_owned(),
                actual: key.kid().to_owned(),
            });
        }
        Ok(key)
    }

    fn kids(&self) -> Result<Vec<String>, StoreError> {
        let entries = fs::read_dir(&self.dir).map_err(io_error("read directory", &self.dir))?;
        let mut kids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error("read directory", &self.dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                continue; // temp files and the lock file
            }
            if let Some(kid) = name.strip_suffix(KEY_FILE_SUFFIX) {
                if self.key_path(kid).is_ok() {
                    kids.push(kid.to_owned());
                }
            }
        }
        Ok(kids)
    }

    fn key_location(&self, kid: &str) -> String {
        match self.key_path(kid) {
            Ok(path) => path.display().to_string(),
            Err(_) => format!("invalid kid {kid:?}"),
        }
    }

    fn delete(&self, kid: &str) -> Result<(), StoreError> {
        let path = self.key_path(kid)?;
        if !path.exists() {
            return Err(StoreError::KeyNotFound(kid.to_owned()));
        }
        if self.archive {
            self.archive_key_file(kid, &path)
        } else {
            remove_durably(&self.dir, &path)
        }
    }
}
