//! The plan carried out on an in-memory directory: the reference semantics of every
//! action, run in the phases of `order` as a backend runs them, used by the
//! property tests (the backends must agree with it).

use super::order::{Phase, changes_field, order};
use super::{Action, Change, PlannedAction};
use crate::model::{
    Device, Directory, Extension, ExtensionKind, Text, USER_COLUMNS, User, cmp_extension,
};
use std::collections::BTreeMap;

/// The directory after the actions, every list sorted.
pub fn apply(current: &Directory, actions: &[PlannedAction]) -> Directory {
    let mut users: BTreeMap<Text, User> = current
        .users
        .iter()
        .map(|u| (u.username.clone(), u.clone()))
        .collect();
    let mut exts: BTreeMap<Text, Extension> = current
        .extensions
        .iter()
        .map(|e| (e.number.clone(), e.clone()))
        .collect();
    let mut devices = current.devices.clone();
    let set_fields = |user: &mut User, changes: &[Change]| {
        for c in changes {
            if let Some(k) = USER_COLUMNS.iter().position(|col| col.field() == c.field) {
                user.fields[k] = c.to.clone().unwrap_or_default();
            }
        }
    };
    for (phase, taking_part) in order(actions) {
        for i in taking_part {
            match (phase, &actions[i].action) {
                (_, Action::CreateDevice { device, model }) => devices.push(Device {
                    id: device.clone(),
                    model: model.clone(),
                }),
                (_, Action::CreateUser { username, changes }) => {
                    let mut user = User {
                        username: username.clone(),
                        fields: Default::default(),
                    };
                    set_fields(&mut user, changes);
                    users.insert(username.clone(), user);
                }
                (_, Action::UpdateUser { username, changes }) => {
                    if let Some(user) = users.get_mut(username) {
                        set_fields(user, changes);
                    }
                }
                (Phase::ReleaseDevices, Action::UpdateExtension { extension, .. }) => {
                    if let Some(e) = exts.get_mut(extension) {
                        e.device = None;
                    }
                }
                (
                    Phase::ReleaseDevices,
                    Action::ReassignDevice {
                        from_extension,
                        to_extension,
                        ..
                    },
                ) => {
                    for number in [from_extension, to_extension] {
                        if let Some(e) = exts.get_mut(number) {
                            e.device = None;
                        }
                    }
                }
                (
                    _,
                    Action::AddExtension {
                        username,
                        extension,
                        kind,
                        device,
                        changes,
                    },
                ) => {
                    exts.insert(
                        extension.clone(),
                        Extension {
                            number: extension.clone(),
                            username: username.clone(),
                            kind: *kind,
                            device: device.clone(),
                            description: Text::from(
                                Change::value_of(changes, "description").unwrap_or(""),
                            ),
                        },
                    );
                }
                // Only what changes is set: a device that changes was released.
                (
                    _,
                    Action::UpdateExtension {
                        extension,
                        kind,
                        device,
                        changes,
                        ..
                    },
                ) => {
                    if let Some(e) = exts.get_mut(extension) {
                        if changes_field(changes, "kind") {
                            e.kind = *kind;
                        }
                        if changes_field(changes, "device") && device.is_some() {
                            e.device = device.clone();
                        }
                        if let Some(d) = Change::value_of(changes, "description") {
                            e.description = Text::from(d);
                        }
                    }
                }
                (
                    Phase::GiveUpDevices,
                    Action::ReassignDevice {
                        from_extension,
                        from_becomes,
                        ..
                    },
                ) => {
                    if let Some(from) = exts.get_mut(from_extension) {
                        from.device = None;
                        from.kind = *from_becomes;
                    }
                }
                (
                    _,
                    Action::ReassignDevice {
                        device,
                        to_extension,
                        ..
                    },
                ) => {
                    if let Some(to) = exts.get_mut(to_extension) {
                        to.device = Some(device.clone());
                        to.kind = ExtensionKind::Device;
                    }
                }
                (_, Action::RemoveExtension { extension, .. }) => {
                    exts.remove(extension);
                }
                (_, Action::RemoveUser { username }) => {
                    users.remove(username);
                }
            }
        }
    }
    let mut extensions: Vec<Extension> = exts.into_values().collect();
    extensions.sort_by(|a, b| cmp_extension(&a.number, &b.number));
    let mut dir = Directory {
        users: users.into_values().collect(),
        extensions,
        devices,
        licenses: current.licenses,
    };
    dir.sort();
    dir
}
