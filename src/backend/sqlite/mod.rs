//! SQLite target (embedded default).
//!
//! One file holds the directory, the device inventory, the license limits, the
//! apply history and a change serial. Triggers bump the serial on every write to
//! the directory tables, so a change made by any other program is noticed too.
//!
//! The contract is in `schema` (DDL, migrations, triggers), `read`, `write` (an
//! apply, with its SQL in `statements`), `ledger` (serial, last apply, history),
//! `lock`, `digests` (with the kept index, `snapshot`) and `inventory`; `file`
//! opens the state file on disk; the speed (pragmas, caches, the checkpoint
//! apart, `writeback`) is in `tuning`.

mod digests;
mod file;
mod inventory;
mod ledger;
mod lock;
mod phones;
mod read;
mod schema;
pub mod snapshot;
mod statements;
#[cfg(test)]
mod tests;
mod tuning;
mod write;
mod writeback;

use crate::FastMap;
use crate::backend::{ApplyReport, ApplyRequest, BackendError, Counts, DirectoryStore, Progress};
use crate::model::{Device, Directory, Text};
use file::{
    create_private_file, is_read_only, open_connection, read_only_error,
    restore_sidecar_permissions, without_shared_memory,
};
use read::{
    read_devices, read_devices_by_id, read_extensions, read_licenses, read_subset_extensions,
    read_subset_users, read_users,
};
use rusqlite::{Connection, ErrorCode, OpenFlags, Row};
use schema::check_header;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tuning::{APPLY_CACHE_KIB, WAL_AUTOCHECKPOINT, checkpoint_apart, configure_library, tune};
use write::apply_in_transaction;

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

    fn ensure_writable(&self) -> Result<(), BackendError> {
        if self.read_only {
            Err(read_only_error(&self.path))
        } else {
            Ok(())
        }
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

/// A file beside the state file: its name with `suffix` added.
fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

impl DirectoryStore for SqliteTarget {
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

    /// A short list is looked up by id; a long one (an inventory file of a
    /// whole site) is merged with the ids in the order of their index, which
    /// reads each page of it once instead of once per device.
    fn missing_devices(&mut self, wanted: &[Device]) -> Result<Vec<Device>, BackendError> {
        self.missing_devices_looking_up(wanted, 20_000)
    }

    fn load_subset(&mut self, keys: &crate::backend::Keys) -> Result<Directory, BackendError> {
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
}

/// Why `e` means that the state file cannot be read as it was written, or `None`:
/// SQLite found a page damaged, or a stored value is not of the type pbxsync
/// writes (text that is not UTF-8 is how damage inside a row shows).
fn damage(e: &rusqlite::Error) -> Option<String> {
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

/// `damage` of a target error that SQLite caused (`ReportsDamage` asks).
pub fn target_damage(e: &BackendError) -> Option<String> {
    match e {
        BackendError::Corrupt { reason, .. } => Some(reason.clone()),
        _ => None,
    }
}

/// A SQLite error as the backend's own, by what the user can do about it; the
/// message is SQLite's, after `context`.
fn sqlite_error(context: impl Into<String>, source: rusqlite::Error) -> BackendError {
    let context = context.into();
    if let Some(reason) = damage(&source) {
        return BackendError::Corrupt { context, reason };
    }
    let reason = source.to_string();
    match source.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            BackendError::Busy { context, reason }
        }
        Some(ErrorCode::DiskFull) => BackendError::Full { context, reason },
        _ => BackendError::Store { context, reason },
    }
}

fn io_error(context: impl Into<String>, source: std::io::Error) -> BackendError {
    BackendError::Io {
        context: context.into(),
        source,
    }
}
