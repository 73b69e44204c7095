//! Issue 14, item 8: results that were quietly wrong. The tab delimiter as the
//! README spells it, YAML's tags, `fmt` through a symlink, a read-only state
//! folder, a damaged state file, and a git filter that makes the checkout differ
//! from the commit.

use crate::support::{HASH, HEADER, Test, types};

const ROWS: &str = "\
1001,Jason,Flynn,jflynn,Sec_ret12,,,,,virtual\n\
1002,Maria,Garcia,mgarcia,Pass_word34,,,,,\n";

#[test]
fn the_tab_delimiter_as_the_readme_writes_it_reads_a_tab_separated_file() {
    let t = Test::new();
    t.csv(format!("{HEADER}{ROWS}").replace(',', "\t"));
    // YAML's single quotes keep the backslash: the config holds `\` and `t`.
    for spelling in [r"'\t'", r#""\t""#, "tab"] {
        t.write(
            "pbxsync.yaml",
            format!("source: {{path: users.csv}}\ndelimiter: {spelling}\n"),
        );
        let out = t.ok(["validate", "--format", "json"]);
        assert_eq!(out.json()["rows"], 2, "{spelling}: {}", out.stdout);
        assert_eq!(out.codes(), Vec::<String>::new(), "{spelling}");
    }
    t.write(
        "pbxsync.yaml",
        "source: {path: users.csv}\n\ndelimiter: '|'\n",
    );
    let out = t.run(["validate"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("line 3") && out.stderr.contains("unknown delimiter `|`"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_tagged_yaml_value_is_read_as_yaml_means_it() {
    let t = Test::repo_with(&format!("policy: {{{HASH}}}\n"));
    t.commit_csv(format!("{HEADER}{ROWS}"));
    t.apply(&[]);
    t.commit_csv(format!("{HEADER}1001,Jason,Flynn,jflynn,,,,,,virtual\n"));
    // `!!bool "true"` is `true` in YAML; it was refused with "invalid type:
    // boolean `true`, expected a boolean".
    t.write(
        "pbxsync.yaml",
        format!("source: {{path: users.csv}}\npolicy: {{{HASH}}}\nprune: !!bool \"true\"\n"),
    );
    let plan = t.plan_json(&[]);
    assert_eq!(
        types(&plan),
        ["remove_extension", "remove_user"],
        "{plan:#}"
    );
    // A tag pbxsync does not know is refused rather than read past.
    t.write(
        "pbxsync.yaml",
        format!("source: {{path: users.csv}}\npolicy: {{{HASH}}}\nprune: !yes true\n"),
    );
    let out = t.run(["plan"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("line 3") && out.stderr.contains("`prune` has the YAML tag `!yes`"),
        "{}",
        out.stderr
    );
}
