//! Diagnostics: what is wrong, where (line, column, byte span), and what to do.
//! Checks push them into a `Vec`; printing is the binary's job.

use serde::Serialize;
use std::collections::BTreeMap;
use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// The stable diagnostic codes (SPEC section 9). Scripts rely on these strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    BadHeader,
    WrongColumnCount,
    InvalidUtf8,
    Whitespace,
    MissingRequired,
    BadExtension,
    BadUsername,
    BadName,
    NameApostrophe,
    PasswordPolicy,
    BadEmail,
    BadMobile,
    BadDevice,
    DuplicateExtension,
    DuplicateDevice,
    ConflictingUserFields,
    DeviceNotFound,
    ExtensionOwnedByOtherUser,
    LicenseExceeded,
    EmptyDesiredState,
    TooLargeChange,
    StalePlan,
    Locked,
    FileTooLarge,
    FormulaLikeCell,
    PlaintextPassword,
    LastAppliedCsvMissing,
}

impl Code {
    pub const ALL: [Code; 27] = [
        Code::BadHeader,
        Code::WrongColumnCount,
        Code::InvalidUtf8,
        Code::Whitespace,
        Code::MissingRequired,
        Code::BadExtension,
        Code::BadUsername,
        Code::BadName,
        Code::NameApostrophe,
        Code::PasswordPolicy,
        Code::BadEmail,
        Code::BadMobile,
        Code::BadDevice,
        Code::DuplicateExtension,
        Code::DuplicateDevice,
        Code::ConflictingUserFields,
        Code::DeviceNotFound,
        Code::ExtensionOwnedByOtherUser,
        Code::LicenseExceeded,
        Code::EmptyDesiredState,
        Code::TooLargeChange,
        Code::StalePlan,
        Code::Locked,
        Code::FileTooLarge,
        Code::FormulaLikeCell,
        Code::PlaintextPassword,
        Code::LastAppliedCsvMissing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Code::BadHeader => "bad-header",
            Code::WrongColumnCount => "wrong-column-count",
            Code::InvalidUtf8 => "invalid-utf8",
            Code::Whitespace => "whitespace",
            Code::MissingRequired => "missing-required",
            Code::BadExtension => "bad-extension",
            Code::BadUsername => "bad-username",
            Code::BadName => "bad-name",
            Code::NameApostrophe => "name-apostrophe",
            Code::PasswordPolicy => "password-policy",
            Code::BadEmail => "bad-email",
            Code::BadMobile => "bad-mobile",
            Code::BadDevice => "bad-device",
            Code::DuplicateExtension => "duplicate-extension",
            Code::DuplicateDevice => "duplicate-device",
            Code::ConflictingUserFields => "conflicting-user-fields",
            Code::DeviceNotFound => "device-not-found",
            Code::ExtensionOwnedByOtherUser => "extension-owned-by-other-user",
            Code::LicenseExceeded => "license-exceeded",
            Code::EmptyDesiredState => "empty-desired-state",
            Code::TooLargeChange => "too-large-change",
            Code::StalePlan => "stale-plan",
            Code::Locked => "locked",
            Code::FileTooLarge => "file-too-large",
            Code::FormulaLikeCell => "formula-like-cell",
            Code::PlaintextPassword => "plaintext-password",
            Code::LastAppliedCsvMissing => "last-applied-csv-missing",
        }
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finding. `line` is the line where the CSV record starts (1-based); `column` is
/// the 1-based CSV column (field) the finding is about; `span` is the byte range in
/// the decoded source text that a renderer underlines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    #[serde(skip)]
    pub severity: Severity,
    pub line: Option<u32>,
    pub column: Option<u32>,
    pub code: Code,
    pub message: String,
    pub hint: Option<String>,
    #[serde(skip)]
    pub span: Option<Range<usize>>,
}

