//! Publishing (SPEC 11) without the SIP programs: the registrar's view in the
//! state file, the provisioning files an apply writes, repairs and removes, and
//! the one command that prints a SIP secret. The registrar and phones themselves
//! are in `kamailio.rs`.

use crate::support::{DEV_A, DEV_B, DEV_C, HASH, HEADER, Test};

const CONFIG: &str = "publish:\n  kamailio: {domain: pbx.example.com}\n  provision: {dir: provision, server: \"pbx.example.com:5070\"}\n";

/// Ann on a Yealink (DEV_A), Bob on a Polycom (DEV_B), Carol virtual.
const ROWS: &str = "\
1001,Ann,Archer,ann,Sec_ret12,,ann@example.com,,,0004F2000001\n\
1002,Bob,Baker,bob,Sec_ret12,,bob@example.com,,,0004F2000002\n\
1003,Carol,Cole,carol,Sec_ret12,,,,,virtual\n";

fn office() -> Test {
    let t = Test::repo_with(&format!(
        "policy: {{{HASH}}}\ninventory: devices.csv\n{CONFIG}"
    ));
    t.write(
        "devices.csv",
        format!("id,model\n{DEV_A},Yealink T46U\n{DEV_B},Polycom VVX 450\n{DEV_C},Yealink T54W\n"),
    );
    t.commit_csv(format!("{HEADER}{ROWS}"));
    t
}

/// `account.1.KEY = VALUE` of a Yealink file.
fn yealink(file: &str, key: &str) -> Option<String> {
    let prefix = format!("account.1.{key} = ");
    file.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(str::to_owned)
}

