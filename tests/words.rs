//! What plans, applies, history and status say to a person (issue 17, items 4, 7, 8
//! and 9): notes on what a plan leaves alone, counts and words, apply progress, the
//! history and status as short lists. Each test runs the command a user would type.

use crate::support::{HEADER, Test, run};

const ANA: &str = "101,Ana,Silva,asilva,Reception_26,Front desk,ana@example.com,,,\n";
const BEN: &str = "102,Ben,Okafor,bokafor,Sales_2026x,Sales,,,,\n";
const BEN_SOFT: &str = "103,Ben,Okafor,bokafor,,Soft phone,,,,virtual\n";

/// A repository whose CSV (Ana, Ben with two extensions) is applied.
fn applied() -> Test {
    let t = Test::repo();
    t.commit_csv(format!("{HEADER}{ANA}{BEN}{BEN_SOFT}"));
    t.apply(&[]);
    t
}

/// The `notes` of a JSON document, as (code, message) pairs.
fn notes(doc: &serde_json::Value) -> Vec<(String, String)> {
    doc["notes"]
        .as_array()
        .unwrap_or_else(|| panic!("no notes in {doc:#}"))
        .iter()
        .map(|n| {
            (
                n["code"].as_str().unwrap_or_default().to_string(),
                n["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn codes_of(doc: &serde_json::Value) -> Vec<String> {
    notes(doc).into_iter().map(|(code, _)| code).collect()
}

#[test]
fn a_deleted_row_is_noted_as_kept_not_silently_in_sync() {
    let t = applied();
    // Ben leaves the CSV; pruning is off.
    t.commit_csv(format!("{HEADER}{ANA}"));
    let out = t.ok(["plan"]);
    assert_eq!(
        out.stdout,
        "No changes. The target matches the desired state.\n"
    );
    assert!(
        out.stderr.contains(
            "note: the target holds 2 extensions and 1 user that the CSV does not name: kept (`--prune` would remove them; `plan -v` lists them)"
        ),
        "{}",
        out.stderr
    );
    // JSON carries the same note; -v names what is kept.
    let doc = t.plan_json(&[]);
    assert_eq!(codes_of(&doc), ["not-in-csv"]);
    let out = t.ok(["plan", "-v"]);
    assert!(
        out.stderr.contains("  kept extensions: 102, 103\n")
            && out.stderr.contains("  kept users: bokafor\n"),
        "{}",
        out.stderr
    );
    // A pull-request comment says it too.
    let out = t.ok(["plan", "--format", "markdown"]);
    assert!(
        out.stdout.contains(
            "> **Note:** the target holds 2 extensions and 1 user that the CSV does not name"
        ),
        "{}",
        out.stdout
    );
    // Pruning removes them, and then there is nothing to note.
    let doc = t.plan_json(&["--prune"]);
    assert_eq!(codes_of(&doc), Vec::<String>::new());
    assert_eq!(doc["summary"]["remove_extension"], 2);
}

#[test]
fn the_note_is_the_same_whichever_rows_the_plan_reads() {
    let t = applied();
    t.commit_csv(format!(
        "{HEADER}{}{BEN}",
        ANA.replace("Front desk", "Reception")
    ));
    let changed_rows = t.plan_json(&[]);
    let whole = run(t
        .cmd()
        .env("PBXSYNC_FULL_PLAN", "1")
        .args(["plan", "--format", "json"]))
    .json();
    assert_eq!(notes(&changed_rows), notes(&whole));
    assert_eq!(
        notes(&whole),
        [(
            "not-in-csv".to_string(),
            "the target holds 1 extension that the CSV does not name: kept (`--prune` would remove them; `plan -v` lists them)".to_string()
        )]
    );
    // The list is the same either way too.
    for env in [None, Some("1")] {
        let mut cmd = t.cmd();
        if let Some(v) = env {
            cmd.env("PBXSYNC_FULL_PLAN", v);
        }
        let out = run(cmd.args(["plan", "-v"]));
        assert!(
            out.stderr.contains("  kept extensions: 103\n"),
            "{}",
            out.stderr
        );
        assert!(!out.stderr.contains("kept users"), "{}", out.stderr);
    }
}

#[test]
fn after_an_apply_the_no_op_answer_still_says_what_is_kept() {
    let t = applied();
    t.commit_csv(format!(
        "{HEADER}{}",
        ANA.replace("Front desk", "Reception")
    ));
    t.apply(&[]);
    // Nothing changed since that apply: answered without reading a row, and
    // still not silent about Ben.
    assert!(t.answers_without_the_csv(&["plan"]));
    let out = t.ok(["plan"]);
    assert!(
        out.stderr
            .contains("note: the target holds 2 extensions and 1 user that the CSV does not name"),
        "{}",
        out.stderr
    );
    let status = t.ok(["status"]);
    assert!(
        status
            .stdout
            .contains("pending:       No changes. The target matches the desired state.\n")
            && status
                .stderr
                .contains("note: the target holds 2 extensions and 1 user"),
        "{}{}",
        status.stdout,
        status.stderr
    );
    assert_eq!(codes_of(&t.status_json()), ["not-in-csv"]);
    // After a pruning apply there is nothing left to note.
    t.apply(&["--prune"]);
    let out = t.ok(["plan"]);
    assert_eq!(out.stderr, "");
}

#[test]
fn an_uncommitted_edit_is_noted_as_not_planned() {
    let t = applied();
    // Edited, not committed: the committed CSV is applied, so no changes.
    t.csv(format!(
        "{HEADER}{}{BEN}{BEN_SOFT}",
        ANA.replace("Front desk", "Lobby")
    ));
    let message = "note: the CSV in the working tree differs from the committed one, and the edit was not planned: commit it, or plan it with `--working-tree`";
    let out = t.ok(["plan"]);
    assert_eq!(
        out.stdout,
        "No changes. The target matches the desired state.\n"
    );
    assert!(out.stderr.contains(message), "{}", out.stderr);
    let out = t.ok(["apply"]);
    assert!(out.stderr.contains(message), "{}", out.stderr);
    assert_eq!(codes_of(&t.plan_json(&[])), ["working-tree-not-planned"]);
    assert_eq!(codes_of(&t.status_json()), ["working-tree-not-planned"]);
    // Staged is not committed either.
    t.git(&["add", "users.csv"]);
    assert_eq!(codes_of(&t.plan_json(&[])), ["working-tree-not-planned"]);
    // The working tree itself is what `--working-tree` plans: no note.
    let doc = t.plan_json(&["--working-tree"]);
    assert_eq!(codes_of(&doc), Vec::<String>::new());
    assert_eq!(doc["summary"]["update_extension"], 1);
    // An older revision is not what the working tree edits: no note either.
    t.commit("Lobby");
    assert_eq!(codes_of(&t.plan_json(&[])), Vec::<String>::new());
    assert_eq!(
        codes_of(&t.plan_json(&["--rev", "HEAD~1"])),
        Vec::<String>::new()
    );
}

#[test]
fn a_csv_that_names_everything_and_is_committed_has_no_notes() {
    let t = applied();
    assert_eq!(t.ok(["plan"]).stderr, "");
    assert_eq!(t.ok(["status"]).stderr, "");
    // Also when the plan reads the rows (the target changed since).
    t.ok(["devices", "add", "0004F2000001"]);
    let out = t.ok(["plan"]);
    assert_eq!(out.stderr, "");
    assert_eq!(codes_of(&t.plan_json(&[])), Vec::<String>::new());
}

#[test]
fn summaries_use_singular_forms_and_say_what_is_updated() {
    let t = Test::repo();
    t.commit_csv(format!("{HEADER}{ANA}"));
    let out = t.ok(["plan"]);
    assert!(
        out.stdout.ends_with(
            "\nPlan: 1 user to create, 1 extension to add, 0 to update, 0 devices to reassign, 0 to remove.\n"
        ),
        "{}",
        out.stdout
    );
    let out = t.apply(&[]);
    assert!(
        out.stdout.contains(
            "\nApplied: 1 user created, 1 extension added, 0 updated, 0 devices reassigned, 0 removed (history #1, serial "
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("hashing 1 password\n") && out.stderr.contains("applying 2 actions\n"),
        "{}",
        out.stderr
    );
    // A user's email and an extension's description change: each is named.
    t.commit_csv(format!(
        "{HEADER}{}",
        ANA.replace("Front desk", "Lobby")
            .replace("ana@example.com", "ana.silva@example.com")
    ));
    let out = t.ok(["plan"]);
    assert!(
        out.stdout.ends_with(
            "\nPlan: 0 users to create, 0 extensions to add, 1 user and 1 extension to update, 0 devices to reassign, 0 to remove.\n"
        ),
        "{}",
        out.stdout
    );
    let out = t.apply(&[]);
    assert!(
        out.stdout.contains("Applied: 0 users created, 0 extensions added, 1 user and 1 extension updated, 0 devices reassigned, 0 removed (history #2, "),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("applying 2 actions\n"),
        "{}",
        out.stderr
    );
    // Removals say what goes.
    t.commit_csv(format!("{HEADER}{ANA}{BEN}"));
    t.apply(&[]);
    t.commit_csv(format!("{HEADER}{ANA}"));
    let out = t.ok(["plan", "--prune"]);
    assert!(
        out.stdout
            .ends_with(", 1 user and 1 extension to remove.\n"),
        "{}",
        out.stdout
    );
}

#[test]
fn one_wording_for_no_changes_in_plan_apply_and_status() {
    let t = applied();
    let said = "No changes. The target matches the desired state.";
    assert_eq!(t.ok(["plan"]).stdout, format!("{said}\n"));
    assert_eq!(t.apply(&[]).stdout, format!("{said}\n"));
    assert!(
        t.ok(["status"])
            .stdout
            .contains(&format!("pending:       {said}\n"))
    );
    // The same when the plan had to read the rows (the file changed, its
    // content as applied).
    t.commit_csv(format!("{HEADER}{ANA}{BEN}{BEN_SOFT}\n"));
    assert_eq!(t.ok(["plan"]).stdout, format!("{said}\n"));
    assert_eq!(t.apply(&[]).stdout, format!("{said}\n"));
}

#[test]
fn a_shown_invalid_utf8_warning_is_counted() {
    let t = Test::repo();
    // Windows-1252 `ë`, and an error on the next line.
    let mut csv = HEADER.as_bytes().to_vec();
    csv.extend_from_slice(b"101,Zo\xeb,Silva,zsilva,Reception_26,,,,,\n");
    csv.extend_from_slice(b"102,Ben,O'Kafor,bokafor,Sales_2026x,,,,,\n");
    t.commit_csv(csv);
    for args in [&["validate"][..], &["plan"], &["plan", "--working-tree"]] {
        let out = t.run(args);
        assert_eq!(out.code, 1, "{args:?}");
        assert!(
            out.stderr.contains("warning[invalid-utf8]")
                && out.stderr.contains("users.csv: 1 error, 1 warning"),
            "{args:?}: {}",
            out.stderr
        );
    }
}

#[test]
fn apply_progress_names_only_steps_that_do_work_on_a_line_of_its_own() {
    let t = applied();
    t.commit_csv(format!(
        "{HEADER}{}{BEN}{BEN_SOFT}",
        ANA.replace("Front desk", "Lobby")
    ));
    let out = run(t.cmd().args(["apply"]).write_stdin("yes\n"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    // The prompt's line ends before progress starts.
    assert!(
        out.stderr
            .contains("Only 'yes' is accepted: \napplying 1 action\n"),
        "{}",
        out.stderr
    );
    let steps: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("applied "))
        .collect();
    assert_eq!(
        steps,
        [
            "applied 0/1 (adding and updating extensions)",
            "applied 1/1 (recording row digests)"
        ]
    );
    assert!(!out.stderr.contains("hashing"), "{}", out.stderr);
}

#[test]
fn history_has_a_header_says_which_applies_pruned_and_shows_its_summary_as_words() {
    let t = applied();
    t.commit_csv(format!("{HEADER}{ANA}"));
    t.apply(&["--prune"]);
    let out = t.ok(["history"]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(
        lines[0].starts_with("ID ")
            && lines[0].contains("TIME (UTC)")
            && lines[0].contains("ACTIONS")
            && lines[0].ends_with("OUTCOME"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("#2 ")
            && lines[1].contains(" 3 actions ")
            && lines[1].ends_with("applied, pruned"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("#1 ")
            && lines[2].contains(" 5 actions ")
            && lines[2].ends_with("  applied"),
        "{}",
        lines[2]
    );
    let out = t.ok(["history", "2"]);
    assert!(
        out.stdout.contains(
            "\nsummary:  0 users created, 0 extensions added, 0 updated, 0 devices reassigned, 1 user and 2 extensions removed\n"
        ),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains('{'), "{}", out.stdout);
}

#[test]
fn status_lists_what_is_pending_and_what_drifted() {
    let t = applied();
    // Pending: a committed change not applied yet.
    t.commit_csv(format!(
        "{HEADER}{}{BEN}{BEN_SOFT}104,Cat,Reyes,creyes,Welcome_2026,,,,,\n",
        ANA.replace("ana@example.com", "ana.silva@example.com")
    ));
    let out = t.ok(["status"]);
    assert!(
        out.stdout.contains(
            "pending:       3 changes; see `pbxsync plan`\n                 create_user creyes\n                 update_user asilva (email)\n                 add_extension 104\n"
        ),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("Plan:"), "{}", out.stdout);
    let doc = t.status_json();
    assert_eq!(
        doc["pending_differs"],
        serde_json::json!([
            "create_user creyes",
            "update_user asilva (email)",
            "add_extension 104"
        ])
    );
    t.apply(&[]);
    // Drift: a change made behind pbxsync's back.
    t.db()
        .execute(
            "UPDATE extensions SET description = 'Hand-made' WHERE number = '102'",
            [],
        )
        .expect("write behind the back");
    let out = t.ok(["status"]);
    assert!(
        out.stdout.contains(
            "drift:         1 difference from the last applied CSV (made outside pbxsync); `pbxsync adopt` keeps what the target holds\n                 update_extension 102 (description)\n"
        ),
        "{}",
        out.stdout
    );
    assert_eq!(
        t.status_json()["drift_differs"],
        serde_json::json!(["update_extension 102 (description)"])
    );
}
