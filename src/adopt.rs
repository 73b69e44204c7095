//! `pbxsync adopt`: the CSV rewritten with the values the target holds now, so
//! that a change made in the PBX by hand can be reviewed and committed instead of
//! being overwritten. The file stays as it was wherever it already agrees with the
//! target (header, row order, quoting, line ends, blank lines, byte-order mark,
//! encoding): `git diff` then shows the hand-made change and nothing else.
//!
//! - A row is rewritten only when one of its cells (Password aside) disagrees with
//!   the target, and then only those cells: the others, Password always, keep their
//!   bytes. A rewritten cell is quoted only when it must be (delimiter, quote or
//!   line break in it) and gets the `'` escape that `export` writes.
//! - Rows of extensions the target no longer has are removed, with their line
//!   break; extensions the file lacks are appended, sorted by extension, with the
//!   file's line end and an empty Password.
//! - An empty user-field cell is "not filled in" (SPEC section 2): it agrees when
//!   another row of that user fills the field in. An empty Device cell keeps an
//!   existing extension's device, so it agrees with any device.
//! - A Windows-1252 file is written back in Windows-1252; a target's value that
//!   has a character it cannot hold is refused, and nothing is written.

use crate::csv::{Records, field_spans};
use crate::export;
use crate::model::{
    Column, DeviceCell, Directory, Extension, ExtensionKind, Text, USER_COLUMNS, User,
};
use crate::validate::{Validated, cell_value, rules};
use crate::{FastSet, csv::Layout};
use std::ops::Range;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The rewritten file and what changed in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adopted {
    /// The new content, in the file's encoding, with its byte-order mark if it had one.
    pub bytes: Vec<u8>,
    /// Rows whose cells were rewritten.
    pub changed: usize,
    /// Rows appended for extensions the file lacked.
    pub added: usize,
    /// Rows removed for extensions the target no longer has.
    pub removed: usize,
}

impl Adopted {
    /// The file already says what the target holds.
    pub fn is_unchanged(&self) -> bool {
        self.changed == 0 && self.added == 0 && self.removed == 0
    }
}

/// Why a file cannot take the target's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdoptError {
    #[error(
        "the {column} of extension {extension} in the target holds `{character}`, which Windows-1252 (the encoding of the file) cannot hold; nothing was written. Save the file as UTF-8 (`pbxsync fmt` does) and adopt again",
        column = column.header()
    )]
    NotInWindows1252 {
        extension: Text,
        column: Column,
        character: char,
    },
}

/// A data row of the file.
struct Row {
    /// Where the record starts and ends (before its line break) in the text.
    span: Range<usize>,
    /// The fields as they are written (quotes included), from `field_spans`.
    raw: Vec<Range<usize>>,
    /// The cells as the reader reads them (quotes taken away).
    cells: Vec<String>,
    number: Text,
}

impl Row {
    /// The value of field `i` (trimmed, without the formula escape).
    fn value(&self, i: usize) -> &str {
        self.cells.get(i).map_or("", |c| cell_value(c))
    }
}

