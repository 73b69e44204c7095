//! The reader: bytes → decoded text → records with line numbers, mapped to columns.
//! Encoding, byte-order mark, delimiter and header row are detected here; the rules
//! about what a cell may contain live in `validate`.

use crate::diagnostic::{Code, Diagnostic};
use crate::model::{Column, ColumnSet};
use crate::policy::{Delimiter, Encoding};
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
        // SIMD validation first (a large file is nearly all of a plan's reading);
        // std's, which says where the fault is, only for a file that has one.
        Encoding::Utf8 | Encoding::Auto => {
            match simdutf8::basic::from_utf8(body).or_else(|_| std::str::from_utf8(body)) {
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
            }
        }
    }
}

/// 1-based line of a byte offset. A line ends at LF, CRLF or a lone CR (old Mac
/// files: Excel for Mac's "CSV (Macintosh)" ends every line with CR alone).
pub fn line_of(text: &[u8], offset: usize) -> u32 {
    let offset = offset.min(text.len());
    u32::try_from(line_breaks(text, 0..offset) + 1).unwrap_or(u32::MAX)
}

/// How many lines end in `range` of `text`: each LF, and each CR that no LF follows
/// (looked up past the range, so a CRLF cut between its bytes counts once, at its LF).
/// A file without CR is counted by `count_byte`; one with CRs in blocks of 64
/// bytes beside the same block shifted by one, a loop the compiler vectorises.
pub fn line_breaks(text: &[u8], range: Range<usize>) -> usize {
    let part = &text[range.clone()];
    if memchr::memchr(b'\r', part).is_none() {
        return count_byte(part, b'\n');
    }
    let mut n = 0usize;
    let mut blocks = part.chunks_exact(64);
    let mut at = range.start;
    for block in &mut blocks {
        let mut next = [0u8; 64];
        next[..63].copy_from_slice(&block[1..]);
        next[63] = text.get(at + 64).copied().unwrap_or(0);
        let mut k = 0u8;
        for (&b, &c) in block.iter().zip(&next) {
            k += u8::from(b == b'\n') | (u8::from(b == b'\r') & u8::from(c != b'\n'));
        }
        n += usize::from(k);
        at += 64;
    }
    n + (at..range.end).filter(|&i| ends_line(text, i)).count()
}

/// How often a byte occurs; counts in blocks of 255 so the compiler can keep the
/// counters in bytes and vectorise (a plain filter and count is several times slower
/// on a file of 100 MB).
pub fn count_byte(bytes: &[u8], needle: u8) -> usize {
    bytes
        .chunks(255)
        .map(|block| block.iter().fold(0u8, |n, &b| n + u8::from(b == needle)) as usize)
        .sum()
}

/// Whether the byte at `i` ends a line: an LF, or a CR that no LF follows.
pub fn ends_line(text: &[u8], i: usize) -> bool {
    match text.get(i) {
        Some(b'\n') => true,
        Some(b'\r') => text.get(i + 1) != Some(&b'\n'),
        _ => false,
    }
}

/// Where each line of `text` starts: `starts[n - 1]` is the offset of line n.
pub fn line_starts(text: &[u8]) -> Vec<usize> {
    let mut starts = vec![0];
    for i in memchr::memchr2_iter(b'\n', b'\r', text) {
        if ends_line(text, i) {
            starts.push(i + 1);
        }
    }
    starts
}

