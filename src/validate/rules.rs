//! The rules for one cell, each a pure function with its accepting and rejecting
//! cases tested beside it. A rule says what is wrong and what to do; the caller adds
//! where.

use crate::diagnostic::Code;
use crate::model::{DeviceCell, Text};
use crate::policy::PasswordPolicy;
use std::borrow::Cow;

/// What is wrong with a cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub code: Code,
    pub message: String,
    pub hint: Option<String>,
}

impl Problem {
    fn new(code: Code, message: impl Into<String>, hint: impl Into<String>) -> Problem {
        Problem {
            code,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }
}

type Rule = Result<(), Problem>;

/// The compiled extension rule: the default pattern is checked without a regex.
#[derive(Debug, Clone)]
pub enum ExtensionRule {
    Default,
    /// `regex` is `pattern` anchored at both ends; `pattern` is what the config
    /// says, for messages.
    Pattern {
        regex: regex::Regex,
        pattern: String,
    },
}

/// Why `policy.extension_pattern` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    #[error("it is empty, which would accept any extension")]
    Empty,
    #[error("it is not a valid regular expression: {0}")]
    Invalid(#[from] regex::Error),
}

impl ExtensionRule {
    /// Compiles the pattern so that it must match the whole cell: `[0-9]{2,8}`
    /// must not accept `x12y` by matching its middle.
    pub fn new(pattern: &str) -> Result<ExtensionRule, PatternError> {
        if pattern.trim().is_empty() {
            return Err(PatternError::Empty);
        }
        // The default, anchored or not, is checked without a regex.
        if matches!(
            pattern,
            crate::policy::DEFAULT_EXTENSION_PATTERN | "[0-9]{2,8}"
        ) {
            return Ok(ExtensionRule::Default);
        }
        // Compiled alone first: wrapped, a pattern such as `1)|(2` would read as
        // a valid one that it is not.
        regex::Regex::new(pattern)?;
        let regex = regex::Regex::new(&format!("^(?:{pattern})$"))?;
        Ok(ExtensionRule::Pattern {
            regex,
            pattern: pattern.to_string(),
        })
    }

    pub fn check(&self, value: &str) -> Rule {
        let ok = match self {
            ExtensionRule::Default => {
                (2..=8).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_digit())
            }
            ExtensionRule::Pattern { regex, .. } => regex.is_match(value),
        };
        if ok {
            return Ok(());
        }
        let expected = match self {
            ExtensionRule::Default => "2 to 8 digits".to_string(),
            ExtensionRule::Pattern { pattern, .. } => {
                format!("the whole of it to match the pattern `{pattern}`")
            }
        };
        Err(Problem::new(
            Code::BadExtension,
            format!("extension `{value}` is not valid: expected {expected}"),
            "an extension is the number people dial, e.g. 1001",
        ))
    }
}

pub fn username(value: &str) -> Rule {
    let chars_ok = value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if chars_ok && (2..=32).contains(&value.len()) {
        return Ok(());
    }
    let hint = if !chars_ok && value.bytes().any(|b| b.is_ascii_uppercase()) {
        format!(
            "web usernames are lower case: `{}`",
            value.to_ascii_lowercase()
        )
    } else if !chars_ok {
        "use only lower-case letters, digits, `.`, `_` and `-`".to_string()
    } else {
        "a web username has 2 to 32 characters".to_string()
    };
    Err(Problem::new(
        Code::BadUsername,
        format!("web username `{value}` is not valid"),
        hint,
    ))
}

