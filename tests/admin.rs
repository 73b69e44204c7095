//! The commands around plan and apply: `init`, `export`, `status`, `history`,
//! `devices` and `licenses`.

use crate::support::{DEV_A, DEV_B, DEV_C, HEADER, Test, run};
use serde_json::json;

const ROWS: &str = "\
1001,Jason,Flynn,jflynn,Sec_ret12,\"Sales, desk\",jason@example.com,jflynn@im,+1 (555) 010-0001,0004F2000001\n\
1002,Maria,Garcia,mgarcia,Pass_word34,,,,,virtual\n\
1003,Maria,Garcia,mgarcia,,,,,,\n";

fn applied() -> Test {
    let t = Test::repo();
    t.devices(&[DEV_A, DEV_B]);
    t.commit_csv(format!("{HEADER}{ROWS}"));
    t.apply(&[]);
    t
}

#[test]
fn init_creates_the_state_file_and_status_reads_it() {
    let t = Test::new();
    std::fs::remove_file(t.path("pbxsync.yaml")).unwrap();
    let out = t.ok(["init"]);
    assert!(
        out.stdout.contains("created the state file"),
        "{}",
        out.stdout
    );
    assert!(t.state().is_file());
    assert_eq!(
        t.sql("PRAGMA user_version"),
        ["10"],
        "the schema is migrated to the latest version"
    );
    let status = t.ok(["status", "--format", "json"]).json();
    assert_eq!(status["initialized"], true);
    assert_eq!(status["serial"], 0);
    assert_eq!(status["lock_holder"], serde_json::Value::Null);
    assert_eq!(status["last_applied"], serde_json::Value::Null);
    let text = t.ok(["status"]).stdout;
    assert!(text.contains("last applied:  never"), "{text}");
    assert!(text.contains("lock:          free"), "{text}");
}

