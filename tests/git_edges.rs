//! Git edge cases with the git CLI: history rewritten since the last apply (amend,
//! rebase, force push), and sources that are not a CSV at the revision (a symlink,
//! a submodule, an unborn branch, a `source.ref` that names nothing): each a clear
//! message, never a panic.

use crate::support::{HEADER, Test, git, types};
use serde_json::json;

const ROWS: &str = "\
1001,Jason,Flynn,jflynn,Sec_ret12,Desk,,,,virtual\n\
1002,Maria,Garcia,mgarcia,Pass_word34,,,,,\n";

fn csv() -> String {
    format!("{HEADER}{ROWS}")
}

/// A refusal the user can act on: exit 1, one `error:` line, no panic.
fn refused(t: &Test, args: &[&str]) -> String {
    let out = t.run(args);
    assert_eq!(out.code, 1, "{args:?}: {}{}", out.stdout, out.stderr);
    assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    out.stderr
}

#[test]
fn an_amended_commit_plans_and_applies_and_status_says_the_last_apply_is_off_ref() {
    let t = Test::repo();
    t.commit_csv(csv());
    t.apply(&[]);
    let applied = t.git(&["rev-parse", "HEAD"]).trim().to_string();
    assert_eq!(t.status_json()["last_applied_on_ref"], true);
    // Amended: the applied commit is off `HEAD`, but still in the repository.
    t.csv(
        csv()
            .replace("Sec_ret12", "Sec_ret99")
            .replace(",Desk,", ",Front,"),
    );
    t.git(&["commit", "-qa", "--amend", "-m", "amended"]);
    let status = t.status_json();
    assert_eq!(status["last_applied_on_ref"], false, "{status:#}");
    assert_eq!(status["last_applied"]["commit"], applied.as_str());
    let text = t.ok(["status"]).stdout;
    assert!(
        text.contains("that commit is no longer on `HEAD`: history was rewritten since"),
        "{text}"
    );
    // Its CSV is still there: the Password cell compares as usual, no warning.
    let plan = t.plan_json(&[]);
    assert_eq!(
        types(&plan),
        ["update_user", "update_extension"],
        "{plan:#}"
    );
    assert_eq!(plan["warnings"], json!([]));
    t.apply(&[]);
    assert_eq!(t.status_json()["last_applied_on_ref"], true);
    assert!(!t.ok(["status"]).stdout.contains("no longer on"));
}

#[test]
fn a_force_pushed_branch_is_followed_and_the_lost_csv_warned_about() {
    // The team's repository, and the PBX host's clone following `origin/main`.
    let origin = Test::repo();
    origin.git(&["branch", "-M", "main"]);
    origin.commit_csv(csv());
    let host = Test::repo();
    let url = origin.dir.path().display().to_string();
    host.git(&["remote", "add", "origin", &url]);
    host.git(&["fetch", "-q", "origin"]);
    host.write(
        "pbxsync.yaml",
        format!(
            "source: {{path: users.csv, ref: origin/main}}\npolicy: {{{}}}\n",
            crate::support::HASH
        ),
    );
    host.apply(&[]);
    let before = host.sql("SELECT hash FROM passwords ORDER BY user_id");
    // Someone rewrites main (a password and a description change) and force-pushes;
    // the host fetches, and its old commit and blob are collected.
    origin.csv(
        csv()
            .replace("Sec_ret12", "Sec_ret99")
            .replace(",Desk,", ",Front,"),
    );
    origin.git(&["commit", "-qa", "--amend", "-m", "rewritten"]);
    host.git(&["fetch", "-q", "--force", "origin"]);
    host.git(&["reflog", "expire", "--expire=now", "--all"]);
    host.git(&["gc", "-q", "--prune=now"]);
    let status = host.status_json();
    assert_eq!(status["last_applied_on_ref"], false, "{status:#}");
    assert!(
        host.ok(["status"])
            .stdout
            .contains("no longer on `origin/main`")
    );
    let plan = host.plan_json(&[]);
    assert_eq!(types(&plan), ["update_extension"], "{plan:#}");
    let warnings = &plan["warnings"];
    assert_eq!(warnings[0]["code"], "last-applied-csv-missing", "{plan:#}");
    host.apply(&[]);
    assert_eq!(
        host.sql("SELECT hash FROM passwords ORDER BY user_id"),
        before
    );
    assert_eq!(host.status_json()["last_applied_on_ref"], true);
}

#[test]
fn a_rebase_onto_new_work_keeps_planning() {
    let t = Test::repo();
    t.git(&["branch", "-M", "main"]);
    t.commit_csv(csv());
    t.git(&["checkout", "-qb", "topic"]);
    t.commit_csv(format!("{}1003,Wei,Chen,wchen,Wei_pass56,,,,,\n", csv()));
    t.apply(&[]);
    // main moves on; topic is rebased onto it: the applied commit is replaced.
    t.git(&["checkout", "-q", "main"]);
    t.write("notes.txt", "unrelated\n");
    t.commit("notes");
    t.git(&["checkout", "-q", "topic"]);
    t.git(&["rebase", "-q", "main"]);
    assert_eq!(t.status_json()["last_applied_on_ref"], false);
    // Same CSV content: the same blob, nothing to do.
    let out = t.ok(["plan"]);
    assert!(out.stdout.starts_with("No changes."), "{}", out.stdout);
}

#[test]
fn a_csv_that_is_a_symlink_or_a_submodule_at_the_revision_is_refused_plainly() {
    let t = Test::repo();
    t.write("real.csv", csv());
    std::os::unix::fs::symlink("real.csv", t.path("users.csv")).unwrap();
    t.commit("a symlink");
    let e = refused(&t, &["plan"]);
    assert!(e.contains("users.csv is a symlink in commit"), "{e}");
    assert!(e.contains("point at the CSV file itself"), "{e}");
    refused(&t, &["apply", "--auto-approve"]);

    // A submodule where the CSV should be.
    let t = Test::repo();
    let inner = Test::repo();
    inner.commit_csv(csv());
    let url = inner.dir.path().display().to_string();
    git(
        t.dir.path(),
        &[
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            &url,
            "users.csv",
        ],
    );
    t.commit("a submodule");
    let e = refused(&t, &["plan"]);
    assert!(e.contains("users.csv is a submodule in commit"), "{e}");
}

#[test]
fn an_unborn_branch_and_a_ref_that_names_nothing_are_refused_plainly() {
    let t = Test::repo();
    t.commit_csv(csv());
    t.git(&["checkout", "-q", "--orphan", "fresh"]);
    let e = refused(&t, &["plan"]);
    assert!(
        e.contains("the branch `fresh` checked out in the git repository at")
            && e.contains("has no commits yet"),
        "{e}"
    );
    refused(&t, &["apply", "--auto-approve"]);

    let t = Test::repo();
    t.commit_csv(csv());
    t.write(
        "pbxsync.yaml",
        format!(
            "source: {{path: users.csv, ref: release}}\npolicy: {{{}}}\n",
            crate::support::HASH
        ),
    );
    let e = refused(&t, &["plan"]);
    assert!(e.contains("revision `release` not found"), "{e}");
    assert!(e.contains("give a branch, tag or commit id"), "{e}");
    let e = refused(&t, &["plan", "--rev", "v9"]);
    assert!(e.contains("revision `v9` not found"), "{e}");
}
