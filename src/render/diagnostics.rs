//! Diagnostics as text (the CSV line with a marker under the column, the way rustc
//! points at source) and as JSON (SPEC section 9).

use super::{Style, is_unsafe_char, push_char_escaped, untrusted};
use crate::csv::{self as reader, Layout};
use crate::diagnostic::{Diagnostic, Omitted, Severity};
use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};
use std::cell::OnceCell;
use std::fmt::Write;
use std::ops::Range;

/// The file the diagnostics are about.
pub struct SourceView<'a> {
    /// How the file is named in messages.
    pub name: &'a str,
    /// The decoded text.
    pub text: &'a str,
    pub delimiter: u8,
    /// The field index of the Password column: its content is masked whenever a
    /// record is shown, so a password never reaches a terminal or a CI log.
    password_field: Option<usize>,
    /// How many fields a record should have (the header's, or ten): a record with
    /// more or fewer has its password somewhere else, and every cell it may be in
    /// is masked.
    fields: usize,
    header_line: Option<u32>,
    /// Where each line starts, built the first time a line is looked up.
    line_starts: OnceCell<Vec<usize>>,
}

impl<'a> SourceView<'a> {
    /// The view of a file read with `layout` (none when the file could not be
    /// laid out: then no record is shown whole).
    pub fn new(name: &'a str, text: &'a str, delimiter: u8, layout: Option<&Layout>) -> Self {
        SourceView {
            name,
            text,
            delimiter,
            password_field: layout.and_then(|l| l.position(crate::model::Column::Password)),
            fields: layout.map_or(crate::model::Column::ALL.len(), |l| l.columns.len()),
            header_line: layout.and_then(|l| l.header_line),
            line_starts: OnceCell::new(),
        }
    }

    /// The view for diagnostics about no file (`stale-plan`, `locked`): they
    /// are shown without a `-->` location, which would point nowhere.
    pub fn no_file() -> Self {
        SourceView::new("", "", b',', None)
    }

    /// Where line `line` (1-based) starts.
    fn line_start(&self, line: u32) -> Option<usize> {
        let starts = self
            .line_starts
            .get_or_init(|| reader::line_starts(self.text.as_bytes()));
        let start = *starts.get(usize::try_from(line).ok()?.checked_sub(1)?)?;
        (start < self.text.len()).then_some(start)
    }

    /// The line that the byte at `offset` is on.
    fn line_at(&self, offset: usize) -> u32 {
        let starts = self
            .line_starts
            .get_or_init(|| reader::line_starts(self.text.as_bytes()));
        u32::try_from(starts.partition_point(|&s| s <= offset)).unwrap_or(u32::MAX)
    }
}

/// What a masked Password cell shows: always the same, so not even its length leaks.
pub const MASK: &str = "*****";

/// Renders one diagnostic with the part of its record that it is about. Everything
/// that comes from the file (the record, and the message and hint, which quote
/// cells) is shown with control and invisible characters escaped, so a cell cannot
/// clear the screen, set the title or reorder what a reviewer reads.
pub fn text(d: &Diagnostic, view: &SourceView<'_>, style: Style) -> String {
    let excerpt = d
        .line
        .zip(d.span.clone())
        .and_then(|(line, span)| excerpt(view, line, span));
    // The gutter is as wide as the last line number shown, as rustc's.
    let width = excerpt.as_ref().map_or(1, |e| {
        let last = e.first_line as usize + e.text.matches('\n').count();
        last.to_string().len()
    });
    let mut out = String::new();
    let label = match d.severity {
        Severity::Error => style.red(&format!("error[{}]", d.code)),
        Severity::Warning => style.yellow(&format!("warning[{}]", d.code)),
    };
    let _ = writeln!(out, "{label}: {}", style.bold(&untrusted(&d.message)));
    if !view.name.is_empty() {
        let name = untrusted(view.name);
        let location = match (d.line, d.column) {
            (Some(l), Some(c)) => format!("{name}:{l}:{c}"),
            (Some(l), None) => format!("{name}:{l}"),
            _ => name.into_owned(),
        };
        let _ = writeln!(out, "{:width$}{} {location}", "", style.blue("-->"));
    }
    if let Some(e) = excerpt {
        let level = match d.severity {
            Severity::Error => Level::ERROR,
            Severity::Warning => Level::WARNING,
        };
        let report = [Group::with_level(level).element(
            Snippet::source(e.text.as_str())
                .line_start(e.first_line as usize)
                .annotation(AnnotationKind::Primary.span(e.span)),
        )];
        let renderer = if style.color {
            Renderer::styled()
        } else {
            Renderer::plain()
        };
        let _ = writeln!(out, "{}", renderer.render(&report));
    }
    if let Some(hint) = &d.hint {
        let _ = writeln!(
            out,
            "{:w$}{} help: {}",
            "",
            style.blue("="),
            untrusted(hint),
            w = width + 1
        );
    }
    out
}

