//! Durable file operations shared by the directory backend and the file state store: atomic
//! replacement (temp file in the same directory, write, fsync, rename, fsync the directory)
//! and the permission check every key-store file must pass. A crash at any instant leaves
//! either the old or the new file, never a torn one.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::StoreError;

/// Suffix of temp files; they start with `.` so a listing of keys never sees them.
pub(crate) const TEMP_SUFFIX: &str = ".tmp";

pub(crate) fn io_error<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Replaces `dir/name` with `contents` atomically and durably, as a file of mode `mode` (0600
/// for the key store; 0644 for a public JWK Set). On any error but [`StoreError::NotDurable`]
/// the file is as it was.
pub(crate) fn write_atomic(
    dir: &Path,
    name: &str,
    contents: &[u8],
    mode: u32,
) -> Result<(), StoreError> {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let temp = dir.join(format!(
        ".{name}.{}.{}{TEMP_SUFFIX}",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    ));
    let target = dir.join(name);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(io_error("create", &temp))?;
        // Created owner-only, then given its mode on the file itself: open(2) narrows the mode
        // by the umask, and the result must be `mode` whatever umask signet runs with.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_error("chmod", &temp))?;
        file.write_all(contents).map_err(io_error("write", &temp))?;
        file.sync_all().map_err(io_error("fsync", &temp))?;
        drop(file);
        fs::rename(&temp, &target).map_err(io_error("rename into place", &target))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written?;
    // The new contents are in place: only their surviving a power loss is now in doubt, which
    // a caller must be able to tell from a write that did not happen.
    fsync_dir(dir).map_err(|source| StoreError::NotDurable {
        path: target,
        source,
    })
}

/// Removes `path` and makes the removal durable.
pub(crate) fn remove_durably(dir: &Path, path: &Path) -> Result<(), StoreError> {
    fs::remove_file(path).map_err(io_error("remove", path))?;
    sync_dir(dir)
}

/// fsync of a directory: makes renames and removals in it survive a power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fsync_dir(dir).map_err(io_error("fsync directory", dir))
}

/// Creates `dir` and any missing parents with `mode`, then fsyncs the parent of each
/// directory it created, so that the new path, not only its last entry, survives a power loss.
pub(crate) fn create_dir_durably(dir: &Path, mode: u32) -> Result<(), StoreError> {
    // The parents `create` makes: every ancestor up to the first that exists.
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|ancestor| !ancestor.as_os_str().is_empty() && !ancestor.exists())
        .collect();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(io_error("create directory", dir))?;
    for created in missing {
        let parent = match created.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        sync_dir(parent)?;
    }
    Ok(())
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all())
}

/// Refuses a file or directory that group or other users may access.
/// `fix` is the mode the error message recommends (0600 for files, 0700 for directories).
pub(crate) fn check_private_mode(path: &Path, fix: u32) -> Result<(), StoreError> {
    let meta = fs::metadata(path).map_err(io_error("inspect", path))?;
    ensure_private(path, &meta, fix)
}

/// Refuses `meta` (of the file at `path`) when group or other users may access it.
fn ensure_private(path: &Path, meta: &fs::Metadata, fix: u32) -> Result<(), StoreError> {
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(StoreError::InsecurePermissions {
            path: path.to_owned(),
            mode,
            fix,
        });
    }
    Ok(())
}

/// Whether [`read_private`] follows a symbolic link at the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Symlinks {
    /// An operator's file (`keys import --file`): a link to the real key is normal.
    Follow,
    /// A file in a key store: signet never links them, so a link was put there by someone else.
    Refuse,
}

/// Reads a file after checking it is private. The check and the read use one open file, so
/// the file read is the file checked, even if the path is swapped meanwhile.
pub(crate) fn read_private(
    path: &Path,
    symlinks: Symlinks,
) -> Result<zeroize::Zeroizing<Vec<u8>>, StoreError> {
    let mut options = OpenOptions::new();
    options.read(true);
    if symlinks == Symlinks::Refuse {
        // `O_NOFOLLOW` is a small positive flag: the cast to the C `int` cannot truncate.
        options.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    }
    let file = options.open(path).map_err(io_error("open", path))?;
    let meta = file.metadata().map_err(io_error("inspect", path))?;
    ensure_private(path, &meta, 0o600)?;
    read_to_limit(path, file, &meta)
}

/// Reads a file of any mode, with the size bound of [`read_private`]: for a key file whose
/// mode the caller only warns about (`serve --key-file`).
pub(crate) fn read_any_mode(path: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>, StoreError> {
    let file = File::open(path).map_err(io_error("open", path))?;
    let meta = file.metadata().map_err(io_error("inspect", path))?;
    read_to_limit(path, file, &meta)
}

/// Reads the open `file` (at `path`, with `meta`) whole, refusing one over
/// [`PRIVATE_FILE_LIMIT`] before reading it, and bounding the read too, so a file that grew
/// since `metadata`, or a device that reports no length (`/dev/zero`), is refused as well.
fn read_to_limit(
    path: &Path,
    file: File,
    meta: &fs::Metadata,
) -> Result<zeroize::Zeroizing<Vec<u8>>, StoreError> {
    if meta.len() > PRIVATE_FILE_LIMIT {
        return Err(too_large(path));
    }
    let mut bytes =
        zeroize::Zeroizing::new(Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0)));
    file.take(PRIVATE_FILE_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error("read", path))?;
    if bytes.len() as u64 > PRIVATE_FILE_LIMIT {
        return Err(too_large(path));
    }
    Ok(bytes)
}

/// The largest private file [`read_private`] reads: 1 MiB. An RSA-8192 key in PEM is under
/// 7 KiB and a state file some hundred bytes per key, so a larger file is not signet's; the
/// bound keeps a wrong `--file` (a disk image, a device) from exhausting memory.
pub(crate) const PRIVATE_FILE_LIMIT: u64 = 1 << 20;

fn too_large(path: &Path) -> StoreError {
    StoreError::TooLarge {
        path: path.to_owned(),
        limit: PRIVATE_FILE_LIMIT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn private_file(dir: &Path, name: &str, len: u64) -> std::path::PathBuf {
        let path = dir.join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        // Sparse: the test writes no megabyte.
        file.set_len(len).unwrap();
        path
    }

    #[test]
    fn a_private_file_past_the_limit_is_refused_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let at_limit = private_file(dir.path(), "at-limit", PRIVATE_FILE_LIMIT);
        assert_eq!(
            read_private(&at_limit, Symlinks::Refuse).unwrap().len() as u64,
            PRIVATE_FILE_LIMIT
        );
        // A terabyte: reading it, or reserving room for it, would abort the process.
        let huge = private_file(dir.path(), "huge", 1 << 40);
        match read_private(&huge, Symlinks::Follow) {
            Err(err @ StoreError::TooLarge { .. }) => {
                assert!(
                    err.to_string().contains("larger than 1048576 bytes"),
                    "{err}"
                );
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn a_new_directory_and_its_missing_parents_are_created_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b/keys");
        create_dir_durably(&dir, 0o700).unwrap();
        for created in [root.path().join("a"), root.path().join("a/b"), dir] {
            let mode = fs::metadata(&created).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", created.display());
        }
    }
}
