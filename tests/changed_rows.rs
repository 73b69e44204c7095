//! The plan that reads only the rows whose digest changed since the last apply
//! must give exactly the plan of the whole directory (`PBXSYNC_FULL_PLAN=1`), also
//! after the target was changed behind pbxsync's back. Which rows a plan read is
//! the engine's account (`PlanPath`), asked of the library: the CLI prints the
//! same plan either way.

use crate::support::{DEV_A, DEV_B, DEV_C, HASH, HEADER, Test, run, types};
use pbxsync::config::Config;
use pbxsync::engine::{
    ApplyOutcome, Engine, EngineOptions, Event, PlanOutcome, PlanPath, Prepared, Request,
    SourceChoice,
};
use pbxsync::policy::SyncOptions;
use serde_json::Value;

fn both(t: &Test, args: &[&str]) -> (Value, Value) {
    let fast = t.plan_json(args);
    let out = run(t
        .cmd()
        .env("PBXSYNC_FULL_PLAN", "1")
        .args(["plan", "--format", "json"])
        .args(args));
    assert!(out.code == 0 || out.code == 1, "{}", out.stderr);
    (fast, out.json())
}

fn same(t: &Test, step: &str) -> Value {
    same_with(t, &[], step)
}

fn same_with(t: &Test, args: &[&str], step: &str) -> Value {
    let (fast, full) = both(t, args);
    assert_eq!(fast["actions"], full["actions"], "{step}: actions differ");
    assert_eq!(fast["errors"], full["errors"], "{step}: errors differ");
    assert_eq!(fast["summary"], full["summary"], "{step}: summary differs");
    fast
}

/// `same`, for a step after which nothing is left to do.
fn nothing_to_do(t: &Test, step: &str) {
    let plan = same(t, step);
    assert!(
        plan["actions"].as_array().unwrap().is_empty(),
        "{step}: {plan:#}"
    );
}

/// A repository with the three devices and `base()` committed and applied.
fn applied_base() -> Test {
    let t = Test::repo();
    t.devices(&[DEV_A, DEV_B, DEV_C]);
    t.commit_csv(base());
    t.apply(&[]);
    t
}

fn base() -> String {
    format!(
        "{HEADER}\
1001,Jason,Flynn,jflynn,Sec_ret12,Desk,jason@example.com,,,{DEV_A}\n\
1002,Jason,Flynn,jflynn,,,,,,virtual\n\
1003,Maria,Garcia,mgarcia,Pass_word34,,,,,{DEV_B}\n\
1004,Wei,Chen,wchen,Pass_word56,,,,,\n"
    )
}

#[test]
fn changed_rows_plan_like_the_whole_directory() {
    let t = Test::repo();
    t.devices(&[DEV_A, DEV_B, DEV_C]);
    t.commit_csv(base());
    same(&t, "first import");
    t.apply(&[]);
    nothing_to_do(&t, "unchanged");

    let steps: Vec<(&str, String)> = vec![
        (
            "a user field through one row",
            base().replace("jason@example.com", "jason.flynn@example.com"),
        ),
        ("a description", base().replace("Desk", "Front desk")),
        (
            "a device moves",
            base()
                .replace("virtual\n1003", &format!("{DEV_B}\n1003"))
                .replace(&format!(",,,,,{DEV_B}\n1004"), ",,,,,\n1004"),
        ),
        ("virtual to a device", base().replace("virtual", DEV_C)),
        (
            "a new extension of a known user",
            format!("{}1005,Wei,Chen,wchen,,,,,,virtual\n", base()),
        ),
        (
            "a new user",
            format!("{}1006,Lars,Berg,lberg,Pass_word78,,,,,\n", base()),
        ),
        (
            "an extension of another user",
            base().replace("1004,Wei,Chen,wchen", "1003,Wei,Chen,wchen"),
        ),
        (
            "a device that does not exist",
            base().replace("virtual", "0004F2OOOOO1"),
        ),
    ];
    for (step, csv) in steps {
        t.commit_csv(&csv);
        same(&t, step);
        t.commit_csv(base());
    }

    // Then apply a change for real, and plan again: nothing left on either path.
    t.commit_csv(base().replace("virtual", DEV_C));
    t.apply(&[]);
    nothing_to_do(&t, "after an apply");
}

