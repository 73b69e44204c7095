//! SQLite target (embedded default).
//!
//! One file holds the directory, the device inventory, the license limits, the
//! apply history and a change serial. Triggers bump the serial on every write to
//! the directory tables, so a change made by any other program is noticed too.

use super::writeback::Writeback;
use super::{
    AppliedRevision, ApplyReport, ApplyRequest, BackendError, Compression, Counts, HistoryRecord,
    LockGuard, LockHolder, Progress, RecordedCsv, Target, snapshot,
};
use crate::model::{
    Device, Directory, Extension, ExtensionKind, Licenses, Text, USER_COLUMNS, User, cmp_extension,
};
use crate::plan::{Action, Change, PlannedAction};
use crate::{FastMap, FastSet};
use rusqlite::types::{ToSql, ValueRef};
use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, Row, Statement, TransactionBehavior,
    params,
};
use std::cell::{RefCell, RefMut};
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `PRAGMA application_id` of pbxsync state files ("PBXS").
const APPLICATION_ID: i64 = 0x5042_5853;

/// Schema migrations; the schema version (`PRAGMA user_version`) is the number of
/// batches applied. Never edit a released batch, append a new one.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value
);
INSERT INTO meta (key, value) VALUES ('serial', 0);

CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    first_name TEXT NOT NULL DEFAULT '',
    last_name TEXT NOT NULL DEFAULT '',
    email TEXT NOT NULL DEFAULT '',
    im TEXT NOT NULL DEFAULT '',
    mobile TEXT NOT NULL DEFAULT '',
    password_hash TEXT
);

CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL DEFAULT ''
);

CREATE TABLE extensions (
    number TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id),
    kind TEXT NOT NULL CHECK (kind IN ('device', 'virtual', 'voicemail_only')),
    device TEXT UNIQUE REFERENCES devices (id),
    description TEXT NOT NULL DEFAULT '',
    sip_secret TEXT NOT NULL
);
CREATE INDEX extensions_user_id ON extensions (user_id);

-- A single row; NULL is unlimited.
CREATE TABLE licenses (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    users INTEGER CHECK (users >= 0),
    voicemail INTEGER CHECK (voicemail >= 0)
);
INSERT INTO licenses (id) VALUES (1);

CREATE TABLE history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    local_user TEXT NOT NULL,
    git_author TEXT,
    source TEXT NOT NULL,
    commit_id TEXT,
    blob TEXT NOT NULL,
    summary TEXT NOT NULL,
    outcome TEXT NOT NULL,
    csv_redacted TEXT NOT NULL
);

CREATE TRIGGER users_insert_serial AFTER INSERT ON users
BEGIN UPDATE meta SET value = value + 1 WHERE key = 'serial'; END;
CREATE TRIGGER users_update_serial AFTER UPDATE ON users
BEGIN UPDATE meta SET value = value + 1 WHERE key = 'serial'; END;
CREATE TRIGGER users_delete_serial AFTER DELETE ON users
BEGIN UPDATE meta SET value = value + 1 WHERE key = 'serial'; END;
CREATE TRIGGER extensions_insert_serial AFTER INSERT ON extensions
BEGIN UPDATE meta SET value = value + 1 WHERE key = 'serial'; END;
CREATE TRIGGER extensions_update_serial AFTER UPDATE ON extensions
BEGIN UPDATE meta SET value = value + 1 WHERE key = 'serial'; END;
CREATE TRIGGER extensions_delete_serial AFTER DELETE ON extensions
BEGIN UPDATE meta SET value = value + 1 WHERE key = 'serial'; END;
CREATE TRIGGER devices_insert_serial AFTER INSERT ON devices
BEGIN UPDATE meta SET value = value + 1 WHERE key = 'serial'; END;
CREATE TRIGGER devices_update_serial AFTER UPDATE ON devices
BEGIN UPDATE meta SET value = value + 1 WHERE key = 'serial'; END;
CREATE TRIGGER devices_delete_serial AFTER DELETE ON devices
BEGIN UPDATE meta SET value = value + 1 WHERE key = 'serial'; END;
CREATE TRIGGER licenses_insert_serial AFTER INSERT ON licenses
BEGIN UPDATE meta SET value = value + 1 WHERE key = 'serial'; END;
CREATE TRIGGER licenses_update_serial AFTER UPDATE ON licenses
BEGIN UPDATE meta SET value = value + 1 WHERE key = 'serial'; END;
CREATE TRIGGER licenses_delete_serial AFTER DELETE ON licenses
BEGIN UPDATE meta SET value = value + 1 WHERE key = 'serial'; END;
"#,
    r#"
-- The digest of the CSV row last applied to each extension, so that a plan can
-- skip the rows that did not change. Any other change to the extension or its
-- user makes it unknown again.
ALTER TABLE extensions ADD COLUMN row_digest INTEGER;
CREATE TRIGGER extensions_digest_stale
AFTER UPDATE OF number, user_id, kind, device, description ON extensions
WHEN NEW.row_digest IS NOT NULL
BEGIN UPDATE extensions SET row_digest = NULL WHERE number = NEW.number; END;
CREATE TRIGGER users_digest_stale
AFTER UPDATE OF username, first_name, last_name, email, im, mobile ON users
BEGIN UPDATE extensions SET row_digest = NULL WHERE user_id = NEW.id AND row_digest IS NOT NULL; END;
"#,
    r#"
-- The applied CSV of a history entry, LZ4-compressed: a directory of a million
-- users makes a CSV of over 100 MB, recorded with every apply.
ALTER TABLE history ADD COLUMN csv_lz4 BLOB;
"#,
    r#"
-- Password hashes apart from the user rows, which they made twice as long: an
-- update of a user, and a plan that reads one, touch half as many pages.
CREATE TABLE passwords (
    user_id INTEGER PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    hash TEXT NOT NULL
);
INSERT INTO passwords (user_id, hash)
    SELECT id, password_hash FROM users WHERE password_hash IS NOT NULL;
ALTER TABLE users DROP COLUMN password_hash;
CREATE TRIGGER passwords_insert_serial AFTER INSERT ON passwords
BEGIN UPDATE meta SET value = value + 1 WHERE key = 'serial'; END;
CREATE TRIGGER passwords_update_serial AFTER UPDATE ON passwords
BEGIN UPDATE meta SET value = value + 1 WHERE key = 'serial'; END;
CREATE TRIGGER passwords_delete_serial AFTER DELETE ON passwords
BEGIN UPDATE meta SET value = value + 1 WHERE key = 'serial'; END;
"#,
    r#"
-- The same CHECK on kind without IN: SQLite builds a table of the IN list's values
-- every time the constraint runs, a third of the cost of inserting an extension.
-- Changing a CHECK constraint by rewriting the table's definition is the
-- procedure of SQLite's ALTER TABLE documentation (section "Making Other Kinds Of
-- Table Schema Changes"); the migration then bumps the schema version.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
SET sql = replace(sql,
    'CHECK (kind IN (''device'', ''virtual'', ''voicemail_only''))',
    'CHECK (kind = ''device'' OR kind = ''virtual'' OR kind = ''voicemail_only'')')
WHERE type = 'table' AND name = 'extensions';
PRAGMA writable_schema = OFF;
"#,
    r#"
-- New entries keep the applied CSV zstd-compressed, a quarter of LZ4's size.
ALTER TABLE history ADD COLUMN csv_zstd BLOB;
"#,
    r#"
-- Extensions keyed by their number (WITHOUT ROWID): a lookup or write by number
-- searches one B-tree rather than an index and then the table, and there is no
-- separate index of numbers to keep. A SIP secret is kept as its 16 bytes rather
-- than 32 hex digits. Together they make an apply's writes a fifth smaller.
-- The table is rebuilt as SQLite's ALTER TABLE documentation describes; the
-- trigger on users that refers to it is created again after the rename.
DROP TRIGGER users_digest_stale;
CREATE TABLE extensions_new (
    number TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id),
    kind TEXT NOT NULL CHECK (kind = 'device' OR kind = 'virtual' OR kind = 'voicemail_only'),
    device TEXT UNIQUE REFERENCES devices (id),
    description TEXT NOT NULL DEFAULT '',
    sip_secret BLOB NOT NULL,
    row_digest INTEGER
) WITHOUT ROWID;
INSERT INTO extensions_new
    SELECT number, user_id, kind, device, description,
           coalesce(unhex(sip_secret), CAST(sip_secret AS BLOB)), row_digest
    FROM extensions;
DROP TABLE extensions;
ALTER TABLE extensions_new RENAME TO extensions;
CREATE INDEX extensions_user_id ON extensions (user_id);
CREATE TRIGGER extensions_insert_serial AFTER INSERT ON extensions
BEGIN UPDATE meta SET value = value + 1 WHERE key = 'serial'; END;
CREATE TRIGGER extensions_update_serial AFTER UPDATE ON extensions
BEGIN UPDATE meta SET value = value + 1 WHERE key = 'serial'; END;
CREATE TRIGGER extensions_delete_serial AFTER DELETE ON extensions
BEGIN UPDATE meta SET value = value + 1 WHERE key = 'serial'; END;
CREATE TRIGGER extensions_digest_stale
AFTER UPDATE OF number, user_id, kind, device, description ON extensions
WHEN NEW.row_digest IS NOT NULL
BEGIN UPDATE extensions SET row_digest = NULL WHERE number = NEW.number; END;
CREATE TRIGGER users_digest_stale
AFTER UPDATE OF username, first_name, last_name, email, im, mobile ON users
BEGIN UPDATE extensions SET row_digest = NULL WHERE user_id = NEW.id AND row_digest IS NOT NULL; END;
"#,
    r#"
-- A random id of this file and its copies, part of the tag of the digest
-- snapshot beside it (`SqliteTarget::keep_index`).
INSERT INTO meta (key, value) VALUES ('file_id', lower(hex(randomblob(16))));
"#,
    r#"
-- Pages of 32 KiB (PAGE_SIZE): a file of users is compacted into them after
-- this batch. New files are made with them.
SELECT 1;
"#,
];

/// The migrations after which a file that holds users is compacted (`VACUUM`):
/// 4 shortened every user row, which leaves the pages half empty; 7 rebuilt the
/// extensions, which leaves the old table's pages free; 9 moves to pages of
/// `PAGE_SIZE`.
const COMPACTING_MIGRATIONS: [i64; 3] = [4, 7, 9];

/// The page size of state files. An apply of changes spread over the whole
/// directory dirties almost every page of the extensions and their index of
/// devices, whatever the page size; larger pages write them to the WAL and back
/// with an eighth of the system calls, and make the B-trees a level shallower.
/// At a million users with 100,000 changes the write took 0.10-0.15 s less than
/// with 4 KiB pages and about 0.07 s less than with 16 KiB ones; 64 KiB pages
/// were no faster, and plans read as fast with any of them.
const PAGE_SIZE: i64 = 32_768;

const HISTORY_COLUMNS: &str = "id, time, local_user, git_author, source, commit_id, blob, summary, \
     outcome, csv_redacted, csv_lz4, csv_zstd";

/// The list leaves the recorded CSVs out; `history_entry` reads one.
const HISTORY_LIST_COLUMNS: &str = "id, time, local_user, git_author, source, commit_id, blob, \
     summary, outcome, '', NULL, NULL";

/// The page cache of a connection while it applies (`PRAGMA cache_size`, negative
/// for KiB), allocated as pages are used. It holds the pages an apply of 100,000
/// changes to a million-row directory dirties (about 200 MB). Beyond it SQLite
/// spills dirty pages to the WAL as frames that only the commit makes part of the
/// file, so memory stays bounded whatever the apply writes; but it spills the
/// pages dirtied first, the inner pages of the B-trees among them, which are
/// dirtied again at once: with 64 MiB, a first import of a million users wrote
/// in 10.7 s instead of 6.1-6.3 s (256 MiB or 1 GiB), while applies of changes
/// were no faster with a larger cache than with this one.
const APPLY_CACHE_KIB: i64 = -262_144;

/// SQLite's default `wal_autocheckpoint` (pages), which an apply turns off.
const WAL_AUTOCHECKPOINT: i64 = 1000;

/// How many actions pass between two `Progress::Step` reports.
const STEP_EVERY: usize = 1000;

/// The state in a SQLite file.
pub struct SqliteTarget {
    path: PathBuf,
    /// A second connection, opened on first use, so `load` can read users and
    /// extensions at the same time. Declared before `conn` so it closes first:
    /// the last connection to close checkpoints the WAL into the file, and this
    /// read-only one could not.
    reader: Option<Connection>,
    conn: Connection,
    read_only: bool,
    /// Opened as a file nothing writes (SQLite's `immutable`): read-only, in a
    /// folder where SQLite cannot make the shared memory a WAL file needs
    /// (`without_shared_memory`).
    immutable: bool,
    /// The ids of the users the last `load_subset` read and the numbers of their
    /// extensions, with the serial they were read at: an apply at that serial
    /// finds them here instead of looking each up.
    read_users: Option<ReadUsers>,
    /// The checkpoint after the last apply, copying its pages from the WAL into
    /// the file on a connection of its own (see `checkpoint_apart`).
    checkpoint: Option<std::thread::JoinHandle<()>>,
}

/// What a plan read of its users besides their rows, at a serial.
#[derive(Default)]
struct ReadUsers {
    serial: i64,
    /// Ids by username.
    ids: FastMap<Text, i64>,
    /// The numbers of their extensions, by user id, sorted.
    extensions: Vec<(i64, Text)>,
}

impl SqliteTarget {
    /// Opens the state file, creating it (mode 0600, with its parent directories)
    /// when missing and bringing its schema up to date. A file without write
    /// permission is opened read-only: reads work, writes fail with a clear error.
    pub fn open(path: &Path) -> Result<SqliteTarget, BackendError> {
        configure_library();
        create_private_file(path)?;
        // A folder SQLite cannot write its WAL's shared memory into makes the
        // file as read-only as its own permissions would.
        let read_only = is_read_only(path)? || without_shared_memory(path)?;
        if !read_only {
            restore_sidecar_permissions(path);
        }
        let target = SqliteTarget::open_existing(path, read_only)?;
        if read_only && target.schema_version()? == 0 {
            return Err(read_only_error(path));
        }
        Ok(target)
    }

