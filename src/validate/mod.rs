//! One pass over the file: every row rule and every cross-row rule, all diagnostics
//! in line order, and the desired state built from the rows.

pub mod rules;

use crate::csv::{self as reader, Layout, ReadOptions, Record, Records};
use crate::diagnostic::{self, Code, Diagnostic, Omitted, Sink};
use crate::model::{
    Column, Desired, DesiredExtension, DesiredUser, DeviceCell, Secret, Text, USER_COLUMNS,
    cmp_extension,
};
use crate::policy::{PasswordPolicy, PlaintextPasswords};
use rayon::prelude::*;
use rules::{ExtensionRule, Problem};
use std::borrow::Cow;
use std::num::NonZeroU64;
use std::ops::Range;

/// The rules that can be configured.
#[derive(Debug, Clone)]
pub struct Policy {
    pub read: ReadOptions,
    pub password: PasswordPolicy,
    pub plaintext_passwords: PlaintextPasswords,
    pub extension: ExtensionRule,
    pub allow_apostrophes: bool,
    /// Accept a file without data rows as desired state.
    pub allow_empty: bool,
}

impl Policy {
    /// The rules of a configured policy, reading the CSV with `read`.
    pub fn new(read: ReadOptions, policy: &crate::policy::Policy) -> Policy {
        Policy {
            read,
            password: policy.password,
            plaintext_passwords: policy.plaintext_passwords,
            // The config loader has compiled the pattern once already.
            extension: ExtensionRule::new(&policy.extension_pattern)
                .unwrap_or(ExtensionRule::Default),
            allow_apostrophes: policy.allow_apostrophes,
            allow_empty: false,
        }
    }
}

/// The rules without a config: what merging rows again needs, and the
/// baseline of tests of other rules. Plaintext Password cells pass here; a
/// config's policy (`Policy::new`) reports them, as a warning by default.
impl Default for Policy {
    fn default() -> Self {
        Policy {
            read: ReadOptions::default(),
            password: PasswordPolicy::default(),
            plaintext_passwords: PlaintextPasswords::Allow,
            extension: ExtensionRule::Default,
            allow_apostrophes: false,
            allow_empty: false,
        }
    }
}

/// The outcome of validating a file.
#[derive(Debug)]
pub struct Validated<'a> {
    /// The decoded text (for rendering diagnostics against it).
    pub text: Cow<'a, str>,
    pub windows_1252: bool,
    pub delimiter: u8,
    pub layout: Layout,
    /// Number of data rows (header and blank rows excluded).
    pub rows: usize,
    /// Number of distinct users.
    pub users: usize,
    pub desired: Desired,
    /// Every row with its digest, sorted by extension (empty from `check`).
    pub index: Vec<RowRef>,
    /// Errors and warnings, in line order: at most `diagnostic::KEPT_PER_CODE` of
    /// each code, the first ones.
    pub diagnostics: Vec<Diagnostic>,
    /// How many more there were.
    pub omitted: Omitted,
}

/// A row, by extension, with the digest of what it asks for (`model::row_digest`)
/// and where it is, so that it can be read again when it turns out to matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowRef {
    pub number: Text,
    pub digest: u64,
    /// Hash of the web username: the rows of one user share it.
    pub user: u64,
    /// Hash of the Password cell, `None` when it is empty: what tells whether a
    /// user's password changed since the last applied file (`passwords_changed`).
    /// Kept in memory only, never stored.
    pub password: Option<NonZeroU64>,
    pub line: u32,
    pub start: u32,
}

impl Validated<'_> {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// The same, holding its own text: for an outcome that outlives the bytes
    /// (`adopt` refusing a file shows its diagnostics against it).
    pub fn into_owned(self) -> Validated<'static> {
        Validated {
            text: Cow::Owned(self.text.into_owned()),
            windows_1252: self.windows_1252,
            delimiter: self.delimiter,
            layout: self.layout,
            rows: self.rows,
            users: self.users,
            desired: self.desired,
            index: self.index,
            diagnostics: self.diagnostics,
            omitted: self.omitted,
        }
    }

    /// The desired state of some rows only, read again from the text: the users
    /// of `rows` merged over those rows (pass every row of each user wanted), and
    /// the extensions of the rows paired with `true`.
    pub fn subset(&self, rows: &[(&RowRef, bool)]) -> Desired {
        // Merging needs no policy: conflicts were reported by the first pass.
        let policy = Policy::default();
        let mut pass = Pass {
            policy: &policy,
            mode: Mode::Build,
            text: &self.text,
            delimiter: self.delimiter,
            layout: self.layout.clone(),
            diagnostics: Sink::default(),
        };
        // Each row is read once, for its user and its extension both, on every
        // core: a plan may read a hundred thousand rows.
        let (users, extensions): (Vec<RowUser>, Vec<Option<DesiredExtension>>) = rows
            .par_iter()
            .map(|&(row, extension)| {
                pass.reread(row.line, row.start, |rec| {
                    (
                        pass.row_user(rec, row.line, row.start),
                        extension.then(|| pass.row_extension(rec, row.line)),
                    )
                })
            })
            .unzip();
        let mut extensions: Vec<DesiredExtension> = extensions.into_iter().flatten().collect();
        extensions.sort_by(|a, b| cmp_extension(&a.number, &b.number));
        // Not sorted: `merge_users` orders keys of the rows, by username and line.
        Desired {
            managed: self.layout.managed(),
            users: pass.merge_users(users, false),
            extensions,
        }
    }
}

/// The Password cells of a file, by user (`RowRef::user`, the hash of the cell):
/// what rule 9 compares the next file with, in memory only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PasswordCells(Vec<(u64, NonZeroU64)>);

impl PasswordCells {
    fn sorted(mut cells: Vec<(u64, NonZeroU64)>) -> PasswordCells {
        cells.par_sort_unstable();
        cells.dedup();
        PasswordCells(cells)
    }

