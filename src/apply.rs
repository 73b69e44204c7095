//! What apply does outside the target: hash the passwords being set (on every core,
//! before the write transaction), and put together the history record. It never
//! prints; progress goes to the CLI as events.

use crate::config::HashParams;
use crate::model::{Column, Desired, Text};
use crate::plan::{Action, PlannedAction};
use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};
use rayon::prelude::*;
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("the password hash parameters are not valid: {0}")]
    Params(String),
    #[error("the plan sets the password of {0}, but the source has no password for that user")]
    Missing(Text),
    #[error("hashing a password failed: {0}")]
    Hash(String),
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

/// argon2id PHC strings of the passwords the plan sets, by username, hashed in
/// parallel. Only these passwords are hashed.
pub fn hash_passwords(
    desired: &Desired,
    actions: &[PlannedAction],
    params: &HashParams,
) -> Result<HashMap<Text, String>, HashError> {
    let params = Params::new(params.m_cost_kib, params.t_cost, params.p_cost, None)
        .map_err(|e| HashError::Params(e.to_string()))?;
    let hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    password_users(actions)
        .into_par_iter()
        .map(|username| {
            let password = desired
                .user(username)
                .and_then(|u| u.password.as_ref())
                .ok_or_else(|| HashError::Missing(username.clone()))?;
            let salt = argon2::password_hash::try_generate_salt()
                .map_err(|e| HashError::Hash(e.to_string()))?;
            let hash = hasher
                .hash_password_with_salt(password.expose().as_bytes(), &salt)
                .map_err(|e| HashError::Hash(e.to_string()))?;
            Ok((username.clone(), hash.to_string()))
        })
        .collect()
}

/// The CSV as recorded in history, the Password column blanked and nothing else
/// changed, written to `out` as it goes: the history's CSV is compressed on the
/// way instead of being held whole.
pub fn redact_into(
    text: &str,
    delimiter: u8,
    layout: &crate::csv::Layout,
    mut out: impl std::io::Write,
) -> std::io::Result<()> {
    let Some(password) = layout.position(Column::Password) else {
        return out.write_all(text.as_bytes());
    };
    let mut writer = csv::WriterBuilder::new()
        .delimiter(delimiter)
        .terminator(csv::Terminator::Any(b'\n'))
        .flexible(true)
        .from_writer(out);
    let mut records = crate::csv::Records::new(text, delimiter);
    while let Some(rec) = records.next() {
        let mut cells: Vec<&str> = rec.iter().collect();
        if layout.header_line != Some(rec.line)
            && let Some(p) = cells.get_mut(password)
        {
            *p = "";
        }
        writer.write_record(&cells)?;
    }
    writer.flush()
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
        let hashes = hash_passwords(&v.desired, &actions, &params).unwrap();
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
}