impl Diagnostic {
    pub fn error(code: Code, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            line: None,
            column: None,
            code,
            message: message.into(),
            hint: None,
            span: None,
        }
    }

    pub fn warning(code: Code, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, message)
        }
    }

    pub fn at_line(mut self, line: u32) -> Diagnostic {
        self.line = Some(line);
        self
    }

    pub fn at_column(mut self, column: u32) -> Diagnostic {
        self.column = Some(column);
        self
    }

    pub fn with_span(mut self, span: Range<usize>) -> Diagnostic {
        self.span = Some(span);
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Sorts diagnostics in line order (file-wide ones first), keeping the order in
/// which they were found for the same line.
pub fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by_key(|d| (d.line, d.column));
}

/// How many diagnostics of one code and severity are kept: the first ones by line.
/// A file of a million bad rows would otherwise hold a million diagnostics (3.9 GB
/// with `--format json`) and print them all; the others are counted (`Omitted`)
/// and the output says how many there were.
pub const KEPT_PER_CODE: usize = 1000;

/// The diagnostics that were found but not kept, counted by severity and code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Omitted(BTreeMap<(Severity, Code), u64>);

impl Omitted {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn add(&mut self, severity: Severity, code: Code, n: u64) {
        if n > 0 {
            *self.0.entry((severity, code)).or_default() += n;
        }
    }

    pub fn merge(&mut self, other: &Omitted) {
        for (&(severity, code), &n) in &other.0 {
            self.add(severity, code, n);
        }
    }

    /// How many errors were left out.
    pub fn errors(&self) -> u64 {
        self.of(Severity::Error).map(|(_, n)| n).sum()
    }

    /// How many warnings were left out.
    pub fn warnings(&self) -> u64 {
        self.of(Severity::Warning).map(|(_, n)| n).sum()
    }

    /// The codes of one severity that lost diagnostics, with how many, by code.
    pub fn of(&self, severity: Severity) -> impl Iterator<Item = (Code, u64)> + '_ {
        self.0
            .iter()
            .filter(move |((s, _), _)| *s == severity)
            .map(|(&(_, code), &n)| (code, n))
    }
}

/// `{"kept_per_code": 1000, "errors": {"bad-email": 999000}, "warnings": {}}`.
impl Serialize for Omitted {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Counts<'a>(&'a Omitted, Severity);
        impl Serialize for Counts<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_map(self.0.of(self.1).map(|(code, n)| (code.as_str(), n)))
            }
        }
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("kept_per_code", &KEPT_PER_CODE)?;
        map.serialize_entry("errors", &Counts(self, Severity::Error))?;
        map.serialize_entry("warnings", &Counts(self, Severity::Warning))?;
        map.end()
    }
}

/// Where checks put the diagnostics they find. It keeps at most `KEPT_PER_CODE`
/// of each code and severity, the first by line and column whatever order they
/// come in (rows are checked in parallel parts, duplicates in hash order), and
/// counts the others: its memory is bounded however many the file has.
#[derive(Debug, Clone, Default)]
pub struct Sink {
    /// In the order they came.
    kept: Vec<Diagnostic>,
    /// How many of `kept` each code and severity has.
    counts: BTreeMap<(Severity, Code), usize>,
    omitted: Omitted,
}

impl Sink {
    pub fn push(&mut self, d: Diagnostic) {
        let key = (d.severity, d.code);
        self.kept.push(d);
        let n = self.counts.entry(key).or_default();
        *n += 1;
        // Trimmed only when twice over, so that trimming (a pass over `kept`)
        // happens once every `KEPT_PER_CODE` diagnostics of a code at most.
        if *n >= 2 * KEPT_PER_CODE {
            self.trim(key);
        }
    }

    /// For a caller whose diagnostics of one code come in line order: whether
    /// one more of `severity` and `code` would be left out, since `KEPT_PER_CODE`
    /// earlier ones are kept. Then it is counted as left out here, and the caller
    /// need not make it.
    pub fn omits(&mut self, severity: Severity, code: Code) -> bool {
        let full = self
            .counts
            .get(&(severity, code))
            .is_some_and(|n| *n >= KEPT_PER_CODE);
        if full {
            self.omitted.add(severity, code, 1);
        }
        full
    }

    /// Takes in what another sink kept and left out.
    pub fn append(&mut self, other: Sink) {
        self.omitted.merge(&other.omitted);
        self.extend(other.kept);
    }