fn files(t: &Test) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(t.path("provision"))
        .map(|dir| {
            dir.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn an_apply_publishes_the_registrar_view_and_each_phones_file() {
    let t = office();
    let out = t.apply(&[]);
    assert!(
        out.stdout
            .contains("Registrar: the subscriber view is published with domain pbx.example.com.")
            && out
                .stdout
                .contains("Provisioning files: 2 written, 0 removed, 0 unchanged."),
        "{}",
        out.stdout
    );
    // What Kamailio reads: the extensions that hold a device, with their secrets.
    let rows = t.sql(
        "SELECT username || ' ' || domain || ' ' || password FROM subscriber ORDER BY username",
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    let ann = t.read("provision/0004f2000001.cfg");
    assert!(ann.starts_with("#!version:1.0.0.1\n"), "{ann}");
    assert_eq!(yealink(&ann, "user_name").as_deref(), Some("1001"));
    assert_eq!(yealink(&ann, "display_name").as_deref(), Some("Ann Archer"));
    assert_eq!(
        yealink(&ann, "sip_server.1.address").as_deref(),
        Some("pbx.example.com")
    );
    assert_eq!(yealink(&ann, "sip_server.1.port").as_deref(), Some("5070"));
    let secret = yealink(&ann, "password").unwrap();
    assert_eq!(rows[0], format!("1001 pbx.example.com {secret}"));
    let bob = t.read("provision/0004F2000002.cfg");
    assert!(bob.contains("reg.1.auth.userId=\"1002\""), "{bob}");
    assert_eq!(
        files(&t),
        [
            ".pbxsync-manifest.json",
            "0004F2000002.cfg",
            "0004f2000001.cfg"
        ]
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(t.path("provision/0004f2000001.cfg"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
    // The secret is in no plan, log or history.
    for args in [&["plan"][..], &["history"], &["status"], &["export"]] {
        let out = t.ok(args);
        assert!(
            !out.stdout.contains(&secret) && !out.stderr.contains(&secret),
            "{args:?}"
        );
    }
}

#[test]
fn a_change_of_one_device_rewrites_one_file_and_a_removed_one_goes() {
    let t = office();
    t.apply(&[]);
    let bob = t.path("provision/0004F2000002.cfg");
    let before = std::fs::metadata(&bob).unwrap().modified().unwrap();
    // Ann's phone moves to DEV_C: her old file goes, a new one comes; Bob's
    // stays as it is.
    t.commit_csv(format!(
        "{HEADER}{}",
        ROWS.replace("0004F2000001", "0004F2000003")
    ));
    let out = t.apply(&[]);
    assert!(
        out.stdout
            .contains("Provisioning files: 1 written, 1 removed, 1 unchanged."),
        "{}",
        out.stdout
    );
    assert_eq!(
        files(&t),
        [
            ".pbxsync-manifest.json",
            "0004F2000002.cfg",
            "0004f2000003.cfg"
        ]
    );
    assert_eq!(std::fs::metadata(&bob).unwrap().modified().unwrap(), before);
    // A name change rewrites that phone's file only.
    t.commit_csv(format!(
        "{HEADER}{}",
        ROWS.replace("0004F2000001", "0004F2000003")
            .replace("Bob,Baker", "Bob,Brown")
    ));
    let json = t.ok(["apply", "--auto-approve", "--format", "json"]).json();
    assert_eq!(
        json["published"]["files"]["written"],
        serde_json::json!(["0004F2000002.cfg"])
    );
    assert!(t.read("provision/0004F2000002.cfg").contains("Bob Brown"));
}

#[test]
fn a_file_that_could_not_be_written_is_said_and_repaired_by_provision() {
    let t = office();
    // A file where the folder should be: the apply commits, then says that
    // publishing failed and exits 1.
    t.write("provision", "not a folder");
    let out = t.run(["apply", "--auto-approve"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("Applied:"), "{}", out.stdout);
    assert!(
        out.stderr
            .contains("the directory is applied, but publishing it failed")
            && out.stderr.contains("pbxsync provision"),
        "{}",
        out.stderr
    );
    assert!(t.ok(["plan"]).stdout.contains("No changes"));
    std::fs::remove_file(t.path("provision")).unwrap();
    let out = t.ok(["provision"]);
    assert_eq!(
        out.stdout,
        "Provisioning files: 2 written, 0 removed, 0 unchanged.\n"
    );
    assert_eq!(files(&t).len(), 3);
    // A deleted file is written again by the next apply, even with nothing to apply.
    std::fs::remove_file(t.path("provision/0004f2000001.cfg")).unwrap();
    let out = t.apply(&[]);
    assert!(out.stdout.contains("1 written"), "{}", out.stdout);
    assert!(t.path("provision/0004f2000001.cfg").exists());
}

#[test]
fn secret_prints_one_extensions_credentials_and_records_the_read() {
    let t = office();
    t.apply(&[]);
    let secret = yealink(&t.read("provision/0004f2000001.cfg"), "password").unwrap();
    let out = t.ok(["secret", "1001"]);
    assert_eq!(
        out.stdout,
        format!(
            "extension:  1001\nauth user:  1001\nsecret:     {secret}\ndomain:     pbx.example.com\nserver:     pbx.example.com:5070\n"
        )
    );
    let json = t.ok(["secret", "1003", "--format", "json"]).json();
    assert_eq!(json["extension"], "1003");
    assert_eq!(json["secret"].as_str().unwrap().len(), 32);
    // Who read which, when: in the history, without the secret.
    let history = t.history();
    assert_eq!(history[0]["outcome"], "secret read");
    assert_eq!(history[0]["source"], "SIP secret of extension 1003");
    assert_eq!(history[1]["source"], "SIP secret of extension 1001");
    assert!(!serde_json::to_string(&history).unwrap().contains(&secret));
    let out = t.run(["secret", "9999"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("the target has no extension 9999"),
        "{}",
        out.stderr
    );
    assert_eq!(t.history().len(), 3, "a failed read records nothing");
}

#[test]
fn without_publish_the_view_is_empty_and_no_file_is_written() {
    let t = office();
    t.apply(&[]);
    assert_eq!(t.sql("SELECT username FROM subscriber").len(), 2);
    // The section goes: the next apply withdraws the registrar's view; the
    // files stay (pbxsync no longer manages them).
    let config = t.read("pbxsync.yaml").replace(CONFIG, "");
    t.write("pbxsync.yaml", config);
    let out = t.apply(&[]);
    assert!(
        out.stdout
            .contains("Registrar: the subscriber view is withdrawn"),
        "{}",
        out.stdout
    );
    assert_eq!(
        t.sql("SELECT username FROM subscriber"),
        Vec::<String>::new()
    );
    let out = t.ok(["provision"]);
    assert_eq!(
        out.stdout,
        "Nothing to publish: the config has no `publish` section.\n"
    );
}

#[test]
fn a_broken_template_stops_the_apply_before_it_writes() {
    let t = office();
    let config = t.read("pbxsync.yaml").replace(
        "server: \"pbx.example.com:5070\"}",
        "server: \"pbx.example.com:5070\", templates: {\"Yealink T46U\": t46u.j2}}",
    );
    t.write("pbxsync.yaml", config);
    t.write("t46u.j2", "account.1.password = {{ sip_secret }\n");
    t.commit("a template with a typo");
    let out = t.run(["apply", "--auto-approve"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("t46u.j2"), "{}", out.stderr);
    assert!(
        !t.state().exists() || t.history().is_empty(),
        "nothing applied"
    );
    assert!(!t.path("provision").exists());
}

#[test]
fn a_registrar_reading_the_state_file_neither_blocks_an_apply_nor_sees_half_of_it() {
    let t = office();
    t.apply(&[]);
    // A reader in the middle of a transaction, as Kamailio's lookups are: it
    // keeps the snapshot it started with.
    let reader = t.db();
    reader.execute_batch("BEGIN").unwrap();
    let count = |db: &rusqlite::Connection| -> i64 {
        db.query_row("SELECT count(*) FROM subscriber", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count(&reader), 2);
    // Carol gets a desk phone and Dave arrives with one: the apply goes through
    // while the reader holds its snapshot.
    let rows = ROWS.replace(
        "1003,Carol,Cole,carol,Sec_ret12,,,,,virtual",
        "1003,Carol,Cole,carol,Sec_ret12,,,,,0004F2000003",
    );
    t.commit_csv(format!("{HEADER}{rows}"));
    let out = t.apply(&[]);
    assert!(out.stdout.contains("Applied:"), "{}", out.stdout);
    assert_eq!(
        count(&reader),
        2,
        "the reader sees the state before the commit, whole"
    );
    reader.execute_batch("COMMIT").unwrap();
    assert_eq!(count(&reader), 3, "and the new one once it reads again");
}
