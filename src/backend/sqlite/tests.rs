use super::schema::{APPLICATION_ID, MIGRATIONS, OWN_TRIGGERS};
use super::tuning::PAGE_SIZE;
use super::write::{Secrets, is_constraint};
use super::*;
use crate::backend::{ApplyLock, HistoryRecord, Inventory, Ledger, RecordedCsv, RowDigests};
use crate::model::{ExtensionKind, Licenses};
use crate::plan::{Action, Change, PlannedAction, Summary};
use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;

fn t(s: &str) -> Text {
    Text::from(s)
}

fn planned(action: Action) -> PlannedAction {
    PlannedAction {
        action,
        line: None,
        blame: None,
    }
}

fn record(actions: &[PlannedAction]) -> HistoryRecord {
    HistoryRecord {
        id: 0,
        time: "2025-01-01T00:00:00Z".into(),
        local_user: "tester".into(),
        git_author: Some("Ann <ann@example.com>".into()),
        source: "commit abc".into(),
        commit: Some("abc".into()),
        blob: "b10b".into(),
        summary: serde_json::to_value(Summary::of(actions)).unwrap(),
        outcome: "applied".into(),
        csv: RecordedCsv::new("Extension,Password\n1001,\n"),
    }
}

fn apply_with(
    target: &mut SqliteTarget,
    actions: Vec<Action>,
    hashes: &FastMap<Text, String>,
) -> Result<ApplyReport, BackendError> {
    let actions: Vec<_> = actions.into_iter().map(planned).collect();
    let expected_serial = target.serial().unwrap();
    let request = ApplyRequest {
        inventory: None,
        pruned: false,
        digests: &[],
        actions: &actions,
        expected_serial,
        password_hashes: hashes,
        record: Box::new(|| record(&actions)),
    };
    target.apply(request, &mut |_| {})
}

fn apply(target: &mut SqliteTarget, actions: Vec<Action>) -> Result<ApplyReport, BackendError> {
    apply_with(target, actions, &FastMap::default())
}

fn create_device(id: &str) -> Action {
    Action::CreateDevice {
        device: t(id),
        model: t("T46U"),
    }
}

fn create_user(username: &str, first: &str) -> Action {
    Action::CreateUser {
        username: t(username),
        changes: vec![
            Change::new("first_name", None, first),
            Change::new("email", None, &format!("{username}@example.com")),
        ],
    }
}

fn add_extension(username: &str, number: &str, device: Option<&str>) -> Action {
    Action::AddExtension {
        username: t(username),
        extension: t(number),
        kind: if device.is_some() {
            ExtensionKind::Device
        } else {
            ExtensionKind::Virtual
        },
        device: device.map(t),
        changes: vec![],
    }
}

fn reassign(device: &str, from: &str, to: &str, from_becomes: ExtensionKind) -> Action {
    Action::ReassignDevice {
        username: t("alice"),
        device: t(device),
        from_extension: t(from),
        to_extension: t(to),
        from_becomes,
    }
}

fn ext(dir: &Directory, number: &str) -> (String, ExtensionKind, Option<String>, String) {
    let e = dir.extension(number).expect("extension exists");
    (
        e.username.to_string(),
        e.kind,
        e.device.as_ref().map(|d| d.to_string()),
        e.description.to_string(),
    )
}

