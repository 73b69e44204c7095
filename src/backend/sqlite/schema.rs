//! The schema of state files: their identity, the migrations, pbxsync's triggers.

use super::tuning::PAGE_SIZE;
use super::{SqliteTarget, damage, io_error, sqlite_error};
use crate::backend::BackendError;
use rusqlite::{Connection, TransactionBehavior};
use std::fs::File;
use std::io::Read;
use std::path::Path;

/// `PRAGMA application_id` of pbxsync state files ("PBXS").
pub(super) const APPLICATION_ID: i64 = 0x5042_5853;

/// Schema migrations; the schema version (`PRAGMA user_version`) is the number of
/// batches applied. Never edit a released batch, append a new one.
pub(super) const MIGRATIONS: &[&str] = &[
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
    r#"
-- What a SIP registrar reads from this file (Kamailio's auth_db with db_sqlite,
-- its `subscriber` table at version 7): a view over the extensions that hold a
-- device, so it changes with every apply's commit and costs the apply nothing.
-- The domain is `publish.kamailio.domain` of the config, kept in `publish`
-- (NULL: nothing is published, the view is empty). The SIP secret is the
-- password (`calculate_ha1 yes`): SQLite has no MD5 to fill `ha1`.
CREATE TABLE publish (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    kamailio_domain TEXT
);
INSERT INTO publish (id) VALUES (1);
CREATE TABLE version (
    id INTEGER PRIMARY KEY NOT NULL,
    table_name VARCHAR(32) NOT NULL UNIQUE,
    table_version INTEGER DEFAULT 0 NOT NULL
);
INSERT INTO version (table_name, table_version) VALUES ('subscriber', 7);
CREATE VIEW subscriber AS
SELECT CAST(e.number AS INTEGER) AS id,
       e.number AS username,
       p.kamailio_domain AS domain,
       lower(hex(e.sip_secret)) AS password,
       '' AS ha1,
       '' AS ha1b
FROM extensions e JOIN publish p ON p.id = 1
WHERE p.kamailio_domain IS NOT NULL AND e.kind = 'device' AND e.device IS NOT NULL;
"#,
];

/// The migrations after which a file that holds users is compacted (`VACUUM`):
/// 4 shortened every user row, which leaves the pages half empty; 7 rebuilt the
/// extensions, which leaves the old table's pages free; 9 moves to pages of
/// `PAGE_SIZE`.
pub(super) const COMPACTING_MIGRATIONS: [i64; 3] = [4, 7, 9];

/// The triggers of pbxsync's schema. They keep the serial and the row digests
/// right whatever writes to the file; an apply drops them for the length of its
/// transaction and does their work itself (one serial bump, and its statements
/// clear the digests the triggers would), which saves a statement for every row
/// it writes. Triggers that others added stay in force.
pub(super) const OWN_TRIGGERS: [&str; 17] = [
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
pub(super) struct SuspendedTriggers(Vec<String>);

impl SuspendedTriggers {
    pub(super) fn drop_in(tx: &Connection) -> rusqlite::Result<SuspendedTriggers> {
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

    pub(super) fn restore(self, tx: &Connection) -> rusqlite::Result<()> {
        for sql in self.0 {
            tx.execute_batch(&sql)?;
        }
        Ok(())
    }
}

/// An empty file (a state file about to be initialised) or a SQLite database.
pub(super) fn check_header(path: &Path) -> Result<(), BackendError> {
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

impl SqliteTarget {
    /// Refuses databases of other programs and of newer pbxsync versions.
    pub(super) fn check_identity(&self) -> Result<(), BackendError> {
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
                path: format!("the state file {path}"),
                found: version,
                known,
            });
        }
        Ok(())
    }

    pub(super) fn schema_version(&self) -> Result<i64, BackendError> {
        self.conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| sqlite_error("cannot read the schema version", e))
    }

    pub(super) fn migrate(&mut self) -> Result<(), BackendError> {
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
    pub(super) fn compact(&self) -> rusqlite::Result<()> {
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
}
