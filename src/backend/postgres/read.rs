//! Reads of the directory, streamed row by row, each from one snapshot.

use crate::backend::{DigestIndex, Keys};
use crate::model::cmp_extension;
use crate::model::{Device, Directory, Extension, ExtensionKind, Licenses, Text, Usage, User};
use crate::{FastMap, FastSet};
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use postgres::{Client, GenericClient, IsolationLevel, Row, Transaction};

const USER_COLUMNS: &str = "username, first_name, last_name, email, im, mobile";
const EXTENSION_COLUMNS: &str = "e.number, u.username, e.kind, e.device, e.description";

/// A read-only transaction that sees one snapshot of the directory.
pub(super) fn snapshot(client: &mut Client) -> Result<Transaction<'_>, postgres::Error> {
    client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
}

pub(super) fn load(client: &mut Client) -> Result<Directory, postgres::Error> {
    let mut tx = snapshot(client)?;
    let mut dir = Directory {
        users: rows(
            &mut tx,
            &format!("SELECT {USER_COLUMNS} FROM users"),
            &[],
            user,
        )?,
        extensions: rows(
            &mut tx,
            &format!(
                "SELECT {EXTENSION_COLUMNS} FROM extensions e JOIN users u ON u.id = e.user_id"
            ),
            &[],
            extension,
        )?,
        devices: rows(&mut tx, "SELECT id, model FROM devices", &[], device)?,
        licenses: licenses(&mut tx)?,
    };
    tx.commit()?;
    dir.sort();
    Ok(dir)
}

pub(super) fn counts(client: &mut Client) -> Result<crate::backend::Counts, postgres::Error> {
    let row = client.query_one(
        "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM extensions), \
         (SELECT count(*) FROM devices)",
        &[],
    )?;
    Ok(crate::backend::Counts {
        users: row.get::<_, i64>(0) as usize,
        extensions: row.get::<_, i64>(1) as usize,
        devices: row.get::<_, i64>(2) as usize,
    })
}

pub(super) fn missing_devices(
    client: &mut Client,
    wanted: &[Device],
) -> Result<Vec<Device>, postgres::Error> {
    let ids: Vec<&str> = wanted.iter().map(|d| d.id.as_str()).collect();
    let found: FastSet<String> = client
        .query("SELECT id FROM devices WHERE id = ANY($1)", &[&ids])?
        .iter()
        .map(|row| row.get(0))
        .collect();
    Ok(wanted
        .iter()
        .filter(|d| !found.contains(d.id.as_str()))
        .cloned()
        .collect())
}

/// A part of the directory, with the ids of its users (an apply writes by id).
#[derive(Default)]
pub(super) struct Subset {
    pub dir: Directory,
    pub ids: FastMap<Text, i64>,
}

impl Subset {
    /// Adds what `other` read; every list stays sorted, each entry once.
    pub fn merge(&mut self, other: Subset) {
        self.dir.users.extend(other.dir.users);
        self.dir.extensions.extend(other.dir.extensions);
        self.dir.devices.extend(other.dir.devices);
        self.dir.sort();
        self.dir.users.dedup_by(|a, b| a.username == b.username);
        self.dir.extensions.dedup_by(|a, b| a.number == b.number);
        self.dir.devices.dedup_by(|a, b| a.id == b.id);
        self.ids.extend(other.ids);
    }
}

