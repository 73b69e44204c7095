//! `pbxsync init`: a starter repository that validates as soon as rows are added.

use crate::support::{Test, run};

#[test]
fn init_writes_config_csv_gitignore_and_a_repository() {
    let t = Test::new();
    std::fs::remove_file(t.path("pbxsync.yaml")).unwrap();
    let out = t.run(["init", "site"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(t.read("site/pbxsync.yaml").contains("path: users.csv"));
    assert!(t.read("site/users.csv").starts_with("Extension,First Name"));
    assert!(t.read("site/.gitignore").lines().any(|l| l == ".pbxsync/"));
    assert!(t.path("site/.git").is_dir());
    t.write(
        "site/users.csv",
        format!(
            "{}1001,Jason,Flynn,jflynn,Sec_ret12,,,,,\n",
            t.read("site/users.csv")
        ),
    );
    let out = run(t.cmd().current_dir(t.path("site")).args(["validate"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    // A second init keeps what is there.
    let out = t.run(["init", "site"]);
    assert!(out.stdout.contains("kept"), "{}", out.stdout);
    assert_eq!(t.read("site/.gitignore").matches(".pbxsync/").count(), 1);
}
