//! The command line itself, as a new user types it: usage errors and their exit
//! code, what `--help` and `--format` offer, and the rough edges of the small
//! commands (devices, licenses, refusals, lookalike MACs, unavailable targets).

use crate::support::{DEV_A, HEADER, Test, codes};

/// A repository with one user on DEV_A, applied.
fn applied() -> Test {
    let t = Test::repo();
    t.devices(&[DEV_A]);
    t.commit_csv(format!(
        "{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,,,,,{DEV_A}\n1002,Jason,Flynn,jflynn,,,,,,virtual\n"
    ));
    t.apply(&[]);
    t
}

#[test]
fn a_command_line_that_cannot_be_parsed_exits_1_and_2_only_means_changes() {
    let t = applied();
    for args in [
        &["plan", "--bogus"][..],
        &["plan", "--detailed-exitcode", "--bogus"],
        &["plan", "--out"],
        &["plan", "--format", "yaml"],
        &["apply", "--rev", "HEAD", "--file", "users.csv"],
        &["history", "one"],
        &["frobnicate"],
        &[],
    ] {
        let out = t.run(args);
        assert_eq!(out.code, 1, "pbxsync {args:?}: {}", out.stderr);
        // A usage message that points at --help (or the help itself).
        assert!(out.stderr.contains("--help"), "{args:?}: {}", out.stderr);
        assert_eq!(out.stdout, "", "{args:?}");
    }
    let out = t.run(["plan", "--bogus"]);
    assert!(
        out.stderr.contains("unexpected argument '--bogus'"),
        "{}",
        out.stderr
    );
    // Help and version are answers, not errors.
    for args in [
        &["--help"][..],
        &["plan", "--help"],
        &["help", "apply"],
        &["--version"],
    ] {
        let out = t.run(args);
        assert_eq!(out.code, 0, "pbxsync {args:?}: {}", out.stderr);
        assert!(!out.stdout.is_empty(), "{args:?}");
    }
    // 2 is left to --detailed-exitcode: changes pending.
    t.commit_csv(format!(
        "{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,Sales,,,,{DEV_A}\n1002,Jason,Flynn,jflynn,,,,,,virtual\n"
    ));
    assert_eq!(t.run(["plan", "--detailed-exitcode"]).code, 2);
}