/// First and last names: any letters, inner spaces; no apostrophe unless allowed;
/// nothing that a spreadsheet would run as a formula.
pub fn name(column: &str, value: &str, allow_apostrophes: bool) -> Rule {
    if let Some(&b) = value.as_bytes().first()
        && is_formula_start(b)
    {
        let what = formula_start_name(b);
        return Err(Problem::new(
            Code::BadName,
            format!("{column} starts with {what}, which a spreadsheet runs as a formula"),
            format!("a name starts with a letter: remove the {what}"),
        ));
    }
    // An ASCII name (the usual one) is settled in one pass over its bytes.
    if value.is_ascii() && !value.bytes().any(|b| b == b'\'' || b.is_ascii_control()) {
        return Ok(());
    }
    let apostrophe =
        value.bytes().any(|b| b == b'\'') || (!value.is_ascii() && value.contains('\u{2019}'));
    if !allow_apostrophes && apostrophe {
        let without: String = value
            .chars()
            .filter(|c| !matches!(c, '\'' | '\u{2019}'))
            .collect();
        return Err(Problem::new(
            Code::NameApostrophe,
            format!(
                "{column} `{value}` contains an apostrophe, which the phone system does not accept"
            ),
            format!(
                "write it without the apostrophe (`{without}`), or set `policy.allow_apostrophes: true`"
            ),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Problem::new(
            Code::BadName,
            format!("{column} contains a control character (a tab or line break)"),
            "remove the line break or tab from the cell",
        ));
    }
    Ok(())
}

/// A free-text cell (Description, Email, IM) that a spreadsheet opening the file
/// would run as a formula. The value may be meant, so the caller reports this as
/// a warning; the hint gives the escape that keeps it. Never echoes the value.
pub fn formula_like(column: &str, value: &str) -> Rule {
    match value.as_bytes().first() {
        Some(&b) if is_formula_start(b) => Err(Problem::new(
            Code::FormulaLikeCell,
            format!(
                "{column} starts with {}, which a spreadsheet opening this file runs as a formula",
                formula_start_name(b)
            ),
            "write a `'` before it (pbxsync reads a leading `'` before `=`, `+`, `-` or `@` as an escape and drops it), or run `pbxsync fmt`",
        )),
        _ => Ok(()),
    }
}

/// Whether a Password cell holds a password hash in PHC form (`$argon2id$…`)
/// rather than a password: such a cell is checked by `phc` and stored as it is
/// (SPEC section 3, rule 9).
pub fn is_phc(value: &str) -> bool {
    value.starts_with("$argon2")
}

/// A Password cell that holds a PHC string: it must be an argon2id hash of
/// version 19 with parameters argon2 accepts, a salt and a hash, since the phone
/// system verifies logins against it as it is. Never echoes the cell.
pub fn phc(value: &str) -> Rule {
    let invalid = |why: &str| {
        Err(Problem::new(
            Code::PasswordPolicy,
            format!(
                "the Password cell looks like an argon2 hash but is not a valid argon2id PHC string: {why}"
            ),
            "make the hash with `pbxsync hash-password`, and put it in the cell whole (in double quotes: it holds commas)",
        ))
    };
    let Ok(hash) = argon2::PasswordHash::new(value) else {
        return invalid("it does not parse as `$argon2id$v=19$m=…,t=…,p=…$salt$hash`");
    };
    if hash.algorithm.as_str() != "argon2id" {
        return invalid("only argon2id is accepted");
    }
    if hash.version != Some(19) {
        return invalid("the version must be v=19");
    }
    if hash.salt.is_none() || hash.hash.is_none() {
        return invalid("the salt or the hash is missing");
    }
    if argon2::Params::try_from(&hash).is_err() {
        return invalid("its m, t and p parameters are not ones argon2 accepts");
    }
    Ok(())
}

/// A Password cell that holds the password itself (`policy.plaintext_passwords`
/// says whether that is allowed, a warning or an error).
pub fn plaintext_password() -> Problem {
    Problem::new(
        Code::PlaintextPassword,
        "the Password cell holds a plaintext password, which everyone who can read the repository can read",
        "store its argon2id hash instead: run `pbxsync hash-password` and put what it prints in the cell, in double quotes; `policy.plaintext_passwords` sets whether this is allowed, a warning or an error",
    )
}

/// Never echoes the password: messages name the rule it breaks.
pub fn password(value: &str, policy: &PasswordPolicy) -> Rule {
    // One pass over the characters; over the bytes when they are all ASCII,
    // where the Unicode classes agree with the ASCII ones.
    let (mut length, mut upper, mut digits, mut space) = (0, 0, 0, false);
    if value.is_ascii() {
        length = value.len();
        for b in value.bytes() {
            upper += usize::from(b.is_ascii_uppercase());
            digits += usize::from(b.is_ascii_digit());
            // `char::is_whitespace` on ASCII: tab to carriage return, and space.
            space |= matches!(b, b'\t'..=b'\r' | b' ');
        }
    } else {
        for c in value.chars() {
            length += 1;
            upper += usize::from(c.is_uppercase());
            digits += usize::from(c.is_ascii_digit());
            space |= c.is_whitespace();
        }
    }
    let mut wrong = Vec::new();
    if space {
        wrong.push("no spaces".to_string());
    }
    if length < policy.min_length {
        wrong.push(format!("at least {} characters", policy.min_length));
    }
    if upper < policy.min_upper {
        wrong.push(format!(
            "at least {} upper-case letter(s)",
            policy.min_upper
        ));
    }
    if digits < policy.min_digits {
        wrong.push(format!("at least {} digits", policy.min_digits));
    }
    if wrong.is_empty() {
        return Ok(());
    }
    Err(Problem::new(
        Code::PasswordPolicy,
        format!(
            "the password does not meet the policy: it needs {}",
            wrong.join(", ")
        ),
        "choose another password (underscores are fine); the policy is `policy.password` in pbxsync.yaml",
    ))
}

pub fn email(value: &str) -> Rule {
    let ok = match value.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.as_bytes().windows(2).any(|w| w == b"..")
                && !has_bad_email_char(value)
        }
        None => false,
    };
    if ok {
        return Ok(());
    }
    Err(Problem::new(
        Code::BadEmail,
        format!("email `{value}` does not look like an address"),
        "write it as name@example.com, or leave the cell empty",
    ))
}