#[test]
fn a_change_behind_pbxsyncs_back_is_seen() {
    let t = applied_base();
    let db = t.db();
    db.execute(
        "UPDATE users SET email = 'changed@example.com' WHERE username = 'jflynn'",
        [],
    )
    .unwrap();
    db.execute(
        "UPDATE extensions SET description = 'Moved' WHERE number = '1003'",
        [],
    )
    .unwrap();
    drop(db);
    let plan = same(&t, "after writes by another program");
    // jflynn's two rows (the change to the user cleared both digests) and 1003;
    // the other rows are not read.
    assert_eq!(
        plan_path(&t, Source::Commit, false),
        PlanPath::ChangedRows { rows: 3 }
    );
    let types: Vec<&str> = plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["update_user", "update_extension"], "{plan:#}");
    t.apply(&[]);
    nothing_to_do(&t, "healed");
}

/// Where a plan reads the CSV: `plan` or `plan --working-tree`.
#[derive(Clone, Copy)]
enum Source {
    Commit,
    WorkingTree,
}

/// The config of `t`, read as the CLI reads it.
fn config(t: &Test) -> Config {
    Config::load(&t.path("pbxsync.yaml")).unwrap()
}

fn request(config: &Config, source: Source, prune: bool) -> Request {
    Request {
        source: match source {
            Source::Commit => SourceChoice::Git {
                rev: config.source_ref.clone(),
            },
            Source::WorkingTree => SourceChoice::WorkingTree,
        },
        options: SyncOptions {
            prune,
            ..SyncOptions::default()
        },
    }
}

/// Which rows a plan read, as `pbxsync plan` (with `--prune`) makes it.
fn plan_path(t: &Test, source: Source, prune: bool) -> PlanPath {
    let config = config(t);
    let engine = Engine::new(&config, EngineOptions::default());
    match engine
        .plan(&request(&config, source, prune), true, &mut |_| {})
        .unwrap()
    {
        PlanOutcome::Planned(p) | PlanOutcome::Invalid(p) => p.path,
        PlanOutcome::NoChanges(_) => panic!("the shortcut: no plan was made"),
    }
}

/// How many rows a plan read again. The working tree (the committed file) is
/// read, because an unchanged commit plans without any rows.
fn changed_rows(t: &Test) -> usize {
    match plan_path(t, Source::WorkingTree, false) {
        PlanPath::ChangedRows { rows } => rows,
        other => panic!("not the changed rows: {other:?}"),
    }
}

/// `pbxsync apply --auto-approve` of the commit, through the engine: the path of
/// every plan it made.
fn apply(t: &Test, options: EngineOptions, prune: bool) -> Vec<PlanPath> {
    let config = config(t);
    let engine = Engine::new(&config, options);
    let mut paths = Vec::new();
    let prepared = engine
        .prepare_apply(None, &request(&config, Source::Commit, prune), &mut |e| {
            if let Event::Planned(path) = e {
                paths.push(path)
            }
        })
        .unwrap();
    let Prepared::Ready(ready) = prepared else {
        panic!("not ready to apply");
    };
    assert_eq!(paths.last(), Some(&ready.planned().path));
    let outcome = engine.apply(*ready, &mut |_| {}).unwrap();
    assert!(matches!(outcome, ApplyOutcome::Applied { .. }));
    paths
}

#[test]
fn the_index_kept_after_an_apply_is_the_one_a_plan_reads() {
    let t = Test::repo();
    t.devices(&[DEV_A, DEV_B, DEV_C]);
    // jflynn also has 1009, which later leaves the file (no prune: it stays).
    t.commit_csv(format!("{}1009,Jason,Flynn,jflynn,,,,,,\n", base()));
    t.apply(&[]);
    t.commit_csv(base());
    let kept = {
        let mut name = t.state().into_os_string();
        name.push(".digests");
        std::path::PathBuf::from(name)
    };
    let steps: Vec<(&str, String)> = vec![
        (
            "a user with an extension outside the file changes",
            base().replace("jason@example.com", "jason.flynn@example.com"),
        ),
        (
            "that extension comes back, with a description",
            format!(
                "{}1009,Jason,Flynn,jflynn,,Lab,,,,\n",
                base().replace("jason@example.com", "jason.flynn@example.com")
            ),
        ),
        (
            "a device moves to a new extension",
            base()
                .replace("virtual", DEV_B)
                .replace(&format!(",,,,,{DEV_B}\n1004"), ",,,,,virtual\n1004"),
        ),
        (
            "a new user",
            format!("{}1006,Lars,Berg,lberg,Pass_word78,,,,,{DEV_C}\n", base()),
        ),
    ];
    for (step, csv) in steps {
        t.commit_csv(&csv);
        same(&t, step);
        t.apply(&[]);
        assert!(kept.is_file(), "{step}: no index kept");
        let after = same(&t, &format!("{step}, applied"));
        assert!(after["actions"].as_array().unwrap().is_empty(), "{after:#}");
        assert_eq!(changed_rows(&t), 0, "{step}: every row matches");
    }

    // A write of another program makes the kept index stale: the plan reads the
    // table, where the write cleared the digest of mgarcia's row.
    let db = t.db();
    db.execute(
        "UPDATE users SET email = 'changed@example.com' WHERE username = 'mgarcia'",
        [],
    )
    .unwrap();
    drop(db);
    assert_eq!(changed_rows(&t), 1);
    same(&t, "after a write by another program");
    t.apply(&[]);
    assert_eq!(changed_rows(&t), 0);

    // The plan reads the kept index, not the table: digests cleared behind the
    // serial's back (a test-only trick) go unnoticed while the index is valid...
    let db = t.db();
    db.execute_batch(
        "DROP TRIGGER extensions_update_serial; UPDATE extensions SET row_digest = NULL;",
    )
    .unwrap();
    drop(db);
    assert_eq!(changed_rows(&t), 0);
    // ...and a damaged one is read past: the table shows every row as unknown.
    let mut bytes = std::fs::read(&kept).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&kept, bytes).unwrap();
    assert_eq!(changed_rows(&t), 5, "every row of the file is read again");
    same(&t, "damaged index");
}