#[test]
fn init_help_shows_only_what_init_uses_and_refuses_the_rest() {
    let t = Test::new();
    let help = t.ok(["init", "--help"]).stdout;
    for unused in ["--config", "--target", "--color", "--verbose", "--format"] {
        assert!(!help.contains(unused), "{unused} in:\n{help}");
    }
    assert!(help.contains("--quiet") && help.contains("[DIR]"), "{help}");
    // The others still show the global flags.
    let help = t.ok(["plan", "--help"]).stdout;
    assert!(
        help.contains("--target") && help.contains("--config"),
        "{help}"
    );

    // Given anyway, they are refused rather than silently ignored.
    for args in [
        &["init", "office", "--target", "sqlite:elsewhere.db"][..],
        &["--config", "other.yaml", "init", "office"],
        &["init", "office", "-v"],
    ] {
        let out = t.run(args);
        assert_eq!(out.code, 1, "pbxsync {args:?}");
        assert!(
            out.stderr.contains("`init` does not use --"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(!t.path("office").exists(), "{args:?} wrote nothing");
    }
    // The environment is not the command line: PBXSYNC_TARGET set for the
    // other commands does not stop `init`.
    let out = crate::support::run(
        t.cmd()
            .args(["init", "office"])
            .env("PBXSYNC_TARGET", "sqlite:elsewhere.db"),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(t.path("office/pbxsync.yaml").is_file());
}

#[test]
fn markdown_is_for_plan_and_every_command_that_prints_data_speaks_json() {
    let t = applied();
    let md = t.ok(["plan", "--format", "markdown"]);
    assert!(!md.stdout.trim().is_empty());
    for command in [
        &["validate"][..],
        &["apply", "--auto-approve"],
        &["status"],
        &["history"],
        &["adopt"],
        &["watch", "--once"],
        &["devices", "list"],
        &["licenses", "show"],
    ] {
        let mut args = command.to_vec();
        args.extend(["--format", "markdown"]);
        let out = t.run(&args);
        assert_eq!(out.code, 1, "pbxsync {args:?}");
        assert!(
            out.stderr
                .contains("invalid value 'markdown' for '--format <FORMAT>'"),
            "{args:?}: {}",
            out.stderr
        );
    }
    for command in [
        &["validate"][..],
        &["plan"],
        &["apply", "--auto-approve"],
        &["status"],
        &["history"],
        &["history", "1"],
        &["adopt"],
        &["watch", "--once"],
        &["devices", "list"],
        &["licenses", "show"],
    ] {
        let mut args = command.to_vec();
        args.extend(["--format", "json"]);
        let out = t.ok(&args);
        // One document, or (watch) one per line.
        for line in out.stdout.lines().filter(|_| command[0] == "watch") {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("{args:?}: {e}: {line}"));
        }
        if command[0] != "watch" {
            out.json();
        }
    }
}

#[test]
fn adding_a_device_again_keeps_its_model_unless_one_is_given() {
    let t = Test::repo();
    let model = |t: &Test| {
        t.ok(["devices", "list", "--format", "json"]).json()[0]["model"]
            .as_str()
            .unwrap()
            .to_string()
    };
    t.ok(["devices", "add", DEV_A, "--model", "Yealink T46U"]);
    t.ok(["devices", "add", "00:04:f2:00:00:01"]);
    assert_eq!(model(&t), "Yealink T46U");
    t.ok(["devices", "add", DEV_A, "--model", "Polycom VVX 450"]);
    assert_eq!(model(&t), "Polycom VVX 450");
    // An import row without a model keeps it too.
    t.write("devices.csv", format!("id,model\n{DEV_A},\n"));
    t.ok(["devices", "import", "devices.csv"]);
    assert_eq!(model(&t), "Polycom VVX 450");
    // An empty --model is asked for: it clears the model.
    t.ok(["devices", "add", DEV_A, "--model", ""]);
    assert_eq!(model(&t), "");
}

#[test]
fn licenses_set_below_the_use_warns_and_the_plan_error_names_the_numbers() {
    let t = applied();
    // Two user licenses are in use (1001 on a device, 1002 virtual).
    let out = t.ok(["licenses", "set", "--users", "1"]);
    assert!(
        out.stderr.contains(
            "warning: 2 user licenses are in use, the new limit is 1: every plan is refused until the device or virtual extensions are down to 1 (1 fewer), or the limit is raised again"
        ),
        "{}",
        out.stderr
    );
    // Within the use: no warning.
    let out = t.ok(["licenses", "set", "--users", "8", "--voicemail", "0"]);
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);

    // Eight allowed, ten asked for.
    let mut csv = HEADER.to_string();
    for n in 1001..=1010 {
        csv.push_str(&format!("{n},Jason,Flynn,jflynn,Sec_ret12,,,,,virtual\n"));
    }
    t.commit_csv(csv);
    let out = t.run(["plan", "--format", "json"]);
    assert_eq!(out.code, 1);
    let plan = out.json();
    assert_eq!(codes(&plan), ["license-exceeded"]);
    assert_eq!(
        plan["errors"][0]["message"],
        "not enough user licenses: after this plan the directory needs 10 user licenses, the limit is 8: 2 more needed"
    );
    assert_eq!(
        plan["errors"][0]["hint"],
        "raise the limit with `pbxsync licenses set --users 10`, or make 2 fewer device or virtual extensions"
    );
}

#[test]
fn a_refusal_that_is_about_no_file_has_no_location_line() {
    let t = applied();
    t.commit_csv(format!(
        "{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,Sales,,,,{DEV_A}\n1002,Jason,Flynn,jflynn,,,,,,virtual\n"
    ));
    t.ok(["plan", "--out", "saved.json"]);
    // Something else writes the target: the saved plan is stale.
    t.ok(["devices", "add", "0004F2000009"]);
    let out = t.run(["apply", "saved.json"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .starts_with("error[stale-plan]: the target changed"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("-->"), "{}", out.stderr);
    assert!(
        out.stderr.contains("= help: run `pbxsync plan` again"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_mac_with_separators_and_an_o_for_a_zero_gets_the_hint() {
    let t = Test::repo();
    t.ok(["devices", "add", "0004F2AABB09"]);
    // With colons the cell is no MAC at all: refused by validate, with the MAC meant.
    t.commit_csv(format!(
        "{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,,,,,00:04:f2:aa:bb:O9\n"
    ));
    let out = t.run(["validate"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("error[bad-device]"), "{}", out.stderr);
    assert!(
        out.stderr.contains("help: did you mean 0004F2AABB09?"),
        "{}",
        out.stderr
    );
    // With dashes it reads as a soft-phone id the inventory lacks: the hint
    // names the MAC that exists.
    t.commit_csv(format!(
        "{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,,,,,00-04-f2-aa-bb-o9\n"
    ));
    let plan = t.plan_json(&[]);
    assert_eq!(codes(&plan), ["device-not-found"]);
    assert_eq!(plan["errors"][0]["hint"], "did you mean 0004F2AABB09?");
    // `devices add` says it too.
    let out = t.run(["devices", "add", "00:04:f2:aa:bb:O9"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("did you mean 0004F2AABB09?"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_unreachable_postgres_target_is_named_without_its_password() {
    let t = applied();
    // Port 1 on the loopback: nothing listens there, the refusal is immediate.
    let unreachable = "error: cannot connect to PostgreSQL at 127.0.0.1:1 (database pbx)";
    let out = t.run([
        "--target",
        "postgres://pbx:hunter22@127.0.0.1:1/pbx",
        "plan",
    ]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.starts_with(unreachable), "{}", out.stderr);
    assert!(!out.stderr.contains("hunter22"), "{}", out.stderr);
    // From the config, for every command that opens the target.
    t.write(
        "pbxsync.yaml",
        "source: {path: users.csv}\ntarget: postgresql://pbx:hunter22@127.0.0.1:1/pbx\n",
    );
    for args in [
        &["status"][..],
        &["apply", "--auto-approve"],
        &["devices", "list"],
    ] {
        let out = t.run(args);
        assert_eq!(out.code, 1, "{args:?}");
        assert!(
            out.stderr.starts_with(unreachable),
            "{args:?}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("hunter22"), "{}", out.stderr);
    }
    // `schema` belongs to a PostgreSQL target.
    t.write(
        "pbxsync.yaml",
        "source: {path: users.csv}\ntarget: sqlite:state.db\nschema: pbx\n",
    );
    let out = t.run(["plan"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("`schema` is for a `postgres://` target"),
        "{}",
        out.stderr
    );
    // An unknown scheme is told both kinds of target.
    t.write("pbxsync.yaml", "source: {path: users.csv}\n");
    let out = t.run(["--target", "mysql://db/pbx", "plan"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(
            "unknown target `mysql://db/pbx`: a target is `sqlite:PATH` (e.g. `sqlite:.pbxsync/state.db`) \
             or `postgres://USER@HOST:PORT/DATABASE`"
        ),
        "{}",
        out.stderr
    );
}