    /// Opens an existing state file for reading only; `None` when there is none
    /// yet (or it was never initialised), which reads as an empty directory.
    pub fn open_read_only(path: &Path) -> Result<Option<SqliteTarget>, BackendError> {
        configure_library();
        match std::fs::metadata(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(format!("cannot read {}", path.display()), e)),
        }
        let target = match SqliteTarget::open_existing(path, true) {
            // A state file of an older pbxsync: bring it up to date first (as
            // `open` does), unless the file itself is read-only.
            Err(BackendError::Unsupported(_)) if !is_read_only(path)? => SqliteTarget::open(path)?,
            other => other?,
        };
        if target.schema_version()? == 0 {
            return Ok(None);
        }
        Ok(Some(target))
    }

    fn open_existing(path: &Path, read_only: bool) -> Result<SqliteTarget, BackendError> {
        // Checked before SQLite sees the file, so nothing is ever written to it.
        check_header(path)?;
        let immutable = read_only && without_shared_memory(path)?;
        let mut flags = OpenFlags::SQLITE_OPEN_NO_MUTEX;
        flags |= if read_only {
            OpenFlags::SQLITE_OPEN_READ_ONLY
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE
        };
        let conn = open_connection(path, flags, immutable)
            .map_err(|e| sqlite_error(format!("cannot open {}", path.display()), e))?;
        let mut target = SqliteTarget {
            path: path.to_owned(),
            reader: None,
            conn,
            read_only,
            immutable,
            read_users: None,
            checkpoint: None,
        };
        target.configure()?;
        Ok(target)
    }

    fn configure(&mut self) -> Result<(), BackendError> {
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

    /// Refuses databases of other programs and of newer pbxsync versions.
    fn check_identity(&self) -> Result<(), BackendError> {
        let path = self.path.display().to_string();
        let probe = || -> rusqlite::Result<(i64, i64, i64)> {
            let app: i64 = self
                .conn
                .pragma_query_value(None, "application_id", |r| r.get(0))?;
            let version: i64 = self
                .conn
                .pragma_query_value(None, "user_version", |r| r.get(0))?;
            let objects: i64 =
                self.conn
                    .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
            Ok((app, version, objects))
        };
        // The file starts as a SQLite database (`check_header`): one SQLite
        // cannot read is damaged rather than foreign.
        let (app, version, objects) = probe().map_err(|e| match damage(&e) {
            Some(reason) => BackendError::Damaged {
                path: path.clone(),
                reason,
            },
            None => sqlite_error(format!("cannot open {path}"), e),
        })?;
        let not_ours = |reason: String| {
            Err(BackendError::NotAStateFile {
                path: path.clone(),
                reason,
            })
        };
        if app != APPLICATION_ID {
            if app != 0 {
                return not_ours(format!(
                    "it is the SQLite database of another program (application id {app:#x})"
                ));
            }
            if objects > 0 || version != 0 {
                return not_ours(
                    "it is a SQLite database with tables, but not one of pbxsync".to_owned(),
                );
            }
            // An empty database: a state file about to be initialised.
            return Ok(());
        }
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(BackendError::NewerSchema {
                path,
                found: version,
                known,
            });
        }
        Ok(())
    }

    fn schema_version(&self) -> Result<i64, BackendError> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| sqlite_error("cannot read the schema version", e))
    }

    fn migrate(&mut self) -> Result<(), BackendError> {
        let known = MIGRATIONS.len() as i64;
        let mut compact = false;
        // Only an outdated file takes the write lock: opening must not wait for
        // an apply that is running.
        while self.schema_version()? < known {
            let context = "cannot migrate the state file";
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| sqlite_error(context, e))?;
            // Read again under the lock: another process may have migrated it.
            let version: i64 = tx
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .map_err(|e| sqlite_error(context, e))?;
            let Some(batch) = usize::try_from(version)
                .ok()
                .and_then(|v| MIGRATIONS.get(v))
            else {
                return Ok(());
            };
            let next = version + 1;
            if COMPACTING_MIGRATIONS.contains(&next) {
                compact |= tx
                    .query_row("SELECT EXISTS (SELECT 1 FROM users)", [], |r| {
                        r.get::<_, bool>(0)
                    })
                    .map_err(|e| sqlite_error(context, e))?;
            }
            tx.execute_batch(batch)
                // Other connections read the schema again (a batch that rewrites
                // a definition does not bump its version by itself).
                .and_then(|()| {
                    tx.pragma_query_value(None, "schema_version", |r| r.get::<_, i64>(0))
                })
                .and_then(|version| tx.pragma_update(None, "schema_version", version + 1))
                .and_then(|()| tx.pragma_update(None, "user_version", next))
                .and_then(|()| tx.pragma_update(None, "application_id", APPLICATION_ID))
                .and_then(|()| tx.commit())
                .map_err(|e| sqlite_error(format!("{context} to version {next}"), e))?;
        }
        if compact {
            // Only makes the file smaller and faster: a busy file stays as it is.
            let _ = self.compact();
        }
        Ok(())
    }

    /// Rebuilds the file compactly, in pages of `PAGE_SIZE`. The page size of a
    /// file changes only by a `VACUUM` outside WAL mode, which needs the file to
    /// itself; when another connection has it open, the file is compacted in
    /// its pages as they are.
    fn compact(&self) -> rusqlite::Result<()> {
        let page_size: i64 = self
            .conn
            .pragma_query_value(None, "page_size", |r| r.get(0))?;
        if page_size != PAGE_SIZE {
            let mode: String =
                self.conn
                    .pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get(0))?;
            if mode.eq_ignore_ascii_case("delete") {
                self.conn.pragma_update(None, "page_size", PAGE_SIZE)?;
            }
        }
        let vacuum = self.conn.execute_batch("VACUUM");
        self.conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0))?;
        vacuum
    }

    /// Both connections: the main one, and the reader, opened on first use.
    fn connections(&mut self) -> rusqlite::Result<(&mut Connection, &mut Connection)> {
        let reader = match &mut self.reader {
            Some(reader) => reader,
            slot => {
                let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let reader = open_connection(&self.path, flags, self.immutable)?;
                reader.busy_timeout(Duration::from_secs(5))?;
                tune(&reader)?;
                rusqlite::vtab::array::load_module(&reader)?;
                slot.insert(reader)
            }
        };
        Ok((&mut self.conn, reader))
    }

    /// Reads users, devices and licenses (`mine`) on this connection while the
    /// reader reads extensions (`theirs`), each in a read transaction; `None` when
    /// a write landed between the two. Every write to these tables bumps the
    /// serial, so equal serials mean both snapshots hold the same directory.
    fn read_in_parallel(
        &mut self,
        mine: impl FnOnce(&Connection) -> rusqlite::Result<(Vec<User>, Vec<Device>, Licenses)>,
        theirs: impl FnOnce(&Connection) -> rusqlite::Result<(Vec<Extension>, Vec<Device>)> + Send,
    ) -> rusqlite::Result<Option<Directory>> {
        let (conn, reader) = self.connections()?;
        let (mine, theirs) = std::thread::scope(|scope| {
            let theirs = scope.spawn(move || -> rusqlite::Result<_> {
                let tx = reader.transaction()?;
                Ok((read_serial(&tx)?, theirs(&tx)?))
            });
            let mine = (|| -> rusqlite::Result<_> {
                let tx = conn.transaction()?;
                Ok((read_serial(&tx)?, mine(&tx)?))
            })();
            let theirs = theirs
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (mine, theirs)
        });
        let (serial, (users, mut devices, licenses)) = mine?;
        let (their_serial, (extensions, their_devices)) = theirs?;
        if serial != their_serial {
            return Ok(None);
        }
        devices.extend(their_devices);
        Ok(Some(Directory {
            users,
            extensions,
            devices,
            licenses,
        }))
    }

    /// The whole directory, read on both connections at once (each side sorts
    /// its lists as `Directory::sort` would).
    fn load_in_parallel(&mut self) -> rusqlite::Result<Option<Directory>> {
        self.read_in_parallel(
            |tx| {
                let mut users = read_users(tx)?;
                users.sort_by(|a, b| a.username.cmp(&b.username));
                let mut devices = read_devices(tx)?;
                devices.sort_by(|a, b| a.id.cmp(&b.id));
                Ok((users, devices, read_licenses(tx)?))
            },
            |tx| {
                let mut extensions = read_extensions(tx)?;
                extensions.sort_by(|a, b| cmp_extension(&a.number, &b.number));
                Ok((extensions, Vec::new()))
            },
        )
    }

    fn ensure_writable(&self) -> Result<(), BackendError> {
        if self.read_only {
            Err(read_only_error(&self.path))
        } else {
            Ok(())
        }
    }

    /// The digest snapshot kept beside the state file.
    fn index_path(&self) -> PathBuf {
        sidecar(&self.path, ".digests")
    }

    /// The current serial, and the tag a snapshot of the index at that serial
    /// carries: the file's id, the serial and the last history entry, so that a
    /// snapshot never passes for another file's, or for a later state.
    fn index_tag(&self) -> rusqlite::Result<Option<(i64, String)>> {
        self.conn
            .query_row(
                "SELECT s.value, f.value, coalesce(h.value, 0) FROM meta AS s \
                 JOIN meta AS f ON f.key = 'file_id' \
                 LEFT JOIN meta AS h ON h.key = 'last_history_id' WHERE s.key = 'serial'",
                [],
                |r| {
                    let serial: i64 = r.get(0)?;
                    let id: String = r.get(1)?;
                    let history: i64 = r.get(2)?;
                    Ok((serial, format!("{id}:{serial}:{history}")))
                },
            )
            .optional()
    }

    /// The index of the snapshot beside the file, when it was kept at the current
    /// serial and is intact.
    fn kept_index(&self) -> Option<(super::DigestIndex, super::Usage)> {
        let (_, tag) = self.index_tag().ok()??;
        let bytes = crate::bytes::Bytes::read(&self.index_path()).ok()?;
        snapshot::decode(&bytes, &tag)
    }

    /// `Target::missing_devices`, looking up at most `lookups` devices by id.
    fn missing_devices_looking_up(
        &self,
        wanted: &[Device],
        lookups: usize,
    ) -> Result<Vec<Device>, BackendError> {
        let read = || -> rusqlite::Result<Vec<Device>> {
            if wanted.len() <= lookups {
                let ids: Vec<Text> = wanted.iter().map(|d| d.id.clone()).collect();
                let mut stmt = self.conn.prepare_cached(
                    "SELECT d.id FROM rarray(?1) AS k CROSS JOIN devices AS d ON d.id = k.value",
                )?;
                let held = stmt
                    .query_map([key_array(&ids)], |row| text(row, 0))?
                    .collect::<rusqlite::Result<FastSet<Text>>>()?;
                return Ok(wanted
                    .iter()
                    .filter(|d| !held.contains(&d.id))
                    .cloned()
                    .collect());
            }
            // BINARY collation: the byte order of `str::cmp`, the inventory's.
            let mut stmt = self
                .conn
                .prepare_cached("SELECT id FROM devices ORDER BY id")?;
            let mut rows = stmt.query([])?;
            let mut missing = Vec::new();
            let mut wanted = wanted.iter().peekable();
            while let Some(row) = rows.next()? {
                let held = row.get_ref(0)?.as_str()?;
                while let Some(d) = wanted.next_if(|d| d.id.as_str() < held) {
                    missing.push(d.clone());
                }
                wanted.next_if(|d| d.id.as_str() == held);
                if wanted.peek().is_none() {
                    break;
                }
            }
            missing.extend(wanted.cloned());
            Ok(missing)
        };
        read().map_err(|e| sqlite_error(format!("cannot read {}", self.path.display()), e))
    }

    fn lock_path(&self) -> PathBuf {
        sidecar(&self.path, ".lock")
    }

    /// Waits for the checkpoint of the last apply, if one is running.
    fn settle(&mut self) {
        if let Some(checkpoint) = self.checkpoint.take() {
            let _ = checkpoint.join();
        }
    }
}

impl Drop for SqliteTarget {
    fn drop(&mut self) {
        // Before the connections close: the last one to close deletes the WAL.
        self.settle();
    }
}

