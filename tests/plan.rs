//! `pbxsync plan --format json` against a real target: the reconcile rules of SPEC
//! section 3, one or more tests each, plus the device hint and the safety threshold.

use crate::support::{DEV_A, DEV_B, HASH, HEADER, Test, actions, codes, types};
use serde_json::{Value, json};

/// Two users, three extensions: a device, a virtual one, a voicemail-only one.
fn base() -> String {
    format!(
        "{HEADER}\
1001,Jason,Flynn,jflynn,Sec_ret12,Desk,jason@example.com,,,{DEV_A}\n\
1002,Maria,Garcia,mgarcia,Pass_word34,,,,,virtual\n\
1003,Maria,Garcia,mgarcia,,,,,,\n"
    )
}

/// A repository with `base()` committed and applied, and DEV_A, DEV_B in the inventory.
fn applied() -> Test {
    let t = Test::repo();
    t.devices(&[DEV_A, DEV_B]);
    t.commit_csv(base());
    t.apply(&[]);
    t
}

/// The first action of a type.
fn one<'a>(plan: &'a Value, kind: &str) -> &'a Value {
    let found = actions(plan, kind);
    assert_eq!(found.len(), 1, "{kind} in {plan:#}");
    found[0]
}

/// The actions without their source lines (and blame), for comparing plans.
fn without_lines(plan: &Value) -> Vec<Value> {
    plan["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let mut a = a.clone();
            let o = a.as_object_mut().unwrap();
            o.remove("line");
            o.remove("blame");
            a
        })
        .collect()
}

#[test]
fn rule_3_a_new_user_and_extension_are_created_together() {
    let t = Test::repo();
    t.commit_csv(format!(
        "{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,Desk,,,,virtual\n"
    ));
    let plan = t.plan_json(&[]);
    assert_eq!(types(&plan), ["create_user", "add_extension"]);
    let user = one(&plan, "create_user");
    assert_eq!(user["username"], "jflynn");
    assert_eq!(user["line"], 2);
    assert_eq!(
        user["changes"],
        json!([
            {"field": "first_name", "from": null, "to": "Jason"},
            {"field": "last_name", "from": null, "to": "Flynn"},
            {"field": "password", "sensitive": true},
        ])
    );
    let ext = one(&plan, "add_extension");
    assert_eq!(
        (
            &ext["extension"],
            &ext["username"],
            &ext["kind"],
            &ext["device"]
        ),
        (
            &json!("1001"),
            &json!("jflynn"),
            &json!("virtual"),
            &Value::Null
        )
    );
    assert_eq!(
        ext["changes"],
        json!([{"field": "description", "from": null, "to": "Desk"}])
    );
    assert_eq!(plan["summary"]["total"], 2);
    assert_eq!(plan["errors"], json!([]));
}

#[test]
fn a_header_row_or_none_gives_the_same_plan() {
    let t = Test::repo();
    t.devices(&[DEV_A]);
    let rows = base().strip_prefix(HEADER).unwrap().to_string();
    t.write("with.csv", base());
    t.write("without.csv", &rows);
    // The header may also reorder the columns and leave optional ones out.
    t.write(
        "reordered.csv",
        format!(
            "mac,username,ext,first name,last name,password,description,email\n\
{DEV_A},jflynn,1001,Jason,Flynn,Sec_ret12,Desk,jason@example.com\n\
virtual,mgarcia,1002,Maria,Garcia,Pass_word34,,\n\
,mgarcia,1003,Maria,Garcia,,,\n"
        ),
    );
    let with = t.plan_json(&["--file", "with.csv"]);
    let without = t.plan_json(&["--file", "without.csv"]);
    let reordered = t.plan_json(&["--file", "reordered.csv"]);
    assert_eq!(types(&with).len(), 5, "{with:#}");
    assert_eq!(without_lines(&with), without_lines(&without));
    assert_eq!(without_lines(&with), without_lines(&reordered));
    assert_eq!(with["actions"][0]["line"], 2);
    assert_eq!(without["actions"][0]["line"], 1);
}

