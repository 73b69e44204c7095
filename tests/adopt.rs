//! `pbxsync adopt`: changes made in the target behind pbxsync's back (straight in
//! the SQLite state file) are written back into the working tree's CSV, and the
//! file then plans no change.

use crate::support::{DEV_A, DEV_B, HEADER, Test, types};

const ROWS: &str = "\
1001,Jason,Flynn,jflynn,Sec_ret12,\"Sales, desk\",jason@example.com,,,0004F2000001\n\
1002,Maria,Garcia,mgarcia,Pass_word34,,maria@example.com,,,virtual\n\
1003,Maria,Garcia,mgarcia,,,,,,\n\
1005,Wei,Chen,wchen,Wei_pass12,,,,,\n";

/// A repository whose CSV (`content`) is committed and applied.
fn applied(content: &str) -> Test {
    let t = Test::repo();
    t.devices(&[DEV_A, DEV_B]);
    t.commit_csv(content);
    t.apply(&[]);
    t
}

/// Runs SQL on the state file, as a person with a database tool would.
fn by_hand(t: &Test, sql: &str) {
    t.db().execute_batch(sql).expect("SQL by hand");
}

/// The plan of the working tree has no actions, and neither has the plan of the
/// commit once the adopted file is committed.
fn plans_nothing(t: &Test) {
    let plan = t.plan_json(&["--working-tree"]);
    assert_eq!(types(&plan), Vec::<String>::new(), "{plan:#}");
    assert_eq!(plan["errors"], serde_json::json!([]), "{plan:#}");
    t.commit("adopt the changes made by hand");
    let plan = t.plan_json(&[]);
    assert_eq!(types(&plan), Vec::<String>::new(), "{plan:#}");
    let out = t.run(["plan", "--detailed-exitcode"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
}

#[test]
fn changes_made_by_hand_are_written_back_row_by_row() {
    let t = applied(&format!("{HEADER}{ROWS}"));
    by_hand(
        &t,
        "UPDATE users SET email = 'maria.garcia@example.com' WHERE username = 'mgarcia';
         DELETE FROM extensions WHERE number = '1005';
         INSERT INTO extensions (number, user_id, kind, device, description, sip_secret)
             SELECT '1004', id, 'device', '0004F2000002', 'Lab, bench 2', x'00'
             FROM users WHERE username = 'jflynn';
         UPDATE extensions SET description = '=front desk' WHERE number = '1003';",
    );
    let out = t.ok(["adopt"]);
    assert_eq!(
        out.stderr,
        "Adopted the target's state into users.csv: 2 rows changed, 1 added, 1 removed.\n"
    );
    // Maria's new email where her rows fill it in (her second row leaves it
    // empty, which still agrees), 1003's description with the formula escape,
    // 1005 gone, 1004 appended with its user's fields and an empty password.
    assert_eq!(
        t.read("users.csv"),
        format!(
            "{HEADER}\
             1001,Jason,Flynn,jflynn,Sec_ret12,\"Sales, desk\",jason@example.com,,,0004F2000001\n\
             1002,Maria,Garcia,mgarcia,Pass_word34,,maria.garcia@example.com,,,virtual\n\
             1003,Maria,Garcia,mgarcia,,'=front desk,,,,\n\
             1004,Jason,Flynn,jflynn,,\"Lab, bench 2\",jason@example.com,,,0004F2000002\n"
        )
    );
    // `git diff` shows those rows and nothing else.
    let diff = t.git(&["diff", "--numstat"]);
    assert_eq!(diff, "3\t3\tusers.csv\n");
    plans_nothing(&t);
    // Adopting again finds nothing to do.
    let out = t.ok(["adopt"]);
    assert_eq!(out.stderr, "users.csv already matches the target.\n");
    let json = t.ok(["adopt", "--format", "json"]).json();
    assert_eq!(
        json,
        serde_json::json!({"format_version": 1, "path": "users.csv", "adopted": true,
                           "changed": 0, "added": 0, "removed": 0})
    );
}

#[test]
fn a_crlf_file_keeps_its_quotes_and_line_ends_where_nothing_changed() {
    let content = "\u{feff}\"Extension\",\"First Name\",\"Last Name\",\"Web Username\",\"Password\",\"Description\",\"Email\",\"IM\",\"Mobile\",\"Device MAC Address\"\r\n\
        \"1001\",\"Jason\",\"Flynn\",\"jflynn\",\"Sec_ret12\",\"Sales, desk\",\"jason@example.com\",\"\",\"\",\"00:04:f2:00:00:01\"\r\n\
        \r\n\
        \"1002\",\"Wei\",\"Chen\",\"wchen\",\"Wei_pass12\",\"Support\",\"\",\"\",\"\",\"\"\r\n";
    let t = applied(content);
    by_hand(
        &t,
        "UPDATE users SET mobile = '+1 555 0100' WHERE username = 'wchen';
         INSERT INTO extensions (number, user_id, kind, device, description, sip_secret)
             SELECT '1003', id, 'virtual', NULL, '', x'00' FROM users WHERE username = 'wchen';",
    );
    // The file is replaced, keeping its permissions.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::Permissions::from_mode(0o640);
    std::fs::set_permissions(t.path("users.csv"), mode).unwrap();
    let out = t.ok(["adopt", "--format", "json"]);
    let meta = std::fs::metadata(t.path("users.csv")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert_eq!(
        out.json(),
        serde_json::json!({"format_version": 1, "path": "users.csv", "adopted": true,
                           "changed": 1, "added": 1, "removed": 0})
    );
    assert_eq!(
        t.read("users.csv"),
        "\u{feff}\"Extension\",\"First Name\",\"Last Name\",\"Web Username\",\"Password\",\"Description\",\"Email\",\"IM\",\"Mobile\",\"Device MAC Address\"\r\n\
         \"1001\",\"Jason\",\"Flynn\",\"jflynn\",\"Sec_ret12\",\"Sales, desk\",\"jason@example.com\",\"\",\"\",\"00:04:f2:00:00:01\"\r\n\
         \r\n\
         \"1002\",\"Wei\",\"Chen\",\"wchen\",\"Wei_pass12\",\"Support\",\"\",\"\",+1 555 0100,\"\"\r\n\
         1003,Wei,Chen,wchen,,,,,+1 555 0100,virtual\r\n"
    );
    plans_nothing(&t);
}

#[test]
fn a_file_with_errors_is_refused_and_left_as_it_is() {
    let t = applied(&format!("{HEADER}{ROWS}"));
    by_hand(
        &t,
        "UPDATE users SET email = 'wei@example.com' WHERE username = 'wchen';",
    );
    let broken = format!("{HEADER}{ROWS}1006,Ann,Lee,alee,Ann_pass12,,not-an-address,,,\n");
    t.csv(&broken);
    let out = t.run(["adopt"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(t.read("users.csv"), broken);
    // The diagnostics as `validate` shows them, then why nothing was written.
    let validate = t.run(["validate"]);
    assert_eq!(validate.code, 1);
    let shown = |stderr: &str| -> String {
        let lines: Vec<&str> = stderr.lines().collect();
        lines[..lines.len() - 1].join("\n")
    };
    assert!(
        validate.stderr.contains("not-an-address"),
        "{}",
        validate.stderr
    );
    assert_eq!(shown(&out.stderr), shown(&validate.stderr));
    assert!(
        out.stderr
            .ends_with("users.csv: not adopted, the file is left as it is; fix these first (1 error, 0 warnings)\n"),
        "{}",
        out.stderr
    );
    let json = t.run(["adopt", "--format", "json"]);
    assert_eq!(json.code, 1);
    assert_eq!(json.json()["adopted"], false);
    assert_eq!(json.codes(), ["bad-email"]);
    assert_eq!(t.read("users.csv"), broken);
}

#[test]
fn without_a_state_there_is_nothing_to_adopt() {
    let t = Test::repo();
    t.commit_csv(format!("{HEADER}{ROWS}"));
    let out = t.run(["adopt"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("the target has no state yet"),
        "{}",
        out.stderr
    );
    assert_eq!(t.read("users.csv"), format!("{HEADER}{ROWS}"));
    assert!(!t.state().exists());
}

#[test]
fn a_value_windows_1252_cannot_hold_is_refused_and_nothing_written() {
    let t = Test::repo();
    let content = format!("{HEADER}1001,Jos\u{e9},Flynn,jflynn,Sec_ret12,,,,,\n");
    let (bytes, _, _) = encoding_rs::WINDOWS_1252.encode(&content);
    t.commit_csv(&*bytes);
    t.apply(&[]);
    by_hand(
        &t,
        "UPDATE users SET last_name = 'Fl\u{0142}ynn' WHERE username = 'jflynn';",
    );
    let out = t.run(["adopt"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("Windows-1252") && out.stderr.contains("extension 1001"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read(t.path("users.csv")).unwrap(), &*bytes);
    // One it can hold is written in Windows-1252.
    by_hand(
        &t,
        "UPDATE users SET last_name = 'Fl\u{fc}nn' WHERE username = 'jflynn';",
    );
    t.ok(["adopt"]);
    assert_eq!(
        std::fs::read(t.path("users.csv")).unwrap(),
        format!("{HEADER}1001,Jos\u{e9},Fl\u{fc}nn,jflynn,Sec_ret12,,,,,\n")
            .chars()
            .map(|c| u8::try_from(u32::from(c)).unwrap())
            .collect::<Vec<u8>>()
    );
    plans_nothing(&t);
}

#[test]
fn values_the_csv_rules_refuse_are_not_adopted() {
    let t = applied(&format!("{HEADER}{ROWS}"));
    by_hand(
        &t,
        "UPDATE users SET last_name = 'O''Brien' WHERE username = 'wchen';",
    );
    let out = t.run(["adopt"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("error[name-apostrophe]"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("users.csv (as adopted):5:"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(
            "not adopted, the file is left as it is; the target holds values the CSV's rules refuse"
        ),
        "{}",
        out.stderr
    );
    assert_eq!(t.read("users.csv"), format!("{HEADER}{ROWS}"));
    // Where the policy allows them, the same value is adopted.
    t.write(
        "pbxsync.yaml",
        format!(
            "source: {{path: users.csv}}\npolicy: {{{}, allow_apostrophes: true}}\n",
            crate::support::HASH
        ),
    );
    t.ok(["adopt"]);
    assert!(
        t.read("users.csv")
            .ends_with("1005,Wei,O'Brien,wchen,Wei_pass12,,,,,\n")
    );
    plans_nothing(&t);
}