/// Settings of the SQLite library itself, made once before its first
/// connection: no memory statistics, which take a global mutex on every
/// allocation. Too late (another connection came first) changes nothing.
fn configure_library() {
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

/// A file beside the state file: its name with `suffix` added.
fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

impl Target for SqliteTarget {
    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }

    fn counts(&mut self) -> Result<Counts, BackendError> {
        let count = |row: &Row<'_>, i| row.get::<_, i64>(i).map(|n| n.max(0) as usize);
        self.conn
            .query_row(
                "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM extensions), \
                 (SELECT count(*) FROM devices)",
                [],
                |row| {
                    Ok(Counts {
                        users: count(row, 0)?,
                        extensions: count(row, 1)?,
                        devices: count(row, 2)?,
                    })
                },
            )
            .map_err(|e| sqlite_error(format!("cannot read {}", self.path.display()), e))
    }

    fn load(&mut self) -> Result<Directory, BackendError> {
        let path = self.path.display().to_string();
        let context = || format!("cannot read {path}");
        for _ in 0..3 {
            if let Some(dir) = self
                .load_in_parallel()
                .map_err(|e| sqlite_error(context(), e))?
            {
                return Ok(dir);
            }
        }
        // Writes kept landing between the two snapshots: read everything in one.
        let tx = self
            .conn
            .transaction()
            .map_err(|e| sqlite_error(context(), e))?;
        let read = || -> rusqlite::Result<Directory> {
            let mut dir = Directory {
                users: read_users(&tx)?,
                extensions: read_extensions(&tx)?,
                devices: read_devices(&tx)?,
                licenses: read_licenses(&tx)?,
            };
            dir.sort();
            Ok(dir)
        };
        let dir = read().map_err(|e| sqlite_error(context(), e))?;
        tx.finish().map_err(|e| sqlite_error(context(), e))?;
        Ok(dir)
    }

    fn load_index(&mut self) -> Result<(super::DigestIndex, super::Usage), BackendError> {
        if let Some(kept) = self.kept_index() {
            return Ok(kept);
        }
        let read = || -> rusqlite::Result<(super::DigestIndex, super::Usage)> {
            let mut stmt = self.conn.prepare_cached(
                "SELECT number, row_digest, kind = 'voicemail_only' FROM extensions",
            )?;
            let mut rows = stmt.query([])?;
            let mut index = Vec::new();
            let mut usage = super::Usage::default();
            while let Some(row) = rows.next()? {
                let digest: Option<i64> = row.get(1)?;
                // Stored as the bits of a u64.
                index.push((text(row, 0)?, digest.map(|d| d as u64)));
                if row.get::<_, bool>(2)? {
                    usage.voicemail_licenses += 1;
                } else {
                    usage.user_licenses += 1;
                }
            }
            usage.extensions = index.len() as u64;
            Ok((index, usage))
        };
        let (mut index, usage) =
            read().map_err(|e| sqlite_error(format!("cannot read {}", self.path.display()), e))?;
        if !index.is_sorted_by(|a, b| cmp_extension(&a.0, &b.0).is_le()) {
            index.sort_by(|a, b| cmp_extension(&a.0, &b.0));
        }
        Ok((index, usage))
    }

    /// A short list is looked up by id; a long one (an inventory file of a
    /// whole site) is merged with the ids in the order of their index, which
    /// reads each page of it once instead of once per device.
    fn missing_devices(&mut self, wanted: &[Device]) -> Result<Vec<Device>, BackendError> {
        self.missing_devices_looking_up(wanted, 20_000)
    }

    /// Writes the snapshot beside the state file, whole or not at all (a new
    /// file renamed over the old one). Not synced: a snapshot lost in a crash
    /// only costs the next plan a full read.
    fn keep_index(
        &mut self,
        serial: i64,
        index: &super::DigestIndex,
        usage: super::Usage,
    ) -> Result<(), BackendError> {
        self.ensure_writable()?;
        let tag = self
            .index_tag()
            .map_err(|e| sqlite_error(format!("cannot read {}", self.path.display()), e))?;
        // Something wrote after the apply: the index is not the current one.
        let Some((_, tag)) = tag.filter(|(current, _)| *current == serial) else {
            return Ok(());
        };
        let Some(bytes) = snapshot::encode(&tag, index, usage) else {
            // Not kept: the tag of the one there no longer matches.
            return Ok(());
        };
        let path = self.index_path();
        let partial = sidecar(&self.path, ".digests.partial");
        let write = || -> std::io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&partial)?;
            file.write_all(&bytes)?;
            std::fs::rename(&partial, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&partial);
            io_error(format!("cannot write {}", path.display()), e)
        })
    }

    fn load_subset(&mut self, keys: &super::Keys) -> Result<Directory, BackendError> {
        let path = self.path.display().to_string();
        let context = || format!("cannot read {path}");
        // Both connections about as busy, a lookup costing about the same
        // everywhere: one reads the users, the other the extensions and about
        // half as many holders of devices; the devices are shared out.
        let (users, extensions, devices) =
            (keys.users.len(), keys.extensions.len(), keys.devices.len());
        let mine = ((extensions + devices * 3 / 2).saturating_sub(users) / 2).min(devices);
        let (mine, theirs) = keys.devices.split_at(mine);
        let read_users = RefCell::new(None);
        let read_mine = |tx: &Connection| {
            let (users, read) = read_subset_users(tx, keys)?;
            *read_users.borrow_mut() = Some(read);
            Ok((users, read_devices_by_id(tx, mine)?, read_licenses(tx)?))
        };
        let read_theirs = |tx: &Connection| {
            Ok((
                read_subset_extensions(tx, keys)?,
                read_devices_by_id(tx, theirs)?,
            ))
        };
        let mut subset = None;
        for _ in 0..3 {
            subset = self
                .read_in_parallel(read_mine, read_theirs)
                .map_err(|e| sqlite_error(context(), e))?;
            if subset.is_some() {
                break;
            }
        }
        let mut dir = match subset {
            Some(dir) => dir,
            // Writes kept landing between the two snapshots: read all in one.
            None => {
                let tx = self
                    .conn
                    .unchecked_transaction()
                    .map_err(|e| sqlite_error(context(), e))?;
                let read = || -> rusqlite::Result<Directory> {
                    let (users, mut devices, licenses) = read_mine(&tx)?;
                    let (extensions, their_devices) = read_theirs(&tx)?;
                    devices.extend(their_devices);
                    Ok(Directory {
                        users,
                        extensions,
                        devices,
                        licenses,
                    })
                };
                read().map_err(|e| sqlite_error(context(), e))?
            }
        };
        dir.sort();
        self.read_users = read_users.into_inner();
        Ok(dir)
    }

    fn serial(&mut self) -> Result<i64, BackendError> {
        read_serial(&self.conn).map_err(|e| sqlite_error("cannot read the serial", e))
    }

    fn last_applied(&mut self) -> Result<Option<AppliedRevision>, BackendError> {
        read_last_applied(&self.conn)
            .map_err(|e| sqlite_error("cannot read the last applied revision", e))
    }

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

    fn apply(
        &mut self,
        request: ApplyRequest<'_>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<ApplyReport, BackendError> {
        self.ensure_writable()?;
        // One checkpoint at a time: the last apply's is done before this one.
        self.settle();
        let context = || format!("cannot apply to {}", self.path.display());
        // A cache of its own size for the apply (see APPLY_CACHE_KIB).
        self.conn
            .pragma_update(None, "cache_size", APPLY_CACHE_KIB)
            .map_err(|e| sqlite_error(context(), e))?;
        // The commit leaves its pages in the WAL; `checkpoint_apart` copies them.
        self.conn
            .pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(|e| sqlite_error(context(), e))?;
        let read_users = self.read_users.take();
        let result = apply_in_transaction(
            &mut self.conn,
            &self.path,
            request,
            read_users,
            progress,
            &context,
        );
        // Back to the cache of readers and the default checkpoints; a failure here
        // changes no data.
        let _ = tune(&self.conn);
        let _ = self
            .conn
            .pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT);
        if result.is_ok() {
            self.checkpoint = Some(checkpoint_apart(self.path.clone()));
        }
        result
    }

    fn record_failure(&mut self, record: &HistoryRecord) -> Result<i64, BackendError> {
        self.ensure_writable()?;
        insert_history(&self.conn, record)
            .map_err(|e| sqlite_error("cannot record the failed apply in the history", e))
    }

    fn history(&mut self) -> Result<Vec<HistoryRecord>, BackendError> {
        let read = || -> rusqlite::Result<Vec<HistoryRecord>> {
            let mut stmt = self.conn.prepare_cached(&format!(
                "SELECT {HISTORY_LIST_COLUMNS} FROM history ORDER BY id DESC"
            ))?;
            stmt.query_map([], history_row)?.collect()
        };
        read().map_err(|e| sqlite_error("cannot read the history", e))
    }

    fn history_entry(&mut self, id: i64) -> Result<Option<HistoryRecord>, BackendError> {
        let read = || -> rusqlite::Result<Option<HistoryRecord>> {
            let mut stmt = self.conn.prepare_cached(&format!(
                "SELECT {HISTORY_COLUMNS} FROM history WHERE id = ?1"
            ))?;
            stmt.query_row([id], history_row).optional()
        };
        read().map_err(|e| sqlite_error(format!("cannot read history entry {id}"), e))
    }

    fn add_devices(&mut self, devices: &[Device]) -> Result<(), BackendError> {
        self.ensure_writable()?;
        let write = |conn: &mut Connection| -> rusqlite::Result<()> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO devices (id, model) VALUES (?1, ?2) \
                     ON CONFLICT (id) DO UPDATE SET model = excluded.model",
                )?;
                for device in devices {
                    stmt.execute([device.id.as_str(), device.model.as_str()])?;
                }
            }
            tx.commit()
        };
        write(&mut self.conn).map_err(|e| sqlite_error("cannot add devices", e))
    }

    fn remove_device(&mut self, id: &str) -> Result<bool, BackendError> {
        self.ensure_writable()?;
        let context = || format!("cannot remove device {id}");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sqlite_error(context(), e))?;
        let holder: Option<String> = tx
            .query_row(
                "SELECT number FROM extensions WHERE device = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| sqlite_error(context(), e))?;
        if let Some(number) = holder {
            return Err(BackendError::Unsupported(format!(
                "device {id} is assigned to extension {number}; \
                 take it off the extension before removing it from the inventory"
            )));
        }
        let removed = tx
            .execute("DELETE FROM devices WHERE id = ?1", [id])
            .and_then(|n| tx.commit().map(|()| n > 0))
            .map_err(|e| sqlite_error(context(), e))?;
        Ok(removed)
    }

    fn set_licenses(&mut self, licenses: Licenses) -> Result<(), BackendError> {
        self.ensure_writable()?;
        let limit = |n: Option<u64>| -> Result<Option<i64>, BackendError> {
            n.map(|n| {
                i64::try_from(n).map_err(|_| {
                    BackendError::Unsupported(format!("license limit {n} is too large"))
                })
            })
            .transpose()
        };
        let (users, voicemail) = (limit(licenses.users)?, limit(licenses.voicemail)?);
        self.conn
            .execute(
                "INSERT INTO licenses (id, users, voicemail) VALUES (1, ?1, ?2) \
                 ON CONFLICT (id) DO UPDATE SET users = excluded.users, voicemail = excluded.voicemail",
                params![users, voicemail],
            )
            .map(drop)
            .map_err(|e| sqlite_error("cannot set the license limits", e))
    }
}

/// Holds the OS lock on `<state file>.lock`; the kernel drops it with the process.
struct SqliteLock {
    file: File,
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

/// Copies an apply's pages from the WAL into the state file (a checkpoint) on
/// a connection of its own, so that whoever applied goes on meanwhile (keeps
/// the digest index, reports, frees its memory). The commit wrote the pages
/// once, to the WAL; the checkpoint syncs the WAL, writes them again and syncs
/// the file: at a million rows with 100,000 changes, 140 MB each way and about
/// a third of the write. `Drop` waits for it, so a process that applied exits
/// with its apply on disk. The apply is committed whatever becomes of it:
/// should it fail, the pages stay in the WAL, where readers find them, and the
/// last connection to close checkpoints them.
fn checkpoint_apart(path: PathBuf) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let Ok(conn) = Connection::open_with_flags(&path, flags) else {
            return;
        };
        let _ = conn.pragma_update(None, "synchronous", "NORMAL");
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

/// `Target::apply` on a connection set up for it.
fn apply_in_transaction(
    conn: &mut Connection,
    path: &Path,
    request: ApplyRequest<'_>,
    read_users: Option<ReadUsers>,
    progress: &mut dyn FnMut(Progress),
    context: &dyn Fn() -> String,
) -> Result<ApplyReport, BackendError> {
    // IMMEDIATE takes the write lock now, so the serial cannot change between the
    // check and the writes.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| sqlite_error(context(), e))?;
    let current = read_serial(&tx).map_err(|e| sqlite_error(context(), e))?;
    if current != request.expected_serial {
        return Err(BackendError::Stale {
            planned: request.expected_serial,
            current,
        });
    }
    progress(Progress::Started {
        total: request.actions.len(),
    });
    let triggers = SuspendedTriggers::drop_in(&tx).map_err(|e| sqlite_error(context(), e))?;
    // What was read at this serial still holds: nothing has written since.
    let read_users = read_users
        .filter(|read| read.serial == current)
        .unwrap_or_default();
    let cleared = Applier::new(&tx, &request, read_users, progress).run()?;
    // What the serial triggers do for every written row, once.
    tx.execute("UPDATE meta SET value = value + 1 WHERE key = 'serial'", [])
        .and_then(|_| triggers.restore(&tx))
        .map_err(|e| sqlite_error(context(), e))?;
    progress(Progress::Committing);
    let record = (request.record)();
    let finish = || -> rusqlite::Result<(i64, i64)> {
        let serial = read_serial(&tx)?;
        let history_id = insert_history(&tx, &record)?;
        set_meta(&tx, "last_commit", &record.commit)?;
        set_meta(&tx, "last_blob", &record.blob)?;
        set_meta(&tx, "last_serial", &serial)?;
        set_meta(&tx, "last_inventory", &request.inventory)?;
        set_meta(&tx, "last_pruned", &request.pruned)?;
        set_meta(&tx, "last_history_id", &history_id)?;
        Ok((history_id, serial))
    };
    let (history_id, serial) = finish().map_err(|e| sqlite_error(context(), e))?;
    // The commit writes the pages to the WAL (see `checkpoint_apart`).
    let writeback = Writeback::start(sidecar(path, "-wal"));
    let committed = tx.commit();
    drop(writeback);
    committed.map_err(|e| sqlite_error(context(), e))?;
    Ok(ApplyReport {
        history_id,
        serial,
        cleared,
    })
}

/// The triggers of pbxsync's schema. They keep the serial and the row digests
/// right whatever writes to the file; an apply drops them for the length of its
/// transaction and does their work itself (one serial bump, and its statements
/// clear the digests the triggers would), which saves a statement for every row
/// it writes. Triggers that others added stay in force.
const OWN_TRIGGERS: [&str; 17] = [
    "users_insert_serial",
    "users_update_serial",
    "users_delete_serial",
    "extensions_insert_serial",
    "extensions_update_serial",
    "extensions_delete_serial",
    "devices_insert_serial",
    "devices_update_serial",
    "devices_delete_serial",
    "licenses_insert_serial",
    "licenses_update_serial",
    "licenses_delete_serial",
    "passwords_insert_serial",
    "passwords_update_serial",
    "passwords_delete_serial",
    "extensions_digest_stale",
    "users_digest_stale",
];

/// The definitions of pbxsync's triggers, dropped inside a transaction until
/// `restore` creates them again (a rollback brings them back too).
struct SuspendedTriggers(Vec<String>);

impl SuspendedTriggers {
    fn drop_in(tx: &Connection) -> rusqlite::Result<SuspendedTriggers> {
        let mut stmt = tx.prepare("SELECT name, sql FROM sqlite_schema WHERE type = 'trigger'")?;
        let triggers = stmt
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut definitions = Vec::new();
        for (name, sql) in triggers {
            if OWN_TRIGGERS.contains(&name.as_str()) {
                tx.execute_batch(&format!("DROP TRIGGER \"{name}\""))?;
                definitions.push(sql);
            }
        }
        Ok(SuspendedTriggers(definitions))
    }

    fn restore(self, tx: &Connection) -> rusqlite::Result<()> {
        for sql in self.0 {
            tx.execute_batch(&sql)?;
        }
        Ok(())
    }
}

/// The holder a locked lock file names. The holder writes it right after locking,
/// so an empty or partial file is retried briefly.
fn read_holder(file: &File) -> LockHolder {
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

/// Carries out the actions of one apply inside its transaction, without
/// pbxsync's triggers: every statement that changes an extension sets its row
/// digest itself (the one of the request, or NULL), and an update of a user
/// clears the digests of all its extensions first.
///
/// `extensions.device` is UNIQUE, so the actions run in phases that never let two
/// extensions hold a device at once, whatever their order in the plan: devices
/// and users first; then every extension whose device changes or is reassigned
/// lets go of it; then removed extensions go; then extensions get their final
/// state; removed users go last, once no extension refers to them. Digests that
/// no statement wrote are recorded at the end.
struct Applier<'a, 'r, 'p> {
    conn: &'a Connection,
    request: &'a ApplyRequest<'r>,
    progress: &'p mut dyn FnMut(Progress),
    done: usize,
    statements: Statements<'a>,
    /// The position of each extension in the request's digests.
    digests: FastMap<&'r str, usize>,
    /// Whether a statement wrote each of the request's digests.
    written: RefCell<Vec<bool>>,
    /// User ids by username: as the plan read them, created, or looked up.
    user_ids: RefCell<FastMap<Text, i64>>,
    /// The users whose extensions the plan read (their ids, sorted), and those
    /// extensions (`ReadUsers::extensions`).
    read_ids: Vec<i64>,
    read_extensions: Vec<(i64, Text)>,
    secrets: RefCell<Secrets>,
    /// Extensions outside the actions whose digest `clear_digests_of` cleared.
    cleared: Vec<Text>,
}

/// The statements of an apply. `Statements` prepares each once, on first use, and
/// keeps it for the transaction: a statement cache finds its statement by hashing
/// the SQL text at every use and resets it on the way back, a sixth of an apply's
/// work at 100,000 rows.
#[derive(Clone, Copy)]
enum Sql {
    StaleDigests,
    ClearDigest,
    SetDigest,
    InsertDevice,
    InsertUser,
    InsertPassword,
    UpsertPassword,
    UpdateUser,
    UserId,
    Release,
    DeleteExtension,
    InsertExtension,
    UpdateExtension,
    UpdateExtensionKind,
    UpdateExtensionDevice,
    UpdateExtensionKindDevice,
    GiveUpDevice,
    TakeDevice,
    DeleteUser,
}

impl Sql {
    const COUNT: usize = Sql::DeleteUser as usize + 1;

