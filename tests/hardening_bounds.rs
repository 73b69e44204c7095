//! Issue 14, item 7: resources stay bounded whatever the input — a header of a
//! hundred thousand columns, a file with millions of errors, a config nested
//! thousands deep, argon2 parameters that would hash for days.

use crate::support::{HEADER, Test};

/// A header row of 100,000 repeated column names is one `bad-header` error, found
/// at once (it was 99,999 errors, each rendered with the whole line: quadratic).
#[test]
fn a_header_of_a_hundred_thousand_columns_is_one_error() {
    let t = Test::new();
    let header = vec!["Extension"; 100_000].join(",");
    t.csv(format!(
        "{header}\n1001,Jason,Flynn,jflynn,Sec_ret12,,,,,\n"
    ));
    let out = t.run(["validate", "--format", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let doc = out.json();
    let codes = out.codes();
    assert_eq!(codes.len(), 1, "{} errors, not one", codes.len());
    assert_eq!(codes, ["bad-header"]);
    let error = &doc["errors"][0];
    assert_eq!(error["line"], 1);
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("100000 cells"), "{message}");
    assert!(
        error["hint"]
            .as_str()
            .unwrap_or_default()
            .contains("Device MAC Address")
    );

    let out = t.run(["validate"]);
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr.matches("error[bad-header]").count(),
        1,
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("users.csv: 1 error, 0 warnings"),
        "{}",
        out.stderr
    );
}

/// Below the limit every bad header cell still has its own error and column.
#[test]
fn a_header_with_a_few_extra_columns_names_each_one() {
    let t = Test::new();
    let header = HEADER.trim_end();
    t.csv(format!(
        "{header},Notes,Room\n1001,Jason,Flynn,jflynn,Sec_ret12,,,,,,,\n"
    ));
    let out = t.run(["validate", "--format", "json"]);
    assert_eq!(out.code, 1);
    let doc = out.json();
    assert_eq!(out.codes(), ["bad-header", "bad-header"]);
    assert_eq!(doc["errors"][0]["column"], 11);
    assert_eq!(doc["errors"][1]["column"], 12);
}

/// `n` rows from line 2 on, each with a bad email; users and extensions unique.
fn bad_email_rows(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "{},Jason,Flynn,u{i},Sec_ret12,,not-an-email,,,\n",
                10_000 + i
            )
        })
        .collect()
}

