//! The hostile-input harness: generated CSV-like files (every line end, quotes,
//! delimiters, byte-order marks, invalid UTF-8, wide, combining and control
//! characters, rows with cells too many or too few, multi-line cells) driven
//! through read → validate → render (text and JSON) → the history's redacted copy.
//!
//! Properties: nothing panics; no Password cell's content appears in the text, the
//! JSON or the redacted copy; the text holds no control or invisible character;
//! every line number is a line of the file, and the line of a row is the line it
//! starts on whatever the line ends.
//!
//! `cargo test` runs a short round. The long run (see docs/security.md):
//! `PBXSYNC_FUZZ_CASES=200000 cargo test --release --test tests fuzz::`

use pbxsync::config::{Delimiter, Encoding};
use pbxsync::csv::ReadOptions;
use pbxsync::diagnostic::Code;
use pbxsync::render::diagnostics::{SourceView, fill_spans, text};
use pbxsync::render::{Style, is_unsafe_char};
use pbxsync::validate::{Policy, validate};
use proptest::prelude::*;

/// The generator's choices, consumed as they are needed. Proptest shrinks the
/// choices (fewer, smaller), which shrinks the file: fewer rows, plainer cells.
struct Choices<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Choices<'_> {
    fn next(&mut self) -> u8 {
        let b = self.bytes.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    fn below(&mut self, n: usize) -> usize {
        usize::from(self.next()) % n.max(1)
    }

    fn pick<'t, T>(&mut self, options: &'t [T]) -> &'t T {
        &options[self.below(options.len())]
    }

    /// Once the choices run out, nothing more happens: a shrunk case is plain.
    fn chance(&mut self, one_in: usize) -> bool {
        self.at < self.bytes.len() && self.below(one_in) == 0
    }
}

/// What a cell may be made of. No atom holds `Pq`: the passwords are `Pq…Zz`.
const ATOMS: &[&str] = &[
    "1001",
    "Jason",
    "jflynn",
    "a",
    " ",
    "Zoë",
    "李小龙",
    "👨\u{200d}👩\u{200d}👧",
    "e\u{301}",
    "\u{202e}",
    "\u{9b}",
    "\x1b[2J",
    "\x1b]0;title\x07",
    "\t",
    ",",
    ";",
    "\"",
    "\n",
    "\r",
    "\r\n",
    "'",
    "=SUM(A1)",
    "0004F2123456",
    "virtual",
    "x@example.com",
    "\u{feff}",
    "\0",
];

const COLUMNS: [&str; 10] = [
    "Extension",
    "First Name",
    "Last Name",
    "Web Username",
    "Password",
    "Description",
    "Email",
    "IM",
    "Mobile",
    "Device MAC Address",
];

const PASSWORD: usize = 4;
const EMAIL: usize = 6;

/// A generated file and what is known about it.
#[derive(Debug)]
struct File {
    bytes: Vec<u8>,
    delimiter: Delimiter,
    /// The planted passwords: none may be printed or kept.
    secrets: Vec<String>,
    /// Rows given a bad email, by the line they start on.
    bad_email_lines: Vec<u32>,
    /// Whether every row has the header's number of cells.
    counts_right: bool,
    /// Junk was thrown in: the file's structure is anybody's guess.
    broken: bool,
}

/// Lines as the reader counts them: LF, CRLF and a lone CR each end one.
fn line_at(bytes: &[u8], offset: usize) -> u32 {
    let breaks = (0..offset)
        .filter(|&i| bytes[i] == b'\n' || (bytes[i] == b'\r' && bytes.get(i + 1) != Some(&b'\n')))
        .count();
    u32::try_from(breaks + 1).unwrap()
}

fn cell(c: &mut Choices<'_>) -> String {
    let n = c.below(4);
    (0..n).map(|_| *c.pick(ATOMS)).collect()
}

/// A cell as a spreadsheet writes it: quoted when it must be, sometimes when it
/// need not.
fn quoted(value: &str, delimiter: u8, c: &mut Choices<'_>) -> String {
    let must = value
        .bytes()
        .any(|b| b == delimiter || matches!(b, b'"' | b'\r' | b'\n'));
    if must || c.chance(8) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_string()
    }
}

