//! Hostile and careless files (issue 14, items 1 to 4): line ends of every platform,
//! rows with cells too many or too few, control sequences, wide characters. No
//! password reaches a terminal or the history, nothing panics, lines are right.

use crate::support::*;

const SECRETS: [&str; 2] = ["Sec_ret12", "Sec_ret34"];

fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} shows {secret}:\n{text}");
    }
}

/// Every command that reads the CSV and prints its diagnostics.
fn assert_no_secret_in_diagnostics(t: &Test, file: &str) {
    for args in [
        vec!["validate", "--file", file],
        vec!["fmt", "--check", "--file", file],
        vec!["plan", "--file", file],
        vec!["apply", "--auto-approve", "--file", file],
    ] {
        let out = t.run(&args);
        assert_eq!(out.code, 1, "{args:?} must refuse the file: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{args:?}: {}", out.stderr);
        assert_no_secret(&format!("{args:?} (stdout)"), &out.stdout);
        assert_no_secret(&format!("{args:?}"), &out.stderr);
    }
}

#[test]
fn a_header_ending_in_a_lone_cr_keeps_the_passwords_out_of_history() {
    for ends in [["\r", "\n"], ["\r", "\r"], ["\r\n", "\r"]] {
        let t = Test::repo();
        let header = HEADER.trim_end();
        let csv = format!(
            "{header}{}1001,Jason,Flynn,jflynn,Sec_ret12,,,,,{}1002,Wei,Chen,wchen,Sec_ret34,,,,,{}",
            ends[0], ends[1], ends[1]
        );
        t.commit_csv(&csv);
        t.apply(&[]);
        assert_eq!(t.export().lines().count(), 3, "both rows applied");
        let text = t.ok(["history", "1"]).stdout;
        assert_no_secret("history 1", &text);
        assert!(text.contains("1002,Wei,Chen,wchen,,,,,,"), "{text}");
        let json = t.ok(["history", "1", "--format", "json"]).stdout;
        assert_no_secret("history 1 --format json", &json);
        let state = std::fs::read(t.state()).unwrap();
        for secret in SECRETS {
            assert!(
                !state.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "the state file holds {secret}"
            );
        }
    }
}

#[test]
fn rows_with_cells_too_many_or_too_few_never_show_the_password() {
    let t = Test::repo();
    t.write(
        "extra.csv",
        "1001,Jason,Flynn,Jr,jflynn,Sec_ret12,,,,,\n1002,Wei,Chen,wchen,Sec_ret34,,,,\n",
    );
    assert_no_secret_in_diagnostics(&t, "extra.csv");
    // With a header whose order puts the password first.
    t.write(
        "moved.csv",
        "Password,Extension,First Name,Last Name,Web Username\nSec_ret12,1001,Jason,Flynn\n,Sec_ret34,1002,Wei,Chen,wchen\n",
    );
    assert_no_secret_in_diagnostics(&t, "moved.csv");
}

