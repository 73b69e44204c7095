//! The reader: bytes → decoded text → records with line numbers, mapped to columns.
//! Encoding, byte-order mark, delimiter and header row are detected here; the rules
//! about what a cell may contain live in `validate`.

use crate::config::{Delimiter, Encoding};
use crate::diagnostic::{Code, Diagnostic};
use crate::model::{Column, ColumnSet};
use std::borrow::Cow;
use std::ops::Range;

/// How to read the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadOptions {
    pub encoding: Encoding,
    pub delimiter: Delimiter,
}

/// The decoded file.
#[derive(Debug, Clone)]
pub struct Text<'a> {
    /// The content without byte-order mark, as UTF-8.
    pub text: Cow<'a, str>,
    /// True when the bytes were read as Windows-1252.
    pub windows_1252: bool,
}

/// Decodes the bytes. With `Encoding::Auto`, a file that is not valid UTF-8 is read
/// as Windows-1252 (the default of LibreOffice's CSV export) and a warning says so;
/// with `Encoding::Utf8` it is an error naming the first bad line.
pub fn decode(
    bytes: &[u8],
    encoding: Encoding,
) -> Result<(Text<'_>, Option<Diagnostic>), Diagnostic> {
    if u32::try_from(bytes.len()).is_err() {
        return Err(Diagnostic::error(
            Code::FileTooLarge,
            format!(
                "the file is {} bytes; pbxsync reads files up to 4 GiB",
                bytes.len()
            ),
        )
        .with_hint("split the directory into several files, one per site or department"));
    }
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match encoding {
        Encoding::Windows1252 => Ok((
            Text {
                text: encoding_rs::WINDOWS_1252
                    .decode_without_bom_handling(body)
                    .0,
                windows_1252: true,
            },
            None,
        )),
        Encoding::Utf8 | Encoding::Auto => match std::str::from_utf8(body) {
            Ok(s) => Ok((
                Text {
                    text: Cow::Borrowed(s),
                    windows_1252: false,
                },
                None,
            )),
            Err(e) => {
                let at = e.valid_up_to();
                let line = line_of(body, at);
                let byte = body[at];
                if encoding == Encoding::Utf8 {
                    return Err(Diagnostic::error(
                        Code::InvalidUtf8,
                        format!("the file is not valid UTF-8 (byte 0x{byte:02X} on line {line})"),
                    )
                    .at_line(line)
                    .with_hint(
                        "save the file as \"CSV UTF-8\", or set `encoding: windows-1252` (or `auto`) in pbxsync.yaml",
                    ));
                }
                let warning = Diagnostic::warning(
                    Code::InvalidUtf8,
                    format!(
                        "the file is not valid UTF-8 (byte 0x{byte:02X} on line {line}); it was read as Windows-1252"
                    ),
                )
                .at_line(line)
                .with_hint("run `pbxsync fmt` to rewrite it as UTF-8, or save it as \"CSV UTF-8\"");
                Ok((
                    Text {
                        text: encoding_rs::WINDOWS_1252
                            .decode_without_bom_handling(body)
                            .0,
                        windows_1252: true,
                    },
                    Some(warning),
                ))
            }
        },
    }
}

/// 1-based line of a byte offset.
pub fn line_of(text: &[u8], offset: usize) -> u32 {
    let n = text[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count();
    u32::try_from(n + 1).unwrap_or(u32::MAX)
}

/// Picks the delimiter: `;` when the first line has more semicolons than commas.
pub fn detect_delimiter(text: &str, delimiter: Delimiter) -> u8 {
    match delimiter {
        Delimiter::Char(c) => c,
        Delimiter::Auto => {
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            let count = |c: char| first.chars().filter(|&x| x == c).count();
            if count(';') > count(',') { b';' } else { b',' }
        }
    }
}

/// Which column each field of a record holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `columns[i]` is the column of the i-th field.
    pub columns: Vec<Column>,
    /// The line of the header row, when the file has one.
    pub header_line: Option<u32>,
}

impl Layout {
    pub fn default_order() -> Layout {
        Layout {
            columns: Column::ALL.to_vec(),
            header_line: None,
        }
    }

