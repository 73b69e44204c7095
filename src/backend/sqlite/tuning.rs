//! How SQLite is set up for speed: pragmas, page sizes, caches, the checkpoint apart.

use super::schema::MIGRATIONS;
use super::writeback::Writeback;
use super::{SqliteTarget, sqlite_error};
use crate::backend::BackendError;
use rusqlite::{Connection, OpenFlags};
use std::path::PathBuf;
use std::time::Duration;

/// The page size of state files. An apply of changes spread over the whole
/// directory dirties almost every page of the extensions and their index of
/// devices, whatever the page size; larger pages write them to the WAL and back
/// with an eighth of the system calls, and make the B-trees a level shallower.
/// At a million users with 100,000 changes the write took 0.10-0.15 s less than
/// with 4 KiB pages and about 0.07 s less than with 16 KiB ones; 64 KiB pages
/// were no faster, and plans read as fast with any of them.
pub(super) const PAGE_SIZE: i64 = 32_768;

/// The page cache of a connection while it applies (`PRAGMA cache_size`, negative
/// for KiB), allocated as pages are used. It holds the pages an apply of 100,000
/// changes to a million-row directory dirties (about 200 MB). Beyond it SQLite
/// spills dirty pages to the WAL as frames that only the commit makes part of the
/// file, so memory stays bounded whatever the apply writes; but it spills the
/// pages dirtied first, the inner pages of the B-trees among them, which are
/// dirtied again at once: with 64 MiB, a first import of a million users wrote
/// in 10.7 s instead of 6.1-6.3 s (256 MiB or 1 GiB), while applies of changes
/// were no faster with a larger cache than with this one.
pub(super) const APPLY_CACHE_KIB: i64 = -262_144;

/// SQLite's default `wal_autocheckpoint` (pages), which an apply turns off.
pub(super) const WAL_AUTOCHECKPOINT: i64 = 1000;

/// Settings of the SQLite library itself, made once before its first
/// connection: no memory statistics, which take a global mutex on every
/// allocation. Too late (another connection came first) changes nothing.
pub(super) fn configure_library() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: sqlite3_config is called before any other SQLite call of this
        // process, with the documented argument of SQLITE_CONFIG_MEMSTATUS (an
        // int); afterwards it only returns SQLITE_MISUSE.
        unsafe {
            rusqlite::ffi::sqlite3_config(
                rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS,
                0 as std::ffi::c_int,
            );
        }
    });
}

/// Copies an apply's pages from the WAL into the state file (a checkpoint) on
/// a connection of its own, so that whoever applied goes on meanwhile (keeps
/// the digest index, reports, frees its memory). The commit wrote the pages
/// once, to the WAL; the checkpoint syncs the WAL, writes them again and syncs
/// the file: at a million rows with 100,000 changes, 140 MB each way and about
/// a third of the write. `Drop` waits for it, so a process that applied exits
/// with its apply on disk. The apply is committed whatever becomes of it:
/// should it fail, the pages stay in the WAL, where readers find them, and the
/// last connection to close checkpoints them.
pub(super) fn checkpoint_apart(path: PathBuf) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let Ok(conn) = Connection::open_with_flags(&path, flags) else {
            return;
        };
        let _ = conn.pragma_update(None, "synchronous", "NORMAL");
        // rusqlite opens connections with a busy timeout of 5 s, which TRUNCATE
        // would spend waiting for a reader (a registrar in the middle of a
        // lookup) before the process that applied may exit.
        let _ = conn.busy_timeout(std::time::Duration::ZERO);
        // PASSIVE waits for nobody: whoever reads now started after the commit
        // and holds no page of the WAL back. TRUNCATE then empties the WAL
        // unless somebody is reading just then (it does not wait either), so that
        // the last connection to close has an empty file to delete.
        let writeback = Writeback::start(path.clone());
        let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        drop(writeback);
        let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    })
}

/// Connection settings for reading large directories: a page cache of 4 MB
/// holds the inner pages of the tables and indexes a plan looks rows up in
/// (a bigger one only costs memory: scans, and lookups in table order, read each
/// leaf once; with 16 MB a 1M plan took 6,000 more page faults and was no
/// faster). Reads go through the cache rather than a memory map, which would
/// count every page read as memory of the process (300 MB in a plan of a million
/// rows).
pub(super) fn tune(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "cache_size", -4_096)
}

impl SqliteTarget {
    pub(super) fn configure(&mut self) -> Result<(), BackendError> {
        let path = self.path.display().to_string();
        let context = || format!("cannot open {path}");
        self.conn
            .busy_timeout(Duration::from_secs(5))
            .map_err(|e| sqlite_error(context(), e))?;
        self.conn.set_prepared_statement_cache_capacity(32);
        rusqlite::vtab::array::load_module(&self.conn).map_err(|e| sqlite_error(context(), e))?;
        tune(&self.conn).map_err(|e| sqlite_error(context(), e))?;
        self.check_identity()?;
        self.conn
            .pragma_update(None, "foreign_keys", true)
            .map_err(|e| sqlite_error(context(), e))?;
        let version = self.schema_version()?;
        if self.read_only {
            if version != 0 && version < MIGRATIONS.len() as i64 {
                return Err(BackendError::Unsupported(format!(
                    "the state file {path} has schema version {version} and needs an upgrade, \
                     but it is read-only"
                )));
            }
            return Ok(());
        }
        // Takes effect for a new file only, whose first page the WAL mode writes.
        self.conn
            .pragma_update(None, "page_size", PAGE_SIZE)
            .map_err(|e| sqlite_error(context(), e))?;
        let mode: String = self
            .conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(|e| sqlite_error(context(), e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(BackendError::Unsupported(format!(
                "cannot put {path} in WAL mode (journal mode is {mode})"
            )));
        }
        self.conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| sqlite_error(context(), e))?;
        self.migrate()
    }
}