    fn text(self) -> &'static str {
        match self {
            // The index of extensions by user holds their numbers: no row is read.
            Sql::StaleDigests => {
                "SELECT e.number FROM rarray(?1) AS k \
                 CROSS JOIN extensions AS e ON e.user_id = k.value"
            }
            Sql::ClearDigest => {
                "UPDATE extensions SET row_digest = NULL WHERE number = ?1 AND row_digest IS NOT NULL"
            }
            Sql::SetDigest => "UPDATE extensions SET row_digest = ?2 WHERE number = ?1",
            Sql::InsertDevice => "INSERT INTO devices (id, model) VALUES (?1, ?2)",
            Sql::InsertUser => {
                "INSERT INTO users (username, first_name, last_name, email, im, mobile) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            }
            Sql::InsertPassword => "INSERT INTO passwords (user_id, hash) VALUES (?1, ?2)",
            Sql::UpsertPassword => {
                "INSERT INTO passwords (user_id, hash) VALUES (?1, ?2) \
                 ON CONFLICT (user_id) DO UPDATE SET hash = excluded.hash"
            }
            // NULL keeps a field as it is, so one statement serves every set of changes.
            Sql::UpdateUser => {
                "UPDATE users SET first_name = coalesce(?2, first_name), \
                 last_name = coalesce(?3, last_name), email = coalesce(?4, email), \
                 im = coalesce(?5, im), mobile = coalesce(?6, mobile) WHERE id = ?1"
            }
            Sql::UserId => "SELECT id FROM users WHERE username = ?1",
            // Only rows that hold a device, so unaffected rows are left alone.
            Sql::Release => {
                "UPDATE extensions SET device = NULL, row_digest = NULL \
                 WHERE number = ?1 AND device IS NOT NULL"
            }
            Sql::DeleteExtension => "DELETE FROM extensions WHERE number = ?1",
            Sql::InsertExtension => {
                "INSERT INTO extensions \
                 (number, user_id, kind, device, description, sip_secret, row_digest) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            }
            Sql::UpdateExtension => {
                "UPDATE extensions SET description = coalesce(?3, description), row_digest = ?4 \
                 WHERE number = ?1 AND user_id = ?2"
            }
            Sql::UpdateExtensionKind => {
                "UPDATE extensions SET description = coalesce(?3, description), row_digest = ?4, \
                 kind = ?5 WHERE number = ?1 AND user_id = ?2"
            }
            Sql::UpdateExtensionDevice => {
                "UPDATE extensions SET description = coalesce(?3, description), row_digest = ?4, \
                 device = ?5 WHERE number = ?1 AND user_id = ?2"
            }
            Sql::UpdateExtensionKindDevice => {
                "UPDATE extensions SET description = coalesce(?3, description), row_digest = ?4, \
                 kind = ?5, device = ?6 WHERE number = ?1 AND user_id = ?2"
            }
            Sql::GiveUpDevice => {
                "UPDATE extensions SET kind = ?2, device = NULL, row_digest = ?3 WHERE number = ?1"
            }
            Sql::TakeDevice => {
                "UPDATE extensions SET kind = 'device', device = ?2, row_digest = ?3 \
                 WHERE number = ?1"
            }
            Sql::DeleteUser => "DELETE FROM users WHERE username = ?1",
        }
    }
}

/// The prepared statements of an apply, by `Sql`.
struct Statements<'c> {
    conn: &'c Connection,
    prepared: [RefCell<Option<Statement<'c>>>; Sql::COUNT],
}

impl<'c> Statements<'c> {
    fn new(conn: &'c Connection) -> Statements<'c> {
        Statements {
            conn,
            prepared: std::array::from_fn(|_| RefCell::new(None)),
        }
    }

    /// Statement `sql`, prepared on first use.
    fn get(&self, sql: Sql) -> rusqlite::Result<RefMut<'_, Statement<'c>>> {
        let mut slot = self.prepared[sql as usize].borrow_mut();
        if slot.is_none() {
            *slot = Some(self.conn.prepare(sql.text())?);
        }
        Ok(RefMut::map(slot, |slot| {
            slot.as_mut().expect("prepared just above")
        }))
    }
}

/// Why an action failed, for people.
struct Reason(String);

impl From<rusqlite::Error> for Reason {
    fn from(e: rusqlite::Error) -> Reason {
        Reason(match e {
            rusqlite::Error::SqliteFailure(_, Some(message)) => message,
            e => e.to_string(),
        })
    }
}

type Outcome = Result<(), Reason>;

/// Whether `changes` changes `field`.
fn changes_field(changes: &[Change], field: &str) -> bool {
    changes.iter().any(|c| c.field == field)
}

impl<'a, 'r, 'p> Applier<'a, 'r, 'p> {
    fn new(
        conn: &'a Connection,
        request: &'a ApplyRequest<'r>,
        read_users: ReadUsers,
        progress: &'p mut dyn FnMut(Progress),
    ) -> Applier<'a, 'r, 'p> {
        let mut read_ids: Vec<i64> = read_users.ids.values().copied().collect();
        read_ids.sort_unstable();
        Applier {
            conn,
            request,
            progress,
            done: 0,
            statements: Statements::new(conn),
            digests: request
                .digests
                .iter()
                .enumerate()
                .map(|(i, (number, _))| (number.as_str(), i))
                .collect(),
            written: RefCell::new(vec![false; request.digests.len()]),
            user_ids: RefCell::new(read_users.ids),
            read_ids,
            read_extensions: read_users.extensions,
            secrets: RefCell::default(),
            cleared: Vec::new(),
        }
    }

    /// Returns the extensions outside the actions whose digests it cleared.
    fn run(mut self) -> Result<Vec<Text>, BackendError> {
        let actions = self.request.actions;

        self.phase("creating devices and users");
        let mut updates = Vec::new();
        for (i, planned) in actions.iter().enumerate() {
            match &planned.action {
                Action::CreateDevice { device, model } => {
                    self.finish(i, self.create_device(device, model))?
                }
                Action::CreateUser { username, changes } => {
                    self.finish(i, self.create_user(username, changes))?
                }
                Action::UpdateUser { username, .. } => {
                    updates.push((self.check(i, self.user_id(username))?, i));
                }
                _ => {}
            }
        }
        // Users are updated in the order of their ids, the order of the table:
        // users added over the years are far from the order of their names, and
        // updated by name they would be written all over the table.
        updates.sort_unstable();
        for &(id, i) in &updates {
            if let Action::UpdateUser { username, changes } = &actions[i].action {
                self.finish(i, self.update_user(id, username, changes))?;
            }
        }
        self.clear_digests_of(updates.into_iter().map(|(id, _)| id).collect())
            .map_err(|e| sqlite_error("cannot clear the row digests of updated users", e))?;

        // Removed extensions are deleted before any device is handed out, so they
        // need no release of their own.
        self.phase("releasing devices");
        for (i, planned) in actions.iter().enumerate() {
            match &planned.action {
                Action::UpdateExtension {
                    extension, changes, ..
                } if changes_field(changes, "device") => self.check(i, self.release(extension))?,
                Action::ReassignDevice {
                    from_extension,
                    to_extension,
                    ..
                } => self.check(
                    i,
                    self.release(from_extension)
                        .and_then(|()| self.release(to_extension)),
                )?,
                _ => {}
            }
        }

        self.phase("removing extensions");
        let mut removed = HashSet::new();
        for (i, planned) in actions.iter().enumerate() {
            if let Action::RemoveExtension { extension, .. } = &planned.action {
                removed.insert(extension.as_str());
                self.finish(i, self.remove_extension(extension))?;
            }
        }

        // Added and updated extensions in one pass in the order of their
        // numbers, the order of the table (the plan lists the added ones
        // first). Spread over the table, two passes would each dirty almost
        // every page of it, and once the apply outgrows its page cache
        // (APPLY_CACHE_KIB) the pages spilled to the WAL after the first pass
        // are written again after the second: with a cache of 64 MiB, an apply
        // of 100,000 changes to a million rows wrote 359 MB instead of 277 MB.
        self.phase("adding and updating extensions");
        let mut sweep: Vec<(&str, usize)> = actions
            .iter()
            .enumerate()
            .filter_map(|(i, planned)| match &planned.action {
                Action::AddExtension { extension, .. }
                | Action::UpdateExtension { extension, .. } => Some((extension.as_str(), i)),
                _ => None,
            })
            .collect();
        sweep.sort_unstable();
        for (_, i) in sweep {
            let planned = &actions[i];
            let outcome = match &planned.action {
                Action::AddExtension {
                    username,
                    extension,
                    kind,
                    device,
                    changes,
                } => self.add_extension(username, extension, *kind, device, changes),
                Action::UpdateExtension {
                    username,
                    extension,
                    kind,
                    device,
                    changes,
                } => self.update_extension(username, extension, *kind, device, changes),
                _ => continue,
            };
            self.finish(i, outcome)?;
        }
        // The side that gives a device up first, then the side that takes it, so
        // an extension that does both ends up holding its new device.
        for (i, planned) in actions.iter().enumerate() {
            if let Action::ReassignDevice {
                from_extension,
                from_becomes,
                ..
            } = &planned.action
            {
                // `Device`: the CSV gives it another device, set by its own
                // UpdateExtension. A removed extension has nothing left to change.
                if *from_becomes != ExtensionKind::Device
                    && !removed.contains(from_extension.as_str())
                {
                    self.check(i, self.give_up_device(from_extension, *from_becomes))?;
                }
            }
        }
        for (i, planned) in actions.iter().enumerate() {
            if let Action::ReassignDevice {
                device,
                to_extension,
                ..
            } = &planned.action
            {
                self.finish(i, self.take_device(to_extension, device))?;
            }
        }

        self.phase("removing users");
        for (i, planned) in actions.iter().enumerate() {
            if let Action::RemoveUser { username } = &planned.action {
                self.finish(i, self.remove_user(username))?;
            }
        }

        (self.progress)(Progress::Step {
            done: self.done,
            total: actions.len(),
            step: "recording row digests".into(),
        });
        self.record_other_digests()
            .map_err(|e| sqlite_error("cannot record the row digests", e))?;
        Ok(self.cleared)
    }

    fn phase(&mut self, step: &str) {
        (self.progress)(Progress::Step {
            done: self.done,
            total: self.request.actions.len(),
            step: step.to_owned(),
        });
    }

    /// Reports a failed step of action `index`.
    fn check<T>(&self, index: usize, outcome: Result<T, Reason>) -> Result<T, BackendError> {
        outcome.map_err(|Reason(reason)| BackendError::ActionFailed {
            index,
            action: label(&self.request.actions[index]),
            reason,
        })
    }

    /// Like `check`, for the last step of action `index`.
    fn finish(&mut self, index: usize, outcome: Outcome) -> Result<(), BackendError> {
        self.check(index, outcome)?;
        self.done += 1;
        if self.done.is_multiple_of(STEP_EVERY) {
            (self.progress)(Progress::Step {
                done: self.done,
                total: self.request.actions.len(),
                step: label(&self.request.actions[index]),
            });
        }
        Ok(())
    }

    /// The digest a statement writing `extension` stores (as the bits of a u64),
    /// noting that it was written.
    fn digest(&self, extension: &str) -> Option<i64> {
        let &i = self.digests.get(extension)?;
        self.written.borrow_mut()[i] = true;
        Some(self.request.digests[i].1 as i64)
    }

    /// The rows last applied to the extensions of an updated user no longer
    /// describe it (what the users_digest_stale trigger does, for all at once).
    /// Extensions that the request gives a digest are left alone: a later
    /// statement writes it.
    fn clear_digests_of(&mut self, mut user_ids: Vec<i64>) -> rusqlite::Result<()> {
        if user_ids.is_empty() {
            return Ok(());
        }
        user_ids.sort_unstable();
        let mut stale = Vec::new();
        // The extensions of the users the plan read are known; the others are
        // looked up.
        let (read, unread): (Vec<i64>, Vec<i64>) = user_ids
            .into_iter()
            .partition(|id| self.read_ids.binary_search(id).is_ok());
        for id in read {
            let from = self
                .read_extensions
                .partition_point(|(owner, _)| *owner < id);
            for (_, number) in self.read_extensions[from..]
                .iter()
                .take_while(|(owner, _)| *owner == id)
            {
                if !self.digests.contains_key(number.as_str()) {
                    stale.push(number.to_string());
                }
            }
        }
        if !unread.is_empty() {
            let mut stmt = self.statements.get(Sql::StaleDigests)?;
            let mut rows = stmt.query([id_array(unread)])?;
            while let Some(row) = rows.next()? {
                let number = row.get_ref(0)?.as_str()?;
                if !self.digests.contains_key(number) {
                    stale.push(number.to_owned());
                }
            }
        }
        let mut clear = self.statements.get(Sql::ClearDigest)?;
        for number in stale {
            if clear.execute([&number])? > 0 {
                self.cleared.push(Text::from(number));
            }
        }
        Ok(())
    }

    /// The digests of the request that no statement wrote: rows whose extension
    /// did not change, of users that did.
    fn record_other_digests(&self) -> rusqlite::Result<()> {
        let written = self.written.borrow();
        let mut stmt = self.statements.get(Sql::SetDigest)?;
        for ((number, digest), _) in self
            .request
            .digests
            .iter()
            .zip(written.iter())
            .filter(|(_, written)| !**written)
        {
            stmt.execute(params![number.as_str(), *digest as i64])?;
        }
        Ok(())
    }

    fn create_device(&self, device: &str, model: &str) -> Outcome {
        let mut stmt = self.statements.get(Sql::InsertDevice)?;
        stmt.execute([device, model])
            .map_err(|e| unique_reason(e, || format!("device {device} already exists")))?;
        Ok(())
    }

    fn create_user(&self, username: &Text, changes: &[Change]) -> Outcome {
        let (fields, password) = self.user_changes(username, changes)?;
        let mut stmt = self.statements.get(Sql::InsertUser)?;
        let [first, last, email, im, mobile] = fields.map(|f| f.unwrap_or(""));
        stmt.execute(params![username.as_str(), first, last, email, im, mobile])
            .map_err(|e| unique_reason(e, || format!("user {username} already exists")))?;
        let id = self.conn.last_insert_rowid();
        self.user_ids.borrow_mut().insert(username.clone(), id);
        if let Some(hash) = password {
            let mut stmt = self.statements.get(Sql::InsertPassword)?;
            stmt.execute(params![id, hash])?;
        }
        Ok(())
    }

    /// Updates user `user_id`, named `username`.
    fn update_user(&self, user_id: i64, username: &Text, changes: &[Change]) -> Outcome {
        let (fields, password) = self.user_changes(username, changes)?;
        if let Some(hash) = password {
            let mut stmt = self.statements.get(Sql::UpsertPassword)?;
            stmt.execute(params![user_id, hash])?;
        }
        if fields.iter().any(Option::is_some) {
            let mut stmt = self.statements.get(Sql::UpdateUser)?;
            let [first, last, email, im, mobile] = fields;
            stmt.execute(params![user_id, first, last, email, im, mobile])?;
        }
        Ok(())
    }