/// A space, a control character, or one that separates addresses in a list.
fn has_bad_email_char(value: &str) -> bool {
    if value.is_ascii() {
        // On ASCII, `char::is_whitespace` is a control character or a space.
        value
            .bytes()
            .any(|b| b.is_ascii_control() || matches!(b, b' ' | b',' | b';' | b'<' | b'>'))
    } else {
        value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, ',' | ';' | '<' | '>'))
    }
}

pub fn mobile(value: &str) -> Rule {
    let chars_ok = value
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b' ' | b'+' | b'-' | b'(' | b')'));
    if chars_ok && value.bytes().any(|b| b.is_ascii_digit()) {
        return Ok(());
    }
    Err(Problem::new(
        Code::BadMobile,
        format!("mobile number `{value}` is not valid"),
        "use digits, spaces, `+`, `-`, `(` and `)`, e.g. +1 555 0100",
    ))
}

/// A device id with O read as zero and I or L as one, when that changes it; a MAC
/// in its canonical form (`00-04-F2-AA-BB-O9` reads as a soft-phone id until its
/// O is a zero).
pub fn slip_fixed(id: &str) -> Option<String> {
    // Most ids have no such letter: nothing to build.
    if !id.contains(['O', 'I', 'L']) {
        return None;
    }
    let fixed: String = id
        .chars()
        .map(|c| match c {
            'O' => '0',
            'I' | 'L' => '1',
            c => c,
        })
        .collect();
    let fixed = match device(&fixed) {
        Ok(DeviceCell::Device(canonical)) => canonical.to_string(),
        _ => fixed,
    };
    (fixed != id).then_some(fixed)
}

