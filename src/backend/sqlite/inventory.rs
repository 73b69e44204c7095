//! Inventory and licenses: what the CSV does not say.

use super::{SqliteTarget, sqlite_error};
use crate::backend::{BackendError, Inventory, Models};
use crate::model::{Device, Licenses};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

impl Inventory for SqliteTarget {
    fn add_devices(&mut self, devices: &[Device], models: Models) -> Result<(), BackendError> {
        self.ensure_writable()?;
        let sql = match models {
            Models::Replace => {
                "INSERT INTO devices (id, model) VALUES (?1, ?2) \
                 ON CONFLICT (id) DO UPDATE SET model = excluded.model"
            }
            Models::KeepWhenEmpty => {
                "INSERT INTO devices (id, model) VALUES (?1, ?2) \
                 ON CONFLICT (id) DO UPDATE SET model = excluded.model WHERE excluded.model <> ''"
            }
        };
        let write = |conn: &mut Connection| -> rusqlite::Result<()> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut stmt = tx.prepare_cached(sql)?;
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
        let (users, voicemail) = (
            crate::backend::stored_limit(licenses.users)?,
            crate::backend::stored_limit(licenses.voicemail)?,
        );
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
