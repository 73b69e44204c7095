//! Tests of the SQLite backend; the helpers here build plans and a seeded file.

use super::schema::{APPLICATION_ID, MIGRATIONS, OWN_TRIGGERS};
use super::tuning::PAGE_SIZE;
use super::write::{Secrets, is_constraint};
use super::*;
use crate::backend::{
    ApplyLock, HistoryRecord, Inventory, Ledger, Models, RecordedCsv, RowDigests,
};
use crate::model::{ExtensionKind, Licenses};
use crate::plan::{Action, Change, PlannedAction, Summary};
use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;

mod file;
mod records;
mod write;

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
        kept: None,
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
