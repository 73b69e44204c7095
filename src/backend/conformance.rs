//! One contract, every backend: each case is a plain function that takes a
//! backend (and a way to write to its store behind pbxsync's back), applies
//! plans made by the real diff from CSV text, and compares what the backend
//! reads back, its serial and its history with what `plan::simulate` says.
//! `tests` runs every case against each backend, one line a backend; a new
//! backend adds its line there.

use crate::backend::{
    ApplyReport, ApplyRequest, Backend, BackendError, HistoryRecord, Keys, Models, Progress,
    RecordedCsv,
};
use crate::model::{Device, Directory, ExtensionKind, Licenses, Text};
use crate::plan::{DiffOptions, PlannedAction, Summary, diff, simulate};
use crate::validate::{Policy, validate};

/// A write by another program, straight to the store.
#[derive(Debug, Clone)]
pub enum Outside {
    /// Sets the mobile number of a user.
    SetMobile {
        username: &'static str,
        mobile: &'static str,
    },
    /// Deletes an extension.
    DeleteExtension(&'static str),
}

/// Writes to the store behind the backend's back.
pub type Behind<'a> = &'a mut dyn FnMut(&Outside);

const HEADER: &str = "Extension,First Name,Last Name,Web Username,Password,Description,Email,IM,Mobile,Device MAC Address\n";

pub const D1: &str = "0004F2A10001";
pub const D2: &str = "0004F2A10002";
pub const D3: &str = "0004F2A10003";
pub const D4: &str = "0004F2A10004";

/// The devices of the inventory file the plans are made with, sorted.
fn inventory() -> Vec<Device> {
    [D1, D2, D3, D4]
        .into_iter()
        .map(|id| Device {
            id: Text::from(id),
            model: Text::from("VVX 450"),
        })
        .collect()
}

/// alice: 1001 on D1 and 1003 voicemail only; bob: 1002 on D2; carol: 1004 virtual.
const SEED: &str = "\
1001,Alice,Archer,alice,Welcome_2026,Front desk,alice@example.com,,,0004F2A10001
1002,Bob,Baker,bob,Welcome_2026,Sales,bob@example.com,,+1 555 0102,0004F2A10002
1003,Alice,Archer,alice,,Mailbox,alice@example.com,,,
1004,Carol,Cole,carol,Welcome_2026,,carol@example.com,,,virtual
";

/// How a plan is made.
#[derive(Clone)]
pub struct Opts {
    pub prune: bool,
    pub reassigned_becomes: ExtensionKind,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            prune: false,
            reassigned_becomes: ExtensionKind::Virtual,
        }
    }
}

/// A plan of `rows` (CSV without its header) against what `backend` holds,
/// with everything its apply needs.
pub struct Made {
    pub csv: String,
    pub actions: Vec<PlannedAction>,
    pub digests: Vec<(Text, u64)>,
    pub serial: i64,
    /// What the backend holds after the apply, by `simulate`.
    pub expected: Directory,
}

pub fn make(backend: &mut dyn Backend, rows: &str, opts: &Opts) -> Made {
    let csv = format!("{HEADER}{rows}");
    let validated = validate(csv.as_bytes(), &Policy::default());
    assert!(!validated.has_errors(), "{:?}", validated.diagnostics);
    let before = backend.load().unwrap();
    let serial = backend.serial().unwrap();
    let plan = diff(
        &validated.desired,
        &before,
        &DiffOptions {
            prune: opts.prune,
            reassigned_becomes: opts.reassigned_becomes,
            inventory: inventory(),
            ..DiffOptions::default()
        },
    );
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    let expected = simulate::apply(&before, &plan.actions);
    let digests = validated
        .index
        .iter()
        .map(|row| (row.number.clone(), row.digest))
        .collect();
    let redacted = RecordedCsv::written(|out| {
        crate::apply::redact_into(&validated.text, validated.delimiter, &validated.layout, out)
    })
    .text();
    Made {
        csv: redacted,
        actions: plan.actions,
        digests,
        serial,
        expected,
    }
}

/// Stands for the git blob id of the CSV.
fn blob(csv: &str) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(csv.as_bytes()))
}

fn record(made: &Made, outcome: &str) -> HistoryRecord {
    HistoryRecord {
        id: 0,
        time: "2026-01-01T00:00:00Z".into(),
        local_user: "tester".into(),
        git_author: Some("Ann <ann@example.com>".into()),
        source: "working tree".into(),
        commit: None,
        blob: blob(&made.csv),
        summary: serde_json::to_value(Summary::of(&made.actions)).unwrap(),
        outcome: outcome.into(),
        csv: RecordedCsv::new(&made.csv),
    }
}

