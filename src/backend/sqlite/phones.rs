//! What the phone system reads: phones with their SIP secrets, and the domain
//! of the `subscriber` view (schema migration 10).

use super::{SqliteTarget, sqlite_error};
use crate::backend::{BackendError, PhoneSystem};
use crate::model::{Phone, Secret, Text, cmp_extension};
use rusqlite::OptionalExtension;

/// A SIP secret as people and registrars read it: its 16 bytes in hex (a
/// secret of another form, written by hand, as it is).
fn secret_text(raw: rusqlite::types::ValueRef<'_>) -> String {
    match raw {
        rusqlite::types::ValueRef::Blob(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
        rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
        _ => String::new(),
    }
}

impl PhoneSystem for SqliteTarget {
    fn phones(&mut self) -> Result<Vec<Phone>, BackendError> {
        let read = || -> rusqlite::Result<Vec<Phone>> {
            let mut stmt = self.conn.prepare(
                "SELECT e.number, u.first_name, u.last_name, e.device, coalesce(d.model, ''), e.sip_secret \
                 FROM extensions e JOIN users u ON u.id = e.user_id \
                 LEFT JOIN devices d ON d.id = e.device WHERE e.device IS NOT NULL",
            )?;
            let mut rows = stmt.query([])?;
            let mut phones = Vec::new();
            while let Some(row) = rows.next()? {
                let first = row.get_ref(1)?.as_str()?;
                let last = row.get_ref(2)?.as_str()?;
                phones.push(Phone {
                    extension: Text::from(row.get_ref(0)?.as_str()?),
                    display_name: Text::from(format!("{first} {last}").trim()),
                    device: Text::from(row.get_ref(3)?.as_str()?),
                    model: Text::from(row.get_ref(4)?.as_str()?),
                    sip_secret: Secret::new(&secret_text(row.get_ref(5)?)),
                });
            }
            Ok(phones)
        };
        let mut phones = read().map_err(|e| sqlite_error("cannot read the phones", e))?;
        phones.sort_by(|a, b| cmp_extension(&a.extension, &b.extension));
        Ok(phones)
    }

    fn sip_secret(&mut self, extension: &str) -> Result<Option<Secret>, BackendError> {
        self.conn
            .query_row(
                "SELECT sip_secret FROM extensions WHERE number = ?1",
                [extension],
                |row| Ok(Secret::new(&secret_text(row.get_ref(0)?))),
            )
            .optional()
            .map_err(|e| sqlite_error("cannot read the SIP secret", e))
    }

    fn registrar_domain(&mut self) -> Result<Option<String>, BackendError> {
        self.conn
            .query_row(
                "SELECT kamailio_domain FROM publish WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .map_err(|e| sqlite_error("cannot read the published domain", e))
    }

    fn set_registrar_domain(&mut self, domain: Option<&str>) -> Result<(), BackendError> {
        self.ensure_writable()?;
        self.conn
            .execute(
                "UPDATE publish SET kamailio_domain = ?1 WHERE id = 1",
                [domain],
            )
            .map(drop)
            .map_err(|e| sqlite_error("cannot publish the registrar's domain", e))
    }
}
