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
