//! Issue 14, item 8: results that were quietly wrong. The tab delimiter as the
//! README spells it, YAML's tags, `fmt` through a symlink, a read-only state
//! folder, a damaged state file, and a git filter that makes the checkout differ
//! from the commit.

use crate::support::{HASH, HEADER, Test, types};

const ROWS: &str = "\
1001,Jason,Flynn,jflynn,Sec_ret12,,,,,virtual\n\
1002,Maria,Garcia,mgarcia,Pass_word34,,,,,\n";

#[test]
fn the_tab_delimiter_as_the_readme_writes_it_reads_a_tab_separated_file() {
    let t = Test::new();
    t.csv(format!("{HEADER}{ROWS}").replace(',', "\t"));
    // YAML's single quotes keep the backslash: the config holds `\` and `t`.
    for spelling in [r"'\t'", r#""\t""#, "tab"] {
        t.write(
            "pbxsync.yaml",
            format!("source: {{path: users.csv}}\ndelimiter: {spelling}\n"),
        );
        let out = t.ok(["validate", "--format", "json"]);
        assert_eq!(out.json()["rows"], 2, "{spelling}: {}", out.stdout);
        assert_eq!(out.codes(), Vec::<String>::new(), "{spelling}");
    }
    t.write(
        "pbxsync.yaml",
        "source: {path: users.csv}\n\ndelimiter: '|'\n",
    );
    let out = t.run(["validate"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("line 3") && out.stderr.contains("unknown delimiter `|`"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_tagged_yaml_value_is_read_as_yaml_means_it() {
    let t = Test::repo_with(&format!("policy: {{{HASH}}}\n"));
    t.commit_csv(format!("{HEADER}{ROWS}"));
    t.apply(&[]);
    t.commit_csv(format!("{HEADER}1001,Jason,Flynn,jflynn,,,,,,virtual\n"));
    // `!!bool "true"` is `true` in YAML; it was refused with "invalid type:
    // boolean `true`, expected a boolean".
    t.write(
        "pbxsync.yaml",
        format!("source: {{path: users.csv}}\npolicy: {{{HASH}}}\nprune: !!bool \"true\"\n"),
    );
    let plan = t.plan_json(&[]);
    assert_eq!(
        types(&plan),
        ["remove_extension", "remove_user"],
        "{plan:#}"
    );
    // A tag pbxsync does not know is refused rather than read past.
    t.write(
        "pbxsync.yaml",
        format!("source: {{path: users.csv}}\npolicy: {{{HASH}}}\nprune: !yes true\n"),
    );
    let out = t.run(["plan"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("line 3") && out.stderr.contains("`prune` has the YAML tag `!yes`"),
        "{}",
        out.stderr
    );
}

#[test]
fn fmt_writes_the_file_a_symlink_points_to_and_keeps_the_link() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let t = Test::new();
    let messy = "1001, Jason,Flynn,jflynn,Sec_ret12,,,,,\n";
    let formatted = format!("{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,,,,,\n");
    t.write("data/users.csv", messy);
    std::fs::set_permissions(t.path("data/users.csv"), PermissionsExt::from_mode(0o640)).unwrap();
    // Two links deep, one of them relative to its own directory.
    symlink("data/users.csv", t.path("link.csv")).unwrap();
    symlink(t.path("link.csv"), t.path("again.csv")).unwrap();
    // A file under the temporary name fmt used to write (a link to a file that
    // must not be touched) is never written through.
    t.write("victim.txt", "untouched\n");
    symlink(t.path("victim.txt"), t.path("data/.users.csv.pbxsync-tmp")).unwrap();

    t.ok(["fmt", "--file", "again.csv"]);
    assert_eq!(t.read("data/users.csv"), formatted);
    for link in ["link.csv", "again.csv"] {
        let meta = std::fs::symlink_metadata(t.path(link)).unwrap();
        assert!(meta.file_type().is_symlink(), "{link} is still a link");
    }
    let mode = std::fs::metadata(t.path("data/users.csv"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640, "the file keeps its permissions");
    assert_eq!(t.read("victim.txt"), "untouched\n");
    let left: Vec<_> = std::fs::read_dir(t.path("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "users.csv" && n != ".users.csv.pbxsync-tmp")
        .collect();
    assert!(left.is_empty(), "no temporary file left behind: {left:?}");

    // The config's CSV path through a link, too.
    t.write("data/users.csv", messy);
    t.write("pbxsync.yaml", "source: {path: link.csv}\n");
    t.ok(["fmt"]);
    assert_eq!(t.read("data/users.csv"), formatted);
    assert!(
        std::fs::symlink_metadata(t.path("link.csv"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(t.ok(["fmt", "--check"]).code, 0);
}

/// Every file of a folder with its length, modification time and a hash of its
/// content.
fn files_of(dir: &std::path::Path) -> Vec<(String, u64, std::time::SystemTime, u64)> {
    use std::hash::{Hash, Hasher};
    let hash = |bytes: Vec<u8>| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut h);
        h.finish()
    };
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            (
                e.file_name().into_string().unwrap(),
                meta.len(),
                meta.modified().unwrap(),
                hash(std::fs::read(e.path()).unwrap()),
            )
        })
        .collect();
    files.sort();
    files
}

/// A repository applied once, with a committed change still to plan, so that
/// the reading commands below really read the state file.
fn applied_with_a_pending_change() -> Test {
    let t = Test::repo();
    t.commit_csv(format!("{HEADER}{ROWS}"));
    t.apply(&[]);
    t.commit_csv(format!(
        "{HEADER}1001,Jason,Flynn,jflynn,,Desk,,,,virtual\n1002,Maria,Garcia,mgarcia,,,,,,\n"
    ));
    t
}

/// The commands that only read the state file, and what each must print.
const READERS: &[(&[&str], &str)] = &[
    (&["status"], "update_extension 1001 (description)"),
    (&["export"], "1001,Jason,Flynn,jflynn,,,,,,virtual"),
    (&["history"], "  applied"),
    (&["history", "1"], "apply #1"),
    (&["history", "1", "--format", "json"], "\"csv_redacted\""),
    (&["validate"], "valid, 2 rows"),
    (&["plan"], "~ update_extension 1001"),
    (&["licenses", "show"], "voicemail licenses: 1 used"),
    (&["devices", "list"], ""),
];

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_read_only_state_folder_is_read_without_writing_anything() {
    let t = applied_with_a_pending_change();
    let folder = t.path(".pbxsync");
    // As a clean exit leaves it: no `-wal` or `-shm` file, which SQLite needs
    // for a WAL database and could not create here.
    assert!(!t.path(".pbxsync/state.db-shm").exists());
    let before = files_of(&folder);
    set_mode(&t.state(), 0o444);
    set_mode(&folder, 0o555);
    for (args, expected) in READERS {
        let out = t.run(*args);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        assert!(out.stdout.contains(expected), "{args:?}: {}", out.stdout);
    }
    // Judged by the permission bits, as for the file itself: root, which may
    // write anyway, leaves the folder as it is too.
    assert_eq!(files_of(&folder), before, "nothing created or changed");
    let out = t.run(["devices", "add", "0004F2000001"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("read-only"), "{}", out.stderr);
    set_mode(&folder, 0o755);
    assert_eq!(files_of(&folder), before);
}

/// Runs pbxsync as a user whom permissions bind: the tests' own, or, when the
/// tests run as root (which passes every permission check), `nobody` through
/// `setpriv`, with the test directory given to it. `None` when neither works.
fn run_bound_by_permissions(t: &Test, args: &[&str]) -> Option<crate::support::Output> {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").ok()?.uid() != 0 {
        return Some(t.run(args));
    }
    std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    fn give(path: &std::path::Path) {
        std::os::unix::fs::lchown(path, Some(65534), Some(65534)).unwrap();
        if std::fs::symlink_metadata(path).unwrap().is_dir() {
            for e in std::fs::read_dir(path).unwrap() {
                give(&e.unwrap().path());
            }
        }
    }
    give(t.dir.path());
    let mut cmd = assert_cmd::Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_pbxsync"))
        .args(args)
        .current_dir(t.dir.path())
        .env("HOME", t.dir.path())
        .env_remove("PBXSYNC_TARGET")
        .env("NO_COLOR", "1");
    Some(crate::support::run(&mut cmd))
}

#[test]
fn a_folder_the_user_cannot_write_is_read_as_well() {
    let t = applied_with_a_pending_change();
    let folder = t.path(".pbxsync");
    let before = files_of(&folder);
    set_mode(&folder, 0o555);
    for (args, expected) in READERS {
        let Some(out) = run_bound_by_permissions(&t, args) else {
            eprintln!("skipped: running as root without setpriv, permissions cannot bind");
            set_mode(&folder, 0o755);
            return;
        };
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        assert!(out.stdout.contains(expected), "{args:?}: {}", out.stdout);
    }
    let out = run_bound_by_permissions(&t, &["licenses", "set", "--users", "5"]).unwrap();
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("read-only"), "{}", out.stderr);
    assert_eq!(files_of(&folder), before, "nothing created or changed");
    set_mode(&folder, 0o755);
}

/// A state file of 2,000 users applied from a commit, and what each reading
/// command printed before anything happened to it.
fn applied_directory() -> (Test, Vec<(Vec<&'static str>, crate::support::Output)>) {
    let t = Test::repo();
    let mut csv = HEADER.to_string();
    for i in 0..2000 {
        csv.push_str(&format!(
            "{},First{i},Last{i},user{i},Sec_ret12,Desk {i},u{i}@example.com,,,virtual\n",
            10_000 + i
        ));
    }
    t.commit_csv(csv);
    t.apply(&[]);
    let commands: Vec<Vec<&str>> = vec![
        vec!["status"],
        vec!["export"],
        vec!["history"],
        vec!["history", "1"],
        vec!["history", "1", "--format", "json"],
        vec!["plan"],
        vec!["plan", "--file", "users.csv"],
        vec!["validate"],
        vec!["licenses", "show"],
        vec!["apply", "--auto-approve", "--file", "users.csv"],
    ];
    let before = commands
        .into_iter()
        .map(|args| {
            let out = t.ok(&args);
            (args, out)
        })
        .collect();
    (t, before)
}

/// Every command either fails saying the state file is damaged and what to do,
/// or (when it does not read the damaged part) prints what it printed before.
/// `must_fail` must fail.
fn damage_is_reported(
    t: &Test,
    before: &[(Vec<&str>, crate::support::Output)],
    must_fail: &[&str],
) {
    for (args, earlier) in before {
        let out = t.run(args);
        if out.code == 0 && !must_fail.contains(&args.join(" ").as_str()) {
            assert_eq!(
                out.stdout, earlier.stdout,
                "{args:?} read the damage as data"
            );
            continue;
        }
        assert_eq!(out.code, 1, "{args:?}: {}{}", out.stdout, out.stderr);
        let state = t.state().display().to_string();
        assert!(
            out.stderr
                .contains(&format!("the state file {state} is damaged"))
                && out.stderr.contains("Restore it from a backup")
                && out.stderr.contains("pbxsync apply"),
            "{args:?}: {}",
            out.stderr
        );
    }
}

/// Where `needle` first occurs in the state file.
fn offset_of(t: &Test, needle: &[u8]) -> usize {
    let bytes = std::fs::read(t.state()).unwrap();
    bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| {
            panic!(
                "{:?} not in the state file",
                String::from_utf8_lossy(needle)
            )
        })
}

fn overwrite(t: &Test, at: usize, with: &[u8]) {
    use std::io::{Seek, Write};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(t.state())
        .unwrap();
    file.seek(std::io::SeekFrom::Start(at as u64)).unwrap();
    file.write_all(with).unwrap();
}

#[test]
fn a_state_file_damaged_in_the_middle_fails_every_command_that_reads_it() {
    let (t, before) = applied_directory();
    // Text that is no longer UTF-8 in the middle of a row: it was "invalid utf-8
    // sequence", and `export` exited 0 when it met other damage.
    let at = offset_of(&t, b"Desk 1000");
    overwrite(&t, at, b"\xff\xfe\xff\xfe");
    damage_is_reported(&t, &before, &["export"]);
    overwrite(&t, at, b"Desk");
    assert_eq!(t.ok(["export"]).stdout, before[1].1.stdout, "restored");

    // A whole page of garbage in the middle of the file.
    let page = 32_768;
    let at = offset_of(&t, b"Desk 1000") / page * page;
    let garbage: Vec<u8> = (0..page).map(|i| (i * 7919 % 251) as u8).collect();
    overwrite(&t, at, &garbage);
    damage_is_reported(&t, &before, &["export"]);
}

#[test]
fn an_extension_whose_user_is_gone_fails_export_instead_of_leaving_it_out() {
    let (t, before) = applied_directory();
    // As damage to a user id, or a program that wrote with foreign keys off,
    // leaves it: `export` printed every other extension and exited 0.
    let db = t.db();
    db.execute_batch(
        "PRAGMA foreign_keys = OFF; UPDATE extensions SET user_id = 999999 WHERE number = '10500';",
    )
    .unwrap();
    drop(db);
    let out = t.run(["export"]);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stderr.contains("is damaged")
            && out
                .stderr
                .contains("extension 10500 belongs to user id 999999"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty(), "no partial export: {}", out.stdout);
    // Everything else that reads the directory whole says so too.
    for args in [&["plan", "--file", "users.csv"][..], &["status"]] {
        let out = t.run(args);
        assert_eq!(out.code, 1, "{args:?}: {}", out.stdout);
        assert!(
            out.stderr.contains("is damaged"),
            "{args:?}: {}",
            out.stderr
        );
    }
    drop(before);
}

#[test]
fn a_damaged_recorded_csv_is_an_error_not_an_altered_or_empty_csv() {
    let (t, before) = applied_directory();
    // A byte inside the compressed CSV of apply #1 (after zstd's frame header):
    // it read back as a CSV with some letters changed, or as none.
    let at = offset_of(&t, &[0x28, 0xb5, 0x2f, 0xfd]) + 64;
    let bytes = std::fs::read(t.state()).unwrap();
    overwrite(&t, at, &[bytes[at] ^ 0x01]);
    for args in [&["history", "1"][..], &["history", "1", "--format", "json"]] {
        let out = t.run(args);
        assert_eq!(out.code, 1, "{args:?}: {}", out.stdout);
        assert!(
            out.stderr.contains("is damaged")
                && out
                    .stderr
                    .contains("the CSV recorded with apply #1 cannot be read"),
            "{args:?}: {}",
            out.stderr
        );
    }
    // The list of applies does not read the CSVs.
    assert_eq!(t.ok(["history"]).stdout, before[2].1.stdout);
}

/// Waits until `path` has been left alone for over a second: only then does a
/// plan take git's index's word for the checkout (`FileStamp::settled`), which
/// is the case this test is about. A wait for that condition, not a timing
/// assertion.
fn until_settled(path: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).unwrap();
    let changed = std::time::UNIX_EPOCH
        + std::time::Duration::new(meta.ctime() as u64, meta.ctime_nsec() as u32);
    let settled = changed + std::time::Duration::from_millis(1100);
    while let Ok(left) = settled.duration_since(std::time::SystemTime::now()) {
        std::thread::sleep(left);
    }
}

#[test]
fn a_git_filter_that_keeps_the_length_cannot_make_plan_and_apply_disagree() {
    let t = Test::repo();
    // A clean/smudge filter that swaps J and K: the commit holds "Kason" while
    // the checkout keeps "Jason", as long, and git's index calls it clean.
    t.git(&["config", "filter.swap.clean", "tr JK KJ"]);
    t.git(&["config", "filter.swap.smudge", "tr JK KJ"]);
    t.write(".gitattributes", "users.csv filter=swap\n");
    t.commit_csv(format!("{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,,,,,\n"));
    assert!(t.git(&["show", "HEAD:users.csv"]).contains("Kason"));
    assert!(t.read("users.csv").contains("Jason"));
    assert_eq!(t.git(&["status", "--porcelain", "users.csv"]), "");
    until_settled(&t.path("users.csv"));

    // The plan showed the checkout ("Jason") and the apply wrote the commit.
    let plan = t.plan_json(&[]);
    let user = &plan["actions"][0];
    assert_eq!(user["type"], "create_user", "{plan:#}");
    let first_name = user["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["field"] == "first_name")
        .unwrap();
    assert_eq!(
        first_name["to"], "Kason",
        "the plan shows the commit: {plan:#}"
    );
    let text = t.ok(["plan"]).stdout;
    assert!(
        text.contains("first_name: \"Kason\"") && !text.contains("Jason"),
        "{text}"
    );
    t.apply(&[]);
    assert!(t.export().contains("1001,Kason,Flynn,jflynn"));
    assert!(t.ok(["plan"]).stdout.starts_with("No changes."));
}