#[test]
fn a_first_apply_plans_once_and_keeps_its_index() {
    let t = Test::repo();
    // No devices: `devices add` would make the state file before the apply.
    let csv = base()
        .replace(&format!(",{DEV_A}\n"), ",\n")
        .replace(&format!(",{DEV_B}\n"), ",\n");
    t.commit_csv(&csv);
    assert!(!t.state().exists());
    // Planned once, against no target: not again against the state file made
    // for the apply.
    assert_eq!(
        apply(&t, EngineOptions::default(), false),
        [PlanPath::WholeDirectory]
    );
    let mut kept = t.state().into_os_string();
    kept.push(".digests");
    assert!(std::path::Path::new(&kept).is_file(), "no index kept");
    assert_eq!(changed_rows(&t), 0, "every row matches");
    let after = same(&t, "after the first apply");
    assert!(after["actions"].as_array().unwrap().is_empty(), "{after:#}");
    // The same directory as an apply into a state file that existed before.
    let other = Test::repo();
    other.commit_csv(&csv);
    other.ok(["licenses", "set", "--users", "unlimited"]);
    other.apply(&[]);
    assert_eq!(t.export(), other.export());
}

#[test]
fn an_apply_of_the_whole_directory_keeps_its_index_too() {
    let t = Test::repo();
    t.devices(&[DEV_A, DEV_B, DEV_C]);
    t.commit_csv(format!(
        "{}1005,Lars,Berg,lberg,Pass_word78,,,,,{DEV_C}\n",
        base()
    ));
    t.apply(&[]);
    // Planned from the whole directory (as `--reset-passwords` makes it): lberg
    // and 1005 go, jflynn changes.
    t.commit_csv(base().replace("jason@example.com", "jason.flynn@example.com"));
    let mut kept = t.state().into_os_string();
    kept.push(".digests");
    std::fs::remove_file(&kept).unwrap();
    assert_eq!(
        apply(
            &t,
            EngineOptions {
                full_plan: true,
                ..EngineOptions::default()
            },
            true
        ),
        [PlanPath::WholeDirectory]
    );
    assert!(std::path::Path::new(&kept).is_file(), "no index kept");
    assert!(!t.export().contains("lberg"));
    // The plan after it reads that index, not the table: digests cleared behind
    // the serial's back (a test-only trick) go unnoticed.
    assert_eq!(changed_rows(&t), 0, "every row matches");
    let after = same(&t, "after the pruning apply");
    assert!(after["actions"].as_array().unwrap().is_empty(), "{after:#}");
    let db = t.db();
    db.execute_batch(
        "DROP TRIGGER extensions_update_serial; UPDATE extensions SET row_digest = NULL;",
    )
    .unwrap();
    drop(db);
    assert_eq!(changed_rows(&t), 0, "the kept index is read");
}

