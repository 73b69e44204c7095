//! One apply at a time, across machines: a session-level advisory lock, held
//! on a connection of its own. It dies with that connection, so an apply killed
//! on another machine never leaves a lock to break. The holder writes who it is
//! into `lock_holder`; that row is only believed while the lock is held by the
//! session that wrote it.

use super::{PgError, PostgresTarget, set_search_path};
use crate::backend::{ApplyLock, BackendError, LockGuard, LockHolder};
use postgres::Client;

/// The advisory lock key of applies to `schema` (advisory locks are per
/// database already).
pub(super) fn apply_key(schema: &str) -> i64 {
    key("pbxsync apply", schema)
}

/// The key of the lock a migration of `schema` holds for its transaction.
pub(super) fn migration_key(schema: &str) -> i64 {
    key("pbxsync migration", schema)
}

fn key(purpose: &str, schema: &str) -> i64 {
    xxhash_rust::xxh3::xxh3_64(format!("{purpose}\0{schema}").as_bytes()) as i64
}

/// Holds the apply lock on its own connection until dropped.
struct PgLock {
    client: Client,
    key: i64,
}

impl LockGuard for PgLock {}

impl Drop for PgLock {
    fn drop(&mut self) {
        // Let go at once rather than when the server notices the connection
        // closed. Best effort: closing the connection releases it in any case.
        let _ = self.client.batch_execute(&format!(
            "DELETE FROM lock_holder WHERE backend_pid = pg_backend_pid(); \
             SELECT pg_advisory_unlock({})",
            self.key
        ));
    }
}

impl ApplyLock for PostgresTarget {
    fn try_lock(&mut self) -> Result<Box<dyn LockGuard>, BackendError> {
        let context = || format!("cannot take the apply lock of {}", self.shown);
        let mut client = self.connector.connect("pbxsync apply lock")?;
        set_search_path(&mut client, &self.schema, &self.shown)?;
        let locked: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&self.lock_key])
            .map_err(|e| e.context(context()))?
            .get(0);
        if !locked {
            drop(client);
            let holder = self.lock_holder()?.unwrap_or_else(unknown_holder);
            return Err(BackendError::Locked(holder));
        }
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        client
            .execute(
                "INSERT INTO lock_holder (id, pid, host, since, backend_pid) \
                 VALUES (1, $1, $2, $3, pg_backend_pid()) \
                 ON CONFLICT (id) DO UPDATE SET pid = EXCLUDED.pid, host = EXCLUDED.host, \
                 since = EXCLUDED.since, backend_pid = EXCLUDED.backend_pid",
                &[
                    &i64::from(std::process::id()),
                    &host,
                    &crate::time::utc_now(),
                ],
            )
            .map_err(|e| e.context(context()))?;
        Ok(Box::new(PgLock {
            client,
            key: self.lock_key,
        }))
    }

    fn lock_holder(&mut self) -> Result<Option<LockHolder>, BackendError> {
        let key = self.lock_key as u64;
        let (high, low) = ((key >> 32) as i64, (key & 0xffff_ffff) as i64);
        // The lock itself decides; the row only says who, when it is the
        // holding session's.
        let row = self
            .client
            .query_opt(
                "SELECT h.pid, h.host, h.since, a.client_addr::text, a.backend_start::text \
                 FROM pg_locks l \
                 LEFT JOIN lock_holder h ON h.backend_pid = l.pid \
                 LEFT JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
                   AND l.classid::bigint = $1 AND l.objid::bigint = $2 \
                   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[&high, &low],
            )
            .map_err(|e| e.context(format!("cannot read the apply lock of {}", self.shown)))?;
        Ok(row.map(|row| match row.get::<_, Option<i64>>(0) {
            Some(pid) => LockHolder {
                pid: u32::try_from(pid).unwrap_or(0),
                host: row.get(1),
                since: row.get(2),
            },
            // Taken an instant ago, its row not written yet.
            None => LockHolder {
                pid: 0,
                host: row
                    .get::<_, Option<String>>(3)
                    .unwrap_or_else(|| "unknown".to_owned()),
                since: row
                    .get::<_, Option<String>>(4)
                    .unwrap_or_else(|| "unknown".to_owned()),
            },
        }))
    }
}

fn unknown_holder() -> LockHolder {
    LockHolder {
        pid: 0,
        host: "unknown".to_owned(),
        since: "unknown".to_owned(),
    }
}
