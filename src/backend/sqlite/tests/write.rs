//! Applies: what they write, in one transaction, with the digests and triggers right.

use super::*;

#[test]
fn an_apply_is_checkpointed_into_the_file_apart_and_writes_stay_possible() {
    let (dir, mut target) = seeded();
    let wal = dir.path().join("state.db-wal");
    target.settle();
    assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0);

    // The commit leaves the apply's pages in the WAL for the checkpoint
    // apart, which empties it; meanwhile the target reads them as usual.
    apply(&mut target, vec![create_user("dave", "Dave")]).unwrap();
    assert!(
        target
            .load()
            .unwrap()
            .users
            .iter()
            .any(|u| u.username == "dave")
    );
    target.settle();
    assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0);
    let other = Connection::open(dir.path().join("state.db")).unwrap();
    let names: i64 = other
        .query_row(
            "SELECT count(*) FROM users WHERE username = 'dave'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(names, 1);

    // The next apply waits for the checkpoint, and afterwards SQLite's own
    // checkpoints are back on for other writes.
    apply(&mut target, vec![create_user("erin", "Erin")]).unwrap();
    apply(&mut target, vec![create_user("frank", "Frank")]).unwrap();
    let auto: i64 = target
        .conn
        .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
        .unwrap();
    assert_eq!(auto, WAL_AUTOCHECKPOINT);
    drop(other);
    drop(target);
    assert!(!wal.exists());
    let names: i64 = Connection::open(dir.path().join("state.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .unwrap();
    assert_eq!(names, 6);
}

#[test]
fn applied_actions_show_in_the_directory() {
    let (_dir, mut target) = seeded();
    let d = target.load().unwrap();
    assert_eq!(
        d.users
            .iter()
            .map(|u| u.username.as_str())
            .collect::<Vec<_>>(),
        ["alice", "bob", "carol"]
    );
    let alice = d.user("alice").unwrap();
    assert_eq!(
        alice.fields,
        [t("Alice"), t(""), t("alice@example.com"), t(""), t("")]
    );
    assert_eq!(
        ext(&d, "1001"),
        (
            "alice".into(),
            ExtensionKind::Device,
            Some("D1".into()),
            "".into()
        )
    );
    assert_eq!(
        ext(&d, "1003"),
        ("carol".into(), ExtensionKind::Virtual, None, "".into())
    );
    assert_eq!(d.devices.len(), 3);
    assert_eq!(d.device("D1").unwrap().model, "T46U");

    let hashes = FastMap::from_iter([(t("alice"), "$argon2id$v=19$secret".to_owned())]);
    let report = apply_with(
        &mut target,
        vec![
            Action::UpdateUser {
                username: t("alice"),
                changes: vec![
                    Change::new("last_name", Some(""), "Smith"),
                    Change::password(),
                ],
            },
            Action::UpdateExtension {
                username: t("carol"),
                extension: t("1003"),
                kind: ExtensionKind::Device,
                device: Some(t("D3")),
                changes: vec![
                    Change::new("description", Some(""), "Reception"),
                    Change::new("kind", Some("virtual"), "device"),
                    Change::new("device", Some(""), "D3"),
                ],
            },
            Action::AddExtension {
                username: t("bob"),
                extension: t("99"),
                kind: ExtensionKind::VoicemailOnly,
                device: None,
                changes: vec![Change::new("description", None, "Mailbox")],
            },
            Action::RemoveExtension {
                username: t("alice"),
                extension: t("1001"),
                device: Some(t("D1")),
            },
            Action::RemoveUser {
                username: t("alice"),
            },
        ],
        &hashes,
    )
    .unwrap();
    assert_eq!(report.serial, target.serial().unwrap());
    let d = target.load().unwrap();
    assert!(d.user("alice").is_none());
    assert!(d.extension("1001").is_none());
    assert_eq!(
        ext(&d, "1003"),
        (
            "carol".into(),
            ExtensionKind::Device,
            Some("D3".into()),
            "Reception".into()
        )
    );
    assert_eq!(
        ext(&d, "99"),
        (
            "bob".into(),
            ExtensionKind::VoicemailOnly,
            None,
            "Mailbox".into()
        )
    );
    let order: Vec<_> = d.extensions.iter().map(|e| e.number.as_str()).collect();
    assert_eq!(order, ["99", "1002", "1003"]);

    // Secrets are stored, but only in the database.
    let secret: Vec<u8> = target
        .conn
        .query_row(
            "SELECT sip_secret FROM extensions WHERE number = '99'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(secret.len(), 16);
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let history = serde_json::to_string(&target.history().unwrap()).unwrap();
    assert!(!history.contains("argon2") && !history.contains(&hex));

    let last = target.last_applied().unwrap().unwrap();
    assert_eq!(last.commit.as_deref(), Some("abc"));
    assert_eq!(last.blob, "b10b");
    assert_eq!(
        (last.serial, last.history_id),
        (report.serial, report.history_id)
    );
}

#[test]
fn a_password_update_needs_its_hash() {
    let (_dir, mut target) = seeded();
    let err = apply(
        &mut target,
        vec![Action::UpdateUser {
            username: t("bob"),
            changes: vec![Change::password()],
        }],
    )
    .unwrap_err();
    assert!(
        matches!(&err, BackendError::ActionFailed { index: 0, action, .. } if action == "update_user bob"),
        "{err}"
    );
}

#[test]
fn created_users_get_their_password_hash() {
    let (_dir, mut target) = seeded();
    let hashes = FastMap::from_iter([(t("dave"), "$argon2id$dave".to_owned())]);
    let mut create = create_user("dave", "Dave");
    if let Action::CreateUser { changes, .. } = &mut create {
        changes.push(Change::password());
    }
    apply_with(&mut target, vec![create], &hashes).unwrap();
    let hash: Option<String> = target
        .conn
        .query_row(
            "SELECT hash FROM passwords JOIN users ON users.id = user_id WHERE username = 'dave'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(hash.as_deref(), Some("$argon2id$dave"));
}

#[test]
fn two_extensions_swap_their_devices_in_one_plan() {
    let (_dir, mut target) = seeded();
    apply(
        &mut target,
        vec![
            reassign("D2", "1002", "1001", ExtensionKind::Device),
            reassign("D1", "1001", "1002", ExtensionKind::Device),
        ],
    )
    .unwrap();
    let d = target.load().unwrap();
    assert_eq!(ext(&d, "1001").2.as_deref(), Some("D2"));
    assert_eq!(ext(&d, "1002").2.as_deref(), Some("D1"));

    // The same swap spelled as two updates, the conflicting one first.
    apply(
        &mut target,
        ["1001", "1002"]
            .into_iter()
            .zip(["D1", "D2"])
            .zip(["alice", "bob"])
            .map(|((number, device), username)| Action::UpdateExtension {
                username: t(username),
                extension: t(number),
                kind: ExtensionKind::Device,
                device: Some(t(device)),
                changes: vec![Change::new(
                    "device",
                    Some(if device == "D1" { "D2" } else { "D1" }),
                    device,
                )],
            })
            .collect(),
    )
    .unwrap();
    let d = target.load().unwrap();
    assert_eq!(ext(&d, "1001").2.as_deref(), Some("D1"));
    assert_eq!(ext(&d, "1002").2.as_deref(), Some("D2"));
}

#[test]
fn a_device_moves_to_a_new_extension() {
    let (_dir, mut target) = seeded();
    apply(
        &mut target,
        vec![
            add_extension("alice", "1005", Some("D1")),
            reassign("D1", "1001", "1005", ExtensionKind::VoicemailOnly),
        ],
    )
    .unwrap();
    let d = target.load().unwrap();
    assert_eq!(ext(&d, "1001").1, ExtensionKind::VoicemailOnly);
    assert_eq!(ext(&d, "1001").2, None);
    assert_eq!(ext(&d, "1005").2.as_deref(), Some("D1"));
}

#[test]
fn a_failing_action_writes_nothing() {
    let (_dir, mut target) = seeded();
    let before = (
        target.load().unwrap(),
        target.serial().unwrap(),
        target.history().unwrap(),
    );
    let mut events = vec![];
    let actions: Vec<_> = vec![
        create_device("D9"),
        create_user("dave", "Dave"),
        Action::RemoveExtension {
            username: t("bob"),
            extension: t("1002"),
            device: Some(t("D2")),
        },
        add_extension("nobody", "1009", None),
    ]
    .into_iter()
    .map(planned)
    .collect();
    let request = ApplyRequest {
        inventory: None,
        pruned: false,
        kept: None,
        digests: &[],
        actions: &actions,
        expected_serial: before.1,
        password_hashes: &FastMap::default(),
        record: Box::new(|| record(&actions)),
    };
    let err = target.apply(request, &mut |p| events.push(p)).unwrap_err();
    match &err {
        BackendError::ActionFailed {
            index,
            action,
            reason,
        } => {
            assert_eq!(*index, 3);
            assert_eq!(action, "add_extension 1009");
            assert!(reason.contains("nobody"), "{reason}");
        }
        other => panic!("{other}"),
    }
    assert_eq!(events[0], Progress::Started { total: 4 });
    assert!(!events.contains(&Progress::Committing));
    let after = (
        target.load().unwrap(),
        target.serial().unwrap(),
        target.history().unwrap(),
    );
    assert_eq!(before, after);
}

#[test]
fn progress_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut target = SqliteTarget::open(&dir.path().join("s.db")).unwrap();
    let actions: Vec<_> = (0..2500)
        .map(|i| planned(create_user(&format!("u{i}"), "U")))
        .collect();
    let mut events = vec![];
    let request = ApplyRequest {
        inventory: None,
        pruned: false,
        kept: None,
        digests: &[],
        actions: &actions,
        expected_serial: 0,
        password_hashes: &FastMap::default(),
        record: Box::new(|| record(&actions)),
    };
    target.apply(request, &mut |p| events.push(p)).unwrap();
    assert_eq!(events.first(), Some(&Progress::Started { total: 2500 }));
    assert_eq!(events.last(), Some(&Progress::Committing));
    assert!(events.contains(&Progress::Step {
        done: 2000,
        total: 2500,
        step: "create_user u1999".into()
    }));
}

#[test]
fn a_plan_keeps_the_ids_of_the_users_it_read_for_its_apply() {
    let (dir, mut target) = seeded();
    let keys = crate::backend::Keys {
        users: vec![t("bob"), t("nobody")],
        ..Default::default()
    };
    target.load_subset(&keys).unwrap();
    let serial = target.serial().unwrap();
    let read = target.read_users.as_ref().unwrap();
    let other = Connection::open(dir.path().join("state.db")).unwrap();
    let bob: i64 = other
        .query_row("SELECT id FROM users WHERE username = 'bob'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(read.serial, serial);
    assert_eq!(read.ids.len(), 1);
    assert_eq!(read.ids.get("bob"), Some(&bob));
    assert_eq!(read.extensions, [(bob, t("1002"))]);

    // Another program gives bob a new id: the ids read before are stale, and
    // the apply looks bob up again.
    other
        .execute_batch(
            "DELETE FROM extensions WHERE number = '1002';
             DELETE FROM users WHERE username = 'bob';
             INSERT INTO users (id, username, first_name) VALUES (42, 'bob', 'Bob');",
        )
        .unwrap();
    apply(
        &mut target,
        vec![
            Action::UpdateUser {
                username: t("bob"),
                changes: vec![Change::new("first_name", Some("Bob"), "Robert")],
            },
            add_extension("bob", "1002", Some("D2")),
        ],
    )
    .unwrap();
    let (first_name, extension_owner): (String, i64) = other
        .query_row(
            "SELECT u.first_name, e.user_id FROM users AS u \
             JOIN extensions AS e ON e.number = '1002' WHERE u.username = 'bob'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((first_name.as_str(), extension_owner), ("Robert", 42));
    assert!(target.read_users.is_none(), "an apply uses the ids once");
}

#[test]
fn an_apply_keeps_the_triggers_for_the_writes_of_others() {
    let (dir, mut target) = seeded();
    let triggers = |conn: &Connection| -> Vec<(String, String)> {
        conn.prepare("SELECT name, sql FROM sqlite_schema WHERE type = 'trigger' ORDER BY name")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    };
    let other = Connection::open(dir.path().join("state.db")).unwrap();
    let own = triggers(&other);
    let mut names: Vec<&str> = own.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    let mut expected = OWN_TRIGGERS.to_vec();
    expected.sort();
    assert_eq!(
        names, expected,
        "OWN_TRIGGERS names every trigger of the schema"
    );

    let before = target.serial().unwrap();
    let actions = vec![
        planned(create_user("dave", "Dave")),
        planned(add_extension("dave", "1500", None)),
    ];
    let digests = [(t("1500"), 42u64)];
    let request = ApplyRequest {
        inventory: None,
        pruned: false,
        kept: None,
        digests: &digests,
        actions: &actions,
        expected_serial: before,
        password_hashes: &FastMap::default(),
        record: Box::new(|| record(&actions)),
    };
    target.apply(request, &mut |_| {}).unwrap();
    let applied = target.serial().unwrap();
    assert!(applied > before, "an apply bumps the serial");
    assert_eq!(triggers(&other), own, "the same triggers after the apply");
    let digest = |conn: &Connection| -> Option<i64> {
        conn.query_row(
            "SELECT row_digest FROM extensions WHERE number = '1500'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert_eq!(digest(&other), Some(42));

    // A write by something else still counts and still makes the digest stale.
    other
        .execute(
            "UPDATE users SET first_name = 'David' WHERE username = 'dave'",
            [],
        )
        .unwrap();
    assert!(target.serial().unwrap() > applied);
    assert_eq!(digest(&other), None);
}

#[test]
fn writes_of_an_apply_make_the_digests_they_touch_stale() {
    // The extensions of updated users are found by a query, or among those a
    // plan read.
    for plan_read_the_users in [false, true] {
        let (dir, mut target) = seeded();
        let conn = Connection::open(dir.path().join("state.db")).unwrap();
        let digests = [(t("1001"), 1u64), (t("1002"), 2u64), (t("1003"), 3u64)];
        let serial = target.serial().unwrap();
        let request = ApplyRequest {
            inventory: None,
            pruned: false,
            kept: None,
            digests: &digests,
            actions: &[],
            expected_serial: serial,
            password_hashes: &FastMap::default(),
            record: Box::new(|| record(&[])),
        };
        target.apply(request, &mut |_| {}).unwrap();
        if plan_read_the_users {
            let keys = crate::backend::Keys {
                users: vec![t("alice"), t("bob")],
                ..Default::default()
            };
            target.load_subset(&keys).unwrap();
            let read = target.read_users.as_ref().unwrap();
            assert_eq!(read.extensions.len(), 2);
        }
        // Alice changes (a user field), bob's extension changes, carol's row stays.
        let actions = vec![
            planned(Action::UpdateUser {
                username: t("alice"),
                changes: vec![Change::new("email", None, "alice@example.com")],
            }),
            planned(Action::UpdateExtension {
                username: t("bob"),
                extension: t("1002"),
                kind: ExtensionKind::Virtual,
                device: None,
                changes: vec![],
            }),
        ];
        let serial = target.serial().unwrap();
        let request = ApplyRequest {
            inventory: None,
            pruned: false,
            kept: None,
            digests: &[],
            actions: &actions,
            expected_serial: serial,
            password_hashes: &FastMap::default(),
            record: Box::new(|| record(&actions)),
        };
        let report = target.apply(request, &mut |_| {}).unwrap();
        assert_eq!(report.cleared, [t("1001")]);
        let stored: Vec<(String, Option<i64>)> = conn
            .prepare("SELECT number, row_digest FROM extensions ORDER BY number")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            stored,
            [
                ("1001".to_string(), None),
                ("1002".to_string(), None),
                ("1003".to_string(), Some(3))
            ]
        );
    }
}

#[test]
fn the_kind_constraint_holds_without_an_in_list() {
    let (dir, _target) = seeded();
    let conn = Connection::open(dir.path().join("state.db")).unwrap();
    let sql: String = conn
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE name = 'extensions'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        sql.contains("CHECK (kind = 'device' OR kind = 'virtual' OR kind = 'voicemail_only')"),
        "{sql}"
    );
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let bad = conn.execute(
        "UPDATE extensions SET kind = 'fax' WHERE number = '1003'",
        [],
    );
    assert!(is_constraint(
        &bad.unwrap_err(),
        rusqlite::ffi::SQLITE_CONSTRAINT_CHECK
    ));
    conn.execute(
        "UPDATE extensions SET kind = 'voicemail_only' WHERE number = '1003'",
        [],
    )
    .unwrap();
}

#[test]
fn sip_secrets_are_distinct_across_batches() {
    let mut secrets = Secrets::default();
    let drawn: HashSet<[u8; 16]> = (0..3 * Secrets::BATCH + 1)
        .map(|_| secrets.next().ok().unwrap())
        .collect();
    assert_eq!(drawn.len(), 3 * Secrets::BATCH + 1);
}

#[test]
fn the_backend_and_simulate_agree_on_reassignments_and_prunes() {
    let (_dir, mut target) = seeded();
    let before = target.load().unwrap();
    // In an order that would break the rules run as listed: the pruned user
    // first, a device taken before its holder lets go of it.
    let actions: Vec<PlannedAction> = [
        Action::RemoveUser {
            username: t("carol"),
        },
        reassign("D2", "1002", "1004", ExtensionKind::Device),
        reassign("D1", "1001", "1002", ExtensionKind::VoicemailOnly),
        Action::RemoveExtension {
            username: t("carol"),
            extension: t("1003"),
            device: None,
        },
        add_extension("dave", "1004", None),
        create_user("dave", "Dave"),
        Action::UpdateUser {
            username: t("alice"),
            changes: vec![Change::new("mobile", Some(""), "555")],
        },
        Action::UpdateExtension {
            username: t("alice"),
            extension: t("1001"),
            kind: ExtensionKind::VoicemailOnly,
            device: None,
            changes: vec![Change::new("description", Some(""), "Mailbox")],
        },
        create_device("D4"),
    ]
    .into_iter()
    .map(planned)
    .collect();
    let expected = crate::plan::simulate::apply(&before, &actions);
    apply_with(
        &mut target,
        actions.into_iter().map(|p| p.action).collect(),
        &FastMap::default(),
    )
    .unwrap();
    let after = target.load().unwrap();
    assert_eq!(after, expected);
    assert_eq!(ext(&after, "1001").1, ExtensionKind::VoicemailOnly);
    assert_eq!(ext(&after, "1002").2.as_deref(), Some("D1"));
    assert_eq!(ext(&after, "1004").2.as_deref(), Some("D2"));
    assert!(after.extension("1003").is_none());
}

/// `cargo test --release --lib backend::sqlite -- --ignored --nocapture`
#[test]
#[ignore]
fn performance() {
    let dir = tempfile::tempdir().unwrap();
    let mut target = SqliteTarget::open(&dir.path().join("state.db")).unwrap();
    let n = 100_000;
    let mut actions = vec![];
    for i in 0..n / 2 {
        actions.push(create_user(&format!("user{i:07}"), "First"));
        actions.push(add_extension(
            &format!("user{i:07}"),
            &format!("{}", 10_000 + i),
            None,
        ));
    }
    let started = std::time::Instant::now();
    apply(&mut target, actions).unwrap();
    eprintln!("apply of {n} actions: {:?}", started.elapsed());

    let big = 1_000_000;
    let started = std::time::Instant::now();
    let actions: Vec<_> = (n / 2..big)
        .flat_map(|i| {
            [
                create_user(&format!("user{i:07}"), "First"),
                add_extension(&format!("user{i:07}"), &format!("{}", 10_000 + i), None),
            ]
        })
        .collect();
    apply(&mut target, actions).unwrap();
    eprintln!(
        "apply of {} actions: {:?}",
        2 * (big - n / 2),
        started.elapsed()
    );
    let started = std::time::Instant::now();
    let d = target.load().unwrap();
    eprintln!("load of {} users: {:?}", d.users.len(), started.elapsed());
    assert_eq!(d.extensions.len(), big);

    // 100,000 changes against the big directory.
    let actions: Vec<_> = (0..n / 2)
        .flat_map(|i| {
            let i = i * 19;
            [
                Action::UpdateUser {
                    username: t(&format!("user{i:07}")),
                    changes: vec![Change::new("mobile", Some(""), "555")],
                },
                Action::UpdateExtension {
                    username: t(&format!("user{i:07}")),
                    extension: t(&format!("{}", 10_000 + i)),
                    kind: ExtensionKind::VoicemailOnly,
                    device: None,
                    changes: vec![Change::new("description", Some(""), "Mailbox")],
                },
            ]
        })
        .collect();
    let started = std::time::Instant::now();
    apply(&mut target, actions).unwrap();
    eprintln!("apply of {n} updates to {big}: {:?}", started.elapsed());
}