/// Picks the delimiter: `;` when the first line has more semicolons than commas
/// (European spreadsheets), a tab when it has more tabs than either (a spreadsheet's
/// "Unicode text" or a copy and paste), else `,`. A line ends at LF, CRLF or a
/// lone CR.
pub fn detect_delimiter(text: &str, delimiter: Delimiter) -> u8 {
    match delimiter {
        Delimiter::Char(c) => c,
        Delimiter::Auto => {
            let first = text
                .split(['\n', '\r'])
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            let count = |c: u8| first.bytes().filter(|&x| x == c).count();
            let (commas, semicolons, tabs) = (count(b','), count(b';'), count(b'\t'));
            if tabs > commas.max(semicolons) {
                b'\t'
            } else if semicolons > commas {
                b';'
            } else {
                b','
            }
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

/// The most cells a header row may have and still get one diagnostic per bad cell.
/// A header names each of the ten columns at most once, so a wider one is wrong
/// anyway; past this many cells one `bad-header` error says so, instead of one per
/// surplus cell (a row of 100,000 repeated names used to give 99,999 errors, each
/// shown with the whole line).
pub const MAX_HEADER_CELLS: usize = 64;

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
    if cells.len() > MAX_HEADER_CELLS {
        return Err(vec![
            Diagnostic::error(
                Code::BadHeader,
                format!(
                    "the header row has {} cells; a pbxsync CSV has at most {} columns, each named once",
                    cells.len(),
                    Column::ALL.len()
                ),
            )
            .at_line(line)
            .with_span(span)
            .with_hint(format!(
                "keep only these columns in the header and the rows, and delete the others (a spreadsheet may have saved empty columns on the right): {}",
                Column::ALL.map(Column::header).join(", ")
            )),
        ]);
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

/// A record of the file: its cells and where it starts.
pub struct Record<'r> {
    /// The line where the record starts (1-based).
    pub line: u32,
    /// Byte offset of the record in the decoded text.
    pub start: usize,
    /// The text the cells are in: the file itself, or the reader's buffer when
    /// quotes had to be unescaped.
    text: &'r str,
    cells: &'r [Range<usize>],
    quote_in_value: bool,
}

impl<'r> Record<'r> {
    /// The i-th cell, or "" when the row is shorter.
    pub fn get(&self, i: usize) -> &'r str {
        self.cells
            .get(i)
            .and_then(|r| self.text.get(r.clone()))
            .unwrap_or("")
    }

    pub fn len(&self) -> usize {
        self.cells.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &'r str> + use<'r> {
        let text = self.text;
        self.cells
            .iter()
            .map(move |r| text.get(r.clone()).unwrap_or(""))
    }

    /// Where cell `i` is in the text the records are read from (the field's
    /// content, without quotes around it): `None` for a cell that is not there
    /// as it reads, which is every cell of a record whose quotes were unescaped
    /// (`field_span` finds those), and for a cell past the end of the record.
    pub fn span(&self, i: usize, source: &str) -> Option<Range<usize>> {
        let in_source = std::ptr::eq(self.text.as_ptr(), source.as_ptr());
        self.cells.get(i).filter(|_| in_source).cloned()
    }

    /// Whether a cell holds a quote character (an escaped `""`, or a quote inside
    /// an unquoted cell), not just quotes around it.
    pub fn has_quote_in_value(&self) -> bool {
        self.quote_in_value
    }
}

/// The positions of the bytes a reader must stop at (delimiter, quote, line
/// breaks), found 64 bytes at a time as a bit mask: comparing whole blocks is a
/// loop the compiler turns into vector instructions, where a byte-by-byte parser
/// branches on every byte.
struct Stops<'t> {
    bytes: &'t [u8],
    delimiter: u8,
    /// Where the current block starts.
    base: usize,
    /// Bit i: a stop at `base + i` not yet returned.
    mask: u64,
}

impl<'t> Stops<'t> {
    fn new(bytes: &'t [u8], delimiter: u8, from: usize) -> Stops<'t> {
        let mut stops = Stops {
            bytes,
            delimiter,
            base: 0,
            mask: 0,
        };
        stops.seek(from);
        stops
    }

    fn block_mask(&self, at: usize) -> u64 {
        let rest = self.bytes.get(at..).unwrap_or_default();
        let mut block = [0u8; 64];
        let n = rest.len().min(64);
        block[..n].copy_from_slice(&rest[..n]);
        // One byte per position, 1 at a stop: this loop vectorises.
        let mut hits = [0u8; 64];
        for (hit, &b) in hits.iter_mut().zip(&block) {
            *hit = u8::from((b == self.delimiter) | (b == b'"') | (b == b'\n') | (b == b'\r'));
        }
        // Then eight bytes of 0 or 1 become eight bits: the multiplication adds
        // byte i of the word into bit 56 + i, without carries (see the test).
        let mut mask = 0;
        for (k, eight) in hits.chunks_exact(8).enumerate() {
            let word = u64::from_le_bytes(eight.try_into().unwrap_or_default());
            mask |= (word.wrapping_mul(PACK) >> 56) << (8 * k);
        }
        // A stop past the end of the text is none (the padding may be the delimiter).
        if n < 64 { mask & ((1 << n) - 1) } else { mask }
    }

    /// The stops from `at` on, wherever the previous ones were.
    fn seek(&mut self, at: usize) {
        self.base = at;
        self.mask = self.block_mask(at);
    }

    /// Drops the stops before `at`, which must not be before a stop already
    /// returned.
    fn skip_to(&mut self, at: usize) {
        match at.checked_sub(self.base) {
            Some(0) => {}
            Some(k) if k < 64 => self.mask &= u64::MAX << k,
            _ => self.seek(at),
        }
    }

    /// The position of the next stop, or `None` at the end of the text.
    fn next(&mut self) -> Option<usize> {
        while self.mask == 0 {
            self.base += 64;
            if self.base >= self.bytes.len() {
                self.base = self.bytes.len();
                return None;
            }
            self.mask = self.block_mask(self.base);
        }
        let i = self.mask.trailing_zeros() as usize;
        self.mask &= self.mask - 1;
        Some(self.base + i)
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Multiplying eight bytes of 0 or 1 by this puts byte i in bit 56 + i.
const PACK: u64 = 0x0102_0408_1020_4080;

/// Streams the records of decoded text, blank rows skipped.
///
/// A record is usually read straight from the text: its cells are slices of it
/// (a quoted cell without doubled quotes too, quotes left out). A record whose
/// quotes need more (a doubled quote, a quote inside an unquoted cell, text after
/// a closing quote) is read by `csv_core`, the parser of the `csv` crate, into a
/// buffer. Either way the records are those the `csv` crate reads (flexible, no
/// headers), and lines and offsets are those of the whole text.
pub struct Records<'t> {
    text: &'t str,
    /// Where the part being read starts and ends.
    first: usize,
    end: usize,
    /// The next byte to read, and its line.
    pos: usize,
    line: u32,
    stops: Stops<'t>,
    cells: Vec<Range<usize>>,
    /// Built when a record first needs it: building one costs as much as
    /// reading a few hundred plain records, and a plan reads many single records
    /// (see `within`) that never do.
    parser: Option<csv_core::Reader>,
    buffer: Vec<u8>,
    ends: Vec<usize>,
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
        let end = range.end.min(text.len());
        let first = range.start.min(end);
        Records {
            text,
            first,
            end,
            pos: first,
            line: first_line,
            stops: Stops::new(&text.as_bytes()[..end], delimiter, first),
            cells: Vec::new(),
            parser: None,
            buffer: Vec::new(),
            ends: Vec::new(),
        }
    }

    /// The next non-blank record.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Record<'_>> {
        let bytes = self.text.as_bytes();
        let (start, line, plain) = loop {
            // Line breaks between records, blank lines included.
            while let Some(&b) = bytes[..self.end].get(self.pos)
                && matches!(b, b'\r' | b'\n')
            {
                self.line += u32::from(ends_line(bytes, self.pos));
                self.pos += 1;
            }
            if self.pos >= self.end {
                return None;
            }
            self.stops.skip_to(self.pos);
            let (start, line) = (self.pos, self.line);
            // `csv_core` drops a byte-order mark at the start of what it reads.
            let bom = start == self.first && bytes[start..self.end].starts_with(BOM);
            let plain = !bom && self.read_plain();
            if !plain {
                self.read_escaped();
            }
            let text = self.cell_text(plain).as_bytes();
            let blank = self
                .cells
                .iter()
                .all(|r| text[r.clone()].iter().all(u8::is_ascii_whitespace));
            if !blank {
                break (start, line, plain);
            }
        };
        Some(Record {
            line,
            start,
            text: self.cell_text(plain),
            cells: &self.cells,
            quote_in_value: !plain && self.buffer.contains(&b'"'),
        })
    }

    /// The text the cells of the record just read are in.
    fn cell_text(&self, plain: bool) -> &str {
        if plain {
            self.text
        } else {
            // Unescaping takes out quotes only, so the buffer is as valid as the text.
            std::str::from_utf8(&self.buffer).unwrap_or("")
        }
    }

    /// Reads the record at `pos` straight from the text, the cells as slices of
    /// it. Returns false, having moved nothing but the stops, when the quotes of
    /// the record need unescaping.
    fn read_plain(&mut self) -> bool {
        let bytes = &self.text.as_bytes()[..self.end];
        let delimiter = self.stops.delimiter;
        self.cells.clear();
        // Where the current cell starts, and its content when it was quoted.
        let mut cell = self.pos;
        let mut quoted: Option<Range<usize>> = None;
        // Line breaks inside quoted cells.
        let mut breaks = 0;
        loop {
            let stop = self.stops.next();
            let b = stop.map(|i| bytes[i]);
            let at = stop.unwrap_or(self.end);
            if b == Some(b'"') {
                if at != cell || quoted.is_some() {
                    return false;
                }
                // The closing quote, which must end the cell.
                let close = loop {
                    match self.stops.next() {
                        Some(i) if bytes[i] == b'"' => break i,
                        Some(i) => breaks += u32::from(ends_line(self.text.as_bytes(), i)),
                        None => return false,
                    }
                };
                match bytes.get(close + 1) {
                    None => {}
                    Some(&b) if b == delimiter || matches!(b, b'\r' | b'\n') => {}
                    Some(_) => return false,
                }
                quoted = Some(at + 1..close);
                continue;
            }
            self.cells.push(quoted.take().unwrap_or(cell..at));
            if b == Some(delimiter) {
                cell = at + 1;
                continue;
            }
            // A line break, or the end of the text.
            self.pos = at;
            self.line += breaks;
            return true;
        }
    }

    /// Reads the record at `pos` with `csv_core` into `buffer`.
    fn read_escaped(&mut self) {
        use csv_core::ReadRecordResult;
        let bytes = &self.text.as_bytes()[..self.end];
        let delimiter = self.stops.delimiter;
        let parser = self
            .parser
            .get_or_insert_with(|| csv_core::ReaderBuilder::new().delimiter(delimiter).build());
        // Any record but the first follows a line break. Reading from that line
        // break (which `csv_core` skips) keeps the parser from taking a
        // byte-order mark at the start of the record for the file's.
        let from = if self.pos > self.first {
            self.pos - 1
        } else {
            self.pos
        };
        let mut input = &bytes[from..];
        let (mut out, mut nends) = (0, 0);
        self.buffer.resize(self.buffer.len().max(256), 0);
        self.ends.resize(self.ends.len().max(16), 0);
        loop {
            let (result, nin, nout, nend) =
                parser.read_record(input, &mut self.buffer[out..], &mut self.ends[nends..]);
            input = &input[nin..];
            out += nout;
            nends += nend;
            match result {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => self.buffer.resize(self.buffer.len() * 2, 0),
                ReadRecordResult::OutputEndsFull => self.ends.resize(self.ends.len() * 2, 0),
                ReadRecordResult::Record | ReadRecordResult::End => break,
            }
        }
        self.buffer.truncate(out);
        self.cells.clear();
        let mut cell = 0;
        for &end in &self.ends[..nends] {
            self.cells.push(cell..end);
            cell = end;
        }
        let to = bytes.len() - input.len();
        let breaks = line_breaks(self.text.as_bytes(), self.pos..to);
        self.line = self
            .line
            .saturating_add(u32::try_from(breaks).unwrap_or(u32::MAX));
        self.pos = to;
        self.stops.seek(to);
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
    fn a_lone_cr_ends_a_line_as_lf_and_crlf_do() {
        let got = records("a,b\rc,d\r\re,f\r\n\"g\rh\",i\rj,k");
        let lines: Vec<u32> = got.iter().map(|r| r.0).collect();
        assert_eq!(lines, [1, 2, 4, 5, 7]);
        assert_eq!(got[3].1, ["g\rh", "i"]);
        let text = b"a\rb\r\nc\nd";
        assert_eq!(line_starts(text), [0, 2, 5, 7]);
        assert_eq!(
            line_breaks(text, 0..4),
            1,
            "the CR of a CRLF cut off counts at its LF"
        );
        assert_eq!(line_breaks(text, 0..5), 2);
        assert_eq!(line_of(text, 8), 4);
        // Against a count that looks at every byte, on text with every mix of ends.
        let mixed: Vec<u8> = (0..2000u32)
            .map(|i| [b'\r', b'\n', b'a', b'\r'][(i * 7 + i / 3) as usize % 4])
            .collect();
        let slow = |r: Range<usize>| r.filter(|&i| ends_line(&mixed, i)).count();
        for r in [0..2000, 0..1, 3..700, 511..1999, 0..0] {
            assert_eq!(line_breaks(&mixed, r.clone()), slow(r.clone()), "{r:?}");
        }
    }

    /// What the `csv` crate reads (flexible, no headers), with the lines and
    /// offsets the reader reported before it read the text itself.
    fn reference(text: &str) -> Vec<(u32, usize, Vec<String>)> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(text.as_bytes());
        let mut record = csv::ByteRecord::new();
        let mut out = Vec::new();
        let mut line = 1;
        let mut counted_to = 0;
        while reader.read_byte_record(&mut record).unwrap() {
            if record.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
                continue;
            }
            let mut start = record.position().unwrap().byte() as usize;
            while matches!(text.as_bytes().get(start), Some(b'\r' | b'\n')) {
                start += 1;
            }
            // LF, CRLF and a lone CR each end a line.
            let b = text.as_bytes();
            line += (counted_to..start)
                .filter(|&i| b[i] == b'\n' || (b[i] == b'\r' && b.get(i + 1) != Some(&b'\n')))
                .count() as u32;
            counted_to = start;
            let cells = record
                .iter()
                .map(|c| String::from_utf8(c.to_vec()).unwrap())
                .collect();
            out.push((line, start, cells));
        }
        out
    }

    proptest::proptest! {
        /// Cells read straight from the text and cells unescaped by `csv_core`
        /// must together give exactly the records of the `csv` crate.
        #[test]
        fn records_are_those_of_the_csv_crate(
            text in proptest::string::string_regex("(a|é|,|\"|\r|\n| |\u{feff}){0,80}").unwrap()
        ) {
            let mut got = Vec::new();
            let mut r = Records::new(&text, b',');
            while let Some(rec) = r.next() {
                got.push((rec.line, rec.start, rec.iter().map(String::from).collect::<Vec<_>>()));
            }
            proptest::prop_assert_eq!(got, reference(&text));
        }
    }

    #[test]
    fn long_records_cross_the_blocks_of_stops() {
        let long = "x".repeat(150);
        let text = format!("{long},\"a\n{long}\",b\r\n\"q\"\"{long}\",c\n,,\n{long}");
        let mut got = Vec::new();
        let mut r = Records::new(&text, b',');
        while let Some(rec) = r.next() {
            got.push((
                rec.line,
                rec.start,
                rec.iter().map(String::from).collect::<Vec<_>>(),
            ));
        }
        assert_eq!(got, reference(&text));
    }

    #[test]
    fn pack_turns_bytes_into_bits() {
        for bits in 0..=255u8 {
            let word = u64::from_le_bytes(std::array::from_fn(|i| (bits >> i) & 1));
            assert_eq!(word.wrapping_mul(PACK) >> 56, u64::from(bits));
        }
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
    fn a_header_wider_than_the_limit_is_one_error_however_wide() {
        let wide = vec!["Extension"; 100_000];
        let e = detect_header(&wide, 1, 0..5).unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].code, e[0].line), (Code::BadHeader, Some(1)));
        assert!(e[0].message.contains("100000 cells"), "{}", e[0].message);
        // Up to the limit every bad cell is named: a surplus column is found.
        let mut some = vec![
            "Extension",
            "First Name",
            "Last Name",
            "Web Username",
            "Notes",
        ];
        some.resize(MAX_HEADER_CELLS, "");
        let e = detect_header(&some, 1, 0..5).unwrap_err();
        assert_eq!(e.len(), MAX_HEADER_CELLS - 4);
        assert_eq!(e[0].column, Some(5));
        // A first row that is mostly data is not a header, however wide.
        let mut data = vec!["1001"; 100_000];
        data[0] = "Extension";
        assert_eq!(detect_header(&data, 1, 0..5).unwrap(), None);
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