#[test]
fn rule_1_an_existing_user_and_extension_get_only_what_differs() {
    let t = applied();
    t.commit_csv(base().replace(
        "1001,Jason,Flynn,jflynn,Sec_ret12,Desk,jason@example.com",
        "1001,Jasper,Flynn,jflynn,Sec_ret12,Front desk,jason@example.com",
    ));
    let plan = t.plan_json(&[]);
    assert_eq!(types(&plan), ["update_user", "update_extension"]);
    let user = one(&plan, "update_user");
    assert_eq!(user["username"], "jflynn");
    assert_eq!(
        user["changes"],
        json!([{"field": "first_name", "from": "Jason", "to": "Jasper"}]),
        "the unchanged password is not set again"
    );
    let ext = one(&plan, "update_extension");
    assert_eq!(
        ext["changes"],
        json!([{"field": "description", "from": "Desk", "to": "Front desk"}])
    );
    assert_eq!(
        (&ext["kind"], &ext["device"]),
        (&json!("device"), &json!(DEV_A))
    );
    t.apply(&[]);
    assert!(t.export().contains(&format!(
        "1001,Jasper,Flynn,jflynn,,Front desk,jason@example.com,,,{DEV_A}\n"
    )));
}

#[test]
fn rule_2_an_existing_user_gets_a_new_extension() {
    let t = applied();
    t.commit_csv(format!("{}1004,Jason,Flynn,jflynn,,,,,,\n", base()));
    let plan = t.plan_json(&[]);
    assert_eq!(types(&plan), ["add_extension"]);
    let ext = one(&plan, "add_extension");
    assert_eq!(
        (&ext["extension"], &ext["username"], &ext["line"]),
        (&json!("1004"), &json!("jflynn"), &json!(5))
    );
    t.apply(&[]);
    assert_eq!(t.status_json()["users"], 2);
}