    /// The user fields that `changes` sets (by `USER_COLUMNS`), and the password
    /// hash when the password is set.
    fn user_changes<'c>(
        &self,
        username: &str,
        changes: &'c [Change],
    ) -> Result<([Option<&'c str>; 5], Option<&'a str>), Reason> {
        let mut fields = [None; 5];
        let mut password = None;
        for change in changes {
            if change.field == "password" {
                let hash = self.request.password_hashes.get(username).ok_or_else(|| {
                    Reason(format!("no password hash was computed for user {username}"))
                })?;
                password = Some(hash.as_str());
            } else if let Some(i) = USER_COLUMNS.iter().position(|c| c.field() == change.field) {
                fields[i] = Some(change.to.as_deref().unwrap_or(""));
            }
            // Other fields (the username itself) are carried by the action.
        }
        Ok((fields, password))
    }

    fn user_id(&self, username: &Text) -> Result<i64, Reason> {
        if let Some(id) = self.user_ids.borrow().get(username) {
            return Ok(*id);
        }
        let mut stmt = self.statements.get(Sql::UserId)?;
        let id = stmt
            .query_row([username.as_str()], |r| r.get(0))
            .optional()?
            .ok_or_else(|| Reason(format!("user {username} does not exist")))?;
        self.user_ids.borrow_mut().insert(username.clone(), id);
        Ok(id)
    }

    fn release(&self, extension: &str) -> Outcome {
        let mut stmt = self.statements.get(Sql::Release)?;
        stmt.execute([extension])?;
        Ok(())
    }

    fn remove_extension(&self, extension: &str) -> Outcome {
        let mut stmt = self.statements.get(Sql::DeleteExtension)?;
        match stmt.execute([extension])? {
            0 => Err(Reason(format!("extension {extension} does not exist"))),
            _ => Ok(()),
        }
    }

    fn add_extension(
        &self,
        username: &Text,
        extension: &str,
        kind: ExtensionKind,
        device: &Option<Text>,
        changes: &[Change],
    ) -> Outcome {
        check_kind(kind, device)?;
        let user_id = self.user_id(username)?;
        let description = Change::value_of(changes, "description").unwrap_or("");
        let secret: [u8; 16] = self.secrets.borrow_mut().next()?;
        let mut stmt = self.statements.get(Sql::InsertExtension)?;
        stmt.execute(params![
            extension,
            user_id,
            kind.as_str(),
            device.as_deref(),
            description,
            secret,
            self.digest(extension),
        ])
        .map_err(|e| device_reason(e, extension, device))?;
        Ok(())
    }

    fn update_extension(
        &self,
        username: &Text,
        extension: &str,
        kind: ExtensionKind,
        device: &Option<Text>,
        changes: &[Change],
    ) -> Outcome {
        check_kind(kind, device)?;
        let user_id = self.user_id(username)?;
        // Columns left out of SET cost no index, constraint or foreign-key work
        // (the CHECK on kind builds a table of its values each time): the kind and
        // device are set only when they change (the release phase cleared a device
        // that changes). The owner never changes: a plan refuses that.
        let new_kind = changes_field(changes, "kind").then_some(kind.as_str());
        let new_device = device
            .as_deref()
            .filter(|_| changes_field(changes, "device"));
        let sql = match (new_kind.is_some(), new_device.is_some()) {
            (false, false) => Sql::UpdateExtension,
            (true, false) => Sql::UpdateExtensionKind,
            (false, true) => Sql::UpdateExtensionDevice,
            (true, true) => Sql::UpdateExtensionKindDevice,
        };
        let mut stmt = self.statements.get(sql)?;
        let description = Change::value_of(changes, "description");
        let digest = self.digest(extension);
        let mut values: Vec<&dyn ToSql> = vec![&extension, &user_id, &description, &digest];
        values.extend(new_kind.as_ref().map(|kind| kind as &dyn ToSql));
        values.extend(new_device.as_ref().map(|device| device as &dyn ToSql));
        let updated = stmt
            .execute(values.as_slice())
            .map_err(|e| device_reason(e, extension, device))?;
        match updated {
            0 => Err(Reason(format!(
                "extension {extension} does not exist or does not belong to {username}"
            ))),
            _ => Ok(()),
        }
    }

    fn give_up_device(&self, extension: &str, becomes: ExtensionKind) -> Outcome {
        let mut stmt = self.statements.get(Sql::GiveUpDevice)?;
        let digest = self.digest(extension);
        match stmt.execute(params![extension, becomes.as_str(), digest])? {
            0 => Err(Reason(format!("extension {extension} does not exist"))),
            _ => Ok(()),
        }
    }

    fn take_device(&self, extension: &str, device: &Text) -> Outcome {
        let mut stmt = self.statements.get(Sql::TakeDevice)?;
        let digest = self.digest(extension);
        let updated = stmt
            .execute(params![extension, device.as_str(), digest])
            .map_err(|e| device_reason(e, extension, &Some(device.clone())))?;
        match updated {
            0 => Err(Reason(format!("extension {extension} does not exist"))),
            _ => Ok(()),
        }
    }

    fn remove_user(&self, username: &str) -> Outcome {
        let mut stmt = self.statements.get(Sql::DeleteUser)?;
        let removed = stmt.execute([username]).map_err(|e| {
            if is_constraint(&e, rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY) {
                Reason(format!("user {username} still has extensions"))
            } else {
                Reason::from(e)
            }
        })?;
        match removed {
            0 => Err(Reason(format!("user {username} does not exist"))),
            _ => Ok(()),
        }
    }
}

/// `<type> <key>`, naming an action in errors and progress.
fn label(planned: &PlannedAction) -> String {
    let key = match &planned.action {
        Action::CreateDevice { device, .. } | Action::ReassignDevice { device, .. } => device,
        Action::CreateUser { username, .. }
        | Action::UpdateUser { username, .. }
        | Action::RemoveUser { username } => username,
        Action::AddExtension { extension, .. }
        | Action::UpdateExtension { extension, .. }
        | Action::RemoveExtension { extension, .. } => extension,
    };
    format!("{} {key}", planned.action.type_name())
}

fn check_kind(kind: ExtensionKind, device: &Option<Text>) -> Outcome {
    match (kind, device) {
        (ExtensionKind::Device, None) => Err(Reason("kind device without a device".to_owned())),
        (ExtensionKind::Virtual | ExtensionKind::VoicemailOnly, Some(d)) => {
            Err(Reason(format!("kind {kind} with device {d}")))
        }
        _ => Ok(()),
    }
}

fn is_constraint(e: &rusqlite::Error, extended: std::ffi::c_int) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == extended)
}

fn unique_reason(e: rusqlite::Error, reason: impl FnOnce() -> String) -> Reason {
    if is_constraint(&e, rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
        || is_constraint(&e, rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
    {
        Reason(reason())
    } else {
        Reason::from(e)
    }
}

/// Explains the constraint failures of giving `extension` a device.
fn device_reason(e: rusqlite::Error, extension: &str, device: &Option<Text>) -> Reason {
    let device = device.as_deref().unwrap_or("");
    match &e {
        rusqlite::Error::SqliteFailure(f, Some(message))
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY =>
        {
            Reason(format!(
                "device {device} is not in the inventory ({message})"
            ))
        }
        rusqlite::Error::SqliteFailure(f, Some(message))
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                && message.contains("extensions.device") =>
        {
            Reason(format!("device {device} is assigned to another extension"))
        }
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            Reason(format!("extension {extension} already exists"))
        }
        _ => Reason::from(e),
    }
}

/// Fresh SIP secrets (16 random bytes), drawn from the system's random source a
/// batch at a time: one call for 256 secrets rather than one each.
#[derive(Default)]
struct Secrets {
    random: Vec<[u8; 16]>,
}

impl Secrets {
    const BATCH: usize = 256;

    fn next(&mut self) -> Result<[u8; 16], Reason> {
        if self.random.is_empty() {
            self.random.resize(Self::BATCH, [0; 16]);
            getrandom::fill(self.random.as_flattened_mut())
                .map_err(|e| Reason(format!("cannot generate a SIP secret: {e}")))?;
        }
        self.random
            .pop()
            .ok_or_else(|| Reason("cannot generate a SIP secret".into()))
    }
}

/// Adds the extensions that hold one of `devices`, one indexed lookup per device
/// (the devices drive the join).
fn read_extensions_by_device(
    conn: &Connection,
    devices: &[Text],
    extensions: &mut Vec<Extension>,
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "SELECT e.number, u.username, e.kind, e.device, e.description \
         FROM rarray(?1) AS k CROSS JOIN extensions AS e ON e.device = k.value \
         JOIN users AS u ON u.id = e.user_id",
    )?;
    let mut rows = stmt.query([key_array(devices)])?;
    while let Some(row) = rows.next()? {
        extensions.push(extension_row(row)?);
    }
    Ok(())
}

/// The extensions of `numbers`. Their owners are read apart, by id in order (see
/// `rowids_by`).
fn read_extensions_by_number(
    conn: &Connection,
    numbers: &[Text],
) -> rusqlite::Result<Vec<Extension>> {
    let mut owned = Vec::with_capacity(numbers.len());
    let mut stmt = conn.prepare_cached(
        "SELECT e.number, e.user_id, e.kind, e.device, e.description \
         FROM rarray(?1) AS k CROSS JOIN extensions AS e ON e.number = k.value",
    )?;
    let mut rows = stmt.query([key_array(numbers)])?;
    while let Some(row) = rows.next()? {
        owned.push((row.get::<_, i64>(1)?, extension_of(row, Text::default())?));
    }
    drop(rows);
    let mut ids: Vec<i64> = owned.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut names = FastMap::with_capacity_and_hasher(ids.len(), Default::default());
    let mut stmt = conn.prepare_cached(
        "SELECT u.id, u.username FROM rarray(?1) AS k CROSS JOIN users AS u ON u.id = k.value",
    )?;
    let mut rows = stmt.query([id_array(ids)])?;
    while let Some(row) = rows.next()? {
        names.insert(row.get::<_, i64>(0)?, text(row, 1)?);
    }
    owned
        .into_iter()
        .map(|(id, mut extension)| {
            // A foreign key makes the owner exist.
            extension.username = names
                .get(&id)
                .cloned()
                .ok_or_else(|| without_owner(&extension.number, id))?;
            Ok(extension)
        })
        .collect()
}

/// A list of row ids as an `rarray` parameter.
fn id_array(ids: Vec<i64>) -> rusqlite::vtab::array::Array {
    std::rc::Rc::new(
        ids.into_iter()
            .map(rusqlite::types::Value::Integer)
            .collect(),
    )
}

/// A list of keys as an `rarray` parameter.
fn key_array(list: &[Text]) -> rusqlite::vtab::array::Array {
    std::rc::Rc::new(
        list.iter()
            .map(|k| rusqlite::types::Value::Text(k.as_str().to_owned()))
            .collect(),
    )
}

/// The users named by `keys`; their ids, and the numbers of their extensions
/// (from the index of extensions by user alone), for an apply.
fn read_subset_users(
    conn: &Connection,
    keys: &super::Keys,
) -> rusqlite::Result<(Vec<User>, ReadUsers)> {
    let mut users = Vec::with_capacity(keys.users.len());
    let mut ids = FastMap::with_capacity_and_hasher(keys.users.len(), Default::default());
    let mut stmt = conn.prepare_cached(
        "SELECT u.username, u.first_name, u.last_name, u.email, u.im, u.mobile, u.id \
         FROM rarray(?1) AS k CROSS JOIN users AS u ON u.id = k.value",
    )?;
    let rowids = rowids_by(conn, "users", "username", &keys.users)?;
    let rowids = id_array(rowids);
    let mut rows = stmt.query([rowids.clone()])?;
    while let Some(row) = rows.next()? {
        let user = user_row(row)?;
        ids.insert(user.username.clone(), row.get(6)?);
        users.push(user);
    }
    drop(rows);
    let mut stmt = conn.prepare_cached(
        "SELECT e.user_id, e.number FROM rarray(?1) AS k \
         CROSS JOIN extensions AS e ON e.user_id = k.value",
    )?;
    let extensions = stmt
        .query_map([rowids], |row| Ok((row.get(0)?, text(row, 1)?)))?
        .collect::<rusqlite::Result<Vec<(i64, Text)>>>()?;
    let read = ReadUsers {
        serial: read_serial(conn)?,
        ids,
        extensions,
    };
    Ok((users, read))
}

/// The devices of `ids` that exist.
fn read_devices_by_id(conn: &Connection, ids: &[Text]) -> rusqlite::Result<Vec<Device>> {
    let mut devices = Vec::with_capacity(ids.len());
    let mut stmt = conn.prepare_cached(
        "SELECT d.id, d.model FROM rarray(?1) AS k CROSS JOIN devices AS d ON d.rowid = k.value",
    )?;
    let rowids = rowids_by(conn, "devices", "id", ids)?;
    let mut rows = stmt.query([id_array(rowids)])?;
    while let Some(row) = rows.next()? {
        devices.push(Device {
            id: text(row, 0)?,
            model: text(row, 1)?,
        });
    }
    Ok(devices)
}

/// The row ids of the rows of `table` whose `column` is one of `keys`, sorted,
/// found in the table's index on `column` alone. The keys drive the join (`IN`
/// would first build a temporary index of them), and rows then fetched by these
/// ids are read in the table's order, each page once: fetched in the order of the
/// keys, rows added over the years make a read of a page each.
fn rowids_by(
    conn: &Connection,
    table: &str,
    column: &str,
    keys: &[Text],
) -> rusqlite::Result<Vec<i64>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT t.rowid FROM rarray(?1) AS k CROSS JOIN {table} AS t ON t.{column} = k.value"
    ))?;
    let mut rowids = stmt
        .query_map([key_array(keys)], |row| row.get(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()?;
    rowids.sort_unstable();
    Ok(rowids)
}

/// The extensions named by `keys` or holding one of its devices, sorted by number.
fn read_subset_extensions(
    conn: &Connection,
    keys: &super::Keys,
) -> rusqlite::Result<Vec<Extension>> {
    let mut extensions = read_extensions_by_number(conn, &keys.extensions)?;
    // A device held by an extension just read needs no lookup: it has one holder.
    let held: FastSet<&str> = extensions
        .iter()
        .filter_map(|e| e.device.as_deref())
        .collect();
    let devices: Vec<Text> = keys
        .devices
        .iter()
        .filter(|d| !held.contains(d.as_str()))
        .cloned()
        .collect();
    drop(held);
    read_extensions_by_device(conn, &devices, &mut extensions)?;
    extensions.sort_by(|a, b| cmp_extension(&a.number, &b.number));
    extensions.dedup_by(|a, b| a.number == b.number);
    Ok(extensions)
}

/// A user from the columns username, first_name, last_name, email, im, mobile.
fn user_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        username: text(row, 0)?,
        fields: [
            text(row, 1)?,
            text(row, 2)?,
            text(row, 3)?,
            text(row, 4)?,
            text(row, 5)?,
        ],
    })
}

fn read_users(conn: &Connection) -> rusqlite::Result<Vec<User>> {
    let mut users = Vec::new();
    let mut stmt = conn
        .prepare_cached("SELECT username, first_name, last_name, email, im, mobile FROM users")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        users.push(user_row(row)?);
    }
    Ok(users)
}

/// Every extension with its owner's name. The owners are read in one pass first
/// and found by id in memory: a join looked each up in the users table, whose
/// order has nothing to do with the extensions', and with a reader's small page
/// cache nearly every lookup read a page of it again (a million extensions:
/// 6-8 s, against well under a second).
fn read_extensions(conn: &Connection) -> rusqlite::Result<Vec<Extension>> {
    let mut owners: Vec<(i64, Text)> = Vec::new();
    let mut stmt = conn.prepare_cached("SELECT id, username FROM users")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        owners.push((row.get(0)?, text(row, 1)?));
    }
    if !owners.is_sorted_by_key(|(id, _)| *id) {
        owners.sort_unstable_by_key(|(id, _)| *id);
    }
    let mut extensions = Vec::new();
    let mut stmt =
        conn.prepare_cached("SELECT number, user_id, kind, device, description FROM extensions")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let user_id: i64 = row.get(1)?;
        // The foreign key makes every owner exist. Leaving an extension without
        // one out (as a join would) made `export` print a directory short of
        // it, and succeed.
        let Ok(at) = owners.binary_search_by_key(&user_id, |(id, _)| *id) else {
            return Err(without_owner(row.get_ref(0)?.as_str()?, user_id));
        };
        extensions.push(extension_of(row, owners[at].1.clone())?);
    }
    Ok(extensions)
}

/// An extension whose owner is not in the users table, which its foreign key
/// forbids: the file is damaged (or was written with foreign keys off).
fn without_owner(number: &str, user_id: i64) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
        Some(format!(
            "extension {number} belongs to user id {user_id}, which does not exist"
        )),
    )
}

