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

#[test]
fn fmt_writes_the_file_a_symlink_points_to_and_keeps_the_link() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let t = Test::new();
    let messy = "1001, Jason,Flynn,jflynn,Sec_ret12,,,,,\n";
    let formatted = format!("{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,,,,,\n");
    t.write("data/users.csv", messy);
    std::fs::set_permissions(t.path("data/users.csv"), PermissionsExt::from_mode(0o640)).unwrap();
    // Two links deep, one of them relative to its own directory.
    symlink("data/users.csv", t.path("link.csv")).unwrap();
    symlink(t.path("link.csv"), t.path("again.csv")).unwrap();
    // A file under the temporary name fmt used to write (a link to a file that
    // must not be touched) is never written through.
    t.write("victim.txt", "untouched\n");
    symlink(t.path("victim.txt"), t.path("data/.users.csv.pbxsync-tmp")).unwrap();

    t.ok(["fmt", "--file", "again.csv"]);
    assert_eq!(t.read("data/users.csv"), formatted);
    for link in ["link.csv", "again.csv"] {
        let meta = std::fs::symlink_metadata(t.path(link)).unwrap();
        assert!(meta.file_type().is_symlink(), "{link} is still a link");
    }
    let mode = std::fs::metadata(t.path("data/users.csv"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640, "the file keeps its permissions");
    assert_eq!(t.read("victim.txt"), "untouched\n");
    let left: Vec<_> = std::fs::read_dir(t.path("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "users.csv" && n != ".users.csv.pbxsync-tmp")
        .collect();
    assert!(left.is_empty(), "no temporary file left behind: {left:?}");

    // The config's CSV path through a link, too.
    t.write("data/users.csv", messy);
    t.write("pbxsync.yaml", "source: {path: link.csv}\n");
    t.ok(["fmt"]);
    assert_eq!(t.read("data/users.csv"), formatted);
    assert!(
        std::fs::symlink_metadata(t.path("link.csv"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(t.ok(["fmt", "--check"]).code, 0);
}