/// alice (1001 on D1), bob (1002 on D2), carol (1003 virtual).
fn seeded() -> (tempfile::TempDir, SqliteTarget) {
    let dir = tempfile::tempdir().unwrap();
    let mut target = SqliteTarget::open(&dir.path().join("state.db")).unwrap();
    apply(
        &mut target,
        vec![
            create_device("D1"),
            create_device("D2"),
            create_device("D3"),
            create_user("alice", "Alice"),
            create_user("bob", "Bob"),
            create_user("carol", "Carol"),
            add_extension("alice", "1001", Some("D1")),
            add_extension("bob", "1002", Some("D2")),
            add_extension("carol", "1003", None),
        ],
    )
    .unwrap();
    (dir, target)
}

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
fn missing_devices_by_lookup_and_by_merge_agree() {
    let (_dir, mut target) = seeded();
    let device = |id: &str| Device {
        id: id.into(),
        model: format!("model of {id}").into(),
    };
    let expected = |ids: &[&str]| ids.iter().map(|id| device(id)).collect::<Vec<_>>();
    // Held: D1, D2, D3. Wanted ids before, between and after them.
    for (wanted, missing) in [
        (vec!["A0", "D1", "D15", "D3", "Z9"], vec!["A0", "D15", "Z9"]),
        (vec!["D1", "D2", "D3"], vec![]),
        (vec!["D0"], vec!["D0"]),
        (vec!["E1", "E2"], vec!["E1", "E2"]),
        (vec![], vec![]),
    ] {
        let wanted = expected(&wanted);
        for lookups in [0, usize::MAX] {
            assert_eq!(
                target.missing_devices_looking_up(&wanted, lookups).unwrap(),
                expected(&missing),
                "{lookups} lookups"
            );
        }
        assert_eq!(target.missing_devices(&wanted).unwrap(), expected(&missing));
    }
}

#[test]
fn a_new_file_is_created_private_migrated_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/state.db");
    let mut target = SqliteTarget::open(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(target.describe(), format!("sqlite:{}", path.display()));
    assert_eq!(target.serial().unwrap(), 0);
    assert_eq!(target.load().unwrap(), Directory::default());
    assert_eq!(target.last_applied().unwrap(), None);
    drop(target);

    let mut target = SqliteTarget::open(&path).unwrap();
    assert_eq!(target.schema_version().unwrap(), MIGRATIONS.len() as i64);
    let app: i64 = target
        .conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .unwrap();
    assert_eq!(app, APPLICATION_ID);
    let mode: String = target
        .conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let page_size: i64 = target
        .conn
        .pragma_query_value(None, "page_size", |r| r.get(0))
        .unwrap();
    assert_eq!(page_size, PAGE_SIZE);
    assert_eq!(target.serial().unwrap(), 0);
}

#[test]
fn open_read_only_of_a_missing_file_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    assert!(SqliteTarget::open_read_only(&path).unwrap().is_none());
    assert!(!path.exists());
    SqliteTarget::open(&path).unwrap();
    let mut target = SqliteTarget::open_read_only(&path).unwrap().unwrap();
    assert_eq!(target.load().unwrap(), Directory::default());
    assert!(matches!(
        target.set_licenses(Licenses::default()),
        Err(BackendError::Io { .. })
    ));
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
fn an_outside_write_bumps_the_serial_and_makes_plans_stale() {
    let (dir, mut target) = seeded();
    let planned_serial = target.serial().unwrap();
    let other = Connection::open(dir.path().join("state.db")).unwrap();
    other
        .execute("UPDATE users SET mobile = '555' WHERE username = 'bob'", [])
        .unwrap();
    let now = target.serial().unwrap();
    assert!(now > planned_serial);

    let before = target.load().unwrap();
    let actions = vec![planned(create_user("dave", "Dave"))];
    let request = ApplyRequest {
        inventory: None,
        pruned: false,
        digests: &[],
        actions: &actions,
        expected_serial: planned_serial,
        password_hashes: &FastMap::default(),
        record: Box::new(|| record(&actions)),
    };
    let err = target.apply(request, &mut |_| {}).unwrap_err();
    assert!(
        matches!(err, BackendError::Stale { planned, current } if planned == planned_serial && current == now)
    );
    assert_eq!(target.load().unwrap(), before);
    assert_eq!(target.serial().unwrap(), now);

    // Writing history and meta does not count as a change.
    target.record_failure(&record(&[])).unwrap();
    assert_eq!(target.serial().unwrap(), now);
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
fn a_running_write_does_not_block_opening_and_reading() {
    let (dir, mut target) = seeded();
    let before = target.load().unwrap();
    let writer = Connection::open(dir.path().join("state.db")).unwrap();
    writer
        .execute_batch("BEGIN IMMEDIATE; DELETE FROM extensions;")
        .unwrap();
    // Blocked, the open or the read would wait out the busy timeout and fail
    // with `Busy`; they succeed, and see the state before the write.
    let mut reader = SqliteTarget::open(&dir.path().join("state.db")).unwrap();
    assert_eq!(reader.load().unwrap(), before);
    writer.execute_batch("ROLLBACK").unwrap();
}

#[test]
fn the_lock_excludes_other_handles_until_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut first = SqliteTarget::open(&path).unwrap();
    let mut second = SqliteTarget::open(&path).unwrap();
    assert_eq!(second.lock_holder().unwrap(), None);

    let guard = first.try_lock().unwrap();
    match second.try_lock() {
        Err(BackendError::Locked(holder)) => {
            assert_eq!(holder.pid, std::process::id());
            assert_eq!(holder.host, gethostname::gethostname().to_string_lossy());
            assert!(holder.since.ends_with('Z'), "{}", holder.since);
        }
        other => panic!("expected Locked, got {:?}", other.map(|_| ())),
    }
    let holder = second.lock_holder().unwrap().unwrap();
    assert_eq!(holder.pid, std::process::id());

    drop(guard);
    assert_eq!(second.lock_holder().unwrap(), None);
    let _guard = second.try_lock().unwrap();
    assert!(matches!(first.try_lock(), Err(BackendError::Locked(_))));
}

