//! The reader through the binary: encodings, delimiters, quoting, hostile input.

use crate::support::{HEADER, Test};

#[test]
fn crlf_bom_semicolons_and_quoted_line_breaks() {
    let t = Test::new();
    t.csv("\u{feff}Extension;First Name;Last Name;Web Username;Password;Description\r\n1001;Jason;Flynn;jflynn;Sec_ret12;\"two\r\nlines; really\"\r\n\r\n1002;Wei;Chen;wchen;Sec_ret12;\r\n");
    let out = t.run(["validate"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("2 rows"), "{}", out.stdout);
}

#[test]
fn wrong_column_count_names_the_count() {
    let t = Test::new();
    t.csv(format!(
        "{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,Sales, desk,,,,\n"
    ));
    let out = t.run(["validate", "--format", "json"]);
    let e = &out.json()["errors"][0];
    assert_eq!(e["code"], "wrong-column-count");
    assert_eq!(e["line"], 2);
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("11 columns, expected 10")
    );
}

#[test]
fn a_misspelt_header_column_is_an_error() {
    let t = Test::new();
    t.csv("Extension,First Name,Last Name,Web Usrname\n1001,Jason,Flynn,jflynn\n");
    let out = t.run(["validate", "--format", "json"]);
    let e = &out.json()["errors"][0];
    assert_eq!(
        (e["code"].as_str(), e["column"].as_u64()),
        (Some("bad-header"), Some(4))
    );
}

#[test]
fn hostile_files_never_crash() {
    let t = Test::new();
    let big_field = format!(
        "1001,Jason,Flynn,jflynn,Sec_ret12,{},,,,\n",
        "x".repeat(10 << 20)
    );
    let wide_row = format!("{}\n", vec!["1"; 10_000].join(","));
    let cases: Vec<Vec<u8>> = vec![
        big_field.into_bytes(),
        wide_row.into_bytes(),
        "\"".repeat(100_001).into_bytes(),
        b"10\x0001,Ja\x00son,Flynn,jflynn,Sec_ret12,,,,,\n".to_vec(),
        vec![0xFF, 0xFE, 0x00, 0x41, 0x0A, 0xC3],
    ];
    for bytes in cases {
        t.csv(&bytes);
        let out = t.run(["validate", "--format", "json"]);
        assert!(
            out.code == 0 || out.code == 1,
            "exit {} stderr {}",
            out.code,
            out.stderr
        );
        let _ = out.json();
    }
}