#[test]
fn rule_4_an_extension_of_another_user_is_an_error_naming_the_owner() {
    let t = applied();
    t.commit_csv(format!(
        "{}1002,Wei,Chen,wchen,Wei_pass12,,,,,\n",
        base().replace("1002,Maria,Garcia,mgarcia,Pass_word34,,,,,virtual\n", "")
    ));
    let out = t.run(["plan", "--format", "json"]);
    assert_eq!(out.code, 1);
    let plan = out.json();
    assert_eq!(codes(&plan), ["extension-owned-by-other-user"]);
    let e = &plan["errors"][0];
    assert_eq!((&e["line"], &e["column"]), (&json!(4), &json!(1)));
    let message = e["message"].as_str().unwrap();
    assert!(
        message.contains("1002") && message.contains("mgarcia"),
        "{message}"
    );
    assert_eq!(
        plan["actions"],
        json!([]),
        "a plan with errors has no actions"
    );
    // As text, on stderr, with the line.
    let out = t.run(["plan"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("users.csv:4:1"), "{}", out.stderr);
}

#[test]
fn rule_5_virtual_frees_the_device() {
    let t = applied();
    t.commit_csv(base().replace(DEV_A, "virtual"));
    let plan = t.plan_json(&[]);
    assert_eq!(types(&plan), ["update_extension"]);
    let ext = one(&plan, "update_extension");
    assert_eq!(
        (&ext["kind"], &ext["device"]),
        (&json!("virtual"), &Value::Null)
    );
    assert_eq!(
        ext["changes"],
        json!([
            {"field": "kind", "from": "device", "to": "virtual"},
            {"field": "device", "from": DEV_A, "to": ""},
        ])
    );
    t.apply(&[]);
    let devices = t.ok(["devices", "list", "--format", "json"]).json();
    assert_eq!(
        devices[0],
        json!({"id": DEV_A, "model": "", "extension": null})
    );
}

#[test]
fn rule_6_a_blank_device_cell_is_voicemail_only_when_new_and_keeps_an_existing_device() {
    let t = applied();
    assert_eq!(
        t.exported("Device MAC Address")[2],
        "",
        "1003 is voicemail only"
    );
    t.commit_csv(base().replace(DEV_A, ""));
    let plan = t.plan_json(&[]);
    assert_eq!(types(&plan), Vec::<String>::new(), "{plan:#}");
    t.apply(&[]);
    assert!(
        t.export().contains(&format!(",,{DEV_A}\n")),
        "{}",
        t.export()
    );
}

#[test]
fn rule_7_a_moved_device_leaves_the_prior_extension_virtual() {
    let t = applied();
    // 1002 (mgarcia) takes DEV_A from 1001 (jflynn), whose cell is left blank.
    t.commit_csv(base().replace(DEV_A, "").replace(
        "Pass_word34,,,,,virtual",
        &format!("Pass_word34,,,,,{DEV_A}"),
    ));
    let plan = t.plan_json(&[]);
    assert_eq!(types(&plan), ["reassign_device"]);
    let r = one(&plan, "reassign_device");
    assert_eq!(r["device"], DEV_A);
    assert_eq!(r["username"], "mgarcia");
    assert_eq!(
        (&r["from_extension"], &r["to_extension"], &r["from_becomes"]),
        (&json!("1001"), &json!("1002"), &json!("virtual"))
    );
    assert_eq!(r["line"], 3);
    t.apply(&[]);
    let export = t.export();
    assert!(export.contains("1001,Jason,Flynn,jflynn,,Desk,jason@example.com,,,virtual\n"));
    assert!(export.contains(&format!("1002,Maria,Garcia,mgarcia,,,,,,{DEV_A}\n")));
    assert_eq!(t.plan_json(&[])["actions"], json!([]));
}

#[test]
fn rule_7_the_prior_extension_becomes_voicemail_only_when_configured() {
    let t = Test::repo_with(&format!(
        "policy: {{{HASH}, reassigned_extension_becomes: voicemail_only}}\n"
    ));
    t.devices(&[DEV_A]);
    t.commit_csv(base());
    t.apply(&[]);
    t.commit_csv(base().replace(DEV_A, "").replace(
        "Pass_word34,,,,,virtual",
        &format!("Pass_word34,,,,,{DEV_A}"),
    ));
    let plan = t.plan_json(&[]);
    assert_eq!(
        one(&plan, "reassign_device")["from_becomes"],
        "voicemail_only"
    );
    t.apply(&[]);
    assert_eq!(t.exported("Device MAC Address"), ["", DEV_A, ""]);
}

#[test]
fn rule_7_unless_the_same_csv_gives_the_prior_extension_a_device() {
    let t = applied();
    // 1001 swaps DEV_A for DEV_B, and 1002 takes DEV_A.
    t.commit_csv(base().replace(DEV_A, DEV_B).replace(
        "Pass_word34,,,,,virtual",
        &format!("Pass_word34,,,,,{DEV_A}"),
    ));
    let plan = t.plan_json(&[]);
    let r = one(&plan, "reassign_device");
    assert_eq!(
        (&r["from_extension"], &r["to_extension"], &r["from_becomes"]),
        (&json!("1001"), &json!("1002"), &json!("device"))
    );
    t.apply(&[]);
    assert_eq!(t.exported("Extension"), ["1001", "1002", "1003"]);
    assert_eq!(t.exported("Device MAC Address"), [DEV_B, DEV_A, ""]);
    // And the two swap back in one apply.
    t.commit_csv(base().replace(
        "Pass_word34,,,,,virtual",
        &format!("Pass_word34,,,,,{DEV_B}"),
    ));
    let plan = t.plan_json(&[]);
    assert_eq!(types(&plan), ["reassign_device", "reassign_device"]);
    t.apply(&[]);
    assert_eq!(t.exported("Device MAC Address"), [DEV_A, DEV_B, ""]);
}

#[test]
fn rule_7_a_new_extension_can_take_a_device_from_an_existing_one() {
    let t = applied();
    t.commit_csv(format!(
        "{}1005,Wei,Chen,wchen,Wei_pass12,,,,,{DEV_A}\n",
        base().replace(DEV_A, "")
    ));
    let plan = t.plan_json(&[]);
    let r = one(&plan, "reassign_device");
    assert_eq!(
        (&r["from_extension"], &r["to_extension"], &r["from_becomes"]),
        (&json!("1001"), &json!("1005"), &json!("virtual"))
    );
    t.apply(&[]);
    let export = t.export();
    assert!(
        export.contains(&format!("1005,Wei,Chen,wchen,,,,,,{DEV_A}\n")),
        "{export}"
    );
    assert!(
        export.contains("1001,Jason,Flynn,jflynn,,Desk,jason@example.com,,,virtual\n"),
        "{export}"
    );
}

#[test]
fn rule_8_the_same_extension_or_device_twice_names_both_lines() {
    let t = applied();
    t.commit_csv(format!(
        "{}1001,Jason,Flynn,jflynn,,,,,,\n1006,Wei,Chen,wchen,Wei_pass12,,,,,{DEV_A}\n",
        base()
    ));
    let out = t.run(["plan", "--format", "json"]);
    assert_eq!(out.code, 1);
    let plan = out.json();
    assert_eq!(codes(&plan), ["duplicate-extension", "duplicate-device"]);
    for (e, line) in plan["errors"].as_array().unwrap().iter().zip([5, 6]) {
        assert_eq!(e["line"], line);
        let message = e["message"].as_str().unwrap();
        assert!(message.contains("line 2"), "{message}");
    }
    assert_eq!(plan["actions"], json!([]));
}

#[test]
fn rule_9_a_new_user_needs_a_password() {
    let t = Test::repo();
    t.commit_csv(format!("{HEADER}1001,Jason,Flynn,jflynn,,,,,,\n"));
    let plan = t.plan_json(&[]);
    assert_eq!(codes(&plan), ["missing-required"]);
    assert_eq!(
        (&plan["errors"][0]["line"], &plan["errors"][0]["column"]),
        (&json!(2), &json!(5))
    );
}

#[test]
fn rule_10_licenses_are_counted_after_the_change() {
    let t = applied();
    t.ok(["licenses", "set", "--voicemail", "1"]);
    // One voicemail-only extension exists; 1004 would make two.
    t.commit_csv(format!("{}1004,Jason,Flynn,jflynn,,,,,,\n", base()));
    let out = t.run(["plan", "--format", "json"]);
    assert_eq!(out.code, 1);
    let plan = out.json();
    assert_eq!(codes(&plan), ["license-exceeded"]);
    let message = plan["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "not enough voicemail licenses: after this plan the directory needs 2 voicemail licenses, the limit is 1: 1 more needed"
        ),
        "{message}"
    );
    let before = t.export();
    assert_eq!(t.run(["apply", "--auto-approve"]).code, 1);
    assert_eq!(t.export(), before, "refused before anything is written");
    // Making it virtual uses a user license instead, of which there are enough.
    t.commit_csv(format!("{}1004,Jason,Flynn,jflynn,,,,,,virtual\n", base()));
    assert_eq!(codes(&t.plan_json(&[])), Vec::<String>::new());
    t.ok(["licenses", "set", "--users", "2"]);
    let plan = t.plan_json(&[]);
    assert_eq!(codes(&plan), ["license-exceeded"]);
    assert!(
        plan["errors"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("not enough user licenses"),
        "{plan:#}"
    );
    t.ok(["licenses", "set", "--users", "unlimited"]);
    assert_eq!(types(&t.plan_json(&[])), ["add_extension"]);
}

#[test]
fn rule_11_nothing_is_removed_without_prune() {
    let t = applied();
    t.commit_csv(format!(
        "{HEADER}1001,Jason,Flynn,jflynn,,Desk,jason@example.com,,,{DEV_A}\n"
    ));
    assert_eq!(t.plan_json(&[])["actions"], json!([]));
    let plan = t.plan_json(&["--prune"]);
    assert_eq!(
        types(&plan),
        ["remove_extension", "remove_extension", "remove_user"]
    );
    let removed = actions(&plan, "remove_extension");
    assert_eq!(
        (
            &removed[0]["extension"],
            &removed[0]["username"],
            &removed[0]["line"]
        ),
        (&json!("1002"), &json!("mgarcia"), &Value::Null)
    );
    assert_eq!(one(&plan, "remove_user")["username"], "mgarcia");
    let before = t.export();
    t.apply(&[]);
    assert_eq!(t.export(), before, "apply without --prune removes nothing");
    t.apply(&["--prune"]);
    assert_eq!(
        t.export(),
        format!("{HEADER}1001,Jason,Flynn,jflynn,,Desk,jason@example.com,,,{DEV_A}\n")
    );
    assert_eq!(t.exported("Web Username"), ["jflynn"]);
}

#[test]
fn rule_11_pruning_frees_the_device_of_a_removed_extension() {
    let t = applied();
    t.commit_csv(format!("{HEADER}1002,Maria,Garcia,mgarcia,,,,,,virtual\n"));
    let plan = t.plan_json(&["--prune"]);
    let removed = actions(&plan, "remove_extension");
    assert_eq!(removed[0]["extension"], "1001");
    assert_eq!(removed[0]["device"], DEV_A);
    t.apply(&["--prune"]);
    let devices = t.ok(["devices", "list", "--format", "json"]).json();
    assert_eq!(devices[0]["extension"], Value::Null);
    // `prune: true` in the config does the same without the flag.
    t.write(
        "pbxsync.yaml",
        format!("source: {{path: users.csv}}\nprune: true\npolicy: {{{HASH}}}\n"),
    );
    t.commit_csv(format!("{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,,,,,\n"));
    assert_eq!(
        types(&t.plan_json(&[])),
        [
            "create_user",
            "add_extension",
            "remove_extension",
            "remove_user"
        ]
    );
}

#[test]
fn rule_12_an_empty_csv_is_refused_unless_allowed() {
    let t = applied();
    let before = t.export();
    for empty in [HEADER, ""] {
        t.commit_csv(empty);
        let out = t.run(["plan", "--prune", "--format", "json"]);
        assert_eq!(out.code, 1, "{empty:?}");
        assert_eq!(codes(&out.json()), ["empty-desired-state"]);
        let out = t.run(["apply", "--auto-approve", "--prune"]);
        assert_eq!(out.code, 1);
        assert_eq!(t.export(), before);
    }
    assert_eq!(t.plan_json(&["--allow-empty"])["actions"], json!([]));
    let plan = t.plan_json(&["--allow-empty", "--prune"]);
    assert_eq!(plan["summary"]["remove_extension"], 3);
    assert_eq!(plan["summary"]["remove_user"], 2);
}

#[test]
fn rule_13_every_error_is_reported_in_one_run_with_its_line() {
    let t = applied();
    t.commit_csv(format!(
        "{HEADER}\
1001,Jason,Flynn,jflynn,,Desk,jason@example.com,,,{DEV_A}\n\
1004,Wei,Chen,wchen,Wei_pass12,,wei@,,,\n\
1002,Aisha,Khan,akhan,Aisha_pw12,,,,,\n\
1005,Lars,Berg,lberg,,,,,,\n\
1006,Lars,Berg,lberg2,Lars_pw12,,,,,0004F2999999\n"
    ));
    let before = t.export();
    let out = t.run(["plan", "--format", "json"]);
    assert_eq!(out.code, 1);
    let plan = out.json();
    let found: Vec<(String, u64, Option<u64>)> = plan["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["code"].as_str().unwrap().to_string(),
                e["line"].as_u64().unwrap(),
                e["column"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            ("bad-email".to_string(), 3, Some(7)),
            ("extension-owned-by-other-user".to_string(), 4, Some(1)),
            ("missing-required".to_string(), 5, Some(5)),
            ("device-not-found".to_string(), 6, Some(10)),
        ]
    );
    assert_eq!(plan["actions"], json!([]));
    let out = t.run(["apply", "--auto-approve"]);
    assert_eq!(out.code, 1);
    assert_eq!(t.export(), before);
}

#[test]
fn device_not_found_suggests_the_mac_an_o_for_zero_slip_meant() {
    let t = Test::repo();
    t.devices(&[DEV_A]);
    t.commit_csv(format!(
        "{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,,,,,OOO4F2OOOOO1\n1002,Wei,Chen,wchen,Wei_pass12,,,,,0004F2777777\n"
    ));
    let plan = t.plan_json(&[]);
    assert_eq!(codes(&plan), ["device-not-found", "device-not-found"]);
    let e = &plan["errors"][0];
    assert_eq!((&e["line"], &e["column"]), (&json!(2), &json!(10)));
    assert_eq!(e["hint"], format!("did you mean {DEV_A}?"));
    let other = plan["errors"][1]["hint"].as_str().unwrap();
    assert!(!other.contains("did you mean"), "{other}");
    // Without any target yet, every device is unknown.
    let fresh = Test::repo();
    fresh.commit_csv(format!(
        "{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,,,,,{DEV_A}\n"
    ));
    assert_eq!(codes(&fresh.plan_json(&[])), ["device-not-found"]);
}

#[test]
fn devices_of_the_inventory_file_are_created_by_the_plan() {
    let t = Test::repo_with(&format!("inventory: devices.csv\npolicy: {{{HASH}}}\n"));
    t.write("devices.csv", format!("id,model\n{DEV_A},VVX 450\n"));
    t.commit_csv(format!(
        "{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,,,,,{DEV_A}\n"
    ));
    let plan = t.plan_json(&[]);
    assert_eq!(
        types(&plan),
        ["create_device", "create_user", "add_extension"]
    );
    assert_eq!(
        (&plan["actions"][0]["device"], &plan["actions"][0]["model"]),
        (&json!(DEV_A), &json!("VVX 450"))
    );
    t.apply(&[]);
    assert_eq!(t.plan_json(&[])["actions"], json!([]));
}

#[test]
fn with_an_inventory_file_an_unchanged_plan_reads_no_rows_until_the_file_changes() {
    let t = Test::repo_with(&format!("inventory: devices.csv\npolicy: {{{HASH}}}\n"));
    let one = format!("id,model\n{DEV_A},VVX 450\n");
    let two = format!("{one}{DEV_B},VVX 450\n");
    t.write("devices.csv", &one);
    t.commit_csv(format!(
        "{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,,,,,{DEV_A}\n"
    ));
    t.apply(&[]);
    assert!(t.took_shortcut(&["plan"]));
    // A device added to the file is planned; once applied, the shortcut is back.
    t.write("devices.csv", &two);
    assert!(!t.took_shortcut(&["plan"]));
    assert_eq!(types(&t.plan_json(&[])), ["create_device"]);
    t.apply(&[]);
    assert!(t.took_shortcut(&["plan"]));
    // Removed behind pbxsync's back: the serial moved, the device is planned again.
    t.ok(["devices", "remove", DEV_B]);
    assert_eq!(types(&t.plan_json(&[])), ["create_device"]);
    t.apply(&[]);
    // The same content written again is the same file.
    t.write("devices.csv", &two);
    assert!(t.took_shortcut(&["plan"]));
    // Back to the first file: nothing to create (devices are never removed), but
    // the file is not the one applied, so the plan is made to say so.
    t.write("devices.csv", &one);
    let out = t.ok(["plan"]);
    assert!(
        out.stdout
            .starts_with("No changes. The target matches the desired state."),
        "{}",
        out.stdout
    );
    assert!(!t.took_shortcut(&["plan"]));
    // A file that is gone is an error, not a shortcut.
    std::fs::remove_file(t.path("devices.csv")).unwrap();
    let out = t.run(["plan"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("cannot read the inventory file"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_pruning_plan_takes_the_shortcut_only_after_a_pruning_apply() {
    let t = Test::repo();
    let plan = |args: &[&str]| {
        let mut all = vec!["plan"];
        all.extend(args);
        t.took_shortcut(&all)
    };
    t.commit_csv(format!(
        "{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,,,,,virtual\n1002,Wei,Chen,wchen,Pass_word56,,,,,virtual\n"
    ));
    t.apply(&[]);
    // wchen's row goes, and jflynn's description changes (an apply with
    // nothing to do records nothing).
    t.commit_csv(format!(
        "{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,Desk,,,,virtual\n"
    ));
    t.apply(&[]);
    // Not pruned: wchen is still there, so a pruning plan must look. A plan
    // without pruning need not (with `-v`, which names wchen, it reads the rows).
    assert!(t.answers_without_the_csv(&["plan"]));
    assert!(!plan(&[]));
    assert!(!plan(&["--prune"]));
    assert_eq!(
        types(&t.plan_json(&["--prune"])),
        ["remove_extension", "remove_user"]
    );
    // Pruned: nothing the CSV leaves out is left, for either plan.
    t.apply(&["--prune"]);
    assert!(plan(&["--prune"]));
    assert!(plan(&[]));
    assert!(!plan(&["--reset-passwords"]));
}

/// Ten extensions of one user, with descriptions `Desk 0`..`Desk 9`.
fn ten(changed: usize) -> String {
    let mut s = HEADER.to_string();
    for i in 0..10 {
        let desc = if i < changed { "Moved" } else { "Desk" };
        let pw = if i == 0 { "Sec_ret12" } else { "" };
        s.push_str(&format!(
            "10{i:02},Jason,Flynn,jflynn,{pw},{desc} {i},,,,\n"
        ));
    }
    s
}

#[test]
fn a_plan_changing_more_than_the_safety_limit_is_refused_unless_allowed() {
    let t = Test::repo();
    t.commit_csv(ten(0));
    t.apply(&[]);
    // 3 of 10 is the limit (30%), not over it.
    t.commit_csv(ten(3));
    assert_eq!(t.plan_json(&[])["summary"]["update_extension"], 3);
    t.commit_csv(ten(4));
    let out = t.run(["plan", "--format", "json"]);
    assert_eq!(out.code, 1);
    let plan = out.json();
    assert_eq!(codes(&plan), ["too-large-change"]);
    assert_eq!(plan["errors"][0]["line"], Value::Null);
    assert!(
        plan["errors"][0]["hint"]
            .as_str()
            .unwrap()
            .contains("--allow-large-change")
    );
    assert_eq!(t.run(["apply", "--auto-approve"]).code, 1);
    let plan = t.plan_json(&["--allow-large-change"]);
    assert_eq!(plan["summary"]["update_extension"], 4);
    t.apply(&["--allow-large-change"]);
    assert!(t.export().contains("1003,Jason,Flynn,jflynn,,Moved 3,"));
}

#[test]
fn the_safety_limit_needs_ten_existing_extensions() {
    let t = Test::repo();
    let nine: String = ten(0).lines().take(10).map(|l| format!("{l}\n")).collect();
    t.commit_csv(&nine);
    t.apply(&[]);
    t.commit_csv(nine.replace("Desk", "Moved"));
    let plan = t.plan_json(&[]);
    assert_eq!(codes(&plan), Vec::<String>::new());
    assert_eq!(plan["summary"]["update_extension"], 9);
}

#[test]
fn rule_1_an_extension_moves_to_a_free_device_and_a_voicemail_one_gets_one() {
    let t = applied();
    t.commit_csv(base().replace(DEV_A, DEV_B));
    let plan = t.plan_json(&[]);
    assert_eq!(types(&plan), ["update_extension"]);
    assert_eq!(
        plan["actions"][0]["changes"],
        json!([{"field": "device", "from": DEV_A, "to": DEV_B}])
    );
    t.apply(&[]);
    t.commit_csv(base().replace(DEV_A, DEV_B).replace(
        "1003,Maria,Garcia,mgarcia,,,,,,",
        &format!("1003,Maria,Garcia,mgarcia,,,,,,{DEV_A}"),
    ));
    let plan = t.plan_json(&[]);
    assert_eq!(types(&plan), ["update_extension"]);
    assert_eq!(
        plan["actions"][0]["changes"],
        json!([
            {"field": "kind", "from": "voicemail_only", "to": "device"},
            {"field": "device", "from": "", "to": DEV_A},
        ])
    );
    t.apply(&[]);
    assert_eq!(t.exported("Device MAC Address"), [DEV_B, "virtual", DEV_A]);
}

#[test]
fn rule_7_a_row_made_virtual_gives_its_device_to_another_row() {
    let t = applied();
    t.commit_csv(base().replace(DEV_A, "virtual").replace(
        "Pass_word34,,,,,virtual",
        &format!("Pass_word34,,,,,{DEV_A}"),
    ));
    let plan = t.plan_json(&[]);
    assert_eq!(types(&plan), ["update_extension", "reassign_device"]);
    assert_eq!(one(&plan, "reassign_device")["from_becomes"], "virtual");
    t.apply(&[]);
    assert_eq!(t.exported("Device MAC Address"), ["virtual", DEV_A, ""]);
}

#[test]
fn rule_11_a_device_of_a_pruned_extension_can_go_to_a_new_one() {
    let t = applied();
    t.commit_csv(format!(
        "{HEADER}1002,Maria,Garcia,mgarcia,,,,,,virtual\n1004,Maria,Garcia,mgarcia,,,,,,{DEV_A}\n"
    ));
    let plan = t.plan_json(&["--prune"]);
    assert_eq!(
        types(&plan),
        [
            "add_extension",
            "remove_extension",
            "remove_extension",
            "remove_user"
        ]
    );
    t.apply(&["--prune"]);
    assert_eq!(
        t.export(),
        format!(
            "{HEADER}1002,Maria,Garcia,mgarcia,,,,,,virtual\n1004,Maria,Garcia,mgarcia,,,,,,{DEV_A}\n"
        )
    );
    // Without --prune the device is reassigned and 1001 stays, virtual.
    let t = applied();
    t.commit_csv(format!(
        "{HEADER}1002,Maria,Garcia,mgarcia,,,,,,virtual\n1004,Maria,Garcia,mgarcia,,,,,,{DEV_A}\n"
    ));
    let plan = t.plan_json(&[]);
    assert_eq!(types(&plan), ["add_extension", "reassign_device"]);
    t.apply(&[]);
    assert!(
        t.export()
            .contains("1001,Jason,Flynn,jflynn,,Desk,jason@example.com,,,virtual\n")
    );
}

#[test]
fn a_column_the_header_leaves_out_is_kept_and_an_empty_one_is_cleared() {
    let t = applied();
    // No Email column: jflynn's email stays. An empty Description clears it.
    t.commit_csv(format!(
        "Extension,First Name,Last Name,Web Username,Description,Device MAC Address\n\
1001,Jason,Flynn,jflynn,,{DEV_A}\n\
1002,Maria,Garcia,mgarcia,,virtual\n\
1003,Maria,Garcia,mgarcia,,\n"
    ));
    let plan = t.plan_json(&[]);
    assert_eq!(types(&plan), ["update_extension"]);
    assert_eq!(
        plan["actions"][0]["changes"],
        json!([{"field": "description", "from": "Desk", "to": ""}])
    );
    t.apply(&[]);
    assert!(
        t.export().contains(&format!(
            "1001,Jason,Flynn,jflynn,,,jason@example.com,,,{DEV_A}\n"
        )),
        "{}",
        t.export()
    );
    // A present, empty Email column clears it.
    t.commit_csv(base().replace("jason@example.com", "").replace("Desk", ""));
    let plan = t.plan_json(&[]);
    assert_eq!(
        one(&plan, "update_user")["changes"],
        json!([{"field": "email", "from": "jason@example.com", "to": ""}])
    );
}
