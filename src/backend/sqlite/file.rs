//! The state file on disk: created private, opened read-only when it must be.

use super::{io_error, sidecar};
use crate::backend::BackendError;
use rusqlite::{Connection, OpenFlags};
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Creates the state file (and its directory) readable by its owner only, before
/// SQLite creates it with the default mode.
pub(super) fn create_private_file(path: &Path) -> Result<(), BackendError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| io_error(format!("cannot create {}", parent.display()), e))?;
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_error(format!("cannot create {}", path.display()), e)),
    }
}

/// Judged by the permission bits, not by trying: root may write any file, but a
/// state file made read-only is meant to stay unchanged.
pub(super) fn is_read_only(path: &Path) -> Result<bool, BackendError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| io_error(format!("cannot read {}", path.display()), e))?;
    if meta.permissions().readonly() {
        return Ok(true);
    }
    match OpenOptions::new().write(true).open(path) {
        Ok(_) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(true),
        Err(e) => Err(io_error(format!("cannot open {}", path.display()), e)),
    }
}

/// Whether a read-only open must do without the `-shm` file of WAL mode: SQLite
/// reads a WAL database through it, and when it is missing and the folder is
/// read-only (a backup, a mount, a folder of another user), every read failed
/// with "attempt to write a readonly database". Judged by the permission bits
/// too, like `is_read_only`: root may write anywhere, but a folder made
/// read-only is meant to stay as it is. Such a file is read as it is on disk
/// (`immutable`), which is the whole state only when no `-wal` file holds
/// commits not yet copied into it: then there is no way to read them, and
/// that is said rather than an older state shown.
pub(super) fn without_shared_memory(path: &Path) -> Result<bool, BackendError> {
    if std::fs::metadata(sidecar(path, "-shm")).is_ok() {
        return Ok(false);
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let writable = std::fs::metadata(dir).is_ok_and(|m| !m.permissions().readonly())
        && std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(dir.as_os_str()))
            // SAFETY: a NUL-terminated path that lives through the call.
            .is_ok_and(|c| unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0);
    if writable {
        return Ok(false);
    }
    let wal = sidecar(path, "-wal");
    if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
        return Err(io_error(
            format!(
                "cannot read {}: the folder is read-only and {} holds changes that only \
                 a writable folder lets SQLite read; make {} writable, or run pbxsync once \
                 as a user who may write there",
                path.display(),
                wal.display(),
                dir.display()
            ),
            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        ));
    }
    Ok(true)
}

/// A connection to `path`; `immutable` opens it with SQLite's `immutable` URI
/// parameter (no locks, no `-shm` or `-wal` file).
pub(super) fn open_connection(
    path: &Path,
    flags: OpenFlags,
    immutable: bool,
) -> rusqlite::Result<Connection> {
    if !immutable {
        return Connection::open_with_flags(path, flags);
    }
    let mut uri = String::from("file:");
    for &b in std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()) {
        // The URI's own characters, and anything not plain ASCII, percent-encoded.
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            uri.push(b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?immutable=1");
    Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)
}

/// SQLite creates the `-wal` and `-shm` files with the mode of the database, so a
/// read while the state file was read-only leaves read-only ones behind, which
/// would keep it read-only for SQLite after the file is made writable again.
/// Best effort: SQLite reports the failure if this does not help.
pub(super) fn restore_sidecar_permissions(path: &Path) {
    let Ok(mode) = std::fs::metadata(path).map(|m| m.permissions()) else {
        return;
    };
    for suffix in ["-wal", "-shm"] {
        let mut sidecar = path.as_os_str().to_owned();
        sidecar.push(suffix);
        if std::fs::metadata(&sidecar).is_ok_and(|m| m.permissions().readonly()) {
            let _ = std::fs::set_permissions(&sidecar, mode.clone());
        }
    }
}

pub(super) fn read_only_error(path: &Path) -> BackendError {
    io_error(
        format!(
            "cannot write the state file {}: it (or its folder) is read-only",
            path.display()
        ),
        std::io::Error::from(std::io::ErrorKind::PermissionDenied),
    )
}