/// Reads the Device MAC Address cell: empty, `virtual`, a MAC in any usual form
/// (separators `:` `-` `.`, any case), or a soft-phone id (letters, digits, `_`, `-`).
pub fn device(value: &str) -> Result<DeviceCell, Problem> {
    if value.is_empty() {
        return Ok(DeviceCell::Keep);
    }
    if value.eq_ignore_ascii_case("virtual") {
        return Ok(DeviceCell::Virtual);
    }
    // The common case, a bare MAC, without building any string on the heap.
    if value.len() == 12 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut id = [0u8; 12];
        for (to, from) in id.iter_mut().zip(value.bytes()) {
            *to = from.to_ascii_uppercase();
        }
        let id = std::str::from_utf8(&id).unwrap_or_default();
        return Ok(DeviceCell::Device(Text::from(id)));
    }
    let compact: String = value
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | '.'))
        .collect();
    if compact.len() == 12 && compact.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(DeviceCell::Device(Text::from(compact.to_ascii_uppercase())));
    }
    let looks_like_mac = value.contains([':', '.'])
        || (compact.len() >= 10 && compact.bytes().all(|b| b.is_ascii_hexdigit()));
    if looks_like_mac {
        let digits = compact.bytes().filter(u8::is_ascii_hexdigit).count();
        let detail = if compact.bytes().all(|b| b.is_ascii_hexdigit()) {
            format!("it has {digits} hex digits")
        } else {
            "it has characters that are not hex digits".to_string()
        };
        // Written with separators it is surely a MAC, so an O, I or L in it is
        // surely the slip for 0 or 1: named even without an inventory to look in.
        let hint = match slip_fixed(&compact.to_ascii_uppercase()) {
            Some(fixed) if fixed.len() == 12 && fixed.bytes().all(|b| b.is_ascii_hexdigit()) => {
                format!(
                    "did you mean {fixed}? A MAC has the digits 0 and 1, never the letters O, I or L"
                )
            }
            _ => "copy the MAC from the phone's label, e.g. 00:04:F2:12:34:56".to_string(),
        };
        return Err(Problem::new(
            Code::BadDevice,
            format!("`{value}` is not a MAC address: a MAC has 12 hex digits, {detail}"),
            hint,
        ));
    }
    let softphone_ok = value.len() <= 32
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if softphone_ok {
        return Ok(DeviceCell::Device(Text::from(value.to_ascii_uppercase())));
    }
    Err(Problem::new(
        Code::BadDevice,
        format!("`{value}` is neither a MAC address, a soft-phone id nor `virtual`"),
        "write a MAC (e.g. 0004F2123456), a soft-phone id (e.g. SOFTPHONE001), `virtual`, or leave it empty",
    ))
}

/// Whether a spreadsheet that opens the file reads a cell starting with this byte
/// as a formula (OWASP's list for CSV injection).
pub fn is_formula_start(b: u8) -> bool {
    matches!(b, b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
}

/// How messages name a formula start.
pub fn formula_start_name(b: u8) -> &'static str {
    match b {
        b'=' => "`=`",
        b'+' => "`+`",
        b'-' => "`-`",
        b'@' => "`@`",
        b'\t' => "a tab",
        _ => "a carriage return",
    }
}

/// What the `'` escape may stand before: a formula start, or another `'` so that a
/// value which itself starts with `'=` or `''` can be written as well.
fn is_escapable(b: u8) -> bool {
    is_formula_start(b) || b == b'\''
}

/// The value of a cell that may be written with the spreadsheet escape: a leading
/// `'` before a formula start or another `'` is taken away (`'=SUM(A1)` is
/// `=SUM(A1)`, `''x` is `'x`); any other leading `'` is part of the value. Looks
/// at the first byte, and at the second only when the first is `'`.
pub fn unescape(cell: &str) -> &str {
    match cell.as_bytes() {
        [b'\'', b, ..] if is_escapable(*b) => &cell[1..],
        _ => cell,
    }
}

/// The cell that `export` and `fmt` write for a value: `'` before it when a
/// spreadsheet would run it as a formula, or when it starts the way an escape
/// does, so that `unescape` gives the value back. Mobile is written as it is: its
/// rule lets through no formula that calls anything, and `+` is how an
/// international number starts.
pub fn escape(column: crate::model::Column, value: &str) -> Cow<'_, str> {
    let needed = match value.as_bytes() {
        _ if column == crate::model::Column::Mobile => false,
        [b'\'', b, ..] => is_escapable(*b),
        [b, ..] => is_formula_start(*b),
        [] => false,
    };
    if needed {
        Cow::Owned(format!("'{value}"))
    } else {
        Cow::Borrowed(value)
    }
}