/// Applies `made` as planned at `serial`, checking the progress it reports.
pub fn apply_at(
    backend: &mut dyn Backend,
    made: &Made,
    serial: i64,
) -> Result<ApplyReport, BackendError> {
    let hashes = crate::apply::password_users(&made.actions)
        .into_iter()
        .map(|u| (u.clone(), format!("$argon2id$v=19$test${u}")))
        .collect();
    let request = ApplyRequest {
        actions: &made.actions,
        digests: &made.digests,
        expected_serial: serial,
        password_hashes: &hashes,
        inventory: Some("inventory-digest"),
        pruned: false,
        kept: None,
        record: Box::new(|| record(made, "applied")),
    };
    let mut events = Vec::new();
    let result = backend.apply(request, &mut |p| events.push(p));
    // Progress: started once the serial is checked, committing once every
    // action is written.
    let started = Progress::Started {
        total: made.actions.len(),
    };
    match &result {
        Ok(_) => assert_eq!(
            (events.first(), events.last()),
            (Some(&started), Some(&Progress::Committing))
        ),
        Err(BackendError::Stale { .. }) => assert_eq!(events, []),
        Err(_) => {
            assert_eq!(events.first(), Some(&started));
            assert!(!events.contains(&Progress::Committing));
        }
    }
    result
}

/// Plans `rows` and applies the plan; checks that the backend then reads back
/// what `simulate` says, with a serial bumped and recorded.
pub fn apply_rows(backend: &mut dyn Backend, rows: &str, opts: &Opts) -> Made {
    let made = make(backend, rows, opts);
    let report = apply_at(backend, &made, made.serial).unwrap();
    assert_eq!(backend.load().unwrap(), made.expected);
    assert_eq!(backend.serial().unwrap(), report.serial);
    assert!(report.serial > made.serial);
    let last = backend.last_applied().unwrap().unwrap();
    assert_eq!(
        (last.serial, last.history_id, last.blob.as_str()),
        (report.serial, report.history_id, blob(&made.csv).as_str())
    );
    assert_eq!(last.inventory.as_deref(), Some("inventory-digest"));
    // Applied once, the same rows plan nothing.
    assert!(make(backend, rows, opts).actions.is_empty());
    made
}

fn types(made: &Made) -> Vec<&'static str> {
    made.actions.iter().map(|a| a.action.type_name()).collect()
}

fn t(s: &str) -> Text {
    Text::from(s)
}

/// Users, extensions of every kind and the inventory's devices are created;
/// reads of the whole, of counts, of a subset and of missing devices agree.
pub fn creates(backend: &mut dyn Backend, _behind: Behind<'_>) {
    assert_eq!(backend.load().unwrap(), Directory::default());
    let made = apply_rows(backend, SEED, &Opts::default());
    assert_eq!(
        types(&made),
        [
            "create_device",
            "create_device",
            "create_device",
            "create_device",
            "create_user",
            "create_user",
            "create_user",
            "add_extension",
            "add_extension",
            "add_extension",
            "add_extension"
        ]
    );
    let dir = backend.load().unwrap();
    let counts = backend.counts().unwrap();
    assert_eq!((counts.users, counts.extensions, counts.devices), (3, 4, 4));
    let e = dir.extension("1003").unwrap();
    assert_eq!(
        (e.kind, e.device.as_deref()),
        (ExtensionKind::VoicemailOnly, None)
    );
    assert_eq!(dir.extension("1001").unwrap().device.as_deref(), Some(D1));

    let keys = Keys {
        users: vec![t("bob"), t("nobody")],
        extensions: vec![t("1004"), t("1009")],
        devices: vec![t(D1), t("0004F2A1FFFF")],
    };
    let subset = backend.load_subset(&keys).unwrap();
    let numbers: Vec<_> = subset
        .extensions
        .iter()
        .map(|e| e.number.as_str())
        .collect();
    assert_eq!(numbers, ["1001", "1004"]);
    assert_eq!(subset.users, vec![dir.user("bob").unwrap().clone()]);
    assert_eq!(subset.devices, vec![dir.device(D1).unwrap().clone()]);
    assert_eq!(subset.licenses, dir.licenses);

    let wanted = [
        Device {
            id: t(D2),
            model: t("x"),
        },
        Device {
            id: t("0004F2A1FFFF"),
            model: t("y"),
        },
    ];
    assert_eq!(backend.missing_devices(&wanted).unwrap(), wanted[1..]);
}

/// User fields, descriptions and devices change; a device becomes virtual.
pub fn updates(backend: &mut dyn Backend, _behind: Behind<'_>) {
    apply_rows(backend, SEED, &Opts::default());
    let rows = "\
1001,Alice,Smith,alice,Welcome_2026,Reception,alice@example.org,alice.im,,0004F2A10003
1002,Bob,Baker,bob,Welcome_2026,Sales,bob@example.com,,+1 555 0199,virtual
1003,Alice,Smith,alice,,Mailbox,alice@example.org,alice.im,,
1004,Carol,Cole,carol,Welcome_2026,New desk,carol@example.com,,,0004F2A10002
";
    let made = apply_rows(backend, rows, &Opts::default());
    assert!(types(&made).contains(&"update_user"));
    assert!(types(&made).contains(&"update_extension"));
    let dir = backend.load().unwrap();
    assert_eq!(dir.user("alice").unwrap().fields[1], "Smith");
    let bob = dir.extension("1002").unwrap();
    assert_eq!(
        (bob.kind, bob.device.as_deref()),
        (ExtensionKind::Virtual, None)
    );
    assert_eq!(dir.extension("1004").unwrap().device.as_deref(), Some(D2));
}

