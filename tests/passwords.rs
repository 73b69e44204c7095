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
    let whole = t
        .cmd()
        .env("PBXSYNC_FULL_PLAN", "1")
        .args(&all)
        .output()
        .unwrap();
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

#[test]
fn cells_that_come_back_with_the_password_column_set_no_password() {
    let t = applied();
    let before = all_stored(&t);
    // A file without the Password column manages no password (a description
    // changes too, so that the apply has something to do and is recorded) ...
    let without: String = csv()
        .replace(",Desk,", ",Front desk,")
        .lines()
        .map(|l| {
            let mut cells: Vec<&str> = l.split(',').collect();
            cells.remove(4);
            cells.join(",") + "\n"
        })
        .collect();
    t.commit_csv(without);
    t.apply(&[]);
    // ... so its cells coming back are not changes: they would reset every password.
    t.commit_csv(csv().replace("Sec_ret12", "Sec_ret99"));
    let plan = plan_both(&t, &[]);
    assert_eq!(types(&plan), ["update_extension"], "{plan:#}");
    t.apply(&[]);
    assert_eq!(all_stored(&t), before);
    // From there on, a changed cell is set again.
    t.commit_csv(csv().replace("Sec_ret12", "Sec_ret77"));
    assert_eq!(password_users(&plan_both(&t, &[])), ["jflynn"]);
}