#[test]
fn files_of_other_programs_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();

    let garbage = dir.path().join("garbage.db");
    let bytes: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&garbage, &bytes).unwrap();
    let err = SqliteTarget::open(&garbage).err().unwrap();
    assert!(matches!(err, BackendError::NotAStateFile { .. }), "{err}");
    assert_eq!(std::fs::read(&garbage).unwrap(), bytes);
    assert!(matches!(
        SqliteTarget::open_read_only(&garbage),
        Err(BackendError::NotAStateFile { .. })
    ));

    let foreign = dir.path().join("foreign.db");
    {
        let conn = Connection::open(&foreign).unwrap();
        conn.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('hi');")
            .unwrap();
    }
    let bytes = std::fs::read(&foreign).unwrap();
    let err = SqliteTarget::open(&foreign).err().unwrap();
    assert!(matches!(err, BackendError::NotAStateFile { .. }), "{err}");
    assert!(err.to_string().contains("not one of pbxsync"), "{err}");
    assert_eq!(std::fs::read(&foreign).unwrap(), bytes);

    let tagged = dir.path().join("tagged.db");
    Connection::open(&tagged)
        .unwrap()
        .pragma_update(None, "application_id", 42)
        .unwrap();
    let err = SqliteTarget::open(&tagged).err().unwrap();
    assert!(err.to_string().contains("another program"), "{err}");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    drop(SqliteTarget::open(&path).unwrap());
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 999)
        .unwrap();
    match SqliteTarget::open(&path) {
        Err(BackendError::NewerSchema { found, known, .. }) => {
            assert_eq!((found, known), (999, MIGRATIONS.len() as i64));
        }
        other => panic!("expected NewerSchema, got {:?}", other.err()),
    }
}

#[test]
fn a_read_only_file_reads_but_refuses_writes() {
    let (dir, mut target) = seeded();
    let path = dir.path().join("state.db");
    let history_id = target.record_failure(&record(&[])).unwrap();
    let before = (target.load().unwrap(), target.serial().unwrap());
    drop(target);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    let bytes = std::fs::read(&path).unwrap();

    let mut target = SqliteTarget::open(&path).unwrap();
    assert_eq!((target.load().unwrap(), target.serial().unwrap()), before);
    assert!(target.history_entry(history_id).unwrap().is_some());
    assert_eq!(target.history().unwrap().len(), 2);

    let err = apply(&mut target, vec![create_user("dave", "Dave")]).unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
    assert!(target.record_failure(&record(&[])).is_err());
    assert!(target.add_devices(&[]).is_err());
    assert!(target.remove_device("D3").is_err());
    assert!(target.set_licenses(Licenses::default()).is_err());
    assert_eq!((target.load().unwrap(), target.serial().unwrap()), before);
    drop(target);
    assert_eq!(std::fs::read(&path).unwrap(), bytes);

    // Writable again, it takes writes again (SQLite's -wal and -shm files
    // created while it was read-only are writable again too).
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut target = SqliteTarget::open(&path).unwrap();
    for suffix in ["-wal", "-shm"] {
        let sidecar = dir.path().join(format!("state.db{suffix}"));
        if let Ok(meta) = std::fs::metadata(&sidecar) {
            assert!(!meta.permissions().readonly(), "{suffix}");
        }
    }
    apply(&mut target, vec![create_user("dave", "Dave")]).unwrap();
    assert!(target.load().unwrap().user("dave").is_some());
}