/// The canonical spelling of a cell, as `fmt` writes it: trimmed, MACs in 12
/// upper-case hex digits, `virtual` in lower case, and escaped where a spreadsheet
/// would run it as a formula.
pub fn canonical(column: crate::model::Column, value: &str) -> Cow<'_, str> {
    let trimmed = value.trim();
    let unescaped = unescape(trimmed);
    // `'` and a tab: what the escape keeps starts with whitespace, which fmt trims.
    let value = if unescaped.len() == trimmed.len() {
        trimmed
    } else {
        unescaped.trim()
    };
    if column == crate::model::Column::Device {
        match device(value) {
            Ok(DeviceCell::Virtual) => return Cow::Borrowed("virtual"),
            Ok(DeviceCell::Device(id)) if id != value => {
                return Cow::Owned(escape(column, &id).into_owned());
            }
            _ => {}
        }
    }
    escape(column, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: PasswordPolicy = PasswordPolicy {
        min_length: 8,
        min_upper: 1,
        min_digits: 2,
    };

    #[test]
    fn extensions() {
        let r = ExtensionRule::new(crate::policy::DEFAULT_EXTENSION_PATTERN).unwrap();
        for ok in ["10", "1001", "12345678"] {
            assert_eq!(r.check(ok), Ok(()), "{ok}");
        }
        for bad in ["1", "123456789", "10a1", "١٢٣", ""] {
            assert_eq!(r.check(bad).unwrap_err().code, Code::BadExtension, "{bad}");
        }
        let r = ExtensionRule::new("^[0-9]{3}$").unwrap();
        assert!(r.check("100").is_ok() && r.check("1000").is_err());
    }

    #[test]
    fn an_extension_pattern_matches_the_whole_cell() {
        // Not the default spelling, so the regex is used.
        let r = ExtensionRule::new("[0-9]{2,4}").unwrap();
        assert!(matches!(r, ExtensionRule::Pattern { .. }));
        assert_eq!(r.check("1001"), Ok(()));
        for bad in ["x12y", "12y", "x12", "12345", "1"] {
            let e = r.check(bad).unwrap_err();
            assert_eq!(e.code, Code::BadExtension, "{bad}");
            // The message names the pattern as written, not the anchored one.
            assert!(e.message.contains("`[0-9]{2,4}`"), "{}", e.message);
        }
        // An alternation is anchored as a whole, not only its first and last branch.
        let r = ExtensionRule::new("1[0-9]|2[0-9]{2}").unwrap();
        assert!(r.check("15").is_ok() && r.check("250").is_ok());
        assert!(r.check("15x").is_err() && r.check("x250").is_err());
        // The default pattern unanchored means the same, and takes the fast path.
        assert!(matches!(
            ExtensionRule::new("[0-9]{2,8}").unwrap(),
            ExtensionRule::Default
        ));
        for empty in ["", "  "] {
            assert!(matches!(
                ExtensionRule::new(empty),
                Err(PatternError::Empty)
            ));
        }
        // Wrapped, `1)|(2` would compile; alone it is not a pattern.
        assert!(matches!(
            ExtensionRule::new("1)|(2"),
            Err(PatternError::Invalid(_))
        ));
    }

    #[test]
    fn usernames() {
        for ok in ["jflynn", "j.flynn-2_x", "ab"] {
            assert_eq!(username(ok), Ok(()), "{ok}");
        }
        let e = username("JFlynn").unwrap_err();
        assert_eq!(
            e.hint.as_deref(),
            Some("web usernames are lower case: `jflynn`")
        );
        for bad in ["a", "j flynn", "jflynn@x", &"x".repeat(33), "zoë"] {
            assert_eq!(username(bad).unwrap_err().code, Code::BadUsername, "{bad}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(name("First Name", "Zoë Anne", false), Ok(()));
        assert_eq!(name("Last Name", "Nguyễn", false), Ok(()));
        let e = name("Last Name", "O'Brien", false).unwrap_err();
        assert_eq!(e.code, Code::NameApostrophe);
        assert!(e.hint.unwrap().contains("OBrien"));
        assert_eq!(
            name("Last Name", "O’Brien", false).unwrap_err().code,
            Code::NameApostrophe
        );
        assert_eq!(name("Last Name", "O'Brien", true), Ok(()));
        assert_eq!(
            name("Last Name", "a\tb", true).unwrap_err().code,
            Code::BadName
        );
    }

    #[test]
    fn names_that_a_spreadsheet_runs_are_refused() {
        for bad in ["=cmd|' /C calc'!A0", "+1", "-Chen", "@SUM(1)", "\tx", "\rx"] {
            let e = name("First Name", bad, true).unwrap_err();
            assert_eq!(e.code, Code::BadName, "{bad:?}");
            assert!(e.message.contains("formula"), "{}", e.message);
        }
        // Inside a name they are harmless.
        assert_eq!(name("Last Name", "Smith-Jones", false), Ok(()));
        assert_eq!(name("Last Name", "A+B", false), Ok(()));
    }

    #[test]
    fn formula_like_free_text_is_named_without_its_value() {
        for cell in ["=SUM(A1)", "+1 555", "-x", "@home", "\tx", "\rx"] {
            let e = formula_like("Description", cell).unwrap_err();
            assert_eq!(e.code, Code::FormulaLikeCell, "{cell:?}");
            assert!(!e.message.contains(cell), "{}", e.message);
        }
        for ok in ["Sales desk", "a=b", "'=SUM(A1)", ""] {
            assert_eq!(formula_like("IM", ok), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn the_formula_escape() {
        use crate::model::Column;
        for (cell, value) in [
            ("'=SUM(A1)", "=SUM(A1)"),
            ("'+1 555", "+1 555"),
            ("'-x", "-x"),
            ("'@home", "@home"),
            ("'\tx", "\tx"),
            ("''=x", "'=x"),
            ("''x", "'x"),
            // Any other leading `'` is part of the value.
            ("'x", "'x"),
            ("' =x", "' =x"),
            ("'", "'"),
            ("=x", "=x"),
        ] {
            assert_eq!(unescape(cell), value, "{cell:?}");
        }
        assert_eq!(escape(Column::Description, "=SUM(A1)"), "'=SUM(A1)");
        assert_eq!(escape(Column::WebUsername, "-wchen"), "'-wchen");
        assert_eq!(escape(Column::Description, "'=x"), "''=x");
        assert_eq!(escape(Column::Description, "'x"), "'x");
        assert_eq!(escape(Column::Description, "Sales"), "Sales");
        // Mobile is exempt: `+` starts an international number.
        assert_eq!(escape(Column::Mobile, "+1 555 0100"), "+1 555 0100");
    }

    proptest::proptest! {
        /// Whatever the value, what `escape` writes reads back as it (Mobile
        /// apart, whose rule allows no `'`), and never starts a formula.
        #[test]
        fn escaping_round_trips_and_is_never_a_formula(
            value in proptest::string::string_regex("['=+\\-@\t\r a1é]{0,6}").unwrap(),
            column in proptest::sample::select(crate::model::Column::ALL.to_vec()),
        ) {
            proptest::prop_assume!(column != crate::model::Column::Mobile);
            let cell = escape(column, &value);
            proptest::prop_assert_eq!(unescape(&cell), value.as_str());
            proptest::prop_assert!(!cell.bytes().next().is_some_and(is_formula_start));
        }
    }

    #[test]
    fn passwords() {
        assert_eq!(password("Sec_ret12", &POLICY), Ok(()));
        for bad in ["secret12", "Secret1x", "Sh0rt1", "Secret 12"] {
            let e = password(bad, &POLICY).unwrap_err();
            assert_eq!(e.code, Code::PasswordPolicy, "{bad}");
            assert!(
                !e.message.contains(bad),
                "the message must not echo the password"
            );
        }
        assert!(
            password("secret12", &POLICY)
                .unwrap_err()
                .message
                .contains("upper-case")
        );
        assert!(
            password("Secret1x", &POLICY)
                .unwrap_err()
                .message
                .contains("2 digits")
        );
        assert!(
            password("Sh0rt1", &POLICY)
                .unwrap_err()
                .message
                .contains("8 characters")
        );
        let strict = PasswordPolicy {
            min_length: 12,
            min_upper: 2,
            min_digits: 3,
        };
        assert!(password("Sec_ret12", &strict).is_err());
        assert!(password("SeC_ret12345", &strict).is_ok());
    }

    #[test]
    fn emails() {
        for ok in ["jason@example.com", "a.b+c@sub.example.co.uk"] {
            assert_eq!(email(ok), Ok(()), "{ok}");
        }
        for bad in [
            "jason",
            "jason@",
            "@example.com",
            "jason@example",
            "a@b@c.com",
            "a b@c.com",
            "a@.com",
        ] {
            assert_eq!(email(bad).unwrap_err().code, Code::BadEmail, "{bad}");
        }
    }

    #[test]
    fn mobiles() {
        for ok in ["+1 (555) 010-0100", "0612345678"] {
            assert_eq!(mobile(ok), Ok(()), "{ok}");
        }
        for bad in ["call me", "+1 555 0100 ext 2", "--"] {
            assert_eq!(mobile(bad).unwrap_err().code, Code::BadMobile, "{bad}");
        }
    }

    #[test]
    fn devices() {
        let mac = |s: &str| DeviceCell::Device(Text::from(s));
        assert_eq!(device(""), Ok(DeviceCell::Keep));
        assert_eq!(device("VIRTUAL"), Ok(DeviceCell::Virtual));
        assert_eq!(device("0004f2123456"), Ok(mac("0004F2123456")));
        assert_eq!(device("00:04:f2:12:34:56"), Ok(mac("0004F2123456")));
        assert_eq!(device("00-04-F2-12-34-56"), Ok(mac("0004F2123456")));
        assert_eq!(device("0004.f212.3456"), Ok(mac("0004F2123456")));
        assert_eq!(device("SoftPhone001"), Ok(mac("SOFTPHONE001")));
        let e = device("00:04:F2:12:34").unwrap_err();
        assert!(e.message.contains("10 hex digits"), "{}", e.message);
        assert_eq!(
            device("00:04:F2:12:34:5G").unwrap_err().code,
            Code::BadDevice
        );
        assert_eq!(device("desk phone").unwrap_err().code, Code::BadDevice);
        // O for 0 and I or L for 1, in a MAC with separators in any case.
        for slip in ["00:04:f2:aa:bb:O9", "00:04:F2:AA:BB:o9", "0004.f2aa.bbO9"] {
            let e = device(slip).unwrap_err();
            assert_eq!(e.code, Code::BadDevice, "{slip}");
            assert!(
                e.hint
                    .as_deref()
                    .unwrap()
                    .starts_with("did you mean 0004F2AABB09?"),
                "{slip}: {:?}",
                e.hint
            );
        }
        let e = device("00:04:f2:aa:bL:I9").unwrap_err();
        assert!(e.hint.unwrap().starts_with("did you mean 0004F2AAB119?"));
        // No slip turns a G into a hex digit.
        let e = device("00:04:f2:aa:bb:G9").unwrap_err();
        assert!(e.hint.unwrap().starts_with("copy the MAC"));
        // With dashes it reads as a soft-phone id; what the slip meant is a MAC.
        assert_eq!(
            slip_fixed("00-04-F2-AA-BB-O9").as_deref(),
            Some("0004F2AABB09")
        );
        assert_eq!(slip_fixed("S0FTPHONE1").as_deref(), Some("S0FTPH0NE1"));
        assert_eq!(slip_fixed("0004F2AABB09"), None);
        assert_eq!(device("ünïcode").unwrap_err().code, Code::BadDevice);
    }

    #[test]
    fn canonical_cells() {
        use crate::model::Column;
        assert_eq!(
            canonical(Column::Device, " 00:04:f2:12:34:56 "),
            "0004F2123456"
        );
        assert_eq!(canonical(Column::Device, "Virtual"), "virtual");
        assert_eq!(canonical(Column::Device, "bad value!"), "bad value!");
        assert_eq!(canonical(Column::FirstName, " Jason "), "Jason");
        // The escaped form, whether the file had it or not.
        assert_eq!(canonical(Column::Description, "=SUM(A1)"), "'=SUM(A1)");
        assert_eq!(canonical(Column::Description, " '=SUM(A1) "), "'=SUM(A1)");
        assert_eq!(canonical(Column::Description, "''x"), "'x");
        assert_eq!(canonical(Column::Im, "'\t@home"), "'@home");
        assert_eq!(canonical(Column::Mobile, "'+1 555"), "+1 555");
        assert_eq!(canonical(Column::Device, "-soft"), "'-SOFT");
    }
}
