//! Refusals and failures leave the target as it was: plans with errors, a declined
//! prompt, state files that are corrupt, foreign, newer or read-only, a missing
//! inventory, a second apply while one runs, and an apply killed at any moment.

use crate::support::{DEV_A, HEADER, Test, base_rows, big_csv, codes};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROWS: &str = "\
1001,Jason,Flynn,jflynn,Sec_ret12,Desk,jason@example.com,,,virtual\n\
1002,Maria,Garcia,mgarcia,Pass_word34,,,,,\n";

/// `ROWS` applied, and a commit with one more user on top, not applied.
fn pending() -> Test {
    let t = Test::repo();
    t.commit_csv(format!("{HEADER}{ROWS}"));
    t.apply(&[]);
    t.commit_csv(format!(
        "{HEADER}{ROWS}1003,Wei,Chen,wchen,Wei_pass56,,,,,\n"
    ));
    t
}

/// What must not change: the export, the serial and the number of applies.
fn snapshot(t: &Test) -> (String, u64, usize) {
    (t.export(), t.serial(), t.history().len())
}

/// A pbxsync process started in the test directory.
fn spawn(t: &Test, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_pbxsync"))
        .current_dir(t.dir.path())
        .env_remove("PBXSYNC_TARGET")
        .env("NO_COLOR", "1")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pbxsync")
}

#[test]
fn a_plan_with_errors_is_never_applied() {
    let t = pending();
    let before = snapshot(&t);
    t.commit_csv(format!(
        "{HEADER}{ROWS}1003,Wei,Chen,wchen,Wei_pass56,,,,,\n1004,Lars,Berg,lberg,,,,,,{DEV_A}\n"
    ));
    let out = t.run(["apply", "--auto-approve", "--format", "json"]);
    assert_eq!(out.code, 1);
    assert_eq!(codes(&out.json()), ["missing-required", "device-not-found"]);
    let out = t.run(["apply", "--auto-approve"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("nothing can be applied"),
        "{}",
        out.stderr
    );
    assert_eq!(snapshot(&t), before);
}

#[test]
fn answering_anything_but_yes_changes_nothing() {
    let t = pending();
    let before = snapshot(&t);
    for answer in ["no\n", "y\n", "YES please\n", ""] {
        let out = crate::support::run(t.cmd().arg("apply").write_stdin(answer));
        assert_eq!(out.code, 1, "{answer:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("Apply cancelled; nothing was changed."),
            "{answer:?}: {}",
            out.stderr
        );
        assert_eq!(snapshot(&t), before, "{answer:?}");
    }
}

/// Runs commands against a state file that must be refused, and checks the file's
/// bytes stay as they were.
fn refused_untouched(t: &Test, expected: &str) {
    let bytes = std::fs::read(t.state()).unwrap();
    for args in [
        &["apply", "--auto-approve"][..],
        &["plan"],
        &["status"],
        &["export"],
        &["devices", "add", DEV_A],
        &["licenses", "set", "--users", "5"],
    ] {
        let out = t.run(args);
        assert_eq!(out.code, 1, "{args:?}: {}{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains(expected),
            "{args:?} should say {expected:?}: {}",
            out.stderr
        );
    }
    assert_eq!(std::fs::read(t.state()).unwrap(), bytes, "the file changed");
    for suffix in ["-wal", "-shm", "-journal"] {
        let sidecar = t.path(&format!(".pbxsync/state.db{suffix}"));
        assert!(!sidecar.exists(), "{} was created", sidecar.display());
    }
}

#[test]
fn a_corrupt_state_file_is_refused_and_left_as_it_is() {
    let t = Test::repo();
    t.commit_csv(format!("{HEADER}{ROWS}"));
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7919 % 251) as u8).collect();
    t.write(".pbxsync/state.db", &garbage);
    refused_untouched(&t, "is not a pbxsync state file");
}

#[test]
fn a_truncated_sqlite_file_is_refused_and_left_as_it_is() {
    let t = pending();
    let mut bytes = std::fs::read(t.state()).unwrap();
    bytes.truncate(100);
    t.write(".pbxsync/state.db", &bytes);
    refused_untouched(&t, "state.db");
}

#[test]
fn a_foreign_sqlite_database_is_refused_and_left_as_it_is() {
    let t = Test::repo();
    t.commit_csv(format!("{HEADER}{ROWS}"));
    std::fs::create_dir_all(t.path(".pbxsync")).unwrap();
    rusqlite::Connection::open(t.state())
        .unwrap()
        .execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('hi');")
        .unwrap();
    refused_untouched(&t, "is not a pbxsync state file");
    // Another program's database that says so by its application id.
    std::fs::remove_file(t.state()).unwrap();
    rusqlite::Connection::open(t.state())
        .unwrap()
        .execute_batch("PRAGMA application_id = 1234; CREATE TABLE t (x);")
        .unwrap();
    refused_untouched(&t, "another program");
}

