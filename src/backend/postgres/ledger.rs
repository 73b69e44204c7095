//! pbxsync's own records: the change serial, the last apply, the history.

use super::{PgError, PostgresTarget};
use crate::backend::{
    AppliedRevision, BackendError, Compression, HistoryRecord, Kept, Ledger, RecordedCsv,
};
use postgres::{GenericClient, Row};

const HISTORY_COLUMNS: &str =
    "id, time, local_user, git_author, source, commit_id, blob, summary, outcome";

pub(super) fn read_serial(client: &mut impl GenericClient) -> Result<i64, postgres::Error> {
    Ok(client
        .query_one("SELECT serial FROM state WHERE id = 1", &[])?
        .get(0))
}

pub(super) fn insert_history(
    client: &mut impl GenericClient,
    record: &HistoryRecord,
) -> Result<i64, postgres::Error> {
    // A summary is plain JSON text: `jsonb` would reorder its keys.
    let summary = record.summary.to_string();
    let (csv, format) = record.csv.compressed();
    debug_assert!(csv.is_empty() || format == Compression::Zstd);
    let csv = (!csv.is_empty()).then_some(csv);
    Ok(client
        .query_one(
            "INSERT INTO history (time, local_user, git_author, source, commit_id, blob, \
             summary, outcome, csv_zstd) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            &[
                &record.time,
                &record.local_user,
                &record.git_author,
                &record.source,
                &record.commit,
                &record.blob,
                &summary,
                &record.outcome,
                &csv,
            ],
        )?
        .get(0))
}

fn history_row(row: &Row, with_csv: bool) -> Result<HistoryRecord, postgres::Error> {
    let summary: String = row.try_get(7)?;
    Ok(HistoryRecord {
        id: row.try_get(0)?,
        time: row.try_get(1)?,
        local_user: row.try_get(2)?,
        git_author: row.try_get(3)?,
        source: row.try_get(4)?,
        commit: row.try_get(5)?,
        blob: row.try_get(6)?,
        // Kept readable even if something else wrote a summary that is not JSON.
        summary: serde_json::from_str(&summary).unwrap_or(serde_json::Value::String(summary)),
        outcome: row.try_get(8)?,
        csv: match with_csv.then(|| row.try_get::<_, Option<Vec<u8>>>(9)) {
            Some(bytes) => bytes?
                .map(|b| RecordedCsv::from_compressed(b, Compression::Zstd))
                .unwrap_or_default(),
            None => RecordedCsv::default(),
        },
    })
}

impl Ledger for PostgresTarget {
    fn serial(&mut self) -> Result<i64, BackendError> {
        read_serial(&mut self.client).map_err(|e| e.context(format!("cannot read {}", self.shown)))
    }

    fn last_applied(&mut self) -> Result<Option<AppliedRevision>, BackendError> {
        let row = self
            .client
            .query_one(
                "SELECT last_commit, last_blob, last_serial, last_history_id, last_inventory, \
                 last_pruned, last_kept_extensions, last_kept_users FROM state WHERE id = 1",
                &[],
            )
            .map_err(|e| e.context(format!("cannot read {}", self.shown)))?;
        let Some(blob) = row.get::<_, Option<String>>(1) else {
            return Ok(None);
        };
        let kept = match (row.get::<_, Option<i64>>(6), row.get::<_, Option<i64>>(7)) {
            (Some(e), Some(u)) => Some(Kept {
                extensions: e.max(0) as u64,
                users: u.max(0) as u64,
            }),
            _ => None,
        };
        Ok(Some(AppliedRevision {
            commit: row.get(0),
            blob,
            serial: row.get::<_, Option<i64>>(2).unwrap_or(0),
            history_id: row.get::<_, Option<i64>>(3).unwrap_or(0),
            inventory: row.get(4),
            pruned: row.get(5),
            kept,
        }))
    }

    fn record_failure(&mut self, record: &HistoryRecord) -> Result<i64, BackendError> {
        insert_history(&mut self.client, record)
            .map_err(|e| e.context(format!("cannot record the failed apply in {}", self.shown)))
    }

    fn history(&mut self) -> Result<Vec<HistoryRecord>, BackendError> {
        let context = || format!("cannot read the history of {}", self.shown);
        let rows = self
            .client
            .query(
                &format!("SELECT {HISTORY_COLUMNS} FROM history ORDER BY id DESC"),
                &[],
            )
            .map_err(|e| e.context(context()))?;
        rows.iter()
            .map(|row| history_row(row, false))
            .collect::<Result<_, _>>()
            .map_err(|e| e.context(context()))
    }

    fn history_entry(&mut self, id: i64) -> Result<Option<HistoryRecord>, BackendError> {
        let context = || format!("cannot read the history of {}", self.shown);
        let row = self
            .client
            .query_opt(
                &format!("SELECT {HISTORY_COLUMNS}, csv_zstd FROM history WHERE id = $1"),
                &[&id],
            )
            .map_err(|e| e.context(context()))?;
        row.map(|row| history_row(&row, true))
            .transpose()
            .map_err(|e| e.context(context()))
    }
}
