//! Passwords, their hashes and the SIP secrets never reach an output, a saved plan or
//! the history (SPEC sections 4 and 7).

use crate::support::{DEV_A, HEADER, Test};

const PASSWORDS: [&str; 3] = ["Sec_ret12", "Pass_word34", "Wei_pass56"];

#[test]
fn no_output_contains_a_password_a_hash_or_a_sip_secret() {
    let t = Test::repo();
    t.devices(&[DEV_A]);
    t.commit_csv(format!(
        "{HEADER}\
1001,Jason,Flynn,jflynn,{},Desk,jason@example.com,,,{DEV_A}\n\
1002,Maria,Garcia,mgarcia,{},,,,,virtual\n\
1003,Wei,Chen,wchen,{},,,,,\n",
        PASSWORDS[0], PASSWORDS[1], PASSWORDS[2]
    ));
    let mut outputs: Vec<(String, String)> = Vec::new();
    let mut keep = |what: &str, out: crate::support::Output| {
        outputs.push((format!("{what} (stdout)"), out.stdout));
        outputs.push((format!("{what} (stderr)"), out.stderr));
    };
    keep("plan", t.ok(["plan"]));
    keep("plan json", t.ok(["plan", "--format", "json"]));
    keep("plan markdown", t.ok(["plan", "--format", "markdown"]));
    keep("plan --out", t.ok(["plan", "--out", "p.json"]));
    keep("apply", t.ok(["apply", "p.json"]));
    // An update that sets passwords again, and a failing validation.
    keep(
        "plan --reset-passwords",
        t.ok(["plan", "--reset-passwords"]),
    );
    keep("apply --reset-passwords", t.apply(&["--reset-passwords"]));
    t.csv(format!(
        "{HEADER}1004,Lars,Berg,lberg,{}x y,,,,,\n",
        PASSWORDS[0]
    ));
    for args in [&["validate"][..], &["plan", "--working-tree"]] {
        let out = t.run(args);
        assert_eq!(out.code, 1, "{}", out.stderr);
        assert!(out.stderr.contains("password-policy"), "{}", out.stderr);
        keep(&args.join(" "), out);
    }
    keep("history", t.ok(["history"]));
    keep("history json", t.ok(["history", "--format", "json"]));
    keep("history 1", t.ok(["history", "1"]));
    keep("history 2 json", t.ok(["history", "2", "--format", "json"]));
    keep("status", t.ok(["status"]));
    keep("status json", t.ok(["status", "--format", "json"]));
    keep("export", t.ok(["export"]));
    keep(
        "devices list",
        t.ok(["devices", "list", "--format", "json"]),
    );
    outputs.push(("saved plan".into(), t.read("p.json")));

    // Stored as 16 bytes; as text they would show as hex.
    let sip = t.sql("SELECT lower(hex(sip_secret)) FROM extensions");
    let hashes = t.sql("SELECT hash FROM passwords");
    assert_eq!(sip.len(), 3);
    assert!(
        sip.iter()
            .all(|s| s.len() == 32 && s.chars().all(|c| c.is_ascii_hexdigit())),
        "{sip:?}"
    );
    assert_ne!(sip[0], sip[1], "a secret per extension");
    assert_eq!(hashes.len(), 3);
    let mut secrets: Vec<&str> = PASSWORDS.to_vec();
    secrets.extend(sip.iter().map(String::as_str));
    secrets.extend(hashes.iter().map(String::as_str));
    for (what, text) in &outputs {
        for secret in &secrets {
            assert!(!text.contains(secret), "{what} contains {secret}:\n{text}");
        }
        assert!(!text.contains("$argon2"), "{what} contains a hash:\n{text}");
    }
    // The plan did show that passwords are set.
    assert!(outputs[0].1.contains("password: (sensitive)"));
}

#[test]
fn the_state_file_is_private_and_holds_no_plaintext_password() {
    let t = Test::repo();
    t.commit_csv(format!(
        "{HEADER}1001,Jason,Flynn,jflynn,{},,,,,\n",
        PASSWORDS[0]
    ));
    t.apply(&[]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(t.state()).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "state file mode {mode:o}");
    let mut bytes = std::fs::read(t.state()).unwrap();
    for suffix in ["-wal", "-shm"] {
        if let Ok(more) = std::fs::read(t.path(&format!(".pbxsync/state.db{suffix}"))) {
            bytes.extend(more);
        }
    }
    let needle = PASSWORDS[0].as_bytes();
    assert!(
        !bytes.windows(needle.len()).any(|w| w == needle),
        "plaintext password in the state file"
    );
}

#[test]
fn history_blanks_the_password_column_wherever_the_header_puts_it() {
    let t = Test::repo();
    t.commit_csv(format!(
        "Password;Extension;First Name;Last Name;Web Username\n{};1001;Jason;Flynn;jflynn\n",
        PASSWORDS[1]
    ));
    t.apply(&[]);
    let one = t.ok(["history", "1"]).stdout;
    assert!(
        one.ends_with(
            "Password;Extension;First Name;Last Name;Web Username\n;1001;Jason;Flynn;jflynn\n"
        ),
        "{one}"
    );
    assert!(!one.contains(PASSWORDS[1]));
}
