//! One apply at a time: an OS lock on `<state file>.lock`, which dies with its holder.

use super::*;
use crate::backend::{LockGuard, LockHolder};
use std::fs::File;
use std::io::Read;
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
