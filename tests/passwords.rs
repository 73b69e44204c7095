//! Passwords (SPEC section 3, rule 9): which applies set a password (a changed
//! Password cell, `--reset-passwords`), compared with the CSV of the last apply
//! in git whatever the source; a history that lost that CSV; argon2id PHC cells
//! stored as they are; `pbxsync hash-password`; plaintext cells; masks.

use crate::support::{HEADER, Test, types};
use argon2::PasswordVerifier;
use serde_json::json;

const ROWS: &str = "\
1001,Jason,Flynn,jflynn,Sec_ret12,Desk,jason@example.com,,,virtual\n\
1002,Maria,Garcia,mgarcia,Pass_word34,,,,,\n\
1003,Maria,Garcia,mgarcia,,Soft phone,,,,virtual\n\
1004,Wei,Chen,wchen,Wei_pass56,,,,,\n";

fn csv() -> String {
    format!("{HEADER}{ROWS}")
}

fn applied() -> Test {
    let t = Test::repo();
    t.commit_csv(csv());
    t.apply(&[]);
    t
}

/// The stored hash of a user's password.
fn stored(t: &Test, username: &str) -> String {
    t.sql(&format!(
        "SELECT hash FROM passwords JOIN users ON users.id = user_id \
         WHERE username = '{username}'"
    ))
    .pop()
    .unwrap_or_else(|| panic!("no password for {username}"))
}

/// Every user's stored hash, by username.
fn all_stored(t: &Test) -> Vec<String> {
    t.sql(
        "SELECT username || ' ' || hash FROM passwords JOIN users ON users.id = user_id \
         ORDER BY username",
    )
}

fn verifies(t: &Test, username: &str, password: &str) -> bool {
    argon2::Argon2::default()
        .verify_password(
            password.as_bytes(),
            &argon2::PasswordHash::new(&stored(t, username)).unwrap(),
        )
        .is_ok()
}

/// The usernames whose password a plan sets.
fn password_users(plan: &serde_json::Value) -> Vec<String> {
    plan["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter(|a| {
            a["changes"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["field"] == "password"))
        })
        .map(|a| a["username"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Both paths a plan can take: the rows whose digest changed, and the whole
/// directory (`PBXSYNC_FULL_PLAN`).
fn plan_both(t: &Test, args: &[&str]) -> serde_json::Value {
    let changed_rows = t.plan_json(args);
    let mut all = vec!["plan", "--format", "json"];
    all.extend_from_slice(args);
    let whole = t.cmd().env("PBXSYNC_FULL_PLAN", "1").args(&all).output().unwrap();
    let whole: serde_json::Value = serde_json::from_slice(&whole.stdout).unwrap();
    assert_eq!(changed_rows["actions"], whole["actions"]);
    assert_eq!(changed_rows["warnings"], whole["warnings"]);
    changed_rows
}

#[test]
fn a_changed_cell_sets_that_users_password_and_no_other() {
    let t = applied();
    let before = all_stored(&t);
    // Maria's cell changes; Jason's row changes in another cell only.
    t.commit_csv(
        csv()
            .replace("Pass_word34", "New_word78")
            .replace(",Desk,", ",Front desk,"),
    );
    let plan = plan_both(&t, &[]);
    assert_eq!(password_users(&plan), ["mgarcia"], "{plan:#}");
    assert_eq!(
        actions_of(&plan, "mgarcia")["changes"],
        json!([{"field": "password", "sensitive": true}])
    );
    t.apply(&[]);
    assert!(verifies(&t, "mgarcia", "New_word78"));
    let after = all_stored(&t);
    assert_eq!(after[0], before[0], "jflynn's hash is untouched");
    assert_eq!(after[2], before[2], "wchen's hash is untouched");
    assert_ne!(after[1], before[1]);
    // Applied: the same file again changes nothing, with or without the shortcut.
    t.devices(&["0004F2000009"]);
    assert_eq!(plan_both(&t, &[])["actions"], json!([]));
}

fn actions_of<'a>(plan: &'a serde_json::Value, username: &str) -> &'a serde_json::Value {
    plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["username"] == username)
        .unwrap_or_else(|| panic!("no action for {username}: {plan:#}"))
}

#[test]
fn a_cell_moved_to_another_row_of_the_user_is_no_change_and_a_cell_filled_in_is() {
    let t = applied();
    // Maria's password moves from her first row to her second, unchanged.
    t.commit_csv(csv().replace(
        "1002,Maria,Garcia,mgarcia,Pass_word34,,,,,\n1003,Maria,Garcia,mgarcia,,Soft",
        "1002,Maria,Garcia,mgarcia,,,,,,\n1003,Maria,Garcia,mgarcia,Pass_word34,Soft",
    ));
    assert_eq!(plan_both(&t, &[])["actions"], json!([]));
    t.apply(&[]);
    // A cell emptied sets nothing (it never clears); filled in again, it is set.
    t.commit_csv(csv().replace("Wei_pass56", ""));
    assert_eq!(plan_both(&t, &[])["actions"], json!([]));
    t.apply(&[]);
    t.commit_csv(csv().replace("Wei_pass56", "Wei_pass78"));
    assert_eq!(password_users(&plan_both(&t, &[])), ["wchen"]);
    t.apply(&[]);
    assert!(verifies(&t, "wchen", "Wei_pass78"));
}

