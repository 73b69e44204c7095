//! The config file through the binary: discovery and refusals.

use crate::support::{Test, run};

#[test]
fn config_is_found_upwards_and_paths_are_relative_to_it() {
    let t = Test::new();
    t.write("pbxsync.yaml", "source: {path: data/users.csv}\n");
    t.write("data/users.csv", "1001,Jason,Flynn,jflynn,Sec_ret12,,,,,\n");
    std::fs::create_dir_all(t.path("deep/er")).unwrap();
    let out = run(t.cmd().current_dir(t.path("deep/er")).args(["validate"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn unknown_keys_and_bad_values_are_refused_with_their_line() {
    let t = Test::new();
    t.csv("1001,Jason,Flynn,jflynn,Sec_ret12,,,,,\n");
    t.write(
        "pbxsync.yaml",
        "source: {path: users.csv}\nsafety:\n  max_change_pct: 5\n",
    );
    let out = t.run(["validate"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("line 3") && out.stderr.contains("safety.max_change_pct"),
        "{}",
        out.stderr
    );
    t.write(
        "pbxsync.yaml",
        "source: {path: users.csv}\nwatch: {auto_apply: sometimes}\n",
    );
    let out = t.run(["validate"]);
    assert!(
        out.stderr.contains("`never`, `safe`, `always`"),
        "{}",
        out.stderr
    );
    let out = t.run(["--config", "missing.yaml", "validate"]);
    assert!(out.stderr.contains("missing.yaml"), "{}", out.stderr);
}
