//! The order an apply runs in: what each action means, phase by phase. Every
//! backend runs these phases (and may sort the actions inside a phase for
//! speed), and `simulate` runs them too, so that the two agree.
//!
//! A device is held by one extension at a time, so the phases never let two
//! extensions hold one at once, whatever the order of the plan: devices and
//! users first; then every extension whose device changes or is reassigned lets
//! go of it; then removed extensions go; then extensions get their final state;
//! then the side of a reassignment that gives its device up, then the side that
//! takes it; removed users go last, once no extension refers to them.

use super::{Action, Change, PlannedAction};
use crate::model::ExtensionKind;
use std::collections::HashSet;

/// One phase of an apply, and what part of its actions runs in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `CreateDevice` and `CreateUser` run whole; `UpdateUser` runs whole.
    CreateDevicesAndUsers,
    /// `UpdateExtension` that changes the device, and both extensions of a
    /// `ReassignDevice`, let go of the devices they hold.
    ReleaseDevices,
    /// `RemoveExtension` runs whole: a removed extension needs no release.
    RemoveExtensions,
    /// `AddExtension` and `UpdateExtension` run whole.
    SetExtensions,
    /// The extension a `ReassignDevice` takes a device from becomes what it
    /// says. Left out when that extension is removed, or when it becomes a
    /// `Device` extension (its own `UpdateExtension` gives it another device).
    GiveUpDevices,
    /// The extension a `ReassignDevice` gives a device to takes it.
    TakeDevices,
    /// `RemoveUser` runs whole.
    RemoveUsers,
}

/// The phases, in the order an apply runs them.
pub const PHASES: [Phase; 7] = [
    Phase::CreateDevicesAndUsers,
    Phase::ReleaseDevices,
    Phase::RemoveExtensions,
    Phase::SetExtensions,
    Phase::GiveUpDevices,
    Phase::TakeDevices,
    Phase::RemoveUsers,
];

/// Whether `changes` changes `field`.
pub fn changes_field(changes: &[Change], field: &str) -> bool {
    changes.iter().any(|c| c.field == field)
}

/// Every phase with the actions that take part in it (indexes into `actions`,
/// in the order of the plan), in the order an apply runs them.
pub fn order(actions: &[PlannedAction]) -> Vec<(Phase, Vec<usize>)> {
    let removed: HashSet<&str> = actions
        .iter()
        .filter_map(|planned| match &planned.action {
            Action::RemoveExtension { extension, .. } => Some(extension.as_str()),
            _ => None,
        })
        .collect();
    PHASES
        .iter()
        .map(|&phase| {
            let taking_part = actions
                .iter()
                .enumerate()
                .filter(|(_, planned)| takes_part(phase, &planned.action, &removed))
                .map(|(i, _)| i)
                .collect();
            (phase, taking_part)
        })
        .collect()
}

fn takes_part(phase: Phase, action: &Action, removed: &HashSet<&str>) -> bool {
    match (phase, action) {
        (
            Phase::CreateDevicesAndUsers,
            Action::CreateDevice { .. } | Action::CreateUser { .. } | Action::UpdateUser { .. },
        ) => true,
        (Phase::ReleaseDevices, Action::UpdateExtension { changes, .. }) => {
            changes_field(changes, "device")
        }
        (Phase::ReleaseDevices | Phase::TakeDevices, Action::ReassignDevice { .. }) => true,
        (Phase::RemoveExtensions, Action::RemoveExtension { .. }) => true,
        (Phase::SetExtensions, Action::AddExtension { .. } | Action::UpdateExtension { .. }) => {
            true
        }
        (
            Phase::GiveUpDevices,
            Action::ReassignDevice {
                from_extension,
                from_becomes,
                ..
            },
        ) => *from_becomes != ExtensionKind::Device && !removed.contains(from_extension.as_str()),
        (Phase::RemoveUsers, Action::RemoveUser { .. }) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Text;

    fn planned(action: Action) -> PlannedAction {
        PlannedAction {
            action,
            line: None,
            blame: None,
        }
    }

    fn reassign(from: &str, to: &str, from_becomes: ExtensionKind) -> Action {
        Action::ReassignDevice {
            username: Text::from("bob"),
            device: Text::from("D1"),
            from_extension: Text::from(from),
            to_extension: Text::from(to),
            from_becomes,
        }
    }

    #[test]
    fn every_action_runs_whole_once_and_reassignments_in_three_parts() {
        let actions: Vec<PlannedAction> = [
            Action::RemoveUser {
                username: Text::from("old"),
            },
            reassign("1001", "1002", ExtensionKind::VoicemailOnly),
            Action::RemoveExtension {
                username: Text::from("old"),
                extension: Text::from("1009"),
                device: None,
            },
            reassign("1009", "1003", ExtensionKind::VoicemailOnly),
            reassign("1004", "1005", ExtensionKind::Device),
            Action::CreateUser {
                username: Text::from("new"),
                changes: vec![],
            },
        ]
        .into_iter()
        .map(planned)
        .collect();
        let phases = order(&actions);
        assert_eq!(
            phases.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            PHASES.to_vec()
        );
        let of = |phase: Phase| &phases.iter().find(|(p, _)| *p == phase).unwrap().1;
        assert_eq!(of(Phase::CreateDevicesAndUsers), &vec![5]);
        assert_eq!(of(Phase::ReleaseDevices), &vec![1, 3, 4]);
        assert_eq!(of(Phase::RemoveExtensions), &vec![2]);
        assert_eq!(of(Phase::SetExtensions), &Vec::<usize>::new());
        // Not the removed 1009, not 1004 that gets a device of its own.
        assert_eq!(of(Phase::GiveUpDevices), &vec![1]);
        assert_eq!(of(Phase::TakeDevices), &vec![1, 3, 4]);
        assert_eq!(of(Phase::RemoveUsers), &vec![0]);
    }
}
