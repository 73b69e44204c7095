//! `pbxsync watch`: the real executable following a real repository, changed with
//! the git CLI. Every wait is a bounded poll of a condition (the watcher's JSON
//! log, the target through the CLI, a file); no fixed sleep is an assertion.

use crate::support::{DEV_A, HASH, HEADER, Test};
use serde_json::Value;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a condition may take before the test fails (generous: CI machines
/// are slow; a passing test waits only as long as it needs).
const PATIENCE: Duration = Duration::from_secs(60);

/// Polls `done` until it holds or `PATIENCE` runs out.
fn eventually(what: &str, done: impl FnMut() -> bool) {
    crate::support::eventually(what, PATIENCE, done)
}

/// A repository whose config has these `watch` settings (a short poll, so that
/// drift is found quickly; file events find commits sooner).
fn repo(watch: &str) -> Test {
    Test::repo_with(&format!(
        "policy: {{{HASH}}}\nwatch: {{debounce_ms: 100, poll_seconds: 1, {watch}}}\n"
    ))
}

fn rows(rows: &[&str]) -> String {
    let mut csv = HEADER.to_string();
    for r in rows {
        csv.push_str(r);
        csv.push('\n');
    }
    csv
}

const ANN: &str = "1001,Ann,Lee,ann,Secret12AB,,ann@example.com,,,";
const BOB: &str = "1002,Bob,Ray,bob,Secret34CD,,bob@example.com,,,";
const CAT: &str = "1003,Cat,Kim,cat,Secret56EF,,cat@example.com,,,";

/// A running `pbxsync watch --format json`, its log collected line by line.
/// Dropping it kills the process, also when a test fails.
struct Watcher {
    child: Child,
    logs: Arc<Mutex<Vec<Value>>>,
}

impl Watcher {
    fn start(t: &Test, args: &[&str]) -> Watcher {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pbxsync"))
            .current_dir(t.dir.path())
            .env_remove("PBXSYNC_TARGET")
            .args(["watch", "--format", "json"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start pbxsync watch");
        let stdout = child.stdout.take().expect("stdout");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
                sink.lock().unwrap().push(value);
            }
        });
        Watcher { child, logs }
    }

    fn logs(&self) -> Vec<Value> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits for a log record of `event` (about `commit`, when given); returns it.
    fn wait_for(&self, event: &str, commit: Option<&str>) -> Value {
        let found = |logs: &[Value]| {
            logs.iter()
                .find(|l| {
                    l["event"] == event && commit.is_none_or(|c| l["commit"].as_str() == Some(c))
                })
                .cloned()
        };
        let start = Instant::now();
        loop {
            if let Some(l) = found(&self.logs()) {
                return l;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "no `{event}` record for {commit:?}; the log:\n{:#?}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn count(&self, event: &str) -> usize {
        self.logs().iter().filter(|l| l["event"] == event).count()
    }

    fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill");
    }

    /// Waits for the process to end; its exit code (128 + n for signal n).
    fn exit_code(&mut self) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                use std::os::unix::process::ExitStatusExt;
                return status
                    .code()
                    .or(status.signal().map(|s| 128 + s))
                    .unwrap_or(-1);
            }
            assert!(start.elapsed() < PATIENCE, "the watcher did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The commits of the recorded applies, oldest first (none before a state).
fn applied_commits(t: &Test) -> Vec<String> {
    let out = t.run(["history", "--format", "json"]);
    if out.code != 0 && out.stderr.contains("no state yet") {
        return Vec::new();
    }
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut commits: Vec<String> = out
        .json()
        .as_array()
        .expect("history")
        .iter()
        .map(|h| h["commit"].as_str().unwrap_or_default().to_string())
        .collect();
    commits.reverse();
    commits
}

fn emails(t: &Test) -> Vec<String> {
    t.exported("Email")
}

#[test]
fn each_commit_is_applied_once_also_after_a_restart() {
    let t = repo("auto_apply: always");
    let first = t.commit_csv(rows(&[ANN]));
    let mut w = Watcher::start(&t, &[]);
    // On start, the current commit is reconciled at once.
    let applied = w.wait_for("applied", Some(&first));
    assert_eq!(applied["subject"], "users.csv");
    assert_eq!(applied["author"], "Test Admin <admin@example.com>");
    assert_eq!(applied["summary"]["create_user"], 1);
    assert!(applied["duration_ms"].is_u64(), "{applied}");
    let second = t.commit_csv(rows(&[ANN, BOB]));
    w.wait_for("applied", Some(&second));
    assert_eq!(applied_commits(&t), [first.clone(), second.clone()]);
    w.signal(libc::SIGTERM);
    assert_eq!(w.exit_code(), 0);
    assert_eq!(w.logs().last().unwrap()["event"], "stopped");

    // A new watcher finds the commit applied and does nothing with it.
    let w = Watcher::start(&t, &[]);
    let in_sync = w.wait_for("in_sync", Some(&second));
    assert!(
        in_sync["reason"]
            .as_str()
            .unwrap()
            .contains("already applied")
    );
    let third = t.commit_csv(rows(&[ANN, BOB, CAT]));
    w.wait_for("applied", Some(&third));
    assert_eq!(applied_commits(&t), [first, second, third]);
    assert_eq!(w.count("applied"), 1, "{:#?}", w.logs());
    // No secret in any log line.
    let text = format!("{:?}", w.logs());
    assert!(!text.contains("Secret"), "{text}");
}

#[test]
fn a_bad_commit_is_skipped_and_the_next_good_one_is_applied() {
    let t = repo("auto_apply: always");
    let good = t.commit_csv(rows(&[ANN]));
    let w = Watcher::start(&t, &[]);
    w.wait_for("applied", Some(&good));
    let bad = t.commit_csv(rows(&[ANN, "10x2,Bob,Ray,bob,Secret34CD,,,,,"]));
    let skipped = w.wait_for("skipped", Some(&bad));
    assert_eq!(skipped["errors"][0]["code"], "bad-extension", "{skipped}");
    assert_eq!(skipped["errors"][0]["line"], 3, "{skipped}");
    // An empty file is bad too (it would remove nothing, but says nothing).
    let empty = t.commit_csv(HEADER);
    let skipped = w.wait_for("skipped", Some(&empty));
    assert_eq!(
        skipped["errors"][0]["code"], "empty-desired-state",
        "{skipped}"
    );
    let fixed = t.commit_csv(rows(&[ANN, BOB]));
    w.wait_for("applied", Some(&fixed));
    assert_eq!(applied_commits(&t), [good, fixed]);
    assert_eq!(emails(&t), ["ann@example.com", "bob@example.com"]);
}

#[test]
fn safe_keeps_a_reassignment_pending_and_apply_of_the_pending_plan_applies_it() {
    let t = repo("auto_apply: safe");
    t.write(
        "pbxsync.yaml",
        t.read("pbxsync.yaml") + "inventory: devices.csv\n",
    );
    t.write("devices.csv", format!("id,model\n{DEV_A},Yealink T54W\n"));
    let with_device = |ext_a: &str, ext_b: &str| {
        rows(&[
            &format!("1001,Ann,Lee,ann,Secret12AB,,,,,{ext_a}"),
            &format!("1002,Bob,Ray,bob,Secret34CD,,,,,{ext_b}"),
        ])
    };
    let first = t.commit_csv(with_device(DEV_A, "virtual"));
    let w = Watcher::start(&t, &[]);
    w.wait_for("applied", Some(&first));
    // The device moves to Bob: a reassignment, which waits for a person.
    let moved = t.commit_csv(with_device("virtual", DEV_A));
    let pending = w.wait_for("pending", Some(&moved));
    assert_eq!(pending["summary"]["reassign_device"], 1, "{pending}");
    assert!(
        pending["reason"]
            .as_str()
            .unwrap()
            .contains("reassigns 1 device"),
        "{pending}"
    );
    assert!(t.path(".pbxsync/pending.json").exists());
    assert_eq!(applied_commits(&t), std::slice::from_ref(&first));
    // The pending plan is a saved plan: `apply FILE` applies it.
    let out = t.ok(["apply", ".pbxsync/pending.json"]);
    assert!(out.stdout.contains("Applied: "), "{}", out.stdout);
    assert_eq!(applied_commits(&t), [first, moved.clone()]);
    // The watcher sees it applied and clears the pending plan.
    w.wait_for("in_sync", Some(&moved));
    eventually("pending.json removed", || {
        !t.path(".pbxsync/pending.json").exists()
    });
}

#[test]
fn once_exits_as_apply_does_and_never_keeps_the_plan_pending() {
    let t = repo("auto_apply: never");
    let first = t.commit_csv(rows(&[ANN]));
    // A plan for a person: 0, or 2 with --detailed-exitcode.
    let out = t.run(["watch", "--once", "--detailed-exitcode", "--format", "json"]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    let log: Value = serde_json::from_str(out.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(log["event"], "pending");
    assert_eq!(log["commit"], first.as_str());
    assert_eq!(t.run(["watch", "--once"]).code, 0);
    assert!(!t.state().exists(), "a plan that waits writes no target");
    // The pending plan goes stale when the target changes under it.
    t.ok(["apply", "--auto-approve", "--file", "users.csv"]);
    let stale = t.run(["apply", ".pbxsync/pending.json"]);
    assert_eq!(stale.code, 1, "{}", stale.stderr);
    assert!(stale.stderr.contains("stale-plan"), "{}", stale.stderr);
    // A bad commit: 1.
    t.commit_csv(rows(&[ANN, "1002,Bob,Ray,bob,short,,,,,"]));
    let out = t.run(["watch", "--once"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("skipped"), "{}", out.stdout);
    assert!(out.stdout.contains("password-policy"), "{}", out.stdout);
    assert!(!out.stdout.contains("short"), "{}", out.stdout);
    // Applied: 0, and the commit is in the history once.
    let good = t.commit_csv(rows(&[ANN, BOB]));
    t.write(
        "pbxsync.yaml",
        t.read("pbxsync.yaml").replace("never", "always"),
    );
    assert_eq!(t.run(["watch", "--once"]).code, 0);
    assert_eq!(t.run(["watch", "--once", "--detailed-exitcode"]).code, 0);
    assert_eq!(applied_commits(&t).last().unwrap(), &good);
    assert_eq!(applied_commits(&t).len(), 2);
}

#[test]
fn drift_is_reported_with_what_differs_and_healed_with_self_heal() {
    let t = repo("auto_apply: always");
    let first = t.commit_csv(rows(&[ANN, BOB]));
    let w = Watcher::start(&t, &[]);
    w.wait_for("applied", Some(&first));
    // A change behind pbxsync's back, straight into the state file.
    t.db()
        .execute(
            "UPDATE users SET email = 'ann@elsewhere.org' WHERE username = 'ann'",
            [],
        )
        .unwrap();
    let drift = w.wait_for("drift", None);
    assert_eq!(drift["commit"], first.as_str());
    assert_eq!(drift["differs"][0], "update_user ann (email)", "{drift}");
    assert_eq!(emails(&t), ["ann@elsewhere.org", "bob@example.com"]);
    drop(w);

    // With self_heal, the last applied revision is written back.
    t.write(
        "pbxsync.yaml",
        t.read("pbxsync.yaml")
            .replace("always", "always, self_heal: true"),
    );
    let w = Watcher::start(&t, &[]);
    let healed = w.wait_for("healed", None);
    assert_eq!(healed["summary"]["update_user"], 1, "{healed}");
    assert_eq!(emails(&t), ["ann@example.com", "bob@example.com"]);
    // Once healed, nothing more happens to the same commit.
    assert_eq!(applied_commits(&t), [first.clone(), first]);
}

#[test]
fn two_watchers_on_one_target_apply_each_commit_exactly_once() {
    let t = repo("auto_apply: always");
    let mut commits = vec![t.commit_csv(rows(&[ANN]))];
    let a = Watcher::start(&t, &[]);
    let b = Watcher::start(&t, &[]);
    let applied_by_either = |commit: &str| {
        let start = Instant::now();
        while !applied_commits(&t).iter().any(|c| c == commit) {
            assert!(
                start.elapsed() < PATIENCE,
                "{commit} not applied; the logs:\n{:#?}\n{:#?}",
                a.logs(),
                b.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    applied_by_either(&commits[0]);
    let cat_moved = "1003,Cat,Kim,cat,Secret56EF,,cat@elsewhere.org,,,";
    for csv in [
        rows(&[ANN, BOB]),
        rows(&[ANN, BOB, CAT]),
        rows(&[ANN, BOB, cat_moved]),
    ] {
        commits.push(t.commit_csv(csv));
        applied_by_either(commits.last().unwrap());
    }
    // Both watchers have seen the last commit, as applied or in sync.
    for w in [&a, &b] {
        eventually("both watchers on the last commit", || {
            w.logs().iter().any(|l| {
                l["commit"].as_str() == commits.last().map(String::as_str)
                    && (l["event"] == "applied" || l["event"] == "in_sync")
            })
        });
    }
    assert_eq!(applied_commits(&t), commits);
    assert_eq!(a.count("applied") + b.count("applied"), commits.len());
}

#[test]
fn a_locked_target_is_retried_and_a_newer_commit_replaces_the_failing_one() {
    let t = repo("auto_apply: always");
    let first = t.commit_csv(rows(&[ANN]));
    t.ok(["apply", "--auto-approve"]);
    // Hold the apply lock, as another apply would.
    let lock = std::fs::File::create(t.path(".pbxsync/state.db.lock")).unwrap();
    fs4::FileExt::try_lock(&lock).unwrap();
    let w = Watcher::start(&t, &[]);
    let blocked = t.commit_csv(rows(&[ANN, BOB]));
    let locked = w.wait_for("locked", Some(&blocked));
    assert!(locked["retry_in_ms"].as_u64().unwrap() > 0, "{locked}");
    // A newer commit is tried at once, not after the backoff.
    let newer = t.commit_csv(rows(&[ANN, CAT]));
    w.wait_for("locked", Some(&newer));
    fs4::FileExt::unlock(&lock).unwrap();
    w.wait_for("applied", Some(&newer));
    assert_eq!(applied_commits(&t), [first, newer]);
    assert_eq!(emails(&t), ["ann@example.com", "cat@example.com"]);
}

/// A directory large enough that its first apply takes a while.
fn large(n: usize) -> String {
    let mut csv = HEADER.to_string();
    for i in 0..n {
        csv.push_str(&format!(
            "{},First{i},Last{i},user{i},Secret12AB,,u{i}@example.com,,,\n",
            100_000 + i
        ));
    }
    csv
}

/// A repository whose first commit is a directory large enough, with password
/// hashing slow enough, that its apply takes a while.
fn large_repo() -> Test {
    let t = Test::repo_with(
        "policy: {password_hash: {m_cost_kib: 1024, t_cost: 1, p_cost: 1}}\n\
         watch: {debounce_ms: 100, poll_seconds: 1, auto_apply: always}\n",
    );
    t.commit_csv(large(LARGE));
    t
}

const LARGE: usize = 20_000;

/// Starts a watcher and signals it as soon as its apply has begun (the state
/// file exists); a second signal waits until the first was received.
fn signalled_during_the_apply(t: &Test, signals: &[i32]) -> i32 {
    let mut w = Watcher::start(t, &[]);
    eventually("the apply to begin", || {
        t.path(".pbxsync/state.db").exists()
    });
    for (i, &s) in signals.iter().enumerate() {
        if i > 0 {
            w.wait_for("stopping", None);
        }
        w.signal(s);
    }
    let code = w.exit_code();
    assert!(w.count("stopping") >= 1, "{:#?}", w.logs());
    code
}

/// The target is as before the apply (no history, nothing written; a stop
/// before the state file had its tables leaves no state at all) or as after it
/// (all rows), never between; and the lock is free: an apply runs.
fn before_or_after(t: &Test, rows: usize) {
    let history = t.run(["history", "--format", "json"]);
    let applies = if history.code == 0 {
        history.json().as_array().expect("history").len()
    } else {
        assert!(
            history.stderr.contains("no state yet"),
            "{}",
            history.stderr
        );
        0
    };
    match applies {
        0 if history.code == 0 => {
            assert!(
                t.export().lines().count() <= 1,
                "rows written without an apply"
            )
        }
        0 => {}
        1 => assert_eq!(t.sql("SELECT count(*) FROM extensions"), [rows.to_string()]),
        n => panic!("{n} applies recorded"),
    }
    t.ok(["apply", "--auto-approve", "--quiet"]);
    assert_eq!(t.sql("SELECT count(*) FROM extensions"), [rows.to_string()]);
}

#[test]
fn sigterm_during_a_large_apply_exits_0_with_the_target_before_or_after() {
    let t = large_repo();
    assert_eq!(signalled_during_the_apply(&t, &[libc::SIGTERM]), 0);
    before_or_after(&t, LARGE);
}

#[test]
fn a_second_signal_exits_at_once_without_a_half_written_target() {
    let t = large_repo();
    let code = signalled_during_the_apply(&t, &[libc::SIGINT, libc::SIGINT]);
    // The second signal ends the process at once (130), unless the apply had
    // already ended and the watcher exited by itself in between (0).
    assert!(code == 128 + libc::SIGINT || code == 0, "exit {code}");
    before_or_after(&t, LARGE);
}

#[test]
fn the_working_tree_mode_follows_saves_of_the_file() {
    let t = repo("auto_apply: always");
    t.commit_csv(rows(&[ANN]));
    let w = Watcher::start(&t, &["--working-tree"]);
    w.wait_for("applied", None);
    // An editor's save: a new file renamed over the old one.
    t.write("users.csv.tmp", rows(&[ANN, BOB]));
    std::fs::rename(t.path("users.csv.tmp"), t.path("users.csv")).unwrap();
    eventually("the saved file applied", || {
        emails(&t) == ["ann@example.com", "bob@example.com"]
    });
    let history = t.history();
    assert_eq!(history.len(), 2);
    assert!(
        history[0]["source"]
            .as_str()
            .unwrap()
            .contains("uncommitted"),
        "{:#?}",
        history[0]
    );
}

#[test]
fn without_file_events_the_poll_finds_a_new_commit() {
    // File events would wait ten minutes to settle: only the poll (each second)
    // can find the commit, as on a network file system that sends no events.
    let t = Test::repo_with(&format!(
        "policy: {{{HASH}}}\nwatch: {{debounce_ms: 600000, poll_seconds: 1, auto_apply: always}}\n"
    ));
    let first = t.commit_csv(rows(&[ANN]));
    let w = Watcher::start(&t, &[]);
    w.wait_for("applied", Some(&first));
    let second = t.commit_csv(rows(&[ANN, BOB]));
    w.wait_for("applied", Some(&second));
}

#[test]
fn text_logs_escape_what_comes_from_the_repository() {
    let t = repo("auto_apply: never");
    t.csv(rows(&[ANN]));
    t.git(&["add", "-A"]);
    t.git(&[
        "commit",
        "-q",
        "-m",
        "evil \u{1b}]0;owned\u{7} \u{202e}subject",
    ]);
    let out = t.run(["watch", "--once"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains(" pending "), "{}", out.stdout);
    assert!(
        out.stdout
            .contains(r#""evil \u{1b}]0;owned\u{7} \u{202e}subject" by Test Admin"#),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains('\u{1b}') && !out.stdout.contains('\u{202e}'));
}
