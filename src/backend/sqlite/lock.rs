//! One apply at a time: an OS lock on `<state file>.lock`, which dies with its holder.

use super::{SqliteTarget, io_error, sidecar};
use crate::backend::{ApplyLock, BackendError, LockGuard, LockHolder};
use crate::time::utc_now;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

/// Holds the OS lock on `<state file>.lock`; the kernel drops it with the process.
pub(super) struct SqliteLock {
    pub(super) file: File,
}

impl LockGuard for SqliteLock {}

impl Drop for SqliteLock {
    fn drop(&mut self) {
        // Best effort: the holder text is only informative, and closing the file
        // releases the lock in any case.
        let _ = self.file.set_len(0);
        let _ = fs4::FileExt::unlock(&self.file);
    }
}

/// The holder a locked lock file names. The holder writes it right after locking,
/// so an empty or partial file is retried briefly.
pub(super) fn read_holder(file: &File) -> LockHolder {
    for attempt in 0..5 {
        let mut text = String::new();
        let mut reader = file;
        let parsed = std::io::Seek::rewind(&mut reader)
            .and_then(|()| reader.read_to_string(&mut text))
            .ok()
            .and_then(|_| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|v| {
                Some(LockHolder {
                    pid: u32::try_from(v.get("pid")?.as_u64()?).ok()?,
                    host: v.get("host")?.as_str()?.to_owned(),
                    since: v.get("since")?.as_str()?.to_owned(),
                })
            });
        if let Some(holder) = parsed {
            return holder;
        }
        if attempt < 4 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    LockHolder {
        pid: 0,
        host: "unknown".to_owned(),
        since: "unknown".to_owned(),
    }
}

impl SqliteTarget {
    pub(super) fn lock_path(&self) -> PathBuf {
        sidecar(&self.path, ".lock")
    }
}

impl ApplyLock for SqliteTarget {
    fn try_lock(&mut self) -> Result<Box<dyn LockGuard>, BackendError> {
        let path = self.lock_path();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_error(format!("cannot open the lock file {}", path.display()), e))?;
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => {
                return Err(BackendError::Locked(read_holder(&file)));
            }
            Err(fs4::TryLockError::Error(e)) => {
                return Err(io_error(format!("cannot lock {}", path.display()), e));
            }
        }
        let holder = LockHolder {
            pid: std::process::id(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            since: utc_now(),
        };
        let json = serde_json::to_vec(&holder).unwrap_or_default();
        file.set_len(0)
            .and_then(|()| (&file).write_all(&json))
            .map_err(|e| io_error(format!("cannot write the lock file {}", path.display()), e))?;
        Ok(Box::new(SqliteLock { file }))
    }

    fn lock_holder(&mut self) -> Result<Option<LockHolder>, BackendError> {
        let path = self.lock_path();
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(io_error(
                    format!("cannot open the lock file {}", path.display()),
                    e,
                ));
            }
        };
        match fs4::FileExt::try_lock_shared(&file) {
            // Closing the file releases the probe.
            Ok(()) => Ok(None),
            Err(fs4::TryLockError::WouldBlock) => Ok(Some(read_holder(&file))),
            Err(fs4::TryLockError::Error(e)) => Err(io_error(
                format!("cannot probe the lock {}", path.display()),
                e,
            )),
        }
    }
}