#[test]
fn status_without_a_state_file_says_so_and_creates_nothing() {
    let t = Test::repo();
    let out = t.ok(["status"]);
    assert!(out.stdout.contains("no state yet"), "{}", out.stdout);
    assert!(!t.state().exists());
    let out = t.run(["export"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no state yet"), "{}", out.stderr);
}

#[test]
fn status_shows_the_last_apply_pending_changes_and_drift() {
    let t = applied();
    let text = t.ok(["status"]).stdout;
    assert!(
        text.contains("directory:     2 users, 3 extensions, 2 devices"),
        "{text}"
    );
    assert!(text.contains("(history #1)"), "{text}");
    assert!(
        text.contains("pending:       No changes. The target matches the desired state."),
        "{text}"
    );
    assert!(text.contains("drift:         none"), "{text}");
    // Nothing changed since the apply: the CSV is not even read. Without its
    // blob in git, a status that read it would fail.
    let blob = t.git(&["rev-parse", "HEAD:users.csv"]);
    let object = t.path(&format!(".git/objects/{}/{}", &blob[..2], blob[2..].trim()));
    let kept = std::fs::read(&object).unwrap();
    std::fs::remove_file(&object).unwrap();
    assert!(
        t.ok(["status"])
            .stdout
            .contains("pending:       No changes. The target matches the desired state.")
    );
    std::fs::write(&object, kept).unwrap();
    // A commit not applied yet is pending: it is read and planned.
    t.commit_csv(format!(
        "{HEADER}{ROWS}1004,Wei,Chen,wchen,Wei_pass12,,,,,\n"
    ));
    let planned = t.ok(["status"]);
    assert!(
        planned
            .stdout
            .contains("pending:       2 changes; see `pbxsync plan`\n                 create_user wchen\n                 add_extension 1004\n"),
        "{}",
        planned.stdout
    );
    let status = t.ok(["status", "--format", "json"]).json();
    assert_eq!(status["pending"]["create_user"], 1);
    assert_eq!(status["drift"]["total"], 0);
    // A change made in the phone system by hand is drift.
    t.db()
        .execute(
            "UPDATE extensions SET description = 'by hand' WHERE number = '1002'",
            [],
        )
        .unwrap();
    let status = t.ok(["status", "--format", "json"]).json();
    assert_eq!(status["drift"]["update_extension"], 1);
}

#[test]
fn export_is_sorted_with_empty_passwords_and_applying_it_changes_nothing() {
    let t = applied();
    t.commit_csv(format!(
        "{HEADER}1010,Wei,Chen,wchen,Wei_pass12,,,,,\n{ROWS}"
    ));
    t.apply(&[]);
    let export = t.export();
    assert_eq!(
        export,
        format!(
            "{HEADER}\
1001,Jason,Flynn,jflynn,,\"Sales, desk\",jason@example.com,jflynn@im,+1 (555) 010-0001,{DEV_A}\n\
1002,Maria,Garcia,mgarcia,,,,,,virtual\n\
1003,Maria,Garcia,mgarcia,,,,,,\n\
1010,Wei,Chen,wchen,,,,,,\n"
        )
    );
    t.ok(["export", "--out", "exported.csv"]);
    assert_eq!(t.read("exported.csv"), export);
    let plan = t.plan_json(&["--file", "exported.csv", "--prune"]);
    assert_eq!(plan["actions"], json!([]), "{plan:#}");
    assert_eq!(plan["errors"], json!([]));
    assert!(
        t.ok(["plan", "--file", "exported.csv"])
            .stdout
            .starts_with("No changes.")
    );
}

#[test]
fn history_lists_applies_and_shows_the_csv_without_passwords() {
    let t = applied();
    t.commit_csv(format!(
        "{HEADER}{ROWS}1004,Wei,Chen,wchen,Wei_pass12,,,,,\n"
    ));
    t.apply(&[]);
    let list = t.ok(["history"]).stdout;
    // Under a header row.
    let lines: Vec<&str> = list.lines().skip(1).collect();
    assert_eq!(lines.len(), 2, "{list}");
    assert!(
        lines[0].starts_with("#2 ") && lines[0].contains("2 actions"),
        "{list}"
    );
    assert!(
        lines[1].starts_with("#1 ") && lines[1].contains("5 actions"),
        "{list}"
    );
    assert!(lines.iter().all(|l| l.ends_with("  applied")), "{list}");
    let json = t.ok(["history", "--format", "json"]).json();
    assert_eq!(json[1]["summary"]["create_user"], 2);
    assert_eq!(json[1]["summary"]["add_extension"], 3);
    let one = t.ok(["history", "1"]).stdout;
    assert!(one.starts_with("apply #1\n"), "{one}");
    assert!(one.contains("outcome:  applied"), "{one}");
    assert!(
        one.contains(&format!("{HEADER}1001,Jason,Flynn,jflynn,,\"Sales, desk\"")),
        "{one}"
    );
    assert!(
        one.contains("1002,Maria,Garcia,mgarcia,,,,,,virtual"),
        "{one}"
    );
    assert!(
        !one.contains("Sec_ret12") && !one.contains("Pass_word34"),
        "{one}"
    );
    let out = t.run(["history", "99"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no apply #99"), "{}", out.stderr);
}

#[test]
fn devices_add_import_list_and_remove() {
    let t = Test::repo();
    let out = t.ok(["devices", "add", "00:04:f2:00:00:01", "--model", "VVX 450"]);
    assert_eq!(out.stdout, format!("added {DEV_A}\n"));
    t.write(
        "devices.csv",
        "id,model\n0004f2-000002,VVX 250\nsoftphone001,\n",
    );
    assert_eq!(
        t.ok(["devices", "import", "devices.csv"]).stdout,
        "imported 2 devices\n"
    );
    t.commit_csv(format!(
        "{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,,,,,SOFTPHONE001\n"
    ));
    t.apply(&[]);
    let list = t.ok(["devices", "list", "--format", "json"]).json();
    assert_eq!(
        list,
        json!([
            {"id": DEV_A, "model": "VVX 450", "extension": null},
            {"id": DEV_B, "model": "VVX 250", "extension": null},
            {"id": "SOFTPHONE001", "model": "", "extension": "1001"},
        ])
    );
    let text = t.ok(["devices", "list"]).stdout;
    assert!(
        text.contains("SOFTPHONE001") && text.contains("extension 1001"),
        "{text}"
    );
    assert!(text.lines().next().unwrap().contains("free"), "{text}");
    // A device an extension holds cannot be removed; a free one can.
    let out = t.run(["devices", "remove", "softphone001"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("extension 1001"), "{}", out.stderr);
    assert_eq!(
        t.ok(["devices", "remove", DEV_B]).stdout,
        format!("removed {DEV_B}\n")
    );
    let out = t.run(["devices", "remove", DEV_C]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("not in the inventory"),
        "{}",
        out.stderr
    );
    let out = t.run(["devices", "add", "not a mac!"]);
    assert_eq!(out.code, 1);
    assert_eq!(
        t.ok(["devices", "list", "--format", "json"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn licenses_show_and_set() {
    let t = applied();
    let out = t.ok(["licenses", "show"]).stdout;
    assert_eq!(
        out,
        "user licenses:      2 used of unlimited\nvoicemail licenses: 1 used of unlimited\n"
    );
    t.ok(["licenses", "set", "--users", "10", "--voicemail", "5"]);
    assert_eq!(
        t.ok(["licenses", "show", "--format", "json"]).json(),
        json!({"users": {"limit": 10, "used": 2}, "voicemail": {"limit": 5, "used": 1}})
    );
    // Setting one keeps the other; `unlimited` clears one.
    t.ok(["licenses", "set", "--voicemail", "unlimited"]);
    assert_eq!(
        t.ok(["licenses", "show", "--format", "json"]).json(),
        json!({"users": {"limit": 10, "used": 2}, "voicemail": {"limit": null, "used": 1}})
    );
    let out = t.run(["licenses", "set", "--users", "many"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("`many`"), "{}", out.stderr);
    let out = t.run(["licenses", "set", "--users", "-1"]);
    assert_ne!(out.code, 0);
    assert_eq!(
        t.ok(["licenses", "show", "--format", "json"]).json()["users"]["limit"],
        10
    );
}

#[test]
fn commands_find_the_config_from_a_subdirectory() {
    let t = applied();
    std::fs::create_dir_all(t.path("sub/dir")).unwrap();
    let out = run(t.cmd().current_dir(t.path("sub/dir")).args(["export"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, t.export());
}

#[test]
fn the_target_flag_and_environment_override_the_config() {
    let t = Test::repo();
    t.commit_csv(format!(
        "{HEADER}1002,Maria,Garcia,mgarcia,Pass_word34,,,,,virtual\n"
    ));
    t.apply(&["--target", "sqlite:elsewhere/state.db"]);
    assert!(t.path("elsewhere/state.db").is_file());
    assert!(!t.state().exists());
    let out = run(t
        .cmd()
        .env("PBXSYNC_TARGET", "sqlite:elsewhere/state.db")
        .arg("export"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("mgarcia"), "{}", out.stdout);
    // Unknown schemes are refused, and database credentials are never printed.
    let out = t.run(["--target", "mysql://db/pbx", "plan"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("unknown target"), "{}", out.stderr);
    let out = t.run(["--target", "postgres://pbx:hunter22@db:5432/pbx", "plan"]);
    assert_eq!(out.code, 1);
    assert!(!out.stderr.contains("hunter22"), "{}", out.stderr);
}

#[test]
fn history_shows_an_apply_s_time_in_the_local_zone_too() {
    let t = applied();
    let utc = t.ok(["history", "1"]).stdout;
    let time = utc
        .lines()
        .find(|l| l.starts_with("time:"))
        .unwrap()
        .to_string();
    assert!(
        time.ends_with('Z'),
        "UTC alone where the zone is UTC: {time}"
    );
    let out = run(t.cmd().args(["history", "1"]).env("TZ", "Asia/Tokyo"));
    let local = out.stdout.lines().find(|l| l.starts_with("time:")).unwrap();
    assert!(local.starts_with(&time), "{local}");
    assert!(local.ends_with(" JST)"), "{local}");
    // Machine-read times are UTC whatever the zone.
    let json = run(t
        .cmd()
        .args(["history", "1", "--format", "json"])
        .env("TZ", "Asia/Tokyo"));
    assert!(
        json.stdout
            .contains(&format!("\"time\": \"{}\"", &time[10..])),
        "{}",
        json.stdout
    );
}