#[test]
fn an_inventory_file_plans_like_the_whole_directory() {
    let t = Test::repo_with(&format!("inventory: devices.csv\npolicy: {{{HASH}}}\n"));
    let inventory = |ids: &[&str]| {
        let rows: String = ids.iter().map(|id| format!("{id},VVX 450\n")).collect();
        t.write("devices.csv", format!("id,model\n{rows}"));
    };
    inventory(&[DEV_A, DEV_B]);
    t.devices(&[DEV_C]);
    t.commit_csv(base());
    let first = same(&t, "first import");
    assert_eq!(first["summary"]["create_device"], 2, "{first:#}");
    t.apply(&[]);
    nothing_to_do(&t, "unchanged");
    // The inventory is read on the changed-rows path: no row changed.
    assert_eq!(changed_rows(&t), 0);

    // A device added to the file is created; a row may name it at once.
    const DEV_D: &str = "0004F2000004";
    inventory(&[DEV_A, DEV_B, DEV_D]);
    let plan = same(&t, "a device added to the inventory");
    assert_eq!(types(&plan), ["create_device"]);
    t.commit_csv(base().replace("virtual", DEV_D));
    let plan = same(&t, "a row names the new device");
    assert_eq!(types(&plan), ["create_device", "update_extension"]);
    // A slip of a device that only the inventory file has: the hint finds it.
    t.commit_csv(base().replace("virtual", "0004F2OOOOO4"));
    let plan = same(&t, "a slip of an inventory device");
    assert_eq!(plan["errors"][0]["code"], "device-not-found", "{plan:#}");
    assert!(
        plan["errors"][0]["hint"].as_str().unwrap().contains(DEV_D),
        "{plan:#}"
    );

    // A device removed behind pbxsync's back is created again.
    t.commit_csv(base());
    inventory(&[DEV_A, DEV_B]);
    t.db()
        .execute(
            "UPDATE extensions SET device = NULL, kind = 'virtual' WHERE device = ?1",
            [DEV_B],
        )
        .unwrap();
    t.db()
        .execute("DELETE FROM devices WHERE id = ?1", [DEV_B])
        .unwrap();
    let plan = same(&t, "a device removed by another program");
    assert_eq!(types(&plan), ["create_device", "update_extension"]);
    t.apply(&[]);
    nothing_to_do(&t, "healed");
}

#[test]
fn pruning_plans_like_the_whole_directory() {
    let t = applied_base();
    let prune = |step: &str| same_with(&t, &["--prune"], step);
    let path = |source| plan_path(&t, source, true);

    // One of two rows of a user: the extension goes, the user stays.
    t.commit_csv(base().replace("1002,Jason,Flynn,jflynn,,,,,,virtual\n", ""));
    assert_eq!(types(&prune("a row of a user")), ["remove_extension"]);
    assert_eq!(path(Source::Commit), PlanPath::ChangedRows { rows: 0 });
    // A user's only row: the user goes too.
    t.commit_csv(base().replace("1004,Wei,Chen,wchen,Pass_word56,,,,,\n", ""));
    assert_eq!(
        types(&prune("the only row of a user")),
        ["remove_extension", "remove_user"]
    );
    // The device of a removed extension goes to another row: freed, not moved.
    t.commit_csv(
        base()
            .replace(
                &format!("1003,Maria,Garcia,mgarcia,Pass_word34,,,,,{DEV_B}\n"),
                "",
            )
            .replace(
                "1004,Wei,Chen,wchen,Pass_word56,,,,,",
                &format!("1004,Wei,Chen,wchen,,,,,,{DEV_B}"),
            ),
    );
    assert_eq!(
        types(&prune("a freed device taken")),
        ["update_extension", "remove_extension", "remove_user"]
    );
    // A removal frees the license a new extension needs.
    t.ok(["licenses", "set", "--users", "4"]);
    t.commit_csv(base().replace(
        "1004,Wei,Chen,wchen,Pass_word56,,,,,\n",
        "1006,Lars,Berg,lberg,Pass_word78,,,,,virtual\n",
    ));
    let plan = prune("a license freed and taken");
    assert_eq!(plan["errors"], serde_json::json!([]), "{plan:#}");
    assert_eq!(
        types(&plan),
        [
            "create_user",
            "add_extension",
            "remove_extension",
            "remove_user"
        ]
    );
    t.ok(["licenses", "set", "--users", "unlimited"]);

    // A user without extensions, made by another program: only the whole
    // directory finds it.
    t.commit_csv(base());
    t.db()
        .execute(
            "INSERT INTO users (username, first_name, last_name) VALUES ('ghost', 'G', 'Host')",
            [],
        )
        .unwrap();
    assert_eq!(types(&prune("a user without extensions")), ["remove_user"]);
    assert_eq!(path(Source::Commit), PlanPath::WholeDirectory);

    // Applied for real: nothing is left, on the changed rows again.
    t.commit_csv(base().replace("1004,Wei,Chen,wchen,Pass_word56,,,,,\n", ""));
    t.apply(&["--prune"]);
    assert!(!t.export().contains("wchen") && !t.export().contains("ghost"));
    let after = prune("after a pruning apply");
    assert!(after["actions"].as_array().unwrap().is_empty(), "{after:#}");
    assert_eq!(path(Source::WorkingTree), PlanPath::ChangedRows { rows: 0 });
}