    /// The filled Password cells of a whole file (the last applied one), read as
    /// `validate` reads it but for these two cells only, without checking a
    /// rule: a file that was applied was valid. `None` when the file has no
    /// Password column (or cannot be read as a CSV at all).
    pub fn read(bytes: &[u8], read: &ReadOptions) -> Option<PasswordCells> {
        let (text, _) = reader::decode(bytes, read.encoding).ok()?;
        let text = &text.text;
        let delimiter = reader::detect_delimiter(text, read.delimiter);
        let mut records = Records::new(text, delimiter);
        let first = records.next()?;
        let cells: Vec<&str> = first.iter().collect();
        let span = reader::field_span(text, first.start, delimiter, usize::MAX);
        let (layout, body) = match reader::detect_header(&cells, first.line, span).ok()? {
            Some(layout) => (layout, records.next().map(|r| (r.line, r.start))),
            None => (Layout::default_order(), Some((first.line, first.start))),
        };
        let password = layout.position(Column::Password)?;
        let username = layout.position(Column::WebUsername)?;
        let Some((line, start)) = body else {
            return Some(PasswordCells::default());
        };
        let width = layout.columns.len();
        // The cells of one part; `None` when a quote inside a value may have
        // misled the split (see `split`), as the validating pass does.
        let part_cells = |part: &Part, watch_quotes: bool| {
            let mut cells = Vec::with_capacity(part.breaks + 1);
            let mut records = Records::within(text, part.range.clone(), delimiter, part.line);
            while let Some(rec) = records.next() {
                if watch_quotes && rec.has_quote_in_value() {
                    return None;
                }
                if rec.len() != width {
                    continue;
                }
                let (user, cell) = (cell_value(rec.get(username)), cell_value(rec.get(password)));
                if !user.is_empty() && !cell.is_empty() {
                    cells.push((hash(user), password_cell_hash(cell)));
                }
            }
            Some(cells)
        };
        let parts = split(text, start, line);
        let watch = parts.len() > 1 && text.as_bytes()[start..].contains(&b'"');
        let cells: Option<Vec<Vec<(u64, NonZeroU64)>>> = parts
            .par_iter()
            .map(|part| part_cells(part, watch))
            .collect();
        let cells = match cells {
            Some(parts) => parts.into_iter().flatten().collect(),
            None => {
                let whole = Part {
                    range: start..text.len(),
                    line,
                    breaks: parts.iter().map(|p| p.breaks).sum(),
                };
                part_cells(&whole, false).unwrap_or_default()
            }
        };
        Some(PasswordCells::sorted(cells))
    }

    /// The users (`RowRef::user`, sorted) whose filled Password cell in `rows`
    /// is not one they had here: rule 9 sets their passwords. An empty cell is
    /// no change (it never clears a password); a user new to the file with a
    /// filled cell has changed.
    pub fn changed(&self, rows: &[RowRef]) -> Vec<u64> {
        let mut users: Vec<u64> = rows
            .par_iter()
            .filter_map(|r| {
                let cell = (r.user, r.password?);
                self.0.binary_search(&cell).is_err().then_some(r.user)
            })
            .collect();
        users.par_sort_unstable();
        users.dedup();
        users
    }
}

/// The user fields of one row, before the rows of a user are merged.
struct RowUser {
    username: Text,
    fields: [Text; 5],
    password: Option<Secret>,
    line: u32,
    start: usize,
}

/// What the cross-row checks need of a row: 40 bytes, whatever the row holds.
/// Values are compared by hash first; equal hashes are confirmed by reading the
/// cells again from the text.
#[derive(Clone, Copy)]
struct RowKey {
    extension: u64,
    user: u64,
    /// Hash of the user fields and password of the row.
    fields: u64,
    /// Hash of the canonical device id; `None` when the row names no device.
    device: Option<u64>,
    line: u32,
    start: u32,
}

/// `str::trim`, without its Unicode scan for the usual cell that starts and ends
/// with a visible ASCII character.
fn trim(s: &str) -> &str {
    match (s.as_bytes().first(), s.as_bytes().last()) {
        (Some(a), Some(b)) if a.is_ascii_graphic() && b.is_ascii_graphic() => s,
        _ => s.trim(),
    }
}

/// The value of a cell: trimmed, and without the `'` that keeps a spreadsheet from
/// running it as a formula (`rules::unescape`). What that escape keeps is trimmed
/// too (`'` and a tab), as `fmt` does.
pub fn cell_value(raw: &str) -> &str {
    let trimmed = trim(raw);
    let unescaped = rules::unescape(trimmed);
    if unescaped.len() == trimmed.len() {
        trimmed
    } else {
        trim(unescaped)
    }
}

fn hash(s: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(s.as_bytes())
}

/// `RowRef::password` of a filled Password cell.
fn password_cell_hash(cell: &str) -> NonZeroU64 {
    NonZeroU64::new(hash(cell)).unwrap_or(NonZeroU64::MIN)
}

/// `RowRef::user` of the rows of `username`.
pub fn user_key(username: &str) -> u64 {
    hash(username)
}

/// How much of the rows a pass keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Only the duplicate-check keys (`validate`).
    Check,
    /// Also each row's digest and place (a plan that reads changed rows only).
    Index,
    /// Also the whole desired state.
    Build,
}

struct Pass<'p, 't> {
    policy: &'p Policy,
    mode: Mode,
    text: &'t str,
    delimiter: u8,
    layout: Layout,
    diagnostics: Sink,
}

impl Pass<'_, '_> {
    fn at(&mut self, record_line: u32, start: usize, field: usize, problem: Problem) {
        let mut sink = std::mem::take(&mut self.diagnostics);
        self.report(&mut sink, record_line, start, field, problem);
        self.diagnostics = sink;
    }

    fn report(
        &self,
        sink: &mut Sink,
        record_line: u32,
        start: usize,
        field: usize,
        problem: Problem,
    ) {
        sink.push(self.diagnostic(record_line, start, field, problem));
    }

    /// The error for `problem` in field `field` of the record at `start`.
    fn diagnostic(
        &self,
        record_line: u32,
        start: usize,
        field: usize,
        problem: Problem,
    ) -> Diagnostic {
        let span = reader::field_span(self.text, start, self.delimiter, field);
        Diagnostic {
            line: Some(record_line),
            column: Some(u32::try_from(field + 1).unwrap_or(u32::MAX)),
            span: Some(span),
            hint: problem.hint,
            ..Diagnostic::error(problem.code, problem.message)
        }
    }

    /// Warns about a free-text cell that a spreadsheet would run as a formula
    /// (the file does not write it with the escape).
    #[cold]
    fn formula_like(
        &self,
        sink: &mut Sink,
        rec: &Record<'_>,
        field: usize,
        column: Column,
        value: &str,
    ) {
        if let Err(problem) = rules::formula_like(column.header(), value) {
            sink.push(Diagnostic {
                severity: diagnostic::Severity::Warning,
                ..self.diagnostic(rec.line, rec.start, field, problem)
            });
        }
    }

    /// Reports a Password cell that holds the password itself, as
    /// `policy.plaintext_passwords` says. A file of plaintext cells has one on
    /// every row: past the first `KEPT_PER_CODE` of a part (rows come in line
    /// order) each is only counted, not made.
    fn plaintext_password(&self, sink: &mut Sink, rec: &Record<'_>, field: usize) {
        let severity = match self.policy.plaintext_passwords {
            PlaintextPasswords::Allow => return,
            PlaintextPasswords::Warn => diagnostic::Severity::Warning,
            PlaintextPasswords::Error => diagnostic::Severity::Error,
        };
        if sink.omits(severity, Code::PlaintextPassword) {
            return;
        }
        sink.push(Diagnostic {
            severity,
            ..self.diagnostic(rec.line, rec.start, field, rules::plaintext_password())
        });
    }

