//! PostgreSQL target: one directory that several controllers share.
//!
//! The tables live in one schema (`schema`), made and migrated by pbxsync. An
//! apply runs in one `REPEATABLE READ` transaction with the serial checked in
//! it, under a session-level advisory lock (`lock`) that dies with its
//! connection. Statement triggers bump the serial on every write, by pbxsync or
//! anything else. Reads (`read`) stream rows; an apply (`write`) checks the plan
//! against the part of the directory it touches, then writes it with `COPY`
//! into temporary tables and set-based statements. `ledger` keeps the serial,
//! the last apply and the history; `inventory` the devices and licenses;
//! `connect` the URL, the password and TLS.

pub mod connect;
mod inventory;
mod ledger;
mod lock;
mod phones;
mod read;
mod schema;
#[cfg(test)]
pub(crate) mod testing;
mod write;

use crate::backend::{ApplyReport, ApplyRequest, BackendError, Counts, DirectoryStore, Keys};
use crate::backend::{Progress, RowDigests};
use crate::model::{Device, Directory, Usage};
use connect::Connector;
use postgres::Client;
use std::sync::Arc;

/// The schema pbxsync uses when neither the config nor the URL names one.
pub const DEFAULT_SCHEMA: &str = "pbxsync";

/// The state in a PostgreSQL schema.
pub struct PostgresTarget {
    client: Client,
    connector: Arc<Connector>,
    /// The schema's name, unquoted.
    schema: String,
    /// `schema @ database on host:port`, for messages.
    shown: String,
    /// The key of the apply lock (`lock`), from the schema's name.
    lock_key: i64,
    /// What the last `load_subset` read, at its serial: an apply at that
    /// serial starts from it instead of reading it again.
    last_read: Option<write::LastRead>,
    /// Every extension number at a serial, sorted (`cmp_extension`), as the
    /// last `load_index` read them.
    numbers: Option<(i64, Vec<crate::model::Text>)>,
}

/// An identifier quoted for SQL.
pub(crate) fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `postgres::Error` into `BackendError`, with what was being done.
pub(super) trait PgError {
    fn context(self, context: impl Into<String>) -> BackendError;
}

impl PgError for postgres::Error {
    fn context(self, context: impl Into<String>) -> BackendError {
        let context = context.into();
        if let Some(db) = self.as_db_error() {
            let reason = db.message().to_owned();
            let code = db.code().code();
            return match code {
                // serialization_failure, deadlock_detected, lock_not_available
                "40001" | "40P01" | "55P03" => BackendError::Busy {
                    context,
                    reason: format!(
                        "{reason}: another program wrote to the directory at the same time; nothing was written, try again"
                    ),
                },
                "53100" => BackendError::Full { context, reason },
                // admin_shutdown, crash_shutdown, cannot_connect_now
                "57P01" | "57P02" | "57P03" => BackendError::Store {
                    context,
                    reason: format!(
                        "{reason} (the server is shutting down or restarting); nothing was written, try again once it is up"
                    ),
                },
                _ => BackendError::Store { context, reason },
            };
        }
        let reason = if self.is_closed() {
            "the connection to the server was lost (was the server restarted?); \
             nothing was written, try again once it is up"
                .to_owned()
        } else {
            let mut reason = self.to_string();
            let mut source = std::error::Error::source(&self);
            while let Some(s) = source {
                reason = format!("{reason}: {s}");
                source = s.source();
            }
            reason
        };
        BackendError::Store { context, reason }
    }
}

impl PostgresTarget {
    /// Connects to `url` and brings the tables of `schema` up to date, creating
    /// them when missing. `schema`: the config's; else the URL's search_path;
    /// else `pbxsync`.
    pub fn open(url: &str, schema: Option<&str>) -> Result<PostgresTarget, BackendError> {
        let mut target = PostgresTarget::connect(url, schema)?;
        let (schema, shown, key) = (
            target.schema.clone(),
            target.shown.clone(),
            lock::migration_key(&target.schema),
        );
        schema::migrate(&mut target.client, &schema, &shown, key)?;
        Ok(target)
    }