#[test]
fn a_read_only_folder_is_read_as_the_file_is_unless_its_wal_holds_commits() {
    let (dir, mut target) = seeded();
    let path = dir.path().join("state.db");
    let before = (target.load().unwrap(), target.serial().unwrap());
    drop(target);
    assert!(!dir.path().join("state.db-shm").exists());
    let folder =
        |mode| std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    folder(0o555);
    let mut target = SqliteTarget::open_read_only(&path).unwrap().unwrap();
    assert!(target.immutable);
    assert_eq!((target.load().unwrap(), target.serial().unwrap()), before);
    drop(target);
    // Opened for writing, it is read-only too, and says so on a write.
    let mut target = SqliteTarget::open(&path).unwrap();
    assert_eq!(target.load().unwrap(), before.0);
    let err = target.add_devices(&[]).unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
    drop(target);
    assert!(!dir.path().join("state.db-shm").exists());
    // Commits still in a WAL file cannot be read without its shared memory:
    // refused, rather than the older state in the file shown.
    folder(0o755);
    std::fs::write(dir.path().join("state.db-wal"), b"frames").unwrap();
    folder(0o555);
    let err = SqliteTarget::open_read_only(&path)
        .err()
        .unwrap()
        .to_string();
    folder(0o755);
    assert!(
        err.contains("state.db-wal") && err.contains("read-only") && err.contains("writable"),
        "{err}"
    );
}

