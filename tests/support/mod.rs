//! A small builder so each test says only what it is about:
//! `Test::new().csv("…").run(["validate"])`.
#![allow(dead_code)]

pub mod pg;
pub mod sip;

use assert_cmd::Command;
use std::path::{Path, PathBuf};

pub const HEADER: &str = "Extension,First Name,Last Name,Web Username,Password,Description,Email,IM,Mobile,Device MAC Address\n";

pub struct Test {
    pub dir: tempfile::TempDir,
}

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Test {
    /// A directory with a minimal `pbxsync.yaml` (source: users.csv, plaintext
    /// Password cells allowed as in `HASH`).
    pub fn new() -> Test {
        let t = Test {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        t.write(
            "pbxsync.yaml",
            "source:\n  path: users.csv\npolicy: {plaintext_passwords: allow}\n",
        );
        t
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> &Test {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, content).expect("write");
        self
    }

    pub fn csv(&self, content: impl AsRef<[u8]>) -> &Test {
        self.write("users.csv", content)
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).expect("read")
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pbxsync"));
        c.current_dir(self.dir.path())
            .env_remove("PBXSYNC_TARGET")
            .env("NO_COLOR", "1");
        c
    }

    pub fn run<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        run(self.cmd().args(args))
    }

    /// Runs `git` in the test directory with a fixed identity.
    pub fn git(&self, args: &[&str]) -> String {
        git(self.dir.path(), args)
    }
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run pbxsync");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=Test Admin",
            "-c",
            "user.email=admin@example.com",
        ])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .env("GIT_AUTHOR_DATE", "2026-01-02T03:04:05Z")
        .env("GIT_COMMITTER_DATE", "2026-01-02T03:04:05Z")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Output {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }

    pub fn codes(&self) -> Vec<String> {
        self.json()["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .map(|e| e["code"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

/// The policy of the tests' configs: cheap argon2 parameters, so tests that set
/// passwords stay fast; and plaintext Password cells allowed, since tests write
/// passwords as they are for brevity (`tests/passwords.rs` checks the default,
/// a `plaintext-password` warning).
pub const HASH: &str =
    "password_hash: {m_cost_kib: 64, t_cost: 1, p_cost: 1}, plaintext_passwords: allow";

/// Two devices of the inventory in the tests that need some.
pub const DEV_A: &str = "0004F2000001";
pub const DEV_B: &str = "0004F2000002";
pub const DEV_C: &str = "0004F2000003";

impl Test {
    /// A git repository with `pbxsync.yaml` (cheap hashing) and `.gitignore`
    /// committed; the CSV is added by the test.
    pub fn repo() -> Test {
        Test::repo_with(&format!("policy: {{{HASH}}}\n"))
    }

    /// As `repo`, with these config lines after `source:` (they must set `policy`
    /// themselves, with `HASH` in it when passwords are set).
    pub fn repo_with(config: &str) -> Test {
        let t = Test {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        t.write(
            "pbxsync.yaml",
            format!("source: {{path: users.csv}}\n{config}"),
        );
        t.write(".gitignore", ".pbxsync/\n");
        t.git(&["init", "-q"]);
        t.commit("config");
        t
    }

    /// `git add -A` and commit; returns the new commit id.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"]).trim().to_string()
    }

    /// Writes users.csv and commits it; returns the commit id.
    pub fn commit_csv(&self, content: impl AsRef<[u8]>) -> String {
        self.csv(content);
        self.commit("users.csv")
    }

    /// Runs pbxsync and asserts exit 0.
    pub fn ok<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let args: Vec<std::ffi::OsString> =
            args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.run(&args);
        assert_eq!(
            out.code, 0,
            "pbxsync {args:?}\nstdout:\n{}\nstderr:\n{}",
            out.stdout, out.stderr
        );
        out
    }

    /// `plan --format json` with more flags; the JSON whatever the exit code.
    pub fn plan_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["plan", "--format", "json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        assert!(out.code == 0 || out.code == 1, "{}", out.stderr);
        out.json()
    }

    /// `apply --auto-approve` with more flags; asserts success.
    pub fn apply(&self, args: &[&str]) -> Output {
        let mut all = vec!["apply", "--auto-approve"];
        all.extend_from_slice(args);
        self.ok(&all)
    }

    /// Whether `pbxsync ARGS -v` answered by the no-op shortcut (nothing changed
    /// since the last apply, no row read): the answer is the same "No changes"
    /// as a plan that read the rows; `-v` names the phase. Asserts exit 0.
    pub fn took_shortcut(&self, args: &[&str]) -> bool {
        let mut all = args.to_vec();
        all.push("-v");
        self.ok(&all)
            .stderr
            .contains("nothing changed since the last apply (no row read)")
    }

    /// Whether `pbxsync ARGS` answers "No changes" with the blob of the committed
    /// CSV gone from git: only the shortcut, which reads no row, can (for the
    /// cases where `-v` would change the answer). The blob is put back.
    pub fn answers_without_the_csv(&self, args: &[&str]) -> bool {
        let blob = self.git(&["rev-parse", "HEAD:users.csv"]);
        let blob = blob.trim();
        let object = self.path(&format!(".git/objects/{}/{}", &blob[..2], &blob[2..]));
        let kept = std::fs::read(&object).expect("a loose object");
        std::fs::remove_file(&object).expect("remove the object");
        let out = self.run(args);
        std::fs::write(&object, kept).expect("put the object back");
        out.code == 0 && out.stdout == "No changes. The target matches the desired state.\n"
    }

    /// `pbxsync export`: the current state as CSV.
    pub fn export(&self) -> String {
        self.ok(["export"]).stdout
    }

    /// One column of `pbxsync export`, by its header, a value per extension in
    /// the export's order (by number). The device column tells the kind: a MAC,
    /// `virtual`, or empty for voicemail only.
    pub fn exported(&self, column: &str) -> Vec<String> {
        let export = self.export();
        let mut reader = csv::Reader::from_reader(export.as_bytes());
        let at = reader
            .headers()
            .expect("export header")
            .iter()
            .position(|h| h == column)
            .unwrap_or_else(|| panic!("no column {column:?} in the export"));
        reader
            .records()
            .map(|r| r.expect("export row")[at].to_string())
            .collect()
    }

    /// `pbxsync status --format json`.
    pub fn status_json(&self) -> serde_json::Value {
        self.ok(["status", "--format", "json"]).json()
    }

    /// The target's serial, from `status`.
    pub fn serial(&self) -> u64 {
        self.status_json()["serial"].as_u64().expect("serial")
    }

    /// The applies recorded in the history, newest first (`history --format json`).
    pub fn history(&self) -> Vec<serde_json::Value> {
        match self.ok(["history", "--format", "json"]).json() {
            serde_json::Value::Array(entries) => entries,
            other => panic!("history is not a list: {other:#}"),
        }
    }

    /// Adds devices to the inventory.
    pub fn devices(&self, ids: &[&str]) {
        for id in ids {
            self.ok(["devices", "add", id]);
        }
    }

    /// The default state file.
    pub fn state(&self) -> PathBuf {
        self.path(".pbxsync/state.db")
    }

    /// The state file, opened straight with SQLite.
    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.state()).expect("open state.db")
    }

    /// One column of a query on the state file, as strings.
    pub fn sql(&self, query: &str) -> Vec<String> {
        let db = self.db();
        let mut stmt = db.prepare(query).expect("prepare");
        stmt.query_map([], |r| {
            Ok(match r.get_ref(0)? {
                rusqlite::types::ValueRef::Null => String::new(),
                rusqlite::types::ValueRef::Integer(n) => n.to_string(),
                rusqlite::types::ValueRef::Real(f) => f.to_string(),
                rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                    String::from_utf8_lossy(t).into_owned()
                }
            })
        })
        .expect("query")
        .map(|v| v.expect("row"))
        .collect()
    }
}

