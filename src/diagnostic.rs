//! Diagnostics: what is wrong, where (line, column, byte span), and what to do.
//! Checks push them into a `Vec`; printing is the binary's job.

use serde::Serialize;
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
}

impl Code {
    pub const ALL: [Code; 25] = [
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