    /// The diagnostics kept, in the order they came, and the count of the others.
    pub fn finish(mut self) -> (Vec<Diagnostic>, Omitted) {
        let over: Vec<(Severity, Code)> = self
            .counts
            .iter()
            .filter(|(_, n)| **n > KEPT_PER_CODE)
            .map(|(k, _)| *k)
            .collect();
        for key in over {
            self.trim(key);
        }
        (self.kept, self.omitted)
    }

    /// Keeps the first `KEPT_PER_CODE` diagnostics of `key` by line and column.
    fn trim(&mut self, key: (Severity, Code)) {
        let mut of_key: Vec<(Option<u32>, Option<u32>, usize)> = self
            .kept
            .iter()
            .enumerate()
            .filter(|(_, d)| (d.severity, d.code) == key)
            .map(|(i, d)| (d.line, d.column, i))
            .collect();
        if of_key.len() <= KEPT_PER_CODE {
            return;
        }
        of_key.select_nth_unstable(KEPT_PER_CODE);
        let mut dropped = vec![false; self.kept.len()];
        for &(_, _, i) in &of_key[KEPT_PER_CODE..] {
            dropped[i] = true;
        }
        let mut i = 0;
        self.kept.retain(|_| {
            i += 1;
            !dropped[i - 1]
        });
        self.counts.insert(key, KEPT_PER_CODE);
        self.omitted
            .add(key.0, key.1, (of_key.len() - KEPT_PER_CODE) as u64);
    }
}

impl Extend<Diagnostic> for Sink {
    fn extend<I: IntoIterator<Item = Diagnostic>>(&mut self, diagnostics: I) {
        for d in diagnostics {
            self.push(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(code: Code, line: u32) -> Diagnostic {
        Diagnostic::error(code, "x").at_line(line)
    }

    #[test]
    fn a_sink_keeps_the_first_of_each_code_by_line_whatever_the_order() {
        let mut sink = Sink::default();
        // Lines in a shuffled order, as duplicates come (in hash order).
        let n = 5 * KEPT_PER_CODE as u32 + 7;
        for k in 0..n {
            sink.push(at(Code::BadEmail, (k * 7919) % n + 1));
        }
        sink.push(Diagnostic::warning(Code::InvalidUtf8, "w").at_line(3));
        let mut other = Sink::default();
        other.extend((1..=1500).map(|l| at(Code::BadMobile, l)));
        sink.append(other);
        let (kept, omitted) = sink.finish();
        let mut emails: Vec<u32> = kept
            .iter()
            .filter(|d| d.code == Code::BadEmail)
            .filter_map(|d| d.line)
            .collect();
        emails.sort_unstable();
        assert_eq!(emails, (1..=KEPT_PER_CODE as u32).collect::<Vec<_>>());
        let mobiles = kept.iter().filter(|d| d.code == Code::BadMobile).count();
        assert_eq!(mobiles, KEPT_PER_CODE);
        assert_eq!(kept.iter().filter(|d| !d.is_error()).count(), 1);
        assert_eq!(
            omitted.of(Severity::Error).collect::<Vec<_>>(),
            [
                (Code::BadEmail, u64::from(n) - KEPT_PER_CODE as u64),
                (Code::BadMobile, 500)
            ]
        );
        assert_eq!(
            (omitted.warnings(), omitted.errors()),
            (0, u64::from(n) - 500)
        );
        assert_eq!(
            serde_json::to_value(&omitted).unwrap(),
            serde_json::json!({
                "kept_per_code": KEPT_PER_CODE,
                "errors": {"bad-email": u64::from(n) - KEPT_PER_CODE as u64, "bad-mobile": 500},
                "warnings": {},
            })
        );
    }

    #[test]
    fn a_sink_under_the_limit_keeps_everything_in_order() {
        let mut sink = Sink::default();
        sink.extend([
            at(Code::BadEmail, 9),
            at(Code::Whitespace, 2),
            at(Code::BadEmail, 4),
        ]);
        let (kept, omitted) = sink.finish();
        assert!(omitted.is_empty());
        assert_eq!(
            kept.iter().map(|d| d.line).collect::<Vec<_>>(),
            [Some(9), Some(2), Some(4)]
        );
    }
}
