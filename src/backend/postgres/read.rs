//! Reads of the directory, streamed row by row, each from one snapshot.

use crate::FastSet;
use crate::backend::{DigestIndex, Keys};
use crate::model::{Device, Directory, Extension, ExtensionKind, Licenses, Text, Usage, User};
use crate::model::cmp_extension;
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
        users: rows(&mut tx, &format!("SELECT {USER_COLUMNS} FROM users"), &[], user)?,
        extensions: rows(
            &mut tx,
            &format!("SELECT {EXTENSION_COLUMNS} FROM extensions e JOIN users u ON u.id = e.user_id"),
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

/// The part of the directory `keys` names, as `DirectoryStore::load_subset`
/// says, and besides every extension of the users in `all_of`.
pub(super) fn subset(
    tx: &mut impl GenericClient,
    keys: &Keys,
    all_of: &[&str],
) -> Result<Directory, postgres::Error> {
    let (numbers, devices, users) = (strs(&keys.extensions), strs(&keys.devices), strs(&keys.users));
    let mut extensions = rows(
        tx,
        &format!(
            "SELECT {EXTENSION_COLUMNS} FROM extensions e JOIN users u ON u.id = e.user_id \
             WHERE e.number = ANY($1) OR e.device = ANY($2) OR u.username = ANY($3)"
        ),
        &[&numbers, &devices, &all_of],
        extension,
    )?;
    extensions.sort_by(|a, b| cmp_extension(&a.number, &b.number));
    let mut dir = Directory {
        users: rows(
            tx,
            &format!("SELECT {USER_COLUMNS} FROM users WHERE username = ANY($1)"),
            &[&users],
            user,
        )?,
        extensions,
        devices: rows(tx, "SELECT id, model FROM devices WHERE id = ANY($1)", &[&devices], device)?,
        licenses: licenses(tx)?,
    };
    dir.sort();
    Ok(dir)
}

/// Every extension with its row digest, sorted by number, and the usage.
pub(super) fn index(client: &mut Client) -> Result<(DigestIndex, Usage), postgres::Error> {
    let mut usage = Usage::default();
    let mut index: DigestIndex = Vec::new();
    let mut it = client.query_raw(
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
    index.sort_unstable_by(|a, b| cmp_extension(&a.0, &b.0));
    Ok((index, usage))
}

fn strs(list: &[Text]) -> Vec<&str> {
    list.iter().map(Text::as_str).collect()
}

/// The rows of `sql`, streamed through `make`.
fn rows<T>(
    client: &mut impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    make: fn(&Row) -> Result<T, postgres::Error>,
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