/// Why `e` means that the state file cannot be read as it was written, or `None`:
/// SQLite found a page damaged, or a stored value is not of the type pbxsync
/// writes (text that is not UTF-8 is how damage inside a row shows).
pub fn damage(e: &rusqlite::Error) -> Option<String> {
    use rusqlite::Error as E;
    match e {
        E::SqliteFailure(f, _)
            if matches!(f.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) =>
        {
            Some(e.to_string())
        }
        E::Utf8Error(..)
        | E::FromSqlConversionFailure(..)
        | E::InvalidColumnType(..)
        | E::IntegralValueOutOfRange(..) => Some(format!("a stored value cannot be read: {e}")),
        _ => None,
    }
}

/// `damage` of a target error that SQLite caused.
pub fn target_damage(e: &BackendError) -> Option<String> {
    match e {
        BackendError::Sqlite { source, .. } => damage(source),
        _ => None,
    }
}

/// An extension from `number, username, kind, device, description`.
fn extension_row(row: &Row<'_>) -> rusqlite::Result<Extension> {
    extension_of(row, text(row, 1)?)
}

/// An extension from the columns number, (its owner), kind, device, description.
fn extension_of(row: &Row<'_>, username: Text) -> rusqlite::Result<Extension> {
    let kind = row.get_ref(2)?.as_str()?;
    let kind = ExtensionKind::parse(kind).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            2,
            rusqlite::types::Type::Text,
            format!("unknown extension kind {kind:?}").into(),
        )
    })?;
    Ok(Extension {
        number: text(row, 0)?,
        username,
        kind,
        device: row.get_ref(3)?.as_str_or_null()?.map(Text::from),
        description: text(row, 4)?,
    })
}

fn read_devices(conn: &Connection) -> rusqlite::Result<Vec<Device>> {
    let mut devices = Vec::new();
    let mut stmt = conn.prepare_cached("SELECT id, model FROM devices")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        devices.push(Device {
            id: text(row, 0)?,
            model: text(row, 1)?,
        });
    }
    Ok(devices)
}

fn read_licenses(conn: &Connection) -> rusqlite::Result<Licenses> {
    let limits: Option<(Option<i64>, Option<i64>)> = conn
        .query_row(
            "SELECT users, voicemail FROM licenses WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (users, voicemail) = limits.unwrap_or_default();
    // The CHECK constraints keep them non-negative.
    Ok(Licenses {
        users: users.map(|n| n.max(0) as u64),
        voicemail: voicemail.map(|n| n.max(0) as u64),
    })
}

/// Connection settings for reading large directories: a page cache of 4 MB
/// holds the inner pages of the tables and indexes a plan looks rows up in
/// (a bigger one only costs memory: scans, and lookups in table order, read each
/// leaf once; with 16 MB a 1M plan took 6,000 more page faults and was no
/// faster). Reads go through the cache rather than a memory map, which would
/// count every page read as memory of the process (300 MB in a plan of a million
/// rows).
fn tune(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "cache_size", -4_096)
}

/// A text column straight into a `Text`, without an intermediate `String`.
fn text(row: &Row<'_>, i: usize) -> rusqlite::Result<Text> {
    Ok(match row.get_ref(i)? {
        ValueRef::Null => Text::default(),
        value => Text::from(value.as_str()?),
    })
}

fn read_serial(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = 'serial'")?
        .query_row([], |r| r.get(0))
}

fn read_last_applied(conn: &Connection) -> rusqlite::Result<Option<AppliedRevision>> {
    let mut stmt = conn.prepare_cached(
        "SELECT \
           (SELECT value FROM meta WHERE key = 'last_commit'), \
           (SELECT value FROM meta WHERE key = 'last_blob'), \
           (SELECT value FROM meta WHERE key = 'last_serial'), \
           (SELECT value FROM meta WHERE key = 'last_history_id'), \
           (SELECT value FROM meta WHERE key = 'last_inventory'), \
           (SELECT value FROM meta WHERE key = 'last_pruned')",
    )?;
    stmt.query_row([], |r| {
        let blob: Option<String> = r.get(1)?;
        Ok(match blob {
            None => None,
            Some(blob) => Some(AppliedRevision {
                commit: r.get(0)?,
                blob,
                serial: r.get::<_, Option<i64>>(2)?.unwrap_or(0),
                history_id: r.get::<_, Option<i64>>(3)?.unwrap_or(0),
                inventory: r.get(4)?,
                pruned: r.get::<_, Option<bool>>(5)?.unwrap_or(false),
            }),
        })
    })
}

fn set_meta(conn: &Connection, key: &str, value: &dyn ToSql) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value])
    .map(drop)
}

fn insert_history(conn: &Connection, record: &HistoryRecord) -> rusqlite::Result<i64> {
    let summary = serde_json::to_string(&record.summary)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    let (csv, format) = record.csv.compressed();
    let (lz4, zstd) = match format {
        Compression::Lz4 => (Some(csv), None),
        Compression::Zstd => (None, Some(csv)),
    };
    conn.prepare_cached(
        "INSERT INTO history (time, local_user, git_author, source, commit_id, blob, summary, \
         outcome, csv_redacted, csv_lz4, csv_zstd) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, '', ?9, ?10)",
    )?
    .execute(params![
        record.time,
        record.local_user,
        record.git_author,
        record.source,
        record.commit,
        record.blob,
        summary,
        record.outcome,
        lz4,
        zstd
    ])?;
    Ok(conn.last_insert_rowid())
}

fn history_row(row: &Row<'_>) -> rusqlite::Result<HistoryRecord> {
    let summary: String = row.get(7)?;
    Ok(HistoryRecord {
        id: row.get(0)?,
        time: row.get(1)?,
        local_user: row.get(2)?,
        git_author: row.get(3)?,
        source: row.get(4)?,
        commit: row.get(5)?,
        blob: row.get(6)?,
        // Kept readable even if something else wrote a summary that is not JSON.
        summary: serde_json::from_str(&summary).unwrap_or(serde_json::Value::String(summary)),
        outcome: row.get(8)?,
        csv: match (
            row.get_ref(11)?.as_blob_or_null()?,
            row.get_ref(10)?.as_blob_or_null()?,
        ) {
            (Some(zstd), _) => RecordedCsv::from_compressed(zstd.to_vec(), Compression::Zstd),
            (None, Some(lz4)) => RecordedCsv::from_compressed(lz4.to_vec(), Compression::Lz4),
            // Entries written before the CSV was compressed keep it as text.
            (None, None) => RecordedCsv::new(row.get_ref(9)?.as_str()?),
        },
    })
}

