//! pbxsync's own records: the change serial, the last apply, the history.

use super::{SqliteTarget, sqlite_error};
use crate::backend::{
    AppliedRevision, BackendError, Compression, HistoryRecord, Ledger, RecordedCsv,
};
use rusqlite::types::ToSql;
use rusqlite::{Connection, OptionalExtension, Row, params};

pub(super) const HISTORY_COLUMNS: &str = "id, time, local_user, git_author, source, commit_id, blob, summary, \
     outcome, csv_redacted, csv_lz4, csv_zstd";

/// The list leaves the recorded CSVs out; `history_entry` reads one.
pub(super) const HISTORY_LIST_COLUMNS: &str = "id, time, local_user, git_author, source, commit_id, blob, \
     summary, outcome, '', NULL, NULL";

pub(super) fn read_serial(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = 'serial'")?
        .query_row([], |r| r.get(0))
}

pub(super) fn read_last_applied(conn: &Connection) -> rusqlite::Result<Option<AppliedRevision>> {
    let mut stmt = conn.prepare_cached(
        "SELECT \
           (SELECT value FROM meta WHERE key = 'last_commit'), \
           (SELECT value FROM meta WHERE key = 'last_blob'), \
           (SELECT value FROM meta WHERE key = 'last_serial'), \
           (SELECT value FROM meta WHERE key = 'last_history_id'), \
           (SELECT value FROM meta WHERE key = 'last_inventory'), \
           (SELECT value FROM meta WHERE key = 'last_pruned'), \
           (SELECT value FROM meta WHERE key = 'last_kept_extensions'), \
           (SELECT value FROM meta WHERE key = 'last_kept_users')",
    )?;
    stmt.query_row([], |r| {
        let blob: Option<String> = r.get(1)?;
        Ok(match blob {
            None => None,
            Some(blob) => Some(AppliedRevision {
                commit: r.get(0)?,
                blob,
                serial: r.get::<_, Option<i64>>(2)?.unwrap_or(0),
                history_id: r.get::<_, Option<i64>>(3)?.unwrap_or(0),
                inventory: r.get(4)?,
                pruned: r.get::<_, Option<bool>>(5)?.unwrap_or(false),
                kept: match (r.get::<_, Option<i64>>(6)?, r.get::<_, Option<i64>>(7)?) {
                    (Some(e), Some(u)) => Some(crate::backend::Kept {
                        extensions: e.max(0) as u64,
                        users: u.max(0) as u64,
                    }),
                    _ => None,
                },
            }),
        })
    })
}

pub(super) fn set_meta(conn: &Connection, key: &str, value: &dyn ToSql) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value])
    .map(drop)
}

pub(super) fn insert_history(conn: &Connection, record: &HistoryRecord) -> rusqlite::Result<i64> {
    let summary = serde_json::to_string(&record.summary)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    let (csv, format) = record.csv.compressed();
    let (lz4, zstd) = match format {
        Compression::Lz4 => (Some(csv), None),
        Compression::Zstd => (None, Some(csv)),
    };
    conn.prepare_cached(
        "INSERT INTO history (time, local_user, git_author, source, commit_id, blob, summary, \
         outcome, csv_redacted, csv_lz4, csv_zstd) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, '', ?9, ?10)",
    )?
    .execute(params![
        record.time,
        record.local_user,
        record.git_author,
        record.source,
        record.commit,
        record.blob,
        summary,
        record.outcome,
        lz4,
        zstd
    ])?;
    Ok(conn.last_insert_rowid())
}

pub(super) fn history_row(row: &Row<'_>) -> rusqlite::Result<HistoryRecord> {
    let summary: String = row.get(7)?;
    Ok(HistoryRecord {
        id: row.get(0)?,
        time: row.get(1)?,
        local_user: row.get(2)?,
        git_author: row.get(3)?,
        source: row.get(4)?,
        commit: row.get(5)?,
        blob: row.get(6)?,
        // Kept readable even if something else wrote a summary that is not JSON.
        summary: serde_json::from_str(&summary).unwrap_or(serde_json::Value::String(summary)),
        outcome: row.get(8)?,
        csv: match (
            row.get_ref(11)?.as_blob_or_null()?,
            row.get_ref(10)?.as_blob_or_null()?,
        ) {
            (Some(zstd), _) => RecordedCsv::from_compressed(zstd.to_vec(), Compression::Zstd),
            (None, Some(lz4)) => RecordedCsv::from_compressed(lz4.to_vec(), Compression::Lz4),
            // Entries written before the CSV was compressed keep it as text.
            (None, None) => RecordedCsv::new(row.get_ref(9)?.as_str()?),
        },
    })
}

impl Ledger for SqliteTarget {
    fn serial(&mut self) -> Result<i64, BackendError> {
        read_serial(&self.conn).map_err(|e| sqlite_error("cannot read the serial", e))
    }

    fn last_applied(&mut self) -> Result<Option<AppliedRevision>, BackendError> {
        read_last_applied(&self.conn)
            .map_err(|e| sqlite_error("cannot read the last applied revision", e))
    }

    fn record_failure(&mut self, record: &HistoryRecord) -> Result<i64, BackendError> {
        self.ensure_writable()?;
        insert_history(&self.conn, record)
            .map_err(|e| sqlite_error("cannot record the failed apply in the history", e))
    }

    fn history(&mut self) -> Result<Vec<HistoryRecord>, BackendError> {
        let read = || -> rusqlite::Result<Vec<HistoryRecord>> {
            let mut stmt = self.conn.prepare_cached(&format!(
                "SELECT {HISTORY_LIST_COLUMNS} FROM history ORDER BY id DESC"
            ))?;
            stmt.query_map([], history_row)?.collect()
        };
        read().map_err(|e| sqlite_error("cannot read the history", e))
    }

    fn history_entry(&mut self, id: i64) -> Result<Option<HistoryRecord>, BackendError> {
        let read = || -> rusqlite::Result<Option<HistoryRecord>> {
            let mut stmt = self.conn.prepare_cached(&format!(
                "SELECT {HISTORY_COLUMNS} FROM history WHERE id = ?1"
            ))?;
            stmt.query_row([id], history_row).optional()
        };
        read().map_err(|e| sqlite_error(format!("cannot read history entry {id}"), e))
    }
}
