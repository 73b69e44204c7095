//! `pbxsync fmt`: canonical rewriting, `--check`, and leaving broken files alone.

use crate::support::{HEADER, Test};

#[test]
fn rewrites_canonically_and_check_agrees() {
    let t = Test::new();
    let mut bytes = b"\xEF\xBB\xBF1001, Jason ,Flynn,jflynn,Sec_ret12,\"Sales, desk\",,,,00:04:f2:12:34:56\r\n\r\n".to_vec();
    bytes.extend_from_slice(b"1002,Zo\xEB,Berg,zberg,Sec_ret12,,,,,VIRTUAL\r\n");
    t.csv(&bytes);
    assert_eq!(t.run(["fmt", "--check"]).code, 1);
    assert_eq!(
        std::fs::read(t.path("users.csv")).unwrap(),
        bytes,
        "--check must not write"
    );
    let out = t.run(["fmt"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        t.read("users.csv"),
        format!(
            "{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,\"Sales, desk\",,,,0004F2123456\n1002,Zoë,Berg,zberg,Sec_ret12,,,,,virtual\n"
        )
    );
    assert_eq!(t.run(["fmt", "--check"]).code, 0);
    assert_eq!(t.run(["validate"]).code, 0);
}

#[test]
fn a_file_with_errors_fmt_cannot_fix_is_left_untouched() {
    let t = Test::new();
    let content = format!("{HEADER}1001, Jason,O'Brien,jflynn,Sec_ret12,,,,,\n");
    t.csv(&content);
    let out = t.run(["fmt"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("name-apostrophe"), "{}", out.stderr);
    assert_eq!(t.read("users.csv"), content);
}