/// The part of the directory `keys` names, as `DirectoryStore::load_subset`
/// says, and besides every extension of the users in `all_of`.
pub(super) fn subset(
    tx: &mut impl GenericClient,
    keys: &Keys,
    all_of: &[&str],
) -> Result<Subset, postgres::Error> {
    let (numbers, devices, users) = (
        strs(&keys.extensions),
        strs(&keys.devices),
        strs(&keys.users),
    );
    let mut ids = FastMap::default();
    // One query a kind of key, each able to use its index (an OR of the three
    // would scan the table); an extension found twice is kept once.
    let mut extensions: Vec<Extension> = Vec::new();
    for column in ["e.number", "e.device", "u.username"] {
        let keys = match column {
            "e.number" => numbers.clone(),
            // A device held by an extension just read needs no lookup: it has
            // one holder. Most of a plan's devices stay where they are.
            "e.device" => {
                let held: FastSet<&str> = extensions
                    .iter()
                    .filter_map(|e| e.device.as_deref())
                    .collect();
                devices
                    .iter()
                    .copied()
                    .filter(|d| !held.contains(d))
                    .collect()
            }
            _ => all_of.to_vec(),
        };
        if keys.is_empty() {
            continue;
        }
        let joined =
            format!("JOIN extensions e ON {column} = k.key JOIN users u ON u.id = e.user_id");
        for (e, id) in rows(
            tx,
            &format!(
                "SELECT {EXTENSION_COLUMNS}, u.id FROM unnest($1::text[]) AS k (key) {}",
                match column {
                    "u.username" =>
                        "JOIN users u ON u.username = k.key \
                                     JOIN extensions e ON e.user_id = u.id",
                    _ => &joined,
                }
            ),
            &[&keys],
            |row| Ok((extension(row)?, row.try_get::<_, i64>(5)?)),
        )? {
            ids.insert(e.username.clone(), id);
            extensions.push(e);
        }
    }
    extensions.sort_by(|a, b| cmp_extension(&a.number, &b.number));
    extensions.dedup_by(|a, b| a.number == b.number);
    let users = rows(
        tx,
        &format!(
            "SELECT {USER_COLUMNS}, id FROM unnest($1::text[]) AS k (key) \
             JOIN users ON username = k.key"
        ),
        &[&users],
        |row| Ok((user(row)?, row.try_get::<_, i64>(6)?)),
    )?
    .into_iter()
    .map(|(u, id)| {
        ids.insert(u.username.clone(), id);
        u
    })
    .collect();
    let mut dir = Directory {
        users,
        extensions,
        devices: rows(
            tx,
            "SELECT id, model FROM unnest($1::text[]) AS k (key) JOIN devices ON id = k.key",
            &[&devices],
            device,
        )?,
        licenses: licenses(tx)?,
    };
    dir.sort();
    dir.users.dedup_by(|a, b| a.username == b.username);
    Ok(Subset { dir, ids })
}

/// Every extension with its row digest, sorted by number, and the usage, with
/// the serial they were read at.
pub(super) fn index(client: &mut Client) -> Result<(DigestIndex, Usage, i64), postgres::Error> {
    let mut tx = snapshot(client)?;
    let serial = super::ledger::read_serial(&mut tx)?;
    let mut usage = Usage::default();
    let mut index: DigestIndex = Vec::new();
    let mut it = tx.query_raw(
        "SELECT number, row_digest, kind FROM extensions",
        std::iter::empty::<&str>(),
    )?;
    while let Some(row) = it.next()? {
        let number: &str = row.get(0);
        let digest: Option<i64> = row.get(1);
        let kind: &str = row.get(2);
        usage.extensions += 1;
        if ExtensionKind::parse(kind).is_some_and(ExtensionKind::uses_voicemail_license) {
            usage.voicemail_licenses += 1;
        } else {
            usage.user_licenses += 1;
        }
        index.push((Text::from(number), digest.map(|d| d as u64)));
    }
    drop(it);
    tx.commit()?;
    index.sort_unstable_by(|a, b| cmp_extension(&a.0, &b.0));
    Ok((index, usage, serial))
}

fn strs(list: &[Text]) -> Vec<&str> {
    list.iter().map(Text::as_str).collect()
}

/// The rows of `sql`, streamed through `make`.
fn rows<T>(
    client: &mut impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    make: impl Fn(&Row) -> Result<T, postgres::Error>,
) -> Result<Vec<T>, postgres::Error> {
    let mut out = Vec::new();
    let mut it = client.query_raw(sql, params.iter().copied())?;
    while let Some(row) = it.next()? {
        out.push(make(&row)?);
    }
    Ok(out)
}

fn text(row: &Row, i: usize) -> Result<Text, postgres::Error> {
    Ok(Text::from(row.try_get::<_, &str>(i)?))
}

fn user(row: &Row) -> Result<User, postgres::Error> {
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

fn extension(row: &Row) -> Result<Extension, postgres::Error> {
    let kind: &str = row.try_get(2)?;
    Ok(Extension {
        number: text(row, 0)?,
        username: text(row, 1)?,
        // The CHECK constraint allows these three only.
        kind: ExtensionKind::parse(kind).unwrap_or(ExtensionKind::Virtual),
        device: row.try_get::<_, Option<&str>>(3)?.map(Text::from),
        description: text(row, 4)?,
    })
}

fn device(row: &Row) -> Result<Device, postgres::Error> {
    Ok(Device {
        id: text(row, 0)?,
        model: text(row, 1)?,
    })
}

fn licenses(client: &mut impl GenericClient) -> Result<Licenses, postgres::Error> {
    let row = client.query_one("SELECT users, voicemail FROM licenses WHERE id = 1", &[])?;
    let limit = |i: usize| row.get::<_, Option<i64>>(i).map(|n| n.max(0) as u64);
    Ok(Licenses {
        users: limit(0),
        voicemail: limit(1),
    })
}
