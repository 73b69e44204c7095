//! Diagnostics as text (the CSV line with a marker under the column, the way rustc
//! points at source) and as JSON (SPEC section 9).

use super::Style;
use crate::csv as reader;
use crate::diagnostic::{Diagnostic, Omitted, Severity};
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
    /// line is shown, so a password never reaches a terminal or a CI log.
    pub password_field: Option<usize>,
}

/// Renders one diagnostic with its source line.
pub fn text(d: &Diagnostic, view: &SourceView<'_>, style: Style) -> String {
    let mut out = String::new();
    let label = match d.severity {
        Severity::Error => style.red(&format!("error[{}]", d.code)),
        Severity::Warning => style.yellow(&format!("warning[{}]", d.code)),
    };
    let _ = writeln!(out, "{label}: {}", style.bold(&d.message));
    let location = match (d.line, d.column) {
        (Some(l), Some(c)) => format!("{}:{l}:{c}", view.name),
        (Some(l), None) => format!("{}:{l}", view.name),
        _ => view.name.to_string(),
    };
    let _ = writeln!(out, "  {} {location}", style.blue("-->"));
    if let (Some(line), Some(span)) = (d.line, d.span.clone())
        && let Some((shown, marker)) = excerpt(view, span)
    {
        let gutter = line.to_string();
        let pad = " ".repeat(gutter.len());
        let bar = style.blue("|");
        let _ = writeln!(out, "{pad} {bar}");
        let _ = writeln!(out, "{} {bar} {shown}", style.blue(&gutter));
        let _ = writeln!(out, "{pad} {bar} {}", style.red(&marker));
    }
    if let Some(hint) = &d.hint {
        let _ = writeln!(out, "  {} help: {hint}", style.blue("="));
    }
    out
}

/// The first line of the record that `span` belongs to, with the password masked,
/// and the marker line under the span.
fn excerpt(view: &SourceView<'_>, span: Range<usize>) -> Option<(String, String)> {
    let text = view.text;
    if span.start > text.len() || !text.is_char_boundary(span.start) {
        return None;
    }
    let line_start = text[..span.start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[line_start..]
        .find(['\n', '\r'])
        .map_or(text.len(), |i| line_start + i);
    let mut masked: Vec<Range<usize>> = Vec::new();
    if let Some(p) = view.password_field
        && let Some(field) = reader::field_spans(text, line_start, view.delimiter).get(p)
        && field.end > field.start
    {
        masked.push(field.clone());
    }
    const MAX: usize = 200;
    let mut shown = String::new();
    let mut marker = String::new();
    let end = span.end.clamp(span.start, line_end);
    for (i, c) in text[line_start..line_end].char_indices() {
        let at = line_start + i;
        if shown.chars().count() >= MAX {
            shown.push('…');
            break;
        }
        let in_mask = masked.iter().any(|m| m.contains(&at));
        let c = if in_mask {
            '*'
        } else if c == '\t' {
            ' '
        } else {
            c
        };
        shown.push(c);
        let under = at >= span.start && (at < end || (end == span.start && at == span.start));
        if at < span.start {
            marker.push(' ');
        } else if under {
            marker.push('^');
        }
    }
    if !marker.contains('^') {
        marker.push('^');
    }
    Some((shown, marker))
}

/// Gives a span to diagnostics that know their line and column but not where that
/// is in the text (those found against the target). One pass over the text.
pub fn fill_spans(diagnostics: &mut [Diagnostic], text: &str, delimiter: u8) {
    let mut wanted: Vec<(u32, usize)> = diagnostics
        .iter()
        .enumerate()
        .filter(|(_, d)| d.span.is_none() && d.line.is_some())
        .filter_map(|(i, d)| d.line.map(|l| (l, i)))
        .collect();
    if wanted.is_empty() {
        return;
    }
    wanted.sort_unstable();
    let mut line = 1u32;
    let mut start = 0usize;
    let mut next = wanted.into_iter().peekable();
    let bytes = text.as_bytes();
    loop {
        while let Some(&(l, i)) = next.peek() {
            if l != line {
                break;
            }
            let d = &mut diagnostics[i];
            let field = d
                .column
                .map_or(usize::MAX, |c| c.saturating_sub(1) as usize);
            d.span = Some(reader::field_span(text, start, delimiter, field));
            next.next();
        }
        if next.peek().is_none() {
            break;
        }
        match bytes[start..].iter().position(|&b| b == b'\n') {
            Some(p) => {
                start += p + 1;
                line += 1;
            }
            None => break,
        }
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

    #[test]
    fn the_marker_sits_under_the_field_and_the_password_is_masked() {
        let text = "h\n1001,Jason ,Flynn,jflynn,Sec_ret12\n";
        let view = SourceView {
            name: "users.csv",
            text,
            delimiter: b',',
            password_field: Some(4),
        };
        let d = Diagnostic::error(
            Code::Whitespace,
            "First Name has leading or trailing whitespace",
        )
        .at_line(2)
        .at_column(2)
        .with_span(7..13)
        .with_hint("run `pbxsync fmt`");
        let out = text_of(&d, &view);
        assert_eq!(
            out,
            "error[whitespace]: First Name has leading or trailing whitespace\n  --> users.csv:2:2\n  |\n2 | 1001,Jason ,Flynn,jflynn,*********\n  |      ^^^^^^\n  = help: run `pbxsync fmt`\n"
        );
    }

    fn text_of(d: &Diagnostic, v: &SourceView<'_>) -> String {
        text(d, v, Style { color: false })
    }
}
