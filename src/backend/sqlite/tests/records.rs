//! The serial, the lock, the history, the inventory and the reads of devices.

use super::*;

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
        kept: None,
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
fn inventory_and_licenses() {
    let (_dir, mut target) = seeded();
    target
        .add_devices(
            &[
                Device {
                    id: t("D3"),
                    model: t("T54W"),
                },
                Device {
                    id: t("D4"),
                    model: t("T31"),
                },
            ],
            Models::Replace,
        )
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