    /// Opens the target for reading only: `None` when pbxsync's tables are not
    /// there yet (an empty directory); an older schema is brought up to date.
    pub fn open_read_only(
        url: &str,
        schema: Option<&str>,
    ) -> Result<Option<PostgresTarget>, BackendError> {
        let mut target = PostgresTarget::connect(url, schema)?;
        let (name, shown) = (target.schema.clone(), target.shown.clone());
        match schema::inspect(&mut target.client, &name, &shown)? {
            schema::Found::Empty { .. } => Ok(None),
            schema::Found::Ours { version } if version == schema::known_version() => {
                Ok(Some(target))
            }
            schema::Found::Ours { .. } => PostgresTarget::open(url, Some(&name)).map(Some),
        }
    }

    fn connect(url: &str, schema: Option<&str>) -> Result<PostgresTarget, BackendError> {
        let connector = Arc::new(Connector::parse(url)?);
        let schema = schema
            .or(connector.schema())
            .unwrap_or(DEFAULT_SCHEMA)
            .to_owned();
        let shown = format!("schema {schema} of {}", connector.address());
        let mut client = connector.connect("pbxsync")?;
        set_search_path(&mut client, &schema, &shown)?;
        Ok(PostgresTarget {
            client,
            lock_key: lock::apply_key(&schema),
            last_read: None,
            numbers: None,
            connector,
            schema,
            shown,
        })
    }
}

/// Unqualified names resolve to the schema, and only to it (and pg_catalog).
fn set_search_path(client: &mut Client, schema: &str, shown: &str) -> Result<(), BackendError> {
    client
        .execute(
            "SELECT set_config('search_path', $1, false)",
            &[&quoted(schema)],
        )
        .map(|_| ())
        .map_err(|e| e.context(format!("cannot use {shown}")))
}

impl DirectoryStore for PostgresTarget {
    fn describe(&self) -> String {
        format!("postgres: {}", self.shown)
    }

    fn load(&mut self) -> Result<Directory, BackendError> {
        let shown = self.shown.clone();
        read::load(&mut self.client).map_err(|e| e.context(format!("cannot read {shown}")))
    }

    fn counts(&mut self) -> Result<Counts, BackendError> {
        let shown = self.shown.clone();
        read::counts(&mut self.client).map_err(|e| e.context(format!("cannot read {shown}")))
    }

    fn missing_devices(&mut self, wanted: &[Device]) -> Result<Vec<Device>, BackendError> {
        let shown = self.shown.clone();
        read::missing_devices(&mut self.client, wanted)
            .map_err(|e| e.context(format!("cannot read {shown}")))
    }

    fn load_subset(&mut self, keys: &Keys) -> Result<Directory, BackendError> {
        let shown = self.shown.clone();
        let mut read = || -> Result<write::LastRead, postgres::Error> {
            let mut tx = read::snapshot(&mut self.client)?;
            let serial = ledger::read_serial(&mut tx)?;
            let subset = read::subset(&mut tx, keys, &[])?;
            tx.commit()?;
            Ok(write::LastRead::new(serial, keys, subset))
        };
        let last = read().map_err(|e| e.context(format!("cannot read {shown}")))?;
        let dir = last.directory().clone();
        self.last_read = Some(last);
        Ok(dir)
    }

    fn apply(
        &mut self,
        request: ApplyRequest<'_>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<ApplyReport, BackendError> {
        let shown = self.shown.clone();
        let read = write::Read {
            last: self.last_read.take(),
            numbers: self.numbers.take(),
        };
        write::apply(&mut self.client, &shown, request, read, progress)
    }
}

impl RowDigests for PostgresTarget {
    fn load_index(&mut self) -> Result<Option<(crate::backend::DigestIndex, Usage)>, BackendError> {
        let shown = self.shown.clone();
        let (index, usage, serial) =
            read::index(&mut self.client).map_err(|e| e.context(format!("cannot read {shown}")))?;
        // The numbers, for an apply at this serial: a number not among them
        // need not be looked up (a plan's new extensions).
        self.numbers = Some((serial, index.iter().map(|(n, _)| n.clone()).collect()));
        Ok(Some((index, usage)))
    }
}
