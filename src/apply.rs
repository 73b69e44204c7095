//! What apply does outside the target: hash the passwords being set (on every core,
//! before the write transaction), and put together the history record. It never
//! prints; progress goes to the CLI as events.

use crate::FastMap;
use crate::config::HashParams;
use crate::model::{Column, Desired, Text};
use crate::plan::{Action, PlannedAction};
use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};
use rayon::prelude::*;
use std::io::Write;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("the password hash parameters are not valid: {0}")]
    Params(String),
    #[error("the plan sets the password of {0}, but the source has no password for that user")]
    Missing(Text),
    #[error("hashing a password failed: {0}")]
    Hash(String),
    /// Stopped on request (a watcher told to stop) before every password was
    /// hashed: nothing was written.
    #[error("stopped before the passwords were hashed")]
    Cancelled,
}

/// The users whose password the plan sets.
pub fn password_users(actions: &[PlannedAction]) -> Vec<&Text> {
    actions
        .iter()
        .filter_map(|a| match &a.action {
            Action::CreateUser { username, changes } | Action::UpdateUser { username, changes }
                if changes.iter().any(|c| c.sensitive) =>
            {
                Some(username)
            }
            _ => None,
        })
        .collect()
}

/// How many of the passwords the plan sets are hashed: the cells that hold a
/// PHC string already are not.
pub fn to_hash(desired: &Desired, actions: &[PlannedAction]) -> usize {
    password_users(actions)
        .into_iter()
        .filter(|username| {
            desired
                .user(username)
                .and_then(|u| u.password.as_ref())
                .is_none_or(|p| !crate::validate::rules::is_phc(p.expose()))
        })
        .count()
}

/// argon2id PHC strings of the passwords the plan sets, by username, hashed in
/// parallel (a cell that holds a PHC string already is taken as it is). Only
/// these passwords are hashed. When `cancel` is set, hashing stops
/// at the next password (each takes some milliseconds; all of them, minutes).
pub fn hash_passwords(
    desired: &Desired,
    actions: &[PlannedAction],
    params: &HashParams,
    cancel: Option<&std::sync::atomic::AtomicBool>,
) -> Result<FastMap<Text, String>, HashError> {
    let hasher = hasher(params)?;
    password_users(actions)
        .into_par_iter()
        .map(|username| {
            if cancel.is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed)) {
                return Err(HashError::Cancelled);
            }
            let password = desired
                .user(username)
                .and_then(|u| u.password.as_ref())
                .ok_or_else(|| HashError::Missing(username.clone()))?;
            // A cell that holds an argon2id hash (validated as one) is stored
            // as it is: hashing it again would make the hash the password.
            if crate::validate::rules::is_phc(password.expose()) {
                return Ok((username.clone(), password.expose().to_string()));
            }
            Ok((username.clone(), hash_with(&hasher, password.expose())?))
        })
        .collect()
}

/// The argon2id PHC string of one password, with the config's parameters
/// (`pbxsync hash-password`).
pub fn hash_password(password: &str, params: &HashParams) -> Result<String, HashError> {
    hash_with(&hasher(params)?, password)
}

