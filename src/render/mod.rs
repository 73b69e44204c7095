//! Output for people and programs: diagnostics (text with the offending line and a
//! marker, or JSON), and plans. Rendering never touches the target.

pub mod diagnostics;
pub mod plan;

/// Colours, when the output is a terminal that wants them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    pub color: bool,
}

impl Style {
    pub const RED: &'static str = "1;31";
    pub const YELLOW: &'static str = "1;33";
    pub const GREEN: &'static str = "32";
    pub const BLUE: &'static str = "1;34";
    pub const BOLD: &'static str = "1";

    pub fn paint(self, code: &str, s: &str) -> String {
        let mut out = String::with_capacity(s.len() + 12);
        self.paint_into(&mut out, code, |out| out.push_str(s));
        out
    }
    pub fn red(self, s: &str) -> String {
        self.paint(Style::RED, s)
    }
    pub fn yellow(self, s: &str) -> String {
        self.paint(Style::YELLOW, s)
    }
    pub fn green(self, s: &str) -> String {
        self.paint(Style::GREEN, s)
    }
    pub fn blue(self, s: &str) -> String {
        self.paint(Style::BLUE, s)
    }
    pub fn bold(self, s: &str) -> String {
        self.paint(Style::BOLD, s)
    }

    /// What `paint` returns, written into `out` by `write`: no string of its own.
    pub fn paint_into(self, out: &mut String, code: &str, write: impl FnOnce(&mut String)) {
        if self.color {
            out.push_str("\x1b[");
            out.push_str(code);
            out.push('m');
            write(out);
            out.push_str("\x1b[0m");
        } else {
            write(out);
        }
    }
}

/// Whether a character read from a file must not reach a terminal as it is:
/// control characters (C0 and DEL; ESC starts the sequences that clear a screen,
/// move the cursor or set a window title; C1, where U+009B is a one-character CSI
/// on some terminals) and invisible characters that reorder or hide text
/// (bidirectional embeddings, overrides, isolates and marks, zero-width space, word
/// joiner and the other invisible operators, byte-order mark, interlinear
/// annotation). Zero-width joiner and non-joiner are kept: emoji sequences and
/// Persian or Indic names need them.
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{061C}' | '\u{200B}' | '\u{200E}' | '\u{200F}' | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// `s` safe to print: every unsafe character (see `is_unsafe_char`) written as a
/// visible escape (`\u{1b}`, `\t`), as the plan shows them. Borrowed when there is
/// nothing to escape, as nearly always.
pub fn untrusted(s: &str) -> std::borrow::Cow<'_, str> {
    let plain = |c: char| !is_unsafe_char(c);
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) || s.chars().all(plain) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_char_escaped(&mut out, c);
    }
    std::borrow::Cow::Owned(out)
}

/// Appends `c`, escaped when it is unsafe to print.
pub fn push_char_escaped(out: &mut String, c: char) {
    use std::fmt::Write;
    match c {
        '\t' => out.push_str("\\t"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        c if is_unsafe_char(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// A text of several lines (a CSV from history) safe to print: line breaks are
/// kept, every other unsafe character is escaped.
pub fn untrusted_lines(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| c != '\n' && is_unsafe_char(c)) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => out.push('\n'),
            // CRLF and a lone CR end lines; shown as LF.
            '\r' => {
                if chars.peek() != Some(&'\n') {
                    out.push('\n');
                }
            }
            c => push_char_escaped(&mut out, c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_and_invisible_characters_are_escaped_and_letters_kept() {
        assert_eq!(untrusted("Zoë 李 👨\u{200d}👩"), "Zoë 李 👨\u{200d}👩");
        assert_eq!(untrusted("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(untrusted("\x1b]0;title\x07"), "\\u{1b}]0;title\\u{7}");
        assert_eq!(untrusted("x\u{9b}2J"), "x\\u{9b}2J");
        assert_eq!(untrusted("abc\u{202e}fed"), "abc\\u{202e}fed");
        assert_eq!(untrusted("a\tb\r\nc"), "a\\tb\\r\\nc");
        assert_eq!(untrusted_lines("a\x1bb\r\nc\rd\n"), "a\\u{1b}b\nc\nd\n");
    }
}
