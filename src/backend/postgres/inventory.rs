//! Inventory and licenses: what the CSV does not say.

use super::{PgError, PostgresTarget};
use crate::backend::{BackendError, Inventory, Models};
use crate::model::{Device, Licenses};

impl Inventory for PostgresTarget {
    fn add_devices(&mut self, devices: &[Device], models: Models) -> Result<(), BackendError> {
        let ids: Vec<&str> = devices.iter().map(|d| d.id.as_str()).collect();
        let models_given: Vec<&str> = devices.iter().map(|d| d.model.as_str()).collect();
        let keep_when_empty = models == Models::KeepWhenEmpty;
        // One statement, whatever the number of devices; the last of two rows
        // with one id wins, as adding them one by one would.
        self.client
            .execute(
                "INSERT INTO devices (id, model) \
                 SELECT DISTINCT ON (id) id, model \
                 FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS d (id, model, n) \
                 ORDER BY id, n DESC \
                 ON CONFLICT (id) DO UPDATE SET model = \
                   CASE WHEN $3 AND EXCLUDED.model = '' THEN devices.model ELSE EXCLUDED.model END",
                &[&ids, &models_given, &keep_when_empty],
            )
            .map(drop)
            .map_err(|e| e.context(format!("cannot add devices to {}", self.shown)))
    }

    fn remove_device(&mut self, id: &str) -> Result<bool, BackendError> {
        let context = format!("cannot remove device {id} from {}", self.shown);
        let mut tx = self
            .client
            .transaction()
            .map_err(|e| e.context(context.clone()))?;
        let holder = tx
            .query_opt(
                "SELECT number FROM extensions WHERE device = $1 FOR SHARE",
                &[&id],
            )
            .map_err(|e| e.context(context.clone()))?;
        if let Some(row) = holder {
            let number: String = row.get(0);
            return Err(BackendError::Unsupported(format!(
                "device {id} is assigned to extension {number}; \
                 take it off the extension before removing it from the inventory"
            )));
        }
        let removed = tx
            .execute("DELETE FROM devices WHERE id = $1", &[&id])
            .map_err(|e| e.context(context.clone()))?;
        tx.commit().map_err(|e| e.context(context))?;
        Ok(removed > 0)
    }

    fn set_licenses(&mut self, licenses: Licenses) -> Result<(), BackendError> {
        let (users, voicemail) = (
            crate::backend::stored_limit(licenses.users)?,
            crate::backend::stored_limit(licenses.voicemail)?,
        );
        self.client
            .execute(
                "UPDATE licenses SET users = $1, voicemail = $2 WHERE id = 1",
                &[&users, &voicemail],
            )
            .map(drop)
            .map_err(|e| e.context(format!("cannot set the license limits of {}", self.shown)))
    }
}