/// Creates the state file (and its directory) readable by its owner only, before
/// SQLite creates it with the default mode.
fn create_private_file(path: &Path) -> Result<(), BackendError> {
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
fn is_read_only(path: &Path) -> Result<bool, BackendError> {
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
fn without_shared_memory(path: &Path) -> Result<bool, BackendError> {
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
fn open_connection(path: &Path, flags: OpenFlags, immutable: bool) -> rusqlite::Result<Connection> {
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
fn restore_sidecar_permissions(path: &Path) {
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

/// An empty file (a state file about to be initialised) or a SQLite database.
fn check_header(path: &Path) -> Result<(), BackendError> {
    const MAGIC: &[u8; 16] = b"SQLite format 3\0";
    let mut header = Vec::with_capacity(16);
    File::open(path)
        .and_then(|f| f.take(16).read_to_end(&mut header))
        .map_err(|e| io_error(format!("cannot read {}", path.display()), e))?;
    if header.is_empty() || header == MAGIC {
        Ok(())
    } else {
        Err(BackendError::NotAStateFile {
            path: path.display().to_string(),
            reason: "it is not a SQLite database".to_owned(),
        })
    }
}

fn read_only_error(path: &Path) -> BackendError {
    io_error(
        format!(
            "cannot write the state file {}: it (or its folder) is read-only",
            path.display()
        ),
        std::io::Error::from(std::io::ErrorKind::PermissionDenied),
    )
}

fn sqlite_error(context: impl Into<String>, source: rusqlite::Error) -> BackendError {
    BackendError::Sqlite {
        context: context.into(),
        source,
    }
}

fn io_error(context: impl Into<String>, source: std::io::Error) -> BackendError {
    BackendError::Io {
        context: context.into(),
        source,
    }
}

use crate::time::utc_now;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Summary;
    use std::os::unix::fs::PermissionsExt;

    fn t(s: &str) -> Text {
        Text::from(s)
    }

    fn planned(action: Action) -> PlannedAction {
        PlannedAction {
            action,
            line: None,
            blame: None,
        }
    }

    fn record(actions: &[PlannedAction]) -> HistoryRecord {
        HistoryRecord {
            id: 0,
            time: "2025-01-01T00:00:00Z".into(),
            local_user: "tester".into(),
            git_author: Some("Ann <ann@example.com>".into()),
            source: "commit abc".into(),
            commit: Some("abc".into()),
            blob: "b10b".into(),
            summary: serde_json::to_value(Summary::of(actions)).unwrap(),
            outcome: "applied".into(),
            csv: RecordedCsv::new("Extension,Password\n1001,\n"),
        }
    }

    fn apply_with(
        target: &mut SqliteTarget,
        actions: Vec<Action>,
        hashes: &FastMap<Text, String>,
    ) -> Result<ApplyReport, BackendError> {
        let actions: Vec<_> = actions.into_iter().map(planned).collect();
        let expected_serial = target.serial().unwrap();
        let request = ApplyRequest {
            inventory: None,
            pruned: false,
            digests: &[],
            actions: &actions,
            expected_serial,
            password_hashes: hashes,
            record: Box::new(|| record(&actions)),
        };
        target.apply(request, &mut |_| {})
    }

    fn apply(target: &mut SqliteTarget, actions: Vec<Action>) -> Result<ApplyReport, BackendError> {
        apply_with(target, actions, &FastMap::default())
    }

    fn create_device(id: &str) -> Action {
        Action::CreateDevice {
            device: t(id),
            model: t("T46U"),
        }
    }

    fn create_user(username: &str, first: &str) -> Action {
        Action::CreateUser {
            username: t(username),
            changes: vec![
                Change::new("first_name", None, first),
                Change::new("email", None, &format!("{username}@example.com")),
            ],
        }
    }

    fn add_extension(username: &str, number: &str, device: Option<&str>) -> Action {
        Action::AddExtension {
            username: t(username),
            extension: t(number),
            kind: if device.is_some() {
                ExtensionKind::Device
            } else {
                ExtensionKind::Virtual
            },
            device: device.map(t),
            changes: vec![],
        }
    }

    fn reassign(device: &str, from: &str, to: &str, from_becomes: ExtensionKind) -> Action {
        Action::ReassignDevice {
            username: t("alice"),
            device: t(device),
            from_extension: t(from),
            to_extension: t(to),
            from_becomes,
        }
    }

    fn ext(dir: &Directory, number: &str) -> (String, ExtensionKind, Option<String>, String) {
        let e = dir.extension(number).expect("extension exists");
        (
            e.username.to_string(),
            e.kind,
            e.device.as_ref().map(|d| d.to_string()),
            e.description.to_string(),
        )
    }

    /// alice (1001 on D1), bob (1002 on D2), carol (1003 virtual).
    fn seeded() -> (tempfile::TempDir, SqliteTarget) {
        let dir = tempfile::tempdir().unwrap();
        let mut target = SqliteTarget::open(&dir.path().join("state.db")).unwrap();
        apply(
            &mut target,
            vec![
                create_device("D1"),
                create_device("D2"),
                create_device("D3"),
                create_user("alice", "Alice"),
                create_user("bob", "Bob"),
                create_user("carol", "Carol"),
                add_extension("alice", "1001", Some("D1")),
                add_extension("bob", "1002", Some("D2")),
                add_extension("carol", "1003", None),
            ],
        )
        .unwrap();
        (dir, target)
    }

    #[test]
    fn an_apply_is_checkpointed_into_the_file_apart_and_writes_stay_possible() {
        let (dir, mut target) = seeded();
        let wal = dir.path().join("state.db-wal");
        target.settle();
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0);

        // The commit leaves the apply's pages in the WAL for the checkpoint
        // apart, which empties it; meanwhile the target reads them as usual.
        apply(&mut target, vec![create_user("dave", "Dave")]).unwrap();
        assert!(
            target
                .load()
                .unwrap()
                .users
                .iter()
                .any(|u| u.username == "dave")
        );
        target.settle();
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0);
        let other = Connection::open(dir.path().join("state.db")).unwrap();
        let names: i64 = other
            .query_row(
                "SELECT count(*) FROM users WHERE username = 'dave'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(names, 1);

        // The next apply waits for the checkpoint, and afterwards SQLite's own
        // checkpoints are back on for other writes.
        apply(&mut target, vec![create_user("erin", "Erin")]).unwrap();
        apply(&mut target, vec![create_user("frank", "Frank")]).unwrap();
        let auto: i64 = target
            .conn
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap();
        assert_eq!(auto, WAL_AUTOCHECKPOINT);
        drop(other);
        drop(target);
        assert!(!wal.exists());
        let names: i64 = Connection::open(dir.path().join("state.db"))
            .unwrap()
            .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
            .unwrap();
        assert_eq!(names, 6);
    }

    #[test]
    fn missing_devices_by_lookup_and_by_merge_agree() {
        let (_dir, mut target) = seeded();
        let device = |id: &str| Device {
            id: id.into(),
            model: format!("model of {id}").into(),
        };
        let expected = |ids: &[&str]| ids.iter().map(|id| device(id)).collect::<Vec<_>>();
        // Held: D1, D2, D3. Wanted ids before, between and after them.
        for (wanted, missing) in [
            (vec!["A0", "D1", "D15", "D3", "Z9"], vec!["A0", "D15", "Z9"]),
            (vec!["D1", "D2", "D3"], vec![]),
            (vec!["D0"], vec!["D0"]),
            (vec!["E1", "E2"], vec!["E1", "E2"]),
            (vec![], vec![]),
        ] {
            let wanted = expected(&wanted);
            for lookups in [0, usize::MAX] {
                assert_eq!(
                    target.missing_devices_looking_up(&wanted, lookups).unwrap(),
                    expected(&missing),
                    "{lookups} lookups"
                );
            }
            assert_eq!(target.missing_devices(&wanted).unwrap(), expected(&missing));
        }
    }

    #[test]
    fn a_new_file_is_created_private_migrated_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/state.db");
        let mut target = SqliteTarget::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(target.describe(), format!("sqlite:{}", path.display()));
        assert_eq!(target.serial().unwrap(), 0);
        assert_eq!(target.load().unwrap(), Directory::default());
        assert_eq!(target.last_applied().unwrap(), None);
        drop(target);

        let mut target = SqliteTarget::open(&path).unwrap();
        assert_eq!(target.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let app: i64 = target
            .conn
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .unwrap();
        assert_eq!(app, APPLICATION_ID);
        let mode: String = target
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let page_size: i64 = target
            .conn
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .unwrap();
        assert_eq!(page_size, PAGE_SIZE);
        assert_eq!(target.serial().unwrap(), 0);
    }

    #[test]
    fn open_read_only_of_a_missing_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        assert!(SqliteTarget::open_read_only(&path).unwrap().is_none());
        assert!(!path.exists());
        SqliteTarget::open(&path).unwrap();
        let mut target = SqliteTarget::open_read_only(&path).unwrap().unwrap();
        assert_eq!(target.load().unwrap(), Directory::default());
        assert!(matches!(
            target.set_licenses(Licenses::default()),
            Err(BackendError::Io { .. })
        ));
    }

    #[test]
    fn applied_actions_show_in_the_directory() {
        let (_dir, mut target) = seeded();
        let d = target.load().unwrap();
        assert_eq!(
            d.users
                .iter()
                .map(|u| u.username.as_str())
                .collect::<Vec<_>>(),
            ["alice", "bob", "carol"]
        );
        let alice = d.user("alice").unwrap();
        assert_eq!(
            alice.fields,
            [t("Alice"), t(""), t("alice@example.com"), t(""), t("")]
        );
        assert_eq!(
            ext(&d, "1001"),
            (
                "alice".into(),
                ExtensionKind::Device,
                Some("D1".into()),
                "".into()
            )
        );
        assert_eq!(
            ext(&d, "1003"),
            ("carol".into(), ExtensionKind::Virtual, None, "".into())
        );
        assert_eq!(d.devices.len(), 3);
        assert_eq!(d.device("D1").unwrap().model, "T46U");

        let hashes = FastMap::from_iter([(t("alice"), "$argon2id$v=19$secret".to_owned())]);
        let report = apply_with(
            &mut target,
            vec![
                Action::UpdateUser {
                    username: t("alice"),
                    changes: vec![
                        Change::new("last_name", Some(""), "Smith"),
                        Change::password(),
                    ],
                },
                Action::UpdateExtension {
                    username: t("carol"),
                    extension: t("1003"),
                    kind: ExtensionKind::Device,
                    device: Some(t("D3")),
                    changes: vec![
                        Change::new("description", Some(""), "Reception"),
                        Change::new("kind", Some("virtual"), "device"),
                        Change::new("device", Some(""), "D3"),
                    ],
                },
                Action::AddExtension {
                    username: t("bob"),
                    extension: t("99"),
                    kind: ExtensionKind::VoicemailOnly,
                    device: None,
                    changes: vec![Change::new("description", None, "Mailbox")],
                },
                Action::RemoveExtension {
                    username: t("alice"),
                    extension: t("1001"),
                    device: Some(t("D1")),
                },
                Action::RemoveUser {
                    username: t("alice"),
                },
            ],
            &hashes,
        )
        .unwrap();
        assert_eq!(report.serial, target.serial().unwrap());
        let d = target.load().unwrap();
        assert!(d.user("alice").is_none());
        assert!(d.extension("1001").is_none());
        assert_eq!(
            ext(&d, "1003"),
            (
                "carol".into(),
                ExtensionKind::Device,
                Some("D3".into()),
                "Reception".into()
            )
        );
        assert_eq!(
            ext(&d, "99"),
            (
                "bob".into(),
                ExtensionKind::VoicemailOnly,
                None,
                "Mailbox".into()
            )
        );
        let order: Vec<_> = d.extensions.iter().map(|e| e.number.as_str()).collect();
        assert_eq!(order, ["99", "1002", "1003"]);

        // Secrets are stored, but only in the database.
        let secret: Vec<u8> = target
            .conn
            .query_row(
                "SELECT sip_secret FROM extensions WHERE number = '99'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(secret.len(), 16);
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        let history = serde_json::to_string(&target.history().unwrap()).unwrap();
        assert!(!history.contains("argon2") && !history.contains(&hex));

        let last = target.last_applied().unwrap().unwrap();
        assert_eq!(last.commit.as_deref(), Some("abc"));
        assert_eq!(last.blob, "b10b");
        assert_eq!(
            (last.serial, last.history_id),
            (report.serial, report.history_id)
        );
    }

    #[test]
    fn a_password_update_needs_its_hash() {
        let (_dir, mut target) = seeded();
        let err = apply(
            &mut target,
            vec![Action::UpdateUser {
                username: t("bob"),
                changes: vec![Change::password()],
            }],
        )
        .unwrap_err();
        assert!(
            matches!(&err, BackendError::ActionFailed { index: 0, action, .. } if action == "update_user bob"),
            "{err}"
        );
    }

    #[test]
    fn created_users_get_their_password_hash() {
        let (_dir, mut target) = seeded();
        let hashes = FastMap::from_iter([(t("dave"), "$argon2id$dave".to_owned())]);
        let mut create = create_user("dave", "Dave");
        if let Action::CreateUser { changes, .. } = &mut create {
            changes.push(Change::password());
        }
        apply_with(&mut target, vec![create], &hashes).unwrap();
        let hash: Option<String> = target
            .conn
            .query_row(
                "SELECT hash FROM passwords JOIN users ON users.id = user_id WHERE username = 'dave'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(hash.as_deref(), Some("$argon2id$dave"));
    }

    #[test]
    fn two_extensions_swap_their_devices_in_one_plan() {
        let (_dir, mut target) = seeded();
        apply(
            &mut target,
            vec![
                reassign("D2", "1002", "1001", ExtensionKind::Device),
                reassign("D1", "1001", "1002", ExtensionKind::Device),
            ],
        )
        .unwrap();
        let d = target.load().unwrap();
        assert_eq!(ext(&d, "1001").2.as_deref(), Some("D2"));
        assert_eq!(ext(&d, "1002").2.as_deref(), Some("D1"));

        // The same swap spelled as two updates, the conflicting one first.
        apply(
            &mut target,
            ["1001", "1002"]
                .into_iter()
                .zip(["D1", "D2"])
                .zip(["alice", "bob"])
                .map(|((number, device), username)| Action::UpdateExtension {
                    username: t(username),
                    extension: t(number),
                    kind: ExtensionKind::Device,
                    device: Some(t(device)),
                    changes: vec![Change::new(
                        "device",
                        Some(if device == "D1" { "D2" } else { "D1" }),
                        device,
                    )],
                })
                .collect(),
        )
        .unwrap();
        let d = target.load().unwrap();
        assert_eq!(ext(&d, "1001").2.as_deref(), Some("D1"));
        assert_eq!(ext(&d, "1002").2.as_deref(), Some("D2"));
    }

    #[test]
    fn a_device_moves_to_a_new_extension() {
        let (_dir, mut target) = seeded();
        apply(
            &mut target,
            vec![
                add_extension("alice", "1005", Some("D1")),
                reassign("D1", "1001", "1005", ExtensionKind::VoicemailOnly),
            ],
        )
        .unwrap();
        let d = target.load().unwrap();
        assert_eq!(ext(&d, "1001").1, ExtensionKind::VoicemailOnly);
        assert_eq!(ext(&d, "1001").2, None);
        assert_eq!(ext(&d, "1005").2.as_deref(), Some("D1"));
    }

    #[test]
    fn a_failing_action_writes_nothing() {
        let (_dir, mut target) = seeded();
        let before = (
            target.load().unwrap(),
            target.serial().unwrap(),
            target.history().unwrap(),
        );
        let mut events = vec![];
        let actions: Vec<_> = vec![
            create_device("D9"),
            create_user("dave", "Dave"),
            Action::RemoveExtension {
                username: t("bob"),
                extension: t("1002"),
                device: Some(t("D2")),
            },
            add_extension("nobody", "1009", None),
        ]
        .into_iter()
        .map(planned)
        .collect();
        let request = ApplyRequest {
            inventory: None,
            pruned: false,
            digests: &[],
            actions: &actions,
            expected_serial: before.1,
            password_hashes: &FastMap::default(),
            record: Box::new(|| record(&actions)),
        };
        let err = target.apply(request, &mut |p| events.push(p)).unwrap_err();
        match &err {
            BackendError::ActionFailed {
                index,
                action,
                reason,
            } => {
                assert_eq!(*index, 3);
                assert_eq!(action, "add_extension 1009");
                assert!(reason.contains("nobody"), "{reason}");
            }
            other => panic!("{other}"),
        }
        assert_eq!(events[0], Progress::Started { total: 4 });
        assert!(!events.contains(&Progress::Committing));
        let after = (
            target.load().unwrap(),
            target.serial().unwrap(),
            target.history().unwrap(),
        );
        assert_eq!(before, after);
    }

    #[test]
    fn progress_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut target = SqliteTarget::open(&dir.path().join("s.db")).unwrap();
        let actions: Vec<_> = (0..2500)
            .map(|i| planned(create_user(&format!("u{i}"), "U")))
            .collect();
        let mut events = vec![];
        let request = ApplyRequest {
            inventory: None,
            pruned: false,
            digests: &[],
            actions: &actions,
            expected_serial: 0,
            password_hashes: &FastMap::default(),
            record: Box::new(|| record(&actions)),
        };
        target.apply(request, &mut |p| events.push(p)).unwrap();
        assert_eq!(events.first(), Some(&Progress::Started { total: 2500 }));
        assert_eq!(events.last(), Some(&Progress::Committing));
        assert!(events.contains(&Progress::Step {
            done: 2000,
            total: 2500,
            step: "create_user u1999".into()
        }));
    }

    #[test]
    fn an_outside_write_bumps_the_serial_and_makes_plans_stale() {
        let (dir, mut target) = seeded();
        let planned_serial = target.serial().unwrap();
        let other = Connection::open(dir.path().join("state.db")).unwrap();
        other
            .execute("UPDATE users SET mobile = '555' WHERE username = 'bob'", [])
            .unwrap();
        let now = target.serial().unwrap();
        assert!(now > planned_serial);

        let before = target.load().unwrap();
        let actions = vec![planned(create_user("dave", "Dave"))];
        let request = ApplyRequest {
            inventory: None,
            pruned: false,
            digests: &[],
            actions: &actions,
            expected_serial: planned_serial,
            password_hashes: &FastMap::default(),
            record: Box::new(|| record(&actions)),
        };
        let err = target.apply(request, &mut |_| {}).unwrap_err();
        assert!(
            matches!(err, BackendError::Stale { planned, current } if planned == planned_serial && current == now)
        );
        assert_eq!(target.load().unwrap(), before);
        assert_eq!(target.serial().unwrap(), now);

        // Writing history and meta does not count as a change.
        target.record_failure(&record(&[])).unwrap();
        assert_eq!(target.serial().unwrap(), now);
    }

    #[test]
    fn a_plan_keeps_the_ids_of_the_users_it_read_for_its_apply() {
        let (dir, mut target) = seeded();
        let keys = crate::backend::Keys {
            users: vec![t("bob"), t("nobody")],
            ..Default::default()
        };
        target.load_subset(&keys).unwrap();
        let serial = target.serial().unwrap();
        let read = target.read_users.as_ref().unwrap();
        let other = Connection::open(dir.path().join("state.db")).unwrap();
        let bob: i64 = other
            .query_row("SELECT id FROM users WHERE username = 'bob'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(read.serial, serial);
        assert_eq!(read.ids.len(), 1);
        assert_eq!(read.ids.get("bob"), Some(&bob));
        assert_eq!(read.extensions, [(bob, t("1002"))]);

        // Another program gives bob a new id: the ids read before are stale, and
        // the apply looks bob up again.
        other
            .execute_batch(
                "DELETE FROM extensions WHERE number = '1002';
                 DELETE FROM users WHERE username = 'bob';
                 INSERT INTO users (id, username, first_name) VALUES (42, 'bob', 'Bob');",
            )
            .unwrap();
        apply(
            &mut target,
            vec![
                Action::UpdateUser {
                    username: t("bob"),
                    changes: vec![Change::new("first_name", Some("Bob"), "Robert")],
                },
                add_extension("bob", "1002", Some("D2")),
            ],
        )
        .unwrap();
        let (first_name, extension_owner): (String, i64) = other
            .query_row(
                "SELECT u.first_name, e.user_id FROM users AS u \
                 JOIN extensions AS e ON e.number = '1002' WHERE u.username = 'bob'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((first_name.as_str(), extension_owner), ("Robert", 42));
        assert!(target.read_users.is_none(), "an apply uses the ids once");
    }

    #[test]
    fn an_apply_keeps_the_triggers_for_the_writes_of_others() {
        let (dir, mut target) = seeded();
        let triggers = |conn: &Connection| -> Vec<(String, String)> {
            conn.prepare("SELECT name, sql FROM sqlite_schema WHERE type = 'trigger' ORDER BY name")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        let other = Connection::open(dir.path().join("state.db")).unwrap();
        let own = triggers(&other);
        let mut names: Vec<&str> = own.iter().map(|(n, _)| n.as_str()).collect();
        names.sort();
        let mut expected = OWN_TRIGGERS.to_vec();
        expected.sort();
        assert_eq!(
            names, expected,
            "OWN_TRIGGERS names every trigger of the schema"
        );

        let before = target.serial().unwrap();
        let actions = vec![
            planned(create_user("dave", "Dave")),
            planned(add_extension("dave", "1500", None)),
        ];
        let digests = [(t("1500"), 42u64)];
        let request = ApplyRequest {
            inventory: None,
            pruned: false,
            digests: &digests,
            actions: &actions,
            expected_serial: before,
            password_hashes: &FastMap::default(),
            record: Box::new(|| record(&actions)),
        };
        target.apply(request, &mut |_| {}).unwrap();
        let applied = target.serial().unwrap();
        assert!(applied > before, "an apply bumps the serial");
        assert_eq!(triggers(&other), own, "the same triggers after the apply");
        let digest = |conn: &Connection| -> Option<i64> {
            conn.query_row(
                "SELECT row_digest FROM extensions WHERE number = '1500'",
                [],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert_eq!(digest(&other), Some(42));

        // A write by something else still counts and still makes the digest stale.
        other
            .execute(
                "UPDATE users SET first_name = 'David' WHERE username = 'dave'",
                [],
            )
            .unwrap();
        assert!(target.serial().unwrap() > applied);
        assert_eq!(digest(&other), None);
    }

    #[test]
    fn writes_of_an_apply_make_the_digests_they_touch_stale() {
        // The extensions of updated users are found by a query, or among those a
        // plan read.
        for plan_read_the_users in [false, true] {
            let (dir, mut target) = seeded();
            let conn = Connection::open(dir.path().join("state.db")).unwrap();
            let digests = [(t("1001"), 1u64), (t("1002"), 2u64), (t("1003"), 3u64)];
            let serial = target.serial().unwrap();
            let request = ApplyRequest {
                inventory: None,
                pruned: false,
                digests: &digests,
                actions: &[],
                expected_serial: serial,
                password_hashes: &FastMap::default(),
                record: Box::new(|| record(&[])),
            };
            target.apply(request, &mut |_| {}).unwrap();
            if plan_read_the_users {
                let keys = crate::backend::Keys {
                    users: vec![t("alice"), t("bob")],
                    ..Default::default()
                };
                target.load_subset(&keys).unwrap();
                let read = target.read_users.as_ref().unwrap();
                assert_eq!(read.extensions.len(), 2);
            }
            // Alice changes (a user field), bob's extension changes, carol's row stays.
            let actions = vec![
                planned(Action::UpdateUser {
                    username: t("alice"),
                    changes: vec![Change::new("email", None, "alice@example.com")],
                }),
                planned(Action::UpdateExtension {
                    username: t("bob"),
                    extension: t("1002"),
                    kind: ExtensionKind::Virtual,
                    device: None,
                    changes: vec![],
                }),
            ];
            let serial = target.serial().unwrap();
            let request = ApplyRequest {
                inventory: None,
                pruned: false,
                digests: &[],
                actions: &actions,
                expected_serial: serial,
                password_hashes: &FastMap::default(),
                record: Box::new(|| record(&actions)),
            };
            let report = target.apply(request, &mut |_| {}).unwrap();
            assert_eq!(report.cleared, [t("1001")]);
            let stored: Vec<(String, Option<i64>)> = conn
                .prepare("SELECT number, row_digest FROM extensions ORDER BY number")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            assert_eq!(
                stored,
                [
                    ("1001".to_string(), None),
                    ("1002".to_string(), None),
                    ("1003".to_string(), Some(3))
                ]
            );
        }
    }

    #[test]
    fn the_kind_constraint_holds_without_an_in_list() {
        let (dir, _target) = seeded();
        let conn = Connection::open(dir.path().join("state.db")).unwrap();
        let sql: String = conn
            .query_row(
                "SELECT sql FROM sqlite_schema WHERE name = 'extensions'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(
            sql.contains("CHECK (kind = 'device' OR kind = 'virtual' OR kind = 'voicemail_only')"),
            "{sql}"
        );
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let bad = conn.execute(
            "UPDATE extensions SET kind = 'fax' WHERE number = '1003'",
            [],
        );
        assert!(is_constraint(
            &bad.unwrap_err(),
            rusqlite::ffi::SQLITE_CONSTRAINT_CHECK
        ));
        conn.execute(
            "UPDATE extensions SET kind = 'voicemail_only' WHERE number = '1003'",
            [],
        )
        .unwrap();
    }

    #[test]
    fn a_running_write_does_not_block_opening_and_reading() {
        let (dir, mut target) = seeded();
        let before = target.load().unwrap();
        let writer = Connection::open(dir.path().join("state.db")).unwrap();
        writer
            .execute_batch("BEGIN IMMEDIATE; DELETE FROM extensions;")
            .unwrap();
        let started = std::time::Instant::now();
        let mut reader = SqliteTarget::open(&dir.path().join("state.db")).unwrap();
        assert_eq!(reader.load().unwrap(), before);
        assert!(started.elapsed() < Duration::from_secs(1));
        writer.execute_batch("ROLLBACK").unwrap();
    }

    #[test]
    fn the_lock_excludes_other_handles_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let mut first = SqliteTarget::open(&path).unwrap();
        let mut second = SqliteTarget::open(&path).unwrap();
        assert_eq!(second.lock_holder().unwrap(), None);

        let guard = first.try_lock().unwrap();
        match second.try_lock() {
            Err(BackendError::Locked(holder)) => {
                assert_eq!(holder.pid, std::process::id());
                assert_eq!(holder.host, gethostname::gethostname().to_string_lossy());
                assert!(holder.since.ends_with('Z'), "{}", holder.since);
            }
            other => panic!("expected Locked, got {:?}", other.map(|_| ())),
        }
        let holder = second.lock_holder().unwrap().unwrap();
        assert_eq!(holder.pid, std::process::id());

        drop(guard);
        assert_eq!(second.lock_holder().unwrap(), None);
        let _guard = second.try_lock().unwrap();
        assert!(matches!(first.try_lock(), Err(BackendError::Locked(_))));
    }

    #[test]
    fn files_of_other_programs_are_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();

        let garbage = dir.path().join("garbage.db");
        let bytes: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&garbage, &bytes).unwrap();
        let err = SqliteTarget::open(&garbage).err().unwrap();
        assert!(matches!(err, BackendError::NotAStateFile { .. }), "{err}");
        assert_eq!(std::fs::read(&garbage).unwrap(), bytes);
        assert!(matches!(
            SqliteTarget::open_read_only(&garbage),
            Err(BackendError::NotAStateFile { .. })
        ));

        let foreign = dir.path().join("foreign.db");
        {
            let conn = Connection::open(&foreign).unwrap();
            conn.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('hi');")
                .unwrap();
        }
        let bytes = std::fs::read(&foreign).unwrap();
        let err = SqliteTarget::open(&foreign).err().unwrap();
        assert!(matches!(err, BackendError::NotAStateFile { .. }), "{err}");
        assert!(err.to_string().contains("not one of pbxsync"), "{err}");
        assert_eq!(std::fs::read(&foreign).unwrap(), bytes);

        let tagged = dir.path().join("tagged.db");
        Connection::open(&tagged)
            .unwrap()
            .pragma_update(None, "application_id", 42)
            .unwrap();
        let err = SqliteTarget::open(&tagged).err().unwrap();
        assert!(err.to_string().contains("another program"), "{err}");
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        drop(SqliteTarget::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 999)
            .unwrap();
        match SqliteTarget::open(&path) {
            Err(BackendError::NewerSchema { found, known, .. }) => {
                assert_eq!((found, known), (999, MIGRATIONS.len() as i64));
            }
            other => panic!("expected NewerSchema, got {:?}", other.err()),
        }
    }

    #[test]
    fn a_read_only_file_reads_but_refuses_writes() {
        let (dir, mut target) = seeded();
        let path = dir.path().join("state.db");
        let history_id = target.record_failure(&record(&[])).unwrap();
        let before = (target.load().unwrap(), target.serial().unwrap());
        drop(target);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
        let bytes = std::fs::read(&path).unwrap();

        let mut target = SqliteTarget::open(&path).unwrap();
        assert_eq!((target.load().unwrap(), target.serial().unwrap()), before);
        assert!(target.history_entry(history_id).unwrap().is_some());
        assert_eq!(target.history().unwrap().len(), 2);

        let err = apply(&mut target, vec![create_user("dave", "Dave")]).unwrap_err();
        assert!(err.to_string().contains("read-only"), "{err}");
        assert!(target.record_failure(&record(&[])).is_err());
        assert!(target.add_devices(&[]).is_err());
        assert!(target.remove_device("D3").is_err());
        assert!(target.set_licenses(Licenses::default()).is_err());
        assert_eq!((target.load().unwrap(), target.serial().unwrap()), before);
        drop(target);
        assert_eq!(std::fs::read(&path).unwrap(), bytes);

        // Writable again, it takes writes again (SQLite's -wal and -shm files
        // created while it was read-only are writable again too).
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut target = SqliteTarget::open(&path).unwrap();
        for suffix in ["-wal", "-shm"] {
            let sidecar = dir.path().join(format!("state.db{suffix}"));
            if let Ok(meta) = std::fs::metadata(&sidecar) {
                assert!(!meta.permissions().readonly(), "{suffix}");
            }
        }
        apply(&mut target, vec![create_user("dave", "Dave")]).unwrap();
        assert!(target.load().unwrap().user("dave").is_some());
    }

    #[test]
    fn a_read_only_folder_is_read_as_the_file_is_unless_its_wal_holds_commits() {
        let (dir, mut target) = seeded();
        let path = dir.path().join("state.db");
        let before = (target.load().unwrap(), target.serial().unwrap());
        drop(target);
        assert!(!dir.path().join("state.db-shm").exists());
        let folder = |mode| {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap()
        };
        folder(0o555);
        let mut target = SqliteTarget::open_read_only(&path).unwrap().unwrap();
        assert!(target.immutable);
        assert_eq!((target.load().unwrap(), target.serial().unwrap()), before);
        drop(target);
        // Opened for writing, it is read-only too, and says so on a write.
        let mut target = SqliteTarget::open(&path).unwrap();
        assert_eq!(target.load().unwrap(), before.0);
        let err = target.add_devices(&[]).unwrap_err();
        assert!(err.to_string().contains("read-only"), "{err}");
        drop(target);
        assert!(!dir.path().join("state.db-shm").exists());
        // Commits still in a WAL file cannot be read without its shared memory:
        // refused, rather than the older state in the file shown.
        folder(0o755);
        std::fs::write(dir.path().join("state.db-wal"), b"frames").unwrap();
        folder(0o555);
        let err = SqliteTarget::open_read_only(&path)
            .err()
            .unwrap()
            .to_string();
        folder(0o755);
        assert!(
            err.contains("state.db-wal") && err.contains("read-only") && err.contains("writable"),
            "{err}"
        );
    }

    #[test]
    fn an_extension_without_its_user_is_damage_not_left_out() {
        let (dir, mut target) = seeded();
        let number = target.load().unwrap().extensions[0].number.clone();
        let other = Connection::open(dir.path().join("state.db")).unwrap();
        other.pragma_update(None, "foreign_keys", false).unwrap();
        other
            .execute(
                "UPDATE extensions SET user_id = 4242 WHERE number = ?1",
                [number.as_str()],
            )
            .unwrap();
        for err in [
            target.load().unwrap_err(),
            target
                .load_subset(&super::super::Keys {
                    extensions: vec![number.clone()],
                    ..super::super::Keys::default()
                })
                .unwrap_err(),
        ] {
            let BackendError::Sqlite { source, .. } = &err else {
                panic!("{err}");
            };
            let reason = damage(source).unwrap_or_else(|| panic!("not damage: {err}"));
            assert!(
                reason.contains(&format!("extension {number} belongs to user id 4242")),
                "{reason}"
            );
        }
        // Text that is not UTF-8 is damage too; a busy file is not.
        other
            .execute(
                "UPDATE users SET first_name = CAST(x'ff' AS TEXT) WHERE id = (SELECT min(id) FROM users)",
                [],
            )
            .unwrap();
        other
            .execute(
                "UPDATE extensions SET user_id = (SELECT min(id) FROM users)",
                [],
            )
            .unwrap();
        let err = target.load().unwrap_err();
        assert!(
            target_damage(&err).is_some_and(|r| r.contains("utf-8")),
            "{err}"
        );
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        assert_eq!(damage(&busy), None);
    }

    #[test]
    fn inventory_and_licenses() {
        let (_dir, mut target) = seeded();
        target
            .add_devices(&[
                Device {
                    id: t("D3"),
                    model: t("T54W"),
                },
                Device {
                    id: t("D4"),
                    model: t("T31"),
                },
            ])
            .unwrap();
        let d = target.load().unwrap();
        assert_eq!(d.device("D3").unwrap().model, "T54W");
        assert_eq!(d.device("D4").unwrap().model, "T31");

        let err = target.remove_device("D1").unwrap_err();
        assert!(err.to_string().contains("extension 1001"), "{err}");
        assert!(target.remove_device("D4").unwrap());
        assert!(!target.remove_device("D4").unwrap());

        let serial = target.serial().unwrap();
        let limits = Licenses {
            users: Some(10),
            voicemail: None,
        };
        target.set_licenses(limits).unwrap();
        assert_eq!(target.load().unwrap().licenses, limits);
        assert!(target.serial().unwrap() > serial);
    }

    #[test]
    fn a_state_file_of_the_first_schema_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "application_id", APPLICATION_ID)
                .unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO users (username, password_hash) VALUES ('alice', '$argon2id$x'), ('bob', NULL)",
                [],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO history (time, local_user, source, blob, summary, outcome, csv_redacted) \
                 VALUES ('t', 'u', 's', 'b', '{}', 'applied', 'Extension\n1001\n')",
                [],
            )
            .unwrap();
            // An entry of schema 3, its CSV LZ4-compressed.
            conn.execute_batch(MIGRATIONS[1]).unwrap();
            conn.execute_batch(MIGRATIONS[2]).unwrap();
            conn.pragma_update(None, "user_version", 3).unwrap();
            conn.execute(
                "INSERT INTO history (time, local_user, source, blob, summary, outcome, \
                 csv_redacted, csv_lz4) VALUES ('t', 'u', 's', 'b', '{}', 'applied', '', ?1)",
                [lz4_flex::compress_prepend_size(b"Extension\n1002\n")],
            )
            .unwrap();
        }
        // Reading (a plan) upgrades it too, so nobody has to apply first.
        let mut target = SqliteTarget::open_read_only(&path).unwrap().unwrap();
        assert_eq!(target.schema_version().unwrap(), MIGRATIONS.len() as i64);
        assert_eq!(target.load().unwrap().users.len(), 2);
        let hashes: Vec<(String, String)> = target
            .conn
            .prepare("SELECT username, hash FROM passwords JOIN users ON users.id = user_id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(hashes, [("alice".to_string(), "$argon2id$x".to_string())]);
        let old = target.history_entry(1).unwrap().unwrap();
        assert_eq!(
            old.csv.text(),
            "Extension\n1001\n",
            "old entries keep their CSV"
        );
        let lz4 = target.history_entry(2).unwrap().unwrap();
        assert_eq!(lz4.csv.text(), "Extension\n1002\n");
        let (index, _) = target.load_index().unwrap();
        assert!(index.is_empty());
        // Compacted into pages of the current size, and back in WAL mode.
        let page_size: i64 = target
            .conn
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .unwrap();
        let mode: String = target
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!((page_size, mode.as_str()), (PAGE_SIZE, "wal"));
    }

    #[test]
    fn sip_secrets_are_distinct_across_batches() {
        let mut secrets = Secrets::default();
        let drawn: HashSet<[u8; 16]> = (0..3 * Secrets::BATCH + 1)
            .map(|_| secrets.next().ok().unwrap())
            .collect();
        assert_eq!(drawn.len(), 3 * Secrets::BATCH + 1);
    }

    #[test]
    fn history_is_newest_first() {
        let (_dir, mut target) = seeded();
        let mut failure = record(&[]);
        failure.outcome = "failed: stale".into();
        let id = target.record_failure(&failure).unwrap();
        let history = target.history().unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(history[0].id, id);
        assert_eq!(history[0].outcome, "failed: stale");
        assert_eq!(history[1].summary["create_user"], 3);
        // The list leaves the CSV out; the entry has it, compressed and back.
        assert_eq!(history[0].csv, RecordedCsv::default());
        let entry = target.history_entry(id).unwrap().unwrap();
        assert_eq!(entry.csv, failure.csv);
        assert_eq!(
            HistoryRecord {
                csv: RecordedCsv::default(),
                ..entry
            },
            history[0]
        );
        assert_eq!(target.history_entry(id + 100).unwrap(), None);
    }

    /// `cargo test --release --lib target::sqlite -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn performance() {
        let dir = tempfile::tempdir().unwrap();
        let mut target = SqliteTarget::open(&dir.path().join("state.db")).unwrap();
        let n = 100_000;
        let mut actions = vec![];
        for i in 0..n / 2 {
            actions.push(create_user(&format!("user{i:07}"), "First"));
            actions.push(add_extension(
                &format!("user{i:07}"),
                &format!("{}", 10_000 + i),
                None,
            ));
        }
        let started = std::time::Instant::now();
        apply(&mut target, actions).unwrap();
        eprintln!("apply of {n} actions: {:?}", started.elapsed());

        let big = 1_000_000;
        let started = std::time::Instant::now();
        let actions: Vec<_> = (n / 2..big)
            .flat_map(|i| {
                [
                    create_user(&format!("user{i:07}"), "First"),
                    add_extension(&format!("user{i:07}"), &format!("{}", 10_000 + i), None),
                ]
            })
            .collect();
        apply(&mut target, actions).unwrap();
        eprintln!(
            "apply of {} actions: {:?}",
            2 * (big - n / 2),
            started.elapsed()
        );
        let started = std::time::Instant::now();
        let d = target.load().unwrap();
        eprintln!("load of {} users: {:?}", d.users.len(), started.elapsed());
        assert_eq!(d.extensions.len(), big);

        // 100,000 changes against the big directory.
        let actions: Vec<_> = (0..n / 2)
            .flat_map(|i| {
                let i = i * 19;
                [
                    Action::UpdateUser {
                        username: t(&format!("user{i:07}")),
                        changes: vec![Change::new("mobile", Some(""), "555")],
                    },
                    Action::UpdateExtension {
                        username: t(&format!("user{i:07}")),
                        extension: t(&format!("{}", 10_000 + i)),
                        kind: ExtensionKind::VoicemailOnly,
                        device: None,
                        changes: vec![Change::new("description", Some(""), "Mailbox")],
                    },
                ]
            })
            .collect();
        let started = std::time::Instant::now();
        apply(&mut target, actions).unwrap();
        eprintln!("apply of {n} updates to {big}: {:?}", started.elapsed());
    }
}
