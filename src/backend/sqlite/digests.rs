//! Row digests and the digest index kept beside the state file (`snapshot`).

use super::*;
use rusqlite::OptionalExtension;
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