    pub fn managed(&self) -> ColumnSet {
        let mut set = ColumnSet::default();
        for c in &self.columns {
            set.insert(*c);
        }
        set
    }

    /// The field index of a column, when the file has it.
    pub fn position(&self, column: Column) -> Option<usize> {
        self.columns.iter().position(|c| *c == column)
    }
}

/// Decides whether the first record is a header row and maps its cells.
///
/// A row is a header when most of its non-empty cells are column names; then every
/// cell must be one (a misspelt column is an error, not a silently unmanaged one).
pub fn detect_header(
    cells: &[&str],
    line: u32,
    span: Range<usize>,
) -> Result<Option<Layout>, Vec<Diagnostic>> {
    let known = cells
        .iter()
        .filter(|c| Column::from_header(c).is_some())
        .count();
    let filled = cells.iter().filter(|c| !c.trim().is_empty()).count();
    if known == 0 || known * 2 < filled {
        return Ok(None);
    }
    let mut errors = Vec::new();
    let mut columns = Vec::with_capacity(cells.len());
    for (i, cell) in cells.iter().enumerate() {
        let column_no = u32::try_from(i + 1).unwrap_or(u32::MAX);
        match Column::from_header(cell) {
            Some(c) if columns.contains(&c) => errors.push(
                Diagnostic::error(
                    Code::BadHeader,
                    format!("the header names the column `{}` twice", c.header()),
                )
                .at_line(line)
                .at_column(column_no)
                .with_span(span.clone())
                .with_hint("remove or rename one of the two columns"),
            ),
            Some(c) => columns.push(c),
            None => errors.push(
                Diagnostic::error(
                    Code::BadHeader,
                    format!("unknown column `{}` in the header row", cell.trim()),
                )
                .at_line(line)
                .at_column(column_no)
                .with_span(span.clone())
                .with_hint(format!(
                    "the columns are: {}",
                    Column::ALL.map(Column::header).join(", ")
                )),
            ),
        }
    }
    for c in Column::ALL.into_iter().filter(|c| c.required()) {
        if errors.is_empty() && !columns.contains(&c) {
            errors.push(
                Diagnostic::error(
                    Code::BadHeader,
                    format!(
                        "the header row has no `{}` column, which is required",
                        c.header()
                    ),
                )
                .at_line(line)
                .with_span(span.clone())
                .with_hint(format!("add a `{}` column", c.header())),
            );
        }
    }
    if errors.is_empty() {
        Ok(Some(Layout {
            columns,
            header_line: Some(line),
        }))
    } else {
        Err(errors)
    }
}

/// A record of the file: its fields and where it starts.
pub struct Record<'r> {
    /// The line where the record starts (1-based).
    pub line: u32,
    /// Byte offset of the record in the decoded text.
    pub start: usize,
    pub fields: &'r csv::ByteRecord,
    /// All cells as one text (checked once per record, not once per cell).
    text: &'r str,
}

impl<'r> Record<'r> {
    /// The record read into `fields`, which starts on `line` at byte `start`.
    pub fn new(line: u32, start: usize, fields: &'r csv::ByteRecord) -> Record<'r> {
        Record {
            line,
            start,
            fields,
            // The records come from valid UTF-8 split at ASCII bytes (delimiter,
            // quotes, line breaks), so this holds; a cell slices it at boundaries.
            text: std::str::from_utf8(fields.as_slice()).unwrap_or(""),
        }
    }

    /// The i-th cell, or "" when the row is shorter.
    pub fn get(&self, i: usize) -> &'r str {
        self.fields
            .range(i)
            .and_then(|r| self.text.get(r))
            .unwrap_or("")
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &'r str> + use<'r> {
        let (fields, text) = (self.fields, self.text);
        (0..fields.len()).map(move |i| fields.range(i).and_then(|r| text.get(r)).unwrap_or(""))
    }
}

fn is_blank(record: &csv::ByteRecord) -> bool {
    record.iter().all(|f| f.iter().all(u8::is_ascii_whitespace))
}

/// Streams the records of decoded text, one reused buffer, blank rows skipped.
pub struct Records<'t> {
    reader: csv::Reader<&'t [u8]>,
    record: csv::ByteRecord,
    failed: bool,
    text: &'t [u8],
    /// Where `text` starts in the whole file: offsets are reported in the file.
    base: usize,
    /// Line number at `counted_to` (the csv crate's own line count skips blank lines).
    line: u32,
    counted_to: usize,
}