#[test]
fn an_extension_without_its_user_is_damage_not_left_out() {
    let (dir, mut target) = seeded();
    let number = target.load().unwrap().extensions[0].number.clone();
    let other = Connection::open(dir.path().join("state.db")).unwrap();
    other.pragma_update(None, "foreign_keys", false).unwrap();
    other
        .execute(
            "UPDATE extensions SET user_id = 4242 WHERE number = ?1",
            [number.as_str()],
        )
        .unwrap();
    for err in [
        target.load().unwrap_err(),
        target
            .load_subset(&super::super::Keys {
                extensions: vec![number.clone()],
                ..super::super::Keys::default()
            })
            .unwrap_err(),
    ] {
        let BackendError::Corrupt { reason, .. } = &err else {
            panic!("not damage: {err}");
        };
        assert!(
            reason.contains(&format!("extension {number} belongs to user id 4242")),
            "{reason}"
        );
    }
    // Text that is not UTF-8 is damage too; a busy file is not.
    other
        .execute(
            "UPDATE users SET first_name = CAST(x'ff' AS TEXT) WHERE id = (SELECT min(id) FROM users)",
            [],
        )
        .unwrap();
    other
        .execute(
            "UPDATE extensions SET user_id = (SELECT min(id) FROM users)",
            [],
        )
        .unwrap();
    let err = target.load().unwrap_err();
    assert!(
        target_damage(&err).is_some_and(|r| r.contains("utf-8")),
        "{err}"
    );
    let busy =
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None);
    assert_eq!(damage(&busy), None);
    let err = sqlite_error("cannot read the users", busy);
    assert!(matches!(err, BackendError::Busy { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "cannot read the users: Error code 5: database is locked"
    );
    assert_eq!(target_damage(&err), None);
}

#[test]
fn inventory_and_licenses() {
    let (_dir, mut target) = seeded();
    target
        .add_devices(&[
            Device {
                id: t("D3"),
                model: t("T54W"),
            },
            Device {
                id: t("D4"),
                model: t("T31"),
            },
        ])
        .unwrap();
    let d = target.load().unwrap();
    assert_eq!(d.device("D3").unwrap().model, "T54W");
    assert_eq!(d.device("D4").unwrap().model, "T31");

    let err = target.remove_device("D1").unwrap_err();
    assert!(err.to_string().contains("extension 1001"), "{err}");
    assert!(target.remove_device("D4").unwrap());
    assert!(!target.remove_device("D4").unwrap());

    let serial = target.serial().unwrap();
    let limits = Licenses {
        users: Some(10),
        voicemail: None,
    };
    target.set_licenses(limits).unwrap();
    assert_eq!(target.load().unwrap().licenses, limits);
    assert!(target.serial().unwrap() > serial);
}

#[test]
fn a_state_file_of_the_first_schema_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO users (username, password_hash) VALUES ('alice', '$argon2id$x'), ('bob', NULL)",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO history (time, local_user, source, blob, summary, outcome, csv_redacted) \
             VALUES ('t', 'u', 's', 'b', '{}', 'applied', 'Extension\n1001\n')",
            [],
        )
        .unwrap();
        // An entry of schema 3, its CSV LZ4-compressed.
        conn.execute_batch(MIGRATIONS[1]).unwrap();
        conn.execute_batch(MIGRATIONS[2]).unwrap();
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn.execute(
            "INSERT INTO history (time, local_user, source, blob, summary, outcome, \
             csv_redacted, csv_lz4) VALUES ('t', 'u', 's', 'b', '{}', 'applied', '', ?1)",
            [lz4_flex::compress_prepend_size(b"Extension\n1002\n")],
        )
        .unwrap();
    }
    // Reading (a plan) upgrades it too, so nobody has to apply first.
    let mut target = SqliteTarget::open_read_only(&path).unwrap().unwrap();
    assert_eq!(target.schema_version().unwrap(), MIGRATIONS.len() as i64);
    assert_eq!(target.load().unwrap().users.len(), 2);
    let hashes: Vec<(String, String)> = target
        .conn
        .prepare("SELECT username, hash FROM passwords JOIN users ON users.id = user_id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(hashes, [("alice".to_string(), "$argon2id$x".to_string())]);
    let old = target.history_entry(1).unwrap().unwrap();
    assert_eq!(
        old.csv.text(),
        "Extension\n1001\n",
        "old entries keep their CSV"
    );
    let lz4 = target.history_entry(2).unwrap().unwrap();
    assert_eq!(lz4.csv.text(), "Extension\n1002\n");
    let (index, _) = target.load_index().unwrap().unwrap();
    assert!(index.is_empty());
    // Compacted into pages of the current size, and back in WAL mode.
    let page_size: i64 = target
        .conn
        .pragma_query_value(None, "page_size", |r| r.get(0))
        .unwrap();
    let mode: String = target
        .conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!((page_size, mode.as_str()), (PAGE_SIZE, "wal"));
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
fn history_is_newest_first() {
    let (_dir, mut target) = seeded();
    let mut failure = record(&[]);
    failure.outcome = "failed: stale".into();
    let id = target.record_failure(&failure).unwrap();
    let history = target.history().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].id, id);
    assert_eq!(history[0].outcome, "failed: stale");
    assert_eq!(history[1].summary["create_user"], 3);
    // The list leaves the CSV out; the entry has it, compressed and back.
    assert_eq!(history[0].csv, RecordedCsv::default());
    let entry = target.history_entry(id).unwrap().unwrap();
    assert_eq!(entry.csv, failure.csv);
    assert_eq!(
        HistoryRecord {
            csv: RecordedCsv::default(),
            ..entry
        },
        history[0]
    );
    assert_eq!(target.history_entry(id + 100).unwrap(), None);
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