    /// Checks one data row; returns its extension and user when it has the keys.
    #[allow(clippy::type_complexity)]
    fn row(
        &self,
        rec: &Record<'_>,
        sink: &mut Sink,
    ) -> Option<(RowKey, Option<(DesiredExtension, RowUser)>, Sighting)> {
        let expected = self.layout.columns.len();
        if rec.len() != expected {
            let n = rec.len();
            let span = reader::field_span(self.text, rec.start, self.delimiter, usize::MAX);
            sink.push(
                Diagnostic::error(
                    Code::WrongColumnCount,
                    format!(
                        "this row has {n} column{}, expected {expected}",
                        if n == 1 { "" } else { "s" }
                    ),
                )
                .at_line(rec.line)
                .with_span(span)
                .with_hint(if n > expected {
                    "a cell with a comma must be in double quotes: \"Conference room, 2nd floor\""
                } else if n == 1 {
                    "the row is one cell: when the file is separated by tabs or semicolons, set `delimiter` in pbxsync.yaml"
                } else {
                    "every row needs all the columns, empty ones included (commas with nothing between)"
                }),
            );
            return None;
        }
        // Borrowed from the record; owned copies are made only for a desired state.
        let mut extension = "";
        let mut username = "";
        let mut user = [""; 5];
        let mut password = None;
        let mut description = "";
        let mut device = DeviceCell::Keep;
        let mut keys_ok = true;
        for i in 0..expected {
            let column = self.layout.columns[i];
            let raw = rec.get(i);
            let trimmed = trim(raw);
            // Written with the formula escape (`'=…`): then the warning below is
            // settled. Only a cell that starts with `'` is looked at further.
            let (value, escaped) = if trimmed.as_bytes().first() == Some(&b'\'') {
                let value = cell_value(trimmed);
                (value, value.len() != trimmed.len())
            } else {
                (trimmed, false)
            };
            if trimmed.len() != raw.len() || (escaped && value.len() + 1 != trimmed.len()) {
                self.report(
                    sink,
                    rec.line,
                    rec.start,
                    i,
                    Problem {
                        code: Code::Whitespace,
                        message: format!("{} has leading or trailing whitespace", column.header()),
                        hint: Some(
                            "remove the spaces around the value, or run `pbxsync fmt`".into(),
                        ),
                    },
                );
            }
            if value.is_empty() {
                if column.required() {
                    keys_ok &= !matches!(column, Column::Extension | Column::WebUsername);
                    self.report(
                        sink,
                        rec.line,
                        rec.start,
                        i,
                        Problem {
                            code: Code::MissingRequired,
                            message: format!("{} is required", column.header()),
                            hint: Some(format!("fill in the {} of this row", column.header())),
                        },
                    );
                }
                continue;
            }
            let checked = match column {
                Column::Extension => {
                    extension = value;
                    self.policy.extension.check(value)
                }
                Column::WebUsername => {
                    username = value;
                    rules::username(value)
                }
                Column::FirstName | Column::LastName => {
                    rules::name(column.header(), value, self.policy.allow_apostrophes)
                }
                Column::Password => {
                    password = Some(value);
                    if rules::is_phc(value) {
                        rules::phc(value)
                    } else {
                        self.plaintext_password(sink, rec, i);
                        rules::password(value, &self.policy.password)
                    }
                }
                Column::Description | Column::Email | Column::Im => {
                    if !escaped
                        && value
                            .as_bytes()
                            .first()
                            .is_some_and(|&b| rules::is_formula_start(b))
                    {
                        self.formula_like(sink, rec, i, column, value);
                    }
                    match column {
                        Column::Description => {
                            description = value;
                            Ok(())
                        }
                        Column::Email => rules::email(value),
                        _ => Ok(()),
                    }
                }
                Column::Mobile => rules::mobile(value),
                Column::Device => rules::device(value).map(|d| device = d),
            };
            if let Some(k) = USER_COLUMNS.iter().position(|c| *c == column) {
                user[k] = value;
            }
            if let Err(problem) = checked {
                self.report(sink, rec.line, rec.start, i, problem);
            }
        }
        if !keys_ok {
            return None;
        }
        // One short hash per field, each taken once: combined for the checks'
        // keys and for the row's digest.
        let user_hashes = user.map(hash);
        let password_hash = password.map(hash);
        let fields = user_hashes
            .into_iter()
            .chain(password_hash)
            .fold(0u64, |h, f| {
                h.rotate_left(17) ^ f.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            });
        let extension_hash = hash(extension);
        let user_hash = hash(username);
        let device_hash = hash(crate::model::device_cell_text(&device));
        let key = RowKey {
            extension: extension_hash,
            user: user_hash,
            fields,
            device: match &device {
                DeviceCell::Device(_) => Some(device_hash),
                _ => None,
            },
            line: rec.line,
            start: u32::try_from(rec.start).unwrap_or(u32::MAX),
        };
        let sighting = Sighting {
            digest: if self.mode == Mode::Check {
                0
            } else {
                crate::model::row_digest_of_hashes(
                    extension_hash,
                    user_hash,
                    user_hashes,
                    hash(description),
                    device_hash,
                )
            },
            password: password.map(password_cell_hash),
            extension: Text::from(extension),
            device: match &device {
                DeviceCell::Device(id) => Some(id.clone()),
                _ => None,
            },
        };
        let parts = (self.mode == Mode::Build).then(|| {
            (
                DesiredExtension {
                    number: Text::from(extension),
                    username: Text::from(username),
                    description: Text::from(description),
                    device,
                    line: rec.line,
                },
                RowUser {
                    username: Text::from(username),
                    fields: user.map(Text::from),
                    password: password.map(Secret::new),
                    line: rec.line,
                    start: rec.start,
                },
            )
        });
        Some((key, parts, sighting))
    }