/// The lines of a record that a diagnostic shows, made safe to print, and where its
/// span is in them.
struct Excerpt {
    text: String,
    span: Range<usize>,
    first_line: u32,
}

/// Characters shown before the span, after it, and of the span itself at most;
/// lines of the span shown at most. A diagnostic costs the same on a line of a
/// megabyte (a binary file) as on a line of a CSV.
const BEFORE: usize = 80;
const AFTER: usize = 160;
const LONGEST_SPAN: usize = 400;
const MOST_LINES: usize = 3;

/// How many characters an excerpt shows, counting each masked cell as `MASK`
/// whatever its length.
struct Width<'m> {
    masks: &'m [Range<usize>],
    shown: usize,
    /// The mask the last character was in.
    in_mask: Option<usize>,
}

impl<'m> Width<'m> {
    fn new(masks: &'m [Range<usize>]) -> Width<'m> {
        Width {
            masks,
            shown: 0,
            in_mask: None,
        }
    }

    /// The width with the character at byte `at` shown too.
    fn add(&mut self, at: usize) -> usize {
        let mask = self.masks.iter().position(|m| m.contains(&at));
        match mask {
            Some(_) if mask == self.in_mask => {}
            Some(_) => self.shown += MASK.chars().count(),
            None => self.shown += 1,
        }
        self.in_mask = mask;
        self.shown
    }
}

/// The excerpt of the record that starts on `line` around `span`, with every cell
/// that may hold the password masked. The cells are found by reading the record
/// from its start (quoted line breaks included), not by counting delimiters on the
/// line the span is on.
fn excerpt(view: &SourceView<'_>, line: u32, span: Range<usize>) -> Option<Excerpt> {
    let text = view.text;
    let bytes = text.as_bytes();
    let start = view.line_start(line)?;
    let fields = reader::field_spans(text, start, view.delimiter);
    let end = fields.last().map_or(start, |f| f.end).max(start);
    let mut s = span.start.clamp(start, end);
    while !text.is_char_boundary(s) {
        s -= 1;
    }
    let mut e = span.end.clamp(s, end);
    while !text.is_char_boundary(e) {
        e += 1;
    }
    let masks: Vec<Range<usize>> = match view.password_field {
        Some(p) if view.header_line != Some(line) => {
            // Fewer fields than expected: the password may have moved left by as
            // many; more: right by as many.
            let n = fields.len();
            let lo = p.saturating_sub(view.fields.saturating_sub(n));
            let hi = (p + n.saturating_sub(view.fields)).min(n.saturating_sub(1));
            (lo..=hi)
                .filter_map(|i| fields.get(i))
                .filter(|f| !f.is_empty())
                .cloned()
                .collect()
        }
        _ => Vec::new(),
    };
    // The span itself, cut to a few lines and characters.
    let mut lines = 1;
    let mut cap = s;
    for (shown, (i, c)) in text[s..e].char_indices().enumerate() {
        if shown == LONGEST_SPAN || (reader::ends_line(bytes, s + i) && lines == MOST_LINES) {
            break;
        }
        lines += usize::from(reader::ends_line(bytes, s + i));
        cap = s + i + c.len_utf8();
    }
    let e = if e > s { cap.max(s) } else { e };
    // Before the span, back to the start of its line; after it, on to the end of
    // the line it ends on: each at most so many characters.
    // A masked cell counts as its mask: where the excerpt is cut must not tell
    // how long the password is.
    let mut width = Width::new(&masks);
    let mut from = s;
    let mut cut_before = false;
    for (i, _) in text[start..s].char_indices().rev() {
        if matches!(bytes[start + i], b'\n' | b'\r') {
            break;
        }
        if width.add(start + i) > BEFORE {
            cut_before = true;
            break;
        }
        from = start + i;
    }
    let mut width = Width::new(&masks);
    let mut to = e;
    let mut cut_after = false;
    for (i, c) in text[e..].char_indices() {
        if matches!(c, '\n' | '\r') {
            break;
        }
        if width.add(e + i) > AFTER {
            cut_after = true;
            break;
        }
        to = e + i + c.len_utf8();
    }
    let mut out = String::with_capacity(to - from + 16);
    if cut_before {
        out.push('…');
    }
    let (mut at_s, mut at_e) = (None, None);
    let mut i = from;
    while i < to {
        if let Some(m) = masks.iter().find(|m| m.contains(&i)) {
            if m.contains(&s) && at_s.is_none() {
                at_s = Some(out.len());
            }
            out.push_str(MASK);
            let stop = m.end.min(to);
            // Line breaks inside the cell still end lines, so the numbers in the
            // margin stay those of the file.
            for j in i..stop {
                if reader::ends_line(bytes, j) {
                    out.push('\n');
                }
            }
            if e > i && e <= stop {
                at_e = Some(out.len());
            }
            i = stop;
            continue;
        }
        if i == s && at_s.is_none() {
            at_s = Some(out.len());
        }
        if i == e && at_e.is_none() {
            at_e = Some(out.len());
        }
        let Some(c) = text[i..].chars().next() else {
            break;
        };
        match c {
            // A CRLF ends its line at the LF.
            '\r' if bytes.get(i + 1) == Some(&b'\n') => {}
            '\r' | '\n' => out.push('\n'),
            c if is_unsafe_char(c) => push_char_escaped(&mut out, c),
            c => out.push(c),
        }
        i += c.len_utf8();
    }
    let at_s = at_s.unwrap_or(out.len());
    let mut at_e = at_e.unwrap_or(out.len()).max(at_s);
    if at_e == at_s {
        // A point: the character there, when there is one on the line.
        at_e += out[at_s..]
            .chars()
            .next()
            .filter(|&c| c != '\n')
            .map_or(0, char::len_utf8);
    }
    if cut_after {
        out.push('…');
    }
    Some(Excerpt {
        span: at_s..at_e,
        first_line: view.line_at(from),
        text: out,
    })
}

/// Gives a span to diagnostics that know their line and column but not where that
/// is in the text (those found against the target).
pub fn fill_spans(diagnostics: &mut [Diagnostic], view: &SourceView<'_>) {
    for d in diagnostics.iter_mut().filter(|d| d.span.is_none()) {
        let Some(start) = d.line.and_then(|l| view.line_start(l)) else {
            continue;
        };
        let field = d
            .column
            .map_or(usize::MAX, |c| c.saturating_sub(1) as usize);
        d.span = Some(reader::field_span(view.text, start, view.delimiter, field));
    }
}

/// `"3 errors, 1 warning"`.
pub fn counts(diagnostics: &[Diagnostic]) -> String {
    counts_with(diagnostics, &Omitted::default())
}

/// `"3 errors, 1 warning"`, counting the diagnostics left out too.
pub fn counts_with(diagnostics: &[Diagnostic], omitted: &Omitted) -> String {
    let kept_errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = (diagnostics.len() - kept_errors) as u64 + omitted.warnings();
    let errors = kept_errors as u64 + omitted.errors();
    let plural = |n: u64, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    format!(
        "{}, {}",
        plural(errors, "error"),
        plural(warnings, "warning")
    )
}

/// One line for each code that had more diagnostics than were kept: the output
/// must not look like all there is. Warnings are left out with `errors_only`
/// (`--quiet`).
pub fn omitted_text(omitted: &Omitted, errors_only: bool, style: Style) -> String {
    let mut out = String::new();
    for severity in [Severity::Error, Severity::Warning] {
        if errors_only && severity == Severity::Warning {
            continue;
        }
        let word = match severity {
            Severity::Error => "errors",
            Severity::Warning => "warnings",
        };
        for (code, n) in omitted.of(severity) {
            let _ = writeln!(
                out,
                "{}: {n} more `{code}` {word} are not shown (only the first {} of each code are)",
                style.bold("note"),
                crate::diagnostic::KEPT_PER_CODE
            );
        }
    }
    out
}

/// The `errors` and `warnings` arrays of SPEC section 9.
pub fn json(diagnostics: &[Diagnostic]) -> (serde_json::Value, serde_json::Value) {
    let pick = |sev: Severity| {
        serde_json::Value::Array(
            diagnostics
                .iter()
                .filter(|d| d.severity == sev)
                .map(|d| serde_json::to_value(d).unwrap_or_default())
                .collect(),
        )
    };
    (pick(Severity::Error), pick(Severity::Warning))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostic::Code;

    fn view(text: &str) -> SourceView<'_> {
        SourceView::new("users.csv", text, b',', Some(&Layout::default_order()))
    }

