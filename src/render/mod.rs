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