    /// Reads the record that starts at `start` (on `line`) again and hands it to
    /// `f`: straight from the text, like the first pass, so that a record costs
    /// about what it cost then. `None` cannot happen for a record the first pass
    /// found; it reads as a record of empty cells.
    fn reread<T>(&self, line: u32, start: u32, f: impl FnOnce(Option<&Record<'_>>) -> T) -> T {
        let start = start as usize;
        let mut records = Records::within(self.text, start..self.text.len(), self.delimiter, line);
        f(records.next().as_ref())
    }

    /// The canonical value of `column` in the record at `start`.
    fn cell(&self, line: u32, start: u32, column: Column) -> String {
        let raw = self.reread(line, start, |rec| {
            cell_value(rec.map_or("", |r| r.get(self.field_of(column)))).to_string()
        });
        let raw = raw.as_str();
        match column {
            Column::Device => match rules::device(raw) {
                Ok(DeviceCell::Device(id)) => id.to_string(),
                _ => raw.to_string(),
            },
            _ => raw.to_string(),
        }
    }

    /// Reports the second and later rows of every value that appears more than once.
    fn duplicates(&mut self, mut keys: Vec<(u64, u32, u32)>, column: Column) {
        keys.par_sort_unstable();
        let mut i = 0;
        while i < keys.len() {
            let mut j = i + 1;
            while j < keys.len() && keys[j].0 == keys[i].0 {
                j += 1;
            }
            if j - i > 1 {
                // Equal hashes: confirm with the values (rows in line order).
                let mut seen: Vec<(String, u32)> = Vec::new();
                for &(_, line, start) in &keys[i..j] {
                    let value = self.cell(line, start, column);
                    match seen.iter().find(|(v, _)| *v == value) {
                        Some((_, first)) => {
                            let problem = match column {
                                Column::Extension => Problem {
                                    code: Code::DuplicateExtension,
                                    message: format!("extension {value} is also on line {first}"),
                                    hint: Some("an extension can appear once; remove one of the two rows".into()),
                                },
                                _ => Problem {
                                    code: Code::DuplicateDevice,
                                    message: format!("device {value} is also assigned on line {first}"),
                                    hint: Some(
                                        "a device rings one extension; give one of the rows another device, `virtual`, or nothing"
                                            .into(),
                                    ),
                                },
                            };
                            let field = self.field_of(column);
                            self.at(line, start as usize, field, problem);
                        }
                        None => seen.push((value, line)),
                    }
                }
            }
            i = j;
        }
    }

    /// Rows of one user must agree where they are filled in. Only users whose rows
    /// differ at all are read again.
    /// Returns the number of users.
    fn conflicting_users(&mut self, mut keys: Vec<(u64, u32, u32, u64)>) -> usize {
        // By user only: the rows of a user are merged in line order whatever
        // order they come in.
        keys.par_sort_unstable_by_key(|k| k.0);
        let mut i = 0;
        let mut users = 0;
        while i < keys.len() {
            let mut j = i + 1;
            while j < keys.len() && keys[j].0 == keys[i].0 {
                j += 1;
            }
            if j - i > 1 && keys[i..j].iter().any(|k| k.3 != keys[i].3) {
                let rows: Vec<RowUser> = keys[i..j]
                    .iter()
                    .map(|&(_, line, start, _)| {
                        self.reread(line, start, |rec| self.row_user(rec, line, start))
                    })
                    .collect();
                users += self.merge_users(rows, true).len();
            } else {
                users += 1;
            }
            i = j;
        }
        users
    }

    fn row_extension(&self, rec: Option<&Record<'_>>, line: u32) -> DesiredExtension {
        let get = |c: Column| cell_value(rec.map_or("", |r| r.get(self.field_of(c))));
        DesiredExtension {
            number: Text::from(get(Column::Extension)),
            username: Text::from(get(Column::WebUsername)),
            description: Text::from(get(Column::Description)),
            device: rules::device(get(Column::Device)).unwrap_or(DeviceCell::Keep),
            line,
        }
    }

    fn row_user(&self, rec: Option<&Record<'_>>, line: u32, start: u32) -> RowUser {
        let get = |c: Column| Text::from(cell_value(rec.map_or("", |r| r.get(self.field_of(c)))));
        let password = get(Column::Password);
        RowUser {
            username: get(Column::WebUsername),
            fields: USER_COLUMNS.map(get),
            password: (!password.is_empty()).then(|| Secret::new(&password)),
            line,
            start: start as usize,
        }
    }

    fn field_of(&self, column: Column) -> usize {
        self.layout.position(column).unwrap_or(usize::MAX)
    }

    /// The desired extensions, sorted, the first of duplicates kept (duplicates
    /// were reported from the keys).
    fn sorted_extensions(mut extensions: Vec<DesiredExtension>) -> Vec<DesiredExtension> {
        // Files are usually sorted already; then this is one linear check.
        if !extensions.is_sorted_by(|a, b| cmp_extension(&a.number, &b.number).is_le()) {
            extensions
                .par_sort_by(|a, b| cmp_extension(&a.number, &b.number).then(a.line.cmp(&b.line)));
        }
        extensions.dedup_by(|later, earlier| later.number == earlier.number);
        extensions
    }

    /// Merges the rows of each user; filled-in fields must agree.
    fn merge_users(&mut self, mut rows: Vec<RowUser>, report: bool) -> Vec<DesiredUser> {
        // Sort keys, not the rows themselves: a row is ~180 bytes to move, and
        // comparing rows through their positions reads two rows from all over
        // memory at every comparison (0.28-0.34 s for a million rows, against
        // 0.08-0.10 s for the keys). A key holds the username (inline up to 24
        // bytes), its line and the row's position; (username, line) is unique.
        let mut order: Vec<(Text, u32, u32)> = rows
            .iter()
            .zip(0..u32::try_from(rows.len()).unwrap_or(u32::MAX))
            .map(|(row, i)| (row.username.clone(), row.line, i))
            .collect();
        order.par_sort_unstable();
        let mut users: Vec<DesiredUser> = Vec::with_capacity(rows.len());
        let mut first_lines = [0u32; 5];
        let mut password_line = 0u32;
        for (_, _, i) in order {
            let row = std::mem::replace(
                &mut rows[i as usize],
                RowUser {
                    username: Text::default(),
                    fields: Default::default(),
                    password: None,
                    line: 0,
                    start: 0,
                },
            );
            let same = users.last().is_some_and(|u| u.username == row.username);
            if !same {
                first_lines = [row.line; 5];
                password_line = row.line;
                users.push(DesiredUser {
                    username: row.username,
                    fields: row.fields,
                    password: row.password,
                    line: row.line,
                });
                continue;
            }
            let Some(user) = users.last_mut() else {
                continue;
            };
            let mut conflicts = Vec::new();
            for (k, value) in row.fields.into_iter().enumerate() {
                if value.is_empty() {
                    continue;
                }
                if user.fields[k].is_empty() {
                    user.fields[k] = value;
                    first_lines[k] = row.line;
                } else if user.fields[k] != value {
                    conflicts.push((
                        USER_COLUMNS[k],
                        format!(
                            "{} of user {} is `{}` here but `{}` on line {}",
                            USER_COLUMNS[k].header(),
                            user.username,
                            value,
                            user.fields[k],
                            first_lines[k]
                        ),
                    ));
                }
            }
            match (&user.password, row.password) {
                (None, Some(p)) => {
                    user.password = Some(p);
                    password_line = row.line;
                }
                (Some(a), Some(b)) if *a != b => conflicts.push((
                    Column::Password,
                    format!(
                        "the password of user {} differs from the one on line {password_line}",
                        user.username
                    ),
                )),
                _ => {}
            }
            for (column, message) in conflicts.into_iter().filter(|_| report) {
                let problem = Problem {
                    code: Code::ConflictingUserFields,
                    message,
                    hint: Some("rows of one user must agree; fill the field in once, or make the rows equal".into()),
                };
                let field = self.field_of(column);
                self.at(row.line, row.start, field, problem);
            }
        }
        users
    }
}

/// A part of the data rows that one thread reads.
pub(crate) struct Part {
    pub(crate) range: Range<usize>,
    /// The line the part begins on.
    pub(crate) line: u32,
    /// Its line breaks: at most one record fewer than it holds, so the part's
    /// vectors are sized once instead of growing (and copying) as rows come.
    breaks: usize,
}

/// Splits the data rows (from `start`, on line `line`) into parts that can be read
/// on separate threads, each beginning where a record begins, with its first line.
///
/// A part ends at a line break with an even number of quotes before it: outside
/// any quoted field, as long as every quote opens or closes a quoted field. A quote
/// inside a value (escaped, or in an unquoted field) breaks that rule, so the
/// reader reports one and the caller reads the rows again in one piece.
pub(crate) fn split(text: &str, start: usize, line: u32) -> Vec<Part> {
    const PART: usize = 1 << 20;
    let bytes = text.as_bytes();
    let threads = rayon::current_num_threads().max(1);
    let size = ((bytes.len() - start) / (threads * 4)).max(PART);
    // Quote parity at evenly spaced targets, counted in parallel.
    let targets: Vec<usize> = (1..)
        .map(|k| start + k * size)
        .take_while(|&t| t < bytes.len())
        .collect();
    let counts: Vec<usize> = targets
        .par_iter()
        .enumerate()
        .map(|(k, &t)| {
            crate::csv::count_byte(
                &bytes[targets.get(k.wrapping_sub(1)).copied().unwrap_or(start)..t],
                b'"',
            )
        })
        .collect();
    let mut cuts = Vec::with_capacity(targets.len());
    let mut quotes = 0usize;
    for (&t, &n) in targets.iter().zip(&counts) {
        quotes += n;
        // From the target, the first line break with an even number of quotes
        // before it (usually the end of the target's own line).
        let mut odd = quotes % 2 == 1;
        for (i, &b) in bytes[t..].iter().enumerate() {
            match b {
                b'"' => odd = !odd,
                b'\n' if !odd => {
                    cuts.push(t + i + 1);
                    break;
                }
                _ => {}
            }
        }
    }
    cuts.retain(|&c| c < bytes.len());
    cuts.dedup();
    let mut bounds = vec![start];
    bounds.extend(cuts.into_iter().filter(|&c| c > start));
    bounds.dedup();
    bounds.push(bytes.len());
    let ranges: Vec<Range<usize>> = bounds.windows(2).map(|w| w[0]..w[1]).collect();
    // The first line of each part: the line breaks before it, counted in parallel.
    let breaks: Vec<usize> = ranges
        .par_iter()
        .map(|r| crate::csv::line_breaks(bytes, r.clone()))
        .collect();
    let mut first = u64::from(line);
    ranges
        .into_iter()
        .zip(breaks)
        .map(|(range, breaks)| {
            let line = u32::try_from(first).unwrap_or(u32::MAX);
            first += breaks as u64;
            Part {
                range,
                line,
                breaks,
            }
        })
        .collect()
}

/// The values of a row that the duplicate checks can often settle by order alone.
struct Sighting {
    digest: u64,
    password: Option<NonZeroU64>,
    extension: Text,
    device: Option<Text>,
}

/// Whether values arrive strictly increasing: then none can repeat, and the
/// duplicate check needs no sort (files are usually sorted by extension).
struct Order {
    increasing: bool,
    first: Option<Text>,
    last: Option<Text>,
}

impl Default for Order {
    fn default() -> Self {
        Order {
            increasing: true,
            first: None,
            last: None,
        }
    }
}

impl Order {
    fn see(&mut self, value: &str, cmp: fn(&str, &str) -> std::cmp::Ordering) {
        match &mut self.last {
            Some(last) => {
                self.increasing &= cmp(last, value).is_lt();
                last.clear();
                last.push_str(value);
            }
            None => {
                self.first = Some(Text::from(value));
                self.last = Some(Text::from(value));
            }
        }
    }