fn generate(choices: &[u8]) -> File {
    let mut c = Choices {
        bytes: choices,
        at: 0,
    };
    let delimiter = *c.pick(b",;\t");
    let header = c.chance(2);
    // Auto-detection is reliable on a header row only.
    let auto = header && c.chance(2);
    let mut order: Vec<usize> = (0..10).collect();
    if header && c.chance(3) {
        for i in (1..order.len()).rev() {
            let j = c.below(i + 1);
            order.swap(i, j);
        }
    }
    let line_end = |c: &mut Choices<'_>| *c.pick(&["\n", "\r\n", "\r"]);
    let sep = char::from(delimiter).to_string();
    let mut out: Vec<u8> = Vec::new();
    if c.chance(4) {
        out.extend_from_slice(b"\xEF\xBB\xBF");
    }
    if header {
        let names: Vec<&str> = order.iter().map(|&i| COLUMNS[i]).collect();
        out.extend_from_slice(names.join(&sep).as_bytes());
        out.extend_from_slice(line_end(&mut c).as_bytes());
    }
    let mut file = File {
        bytes: Vec::new(),
        delimiter: if auto {
            Delimiter::Auto
        } else {
            Delimiter::Char(delimiter)
        },
        secrets: Vec::new(),
        bad_email_lines: Vec::new(),
        counts_right: true,
        broken: false,
    };
    let rows = c.below(12);
    for row in 0..rows {
        for _ in 0..3 {
            if c.chance(6) {
                out.extend_from_slice(line_end(&mut c).as_bytes());
            }
        }
        let mut values: Vec<String> = (0..10).map(|_| cell(&mut c)).collect();
        let secret = format!("Pq{row}Zz{}", c.below(1000));
        values[PASSWORD] = format!("{}{secret}{}", cell(&mut c), cell(&mut c));
        let bad_email = c.chance(4);
        if bad_email {
            values[EMAIL] = "bad@".into();
        }
        // The row's cells in the header's order.
        let mut cells: Vec<String> = order
            .iter()
            .map(|&i| quoted(&values[i], delimiter, &mut c))
            .collect();
        // One kind of slip per row: cells added, or cells lost (never the
        // password's own), so the password stays among the cells that may hold it.
        let slip = c.below(6);
        let password_at = order.iter().position(|&i| i == PASSWORD).unwrap_or(0);
        if slip == 0 {
            for _ in 0..=c.below(2) {
                let at = c.below(cells.len() + 1);
                cells.insert(at, quoted(&cell(&mut c), delimiter, &mut c));
            }
            file.counts_right = false;
        } else if slip == 1 {
            for _ in 0..=c.below(2) {
                let at = c.below(cells.len());
                let pw = cells
                    .iter()
                    .position(|v| v.contains(&secret))
                    .unwrap_or(password_at);
                if at != pw {
                    cells.remove(at);
                    file.counts_right = false;
                }
            }
        }
        let start = out.len();
        out.extend_from_slice(cells.join(&sep).as_bytes());
        out.extend_from_slice(line_end(&mut c).as_bytes());
        file.secrets.push(secret);
        if bad_email && slip > 1 {
            file.bad_email_lines.push(line_at(&out, start));
        }
    }
    // Junk: stray bytes anywhere (invalid UTF-8, quotes, line ends).
    if c.chance(5) {
        for _ in 0..=c.below(4) {
            let at = c.below(out.len() + 1);
            let junk = *c.pick(&[&b"\xE9"[..], b"\"", b"\r", b"\n", b"\xFF\xFE", b"\x1b"]);
            out.splice(at..at, junk.iter().copied());
        }
        file.broken = true;
    } else if c.chance(8) {
        // Windows-1252 in a cell that is not a password: the file is read as such.
        out.extend_from_slice(b"\xE9");
    }
    file.bytes = out;
    file
}

fn check(file: &File) -> Result<(), TestCaseError> {
    let policy = Policy {
        read: ReadOptions {
            encoding: Encoding::Auto,
            delimiter: file.delimiter,
        },
        ..Policy::default()
    };
    let v = validate(&file.bytes, &policy);
    let lines = line_at(&file.bytes, file.bytes.len());
    let view = SourceView::new("users.csv", &v.text, v.delimiter, Some(&v.layout));
    let mut diagnostics = v.diagnostics.clone();
    fill_spans(&mut diagnostics, &view);
    let mut shown = String::new();
    for d in &diagnostics {
        if let Some(line) = d.line {
            prop_assert!(
                (1..=lines).contains(&line),
                "line {line} outside 1..={lines}: {d:?}"
            );
        }
        if let Some(span) = &d.span {
            prop_assert!(span.start <= span.end && span.end <= v.text.len(), "{d:?}");
        }
        shown.push_str(&text(d, &view, Style { color: false }));
    }
    let json = serde_json::to_string(&diagnostics).unwrap();
    prop_assert!(
        !shown.chars().any(|c| c != '\n' && is_unsafe_char(c)),
        "the text holds a control character:\n{shown}"
    );
    if file.broken {
        return Ok(());
    }
    for secret in &file.secrets {
        prop_assert!(!shown.contains(secret.as_str()), "{secret} shown:\n{shown}");
        prop_assert!(!json.contains(secret.as_str()), "{secret} in JSON:\n{json}");
    }
    // What history keeps. Only a file without errors is ever applied; a file
    // whose rows all have the header's count is redacted exactly.
    if file.counts_right {
        let mut redacted = Vec::new();
        pbxsync::apply::redact_into(&v.text, v.delimiter, &v.layout, &mut redacted).unwrap();
        let redacted = String::from_utf8_lossy(&redacted);
        for secret in &file.secrets {
            prop_assert!(
                !redacted.contains(secret.as_str()),
                "{secret} kept in history:\n{redacted}"
            );
        }
    }
    for &line in &file.bad_email_lines {
        prop_assert!(
            diagnostics
                .iter()
                .any(|d| d.line == Some(line) && d.code == Code::BadEmail),
            "no bad-email on line {line}: {diagnostics:#?}"
        );
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PBXSYNC_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(512)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn hostile_files_never_panic_leak_or_misnumber(choices in prop::collection::vec(any::<u8>(), 0..1500)) {
        let file = generate(&choices);
        let shown = String::from_utf8_lossy(&file.bytes).escape_debug().to_string();
        check(&file).map_err(|e| TestCaseError::fail(format!("{e}\nfile: {shown}")))?;
    }

    /// Random bytes: no structure at all, so only the properties that hold for
    /// any input.
    #[test]
    fn random_bytes_never_panic_or_reach_the_terminal(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let file = File {
            bytes,
            delimiter: Delimiter::Auto,
            secrets: Vec::new(),
            bad_email_lines: Vec::new(),
            counts_right: false,
            broken: true,
        };
        check(&file)?;
    }
}
