//! Durable file operations shared by the directory backend and the file state store: atomic
//! replacement (temp file in the same directory, write, fsync, rename, fsync the directory)
//! and the permission check every key-store file must pass. A crash at any instant leaves
//! either the old or the new file, never a torn one.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
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
    let mut file = options.open(path).map_err(io_error("open", path))?;
    let meta = file.metadata().map_err(io_error("inspect", path))?;
    ensure_private(path, &meta, 0o600)?;
    let mut bytes =
        zeroize::Zeroizing::new(Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0)));
    file.read_to_end(&mut bytes)
        .map_err(io_error("read", path))?;
    Ok(bytes)
}
