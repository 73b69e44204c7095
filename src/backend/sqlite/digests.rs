//! Row digests and the digest index kept beside the state file (`snapshot`).

use super::read::text;
use super::{SqliteTarget, io_error, sidecar, snapshot, sqlite_error};
use crate::backend::{BackendError, DigestIndex, RowDigests, Usage};
use crate::model::cmp_extension;
use rusqlite::OptionalExtension;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

impl SqliteTarget {
    /// The digest snapshot kept beside the state file.
    pub(super) fn index_path(&self) -> PathBuf {
        sidecar(&self.path, ".digests")
    }

    /// The current serial, and the tag a snapshot of the index at that serial
    /// carries: the file's id, the serial and the last history entry, so that a
    /// snapshot never passes for another file's, or for a later state.
    pub(super) fn index_tag(&self) -> rusqlite::Result<Option<(i64, String)>> {
        self.conn
            .query_row(
                "SELECT s.value, f.value, coalesce(h.value, 0) FROM meta AS s \
                 JOIN meta AS f ON f.key = 'file_id' \
                 LEFT JOIN meta AS h ON h.key = 'last_history_id' WHERE s.key = 'serial'",
                [],
                |r| {
                    let serial: i64 = r.get(0)?;
                    let id: String = r.get(1)?;
                    let history: i64 = r.get(2)?;
                    Ok((serial, format!("{id}:{serial}:{history}")))
                },
            )
            .optional()
    }

    /// The index of the snapshot beside the file, when it was kept at the current
    /// serial and is intact.
    pub(super) fn kept_index(
        &self,
    ) -> Option<(crate::backend::DigestIndex, crate::backend::Usage)> {
        let (_, tag) = self.index_tag().ok()??;
        let bytes = crate::bytes::Bytes::read(&self.index_path()).ok()?;
        snapshot::decode(&bytes, &tag)
    }
}

impl RowDigests for SqliteTarget {
    fn load_index(&mut self) -> Result<Option<(DigestIndex, Usage)>, BackendError> {
        if let Some(kept) = self.kept_index() {
            return Ok(Some(kept));
        }
        let read = || -> rusqlite::Result<(DigestIndex, Usage)> {
            let mut stmt = self.conn.prepare_cached(
                "SELECT number, row_digest, kind = 'voicemail_only' FROM extensions",
            )?;
            let mut rows = stmt.query([])?;
            let mut index = Vec::new();
            let mut usage = Usage::default();
            while let Some(row) = rows.next()? {
                let digest: Option<i64> = row.get(1)?;
                // Stored as the bits of a u64.
                index.push((text(row, 0)?, digest.map(|d| d as u64)));
                if row.get::<_, bool>(2)? {
                    usage.voicemail_licenses += 1;
                } else {
                    usage.user_licenses += 1;
                }
            }
            usage.extensions = index.len() as u64;
            Ok((index, usage))
        };
        let (mut index, usage) =
            read().map_err(|e| sqlite_error(format!("cannot read {}", self.path.display()), e))?;
        if !index.is_sorted_by(|a, b| cmp_extension(&a.0, &b.0).is_le()) {
            index.sort_by(|a, b| cmp_extension(&a.0, &b.0));
        }
        Ok(Some((index, usage)))
    }

    /// Writes the snapshot beside the state file, whole or not at all (a new
    /// file renamed over the old one). Not synced: a snapshot lost in a crash
    /// only costs the next plan a full read.
    fn keep_index(
        &mut self,
        serial: i64,
        index: &DigestIndex,
        usage: Usage,
    ) -> Result<(), BackendError> {
        self.ensure_writable()?;
        let tag = self
            .index_tag()
            .map_err(|e| sqlite_error(format!("cannot read {}", self.path.display()), e))?;
        // Something wrote after the apply: the index is not the current one.
        let Some((_, tag)) = tag.filter(|(current, _)| *current == serial) else {
            return Ok(());
        };
        let Some(bytes) = snapshot::encode(&tag, index, usage) else {
            // Not kept: the tag of the one there no longer matches.
            return Ok(());
        };
        let path = self.index_path();
        let partial = sidecar(&self.path, ".digests.partial");
        let write = || -> std::io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&partial)?;
            file.write_all(&bytes)?;
            std::fs::rename(&partial, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&partial);
            io_error(format!("cannot write {}", path.display()), e)
        })
    }
}