/// The `type`s of a plan's actions, in order.
pub fn types(plan: &serde_json::Value) -> Vec<String> {
    plan["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .map(|a| a["type"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The actions of one type.
pub fn actions<'a>(plan: &'a serde_json::Value, kind: &str) -> Vec<&'a serde_json::Value> {
    plan["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter(|a| a["type"] == kind)
        .collect()
}

/// The error codes of a plan or validation JSON.
pub fn codes(doc: &serde_json::Value) -> Vec<String> {
    doc["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["code"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Polls `done` until it holds or `patience` runs out (a bounded poll, never a
/// fixed sleep).
pub fn eventually(what: &str, patience: std::time::Duration, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < patience, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `users` users with `per_user` virtual extensions each, and a changed description
/// on each row of `base_rows()`: 20 + users × per_user rows, a password per user.
pub fn big_csv(users: usize, per_user: usize) -> String {
    let mut s = String::with_capacity(users * per_user * 48);
    s.push_str(HEADER);
    s.push_str(&base_rows().replace(",Desk ", ",Moved "));
    for u in 0..users {
        for e in 0..per_user {
            let n = 200_000 + u * per_user + e;
            let pw = if e == 0 { "Pass_word12" } else { "" };
            s.push_str(&format!(
                "{n},First,Last,user{u},{pw},Desk {n},,,,virtual\n"
            ));
        }
    }
    s
}

/// 20 rows of one user, `base`, each with its own description.
pub fn base_rows() -> String {
    (0..20)
        .map(|i| format!("10{i:02},Base,User,base,Base_pw12,Desk {i},,,,\n"))
        .collect()
}