/// A device moves to another extension, which leaves the one that held it
/// virtual or voicemail only; two extensions swap their devices.
pub fn reassignments(backend: &mut dyn Backend, _behind: Behind<'_>) {
    apply_rows(backend, SEED, &Opts::default());
    // D1 moves from 1001 to a new 1005: 1001 becomes voicemail only.
    let rows = format!("{SEED}1005,Alice,Archer,alice,,,alice@example.com,,,0004F2A10001\n")
        .replace(
            ",Front desk,alice@example.com,,,0004F2A10001",
            ",Front desk,alice@example.com,,,",
        );
    let opts = Opts {
        reassigned_becomes: ExtensionKind::VoicemailOnly,
        ..Opts::default()
    };
    let made = apply_rows(backend, &rows, &opts);
    assert!(
        types(&made).contains(&"reassign_device"),
        "{:?}",
        types(&made)
    );
    let dir = backend.load().unwrap();
    let old = dir.extension("1001").unwrap();
    assert_eq!(
        (old.kind, old.device.as_deref()),
        (ExtensionKind::VoicemailOnly, None)
    );
    assert_eq!(dir.extension("1005").unwrap().device.as_deref(), Some(D1));

    // 1002 and 1005 swap D2 and D1 in one plan.
    let swapped = rows
        .replace("0102,0004F2A10002", "0102,SWAP")
        .replace(",,,0004F2A10001\n", ",,,0004F2A10002\n")
        .replace("SWAP", D1);
    let made = apply_rows(backend, &swapped, &Opts::default());
    assert_eq!(types(&made), ["reassign_device", "reassign_device"]);
    let dir = backend.load().unwrap();
    assert_eq!(dir.extension("1002").unwrap().device.as_deref(), Some(D1));
    assert_eq!(dir.extension("1005").unwrap().device.as_deref(), Some(D2));
}

/// With prune, extensions the CSV leaves out go, and users left without any.
pub fn prunes(backend: &mut dyn Backend, _behind: Behind<'_>) {
    apply_rows(backend, SEED, &Opts::default());
    let rows: String = SEED
        .lines()
        .filter(|l| !l.starts_with("1002") && !l.starts_with("1003"))
        .map(|l| format!("{l}\n"))
        .collect();
    // Without prune nothing goes.
    assert!(make(backend, &rows, &Opts::default()).actions.is_empty());
    let opts = Opts {
        prune: true,
        ..Opts::default()
    };
    let made = apply_rows(backend, &rows, &opts);
    assert_eq!(
        types(&made),
        ["remove_extension", "remove_extension", "remove_user"]
    );
    let dir = backend.load().unwrap();
    assert!(dir.user("bob").is_none() && dir.extension("1002").is_none());
    assert!(dir.extension("1003").is_none() && dir.user("alice").is_some());
    // The inventory keeps the device 1002 held.
    assert!(dir.device(D2).is_some());
}