impl<'t> Records<'t> {
    pub fn new(text: &'t str, delimiter: u8) -> Records<'t> {
        Records::within(text, 0..text.len(), delimiter, 1)
    }

    /// The records of a part of the text that starts a record at `range.start` on
    /// line `first_line`; offsets and lines are those of the whole text.
    pub fn within(
        text: &'t str,
        range: Range<usize>,
        delimiter: u8,
        first_line: u32,
    ) -> Records<'t> {
        let part = text.as_bytes().get(range.clone()).unwrap_or_default();
        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(delimiter)
            .from_reader(part);
        Records {
            reader,
            record: csv::ByteRecord::new(),
            failed: false,
            text: part,
            base: range.start,
            line: first_line,
            counted_to: 0,
        }
    }

    /// The next non-blank record, or a diagnostic when the text cannot be split.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Result<Record<'_>, Diagnostic>> {
        let mut record = std::mem::take(&mut self.record);
        let next = self.next_into(&mut record);
        self.record = record;
        Some(next?.map(|(line, start)| Record::new(line, start, &self.record)))
    }

    /// Reads the next non-blank record into `record` (so callers can keep batches
    /// of records without copying them); returns its line and byte offset.
    pub fn next_into(
        &mut self,
        record: &mut csv::ByteRecord,
    ) -> Option<Result<(u32, usize), Diagnostic>> {
        if self.failed {
            return None;
        }
        loop {
            match self.reader.read_byte_record(record) {
                Ok(false) => return None,
                Ok(true) => {
                    if is_blank(record) {
                        continue;
                    }
                    let byte = record.position().map_or(0, |p| p.byte());
                    // The reported offset may point at the line break (or blank
                    // lines) before the record.
                    let mut start = usize::try_from(byte)
                        .unwrap_or(usize::MAX)
                        .min(self.text.len());
                    while matches!(self.text.get(start), Some(b'\r' | b'\n')) {
                        start += 1;
                    }
                    let newlines = self.text[self.counted_to.min(start)..start]
                        .iter()
                        .filter(|&&b| b == b'\n')
                        .count();
                    self.line = self
                        .line
                        .saturating_add(u32::try_from(newlines).unwrap_or(u32::MAX));
                    self.counted_to = start;
                    return Some(Ok((self.line, self.base + start)));
                }
                Err(e) => {
                    // The text is valid UTF-8 and the reader is flexible, so only a
                    // reader-internal failure lands here; report it and stop.
                    self.failed = true;
                    return Some(Err(Diagnostic::error(
                        Code::WrongColumnCount,
                        format!("the file cannot be split into rows: {e}"),
                    )
                    .at_line(self.line)));
                }
            }
        }
    }
}

/// Byte ranges (in `text`) of the fields of the record that starts at `start`,
/// quotes included. Used only to point at a field when reporting, so it may be slow.
pub fn field_spans(text: &str, start: usize, delimiter: u8) -> Vec<Range<usize>> {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let mut i = start.min(bytes.len());
    let mut field_start = i;
    let mut in_quotes = false;
    while i < bytes.len() {
        let b = bytes[i];
        if in_quotes {
            if b == b'"' {
                if bytes.get(i + 1) == Some(&b'"') {
                    i += 1;
                } else {
                    in_quotes = false;
                }
            }
        } else if b == b'"' && i == field_start {
            in_quotes = true;
        } else if b == delimiter {
            spans.push(field_start..i);
            field_start = i + 1;
        } else if b == b'\n' || b == b'\r' {
            break;
        }
        i += 1;
    }
    spans.push(field_start..i);
    spans
}