/// A file with more errors of one code than are kept: the first 1,000 by line are
/// listed, the others counted by code, and the verdict and exit code stay right.
#[test]
fn more_errors_of_a_code_than_kept_are_counted_not_listed() {
    let t = Test::new();
    // 2,500 bad emails, then 1,200 bad mobiles (lines 2,502–3,701).
    let mobiles: String = (0..1200)
        .map(|i| format!("{},Wei,Chen,w{i},Sec_ret12,,,,call me,\n", 20_000 + i))
        .collect();
    t.csv(format!("{HEADER}{}{mobiles}", bad_email_rows(2500)));
    let out = t.run(["validate", "--format", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let doc = out.json();
    assert_eq!(doc["valid"], false);
    let errors = doc["errors"].as_array().expect("errors");
    let lines = |code: &str| -> Vec<u64> {
        errors
            .iter()
            .filter(|e| e["code"] == code)
            .filter_map(|e| e["line"].as_u64())
            .collect()
    };
    assert_eq!(lines("bad-email"), (2..=1001).collect::<Vec<u64>>());
    assert_eq!(lines("bad-mobile"), (2502..=3501).collect::<Vec<u64>>());
    assert_eq!(errors.len(), 2000);
    assert_eq!(
        doc["omitted"],
        serde_json::json!({
            "kept_per_code": 1000,
            "errors": {"bad-email": 1500, "bad-mobile": 200},
            "warnings": {},
        })
    );

    let out = t.run(["validate"]);
    assert_eq!(out.code, 1);
    assert_eq!(out.stderr.matches("error[bad-email]").count(), 1000);
    assert!(
        out.stderr.contains(
            "note: 1500 more `bad-email` errors are not shown (only the first 1000 of each code are)"
        ),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("note: 200 more `bad-mobile` errors"));
    assert!(out.stderr.contains("users.csv: 3700 errors, 0 warnings"));
}

/// Under the limit nothing is said about omitted diagnostics: the JSON keeps the
/// keys of SPEC section 9 and nothing else.
#[test]
fn under_the_limit_the_output_is_unchanged() {
    let t = Test::new();
    t.csv(format!("{HEADER}{}", bad_email_rows(1000)));
    let out = t.run(["validate", "--format", "json"]);
    assert_eq!(out.code, 1);
    let doc = out.json();
    assert_eq!(doc["errors"].as_array().map(Vec::len), Some(1000));
    assert!(doc.get("omitted").is_none(), "{}", doc["omitted"]);
    let out = t.run(["validate"]);
    assert!(!out.stderr.contains("note:"), "{}", out.stderr);
}

/// A plan keeps the first 1,000 of a code across the file's own errors and those
/// the plan finds (a new user without a password is `missing-required` too), and
/// the rest are counted in JSON, text and Markdown.
#[test]
fn a_plan_counts_what_it_leaves_out_of_the_file_and_its_own_checks() {
    let t = Test::repo();
    // 700 rows without a first name (the file's check), then 700 new users
    // without a password (the plan's check): 1,400 missing-required errors.
    let no_first_name: String = (0..700)
        .map(|i| format!("{},,Flynn,a{i},Sec_ret12,,,,,\n", 10_000 + i))
        .collect();
    let no_password: String = (0..700)
        .map(|i| format!("{},Wei,Chen,b{i},,,,,,\n", 20_000 + i))
        .collect();
    t.commit_csv(format!("{HEADER}{no_first_name}{no_password}"));
    let doc = t.plan_json(&[]);
    let errors = doc["errors"].as_array().expect("errors");
    let lines: Vec<u64> = errors.iter().filter_map(|e| e["line"].as_u64()).collect();
    assert_eq!(lines, (2..=1001).collect::<Vec<u64>>());
    assert_eq!(
        doc["omitted"]["errors"],
        serde_json::json!({"missing-required": 400})
    );
    assert!(doc["actions"].as_array().expect("actions").is_empty());

    let out = t.run(["plan"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("note: 400 more `missing-required` errors"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("users.csv: 1400 errors, 0 warnings; nothing can be applied")
    );

    let out = t.run(["plan", "--format", "markdown"]);
    assert!(
        out.stdout
            .contains("**1400 errors: this plan cannot be applied.**"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("and 400 more `missing-required` errors")
    );

    // Against a target (the plan reads only the changed rows), and `validate`
    // with that target: the same counts.
    t.commit_csv(format!("{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,,,,,\n"));
    t.apply(&[]);
    t.commit_csv(format!("{HEADER}{no_first_name}{no_password}"));
    let doc = t.plan_json(&[]);
    assert_eq!(doc["errors"].as_array().map(Vec::len), Some(1000));
    assert_eq!(
        doc["omitted"]["errors"],
        serde_json::json!({"missing-required": 400})
    );
    let out = t.run(["validate", "--format", "json"]);
    assert_eq!(out.code, 1);
    let doc = out.json();
    assert_eq!(doc["errors"].as_array().map(Vec::len), Some(1000));
    assert_eq!(
        doc["omitted"]["errors"],
        serde_json::json!({"missing-required": 400})
    );
    let out = t.run(["status", "--format", "json"]);
    assert_eq!(out.json()["pending_errors"], 1400);
}

/// A config nested a hundred thousand deep is refused at once, naming the line
/// (the YAML parser took a minute on it).
#[test]
fn an_over_deep_config_is_refused_naming_the_line() {
    let t = Test::new();
    let n = 100_000;
    t.write(
        "pbxsync.yaml",
        format!(
            "source:\n  path: users.csv\nwatch: {}{}\n",
            "[".repeat(n),
            "]".repeat(n)
        ),
    );
    t.csv(format!("{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,,,,,\n"));
    let out = t.run(["validate"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("pbxsync.yaml: line 3: collections are nested more than 32 deep here"),
        "{}",
        out.stderr
    );
}

/// `policy.password_hash` beyond its bounds is refused when the config is read,
/// naming the key, its line and the bounds: `t_cost: 4294967295` used to make
/// `apply` hash for ever.
#[test]
fn password_hash_parameters_beyond_their_bounds_are_refused() {
    let t = Test::repo_with(
        "policy:\n  password_hash: {m_cost_kib: 64, t_cost: 4294967295, p_cost: 1}\n",
    );
    t.commit_csv(format!("{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,,,,,\n"));
    let out = t.run(["apply", "--auto-approve"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(
            "line 3: `policy.password_hash.t_cost` is 4294967295; it must be from 1 to 256"
        ),
        "{}",
        out.stderr
    );
    assert!(
        !t.state().exists(),
        "nothing may be written with a refused config"
    );
}

/// A hashing failure is recorded in the history like any failed apply, with the
/// redacted CSV and without any password, and nothing is written. The failure is
/// real: argon2 cannot allocate its 2 GiB under a 1 GiB address-space limit
/// (`ulimit -v`, as on a shared host).
#[test]
fn a_hashing_failure_is_recorded_in_the_history_without_the_password() {
    let t =
        Test::repo_with("policy:\n  password_hash: {m_cost_kib: 2097152, t_cost: 1, p_cost: 1}\n");
    t.commit_csv(format!(
        "{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,,,,,\n1002,Wei,Chen,wchen,\"Pass,word34\",,,,,\n"
    ));
    let mut limited = std::process::Command::new("sh");
    limited
        .current_dir(t.dir.path())
        .env_remove("PBXSYNC_TARGET")
        .env("NO_COLOR", "1")
        .args(["-c", "ulimit -v 1048576 && exec \"$@\"", "sh"])
        .args([env!("CARGO_BIN_EXE_pbxsync"), "apply", "--auto-approve"]);
    let out = limited.output().expect("run pbxsync under ulimit");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("hashing a password failed: out of memory"),
        "{stderr}"
    );

    let history = t.ok(["history", "--format", "json"]).json();
    let entries = history.as_array().expect("history");
    assert_eq!(entries.len(), 1, "{history}");
    assert_eq!(
        entries[0]["outcome"],
        "failed: hashing a password failed: out of memory"
    );
    let id = entries[0]["id"].to_string();
    let text = t.ok(["history", &id]).stdout;
    let json = t.ok(["history", &id, "--format", "json"]).stdout;
    for shown in [&text, &json] {
        assert!(shown.contains("1001,Jason,Flynn,jflynn,,"), "{shown}");
        for password in ["Sec_ret12", "Pass,word34", "word34"] {
            assert!(!shown.contains(password), "{password} in {shown}");
        }
    }
    assert_eq!(t.status_json()["users"], 0);
}
