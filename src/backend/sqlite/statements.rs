//! The SQL an apply runs, each statement prepared once per apply.

use rusqlite::{Connection, Statement};
use std::cell::{RefCell, RefMut};

/// The statements of an apply. `Statements` prepares each once, on first use, and
/// keeps it for the transaction: a statement cache finds its statement by hashing
/// the SQL text at every use and resets it on the way back, a sixth of an apply's
/// work at 100,000 rows.
#[derive(Clone, Copy)]
pub(super) enum Sql {
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
    pub(super) const COUNT: usize = Sql::DeleteUser as usize + 1;

    pub(super) fn text(self) -> &'static str {
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
pub(super) struct Statements<'c> {
    conn: &'c Connection,
    prepared: [RefCell<Option<Statement<'c>>>; Sql::COUNT],
}

impl<'c> Statements<'c> {
    pub(super) fn new(conn: &'c Connection) -> Statements<'c> {
        Statements {
            conn,
            prepared: std::array::from_fn(|_| RefCell::new(None)),
        }
    }

    /// Statement `sql`, prepared on first use.
    pub(super) fn get(&self, sql: Sql) -> rusqlite::Result<RefMut<'_, Statement<'c>>> {
        let mut slot = self.prepared[sql as usize].borrow_mut();
        if slot.is_none() {
            *slot = Some(self.conn.prepare(sql.text())?);
        }
        Ok(RefMut::map(slot, |slot| {
            slot.as_mut().expect("prepared just above")
        }))
    }
}