    fn shown(text: &str, d: &Diagnostic) -> String {
        let mut d = [d.clone()];
        let v = view(text);
        fill_spans(&mut d, &v);
        super::text(&d[0], &v, Style { color: false })
    }

    #[test]
    fn the_marker_sits_under_the_field_and_the_password_is_masked() {
        let text = "h\n1001,Jason ,Flynn,jflynn,Sec_ret12,,,,,\n";
        let d = Diagnostic::error(
            Code::Whitespace,
            "First Name has leading or trailing whitespace",
        )
        .at_line(2)
        .at_column(2)
        .with_span(7..13)
        .with_hint("run `pbxsync fmt`");
        assert_eq!(
            shown(text, &d),
            "error[whitespace]: First Name has leading or trailing whitespace\n --> users.csv:2:2\n  |\n2 | 1001,Jason ,Flynn,jflynn,*****,,,,,\n  |      ^^^^^^\n  = help: run `pbxsync fmt`\n"
        );
    }

    #[test]
    fn a_row_with_cells_too_many_or_too_few_masks_every_cell_the_password_may_be_in() {
        for (row, secret) in [
            ("1001,Jason,Flynn,Jr,jflynn,Sec_ret12,,,,,", "Sec_ret12"),
            ("1001,Jason,Flynn,Sec_ret12,,,,,", "Sec_ret12"),
            (
                "1001\tJason\tFlynn\tjflynn\tSec_ret12\t\t\t\t\t",
                "Sec_ret12",
            ),
        ] {
            let d = Diagnostic::error(Code::WrongColumnCount, "wrong").at_line(1);
            let out = shown(row, &d);
            assert!(!out.contains(secret), "{out}");
            assert!(out.contains(MASK), "{out}");
        }
    }

