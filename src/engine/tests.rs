//! The engine's outcomes, without the CLI: what `plan`, `apply` and `status` are
//! given to render.

use super::*;
use crate::engine::{ApplyOutcome, Prepared, Refusal};

const CSV: &str = "Extension,First Name,Last Name,Web Username,Password,Description,Email,IM,Mobile,Device MAC Address\n\
1001,Jason,Flynn,jflynn,Welcome_2026,Director,jason@example.com,,,0004F2A10001\n\
1002,Maria,Garcia,mgarcia,Sales_4ever42,Sales,maria@example.com,,,virtual\n";

/// A config in a fresh directory, with the CSV as `users.csv`, the two devices it
/// may name in `devices.csv`, and the target `state.db` (not created yet).
fn setup(csv: &str) -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users.csv"), csv).unwrap();
    std::fs::write(
        dir.path().join("devices.csv"),
        "id,model\n0004F2A10001,VVX 450\n0004F2A10002,VVX 450\n",
    )
    .unwrap();
    let yaml = "source:\n  path: users.csv\ninventory: devices.csv\ntarget: sqlite:state.db\npolicy:\n  password_hash: { m_cost_kib: 8, t_cost: 1, p_cost: 1 }\n";
    let path = dir.path().join("pbxsync.yaml");
    std::fs::write(&path, yaml).unwrap();
    let config = Config::load(&path).unwrap();
    (dir, config)
}

fn request(dir: &tempfile::TempDir) -> Request {
    Request {
        source: SourceChoice::File(dir.path().join("users.csv")),
        options: SyncOptions::default(),
    }
}

fn ready(prepared: Prepared) -> Box<Ready> {
    match prepared {
        Prepared::Ready(ready) => ready,
        Prepared::Invalid(p) => panic!("invalid: {:?}", p.plan.errors),
        _ => panic!("not ready to apply"),
    }
}

#[test]
fn a_plan_is_applied_and_then_nothing_is_left_to_do() {
    let (dir, config) = setup(CSV);
    let engine = Engine::new(&config, EngineOptions::default());
    let request = request(&dir);
    let mut phases = Vec::new();
    let planned = match engine
        .plan(&request, true, &mut |e| {
            if let Event::Phase(p) = e {
                phases.push(p.to_string())
            }
        })
        .unwrap()
    {
        PlanOutcome::Planned(p) => p,
        _ => panic!("expected a plan"),
    };
    assert_eq!(planned.plan.summary().create_user, 2);
    assert_eq!(planned.serial, 0);
    assert!(phases.iter().any(|p| p == "read the source"), "{phases:?}");
    // A plan writes nothing: the target is still absent.
    assert!(!dir.path().join("state.db").exists());

    let ready = ready(engine.prepare_apply(None, &request, &mut |_| {}).unwrap());
    assert!(!ready.saved());
    let mut started = None;
    let outcome = engine
        .apply(*ready, &mut |e| {
            if let Event::Progress(Progress::Started { total }) = e {
                started = Some(total)
            }
        })
        .unwrap();
    let ApplyOutcome::Applied { report, summary } = outcome else {
        panic!("expected an apply");
    };
    assert_eq!(report.serial, 1);
    assert_eq!(summary.create_user, 2);
    assert_eq!(started, Some(summary.total as usize));

    match engine.plan(&request, true, &mut |_| {}).unwrap() {
        PlanOutcome::Planned(p) => assert!(!p.plan.has_changes()),
        _ => panic!("expected an empty plan"),
    }
    let status = engine.status(&mut |_| {}).unwrap().unwrap();
    assert_eq!(status.serial, 1);
    assert_eq!(status.counts.users, 2);
    assert!(status.lock_holder.is_none());
    assert!(status.drift.is_some_and(|d| !d.has_changes()));
}

#[test]
fn a_second_apply_is_refused_while_the_first_holds_the_lock() {
    let (dir, config) = setup(CSV);
    let engine = Engine::new(&config, EngineOptions::default());
    let request = request(&dir);
    let first = ready(engine.prepare_apply(None, &request, &mut |_| {}).unwrap());
    match engine.prepare_apply(None, &request, &mut |_| {}).unwrap() {
        Prepared::Refused(Refusal::Locked(holder)) => assert_eq!(holder.pid, std::process::id()),
        _ => panic!("expected a refusal"),
    }
    // The lock goes with the prepared apply.
    drop(first);
    ready(engine.prepare_apply(None, &request, &mut |_| {}).unwrap());
}

#[test]
fn a_file_with_errors_is_invalid_and_creates_no_state() {
    let (dir, config) = setup(&CSV.replace("mgarcia", ""));
    let engine = Engine::new(&config, EngineOptions::default());
    let request = request(&dir);
    match engine.plan(&request, true, &mut |_| {}).unwrap() {
        PlanOutcome::Invalid(p) => {
            assert!(!p.plan.errors.is_empty());
            assert!(p.plan.actions.is_empty());
        }
        _ => panic!("expected an invalid plan"),
    }
    assert!(matches!(
        engine.prepare_apply(None, &request, &mut |_| {}).unwrap(),
        Prepared::Invalid(_)
    ));
    assert!(!dir.path().join("state.db").exists());
    assert!(engine.status(&mut |_| {}).unwrap().is_none());
}

#[test]
fn the_whole_directory_plan_is_the_plan_of_the_changed_rows() {
    let (dir, config) = setup(CSV);
    let engine = Engine::new(&config, EngineOptions::default());
    let request = request(&dir);
    let ready = ready(engine.prepare_apply(None, &request, &mut |_| {}).unwrap());
    engine.apply(*ready, &mut |_| {}).unwrap();
    std::fs::write(
        dir.path().join("users.csv"),
        CSV.replace("Director", "Owner")
            .replace("virtual", "0004F2A10002"),
    )
    .unwrap();
    let actions = |options: EngineOptions| {
        let engine = Engine::new(&config, options);
        let mut paths = Vec::new();
        let outcome = engine.plan(&request, true, &mut |e| {
            if let Event::Planned(path) = e {
                paths.push(path)
            }
        });
        match outcome.unwrap() {
            PlanOutcome::Planned(p) => {
                // The event tells what the outcome does.
                assert_eq!(paths, [p.path]);
                (p.plan.actions, p.path)
            }
            _ => panic!("expected a plan"),
        }
    };
    let (changed, changed_path) = actions(EngineOptions::default());
    let (whole, whole_path) = actions(EngineOptions {
        full_plan: true,
        ..EngineOptions::default()
    });
    assert_eq!(changed.len(), 2);
    assert_eq!(changed, whole);
    // Only the first read the changed rows alone: the two that changed.
    assert_eq!(changed_path, PlanPath::ChangedRows { rows: 2 });
    assert_eq!(whole_path, PlanPath::WholeDirectory);
}
