//! Disk writes started while a file is still being written, so that the `fsync`
//! after it has little left to wait for (what RocksDB's `bytes_per_sync` does).
//!
//! An apply of 100,000 changes to a million rows writes about 140 MB of pages
//! twice: to the WAL at the commit, then into the state file at the checkpoint,
//! which syncs each. Left to itself the kernel starts writing them out only at
//! those syncs, and the process waits for the disk (0.04-0.08 s for each, on the
//! benchmark machine). Asked to start writing every few milliseconds, the disk
//! works while SQLite copies, and the syncs find the pages written already.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the dirty pages written meanwhile are handed to the disk.
const EVERY: Duration = Duration::from_millis(4);

/// Hands a file's dirty pages to the disk until dropped. Only a hint to the
/// kernel: it changes no data and promises nothing, so it fails silently (no
/// such file yet, not Linux), and durability stays with the syncs.
pub struct Writeback {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Writeback {
    pub fn start(path: PathBuf) -> Writeback {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let Ok(file) = std::fs::File::open(&path) else {
                return;
            };
            while !stopped.load(Ordering::Acquire) {
                start_writing(&file);
                // Woken early by `drop`, which then need not wait out the pause.
                std::thread::park_timeout(EVERY);
            }
        });
        Writeback {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Writeback {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// Starts writing out the dirty pages of `file`, without waiting for them.
#[cfg(target_os = "linux")]
fn start_writing(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range reads no memory of ours; the descriptor is open
    // for as long as `file` lives. Offset and length 0 mean the whole file.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writing(_: &std::fs::File) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_file_written_meanwhile_keeps_its_bytes_and_the_writeback_stops_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        let mut file = std::fs::File::create(&path).unwrap();
        let writeback = Writeback::start(path.clone());
        for _ in 0..64 {
            file.write_all(&[7u8; 64 * 1024]).unwrap();
        }
        file.sync_all().unwrap();
        drop(writeback);
        assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 64 * 64 * 1024]);
    }

    #[test]
    fn a_missing_file_is_no_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing");
        let writeback = Writeback::start(path.clone());
        // Dropping stops its thread and waits for it.
        drop(writeback);
        assert!(!path.exists(), "a hint to the disk creates no file");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
