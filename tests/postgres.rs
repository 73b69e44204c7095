//! The PostgreSQL target (SPEC section 7): the real executable against a real
//! server. Each test has a schema of its own in the database that
//! `PBXSYNC_TEST_POSTGRES` names (CI creates a fresh one per run); without that
//! variable every test here says SKIPPED and passes. The test that restarts a
//! server runs a private cluster of its own, never the shared one.
//!
//! Every wait is a bounded poll of something the test observes (the lock row,
//! `pg_stat_activity`, `pg_locks`, the history, a line the apply prints): no fixed
//! sleep, no timing assertion. To stop an apply in the middle of its writes
//! deterministically, a test holds `LOCK TABLE history IN SHARE MODE` in a session
//! of its own: the apply's insert of its history record then waits inside its
//! transaction, with the apply lock held, until the test lets go.

use crate::support::pg::{self, Schema, psql, try_psql};
use crate::support::{
    DEV_A, DEV_B, DEV_C, HASH, HEADER, Output, Test, base_rows, big_csv, codes, eventually, types,
};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a condition may take before the test fails (generous: CI machines are
/// slow; a passing test waits only as long as it needs).
const PATIENCE: Duration = Duration::from_secs(60);

/// How long the server may take to notice that a killed client is gone.
const NOTICE: Duration = Duration::from_secs(10);

/// A schema for this test, or a loud skip.
macro_rules! schema_or_skip {
    ($name:expr) => {
        match Schema::new($name) {
            Some(s) => s,
            None => return,
        }
    };
}

const ROWS: &str = "\
1001,Jason,Flynn,jflynn,Sec_ret12,\"Sales, desk\",jason@example.com,jflynn@im,+1 (555) 010-0001,0004F2000001\n\
1002,Maria,Garcia,mgarcia,Pass_word34,,,,,virtual\n\
1003,Maria,Garcia,mgarcia,,,,,,\n";

/// The next revision of `ROWS`: an update, a reassignment, a new user with a
/// device, one row gone.
const ROWS_2: &str = "\
1001,Jason,Flynn,jflynn,,\"Sales, desk, mornings\",jason@example.com,jflynn@im,+1 (555) 010-0001,virtual\n\
1002,Maria,Garcia,mgarcia,,,,,,0004F2000001\n\
1004,Wei,Chen,wchen,Wei_pass56,,wei@example.com,,,0004F2000003\n";

/// A git repository whose config targets this schema (the config's `target:`).
fn repo(s: &Schema) -> Test {
    Test::repo_with(&format!("target: '{}'\npolicy: {{{HASH}}}\n", s.url))
}

/// A pbxsync process started in the test directory, stdin piped (for the prompt),
/// stdout and stderr piped; `env` is added to its environment.
fn spawn(t: &Test, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pbxsync"));
    cmd.current_dir(t.dir.path())
        .env_remove("PBXSYNC_TARGET")
        .env("NO_COLOR", "1")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn pbxsync")
}

/// Waits for a spawned process and collects what it printed.
fn finish(child: Child) -> Output {
    let out = child.wait_with_output().expect("wait for pbxsync");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// pbxsync with `PBXSYNC_TARGET` set (the way to keep credentials out of git).
fn run_with_target(t: &Test, url: &str, args: &[&str]) -> Output {
    crate::support::run(t.cmd().env("PBXSYNC_TARGET", url).args(args))
}

fn host() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// Polls `status` until it shows a lock holder; returns it.
fn wait_for_holder(t: &Test) -> serde_json::Value {
    let mut holder = serde_json::Value::Null;
    eventually("the apply to take the lock", PATIENCE, || {
        holder = t.status_json()["lock_holder"].clone();
        !holder.is_null()
    });
    holder
}

/// Polls `status` until it shows no lock holder (the server may take a moment to
/// notice that a killed client's connection is gone).
fn wait_lock_free(t: &Test, what: &str) {
    eventually(&format!("the lock to be free {what}"), NOTICE, || {
        t.status_json()["lock_holder"].is_null()
    });
    let text = t.ok(["status"]).stdout;
    assert!(text.contains("lock:          free"), "{what}: {text}");
}

/// A session of the test's own that holds `SHARE` on `<schema>.history` until it is
/// dropped: reads go on, the apply's insert of its history record waits.
struct Blocker {
    _session: postgres::Client,
}

impl Blocker {
    fn new(base: &str, schema: &str) -> Blocker {
        let mut client = postgres::Client::connect(base, postgres::NoTls).expect("connect");
        client
            .batch_execute(&format!("BEGIN; LOCK TABLE {schema}.history IN SHARE MODE"))
            .expect("lock the history");
        Blocker { _session: client }
    }
}

/// Waits until the apply `child` holds the apply lock (the lock row names its pid)
/// and one of its sessions waits for the `Blocker`'s table lock: its transaction
/// is open and its writes are under way. Fails if the apply ends first.
fn wait_blocked_in_writes(base: &str, schema: &str, child: &mut Child) {
    let pid = child.id();
    let query = format!(
        "SELECT (SELECT count(*) FROM {schema}.lock_holder WHERE pid = {pid}) \
         || ',' || (SELECT count(*) FROM pg_locks \
                    WHERE relation = '{schema}.history'::regclass AND NOT granted)"
    );
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut stderr);
            }
            panic!("the apply ended ({status}) before its writes waited: {stderr}");
        }
        if let Ok(out) = try_psql(base, &query)
            && let Some((row, waiting)) = out.split_once(',')
            && row != "0"
            && waiting != "0"
        {
            return;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "timed out waiting for the apply's writes to wait on the history"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// The basic flow, and the same results as SQLite

#[test]
fn plan_apply_status_history_and_export_work_as_with_sqlite() {
    let s = schema_or_skip!("basic_flow");
    let pg = repo(&s);
    let lite = Test::repo();
    for t in [&pg, &lite] {
        t.devices(&[DEV_A, DEV_B, DEV_C]);
        t.commit_csv(format!("{HEADER}{ROWS}"));
    }

    // The plan shows the creates, the same as SQLite's.
    let plan = pg.plan_json(&[]);
    let lite_plan = lite.plan_json(&[]);
    assert_eq!(plan["summary"]["create_user"], 2, "{plan:#}");
    assert_eq!(plan["summary"]["add_extension"], 3, "{plan:#}");
    assert_eq!(types(&plan), types(&lite_plan));
    assert_eq!(unblamed(&plan), unblamed(&lite_plan));
    assert_eq!(plan["summary"], lite_plan["summary"]);
    let text = pg.ok(["plan"]).stdout;
    assert!(
        text.contains(
            "Plan: 2 users to create, 3 extensions to add, 0 to update, 0 devices to reassign, 0 to remove."
        ),
        "{text}"
    );
    assert!(text.contains("password: (sensitive)"), "{text}");

    // Apply, then nothing left to do.
    for t in [&pg, &lite] {
        let out = t.apply(&[]);
        assert!(
            out.stdout.contains(
                "Applied: 2 users created, 3 extensions added, 0 updated, 0 devices reassigned, 0 removed (history #1, serial"
            ),
            "{}",
            out.stdout
        );
    }
    let again = pg.ok(["plan"]);
    assert_eq!(
        again.stdout,
        "No changes. The target matches the desired state.\n"
    );
    assert_eq!(pg.plan_json(&[])["summary"]["total"], 0);

    // Status: in sync, no drift, the lock free, the last apply named.
    let status = pg.ok(["status"]).stdout;
    for expected in [
        "directory:     2 users, 3 extensions, 3 devices",
        "(history #1)",
        "pending:       No changes. The target matches the desired state.",
        "drift:         none",
        "lock:          free",
    ] {
        assert!(status.contains(expected), "{expected:?} in:\n{status}");
    }
    let json = pg.status_json();
    assert_eq!(json["initialized"], true);
    assert_eq!(json["lock_holder"], serde_json::Value::Null);
    assert_eq!(json["drift"]["total"], 0);
    assert!(json["serial"].as_u64().unwrap() > 0, "{json:#}");

    // History: the apply, as SQLite records it but for its time.
    let history = pg.history();
    assert_eq!(history.len(), 1, "{history:#?}");
    assert_eq!(history[0]["outcome"], "applied");
    // The commits differ (the configs name different targets): not the blob.
    let strip = |mut v: serde_json::Value| {
        let o = v.as_object_mut().unwrap();
        o.remove("time");
        o.remove("source");
        o.remove("commit");
        v
    };
    assert_eq!(strip(history[0].clone()), strip(lite.history()[0].clone()));
    let one = pg.ok(["history", "1"]).stdout;
    assert!(one.starts_with("apply #1\n"), "{one}");
    assert!(one.contains("jflynn"), "the applied CSV: {one}");
    assert!(
        !one.contains("Sec_ret12"),
        "the password is redacted: {one}"
    );
    assert!(pg.ok(["history"]).stdout.contains("applied"));

    // Export: the same as SQLite's, and applying it changes nothing.
    let export = pg.export();
    assert_eq!(export, lite.export());
    assert_eq!(export.lines().count(), 4, "{export}");
    pg.ok(["export", "--out", "exported.csv"]);
    assert_eq!(pg.read("exported.csv"), export);
    let plan = pg.plan_json(&["--file", "exported.csv", "--prune"]);
    assert_eq!(plan["actions"], serde_json::json!([]), "{plan:#}");

    // The tables are in the test's schema.
    let tables = s.tables();
    for table in [
        "users",
        "passwords",
        "devices",
        "extensions",
        "licenses",
        "history",
        "state",
        "meta",
        "lock_holder",
    ] {
        assert!(tables.iter().any(|t| t == table), "{table} in {tables:?}");
    }
    assert_eq!(s.psql("SELECT count(*) FROM users"), "2");
    assert_eq!(s.psql("SELECT count(*) FROM extensions"), "3");
    assert_eq!(
        s.psql("SELECT count(*) FROM extensions WHERE sip_secret IS NULL OR sip_secret = ''"),
        "0",
        "every extension has a SIP secret"
    );

    // The next revision: an update, a reassignment, a removal, a new user.
    for t in [&pg, &lite] {
        t.commit_csv(format!("{HEADER}{ROWS_2}"));
    }
    let plan = pg.plan_json(&["--prune"]);
    assert_eq!(unblamed(&plan), unblamed(&lite.plan_json(&["--prune"])));
    for t in [&pg, &lite] {
        t.apply(&["--prune"]);
    }
    assert_eq!(pg.export(), lite.export());
    assert_eq!(pg.history().len(), 2);
    assert!(pg.took_shortcut(&["plan"]), "the O(1) no-op");

    // Devices and licenses, as with SQLite.
    for t in [&pg, &lite] {
        t.ok(["licenses", "set", "--users", "50", "--voicemail", "9"]);
    }
    assert_eq!(
        pg.ok(["licenses", "show"]).stdout,
        lite.ok(["licenses", "show"]).stdout
    );
    assert_eq!(
        pg.ok(["devices", "list"]).stdout,
        lite.ok(["devices", "list"]).stdout
    );
    let out = pg.run(["devices", "remove", DEV_C]);
    assert_eq!(out.code, lite.run(["devices", "remove", DEV_C]).code);
}

/// A plan's actions without their blame (the commit ids differ between two
/// repositories whose configs differ).
fn unblamed(plan: &serde_json::Value) -> serde_json::Value {
    let mut actions = plan["actions"].clone();
    for a in actions.as_array_mut().expect("actions") {
        a.as_object_mut().expect("an action").remove("blame");
    }
    actions
}

// ---------------------------------------------------------------------------
// Kill -9

const BIG_ARGS: [&str; 7] = [
    "apply",
    "--file",
    "big.csv",
    "--auto-approve",
    "--allow-large-change",
    "--format",
    "json",
];

/// A repository on `s` with `base.csv` applied and `big.csv` beside it.
fn with_base(s: &Schema, big: &str) -> Test {
    let t = repo(s);
    t.write("base.csv", format!("{HEADER}{}", base_rows()))
        .write("big.csv", big);
    t.apply(&["--file", "base.csv"]);
    t
}

/// When the test kills an apply: each a moment the test observes, never a delay.
#[derive(Debug)]
enum Kill {
    /// As soon as it is started.
    AtSpawn,
    /// At the first stderr line that starts with this.
    AtLine(&'static str),
    /// While its transaction waits to insert the history record, with the apply
    /// lock held and its writes under way (see `Blocker`).
    InWrites,
    /// Once the history holds the apply: it has committed.
    Committed,
    /// Once the process has closed its stderr, i.e. finished.
    AtExit,
}

#[test]
fn a_killed_apply_leaves_the_directory_before_or_after_and_frees_the_lock() {
    let reference = schema_or_skip!("killed_apply_reference");
    let big = big_csv(200, 100);
    // The state after an uninterrupted apply, in a schema of its own.
    let done = with_base(&reference, &big);
    let before = done.export();
    done.ok(BIG_ARGS);
    let after = done.export();
    assert_eq!(after.lines().count(), 1 + 20 + 20_000);

    let mut outcomes = Vec::new();
    let mut interrupted = 0;
    for (round, kill) in [
        Kill::AtSpawn,
        Kill::AtLine("hashing"),
        Kill::AtLine("applying"),
        Kill::InWrites,
        Kill::AtLine("committing"),
        Kill::Committed,
        Kill::AtExit,
    ]
    .into_iter()
    .enumerate()
    {
        let s = schema_or_skip!(&format!("killed_apply_{round}"));
        let t = with_base(&s, &big);
        assert_eq!(t.export(), before);
        let blocker = matches!(kill, Kill::InWrites).then(|| Blocker::new(&s.base, &s.name));
        let mut child = spawn(&t, &BIG_ARGS, &[]);
        let mut stderr = child.stderr.take().unwrap();
        match kill {
            Kill::AtSpawn => {}
            Kill::AtLine(prefix) => {
                for line in BufReader::new(&mut stderr).lines() {
                    if line.unwrap().starts_with(prefix) {
                        break;
                    }
                }
            }
            Kill::InWrites => {
                child.stderr = Some(stderr);
                wait_blocked_in_writes(&s.base, &s.name, &mut child);
                stderr = child.stderr.take().unwrap();
            }
            Kill::Committed => {
                // Bounded by the apply itself: it commits or it ends.
                while s.psql("SELECT count(*) FROM history") != "2"
                    && child.try_wait().unwrap().is_none()
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            Kill::AtExit => {
                std::io::copy(&mut stderr, &mut std::io::sink()).unwrap();
            }
        }
        let label = format!("killed {kill:?}");
        let _ = child.kill();
        let status = child.wait().unwrap();
        drop(stderr);
        // The blocked transaction goes on once the test lets go, and fails on the
        // closed connection.
        drop(blocker);
        if status.code().is_none() {
            interrupted += 1;
        }
        wait_lock_free(&t, &label);
        let export = t.export();
        let state = if export == before {
            assert_eq!(t.history().len(), 1, "{label}");
            "before"
        } else if export == after {
            assert_eq!(t.history().len(), 2, "{label}");
            let plan = t
                .ok(["plan", "--file", "big.csv", "--format", "json"])
                .json();
            assert_eq!(plan["summary"]["total"], 0, "{label}");
            "after"
        } else {
            panic!(
                "{label}: the directory is neither before nor after ({} lines, {} extensions)",
                export.lines().count(),
                s.psql("SELECT count(*) FROM extensions")
            );
        };
        // The next apply works, at once.
        t.ok(BIG_ARGS);
        assert_eq!(t.export(), after, "{label}: the next apply");
        wait_lock_free(&t, &format!("{label}, after the next apply"));
        outcomes.push(format!("{label}: {state} ({status})"));
    }
    assert!(
        interrupted > 0,
        "no kill interrupted an apply: {outcomes:#?}"
    );
    assert!(
        outcomes.last().unwrap().contains("after"),
        "an apply that was not killed is complete: {outcomes:#?}"
    );
}

// ---------------------------------------------------------------------------
// Concurrent applies

#[test]
fn of_two_or_three_concurrent_applies_one_applies_and_the_others_name_the_holder() {
    let s = schema_or_skip!("concurrent_applies");
    let t = repo(&s);
    t.devices(&[DEV_A, DEV_B]);
    let host = host();
    let mut expected_history = 0;
    // Two applies at once, then three.
    for (others, csv) in [
        (1, format!("{HEADER}{ROWS}")),
        (
            2,
            format!("{HEADER}{ROWS}1004,Wei,Chen,wchen,Wei_pass56,,,,,\n"),
        ),
    ] {
        t.commit_csv(&csv);
        // The first holds the lock while it waits at its prompt.
        let mut first = spawn(&t, &["apply"], &[]);
        let holder = wait_for_holder(&t);
        assert_eq!(holder["pid"], first.id(), "{holder:#}");
        assert_eq!(holder["host"], host.as_str(), "{holder:#}");
        // The others start together.
        let rest: Vec<Child> = (0..others)
            .map(|_| spawn(&t, &["apply", "--auto-approve", "--format", "json"], &[]))
            .collect();
        for child in rest {
            let out = finish(child);
            assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
            let doc = out.json();
            assert_eq!(codes(&doc), ["locked"], "{doc:#}");
            let message = doc["errors"][0]["message"].as_str().unwrap();
            assert!(
                message.starts_with("an apply is already running on this target")
                    && message.contains(&format!("pid {} on host {host} since ", first.id())),
                "{message}"
            );
        }
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first apply ended before the others returned"
        );
        // The text form names the holder too.
        let out = t.run(["apply", "--auto-approve"]);
        assert_eq!(out.code, 1);
        assert!(
            out.stderr.contains("locked") && out.stderr.contains(&first.id().to_string()),
            "{}",
            out.stderr
        );
        first.stdin.take().unwrap().write_all(b"yes\n").unwrap();
        let out = finish(first);
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
        expected_history += 1;
        assert_eq!(t.history().len(), expected_history);
        wait_lock_free(&t, "after the first apply");
        assert_eq!(
            t.ok(["plan"]).stdout,
            "No changes. The target matches the desired state.\n"
        );
    }
    assert_eq!(
        t.exported("Web Username"),
        ["jflynn", "mgarcia", "mgarcia", "wchen"]
    );
}

#[test]
fn three_applies_started_together_apply_once() {
    let s = schema_or_skip!("three_together");
    let big = big_csv(100, 100);
    let t = with_base(&s, &big);
    let args = [
        "apply",
        "--file",
        "big.csv",
        "--auto-approve",
        "--allow-large-change",
    ];
    let children: Vec<Child> = (0..3).map(|_| spawn(&t, &args, &[])).collect();
    let outs: Vec<Output> = children.into_iter().map(finish).collect();
    let winners = outs.iter().filter(|o| applied(o)).count();
    assert_eq!(winners, 1, "exactly one applies: {:#?}", describe(&outs));
    for o in outs.iter().filter(|o| !applied(o)) {
        // Refused while the winner held the lock, or planned against the state
        // before it and refused as stale, or started after it and had nothing
        // left to do.
        let refused = o.code == 1
            && (o.stderr.contains("error[locked]") || o.stderr.contains("error[stale-plan]"));
        let nothing = o.code == 0 && o.stdout.contains("No changes.");
        assert!(refused || nothing, "{:#?}", describe(&outs));
        if o.stderr.contains("error[locked]") {
            assert!(
                o.stderr
                    .contains("an apply is already running on this target (pid "),
                "{}",
                o.stderr
            );
        }
    }
    assert_eq!(t.history().len(), 2);
    assert_eq!(t.export().lines().count(), 1 + 20 + 10_000);
    wait_lock_free(&t, "after the three applies");
}

/// Whether an apply succeeded and applied (its plan comes first on stdout).
fn applied(o: &Output) -> bool {
    o.code == 0 && o.stdout.lines().any(|l| l.starts_with("Applied: "))
}

/// What the processes printed, the plans cut to their last lines.
fn describe(outs: &[Output]) -> Vec<String> {
    let tail = |s: &str| {
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    };
    outs.iter()
        .map(|o| format!("exit {}: {}\n{}", o.code, tail(&o.stdout), o.stderr))
        .collect()
}

// ---------------------------------------------------------------------------
// The lock holder in status

#[test]
fn status_shows_the_holder_from_the_lock_row_and_ignores_a_row_without_the_lock() {
    let s = schema_or_skip!("status_holder");
    let t = repo(&s);
    t.commit_csv(format!(
        "{HEADER}1002,Maria,Garcia,mgarcia,Pass_word34,,,,,virtual\n"
    ));
    t.apply(&[]);
    t.commit_csv(format!(
        "{HEADER}1002,Maria,Garcia,mgarcia,Pass_word34,,,,,virtual\n1004,Wei,Chen,wchen,Wei_pass56,,,,,\n"
    ));
    let before = t.export();
    let host = host();
    let mut first = spawn(&t, &["apply"], &[]);
    let holder = wait_for_holder(&t);
    assert_eq!(holder["pid"], first.id(), "{holder:#}");
    assert_eq!(holder["host"], host.as_str(), "{holder:#}");
    assert!(
        holder["since"].as_str().is_some_and(|v| !v.is_empty()),
        "{holder:#}"
    );
    let text = t.ok(["status"]).stdout;
    assert!(
        text.contains(&format!(
            "lock:          held by pid {} on host {host}",
            first.id()
        )),
        "{text}"
    );
    // The row names the holder's session, and that session holds an advisory lock.
    let row = s.psql("SELECT pid || ',' || host || ',' || backend_pid FROM lock_holder");
    let fields: Vec<&str> = row.split(',').collect();
    assert_eq!(
        fields[..2],
        [first.id().to_string().as_str(), host.as_str()]
    );
    assert_eq!(
        psql(
            &s.base,
            &format!(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = {}",
                fields[2]
            )
        ),
        "1",
        "the holder's session holds the advisory lock"
    );
    first.stdin.take().unwrap().write_all(b"no\n").unwrap();
    assert_eq!(finish(first).code, 1);
    wait_lock_free(&t, "after a cancelled apply");
    assert_eq!(
        s.psql("SELECT count(*) FROM lock_holder"),
        "0",
        "the row is cleared on release"
    );
    assert_eq!(t.export(), before);

    // A row that a holder left behind, without the lock held: not shown, no refusal.
    s.psql(
        "INSERT INTO lock_holder (id, pid, host, since, backend_pid) \
         VALUES (1, 4242, 'ghost', '2026-01-02T03:04:05Z', 4242)",
    );
    let status = t.status_json();
    assert_eq!(status["lock_holder"], serde_json::Value::Null, "{status:#}");
    let text = t.ok(["status"]).stdout;
    assert!(text.contains("lock:          free"), "{text}");
    assert!(!text.contains("ghost"), "{text}");
    t.apply(&[]);
    assert!(t.export().contains("wchen"));
}

// ---------------------------------------------------------------------------
// Writes behind pbxsync's back

#[test]
fn a_write_with_psql_makes_a_saved_plan_stale_and_shows_as_drift() {
    let s = schema_or_skip!("psql_write");
    let t = repo(&s);
    t.devices(&[DEV_A, DEV_B]);
    t.commit_csv(format!("{HEADER}{ROWS}"));
    t.apply(&[]);
    t.commit_csv(format!(
        "{HEADER}{ROWS}1004,Wei,Chen,wchen,Wei_pass56,,,,,\n"
    ));
    t.ok(["plan", "--out", "plan.json"]);
    let serial = t.serial();
    // Someone changes a mobile number in psql.
    s.psql("UPDATE users SET mobile = '+1 555 0199' WHERE username = 'jflynn'");
    assert!(t.serial() > serial, "the trigger bumped the serial");
    let before = t.export();
    assert!(before.contains("+1 555 0199"), "{before}");

    let out = t.run(["apply", "plan.json", "--format", "json"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert_eq!(codes(&out.json()), ["stale-plan"]);
    let out = t.run(["apply", "plan.json"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .starts_with("error[stale-plan]: the target changed"),
        "{}",
        out.stderr
    );
    assert_eq!(t.export(), before);
    assert_eq!(t.history().len(), 1);

    // Status shows it as drift from the last applied CSV.
    let status = t.status_json();
    assert_eq!(status["drift"]["update_user"], 1, "{status:#}");
    assert_eq!(status["drift"]["total"], 1, "{status:#}");
    let text = t.ok(["status"]).stdout;
    assert!(
        text.contains("drift:         1 difference from the last applied CSV")
            && text.contains("update_user jflynn (mobile)"),
        "{text}"
    );

    // Planning again reverts it, and applies.
    t.ok(["plan", "--out", "plan.json"]);
    t.ok(["apply", "plan.json"]);
    assert!(t.export().contains("+1 (555) 010-0001"));
    assert_eq!(t.status_json()["drift"]["total"], 0);
}

// ---------------------------------------------------------------------------
// The schema guard

/// Runs commands that must be refused with a message containing each of
/// `expected`, with the target given by `--target`.
fn refused(t: &Test, url: &str, expected: &[&str]) {
    for args in [
        &["apply", "--auto-approve"][..],
        &["plan"],
        &["status"],
        &["export"],
        &["devices", "add", DEV_A],
        &["licenses", "set", "--users", "5"],
    ] {
        let mut all = vec!["--target", url];
        all.extend_from_slice(args);
        let out = t.run(&all);
        assert_eq!(out.code, 1, "{args:?}: {}{}", out.stdout, out.stderr);
        for e in expected {
            assert!(
                out.stderr.contains(e),
                "{args:?} should say {e:?}: {}",
                out.stderr
            );
        }
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
}

#[test]
fn a_schema_holding_another_programs_tables_is_refused_and_left_alone() {
    let s = schema_or_skip!("foreign_schema");
    psql(
        &s.base,
        &format!(
            "CREATE SCHEMA {0}; CREATE TABLE {0}.foo (x int); INSERT INTO {0}.foo VALUES (1)",
            s.name
        ),
    );
    // The target from `--target`, over the config's SQLite file.
    let t = Test::repo();
    t.commit_csv(format!("{HEADER}{ROWS}").replace(",0004F2000001\n", ",virtual\n"));
    refused(&t, &s.url, &[&s.name]);
    assert_eq!(s.tables(), ["foo"], "nothing was created");
    assert_eq!(s.psql("SELECT count(*) FROM foo"), "1");
    assert!(
        !t.state().exists(),
        "the SQLite file of the config was not used"
    );
}

#[test]
fn a_schema_of_a_newer_pbxsync_is_refused_and_left_alone() {
    let s = schema_or_skip!("newer_schema");
    let t = repo(&s);
    t.commit_csv(format!(
        "{HEADER}1002,Maria,Garcia,mgarcia,Pass_word34,,,,,virtual\n"
    ));
    t.apply(&[]);
    t.commit_csv(format!(
        "{HEADER}1002,Maria,Garcia,mgarcia,Pass_word34,,,,,virtual\n1004,Wei,Chen,wchen,Wei_pass56,,,,,\n"
    ));
    s.psql("UPDATE meta SET value = '999' WHERE key = 'schema_version'");
    let snapshot = || {
        s.psql(
            "SELECT (SELECT count(*) FROM users) || ' ' || (SELECT count(*) FROM extensions) \
             || ' ' || (SELECT count(*) FROM devices) || ' ' || (SELECT count(*) FROM history) \
             || ' ' || (SELECT string_agg(s::text, ';') FROM state s) \
             || ' ' || (SELECT string_agg(m::text, ';' ORDER BY m::text) FROM meta m)",
        )
    };
    let before = (snapshot(), s.tables());
    refused(&t, &s.url, &["newer", "upgrade pbxsync"]);
    assert_eq!((snapshot(), s.tables()), before, "nothing was written");
}

// ---------------------------------------------------------------------------
// Secrets and unreachable servers

#[test]
fn the_password_in_the_url_never_shows_and_errors_name_host_port_and_database() {
    let s = schema_or_skip!("password_url");
    const SECRET: &str = "S3cretPW";
    let url = pg::with_password(&s.url, SECRET);
    assert!(url.contains(SECRET));
    let t = Test::repo();
    t.commit_csv(format!("{HEADER}{ROWS}"));
    let clean = |out: &Output, what: &str| {
        assert!(
            !out.stdout.contains(SECRET) && !out.stderr.contains(SECRET),
            "{what} showed the password:\n{}{}",
            out.stdout,
            out.stderr
        );
    };
    for args in [
        &["devices", "add", DEV_A][..],
        &["devices", "add", DEV_B],
        &["plan"],
        &["plan", "--format", "json"],
        &["plan", "--format", "markdown"],
        &["plan", "--out", "plan.json"],
        &["apply", "plan.json"],
        &["status"],
        &["status", "--format", "json"],
        &["history"],
        &["history", "--format", "json"],
        &["history", "1"],
        &["export"],
        &["devices", "list"],
        &["licenses", "show"],
        &["plan", "-v"],
    ] {
        let out = run_with_target(&t, &url, args);
        assert_eq!(out.code, 0, "{args:?}: {}{}", out.stdout, out.stderr);
        clean(&out, &format!("{args:?}"));
    }
    assert!(!t.read("plan.json").contains(SECRET), "the saved plan");
    assert!(
        !t.state().exists(),
        "PBXSYNC_TARGET was used, not the config"
    );
    // Nor is it kept in the database.
    for table in ["history", "state", "meta", "lock_holder"] {
        assert_eq!(
            s.psql(&format!(
                "SELECT count(*) FROM {table} r WHERE r::text LIKE '%{SECRET}%'"
            )),
            "0",
            "{table}"
        );
    }
    // A failure shows no password either: a stale plan, a refused login.
    s.psql("UPDATE extensions SET description = 'by hand' WHERE number = '1002'");
    run_with_target(&t, &url, &["plan", "--out", "plan.json"]);
    s.psql("UPDATE extensions SET description = 'again' WHERE number = '1002'");
    let out = run_with_target(&t, &url, &["apply", "plan.json"]);
    assert_eq!(out.code, 1);
    clean(&out, "a stale apply");

    // Unreachable: a port nobody listens on.
    let port = free_port();
    let db = format!("nodb_{}", std::process::id());
    let unreachable = format!("postgres://postgres:{SECRET}@127.0.0.1:{port}/{db}");
    for args in [&["plan"][..], &["apply", "--auto-approve"], &["status"]] {
        let out = run_with_target(&t, &unreachable, args);
        assert_eq!(out.code, 1, "{args:?}: {}{}", out.stdout, out.stderr);
        clean(&out, &format!("unreachable {args:?}"));
        for part in ["127.0.0.1", &port.to_string(), &db] {
            assert!(
                out.stderr.contains(part),
                "{args:?} should name {part}: {}",
                out.stderr
            );
        }
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
    // Reachable, but no such database.
    let (server, _) = s.base.rsplit_once('/').expect("a database in the URL");
    let missing = pg::with_password(&format!("{server}/{db}"), SECRET);
    let out = run_with_target(&t, &missing, &["plan"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    clean(&out, "a missing database");
    assert!(out.stderr.contains(&db), "{}", out.stderr);
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------
// A server restarted during an apply

/// A PostgreSQL cluster of this test's own (initdb, trust, one port), stopped
/// and removed when dropped, also when the test fails.
struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl Cluster {
    /// None, said loudly, when not running as root (initdb and pg_ctl run as the
    /// `postgres` user through `runuser`).
    fn start(test: &str) -> Option<Cluster> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            pg::skipped(test, "not root: cannot run initdb as postgres");
            return None;
        }
        let bin = postgres_bin();
        let dir = tempfile::tempdir().expect("temp dir");
        let uid = id("-u");
        let gid = id("-g");
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        let cluster = Cluster {
            dir,
            bin,
            port: free_port(),
        };
        cluster.as_postgres(
            "initdb",
            &[
                "-D",
                &cluster.data(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            cluster.port,
            cluster.dir.path().display()
        );
        cluster.as_postgres(
            "pg_ctl",
            &[
                "-D",
                &cluster.data(),
                "-o",
                &options,
                "-l",
                &cluster.log(),
                "-w",
                "start",
            ],
        );
        Some(cluster)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn log(&self) -> String {
        self.dir.path().join("log").display().to_string()
    }

    /// `pg_ctl restart -m fast`: the sessions are ended, the server comes back.
    /// With the log file again: a server that inherited pg_ctl's output would
    /// keep the pipes that `as_postgres` reads to their end open.
    fn restart(&self) {
        self.as_postgres(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &self.log(),
                "-m",
                "fast",
                "-w",
                "restart",
            ],
        );
    }

    fn as_postgres(&self, tool: &str, args: &[&str]) {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(tool))
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run runuser");
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}\nlog: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "-w", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb` and `pg_ctl`.
fn postgres_bin() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                    let bin = e.path().join("bin");
                    (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
                        .then_some((v, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).expect(
        "initdb and pg_ctl in /usr/lib/postgresql/<version>/bin (apt-get install postgresql)",
    )
}

/// `id -u postgres` or `id -g postgres`.
fn id(flag: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .expect("run id");
    assert!(out.status.success(), "no user postgres");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a number")
}

#[test]
fn a_server_restarted_during_an_apply_is_a_clear_error_and_nothing_half_written() {
    const TEST: &str = "a_server_restarted_during_an_apply";
    if !std::env::var(pg::VAR).is_ok_and(|v| !v.is_empty()) {
        pg::skipped(TEST, &format!("{} is unset", pg::VAR));
        return;
    }
    let Some(cluster) = Cluster::start(TEST) else {
        return;
    };
    // The default schema, `pbxsync`; the password (any: trust) from PBXSYNC_TARGET.
    const SECRET: &str = "S3cretPW";
    let url = pg::with_password(&cluster.url(), SECRET);
    let big = big_csv(100, 100);
    let t = Test::repo();
    t.write("base.csv", format!("{HEADER}{}", base_rows()))
        .write("big.csv", &big);
    let ok = |args: &[&str]| {
        let out = run_with_target(&t, &url, args);
        assert_eq!(out.code, 0, "{args:?}: {}{}", out.stdout, out.stderr);
        out
    };
    ok(&["apply", "--auto-approve", "--file", "base.csv"]);
    let before = ok(&["export"]).stdout;
    assert_eq!(
        psql(&cluster.url(), "SELECT count(*) FROM pbxsync.extensions"),
        "20"
    );

    let blocker = Blocker::new(&cluster.url(), "pbxsync");
    // JSON: printed at the end, so the plan does not fill the pipe that no one
    // reads while the test waits.
    let args = BIG_ARGS;
    let mut child = spawn(&t, &args, &[("PBXSYNC_TARGET", url.as_str())]);
    wait_blocked_in_writes(&cluster.url(), "pbxsync", &mut child);
    cluster.restart();
    drop(blocker);
    let out = finish(child);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert!(!out.stderr.contains(SECRET), "{}", out.stderr);
    assert!(
        out.stderr.contains("127.0.0.1") || out.stderr.contains("database postgres"),
        "the error names the server: {}",
        out.stderr
    );
    assert!(
        !out.stdout.contains("\"applied\""),
        "{}{}",
        out.stdout,
        out.stderr
    );

    // Nothing half-written, the lock free, and the next apply works.
    assert_eq!(ok(&["export"]).stdout, before);
    let history = ok(&["history", "--format", "json"]).stdout;
    let history: serde_json::Value = serde_json::from_str(&history).unwrap();
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["outcome"] != "applied" || h["id"] == 1),
        "{history:#}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&ok(&["status", "--format", "json"]).stdout).unwrap();
    assert_eq!(status["lock_holder"], serde_json::Value::Null, "{status:#}");
    let out = ok(&args);
    assert!(
        out.stdout.contains("\"outcome\": \"applied\""),
        "{}",
        out.stdout
    );
    assert_eq!(
        ok(&["export"]).stdout.lines().count(),
        1 + 20 + 10_000,
        "the next apply"
    );
}