/// The file `bytes`, read as `file` (a validation without errors), rewritten with
/// the values of `dir`.
pub fn adopt(bytes: &[u8], file: &Validated<'_>, dir: &Directory) -> Result<Adopted, AdoptError> {
    let text: &str = &file.text;
    let (rows, first_end) = rows(text, file);
    let filled = filled_user_fields(&rows, &file.layout, dir);
    let mut out = String::with_capacity(text.len() + 256);
    let mut copied = 0;
    let (mut changed, mut removed) = (0, 0);
    let mut kept: FastSet<&str> = FastSet::default();
    for row in &rows {
        let Some(ext) = dir.extension(&row.number) else {
            out.push_str(&text[copied..row.span.start]);
            copied = row.span.end + line_break_len(text, row.span.end);
            removed += 1;
            continue;
        };
        kept.insert(ext.number.as_str());
        let user = dir.user(&ext.username);
        if let Some(new) = rewrite(text, file, row, ext, user, &filled)? {
            out.push_str(&text[copied..row.span.start]);
            out.push_str(&new);
            copied = row.span.end;
            changed += 1;
        }
    }
    out.push_str(&text[copied..]);
    let missing: Vec<&Extension> = dir
        .extensions
        .iter()
        .filter(|e| !kept.contains(e.number.as_str()))
        .collect();
    if !missing.is_empty() {
        let eol = first_end.map_or("\n", |end| line_end(text, end));
        if !out.is_empty() && !out.ends_with(['\n', '\r']) {
            out.push_str(eol);
        }
        // A file without any record gets the header row export writes.
        if first_end.is_none() {
            let header: Vec<&str> = file.layout.columns.iter().map(|c| c.header()).collect();
            out.push_str(&header.join(&char::from(file.delimiter).to_string()));
            out.push_str(eol);
        }
        for ext in &missing {
            out.push_str(&appended(file, ext, dir.user(&ext.username))?);
            out.push_str(eol);
        }
    }
    let mut bytes_out = Vec::with_capacity(out.len() + 3);
    if bytes.starts_with(BOM) {
        bytes_out.extend_from_slice(BOM);
    }
    if file.windows_1252 {
        // Every new cell was checked (`representable`), and the rest was decoded
        // from Windows-1252: it all encodes back, byte for byte.
        bytes_out.extend_from_slice(&encoding_rs::WINDOWS_1252.encode(&out).0);
    } else {
        bytes_out.extend_from_slice(out.as_bytes());
    }
    Ok(Adopted {
        bytes: bytes_out,
        changed,
        added: missing.len(),
        removed,
    })
}

/// The data rows of the text (the header row left out), and where the first
/// record (header or not) ends: its line break is the file's line end.
fn rows(text: &str, file: &Validated<'_>) -> (Vec<Row>, Option<usize>) {
    let extension = file.layout.position(Column::Extension);
    let mut records = Records::new(text, file.delimiter);
    let mut rows = Vec::new();
    let mut first_end = None;
    while let Some(rec) = records.next() {
        let raw = field_spans(text, rec.start, file.delimiter);
        let end = raw.last().map_or(rec.start, |s| s.end);
        if first_end.is_none() {
            first_end = Some(end);
            if file.layout.header_line == Some(rec.line) {
                continue;
            }
        }
        let cells: Vec<String> = rec.iter().map(String::from).collect();
        let number = Text::from(extension.map_or("", |i| cell_value(rec.get(i))));
        rows.push(Row {
            span: rec.start..end,
            raw,
            cells,
            number,
        });
    }
    (rows, first_end)
}

/// The user fields that some row of a user fills in, by the target's username of
/// the row's extension: an empty cell of that user then agrees with the target.
fn filled_user_fields(rows: &[Row], layout: &Layout, dir: &Directory) -> FastSet<(Text, Column)> {
    let mut filled = FastSet::default();
    for row in rows {
        let Some(ext) = dir.extension(&row.number) else {
            continue;
        };
        for column in USER_COLUMNS {
            if let Some(i) = layout.position(column)
                && !row.value(i).is_empty()
            {
                filled.insert((ext.username.clone(), column));
            }
        }
    }
    filled
}

