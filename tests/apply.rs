//! `pbxsync apply`: applying and planning again, exit codes and formats, the
//! confirmation prompt, saved plans and stale plans, and passwords (rule 9).

use crate::support::{DEV_A, HEADER, Test, codes, run, types};
use argon2::{PasswordHasher, PasswordVerifier};
use serde_json::json;

const ROWS: &str = "\
1001,Jason,Flynn,jflynn,Sec_ret12,Desk,jason@example.com,,,virtual\n\
1002,Maria,Garcia,mgarcia,Pass_word34,,,,,\n";

fn csv() -> String {
    format!("{HEADER}{ROWS}")
}

/// The export that applying `csv()` leads to.
fn expected() -> String {
    format!(
        "{HEADER}\
1001,Jason,Flynn,jflynn,,Desk,jason@example.com,,,virtual\n\
1002,Maria,Garcia,mgarcia,,,,,,\n"
    )
}

fn committed() -> Test {
    let t = Test::repo();
    t.commit_csv(csv());
    t
}

/// Whether the stored hash of a user verifies a password.
fn verifies(t: &Test, username: &str, password: &str) -> bool {
    let hash = t.sql(&format!(
        "SELECT hash FROM passwords JOIN users ON users.id = user_id \
         WHERE username = '{username}'"
    ));
    assert!(hash[0].starts_with("$argon2id$"), "{hash:?}");
    argon2::Argon2::default()
        .verify_password(password.as_bytes(), hash[0].as_str())
        .is_ok()
}

#[test]
fn apply_then_plan_again_shows_no_changes() {
    let t = committed();
    let out = t.apply(&[]);
    assert!(
        out.stdout
            .contains("Applied: 2 users created, 2 extensions added"),
        "{}",
        out.stdout
    );
    assert_eq!(t.export(), expected());
    assert!(t.ok(["plan"]).stdout.starts_with("No changes."));
    let plan = t.plan_json(&[]);
    assert_eq!(plan["actions"], json!([]));
    assert_eq!(plan["summary"]["total"], 0);
    // An apply of the same commit knows it without planning.
    assert_eq!(
        t.apply(&[]).stdout,
        "No changes. The target matches the desired state.\n"
    );
    assert!(t.took_shortcut(&["apply", "--auto-approve"]));
    // Also when the shortcut cannot be taken (a file, or the target moved on).
    assert_eq!(t.plan_json(&["--file", "users.csv"])["actions"], json!([]));
    t.devices(&[DEV_A]);
    assert_eq!(t.plan_json(&[])["actions"], json!([]));
    // A second apply has nothing to do and records nothing.
    t.apply(&[]);
    assert_eq!(t.history().len(), 1);
}

#[test]
fn the_stored_passwords_are_argon2_hashes_of_the_csv_passwords() {
    let t = committed();
    t.apply(&[]);
    assert!(verifies(&t, "jflynn", "Sec_ret12"));
    assert!(verifies(&t, "mgarcia", "Pass_word34"));
    assert!(!verifies(&t, "mgarcia", "Sec_ret12"));
}

#[test]
fn detailed_exitcode_is_two_with_changes_and_zero_without() {
    let t = committed();
    assert_eq!(t.run(["plan", "--detailed-exitcode"]).code, 2);
    assert_eq!(t.run(["plan"]).code, 0);
    t.apply(&[]);
    assert_eq!(t.run(["plan", "--detailed-exitcode"]).code, 0);
    t.commit_csv(format!("{HEADER}1003,Wei,Chen,wchen,,,,,,\n"));
    assert_eq!(t.run(["plan", "--detailed-exitcode"]).code, 1, "errors win");
}

#[test]
fn text_and_markdown_plans_have_the_summary() {
    let t = committed();
    let summary = "Plan: 2 users to create, 2 extensions to add, 0 to update, 0 devices to reassign, 0 to remove.";
    let text = t.ok(["plan"]).stdout;
    assert!(text.contains(summary), "{text}");
    assert!(text.contains("+ create_user jflynn"), "{text}");
    assert!(text.contains("password: (sensitive)"), "{text}");
    let md = t.ok(["plan", "--format", "markdown"]).stdout;
    assert!(md.contains(&format!("**{summary}**")), "{md}");
    assert!(
        md.contains("add_extension 1001 for jflynn (virtual)"),
        "{md}"
    );
    assert!(
        !md.contains("Sec_ret12") && !md.contains("Pass_word34"),
        "{md}"
    );
}