#[test]
fn an_unchanged_reapply_sets_none_and_reset_passwords_sets_all() {
    let t = applied();
    let before = all_stored(&t);
    // Another commit with the same file: no password is set.
    t.commit("an unrelated commit");
    t.devices(&["0004F2000009"]);
    assert_eq!(plan_both(&t, &[])["actions"], json!([]));
    t.apply(&[]);
    assert_eq!(all_stored(&t), before);
    let plan = plan_both(&t, &["--reset-passwords"]);
    assert_eq!(password_users(&plan), ["jflynn", "mgarcia", "wchen"]);
    t.apply(&["--reset-passwords"]);
    let after = all_stored(&t);
    assert!(after.iter().zip(&before).all(|(a, b)| a != b));
    assert!(verifies(&t, "jflynn", "Sec_ret12"));
}

#[test]
fn working_tree_and_file_sources_compare_with_the_last_applied_csv() {
    let t = applied();
    t.csv(csv().replace("Sec_ret12", "Sec_ret99"));
    for source in [["--working-tree", ""], ["--file", "users.csv"]] {
        let args: Vec<&str> = source.into_iter().filter(|a| !a.is_empty()).collect();
        assert_eq!(password_users(&plan_both(&t, &args)), ["jflynn"]);
    }
    t.apply(&["--working-tree"]);
    assert!(verifies(&t, "jflynn", "Sec_ret99"));
    // The last apply was of the working tree, and its file is not in the
    // repository: nothing to compare with, so nothing is set, and a warning says so.
    t.csv(csv().replace("Sec_ret12", "Sec_ret77"));
    let plan = t.plan_json(&["--working-tree"]);
    assert_eq!(password_users(&plan), Vec::<String>::new());
    assert_eq!(codes_of(&plan["warnings"]), ["last-applied-csv-missing"]);
    // Committed, the file it was is found again.
    t.commit_csv(csv().replace("Sec_ret12", "Sec_ret99"));
    t.apply(&[]);
    t.csv(csv().replace("Sec_ret12", "Sec_ret77"));
    let plan = t.plan_json(&["--working-tree"]);
    assert_eq!(password_users(&plan), ["jflynn"]);
    assert_eq!(plan["warnings"], json!([]));
}

fn codes_of(list: &serde_json::Value) -> Vec<String> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|d| d["code"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Amends the last commit with `csv` and makes git forget the commit it replaced.
fn rewrite_history(t: &Test, csv: &str) {
    t.csv(csv);
    t.git(&["add", "-A"]);
    t.git(&["commit", "-q", "--amend", "-m", "rewritten"]);
    t.git(&["reflog", "expire", "--expire=now", "--all"]);
    t.git(&["gc", "-q", "--prune=now"]);
}

#[test]
fn a_rewritten_history_warns_and_sets_no_password() {
    let t = applied();
    let before = all_stored(&t);
    let applied_commit = t.git(&["rev-parse", "HEAD"]).trim().to_string();
    rewrite_history(
        &t,
        &csv()
            .replace("Sec_ret12", "Sec_ret99")
            .replace(",Desk,", ",Front desk,"),
    );
    let out = t.run(["plan"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("warning[last-applied-csv-missing]")
            && out.stderr.contains("is not in the repository any more"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--reset-passwords"), "{}", out.stderr);
    assert!(!out.stdout.contains("password"), "{}", out.stdout);
    let plan = plan_both(&t, &[]);
    assert_eq!(types(&plan), ["update_extension"], "{plan:#}");
    assert_eq!(codes_of(&plan["warnings"]), ["last-applied-csv-missing"]);
    assert!(
        plan["warnings"][0]["message"]
            .as_str()
            .unwrap()
            .contains(&applied_commit[..12])
    );
    t.apply(&[]);
    assert_eq!(all_stored(&t), before);
    // The apply of the rewritten commit is the new base: nothing to warn about.
    assert_eq!(t.plan_json(&[])["warnings"], json!([]));
    // --reset-passwords still sets them all, without a warning (nothing compared).
    t.git(&["commit", "-q", "--allow-empty", "-m", "again"]);
    let plan = t.plan_json(&["--reset-passwords"]);
    assert_eq!(password_users(&plan).len(), 3);
    assert_eq!(plan["warnings"], json!([]));
}