#[test]
fn an_error_on_the_continuation_line_of_a_quoted_cell_masks_the_record_s_password() {
    let t = Test::repo();
    t.write(
        "multi.csv",
        "1001,Jason,Flynn,jflynn,Sec_ret12,\"Sales\nfloor 2\",bad@,,,\n1002,Wei,Chen,wchen,Sec_ret34,\"a\nb\",,,x,\n\
         1003,\"Ann\nMarie\",Lee,alee,Sec_ret12,,bad@,,,\n",
    );
    assert_no_secret_in_diagnostics(&t, "multi.csv");
    let out = t.run(["validate", "--file", "multi.csv"]);
    assert!(out.stderr.contains("multi.csv:1:7"), "{}", out.stderr);
    assert!(out.stderr.contains("multi.csv:3:9"), "{}", out.stderr);
    // The password on the continuation line, in the fourth cell of that line.
    assert!(
        out.stderr.contains("6 | Marie\",Lee,alee,*****,,bad@,,,"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_tab_separated_file_is_read_as_one_and_its_passwords_stay_masked() {
    let t = Test::repo();
    t.write(
        "tabs.csv",
        "1001\tJason \tFlynn\tjflynn\tSec_ret12\t\t\t\t\t\n1002\tWei\tChen\twchen\tSec_ret34\t\t\t\t\t\n",
    );
    assert_no_secret_in_diagnostics(&t, "tabs.csv");
    let out = t.run(["validate", "--file", "tabs.csv", "--format", "json"]);
    assert_eq!(
        out.codes(),
        ["whitespace"],
        "read with tabs: {}",
        out.stdout
    );
    // A tab-separated file read with commas shows its tabs, not its password.
    t.write(
        "pbxsync.yaml",
        format!("source: {{path: users.csv}}\ndelimiter: ','\npolicy: {{{HASH}}}\n"),
    );
    let out = t.run(["validate", "--file", "tabs.csv"]);
    assert!(out.stderr.contains("wrong-column-count"), "{}", out.stderr);
    assert_no_secret("validate with ','", &out.stderr);
}

#[test]
fn lone_cr_files_are_numbered_by_line_and_never_panic() {
    let t = Test::repo();
    t.write(
        "mac.csv",
        format!(
            "{}\r1001,Jason,Flynn,jflynn,Sec_ret12,,,,,\r\r1002,Wei ,Chen,wchen,Sec_ret34,,bad,,,\r",
            HEADER.trim_end()
        ),
    );
    let out = t.run(["validate", "--file", "mac.csv"]);
    assert_eq!(out.code, 1);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert!(out.stderr.contains("mac.csv:4:2"), "{}", out.stderr);
    assert!(out.stderr.contains("mac.csv:4:7"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("4 | 1002,Wei ,Chen,wchen,*****,,bad,,,\n"),
        "{}",
        out.stderr
    );
    let json = t
        .run(["validate", "--file", "mac.csv", "--format", "json"])
        .json();
    let lines: Vec<u64> = json["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [4, 4]);
    assert_no_secret_in_diagnostics(&t, "mac.csv");
}

#[test]
fn control_sequences_in_cells_never_reach_the_terminal() {
    let t = Test::repo();
    // Clear screen, set the window title, a C1 CSI, a right-to-left override.
    let csv = "1001,Jason,Flynn,jflynn,Sec_ret12,\x1b[2J\x1b]0;pwned\x07,bad\u{9b}31m,\u{202e}evil,,\n\
               1002,Wei\x1b[8m,Chen,wchen,Sec_ret34,,,,,\n";
    t.write("evil.csv", csv);
    for args in [
        vec!["validate", "--file", "evil.csv"],
        vec!["plan", "--file", "evil.csv"],
        vec!["fmt", "--check", "--file", "evil.csv"],
    ] {
        let out = t.run(&args);
        for bad in ['\x1b', '\x07', '\u{9b}', '\u{202e}'] {
            assert!(
                !out.stderr.contains(bad) && !out.stdout.contains(bad),
                "{args:?} echoes {:?}:\n{}{}",
                bad,
                out.stdout,
                out.stderr
            );
        }
    }
    let out = t.run(["validate", "--file", "evil.csv"]);
    assert!(out.stderr.contains("\\u{1b}[2J"), "{}", out.stderr);
    assert!(
        out.stderr.contains("email `bad\\u{9b}31m`"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_marker_sits_under_wide_and_combining_characters() {
    let t = Test::repo();
    t.write(
        "wide.csv",
        "1001,李小龙,Zoe\u{301},jflynn,Sec_ret12,👨\u{200d}👩\u{200d}👧 desk,bad,,,\n",
    );
    let out = t.run(["validate", "--file", "wide.csv"]);
    let row = out.stderr.lines().find(|l| l.starts_with("1 |")).unwrap();
    let marker = out.stderr.lines().find(|l| l.contains('^')).unwrap();
    let width = |s: &str| unicode_width::UnicodeWidthStr::width(s);
    let at = row.find(",bad").unwrap() + 1;
    assert_eq!(
        width(&row[..at]),
        width(&marker[..marker.find('^').unwrap()]),
        "{}",
        out.stderr
    );
}