/// An action that cannot be carried out fails with its index; nothing is
/// written; the failure is recorded without a change of serial.
pub fn a_failed_apply_writes_nothing(backend: &mut dyn Backend, behind: Behind<'_>) {
    apply_rows(backend, SEED, &Opts::default());
    let rows = SEED
        .replace(",Sales,", ",Sales floor,")
        .replace("Carol,Cole", "Carol,Cooper");
    let made = make(backend, &rows, &Opts::default());
    assert_eq!(types(&made), ["update_user", "update_extension"]);
    // Someone deletes 1002 after the plan; an apply at the new serial fails on it.
    behind(&Outside::DeleteExtension("1002"));
    let serial = backend.serial().unwrap();
    let before = (backend.load().unwrap(), backend.history().unwrap());
    match apply_at(backend, &made, serial) {
        Err(BackendError::ActionFailed { index, action, .. }) => {
            assert_eq!((index, action.as_str()), (1, "update_extension 1002"))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        (backend.load().unwrap(), backend.history().unwrap()),
        before
    );
    assert_eq!(backend.serial().unwrap(), serial);

    let mut failed = record(&made, "failed: action 1 failed");
    failed.csv = RecordedCsv::new(&made.csv);
    let id = backend.record_failure(&failed).unwrap();
    assert_eq!(backend.serial().unwrap(), serial, "history is no change");
    let history = backend.history().unwrap();
    assert_eq!(
        (history[0].id, history[0].outcome.as_str()),
        (id, "failed: action 1 failed")
    );
    assert!(backend.last_applied().unwrap().unwrap().history_id < id);
}

/// A plan made before another write is refused, and nothing is written.
pub fn a_stale_plan_is_refused(backend: &mut dyn Backend, behind: Behind<'_>) {
    apply_rows(backend, SEED, &Opts::default());
    let rows = SEED.replace("Carol,Cole", "Carol,Cooper");
    let made = make(backend, &rows, &Opts::default());
    behind(&Outside::SetMobile {
        username: "carol",
        mobile: "+1 555 0104",
    });
    let now = backend.serial().unwrap();
    let before = (backend.load().unwrap(), backend.history().unwrap());
    match apply_at(backend, &made, made.serial) {
        Err(BackendError::Stale { planned, current }) => {
            assert_eq!((planned, current), (made.serial, now))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        (backend.load().unwrap(), backend.history().unwrap()),
        before
    );
    assert_eq!(backend.serial().unwrap(), now);
}

/// A write behind pbxsync's back bumps the serial and shows in reads; the
/// next plan puts the CSV's values back.
pub fn a_write_behind_the_back_bumps_the_serial(backend: &mut dyn Backend, behind: Behind<'_>) {
    apply_rows(backend, SEED, &Opts::default());
    let serial = backend.serial().unwrap();
    behind(&Outside::SetMobile {
        username: "bob",
        mobile: "+1 555 9999",
    });
    let after = backend.serial().unwrap();
    assert!(after > serial, "{after} after {serial}");
    assert_eq!(
        backend.load().unwrap().user("bob").unwrap().fields[4],
        "+1 555 9999"
    );
    behind(&Outside::DeleteExtension("1004"));
    assert!(backend.serial().unwrap() > after);
    let made = apply_rows(backend, SEED, &Opts::default());
    assert_eq!(types(&made), ["update_user", "add_extension"]);
}

/// History keeps every apply and failure, newest first, each entry with the
/// CSV it came from, its passwords taken out.
pub fn history_keeps_records_in_order(backend: &mut dyn Backend, _behind: Behind<'_>) {
    assert!(backend.history().unwrap().is_empty());
    assert_eq!(backend.last_applied().unwrap(), None);
    let first = apply_rows(backend, SEED, &Opts::default());
    let rows = SEED.replace("Sales", "Sales floor");
    let second = apply_rows(backend, &rows, &Opts::default());
    let mut failed = record(&second, "failed: stale");
    failed.csv = RecordedCsv::default();
    let failure = backend.record_failure(&failed).unwrap();
    let history = backend.history().unwrap();
    let ids: Vec<i64> = history.iter().map(|h| h.id).collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");
    assert_eq!(ids[0], failure);
    assert_eq!(backend.last_applied().unwrap().unwrap().history_id, ids[1]);
    assert_eq!(history[2].summary["create_user"], 3);
    assert_eq!(history[1].summary["update_extension"], 1);
    assert!(history.iter().all(|h| h.csv == RecordedCsv::default()));
    for (id, made) in [(ids[2], &first), (ids[1], &second)] {
        let entry = backend.history_entry(id).unwrap().unwrap();
        assert_eq!(entry.csv.text(), made.csv);
        assert_eq!(entry.outcome, "applied");
        assert!(!entry.csv.text().contains("Welcome_2026"));
        assert!(entry.csv.text().contains("Front desk"));
    }
    let entry = backend.history_entry(failure).unwrap().unwrap();
    assert_eq!(
        (entry.outcome.as_str(), entry.csv.text()),
        ("failed: stale", String::new())
    );
    assert_eq!(backend.history_entry(failure + 100).unwrap(), None);
    for id in [0, -1, i64::MIN, i64::MAX] {
        assert_eq!(backend.history_entry(id).unwrap(), None, "{id}");
    }
}

/// One holder at a time; dropping the guard releases the lock.
pub fn the_lock_has_one_holder(backend: &mut dyn Backend, _behind: Behind<'_>) {
    assert_eq!(backend.lock_holder().unwrap(), None);
    let guard = backend.try_lock().unwrap();
    match backend.try_lock() {
        Err(BackendError::Locked(holder)) => assert_eq!(holder.pid, std::process::id()),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("locked twice"),
    }
    assert_eq!(
        backend.lock_holder().unwrap().unwrap().pid,
        std::process::id()
    );
    drop(guard);
    assert_eq!(backend.lock_holder().unwrap(), None);
    let _again = backend.try_lock().unwrap();
}

/// Devices are added (an existing id gets the new model, or keeps its own when
/// asked to and the new one is empty) and removed unless held; license limits are
/// kept; each write bumps the serial.
pub fn inventory_and_licenses(backend: &mut dyn Backend, _behind: Behind<'_>) {
    apply_rows(backend, SEED, &Opts::default());
    let serial = backend.serial().unwrap();
    let devices = [
        Device {
            id: t(D3),
            model: t("T54W"),
        },
        Device {
            id: t("0004F2A10009"),
            model: t("T31"),
        },
    ];
    backend.add_devices(&devices, Models::Replace).unwrap();
    let dir = backend.load().unwrap();
    assert_eq!(dir.device(D3).unwrap().model, "T54W");
    assert_eq!(dir.device("0004F2A10009").unwrap().model, "T31");
    let without_model = |id: &str| Device {
        id: t(id),
        model: t(""),
    };
    backend
        .add_devices(&[without_model(D3)], Models::KeepWhenEmpty)
        .unwrap();
    assert_eq!(backend.load().unwrap().device(D3).unwrap().model, "T54W");
    backend
        .add_devices(&[without_model(D3)], Models::Replace)
        .unwrap();
    assert_eq!(backend.load().unwrap().device(D3).unwrap().model, "");
    let serial_added = backend.serial().unwrap();
    assert!(serial_added > serial);

    let err = backend.remove_device(D1).unwrap_err();
    assert!(err.to_string().contains("extension 1001"), "{err}");
    assert_eq!(backend.serial().unwrap(), serial_added);
    assert!(backend.remove_device("0004F2A10009").unwrap());
    assert!(!backend.remove_device("0004F2A10009").unwrap());
    let serial_removed = backend.serial().unwrap();
    assert!(serial_removed > serial_added);

    let limits = Licenses {
        users: Some(10),
        voicemail: None,
    };
    backend.set_licenses(limits).unwrap();
    assert_eq!(backend.load().unwrap().licenses, limits);
    assert!(backend.serial().unwrap() > serial_removed);
    assert!(
        backend
            .set_licenses(Licenses {
                users: Some(u64::MAX),
                voicemail: None
            })
            .is_err()
    );
    assert_eq!(backend.load().unwrap().licenses, limits);
}

/// Row digests are optional; a backend that keeps them gives each extension
/// the digest of the row last applied to it, and forgets it when anything
/// else writes the extension.
pub fn row_digests_when_kept(backend: &mut dyn Backend, behind: Behind<'_>) {
    let made = apply_rows(backend, SEED, &Opts::default());
    let Some((index, usage)) = backend.load_index().unwrap() else {
        return;
    };
    assert_eq!(usage, crate::model::Usage::of(&backend.load().unwrap()));
    let applied: Vec<(Text, Option<u64>)> = made
        .digests
        .iter()
        .map(|(number, digest)| (number.clone(), Some(*digest)))
        .collect();
    assert_eq!(index, applied);
    behind(&Outside::DeleteExtension("1004"));
    behind(&Outside::SetMobile {
        username: "alice",
        mobile: "+1 555 0101",
    });
    let (index, _) = backend.load_index().unwrap().unwrap();
    let numbers: Vec<_> = index.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(numbers, ["1001", "1002", "1003"]);
    assert_eq!(index[0].1, None, "alice changed");
    assert_eq!(index[2].1, None, "alice changed");
    assert_eq!(index[1].1, Some(made.digests[1].1));
}

/// An apply right after the reads of a plan of changed rows (the digest
/// index, then the rows the plan needs) writes the same; once someone else
/// writes in between, what was read is not trusted.
pub fn applies_after_the_reads_of_a_plan(backend: &mut dyn Backend, behind: Behind<'_>) {
    apply_rows(backend, SEED, &Opts::default());
    let keys = Keys {
        users: vec![t("bob")],
        extensions: vec![t("1002")],
        devices: vec![t(D2)],
    };
    let rows = SEED.replace(",Sales,", ",Sales floor,");
    let made = make(backend, &rows, &Opts::default());
    backend.load_index().unwrap();
    backend.load_subset(&keys).unwrap();
    apply_at(backend, &made, made.serial).unwrap();
    assert_eq!(backend.load().unwrap(), made.expected);

    let rows = SEED.replace(",Sales,", ",Sales desk,");
    let made = make(backend, &rows, &Opts::default());
    backend.load_index().unwrap();
    backend.load_subset(&keys).unwrap();
    behind(&Outside::DeleteExtension("1002"));
    let serial = backend.serial().unwrap();
    let before = backend.load().unwrap();
    match apply_at(backend, &made, serial) {
        Err(BackendError::ActionFailed { action, .. }) => {
            assert_eq!(action, "update_extension 1002")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(backend.load().unwrap(), before);
}

/// Every extension that holds a device is a phone, with its device's model and
/// a SIP secret made when the extension was added and kept while it exists;
/// the registrar's domain is kept, and is no change of the directory.
pub fn phones_and_the_registrar(backend: &mut dyn Backend, _behind: Behind<'_>) {
    apply_rows(backend, SEED, &Opts::default());
    let phones = backend.phones().unwrap();
    let seen: Vec<(&str, &str, &str, &str)> = phones
        .iter()
        .map(|p| {
            (
                p.extension.as_str(),
                p.display_name.as_str(),
                p.device.as_str(),
                p.model.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("1001", "Alice Archer", D1, "VVX 450"),
            ("1002", "Bob Baker", D2, "VVX 450")
        ]
    );
    let mut secret = |number: &str| {
        backend
            .sip_secret(number)
            .unwrap()
            .map(|s| s.expose().to_owned())
    };
    for phone in &phones {
        let s = phone.sip_secret.expose();
        assert_eq!(secret(&phone.extension).as_deref(), Some(s));
        assert!(
            s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()),
            "{s}"
        );
    }
    let (s1001, s1002, s1004) = (secret("1001"), secret("1002"), secret("1004"));
    assert!(s1004.is_some(), "a virtual extension has a secret too");
    assert_ne!(s1001, s1002);
    assert_eq!(secret("9999"), None);
    // Kept through an update of the extension.
    apply_rows(
        backend,
        &SEED.replace(",Sales,", ",Sales floor,"),
        &Opts::default(),
    );
    assert_eq!(
        backend
            .sip_secret("1002")
            .unwrap()
            .map(|s| s.expose().to_owned()),
        s1002
    );

    let serial = backend.serial().unwrap();
    assert_eq!(backend.registrar_domain().unwrap(), None);
    backend
        .set_registrar_domain(Some("pbx.example.com"))
        .unwrap();
    assert_eq!(
        backend.registrar_domain().unwrap().as_deref(),
        Some("pbx.example.com")
    );
    backend.set_registrar_domain(None).unwrap();
    assert_eq!(backend.registrar_domain().unwrap(), None);
    assert_eq!(backend.serial().unwrap(), serial);
}

/// Plans no diff makes, each with one action that cannot be carried out: the
/// apply fails naming it, and writes nothing.
pub fn actions_that_cannot_be_applied(backend: &mut dyn Backend, _behind: Behind<'_>) {
    use crate::plan::{Action, Change};
    apply_rows(backend, SEED, &Opts::default());
    let extension = |username: &str, number: &str, device: Option<&str>| Action::AddExtension {
        username: t(username),
        extension: t(number),
        kind: if device.is_some() {
            ExtensionKind::Device
        } else {
            ExtensionKind::Virtual
        },
        device: device.map(t),
        changes: vec![],
    };
    let bad = [
        Action::CreateDevice {
            device: t(D1),
            model: t("T46U"),
        },
        Action::CreateUser {
            username: t("alice"),
            changes: vec![],
        },
        Action::UpdateUser {
            username: t("nobody"),
            changes: vec![Change::new("mobile", Some(""), "1")],
        },
        Action::UpdateUser {
            username: t("bob"),
            changes: vec![Change::password()],
        },
        extension("nobody", "1009", None),
        extension("bob", "1001", None),
        extension("bob", "1009", Some("0004F2A1FFFF")),
        extension("bob", "1009", Some(D2)),
        Action::AddExtension {
            username: t("bob"),
            extension: t("1009"),
            kind: ExtensionKind::Device,
            device: None,
            changes: vec![],
        },
        Action::UpdateExtension {
            username: t("bob"),
            extension: t("1004"),
            kind: ExtensionKind::Virtual,
            device: None,
            changes: vec![Change::new("description", Some(""), "x")],
        },
        Action::RemoveExtension {
            username: t("bob"),
            extension: t("1009"),
            device: None,
        },
        Action::RemoveUser {
            username: t("carol"),
        },
    ];
    let before = (backend.load().unwrap(), backend.history().unwrap());
    let serial = backend.serial().unwrap();
    for action in bad {
        let good = Action::CreateUser {
            username: t("dave"),
            changes: vec![Change::new("first_name", None, "Dave")],
        };
        let made = Made {
            csv: String::new(),
            actions: [good, action]
                .into_iter()
                .map(|action| PlannedAction {
                    action,
                    line: None,
                    blame: None,
                })
                .collect(),
            digests: Vec::new(),
            serial,
            expected: Directory::default(),
        };
        let label = made.actions[1].action.label();
        // No password hashes: a plan that sets a password without one fails.
        let request = ApplyRequest {
            actions: &made.actions,
            digests: &[],
            expected_serial: serial,
            password_hashes: &Default::default(),
            inventory: None,
            pruned: false,
            kept: None,
            record: Box::new(|| record(&made, "applied")),
        };
        match backend.apply(request, &mut |_| {}) {
            Err(BackendError::ActionFailed { index, action, .. }) => {
                assert_eq!((index, action.as_str()), (1, label.as_str()))
            }
            Err(e) => panic!("{label}: {e}"),
            Ok(_) => panic!("{label} was applied"),
        }
        assert_eq!(
            (backend.load().unwrap(), backend.history().unwrap()),
            before,
            "{label}"
        );
        assert_eq!(backend.serial().unwrap(), serial);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::{MemoryBackend, Number};
    use crate::backend::sqlite::SqliteTarget;

    /// A backend under test, with the way to write behind its back.
    struct Subject {
        backend: Box<dyn Backend>,
        behind: Box<dyn FnMut(&Outside)>,
        _dir: Option<tempfile::TempDir>,
    }

    fn memory() -> Subject {
        let backend = MemoryBackend::new();
        let other = backend.clone();
        Subject {
            backend: Box::new(backend),
            behind: Box::new(move |write| {
                other.write_behind(|store| match write {
                    Outside::SetMobile { username, mobile } => {
                        let user = store.users.get_mut(*username);
                        user.map(|user| user.fields[4] = t(mobile))
                            .into_iter()
                            .count()
                    }
                    Outside::DeleteExtension(number) => store
                        .extensions
                        .remove(&Number(t(number)))
                        .into_iter()
                        .count(),
                })
            }),
            _dir: None,
        }
    }

    fn sqlite() -> Subject {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let backend = SqliteTarget::open(&path).unwrap();
        Subject {
            backend: Box::new(backend),
            behind: Box::new(move |write| {
                let other = rusqlite::Connection::open(&path).unwrap();
                match write {
                    Outside::SetMobile { username, mobile } => other.execute(
                        "UPDATE users SET mobile = ?2 WHERE username = ?1",
                        [username, mobile],
                    ),
                    Outside::DeleteExtension(number) => {
                        other.execute("DELETE FROM extensions WHERE number = ?1", [number])
                    }
                }
                .unwrap();
            }),
            _dir: Some(dir),
        }
    }

    macro_rules! cases {
        ($($case:ident),* $(,)?) => {
            /// Every case against each backend: one line a backend, with the
            /// function that makes its subject for a test (`None`: skipped,
            /// said loudly).
            macro_rules! against {
                ($backend:ident, $make:ident) => {
                    mod $backend {
                        $(
                            #[test]
                            fn $case() {
                                if let Some(mut subject) = super::$make(stringify!($case)) {
                                    super::super::$case(subject.backend.as_mut(), &mut subject.behind);
                                }
                            }
                        )*
                    }
                };
            }
        };
    }

    cases!(
        creates,
        updates,
        reassignments,
        prunes,
        a_failed_apply_writes_nothing,
        a_stale_plan_is_refused,
        a_write_behind_the_back_bumps_the_serial,
        history_keeps_records_in_order,
        the_lock_has_one_holder,
        inventory_and_licenses,
        row_digests_when_kept,
        applies_after_the_reads_of_a_plan,
        phones_and_the_registrar,
        actions_that_cannot_be_applied,
    );

    /// A schema of its own on the server of `PBXSYNC_TEST_POSTGRES`, or `None`
    /// (said loudly) without one.
    fn postgres_in(test: &str) -> Option<Subject> {
        use crate::backend::postgres::{PostgresTarget, testing};
        let url = testing::server(test)?;
        let scratch = testing::Scratch::new(&url, test);
        let backend = PostgresTarget::open(&url, Some(&scratch.schema)).unwrap();
        Some(Subject {
            backend: Box::new(backend),
            behind: Box::new(move |write| {
                let mut other = scratch.client();
                match write {
                    Outside::SetMobile { username, mobile } => other.execute(
                        "UPDATE users SET mobile = $2 WHERE username = $1",
                        &[username, mobile],
                    ),
                    Outside::DeleteExtension(number) => {
                        other.execute("DELETE FROM extensions WHERE number = $1", &[number])
                    }
                }
                .unwrap();
            }),
            _dir: None,
        })
    }

    fn memory_for(_test: &str) -> Option<Subject> {
        Some(memory())
    }

    fn sqlite_for(_test: &str) -> Option<Subject> {
        Some(sqlite())
    }

    against!(memory, memory_for);
    against!(sqlite, sqlite_for);
    against!(postgres, postgres_in);

    use proptest::prelude::*;

    /// Memory first (the reference), then SQLite, then PostgreSQL when there is
    /// a server.
    fn every_backend(test: &str) -> Vec<Subject> {
        [memory(), sqlite()]
            .into_iter()
            .chain(postgres_in(test))
            .collect()
    }

    const NUMBERS: [&str; 8] = ["20", "99", "0100", "100", "1001", "1002", "1010", "2000"];
    const USERS: [&str; 4] = ["user0", "user1", "user2", "user3"];
    const DEVICES: [&str; 4] = [D1, D2, D3, D4];
    const DESCRIPTIONS: [&str; 3] = ["", "Desk", "Front desk"];

    /// One desired directory: rows by extension (user, device cell, description),
    /// a version of each user's names, how it is planned, and a write behind the
    /// back before it.
    #[derive(Debug, Clone)]
    struct Step {
        /// By extension: the device cell and the description. The user of an
        /// extension is fixed by its number: an extension never changes hands.
        rows: std::collections::BTreeMap<usize, (usize, usize)>,
        names: [bool; 4],
        prune: bool,
        voicemail: bool,
        behind: Option<usize>,
    }

    fn step() -> impl Strategy<Value = Step> {
        (
            prop::collection::btree_map(0..NUMBERS.len(), (0..6usize, 0..3usize), 1..8),
            any::<[bool; 4]>(),
            any::<bool>(),
            any::<bool>(),
            prop::option::of(0..USERS.len() + NUMBERS.len()),
        )
            .prop_map(|(rows, names, prune, voicemail, behind)| Step {
                rows,
                names,
                prune,
                voicemail,
                behind,
            })
    }

    impl Step {
        /// The rows as CSV; a device already given to an earlier row is left out.
        fn csv(&self) -> String {
            let mut given = std::collections::BTreeSet::new();
            self.rows
                .iter()
                .map(|(&number, &(device, description))| {
                    let user = number % USERS.len();
                    let device = match device {
                        0..4 if given.insert(device) => DEVICES[device],
                        4 => "virtual",
                        _ => "",
                    };
                    let last = if self.names[user] { "Smith" } else { "Jones" };
                    format!(
                        "{},First,{last},{},Welcome_2026,{},{}@example.com,,,{device}\n",
                        NUMBERS[number], USERS[user], DESCRIPTIONS[description], USERS[user]
                    )
                })
                .collect()
        }

        fn outside(&self) -> Option<Outside> {
            self.behind.map(|i| match i {
                0..4 => Outside::SetMobile {
                    username: USERS[i],
                    mobile: "+1 555 0100",
                },
                _ => Outside::DeleteExtension(NUMBERS[(i - USERS.len()) % NUMBERS.len()]),
            })
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Random sequences of desired directories, with writes behind the back
        /// between them, read back the same from every backend, and as `simulate`
        /// says (`apply_rows` checks that).
        #[test]
        fn backends_agree_on_random_sequences(steps in prop::collection::vec(step(), 1..5)) {
            let mut subjects = every_backend("backends_agree_on_random_sequences");
            for step in &steps {
                let opts = Opts {
                    prune: step.prune,
                    reassigned_becomes: if step.voicemail {
                        ExtensionKind::VoicemailOnly
                    } else {
                        ExtensionKind::Virtual
                    },
                };
                let rows = step.csv();
                for subject in &mut subjects {
                    if let Some(write) = step.outside() {
                        (subject.behind)(&write);
                    }
                    apply_rows(subject.backend.as_mut(), &rows, &opts);
                }
                let (memory, others) = subjects.split_first_mut().unwrap();
                for other in others {
                    prop_assert_eq!(memory.backend.load().unwrap(), other.backend.load().unwrap());
                    prop_assert_eq!(memory.backend.history().unwrap(), other.backend.history().unwrap());
                }
            }
        }

        /// A plan applied after others wrote (at the serial it then has, as if
        /// planned after them) succeeds or fails alike on every backend: on
        /// failure nothing is written and an action of the plan is named (not
        /// always the same one: see the comment below); on success the same
        /// read-back.
        #[test]
        fn backends_agree_on_plans_overtaken_by_other_writes(
            first in step(),
            second in step(),
            writes in prop::collection::vec(0..USERS.len() + NUMBERS.len(), 1..4),
        ) {
            let mut subjects = every_backend("backends_agree_on_plans_overtaken_by_other_writes");
            let mut outcomes = Vec::new();
            for subject in &mut subjects {
                let backend = subject.backend.as_mut();
                apply_rows(backend, &first.csv(), &Opts::default());
                let opts = Opts { prune: second.prune, ..Opts::default() };
                let made = make(backend, &second.csv(), &opts);
                for &write in &writes {
                    let write = Step { behind: Some(write), ..second.clone() }.outside();
                    (subject.behind)(&write.unwrap());
                }
                let backend = subject.backend.as_mut();
                let before = backend.load().unwrap();
                let serial = backend.serial().unwrap();
                let outcome = match apply_at(backend, &made, serial) {
                    Ok(_) => None,
                    Err(BackendError::ActionFailed { index, action, .. }) => {
                        prop_assert_eq!(backend.load().unwrap(), before);
                        prop_assert_eq!(backend.serial().unwrap(), serial);
                        // Which one, when several fail, is the backend's order
                        // within a phase: each names an action of the plan.
                        let named = made.actions.get(index).map(|a| a.action.label());
                        prop_assert_eq!(named.as_deref(), Some(action.as_str()));
                        Some(())
                    }
                    Err(e) => panic!("{e}"),
                };
                outcomes.push((outcome, backend.load().unwrap()));
            }
            for outcome in &outcomes[1..] {
                prop_assert_eq!(&outcomes[0], outcome);
            }
        }
    }
}
