//! `pbxsync validate`: exit codes, text rendering and JSON of diagnostics.

use crate::support::{HASH, HEADER, Test};

/// A file with many kinds of error, one per row or more.
fn many_errors() -> String {
    format!(
        "{HEADER}\
1001, Jason ,Flynn,JFlynn,secret12,\"Sales, desk\",jason@,,,00:04:f2:12:34\n\
10x2,Maria,O'Brien,mgarcia,Sec_ret12,,maria@example.com,,call me,0004F2000002\n\
1003,,Chen,wchen,Sh0rt1,,,,,0004f2000002\n\
1001,Aisha,Khan,akhan,Secret1x,,,,,virtual\n\
1005,Lars,Berg\n\
1006,Maria,Garcia,mgarcia,,,other@example.com,,,\n"
    )
}

#[test]
fn a_valid_file_exits_zero() {
    let t = Test::new();
    t.csv(format!(
        "{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,,,,,virtual\n"
    ));
    let out = t.run(["validate"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("valid, 1 rows, 1 users"),
        "{}",
        out.stdout
    );
}

#[test]
fn errors_exit_one_and_render_the_line_with_a_marker() {
    let t = Test::new();
    t.csv(many_errors());
    let out = t.run(["validate"]);
    assert_eq!(out.code, 1);
    insta::assert_snapshot!("validate_text_many_errors", out.stderr);
    for secret in ["secret12", "Sh0rt1", "Secret1x", "Sec_ret12"] {
        assert!(!out.stderr.contains(secret), "password {secret} printed");
    }
}

#[test]
fn json_lists_every_diagnostic_in_line_order() {
    let t = Test::new();
    t.csv(many_errors());
    let out = t.run(["validate", "--format", "json"]);
    assert_eq!(out.code, 1);
    let json = out.json();
    insta::assert_json_snapshot!("validate_json_many_errors", json);
    let lines: Vec<u64> = json["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert!(lines.is_sorted(), "{lines:?}");
}

#[test]
fn warnings_alone_still_exit_zero() {
    let t = Test::new();
    let mut bytes = HEADER.as_bytes().to_vec();
    bytes.extend_from_slice(b"1001,Zo\xEB,Berg,zberg,Sec_ret12,,,,,\n");
    t.csv(bytes);
    let out = t.run(["validate", "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert_eq!(out.json()["warnings"][0]["code"], "invalid-utf8");
}

#[test]
fn strict_utf8_makes_a_windows_1252_file_an_error() {
    let t = Test::new();
    t.write(
        "pbxsync.yaml",
        "source: {path: users.csv}\nencoding: utf-8\n",
    );
    let mut bytes = HEADER.as_bytes().to_vec();
    bytes.extend_from_slice(b"1001,Zo\xEB,Berg,zberg,Sec_ret12,,,,,\n");
    t.csv(bytes);
    let out = t.run(["validate", "--format", "json"]);
    assert_eq!(out.code, 1);
    assert_eq!(out.json()["errors"][0]["line"], 2);
}

#[test]
fn file_flag_reads_any_file_without_a_config() {
    let t = Test::new();
    std::fs::remove_file(t.path("pbxsync.yaml")).unwrap();
    t.write(
        "elsewhere/people.csv",
        "1001,Jason,Flynn,jflynn,Sec_ret12,,,,,\n",
    );
    assert_eq!(
        t.run(["validate", "--file", "elsewhere/people.csv"]).code,
        0
    );
    let out = t.run(["validate"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("pbxsync init"), "{}", out.stderr);
}

#[test]
fn an_empty_file_is_refused_unless_allowed() {
    let t = Test::new();
    t.csv(HEADER);
    let out = t.run(["validate", "--format", "json"]);
    assert_eq!(out.codes(), ["empty-desired-state"]);
    assert_eq!(t.run(["validate", "--allow-empty"]).code, 0);
}

#[test]
fn config_policy_is_applied() {
    let t = Test::new();
    t.write(
        "pbxsync.yaml",
        "source: {path: users.csv}\npolicy:\n  allow_apostrophes: true\n  password: {min_length: 12, min_upper: 1, min_digits: 2}\n  extension_pattern: '^[0-9]{3}$'\n",
    );
    t.csv("1001,Maria,O'Brien,mgarcia,Sec_ret12,,,,,\n");
    let out = t.run(["validate", "--format", "json"]);
    assert_eq!(out.codes(), ["bad-extension", "password-policy"]);
}

#[test]
fn with_a_target_devices_and_ownership_are_checked() {
    let t = Test::repo();
    t.ok(["devices", "add", crate::support::DEV_A]);
    t.commit_csv(format!("{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,,,,,\n"));
    t.apply(&[]);
    t.csv(format!(
        "{HEADER}1001,Wei,Chen,wchen,Sec_ret12,,,,,\n1002,Lars,Berg,lberg,Sec_ret12,,,,,OOO4F2OOOOO1\n"
    ));
    let out = t.run(["validate", "--format", "json"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert_eq!(
        out.codes(),
        ["extension-owned-by-other-user", "device-not-found"]
    );
    // Only the changed rows meet the target, with the diagnostics of all of them.
    let full = crate::support::run(
        t.cmd()
            .env("PBXSYNC_FULL_PLAN", "1")
            .args(["validate", "--format", "json"]),
    );
    assert_eq!(out.stdout, full.stdout);
}

#[test]
fn with_an_inventory_or_a_target_the_target_checks_run_too() {
    let t = Test::new();
    t.write(
        "pbxsync.yaml",
        "source: {path: users.csv}\ninventory: devices.csv\n",
    );
    t.write("devices.csv", "id,model\n0004F2000001,VVX\n");
    // The O-for-zero slip of a device that only the inventory file holds.
    let slip_is_found = || {
        let out = t.run(["validate", "--format", "json"]);
        assert_eq!(out.code, 1, "{}", out.stdout);
        let e = &out.json()["errors"][0];
        assert_eq!(e["code"], "device-not-found");
        assert_eq!(e["hint"], "did you mean 0004F2000001?");
    };
    t.csv(format!(
        "{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,,,,,0004F2OOOOO1\n"
    ));
    slip_is_found();
    // Without an inventory and without a state file, devices are not checked.
    t.write("pbxsync.yaml", "source: {path: users.csv}\n");
    assert_eq!(t.run(["validate"]).code, 0);

    // With a state file too, the rows that changed meet the target and the file.
    t.write(
        "pbxsync.yaml",
        format!("source: {{path: users.csv}}\ninventory: devices.csv\npolicy: {{{HASH}}}\n"),
    );
    t.csv(format!("{HEADER}1002,Wei,Chen,wchen,Pass_word56,,,,,\n"));
    t.ok(["apply", "--working-tree", "--auto-approve"]);
    t.csv(format!(
        "{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,,,,,0004F2OOOOO1\n1002,Wei,Chen,wchen,Pass_word56,,,,,\n"
    ));
    slip_is_found();
    t.csv(format!(
        "{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,,,,,0004F2000001\n1002,Wei,Chen,wchen,Pass_word56,,,,,\n"
    ));
    assert_eq!(t.run(["validate"]).code, 0);
}