#[test]
fn json_apply_reports_the_outcome() {
    let t = committed();
    let out = t.apply(&["--format", "json"]);
    let doc = out.json();
    assert_eq!(doc["outcome"], "applied");
    assert_eq!(doc["history_id"], 1);
    assert_eq!(doc["summary"]["total"], 4);
    let status = t.ok(["status", "--format", "json"]).json();
    assert_eq!(doc["serial"], status["serial"]);
}

#[test]
fn only_yes_at_the_prompt_applies() {
    let t = committed();
    let out = run(t.cmd().args(["apply"]).write_stdin("yes\n"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("Apply these changes? Only 'yes' is accepted"),
        "{}",
        out.stderr
    );
    assert_eq!(t.export(), expected());
}

#[test]
fn a_saved_plan_applies_without_asking() {
    let t = committed();
    let out = t.ok(["plan", "--out", "p.json"]);
    assert!(
        out.stderr.contains("pbxsync apply p.json"),
        "{}",
        out.stderr
    );
    let saved: serde_json::Value = serde_json::from_str(&t.read("p.json")).unwrap();
    assert_eq!(
        types(&saved),
        [
            "create_user",
            "create_user",
            "add_extension",
            "add_extension"
        ]
    );
    assert!(saved["source"]["commit"].is_string() && saved["source"]["blob"].is_string());
    // stdin is closed: a prompt would fail.
    let out = run(t.cmd().args(["apply", "p.json"]).write_stdin(""));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(t.export(), expected());
    assert!(verifies(&t, "jflynn", "Sec_ret12"));
}

#[test]
fn a_file_source_is_named_by_its_git_blob_id_in_plans_saved_plans_and_history() {
    let t = committed();
    t.write("other.csv", csv());
    let blob = t.git(&["hash-object", "other.csv"]);
    let blob = blob.trim();
    let plan = t.plan_json(&["--file", "other.csv"]);
    assert_eq!(plan["source"]["kind"], "file");
    assert_eq!(plan["source"]["blob"], blob);
    t.ok(["plan", "--file", "other.csv", "--out", "p.json"]);
    let saved: serde_json::Value = serde_json::from_str(&t.read("p.json")).unwrap();
    assert_eq!(saved["source"]["blob"], blob);

    // The file changed since the plan was saved: refused, nothing written.
    t.write(
        "other.csv",
        format!("{}1003,Wei,Chen,wchen,Wei_pass12,,,,,\n", csv()),
    );
    let out = t.run(["apply", "p.json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("stale-plan"), "{}", out.stderr);
    assert!(!t.state().exists(), "refused before the state file is made");

    t.write("other.csv", csv());
    t.ok(["apply", "p.json"]);
    let history = t.history();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0]["blob"], blob);
}

#[test]
fn a_saved_plan_reads_the_committed_revision_it_names() {
    let t = committed();
    t.ok(["plan", "--out", "p.json"]);
    // A later commit does not change what the saved plan applies.
    t.commit_csv(format!("{HEADER}1009,Wei,Chen,wchen,Wei_pass12,,,,,\n"));
    t.ok(["apply", "p.json"]);
    assert_eq!(t.export(), expected());
}

#[test]
fn a_saved_plan_is_stale_after_a_devices_change() {
    let t = committed();
    t.ok(["plan", "--out", "p.json"]);
    t.devices(&[DEV_A]);
    let before = t.export();
    let out = t.run(["apply", "p.json", "--format", "json"]);
    assert_eq!(out.code, 1);
    assert_eq!(codes(&out.json()), ["stale-plan"]);
    assert!(
        out.json()["errors"][0]["hint"]
            .as_str()
            .unwrap()
            .contains("pbxsync plan"),
        "{}",
        out.stdout
    );
    assert_eq!(t.export(), before);
    // As text, the refusal says the same.
    let out = t.run(["apply", "p.json"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("stale-plan"), "{}", out.stderr);
}

#[test]
fn a_saved_plan_is_stale_after_another_apply() {
    let t = committed();
    t.ok(["plan", "--out", "p.json"]);
    t.commit_csv(format!("{HEADER}1009,Wei,Chen,wchen,Wei_pass12,,,,,\n"));
    t.apply(&[]);
    let before = t.export();
    let out = t.run(["apply", "p.json", "--format", "json"]);
    assert_eq!(out.code, 1);
    assert_eq!(codes(&out.json()), ["stale-plan"]);
    assert_eq!(t.export(), before);
    assert_eq!(t.history().len(), 1);
}

#[test]
fn a_saved_plan_of_the_working_tree_is_stale_when_the_file_changes() {
    let t = Test::repo();
    t.csv(csv());
    t.ok(["plan", "--working-tree", "--out", "p.json"]);
    t.csv(format!("{HEADER}1009,Wei,Chen,wchen,Wei_pass12,,,,,\n"));
    let out = t.run(["apply", "p.json", "--format", "json"]);
    assert_eq!(out.code, 1);
    assert_eq!(codes(&out.json()), ["stale-plan"]);
    assert!(!t.state().exists() || t.export() == HEADER);
}

#[test]
fn rule_9_reapplying_an_unchanged_file_keeps_passwords_users_changed() {
    let t = committed();
    t.apply(&[]);
    // The user changes the password in the phone system.
    let theirs = argon2_hash("Their_own99");
    t.db()
        .execute(
            "UPDATE passwords SET hash = ?1 \
             WHERE user_id = (SELECT id FROM users WHERE username = 'jflynn')",
            [&theirs],
        )
        .unwrap();
    // An unrelated commit, then plan and apply again.
    t.commit_csv(format!("{}1003,Maria,Garcia,mgarcia,,,,,,virtual\n", csv()));
    let plan = t.plan_json(&[]);
    assert_eq!(types(&plan), ["add_extension"]);
    t.apply(&[]);
    assert!(verifies(&t, "jflynn", "Their_own99"));
    // --reset-passwords sets every password the CSV has.
    let plan = t.plan_json(&["--reset-passwords"]);
    assert_eq!(types(&plan), ["update_user", "update_user"]);
    assert_eq!(
        plan["actions"][0]["changes"],
        json!([{"field": "password", "sensitive": true}])
    );
    t.apply(&["--reset-passwords"]);
    assert!(verifies(&t, "jflynn", "Sec_ret12"));
}

#[test]
fn rule_9_a_changed_password_cell_sets_the_password() {
    let t = committed();
    t.apply(&[]);
    t.commit_csv(csv().replace("Sec_ret12", "New_secret34"));
    let plan = t.plan_json(&[]);
    assert_eq!(types(&plan), ["update_user"], "{plan:#}");
    assert_eq!(plan["actions"][0]["username"], "jflynn");
    assert_eq!(
        plan["actions"][0]["changes"],
        json!([{"field": "password", "sensitive": true}])
    );
    t.apply(&[]);
    assert!(verifies(&t, "jflynn", "New_secret34"));
    assert!(verifies(&t, "mgarcia", "Pass_word34"));
}

#[test]
fn rule_9_an_empty_password_cell_never_clears_a_password() {
    let t = committed();
    t.apply(&[]);
    t.commit_csv(csv().replace("Sec_ret12", ""));
    assert_eq!(
        t.plan_json(&["--reset-passwords"])["summary"]["update_user"],
        1
    );
    t.apply(&["--reset-passwords"]);
    assert!(verifies(&t, "jflynn", "Sec_ret12"));
}

fn argon2_hash(password: &str) -> String {
    let salt = argon2::password_hash::try_generate_salt().unwrap();
    argon2::Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

#[test]
fn a_saved_plan_is_stale_after_a_write_by_another_program() {
    let t = committed();
    t.apply(&[]);
    t.commit_csv(format!(
        "{HEADER}{ROWS}1003,Wei,Chen,wchen,Wei_pass12,,,,,\n"
    ));
    t.ok(["plan", "--out", "p.json"]);
    // The phone system's own admin screen changes a description.
    t.db()
        .execute(
            "UPDATE extensions SET description = 'by hand' WHERE number = '1002'",
            [],
        )
        .unwrap();
    let before = t.export();
    let out = t.run(["apply", "p.json", "--format", "json"]);
    assert_eq!(out.code, 1);
    assert_eq!(codes(&out.json()), ["stale-plan"]);
    assert_eq!(t.export(), before);
    // Planning again shows the hand-made change being reverted, and applies.
    let plan = t.plan_json(&[]);
    assert_eq!(
        types(&plan),
        ["create_user", "add_extension", "update_extension"]
    );
    t.ok(["plan", "--out", "p.json"]);
    t.ok(["apply", "p.json"]);
    assert!(t.export().contains("1002,Maria,Garcia,mgarcia,,,,,,\n"));
}

#[test]
fn a_saved_plan_keeps_the_flags_it_was_made_with() {
    let t = committed();
    t.apply(&[]);
    t.commit_csv(format!(
        "{HEADER}1001,Jason,Flynn,jflynn,,Desk,jason@example.com,,,virtual\n"
    ));
    t.ok(["plan", "--prune", "--out", "p.json"]);
    t.ok(["apply", "p.json"]);
    assert_eq!(
        t.export(),
        format!("{HEADER}1001,Jason,Flynn,jflynn,,Desk,jason@example.com,,,virtual\n")
    );
}

#[test]
fn a_tampered_saved_plan_is_refused() {
    let t = committed();
    t.ok(["plan", "--out", "p.json"]);
    let text = t.read("p.json").replace("\"Desk\"", "\"Elsewhere\"");
    t.write("p.json", text);
    let out = t.run(["apply", "p.json", "--format", "json"]);
    assert_eq!(out.code, 1);
    assert_eq!(codes(&out.json()), ["stale-plan"]);
    assert!(!t.state().exists() || t.export() == HEADER);
    t.write("p.json", "not a plan");
    let out = t.run(["apply", "p.json"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("is not a plan saved by"),
        "{}",
        out.stderr
    );
}

#[test]
fn markdown_of_a_plan_with_errors_says_it_cannot_be_applied() {
    let t = Test::repo();
    t.commit_csv(format!("{HEADER}1001,Jason,Flynn,jflynn,,,,,,\n"));
    let out = t.run(["plan", "--format", "markdown"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout
            .contains("**1 error: this plan cannot be applied.**")
            && out.stdout.contains("`missing-required` line 2:"),
        "{}",
        out.stdout
    );
}

#[test]
fn progress_is_plain_lines_off_a_terminal_and_quiet_prints_nothing() {
    let t = committed();
    let out = t.apply(&[]);
    assert!(
        out.stderr.contains("hashing 2 passwords")
            && out.stderr.contains("applying 4 actions")
            && out.stderr.contains("committing"),
        "{}",
        out.stderr
    );
    t.commit_csv(format!(
        "{HEADER}{ROWS}1003,Wei,Chen,wchen,Wei_pass12,,,,,\n"
    ));
    let out = t.apply(&["--quiet"]);
    assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("", ""));
    assert!(t.export().contains("wchen"));
}

#[test]
fn a_first_apply_whose_plan_has_errors_creates_no_state_file() {
    let t = Test::repo();
    t.commit_csv(format!("{HEADER}1001,Jason,Flynn,jflynn,,,,,,\n"));
    let out = t.run(["apply", "--auto-approve", "--format", "json"]);
    assert_eq!(out.code, 1);
    assert_eq!(codes(&out.json()), ["missing-required"]);
    assert!(!t.state().exists(), "nothing to apply, so no state file");

    // Once the file is fixed, the apply creates it.
    t.commit_csv(format!("{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,,,,,\n"));
    t.ok(["apply", "--auto-approve"]);
    assert!(t.export().contains("jflynn"));
}
