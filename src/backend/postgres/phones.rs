//! What the phone system reads: phones with their SIP secrets, and the domain
//! of the `subscriber` view (schema migration 2).

use super::{PgError, PostgresTarget};
use crate::backend::{BackendError, PhoneSystem};
use crate::model::{Phone, Secret, Text, cmp_extension};
use postgres::fallible_iterator::FallibleIterator;

impl PhoneSystem for PostgresTarget {
    fn phones(&mut self) -> Result<Vec<Phone>, BackendError> {
        let read = |client: &mut postgres::Client| -> Result<Vec<Phone>, postgres::Error> {
            let mut phones = Vec::new();
            let mut rows = client.query_raw(
                "SELECT e.number, u.first_name, u.last_name, e.device, coalesce(d.model, ''), e.sip_secret \
                 FROM extensions e JOIN users u ON u.id = e.user_id \
                 LEFT JOIN devices d ON d.id = e.device WHERE e.device IS NOT NULL",
                std::iter::empty::<&str>(),
            )?;
            while let Some(row) = rows.next()? {
                let first: &str = row.try_get(1)?;
                let last: &str = row.try_get(2)?;
                phones.push(Phone {
                    extension: Text::from(row.try_get::<_, &str>(0)?),
                    display_name: Text::from(format!("{first} {last}").trim()),
                    device: Text::from(row.try_get::<_, &str>(3)?),
                    model: Text::from(row.try_get::<_, &str>(4)?),
                    sip_secret: Secret::new(row.try_get(5)?),
                });
            }
            Ok(phones)
        };
        let mut phones = read(&mut self.client)
            .map_err(|e| e.context(format!("cannot read the phones of {}", self.shown)))?;
        phones.sort_by(|a, b| cmp_extension(&a.extension, &b.extension));
        Ok(phones)
    }

    fn sip_secret(&mut self, extension: &str) -> Result<Option<Secret>, BackendError> {
        let row = self
            .client
            .query_opt(
                "SELECT sip_secret FROM extensions WHERE number = $1",
                &[&extension],
            )
            .map_err(|e| e.context(format!("cannot read the SIP secret from {}", self.shown)))?;
        Ok(row.map(|r| Secret::new(r.get(0))))
    }

    fn registrar_domain(&mut self) -> Result<Option<String>, BackendError> {
        Ok(self
            .client
            .query_one("SELECT kamailio_domain FROM publish WHERE id = 1", &[])
            .map_err(|e| e.context(format!("cannot read {}", self.shown)))?
            .get(0))
    }

    fn set_registrar_domain(&mut self, domain: Option<&str>) -> Result<(), BackendError> {
        self.client
            .execute(
                "UPDATE publish SET kamailio_domain = $1 WHERE id = 1",
                &[&domain],
            )
            .map(drop)
            .map_err(|e| {
                e.context(format!(
                    "cannot publish the registrar's domain in {}",
                    self.shown
                ))
            })
    }
}
