//! Issue 14, items 5 and 6: cells a spreadsheet would run as formulas (refused in
//! names, a warning in free text, escaped with `'` by `export` and `fmt` and read
//! back without it), and `policy.extension_pattern` matching the whole cell.

use crate::support::{HASH, HEADER, Test};
use pbxsync::model::{DeviceCell, Directory, Extension, ExtensionKind, Licenses, Text, User};
use pbxsync::validate::{Policy, rules, validate};
use proptest::prelude::*;
use serde_json::json;

/// The warning codes of a validation or plan JSON.
fn warnings(doc: &serde_json::Value) -> Vec<(u64, u64, String)> {
    doc["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .map(|w| {
            (
                w["line"].as_u64().unwrap_or(0),
                w["column"].as_u64().unwrap_or(0),
                w["code"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The cells of a CSV text, read with the `csv` crate (the reader spreadsheets
/// resemble: no escape taken away).
fn cells(text: &str) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes())
        .records()
        .map(|r| r.expect("csv").iter().map(String::from).collect())
        .collect()
}

/// A cell that a spreadsheet would run: what no exported or formatted cell may be
/// (Mobile, column 9, apart).
fn runs_in_a_spreadsheet(cell: &str) -> bool {
    cell.bytes().next().is_some_and(rules::is_formula_start)
}

#[test]
fn names_that_start_like_a_formula_are_errors_even_escaped() {
    let t = Test::new();
    t.csv(format!(
        "{HEADER}1001,=cmd|' /C calc'!A0,Flynn,jflynn,Sec_ret12,,,,,\n\
         1002,Wei,+Chen,wchen,Sec_ret12,,,,,\n\
         1003,Ann,-Lee,alee,Sec_ret12,,,,,\n\
         1004,@Bo,Berg,bberg,Sec_ret12,,,,,\n\
         1005,'=x,Berg,cberg,Sec_ret12,,,,,\n"
    ));
    let out = t.run(["validate", "--format", "json"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let doc = out.json();
    let errors: Vec<(u64, u64, &str)> = doc["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["line"].as_u64().unwrap(),
                e["column"].as_u64().unwrap(),
                e["code"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        [
            (2, 2, "bad-name"),
            (3, 3, "bad-name"),
            (4, 3, "bad-name"),
            (5, 2, "bad-name"),
            (6, 2, "bad-name"),
        ]
    );
    assert!(
        doc["errors"][2]["message"]
            .as_str()
            .unwrap()
            .contains("Last Name starts with `-`"),
        "{doc:#}"
    );
}

#[test]
fn free_text_that_starts_like_a_formula_is_a_warning_unless_escaped() {
    let t = Test::new();
    t.csv(format!(
        "{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,=SUM(A1),-j@example.com,@home,+1 555 0100,\n\
         1002,Wei,Chen,wchen,Sec_ret12,'=SUM(A1),'-w@example.com,'@home,'+1 555 0100,\n"
    ));
    let out = t.run(["validate", "--format", "json"]);
    assert_eq!(
        out.code, 0,
        "warnings do not fail validation: {}",
        out.stdout
    );
    assert_eq!(
        warnings(&out.json()),
        [
            (2, 6, "formula-like-cell".to_string()),
            (2, 7, "formula-like-cell".to_string()),
            (2, 8, "formula-like-cell".to_string()),
        ]
    );
    // As text: the code, where, and what to do.
    let text = t.run(["validate"]);
    assert_eq!(text.code, 0);
    assert!(
        text.stderr
            .contains("warning[formula-like-cell]: Description starts with `=`"),
        "{}",
        text.stderr
    );
    assert!(text.stderr.contains("pbxsync fmt"), "{}", text.stderr);
}

/// Values a spreadsheet would run, in every column that may hold them, applied,
/// exported, committed as the CSV and planned again: no change, no warning, and no
/// exported cell that a spreadsheet runs.
#[test]
fn export_escapes_formulas_and_planning_the_export_changes_nothing() {
    let t = Test::repo_with(&format!("inventory: devices.csv\npolicy: {{{HASH}}}\n"));
    t.write("devices.csv", "id,model\n-SOFT1,Soft\n");
    t.commit_csv(format!(
        "{HEADER}1001,Jason,Flynn,-jflynn,Sec_ret12,=SUM(A1),-j@example.com,@home,+1 555 0100,-soft1\n\
         1002,Wei,Chen,wchen,Sec_ret12,+1 555,+w@example.com,-x,,virtual\n\
         1003,Ann,Lee,alee,Sec_ret12,-x,=a@example.com,=HYPERLINK(\"http://x/\"),,\n\
         1004,Bo,Berg,bberg,Sec_ret12,@home,,\"+1,2\",,\n\
         1005,Cy,Berg,cberg,Sec_ret12,''=already escaped,,'plain,,\n"
    ));
    t.apply(&[]);
    let export = t.export();
    let rows = cells(&export);
    assert_eq!(rows.len(), 6, "{export}");
    for row in &rows[1..] {
        for (i, cell) in row.iter().enumerate() {
            assert!(
                i == 8 || !runs_in_a_spreadsheet(cell),
                "column {}: {cell:?}\n{export}",
                i + 1
            );
        }
    }
    assert_eq!(
        rows[1],
        [
            "1001",
            "Jason",
            "Flynn",
            "'-jflynn",
            "",
            "'=SUM(A1)",
            "'-j@example.com",
            "'@home",
            "+1 555 0100",
            "'-SOFT1"
        ]
    );
    assert_eq!(rows[3][7], "'=HYPERLINK(\"http://x/\")");
    // A value that itself starts with `'=` keeps its `'`; any other `'` stays as it is.
    assert_eq!(rows[5][5], "''=already escaped");
    assert_eq!(rows[5][7], "'plain");

    t.commit_csv(&export);
    let plan = t.plan_json(&["--prune"]);
    assert_eq!(plan["actions"], json!([]), "{plan:#}");
    assert_eq!(plan["errors"], json!([]));
    assert_eq!(plan["warnings"], json!([]), "{plan:#}");
    assert!(t.ok(["plan"]).stdout.starts_with("No changes."));
    // The same with the whole directory read, not only the rows whose digest moved.
    let full = crate::support::run(
        t.cmd()
            .env("PBXSYNC_FULL_PLAN", "1")
            .args(["plan", "--prune", "--format", "json"]),
    );
    assert_eq!(full.code, 0, "{}", full.stderr);
    assert_eq!(full.json()["actions"], json!([]), "{}", full.stdout);
    // And the values in the target are those of the first file, escape and all.
    assert_eq!(
        t.sql("SELECT description FROM extensions ORDER BY number"),
        ["=SUM(A1)", "+1 555", "-x", "@home", "'=already escaped"]
    );
}

#[test]
fn fmt_writes_the_escaped_form_and_keeps_every_value() {
    let t = Test::repo();
    let original = format!(
        "{HEADER}1001,Jason,Flynn,-jflynn,=Sec_ret12,=SUM(A1),-j@example.com,@home,+1 555 0100,virtual\n\
         1002,Wei,Chen,wchen,Sec_ret12,'-x,,''y,,virtual\n"
    );
    t.commit_csv(&original);
    t.apply(&[]);
    assert_eq!(t.run(["fmt", "--check"]).code, 1);
    t.ok(["fmt"]);
    let formatted = t.read("users.csv");
    assert_eq!(
        formatted,
        format!(
            "{HEADER}1001,Jason,Flynn,'-jflynn,'=Sec_ret12,'=SUM(A1),'-j@example.com,'@home,+1 555 0100,virtual\n\
             1002,Wei,Chen,wchen,Sec_ret12,'-x,,'y,,virtual\n"
        )
    );
    assert_eq!(t.run(["fmt", "--check"]).code, 0);
    let v = t.run(["validate", "--format", "json"]);
    assert_eq!(v.code, 0, "{}", v.stdout);
    assert_eq!(v.json()["warnings"], json!([]));
    // The formatted file means what the applied one meant, the password included:
    // set again from it, it is still `=Sec_ret12`, not `'=Sec_ret12`.
    t.commit("fmt");
    assert_eq!(t.plan_json(&[])["actions"], json!([]));
    t.apply(&["--reset-passwords"]);
    let hash = t.sql(
        "SELECT hash FROM passwords JOIN users ON users.id = passwords.user_id \
         WHERE username = '-jflynn'",
    );
    let hash = argon2::PasswordHash::new(&hash[0]).unwrap();
    let argon = argon2::Argon2::default();
    use argon2::PasswordVerifier;
    assert!(argon.verify_password(b"=Sec_ret12", &hash).is_ok());
    assert!(argon.verify_password(b"'=Sec_ret12", &hash).is_err());
}

/// The library's export and reader are inverse on every value the target may
/// hold: generated values, many of them starting like a formula or an escape.
fn free_text() -> impl Strategy<Value = String> {
    "['=+\\-@ a1é,\"\\n\\t]{0,8}".prop_filter("a stored value is trimmed", |s| s.trim() == s)
}

fn directory_strategy() -> impl Strategy<Value = Directory> {
    let user = (
        "['=+\\-a1._]{0,3}",
        "['=+\\-a1]{0,3}",
        free_text(),
        free_text(),
        "[+\\-(]{0,2}[0-9]{1,4}",
        "['\\-A1]{0,2}",
        0..3u8,
    );
    prop::collection::vec(user, 1..8).prop_map(|users| {
        let mut dir = Directory {
            users: Vec::new(),
            extensions: Vec::new(),
            devices: Vec::new(),
            licenses: Licenses::default(),
        };
        for (i, (name, local, description, im, mobile, device, kind)) in
            users.into_iter().enumerate()
        {
            // Unique and valid: a username of `[a-z0-9._-]` characters.
            let username: Text = format!("{}u{i}", name.replace(['\'', '=', '+'], "x")).into();
            dir.users.push(User {
                username: username.clone(),
                fields: [
                    "Jason".into(),
                    "Flynn".into(),
                    format!("{local}x@example.com").into(),
                    im.into(),
                    mobile.into(),
                ],
            });
            let id = format!("{}SOFT{i}", device.replace('\'', ""));
            let (kind, device) = match kind {
                0 => (ExtensionKind::Device, Some(Text::from(id))),
                1 => (ExtensionKind::Virtual, None),
                _ => (ExtensionKind::VoicemailOnly, None),
            };
            dir.extensions.push(Extension {
                number: format!("{}", 1000 + i).into(),
                username,
                kind,
                device,
                description: description.into(),
            });
        }
        dir.sort();
        dir
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn export_then_read_gives_back_every_value_and_no_cell_runs(dir in directory_strategy()) {
        let text = pbxsync::export::to_csv(&dir);
        for row in cells(&text).iter().skip(1) {
            for (i, cell) in row.iter().enumerate() {
                prop_assert!(i == 8 || !runs_in_a_spreadsheet(cell), "{cell:?} in {text}");
            }
        }
        let v = validate(text.as_bytes(), &Policy::default());
        prop_assert!(v.diagnostics.is_empty(), "{:?}\n{text}", v.diagnostics);
        for (user, read) in dir.users.iter().zip(&v.desired.users) {
            prop_assert_eq!(&user.username, &read.username);
            prop_assert_eq!(&user.fields, &read.fields);
        }
        prop_assert_eq!(dir.users.len(), v.desired.users.len());
        for (ext, read) in dir.extensions.iter().zip(&v.desired.extensions) {
            prop_assert_eq!(&ext.description, &read.description);
            let device = match (ext.kind, &ext.device) {
                (ExtensionKind::Device, Some(id)) => DeviceCell::Device(id.clone()),
                (ExtensionKind::Virtual, _) => DeviceCell::Virtual,
                _ => DeviceCell::Keep,
            };
            prop_assert_eq!(&read.device, &device);
        }
        // What fmt makes of the export is the export.
        prop_assert_eq!(pbxsync::fmt::canonical(&v.text, v.delimiter, &v.layout), text);
    }
}

#[test]
fn the_extension_pattern_must_match_the_whole_cell() {
    let t = Test::new();
    t.write(
        "pbxsync.yaml",
        "source: {path: users.csv}\npolicy:\n  extension_pattern: '[0-9]{3,4}'\n",
    );
    t.csv(
        "x123y,Jason,Flynn,jflynn,Sec_ret12,,,,,\n123y,Wei,Chen,wchen,Sec_ret12,,,,,\n\
         12345,Ann,Lee,alee,Sec_ret12,,,,,\n1001,Bo,Berg,bberg,Sec_ret12,,,,,\n",
    );
    let out = t.run(["validate", "--format", "json"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    let doc = out.json();
    assert_eq!(
        doc["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["line"].as_u64().unwrap(), e["code"].as_str().unwrap()))
            .collect::<Vec<_>>(),
        [
            (1, "bad-extension"),
            (2, "bad-extension"),
            (3, "bad-extension")
        ]
    );
    assert!(
        doc["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("`[0-9]{3,4}`"),
        "{doc:#}"
    );
    // An alternation is anchored as a whole.
    t.write(
        "pbxsync.yaml",
        "source: {path: users.csv}\npolicy:\n  extension_pattern: '1[0-9]{3}|2[0-9]{2}'\n",
    );
    t.csv("1001,Jason,Flynn,jflynn,Sec_ret12,,,,,\n250,Wei,Chen,wchen,Sec_ret12,,,,,\n2500,Ann,Lee,alee,Sec_ret12,,,,,\n");
    assert_eq!(
        t.run(["validate", "--format", "json"]).codes(),
        ["bad-extension"]
    );
}

#[test]
fn an_empty_or_broken_extension_pattern_is_a_config_error_naming_the_key() {
    let t = Test::new();
    t.csv("anything!,Jason,Flynn,jflynn,Sec_ret12,,,,,\n");
    for (pattern, says) in [
        ("''", "empty"),
        ("'   '", "empty"),
        ("'1)|(2'", "not a valid regular expression"),
    ] {
        t.write(
            "pbxsync.yaml",
            format!("source: {{path: users.csv}}\npolicy:\n  extension_pattern: {pattern}\n"),
        );
        let out = t.run(["validate"]);
        assert_eq!(out.code, 1, "{pattern}: {}", out.stdout);
        assert!(
            out.stderr.contains("line 3")
                && out.stderr.contains("`policy.extension_pattern`")
                && out.stderr.contains(says),
            "{pattern}: {}",
            out.stderr
        );
    }
}