fn hasher(params: &HashParams) -> Result<Argon2<'static>, HashError> {
    let params = Params::new(params.m_cost_kib, params.t_cost, params.p_cost, None)
        .map_err(|e| HashError::Params(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes with a fresh random salt.
fn hash_with(hasher: &Argon2<'_>, password: &str) -> Result<String, HashError> {
    let salt =
        argon2::password_hash::try_generate_salt().map_err(|e| HashError::Hash(e.to_string()))?;
    let hash = hasher
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map_err(|e| HashError::Hash(e.to_string()))?;
    Ok(hash.to_string())
}

/// The CSV as recorded in history: the file's text with the content of every
/// Password cell taken out and nothing else changed, written to `out` as it goes
/// (the history's CSV is compressed on the way instead of being held whole).
///
/// The text between passwords is copied as it is rather than written again cell
/// by cell: at a million rows that is a third of the time, and this runs beside
/// the apply's write, which waits for it to commit.
pub fn redact_into(
    text: &str,
    delimiter: u8,
    layout: &crate::csv::Layout,
    out: impl Write,
) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
    let Some(password) = layout.position(Column::Password) else {
        out.write_all(text.as_bytes())?;
        return out.flush();
    };
    let mut records = crate::csv::Records::new(text, delimiter);
    // The text before `copied` is written.
    let mut copied = 0;
    // The header is the first record (counting it by position, not by line, keeps
    // a line-counting slip from taking a data row for it and leaving its password).
    let mut header = layout.header_line.is_some();
    while let Some(rec) = records.next() {
        if std::mem::take(&mut header) || rec.len() <= password {
            continue;
        }
        // A cell read from a buffer (its quotes unescaped): the whole field,
        // quotes included, found in the text.
        let cell = rec
            .span(password, text)
            .unwrap_or_else(|| crate::csv::field_span(text, rec.start, delimiter, password));
        if !cell.is_empty() {
            out.write_all(&text.as_bytes()[copied..cell.start])?;
            copied = cell.end;
        }
    }
    out.write_all(&text.as_bytes()[copied..])?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Change, PlannedAction};
    use crate::validate::{Policy, validate};
    use argon2::PasswordVerifier;

    #[test]
    fn only_the_passwords_being_set_are_hashed_and_they_verify() {
        let v = validate(
            b"1001,Jason,Flynn,jflynn,Sec_ret12,,,,,\n1002,Wei,Chen,wchen,Sec_ret34,,,,,\n",
            &Policy::default(),
        );
        let actions = vec![PlannedAction {
            action: Action::CreateUser {
                username: "jflynn".into(),
                changes: vec![Change::password()],
            },
            line: Some(1),
            blame: None,
        }];
        let params = HashParams {
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
        };
        let hashes = hash_passwords(&v.desired, &actions, &params, None).unwrap();
        assert_eq!(hashes.len(), 1);
        let phc = &hashes[&Text::from("jflynn")];
        assert!(phc.starts_with("$argon2id$"));
        assert!(!phc.contains("Sec_ret12"));
        assert!(
            Argon2::default()
                .verify_password(b"Sec_ret12", phc.as_str())
                .is_ok()
        );
    }

    #[test]
    fn redaction_blanks_the_password_column_only() {
        let text = "Extension,Password,First Name,Last Name,Web Username\n1001,Sec_ret12,\"Jason, Jr\",Flynn,jflynn\n";
        let v = validate(text.as_bytes(), &Policy::default());
        let mut out = Vec::new();
        redact_into(text, b',', &v.layout, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Extension,Password,First Name,Last Name,Web Username\n1001,,\"Jason, Jr\",Flynn,jflynn\n"
        );
    }

    /// The records of `text` with the Password cell of every data row blank, as
    /// `redact_into`'s output must read.
    fn redacted_records(text: &str, password: usize, header: Option<u32>) -> Vec<Vec<String>> {
        let mut records = crate::csv::Records::new(text, b',');
        let mut rows = Vec::new();
        while let Some(rec) = records.next() {
            let mut cells: Vec<String> = rec.iter().map(String::from).collect();
            if header != Some(rec.line)
                && let Some(cell) = cells.get_mut(password)
            {
                cell.clear();
            }
            // A row that held only a password reads as a blank line now.
            if cells.iter().any(|c| !c.trim_ascii().is_empty()) {
                rows.push(cells);
            }
        }
        rows
    }

    #[test]
    fn redaction_copies_the_text_around_the_passwords_whatever_their_quotes() {
        let text = "Extension,Password,First Name,Last Name,Web Username\r\n1001,\"Sec\"\"ret\",jflynn\r\n\r\n\
                    1002,\"multi\nline\",wchen\r\n1003,plain,\"a, b\"\n1004\n1005,,x\n1006,tail";
        let v = validate(text.as_bytes(), &Policy::default());
        let mut out = Vec::new();
        redact_into(text, b',', &v.layout, &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            "Extension,Password,First Name,Last Name,Web Username\r\n1001,,jflynn\r\n\r\n\
             1002,\"\",wchen\r\n1003,,\"a, b\"\n1004\n1005,,x\n1006,"
        );
        assert_eq!(
            redacted_records(&out, 1, Some(1)),
            redacted_records(text, 1, Some(1))
        );
    }

    proptest::proptest! {
        /// The redacted text reads as the original with every data row's
        /// Password cell blank, and holds no password.
        #[test]
        fn redaction_blanks_exactly_the_password_cells(
            rows in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::string::string_regex("(a|é|,|\"|\r|\n| ){0,6}").unwrap(),
                    0..4,
                ),
                0..6,
            ),
            secrets in proptest::collection::vec(0u32..1000, 6),
        ) {
            // Cells as a writer of CSV would quote them, the second a password.
            let quote = |c: &str| {
                if c.contains([',', '"', '\r', '\n']) {
                    format!("\"{}\"", c.replace('"', "\"\""))
                } else {
                    c.to_owned()
                }
            };
            let mut text = String::from("Extension,Password,First Name,Last Name,Web Username\n");
            for (row, secret) in rows.iter().zip(&secrets) {
                let mut cells: Vec<String> = row.iter().map(|c| quote(c)).collect();
                if cells.len() > 1 {
                    // Odd ones need unescaping.
                    let quote_in_it = if secret % 2 == 1 { "\"" } else { "" };
                    cells[1] = quote(&format!("S{quote_in_it}ecret{secret}"));
                }
                text.push_str(&cells.join(","));
                text.push('\n');
            }
            let layout = validate(text.as_bytes(), &Policy::default()).layout;
            let mut out = Vec::new();
            redact_into(&text, b',', &layout, &mut out).unwrap();
            let out = String::from_utf8(out).unwrap();
            proptest::prop_assert!(!out.contains("ecret"), "{out:?}");
            proptest::prop_assert_eq!(
                redacted_records(&out, 1, Some(1)),
                redacted_records(&text, 1, Some(1))
            );
        }
    }
}