/// The row with the cells that disagree with the target rewritten; `None` when
/// every cell agrees.
fn rewrite(
    text: &str,
    file: &Validated<'_>,
    row: &Row,
    ext: &Extension,
    user: Option<&User>,
    filled: &FastSet<(Text, Column)>,
) -> Result<Option<String>, AdoptError> {
    let mut new: Vec<Option<String>> = vec![None; row.cells.len().max(file.layout.columns.len())];
    let mut last = None;
    for (i, &column) in file.layout.columns.iter().enumerate() {
        let value = row.value(i);
        let is_filled = || filled.contains(&(ext.username.clone(), column));
        if !agrees(column, value, ext, user, is_filled) {
            new[i] = Some(cell(file, ext, user, column)?);
            last = Some(i);
        }
    }
    let Some(last) = last else {
        return Ok(None);
    };
    // The raw fields are those the reader read, unless the quoting is such that
    // they disagree: then every cell is written anew from its value.
    let raw_ok = row.raw.len() == row.cells.len();
    let fields: Vec<String> = new
        .into_iter()
        .enumerate()
        .take((last + 1).max(row.cells.len()))
        .map(|(i, new)| match new {
            Some(cell) => cell,
            None if raw_ok => text[row.raw[i].clone()].to_string(),
            None => quoted(row.cells.get(i).map_or("", String::as_str), file.delimiter),
        })
        .collect();
    Ok(Some(fields.join(&char::from(file.delimiter).to_string())))
}

/// Whether a cell's value says what the target holds. `filled`: another row of
/// the user fills this user field in.
fn agrees(
    column: Column,
    value: &str,
    ext: &Extension,
    user: Option<&User>,
    filled: impl FnOnce() -> bool,
) -> bool {
    let target = export::cell(ext, user, column);
    match column {
        // Passwords are never read back: the target holds hashes only.
        Column::Password => true,
        Column::Device => match rules::device(value) {
            Ok(DeviceCell::Keep) => true,
            Ok(DeviceCell::Virtual) => ext.kind == ExtensionKind::Virtual,
            Ok(DeviceCell::Device(id)) => {
                ext.kind == ExtensionKind::Device && ext.device.as_deref() == Some(id.as_str())
            }
            Err(_) => false,
        },
        c if USER_COLUMNS.contains(&c) && value.is_empty() => target.is_empty() || filled(),
        _ => value == target,
    }
}

/// A new row for an extension the file lacks, in the file's columns.
fn appended(
    file: &Validated<'_>,
    ext: &Extension,
    user: Option<&User>,
) -> Result<String, AdoptError> {
    let cells = file
        .layout
        .columns
        .iter()
        .map(|&column| cell(file, ext, user, column))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(cells.join(&char::from(file.delimiter).to_string()))
}

/// The cell written for the target's value of `column`: escaped as `export`
/// escapes it, quoted only when it must be, and one the file's encoding can hold.
fn cell(
    file: &Validated<'_>,
    ext: &Extension,
    user: Option<&User>,
    column: Column,
) -> Result<String, AdoptError> {
    let value = export::cell(ext, user, column);
    if file.windows_1252
        && let Some(character) = not_in_windows_1252(value)
    {
        return Err(AdoptError::NotInWindows1252 {
            extension: ext.number.clone(),
            column,
            character,
        });
    }
    Ok(quoted(&rules::escape(column, value), file.delimiter))
}

/// `value` as a field: in quotes (doubled inside) when it holds the delimiter, a
/// quote or a line break; as it is otherwise.
fn quoted(value: &str, delimiter: u8) -> String {
    if value.contains([char::from(delimiter), '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

/// The first character of `value` that Windows-1252 cannot hold.
fn not_in_windows_1252(value: &str) -> Option<char> {
    if value.is_ascii() {
        return None;
    }
    value.chars().find(|c| {
        let mut buf = [0u8; 4];
        encoding_rs::WINDOWS_1252.encode(c.encode_utf8(&mut buf)).2
    })
}

/// The line break at `at`: CRLF, LF or a lone CR; LF when there is none (the
/// first record is the last line).
fn line_end(text: &str, at: usize) -> &'static str {
    match &text.as_bytes()[at.min(text.len())..] {
        [b'\r', b'\n', ..] => "\r\n",
        [b'\r', ..] => "\r",
        _ => "\n",
    }
}

/// How many bytes the line break at `at` has (0 at the end of the text).
fn line_break_len(text: &str, at: usize) -> usize {
    match &text.as_bytes()[at.min(text.len())..] {
        [b'\r', b'\n', ..] => 2,
        [b'\r' | b'\n', ..] => 1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests;
