//! A small builder so each test says only what it is about:
//! `Test::new().csv("…").run(["validate"])`.
#![allow(dead_code)]

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
    /// A directory with a minimal `pbxsync.yaml` (source: users.csv).
    pub fn new() -> Test {
        let t = Test {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        t.write("pbxsync.yaml", "source:\n  path: users.csv\n");
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