#[test]
fn a_state_file_of_a_newer_pbxsync_is_refused() {
    let t = pending();
    t.db().pragma_update(None, "user_version", 999).unwrap();
    refused_untouched(&t, "newer");
}

#[test]
fn a_read_only_state_file_refuses_writes_and_stays_unchanged() {
    use std::os::unix::fs::PermissionsExt;
    let t = pending();
    let before = snapshot(&t);
    let bytes = std::fs::read(t.state()).unwrap();
    std::fs::set_permissions(t.state(), std::fs::Permissions::from_mode(0o444)).unwrap();
    for args in [
        &["apply", "--auto-approve"][..],
        &["devices", "add", DEV_A],
        &["licenses", "set", "--users", "5"],
    ] {
        let out = t.run(args);
        assert_eq!(out.code, 1, "{args:?}: {}", out.stdout);
        assert!(out.stderr.contains("read-only"), "{args:?}: {}", out.stderr);
    }
    // Reading still works.
    assert_eq!(t.plan_json(&[])["summary"]["create_user"], 1);
    assert_eq!(std::fs::read(t.state()).unwrap(), bytes);
    std::fs::set_permissions(t.state(), std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(snapshot(&t), before);
    t.apply(&[]);
    assert!(t.export().contains("wchen"));
}

#[test]
fn a_missing_or_broken_inventory_file_is_a_clear_error() {
    let t = Test::repo_with(&format!(
        "inventory: devices.csv\npolicy: {{{}}}\n",
        crate::support::HASH
    ));
    t.commit_csv(format!("{HEADER}{ROWS}"));
    for args in [&["plan"][..], &["apply", "--auto-approve"]] {
        let out = t.run(args);
        assert_eq!(out.code, 1);
        assert!(
            out.stderr.contains("cannot read the inventory file")
                && out.stderr.contains("devices.csv")
                && out.stderr.contains("inventory:"),
            "{}",
            out.stderr
        );
    }
    assert!(
        !t.state().exists(),
        "a failed apply must not even create the state file"
    );
    t.write(
        "devices.csv",
        format!("id,model\n{DEV_A},VVX\nnot a mac!,x\n"),
    );
    let out = t.run(["plan"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("devices.csv:3:"), "{}", out.stderr);
}

#[test]
fn a_second_apply_fails_at_once_naming_the_holder() {
    let t = pending();
    let before = snapshot(&t);
    // The first apply holds the lock while it waits at the prompt.
    let mut first = spawn(&t, &["apply"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let holder = loop {
        let status = t.ok(["status", "--format", "json"]).json();
        if !status["lock_holder"].is_null() {
            break status["lock_holder"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "the first apply never took the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    assert_eq!(holder["pid"], first.id());
    assert_eq!(holder["host"], host.as_str());
    let text = t.ok(["status"]).stdout;
    assert!(
        text.contains(&format!(
            "lock:          held by pid {} on host {host}",
            first.id()
        )),
        "{text}"
    );

    // The first apply waits at its prompt until it is answered below: a second
    // apply that waited for the lock would never return while it runs.
    let out = t.run(["apply", "--auto-approve", "--format", "json"]);
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first apply ended before the second returned"
    );
    assert_eq!(out.code, 1);
    let doc = out.json();
    assert_eq!(codes(&doc), ["locked"]);
    let message = doc["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("an apply is already running on this target")
            && message.contains(&format!("pid {} on host {host} since ", first.id())),
        "{message}"
    );
    let out = t.run(["apply", "--auto-approve"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("locked"), "{}", out.stderr);
    // About no file: no `-->` location line.
    assert!(!out.stderr.contains("-->"), "{}", out.stderr);
    // Planning does not need the lock.
    assert_eq!(t.plan_json(&[])["summary"]["create_user"], 1);

    first.stdin.take().unwrap().write_all(b"no\n").unwrap();
    assert_eq!(first.wait().unwrap().code(), Some(1));
    assert_eq!(snapshot(&t), before);
    assert!(t.ok(["status"]).stdout.contains("lock:          free"));
    t.apply(&[]);
    assert!(t.export().contains("wchen"));
}

/// When the test kills an apply: each a moment the test observes, never a delay.
enum Kill {
    /// As soon as it is started.
    AtSpawn,
    /// At the first stderr line that starts with this.
    AtLine(&'static str),
    /// Once the write-ahead log has grown past its size before the apply: pages
    /// of the apply's transaction are being written.
    WalGrown,
    /// Once the history holds the apply: it has committed, and may still be
    /// keeping its digest index or closing the database.
    Committed,
    /// Once the process has closed its stderr, i.e. finished.
    AtExit,
}

#[test]
fn a_killed_apply_leaves_the_target_as_before_or_as_after() {
    const ARGS: [&str; 7] = [
        "apply",
        "--file",
        "big.csv",
        "--auto-approve",
        "--allow-large-change",
        "--format",
        "json",
    ];
    let big = big_csv(200, 100);
    let base = format!("{HEADER}{}", base_rows());

    // The state after an uninterrupted apply, in a directory of its own.
    let done = Test::repo();
    done.write("base.csv", &base).write("big.csv", &big);
    done.apply(&["--file", "base.csv"]);
    done.ok(ARGS);
    let after = done.export();
    assert_eq!(after.lines().count(), 1 + 20 + 20_000);

    let t = Test::repo();
    t.write("base.csv", &base).write("big.csv", &big);
    t.apply(&["--file", "base.csv"]);
    let before = t.export();
    let wal = t.path(".pbxsync/state.db-wal");
    let pristine = (std::fs::read(t.state()).unwrap(), std::fs::read(&wal).ok());
    let wal_len = || std::fs::metadata(&wal).map_or(0, |m| m.len());
    let restore = || {
        let _ = std::fs::remove_file(t.path(".pbxsync/state.db-shm"));
        let _ = std::fs::remove_file(&wal);
        std::fs::write(t.state(), &pristine.0).unwrap();
        if let Some(bytes) = &pristine.1 {
            std::fs::write(&wal, bytes).unwrap();
        }
        assert_eq!(t.export(), before);
    };

    let mut outcomes = Vec::new();
    let mut interrupted = 0;
    for kill in [
        Kill::AtSpawn,
        Kill::AtLine("hashing"),
        Kill::AtLine("applying"),
        Kill::WalGrown,
        Kill::AtLine("applied 5000/"),
        Kill::AtLine("applied 15000/"),
        Kill::AtLine("committing"),
        Kill::Committed,
        Kill::AtExit,
    ] {
        restore();
        let wal_before = wal_len();
        let mut child = spawn(&t, &ARGS);
        let mut stderr = child.stderr.take().unwrap();
        let label = match kill {
            Kill::AtSpawn => "at spawn".to_string(),
            Kill::AtLine(prefix) => {
                for line in BufReader::new(&mut stderr).lines() {
                    if line.unwrap().starts_with(prefix) {
                        break;
                    }
                }
                format!("at {prefix:?}")
            }
            Kill::WalGrown => {
                // Bounded by the apply itself: it grows the log or it ends.
                while wal_len() <= wal_before && child.try_wait().unwrap().is_none() {
                    std::thread::sleep(Duration::from_millis(1));
                }
                "once the log grew".to_string()
            }
            Kill::Committed => {
                // Bounded by the apply too: it commits or it ends.
                while t.history().len() < 2 && child.try_wait().unwrap().is_none() {
                    std::thread::sleep(Duration::from_millis(1));
                }
                "once committed".to_string()
            }
            Kill::AtExit => {
                std::io::copy(&mut stderr, &mut std::io::sink()).unwrap();
                "at exit".to_string()
            }
        };
        let _ = child.kill();
        let status = child.wait().unwrap();
        drop(stderr);
        if status.code().is_none() {
            interrupted += 1;
        }
        let export = t.export();
        // The apply drops pbxsync's triggers inside its transaction: a kill at any
        // moment leaves them all in place.
        assert_eq!(
            t.sql("SELECT count(*) FROM sqlite_schema WHERE type = 'trigger'"),
            ["17"],
            "killed {label}"
        );
        let state = if export == before {
            assert_eq!(t.history().len(), 1, "{label}");
            "before"
        } else if export == after {
            assert_eq!(t.history().len(), 2, "{label}");
            // Whatever of the kept digest index the kill cut short, a plan of the
            // applied file has nothing left to do.
            let plan = t
                .ok(["plan", "--file", "big.csv", "--format", "json"])
                .json();
            assert_eq!(plan["summary"]["total"], 0, "killed {label}");
            "after"
        } else {
            panic!(
                "killed {label}: the target is neither before nor after ({} lines)",
                export.lines().count()
            );
        };
        let status_text = t.ok(["status"]).stdout;
        assert!(
            status_text.contains("lock:          free"),
            "killed {label}: {status_text}"
        );
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

#[test]
fn a_failing_action_writes_nothing_and_names_the_action() {
    let t = pending();
    let before = snapshot(&t);
    // A trigger that makes one insert fail, as a constraint of the phone system would.
    t.db()
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON extensions WHEN NEW.number = '1003' \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
        )
        .unwrap();
    let out = t.run(["apply", "--auto-approve"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("add_extension 1003")
            && out.stderr.contains("refused by the test")
            && out.stderr.contains("nothing was written"),
        "{}",
        out.stderr
    );
    assert_eq!(t.export(), before.0);
    assert_eq!(t.serial(), before.1);
    assert_eq!(t.exported("Web Username"), ["jflynn", "mgarcia"]);
    // The failure is in the history.
    let history = t.history();
    assert!(
        history[0]["outcome"]
            .as_str()
            .unwrap()
            .starts_with("failed: "),
        "{history:#?}"
    );
    assert_eq!(history.len(), 2);
}