    #[test]
    fn a_diagnostic_on_a_continuation_line_masks_the_record_s_password() {
        let text = "1001,Jason,Flynn,jflynn,Sec_ret12,\"two\nlines\",a,b,c,BAD \n";
        let d = Diagnostic::error(Code::Whitespace, "x")
            .at_line(1)
            .at_column(10);
        let out = shown(text, &d);
        assert!(out.contains("2 | lines\",a,b,c,BAD "), "{out}");
        assert!(out.contains("  |              ^^^^"), "{out}");
        // The password sits in a multi-line cell: its lines keep their numbers.
        let text = "1001,Jason,Flynn,jflynn,\"Sec\nret12\",\"x\ny\",,,,BAD \n";
        let out = shown(text, &d);
        assert!(!out.contains("ret12"), "{out}");
        assert!(out.contains("3 | y\",,,,BAD "), "{out}");
    }

    #[test]
    fn lone_cr_lines_are_lines_and_never_panic() {
        let text =
            "h\r1001,Jason,Flynn,jflynn,Sec_ret12,,,,,\r1002,Wei ,Chen,wchen,Sec_ret34,,,,,\r";
        let d = Diagnostic::error(Code::Whitespace, "x")
            .at_line(3)
            .at_column(2);
        let out = shown(text, &d);
        assert!(
            out.contains("3 | 1002,Wei ,Chen,wchen,*****,,,,,\n"),
            "{out}"
        );
        assert!(out.contains("  |      ^^^^"), "{out}");
        for cut in 0..text.len() {
            let d = Diagnostic::error(Code::Whitespace, "x")
                .at_line(2)
                .with_span(cut..text.len());
            let _ = shown(text, &d);
        }
    }

    #[test]
    fn cells_cannot_reach_the_terminal_as_control_sequences() {
        let text =
            "1001,Jason,Flynn,jflynn,Sec_ret12,\x1b[2J\x1b]0;pwned\x07\u{9b}\u{202e},bad,,,\n";
        let d = Diagnostic::error(Code::BadEmail, "email `\x1b[31mred` is bad")
            .at_line(1)
            .at_column(7)
            .with_hint("\u{202e}hint");
        let out = shown(text, &d);
        assert!(
            !out.chars()
                .any(|c| c == '\x1b' || c == '\u{9b}' || c == '\u{202e}' || c == '\x07'),
            "{out:?}"
        );
        assert!(out.contains("\\u{1b}[2J"), "{out}");
        assert!(out.contains("email `\\u{1b}[31mred`"), "{out}");
    }

    #[test]
    fn the_marker_is_aligned_by_display_width() {
        let text = "1001,李小龙,Zoe\u{301},jflynn,Sec_ret12,👨\u{200d}👩,bad,,,\n";
        let d = Diagnostic::error(Code::BadEmail, "x")
            .at_line(1)
            .at_column(7);
        let out = shown(text, &d);
        let lines: Vec<&str> = out.lines().collect();
        let row = lines.iter().find(|l| l.starts_with("1 |")).unwrap();
        let marker = lines.iter().find(|l| l.contains('^')).unwrap();
        let col = |s: &str, upto: usize| unicode_width::UnicodeWidthStr::width(&s[..upto]);
        let bad = row.find(",bad").unwrap() + 1;
        assert_eq!(
            col(row, bad),
            col(marker, marker.find('^').unwrap()),
            "{out}"
        );
    }

    #[test]
    fn a_megabyte_line_is_shown_cut_around_the_span() {
        let text = format!("1001,{},Flynn,jflynn,Sec_ret12,,,,,\n", "a".repeat(1 << 20));
        let d = Diagnostic::error(Code::BadName, "x")
            .at_line(1)
            .at_column(3);
        let out = shown(&text, &d);
        assert!(out.len() < 2000, "{}", out.len());
        assert!(out.contains('…'));
    }
}
