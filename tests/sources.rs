//! Where the desired CSV comes from (SPEC section 5): the committed file by default,
//! `--working-tree`, `--file`, `--rev` (undo), and git blame on every action.

use crate::support::{HEADER, Test, types};
use serde_json::json;

const V1: &str = "1001,Jason,Flynn,jflynn,Sec_ret12,Desk,,,,virtual\n";
const V2: &str = "1002,Maria,Garcia,mgarcia,Pass_word34,,,,,virtual\n";

#[test]
fn the_default_source_is_the_committed_csv_not_uncommitted_edits() {
    let t = Test::repo();
    t.commit_csv(format!("{HEADER}{V1}"));
    t.csv(format!("{HEADER}{V1}{V2}"));
    let plan = t.plan_json(&[]);
    assert_eq!(types(&plan), ["create_user", "add_extension"]);
    assert_eq!(plan["source"]["kind"], "git");
    t.apply(&[]);
    assert!(!t.export().contains("mgarcia"));
    // --working-tree takes the edit.
    let plan = t.plan_json(&["--working-tree"]);
    assert_eq!(plan["source"]["kind"], "working_tree");
    assert_eq!(types(&plan), ["create_user", "add_extension"]);
    assert_eq!(plan["actions"][0]["username"], "mgarcia");
    t.apply(&["--working-tree"]);
    assert!(t.export().contains("mgarcia"));
    let history = t.ok(["history"]).stdout;
    assert!(history.contains("uncommitted"), "{history}");
}

#[test]
fn an_edit_of_the_same_length_in_the_checkout_is_not_taken_for_the_commit() {
    // pbxsync reads a checkout as long as the committed file from disk, and
    // keeps it only if its blob id is the commit's.
    let t = Test::repo();
    t.commit_csv(format!("{HEADER}{V1}"));
    let edited = V1.replace("Jason", "Jasen");
    assert_eq!(edited.len(), V1.len());
    t.csv(format!("{HEADER}{edited}"));
    let plan = t.plan_json(&[]);
    assert_eq!(plan["actions"][0]["changes"][0]["to"], "Jason", "{plan}");
    t.apply(&[]);
    assert!(t.export().contains("Jason") && !t.export().contains("Jasen"));
    // The checkout as committed: the same plan (none), from the same blob.
    t.csv(format!("{HEADER}{V1}"));
    let plan = t.plan_json(&["--prune"]);
    assert_eq!(plan["summary"]["total"], 0, "{plan}");
}

#[test]
fn a_csv_that_is_not_committed_yet_is_a_clear_error() {
    let t = Test::repo();
    t.csv(format!("{HEADER}{V1}"));
    let out = t.run(["plan"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("users.csv is not in commit") && out.stderr.contains("--working-tree"),
        "{}",
        out.stderr
    );
}

#[test]
fn file_reads_any_file_without_git() {
    let t = Test::repo();
    t.commit_csv(format!("{HEADER}{V1}"));
    t.write("elsewhere/people.csv", format!("{HEADER}{V2}"));
    let plan = t.plan_json(&["--file", "elsewhere/people.csv"]);
    assert_eq!(plan["source"]["kind"], "file");
    assert_eq!(plan["actions"][0]["username"], "mgarcia");
    assert!(
        plan["actions"][0].get("blame").is_none(),
        "no blame without git"
    );
    t.apply(&["--file", "elsewhere/people.csv"]);
    assert_eq!(
        t.export(),
        format!("{HEADER}1002,Maria,Garcia,mgarcia,,,,,,virtual\n")
    );
}

#[test]
fn rev_plans_an_earlier_revision_so_an_import_can_be_undone() {
    let t = Test::repo();
    t.commit_csv(format!("{HEADER}{V1}"));
    t.apply(&[]);
    let first = t.export();
    t.commit_csv(format!("{HEADER}{}{V2}", V1.replace("Desk", "Front desk")));
    t.apply(&[]);
    assert_ne!(t.export(), first);
    let plan = t.plan_json(&["--rev", "HEAD~1", "--prune"]);
    assert_eq!(
        types(&plan),
        ["update_extension", "remove_extension", "remove_user"]
    );
    assert_eq!(
        plan["actions"][0]["changes"],
        json!([{"field": "description", "from": "Front desk", "to": "Desk"}])
    );
    t.apply(&["--rev", "HEAD~1", "--prune"]);
    assert_eq!(t.export(), first);
    // `git revert` and a plain apply do the same.
    t.git(&["revert", "--no-edit", "HEAD"]);
    assert_eq!(t.plan_json(&["--prune"])["actions"], json!([]));
    t.git(&["revert", "--no-edit", "HEAD"]);
    t.apply(&["--prune"]);
    assert!(t.export().contains("mgarcia"));
    t.git(&["revert", "--no-edit", "HEAD"]);
    t.apply(&["--prune"]);
    assert_eq!(t.export(), first);
    // An unknown revision is a clear error.
    let out = t.run(["plan", "--rev", "nosuchbranch"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("revision `nosuchbranch` not found"),
        "{}",
        out.stderr
    );
}

#[test]
fn every_action_names_the_commit_that_last_changed_its_line() {
    let t = Test::repo();
    let first = t.commit_csv(format!("{HEADER}{V1}"));
    let second = t.commit_csv(format!("{HEADER}{V1}{V2}"));
    let plan = t.plan_json(&[]);
    for a in plan["actions"].as_array().unwrap() {
        let expected = if a["username"] == "jflynn" {
            &first
        } else {
            &second
        };
        assert_eq!(
            a["blame"],
            json!({"commit": expected, "author": "Test Admin", "date": "2026-01-02"}),
            "{a:#}"
        );
    }
    let text = t.ok(["plan"]).stdout;
    assert!(
        text.contains(&format!(
            "line 3, Test Admin in {} on 2026-01-02",
            &second[..8]
        )),
        "{text}"
    );
    // The working tree has no commit to blame.
    let plan = t.plan_json(&["--working-tree"]);
    assert!(plan["actions"][0].get("blame").is_none(), "{plan:#}");
}

#[test]
fn history_records_the_commit_and_its_author() {
    let t = Test::repo();
    let commit = t.commit_csv(format!("{HEADER}{V1}"));
    t.apply(&[]);
    let history = t.ok(["history", "--format", "json"]).json();
    assert_eq!(history[0]["commit"], commit.as_str());
    assert_eq!(history[0]["source"], format!("commit {commit}"));
    assert_eq!(history[0]["git_author"], "Test Admin <admin@example.com>");
    assert!(!history[0]["local_user"].as_str().unwrap().is_empty());
}