    /// Joins the orders of consecutive batches.
    fn then(mut self, next: &Order, cmp: fn(&str, &str) -> std::cmp::Ordering) -> Order {
        match (&self.last, &next.first) {
            (_, None) => return self,
            (Some(a), Some(b)) => self.increasing &= next.increasing && cmp(a, b).is_lt(),
            (None, Some(_)) => {
                self.increasing &= next.increasing;
                self.first.clone_from(&next.first);
            }
        }
        self.last.clone_from(&next.last);
        self
    }
}

#[derive(Default)]
struct BatchOutput {
    index: Vec<RowRef>,
    rows: usize,
    /// A value held a quote (see `split`).
    quote_in_value: bool,
    extension_order: Order,
    device_order: Order,
    keys: Vec<RowKey>,
    extensions: Vec<DesiredExtension>,
    users: Vec<RowUser>,
    diagnostics: Sink,
}

impl Pass<'_, '_> {
    /// Reads and checks the records of one part of the text.
    fn chunk(&self, part: &Part, watch_quotes: bool) -> BatchOutput {
        let rows = part.breaks + 1;
        let keep = |kept: bool| if kept { rows } else { 0 };
        let mut out = BatchOutput {
            index: Vec::with_capacity(keep(self.mode != Mode::Check)),
            keys: Vec::with_capacity(rows),
            extensions: Vec::with_capacity(keep(self.mode == Mode::Build)),
            users: Vec::with_capacity(keep(self.mode == Mode::Build)),
            ..BatchOutput::default()
        };
        let mut records = Records::within(self.text, part.range.clone(), self.delimiter, part.line);
        while let Some(rec) = records.next() {
            out.rows += 1;
            if watch_quotes && rec.has_quote_in_value() {
                out.quote_in_value = true;
                break;
            }
            if let Some((key, parts, sighting)) = self.row(&rec, &mut out.diagnostics) {
                out.extension_order.see(&sighting.extension, cmp_extension);
                if let Some(d) = &sighting.device {
                    out.device_order.see(d, str::cmp);
                }
                if self.mode != Mode::Check {
                    out.index.push(RowRef {
                        number: sighting.extension,
                        digest: sighting.digest,
                        user: key.user,
                        password: sighting.password,
                        line: key.line,
                        start: key.start,
                    });
                }
                out.keys.push(key);
                if let Some((ext, user)) = parts {
                    out.extensions.push(ext);
                    out.users.push(user);
                }
            }
        }
        out
    }
}

/// Reads and checks a whole file and builds the desired state. Never panics,
/// whatever the bytes.
pub fn validate<'a>(bytes: &'a [u8], policy: &Policy) -> Validated<'a> {
    run(bytes, policy, Mode::Build)
}

