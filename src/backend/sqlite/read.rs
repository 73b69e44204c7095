//! Reading the directory: all of it, or the part some keys name.

use super::ledger::read_serial;
use super::{ReadUsers, SqliteTarget, sqlite_error};
use crate::backend::BackendError;
use crate::model::{
    Device, Directory, Extension, ExtensionKind, Licenses, Text, User, cmp_extension,
};
use crate::{FastMap, FastSet};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, Row};

/// Adds the extensions that hold one of `devices`, one indexed lookup per device
/// (the devices drive the join).
pub(super) fn read_extensions_by_device(
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
pub(super) fn read_extensions_by_number(
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
pub(super) fn id_array(ids: Vec<i64>) -> rusqlite::vtab::array::Array {
    std::rc::Rc::new(
        ids.into_iter()
            .map(rusqlite::types::Value::Integer)
            .collect(),
    )
}

/// A list of keys as an `rarray` parameter.
pub(super) fn key_array(list: &[Text]) -> rusqlite::vtab::array::Array {
    std::rc::Rc::new(
        list.iter()
            .map(|k| rusqlite::types::Value::Text(k.as_str().to_owned()))
            .collect(),
    )
}

/// The users named by `keys`; their ids, and the numbers of their extensions
/// (from the index of extensions by user alone), for an apply.
pub(super) fn read_subset_users(
    conn: &Connection,
    keys: &crate::backend::Keys,
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
pub(super) fn read_devices_by_id(conn: &Connection, ids: &[Text]) -> rusqlite::Result<Vec<Device>> {
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
pub(super) fn rowids_by(
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
pub(super) fn read_subset_extensions(
    conn: &Connection,
    keys: &crate::backend::Keys,
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
pub(super) fn user_row(row: &Row<'_>) -> rusqlite::Result<User> {
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

pub(super) fn read_users(conn: &Connection) -> rusqlite::Result<Vec<User>> {
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
pub(super) fn read_extensions(conn: &Connection) -> rusqlite::Result<Vec<Extension>> {
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
pub(super) fn without_owner(number: &str, user_id: i64) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
        Some(format!(
            "extension {number} belongs to user id {user_id}, which does not exist"
        )),
    )
}

/// An extension from `number, username, kind, device, description`.
pub(super) fn extension_row(row: &Row<'_>) -> rusqlite::Result<Extension> {
    extension_of(row, text(row, 1)?)
}

/// An extension from the columns number, (its owner), kind, device, description.
pub(super) fn extension_of(row: &Row<'_>, username: Text) -> rusqlite::Result<Extension> {
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

pub(super) fn read_devices(conn: &Connection) -> rusqlite::Result<Vec<Device>> {
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

pub(super) fn read_licenses(conn: &Connection) -> rusqlite::Result<Licenses> {
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

/// A text column straight into a `Text`, without an intermediate `String`.
pub(super) fn text(row: &Row<'_>, i: usize) -> rusqlite::Result<Text> {
    Ok(match row.get_ref(i)? {
        ValueRef::Null => Text::default(),
        value => Text::from(value.as_str()?),
    })
}

impl SqliteTarget {
    /// Reads users, devices and licenses (`mine`) on this connection while the
    /// reader reads extensions (`theirs`), each in a read transaction; `None` when
    /// a write landed between the two. Every write to these tables bumps the
    /// serial, so equal serials mean both snapshots hold the same directory.
    pub(super) fn read_in_parallel(
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
    pub(super) fn load_in_parallel(&mut self) -> rusqlite::Result<Option<Directory>> {
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

    /// `Target::missing_devices`, looking up at most `lookups` devices by id.
    pub(super) fn missing_devices_looking_up(
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
}