/// `pbxsync hash-password` with `password` on standard input.
fn hash_password(t: &Test, password: &str) -> crate::support::Output {
    let out = t
        .cmd()
        .arg("hash-password")
        .write_stdin(format!("{password}\n"))
        .output()
        .unwrap();
    crate::support::Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn a_phc_cell_is_stored_as_given_and_never_hashed_again() {
    let t = Test::repo();
    let phc = hash_password(&t, "Their_own99").stdout.trim().to_string();
    assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
    t.commit_csv(csv().replace("Sec_ret12", &format!("\"{phc}\"")));
    let plan = t.plan_json(&[]);
    assert_eq!(plan["errors"], json!([]));
    t.apply(&[]);
    assert_eq!(stored(&t, "jflynn"), phc);
    assert!(verifies(&t, "jflynn", "Their_own99"));
    // Another hash in the cell is a changed cell: stored as given too.
    let other = hash_password(&t, "Their_new99").stdout.trim().to_string();
    t.commit_csv(csv().replace("Sec_ret12", &format!("\"{other}\"")));
    assert_eq!(password_users(&t.plan_json(&[])), ["jflynn"]);
    t.apply(&[]);
    assert_eq!(stored(&t, "jflynn"), other);
    // The history's copy of the CSV holds no hash either.
    let id = t.history()[0]["id"].as_i64().unwrap().to_string();
    let shown = t.ok(["history", &id]).stdout;
    assert!(!shown.contains("argon2"), "{shown}");
}

#[test]
fn a_cell_that_looks_like_a_hash_but_is_not_a_valid_one_is_an_error() {
    let t = Test::repo();
    let good = hash_password(&t, "Their_own99").stdout.trim().to_string();
    for bad in [
        good.replace("argon2id", "argon2i"),
        good.replace("v=19", "v=16"),
        good.replace("m=64", "m=x"),
        "$argon2id$v=19$m=64,t=1,p=1".to_string(),
        "$argon2id$".to_string(),
    ] {
        t.csv(csv().replace("Sec_ret12", &format!("\"{bad}\"")));
        let out = t.run(["validate", "--format", "json"]);
        assert_eq!(out.code, 1, "{bad}: {}", out.stdout);
        let doc = out.json();
        let error = &doc["errors"][0];
        assert_eq!(error["code"], "password-policy", "{bad}: {doc:#}");
        assert_eq!(
            (error["line"].clone(), error["column"].clone()),
            (json!(2), json!(5))
        );
        if bad.len() > 30 {
            assert!(!out.stdout.contains(&bad[30..]), "the cell is never echoed");
        }
    }
}

/// A repository whose config leaves `policy.plaintext_passwords` as given.
fn with_plaintext(setting: &str) -> Test {
    let t = Test::repo_with(&format!(
        "policy: {{password_hash: {{m_cost_kib: 64, t_cost: 1, p_cost: 1}}{setting}}}\n"
    ));
    t.commit_csv(csv());
    t
}

#[test]
fn plaintext_cells_warn_by_default_error_or_pass_as_configured() {
    // The default: a warning per plaintext cell, naming line and column.
    let t = with_plaintext("");
    let out = t.run(["validate", "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    let doc = out.json();
    let warnings: Vec<(u64, u64, String)> = doc["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["line"].as_u64().unwrap(),
                w["column"].as_u64().unwrap(),
                w["code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let at = |line| (line, 5, "plaintext-password".to_string());
    assert_eq!(warnings, [at(2), at(3), at(5)]);
    for password in ["Sec_ret12", "Pass_word34", "Wei_pass56"] {
        assert!(!out.stdout.contains(password));
    }
    let text = t.run(["validate"]);
    assert!(
        text.stderr.contains("warning[plaintext-password]")
            && text.stderr.contains("pbxsync hash-password"),
        "{}",
        text.stderr
    );
    assert!(!text.stderr.contains("Sec_ret12"), "{}", text.stderr);
    // A plan shows them too, and applies.
    assert_eq!(codes_of(&t.plan_json(&[])["warnings"]).len(), 3);
    t.apply(&[]);
    // Where the header puts the Password column, the column says so.
    t.commit_csv(
        "Password,Extension,First Name,Last Name,Web Username\n\
         Sec_ret12,1001,Jason,Flynn,jflynn\n",
    );
    let doc = t.run(["validate", "--format", "json"]).json();
    assert_eq!(doc["warnings"][0]["column"], 1, "{doc:#}");

    // `error`: each one an error, and nothing is applied.
    let t = with_plaintext(", plaintext_passwords: error");
    let out = t.run(["plan", "--format", "json"]);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.codes(),
        [
            "plaintext-password",
            "plaintext-password",
            "plaintext-password"
        ]
    );
    assert_eq!(t.run(["apply", "--auto-approve"]).code, 1);
    // Hashes pass under `error`.
    let phc = hash_password(&t, "Sec_ret12").stdout.trim().to_string();
    t.commit_csv(format!(
        "{HEADER}1001,Jason,Flynn,jflynn,\"{phc}\",Desk,,,,virtual\n"
    ));
    t.apply(&[]);

    // `allow`: nothing said.
    let t = with_plaintext(", plaintext_passwords: allow");
    assert_eq!(
        t.run(["validate", "--format", "json"]).json()["warnings"],
        json!([])
    );
    // A value that is none of the three names the allowed ones.
    let t = with_plaintext(", plaintext_passwords: never");
    let out = t.run(["validate"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("allow") && out.stderr.contains("warn") && out.stderr.contains("error"),
        "{}",
        out.stderr
    );
}

#[test]
fn hash_password_checks_the_policy_and_prints_a_phc_string_of_the_configs_parameters() {
    let t = Test::repo_with(
        "policy: {password: {min_length: 12}, password_hash: {m_cost_kib: 64, t_cost: 1, p_cost: 1}}\n",
    );
    let out = hash_password(&t, "Str0ng_pass99");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let phc = out.stdout.trim();
    assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
    assert!(
        argon2::Argon2::default()
            .verify_password(b"Str0ng_pass99", &argon2::PasswordHash::new(phc).unwrap())
            .is_ok()
    );
    // Each run salts anew.
    assert_ne!(hash_password(&t, "Str0ng_pass99").stdout.trim(), phc);
    // A weak password: exit 1, the rule it breaks, nothing on stdout, never the password.
    let weak = hash_password(&t, "Weak_pass1");
    assert_eq!(weak.code, 1);
    assert_eq!(weak.stdout, "");
    assert!(
        weak.stderr.contains("at least 12 characters") && weak.stderr.contains("at least 2 digits"),
        "{}",
        weak.stderr
    );
    assert!(!weak.stderr.contains("Weak_pass1"));
    assert_eq!(hash_password(&t, "").code, 1);
    // Without a config: the default policy and parameters.
    let bare = tempfile::tempdir().unwrap();
    let out = t
        .cmd()
        .current_dir(bare.path())
        .arg("hash-password")
        .write_stdin("Str0ng_pass99\r\n")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let phc = String::from_utf8(out.stdout).unwrap();
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    // The line end is not part of the password.
    assert!(
        argon2::Argon2::default()
            .verify_password(
                b"Str0ng_pass99",
                &argon2::PasswordHash::new(phc.trim()).unwrap()
            )
            .is_ok()
    );
}

#[test]
fn a_masked_password_cell_shows_the_same_few_characters_whatever_its_length() {
    let t = Test::repo();
    let long = "L0ng_".repeat(40);
    let phc = hash_password(&t, "Their_own99").stdout.trim().to_string();
    // Each row has an error elsewhere, so the diagnostic shows the row.
    t.csv(format!(
        "{HEADER}1001,Jason ,Flynn,jflynn,Ab1,,,,,\n\
         1002,Maria ,Garcia,mgarcia,{long},,,,,\n\
         1003,Wei ,Chen,wchen,\"{phc}\",,,,,\n"
    ));
    let out = t.run(["validate"]);
    assert_eq!(out.code, 1);
    for row in [
        "2 | 1001,Jason ,Flynn,jflynn,*****,,,,,\n",
        "3 | 1002,Maria ,Garcia,mgarcia,*****,,,,,\n",
        "4 | 1003,Wei ,Chen,wchen,*****,,,,,\n",
    ] {
        assert!(out.stderr.contains(row), "{row:?} in\n{}", out.stderr);
    }
    assert!(!out.stderr.contains("L0ng_") && !out.stderr.contains("argon2"));
}