/// The span of field `index` of a record, or the record's first line.
pub fn field_span(text: &str, start: usize, delimiter: u8, index: usize) -> Range<usize> {
    let spans = field_spans(text, start, delimiter);
    match spans.get(index) {
        Some(s) => s.clone(),
        None => {
            let end = spans.last().map_or(start, |s| s.end);
            start..end
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(text: &str) -> Vec<(u32, Vec<String>)> {
        let mut out = Vec::new();
        let mut r = Records::new(text, b',');
        while let Some(rec) = r.next() {
            let rec = rec.unwrap();
            out.push((rec.line, rec.iter().map(String::from).collect()));
        }
        out
    }

    #[test]
    fn blank_lines_and_blank_rows_are_skipped_and_lines_counted() {
        let got = records("a,b\n\n,,\r\nc,d\r\n\n\"e\nf\",g\nh,i\n");
        let lines: Vec<u32> = got.iter().map(|r| r.0).collect();
        assert_eq!(lines, [1, 4, 6, 8]);
        assert_eq!(got[2].1, ["e\nf", "g"]);
    }

    #[test]
    fn quoted_commas_and_doubled_quotes() {
        let got = records("\"Conference room, 2nd floor\",\"say \"\"hi\"\"\"\n");
        assert_eq!(got[0].1, ["Conference room, 2nd floor", "say \"hi\""]);
    }

    #[test]
    fn bom_is_stripped_and_utf8_kept() {
        let (t, w) = decode("\u{feff}Zoë".as_bytes(), Encoding::Auto).unwrap();
        assert_eq!(t.text, "Zoë");
        assert!(w.is_none() && !t.windows_1252);
    }

    #[test]
    fn windows_1252_bytes_are_decoded_with_a_warning_in_auto_mode() {
        let bytes = b"1001,Zo\xEB,Smith\n";
        let (t, w) = decode(bytes, Encoding::Auto).unwrap();
        assert_eq!(t.text, "1001,Zoë,Smith\n");
        let w = w.unwrap();
        assert_eq!(
            (w.code, w.line, w.is_error()),
            (Code::InvalidUtf8, Some(1), false)
        );
        let e = decode(b"a\nb\xEB\n", Encoding::Utf8).unwrap_err();
        assert_eq!(
            (e.code, e.line, e.is_error()),
            (Code::InvalidUtf8, Some(2), true)
        );
    }

    #[test]
    fn semicolons_are_detected() {
        assert_eq!(
            detect_delimiter("Extension;First Name;x,y\n", Delimiter::Auto),
            b';'
        );
        assert_eq!(detect_delimiter("1001,A;B,C\n", Delimiter::Auto), b',');
        assert_eq!(detect_delimiter("1;2;3", Delimiter::Char(b',')), b',');
    }

    #[test]
    fn header_detection_and_mapping() {
        let l = detect_header(
            &["Web Username", "extension", "First Name", "Last Name"],
            1,
            0..0,
        )
        .unwrap()
        .unwrap();
        assert_eq!(l.columns[0], Column::WebUsername);
        assert_eq!(l.position(Column::Extension), Some(1));
        assert!(!l.managed().contains(Column::Email));
        assert_eq!(
            detect_header(&["1001", "Jason", "Flynn", "jflynn"], 1, 0..0).unwrap(),
            None
        );
        let e = detect_header(
            &["Extension", "First Name", "Last Nmae", "Web Username"],
            1,
            0..0,
        )
        .unwrap_err();
        assert_eq!((e[0].code, e[0].column), (Code::BadHeader, Some(3)));
        let e = detect_header(&["Extension", "First Name", "Last Name"], 1, 0..0).unwrap_err();
        assert!(e[0].message.contains("Web Username"));
    }

    #[test]
    fn field_spans_follow_quotes() {
        let t = "x\n1,\"a,\"\"b\",c\n";
        let s = field_spans(t, 2, b',');
        assert_eq!(
            s.iter().map(|r| &t[r.clone()]).collect::<Vec<_>>(),
            ["1", "\"a,\"\"b\"", "c"]
        );
    }
}