/// Reads and checks a whole file and keeps each row's digest and place
/// (`index`), not the rows: see `subset`.
pub fn index<'a>(bytes: &'a [u8], policy: &Policy) -> Validated<'a> {
    run(bytes, policy, Mode::Index)
}

/// Reads and checks a whole file without keeping its rows: memory holds only the
/// duplicate-check indexes (`desired` stays empty).
pub fn check<'a>(bytes: &'a [u8], policy: &Policy) -> Validated<'a> {
    run(bytes, policy, Mode::Check)
}

fn run<'a>(bytes: &'a [u8], policy: &Policy, mode: Mode) -> Validated<'a> {
    let build = mode == Mode::Build;
    let mut diagnostics = Sink::default();
    let text = match reader::decode(bytes, policy.read.encoding) {
        Ok((text, warning)) => {
            diagnostics.extend(warning);
            text
        }
        Err(error) => {
            return Validated {
                text: Cow::Borrowed(""),
                windows_1252: false,
                delimiter: b',',
                layout: Layout::default_order(),
                rows: 0,
                users: 0,
                desired: Desired::default(),
                index: Vec::new(),
                diagnostics: vec![error],
                omitted: Omitted::default(),
            };
        }
    };
    let delimiter = reader::detect_delimiter(&text.text, policy.read.delimiter);
    let (layout, rows, user_count, extensions, users, index, diagnostics) = {
        let mut pass = Pass {
            policy,
            mode,
            text: &text.text,
            delimiter,
            layout: Layout::default_order(),
            diagnostics,
        };
        let mut records = Records::new(&text.text, delimiter);
        let mut rows = 0usize;
        // The first record, read as a possible header.
        let first = records.next().map(|rec| {
            let cells: Vec<&str> = rec.iter().collect();
            let span = reader::field_span(&text.text, rec.start, delimiter, usize::MAX);
            (
                rec.line,
                rec.start,
                reader::detect_header(&cells, rec.line, span),
            )
        });
        // Where the data rows begin, and on which line.
        let mut body = None;
        if let Some((line, start, header)) = first {
            match header {
                Ok(Some(layout)) => {
                    pass.layout = layout;
                    body = records.next().map(|rec| (rec.line, rec.start));
                }
                Ok(None) => body = Some((line, start)),
                // Without a usable header the rows cannot be read reliably.
                Err(errors) => pass.diagnostics.extend(errors),
            }
        }
        let mut outputs = Vec::new();
        if let Some((line, start)) = body {
            let chunks = split(&text.text, start, line);
            let has_quotes = text.text.as_bytes()[start..].contains(&b'"');
            outputs = chunks
                .par_iter()
                .map(|part| pass.chunk(part, has_quotes && chunks.len() > 1))
                .collect();
            if outputs.iter().any(|o| o.quote_in_value) {
                // A quote inside a value may have misled the split (see `split`):
                // read the rows again in one piece, which is always right.
                let whole = Part {
                    range: start..text.text.len(),
                    line,
                    breaks: chunks.iter().map(|p| p.breaks).sum(),
                };
                outputs = vec![pass.chunk(&whole, false)];
            }
        }
        // Sized once, so the vectors never move while growing.
        let total: usize = outputs.iter().map(|o| o.keys.len()).sum();
        // The keys stay in their parts: the checks below walk them in order.
        let mut keys: Vec<Vec<RowKey>> = Vec::with_capacity(outputs.len());
        let mut extensions = Vec::with_capacity(if build { total } else { 0 });
        let mut users = Vec::with_capacity(if build { total } else { 0 });
        let mut index = Vec::with_capacity(if mode == Mode::Check { 0 } else { total });
        let mut extension_order = Order::default();
        let mut device_order = Order::default();
        for out in outputs {
            rows += out.rows;
            extension_order = extension_order.then(&out.extension_order, cmp_extension);
            device_order = device_order.then(&out.device_order, str::cmp);
            keys.push(out.keys);
            index.extend(out.index);
            extensions.extend(out.extensions);
            users.extend(out.users);
            pass.diagnostics.append(out.diagnostics);
        }
        let all = || keys.iter().flatten();
        if !extension_order.increasing {
            pass.duplicates(
                all().map(|k| (k.extension, k.line, k.start)).collect(),
                Column::Extension,
            );
        }
        if !device_order.increasing {
            pass.duplicates(
                all()
                    .filter_map(|k| k.device.map(|d| (d, k.line, k.start)))
                    .collect(),
                Column::Device,
            );
        }
        let user_count =
            pass.conflicting_users(all().map(|k| (k.user, k.line, k.start, k.fields)).collect());
        drop(keys);
        let users = pass.merge_users(users, false);
        let extensions = Pass::sorted_extensions(extensions);
        if !extension_order.increasing {
            index.par_sort_by(|a: &RowRef, b: &RowRef| {
                cmp_extension(&a.number, &b.number).then(a.line.cmp(&b.line))
            });
            index.dedup_by(|later, earlier| later.number == earlier.number);
        }
        (
            pass.layout,
            rows,
            user_count,
            extensions,
            users,
            index,
            pass.diagnostics,
        )
    };
    let (mut diagnostics, omitted) = diagnostics.finish();
    if rows == 0 && !policy.allow_empty && !diagnostics.iter().any(|d| d.code == Code::BadHeader) {
        diagnostics.push(
            Diagnostic::error(
                Code::EmptyDesiredState,
                "the file has no data rows; an empty desired state would mean removing everything",
            )
            .with_hint("if the directory really should be empty, pass --allow-empty"),
        );
    }
    diagnostic::sort(&mut diagnostics);
    let desired = Desired {
        managed: layout.managed(),
        users,
        extensions,
    };
    Validated {
        text: text.text,
        windows_1252: text.windows_1252,
        delimiter,
        layout,
        rows,
        users: user_count,
        desired,
        index,
        diagnostics,
        omitted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "Extension,First Name,Last Name,Web Username,Password,Description,Email,IM,Mobile,Device MAC Address\n";

    fn check(csv: &str) -> Validated<'_> {
        validate(csv.as_bytes(), &Policy::default())
    }

    fn codes(v: &Validated<'_>) -> Vec<(Option<u32>, Option<u32>, &'static str)> {
        v.diagnostics
            .iter()
            .map(|d| (d.line, d.column, d.code.as_str()))
            .collect()
    }

    #[test]
    fn a_valid_file_gives_the_desired_state() {
        let csv = format!(
            "{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,\"Sales, desk\",jason@example.com,,+1 555 0100,00:04:f2:12:34:56\n\
             1002,Jason,Flynn,jflynn,,,,,,virtual\n1003,Zoë,Berg,zberg,Sec_ret34,,,,,\n"
        );
        let v = check(&csv);
        assert!(v.diagnostics.is_empty(), "{:?}", v.diagnostics);
        assert_eq!(v.rows, 3);
        assert_eq!(v.desired.users.len(), 2);
        let jflynn = v.desired.user("jflynn").unwrap();
        assert_eq!(jflynn.field(Column::Email), "jason@example.com");
        assert_eq!(jflynn.line, 2);
        let e = v.desired.extension("1001").unwrap();
        assert_eq!(e.device, DeviceCell::Device("0004F2123456".into()));
        assert_eq!(e.description, "Sales, desk");
        assert_eq!(
            v.desired.extension("1002").unwrap().device,
            DeviceCell::Virtual
        );
        assert_eq!(
            v.desired.extension("1003").unwrap().device,
            DeviceCell::Keep
        );
    }

    #[test]
    fn password_cells_tell_which_users_changed_theirs() {
        let before = format!(
            "{HEADER}1001,Ann,Lee,alee,Sec_ret12,,,,,\n1002,Bob,Ray,bray,\"Sec_ret34\",,,,,\n\
             1003,Bob,Ray,bray,,,,,,\n1004,Cy,Fox,cfox,Sec_ret56,,,,,\n"
        );
        let read = ReadOptions::default();
        let cells = PasswordCells::read(before.as_bytes(), &read).unwrap();
        let before = check(&before);
        // Ann's cell changes, Bob's moves to his other row, Cy's is emptied, Di is new.
        let after = format!(
            "{HEADER}1001,Ann,Lee,alee,Sec_ret99,,,,,\n1002,Bob,Ray,bray,,,,,,\n\
             1003,Bob,Ray,bray,Sec_ret34,,,,,\n1004,Cy,Fox,cfox,,,,,,\n\
             1005,Di,Ng,dng,Sec_ret78,,,,,\n"
        );
        let after = check(&after);
        let mut expected = vec![user_key("alee"), user_key("dng")];
        expected.sort_unstable();
        assert_eq!(cells.changed(&after.index), expected);
        assert_eq!(cells.changed(&before.index), Vec::<u64>::new());
        // Against a file without cells, every filled cell has changed.
        assert_eq!(PasswordCells::default().changed(&before.index).len(), 3);
        // Without a Password column, there are no cells to compare with; without
        // a header, the columns are in their order.
        let without = "Extension,First Name,Last Name,Web Username\n1001,Ann,Lee,alee\n";
        assert_eq!(PasswordCells::read(without.as_bytes(), &read), None);
        let headless = "1001,Ann,Lee,alee,Sec_ret99,,,,,\n";
        let mut expected = vec![user_key("bray"), user_key("dng")];
        expected.sort_unstable();
        assert_eq!(
            PasswordCells::read(headless.as_bytes(), &read)
                .unwrap()
                .changed(&after.index),
            expected
        );
    }

    #[test]
    fn password_cells_of_a_large_file_read_in_parts_as_in_one_piece() {
        let mut text = String::from(HEADER);
        for i in 0..60_000u32 {
            text.push_str(&format!("{},F,L,u{i},Sec_ret{i:05},,,,,\n", 10_000 + i));
        }
        let read = ReadOptions::default();
        let parts = PasswordCells::read(text.as_bytes(), &read).unwrap();
        // A quote inside a value makes the file read in one piece.
        let quoted = text.replacen(",,,,,\n", ",a\"\"b,,,,\n", 1);
        let whole = PasswordCells::read(quoted.as_bytes(), &read).unwrap();
        assert_eq!(parts, whole);
        assert_eq!(parts.changed(&check(&text).index), Vec::<u64>::new());
    }

    #[test]
    fn each_row_carries_the_digest_of_its_own_cells() {
        let csv = format!(
            "{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,\"Sales, desk\",jason@example.com,jf,+1 555 0100,00:04:f2:12:34:56\n\
             1002,Jason,Flynn,jflynn,,,,,,virtual\n1003,Zoë,Berg,zberg,Sec_ret34,,,,,\n"
        );
        let v = check(&csv);
        assert!(v.diagnostics.is_empty(), "{:?}", v.diagnostics);
        let digests: Vec<(&str, u64)> = v.index.iter().map(|r| (&*r.number, r.digest)).collect();
        let expected = [
            (
                "1001",
                crate::model::row_digest(
                    "1001",
                    "jflynn",
                    ["Jason", "Flynn", "jason@example.com", "jf", "+1 555 0100"],
                    "Sales, desk",
                    &DeviceCell::Device("0004F2123456".into()),
                ),
            ),
            (
                "1002",
                crate::model::row_digest(
                    "1002",
                    "jflynn",
                    ["Jason", "Flynn", "", "", ""],
                    "",
                    &DeviceCell::Virtual,
                ),
            ),
            (
                "1003",
                crate::model::row_digest(
                    "1003",
                    "zberg",
                    ["Zoë", "Berg", "", "", ""],
                    "",
                    &DeviceCell::Keep,
                ),
            ),
        ];
        assert_eq!(digests, expected);
        // The password is not part of it; every other cell is.
        let other_password = csv.replace("Sec_ret34", "Sec_ret56");
        assert_eq!(check(&other_password).index[2].digest, expected[2].1);
        let other_im = csv.replace(",jf,", ",jfl,");
        assert_ne!(check(&other_im).index[0].digest, expected[0].1);
    }

    #[test]
    fn header_or_not_gives_the_same_desired_state() {
        let body = "1001,Jason,Flynn,jflynn,Sec_ret12,,,,,virtual\n";
        let with = check(&format!("{HEADER}{body}")).desired;
        let without = check(body).desired;
        assert_eq!(with.users[0].fields, without.users[0].fields);
        assert_eq!(with.users[0].password, without.users[0].password);
        assert_eq!(with.extensions.len(), 1);
        assert_eq!(with.extensions[0].number, without.extensions[0].number);
    }

    #[test]
    fn a_header_may_reorder_and_leave_out_optional_columns() {
        let v = check("Web Username;Extension;Last Name;First Name\njflynn;1001;Flynn;Jason\n");
        assert!(v.diagnostics.is_empty(), "{:?}", v.diagnostics);
        assert!(!v.desired.managed.contains(Column::Email));
        assert!(v.desired.managed.contains(Column::WebUsername));
        assert_eq!(v.desired.extensions[0].username, "jflynn");
    }

    #[test]
    fn every_row_rule_reports_line_and_column() {
        let csv = format!(
            "{HEADER}1001,Jason ,Flynn,jflynn,Sec_ret12,,,,,\n\
             1x,Maria,O'Brien,MGarcia,secret12,,maria@,,call me,00:04:F2:12:34\n\
             1003,,Chen,wchen,Sec_ret12,,,,,\n1004,Aisha,Khan\n"
        );
        let v = check(&csv);
        assert_eq!(
            codes(&v),
            [
                (Some(2), Some(2), "whitespace"),
                (Some(3), Some(1), "bad-extension"),
                (Some(3), Some(3), "name-apostrophe"),
                (Some(3), Some(4), "bad-username"),
                (Some(3), Some(5), "password-policy"),
                (Some(3), Some(7), "bad-email"),
                (Some(3), Some(9), "bad-mobile"),
                (Some(3), Some(10), "bad-device"),
                (Some(4), Some(2), "missing-required"),
                (Some(5), None, "wrong-column-count"),
            ]
        );
        assert!(
            v.diagnostics
                .iter()
                .all(|d| !d.message.contains("secret12"))
        );
        assert!(v.diagnostics[9].message.contains("3 columns, expected 10"));
    }

    #[test]
    fn formula_like_cells_and_their_escape() {
        let csv = format!(
            "{HEADER}1001,=cmd,-Chen,jflynn,Sec_ret12,=SUM(A1),-j@example.com,@home,+1 555 0100,\n\
             1002,Wei,Chen,wchen,'=Sec_ret12,'=SUM(A1),'-j@example.com,'@home,'+1 555,\n\
             1003,'=x,Lee,alee,Sec_ret12,''=y,,'\tz,,\n"
        );
        let v = check(&csv);
        assert_eq!(
            codes(&v),
            [
                (Some(2), Some(2), "bad-name"),
                (Some(2), Some(3), "bad-name"),
                (Some(2), Some(6), "formula-like-cell"),
                (Some(2), Some(7), "formula-like-cell"),
                (Some(2), Some(8), "formula-like-cell"),
                // The escape keeps the value: still not a name.
                (Some(4), Some(2), "bad-name"),
                // What `'` keeps is trimmed like any cell.
                (Some(4), Some(8), "whitespace"),
            ]
        );
        let warnings: Vec<_> = v.diagnostics.iter().filter(|d| !d.is_error()).collect();
        assert_eq!(warnings.len(), 3);
        assert!(warnings.iter().all(|d| d.code == Code::FormulaLikeCell));
        // Escaped cells read as the value after the `'`.
        let wchen = v.desired.user("wchen").unwrap();
        assert_eq!(wchen.field(Column::Email), "-j@example.com");
        assert_eq!(wchen.field(Column::Im), "@home");
        assert_eq!(wchen.field(Column::Mobile), "+1 555");
        assert_eq!(wchen.password, Some(Secret::new("=Sec_ret12")));
        assert_eq!(v.desired.extension("1002").unwrap().description, "=SUM(A1)");
        assert_eq!(v.desired.extension("1003").unwrap().description, "'=y");
        assert_eq!(v.desired.user("alee").unwrap().field(Column::Im), "z");
    }

    #[test]
    fn duplicates_name_both_lines() {
        let csv = format!(
            "{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,,,,,0004F2000001\n\
             1002,Maria,Garcia,mgarcia,Sec_ret12,,,,,00:04:f2:00:00:01\n1001,Wei,Chen,wchen,Sec_ret12,,,,,\n"
        );
        let v = check(&csv);
        assert_eq!(
            codes(&v),
            [
                (Some(3), Some(10), "duplicate-device"),
                (Some(4), Some(1), "duplicate-extension")
            ]
        );
        assert!(v.diagnostics[0].message.contains("line 2"));
        assert!(v.diagnostics[1].message.contains("line 2"));
    }

    #[test]
    fn rows_of_one_user_must_agree_where_filled_in() {
        let csv = format!(
            "{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,,a@example.com,,,\n\
             1002,Jason,Flynn,jflynn,,,,,,\n1003,Jason,Flinn,jflynn,Sec_ret99,,b@example.com,,,\n"
        );
        let v = check(&csv);
        assert_eq!(
            codes(&v),
            [
                (Some(4), Some(3), "conflicting-user-fields"),
                (Some(4), Some(5), "conflicting-user-fields"),
                (Some(4), Some(7), "conflicting-user-fields"),
            ]
        );
        assert!(v.diagnostics[0].message.contains("line 2"));
        assert!(!v.diagnostics[1].message.contains("Sec_ret"));
    }

    #[test]
    fn an_empty_file_is_refused_unless_allowed() {
        for csv in ["", HEADER, "\n\n,,,,,,,,,\n"] {
            let v = check(csv);
            assert_eq!(codes(&v), [(None, None, "empty-desired-state")], "{csv:?}");
        }
        let policy = Policy {
            allow_empty: true,
            ..Policy::default()
        };
        assert!(validate(HEADER.as_bytes(), &policy).diagnostics.is_empty());
    }

    #[test]
    fn quoted_line_breaks_report_the_line_where_the_record_starts() {
        let csv = format!(
            "{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,\"two\nlines\",,,,\n1001,Wei,Chen,wchen,Sec_ret12,,,,,\n"
        );
        let v = check(&csv);
        assert_eq!(codes(&v), [(Some(4), Some(1), "duplicate-extension")]);
    }

    #[test]
    fn windows_1252_file_from_real_bytes() {
        let mut bytes = HEADER.as_bytes().to_vec();
        bytes.extend_from_slice(b"1001,Zo\xEB,Berg,zberg,Sec_ret12,,,,,\r\n");
        let v = validate(&bytes, &Policy::default());
        assert_eq!(codes(&v), [(Some(2), None, "invalid-utf8")]);
        assert!(!v.has_errors());
        assert_eq!(v.desired.users[0].field(Column::FirstName), "Zoë");
    }

    /// Files big enough to be read in parts: the result must not depend on where
    /// the parts are cut, whatever the quotes in the file.
    #[test]
    fn reading_in_parts_gives_the_same_result_as_in_one_piece() {
        let mut body = String::new();
        for i in 0..40_000 {
            let desc = match i % 7 {
                0 => "\"Conference room, 2nd floor\"".to_string(),
                1 => "\"two\nlines\"".to_string(),
                _ => "Desk".to_string(),
            };
            body.push_str(&format!(
                "{},Jason,Flynn,u{i},Sec_ret12,{desc},,,,\n",
                100_000 + i
            ));
        }
        body.push_str("100001,Dup,Row,dup,Sec_ret12,,,,,\n");
        let whole = format!("{HEADER}{body}");
        let parts = split(&whole, HEADER.len(), 2);
        assert!(parts.len() > 1, "the test file must be split");
        let v = check(&whole);
        assert_eq!(v.rows, 40_001);
        let two_line_rows = (0..40_000).filter(|i| i % 7 == 1).count() as u32;
        let last_line = 1 + 40_000 + two_line_rows + 1;
        assert_eq!(
            codes(&v),
            [(Some(last_line), Some(1), "duplicate-extension")]
        );
        // A quote inside a value makes parity useless: the file is read in one piece
        // and still gives the right lines.
        let tricky = whole
            .replacen("Desk", "5\" display", 1)
            .replacen("Desk", "say \"\"hi\"\"", 1);
        let t = check(&tricky);
        assert_eq!(t.rows, 40_001);
        assert_eq!(codes(&t), codes(&v));
    }
}
