//! The plan carried out on an in-memory directory: the reference semantics of every
//! action, used by the license check and by the property tests (the SQL targets must
//! agree with it).

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
    for a in actions {
        match &a.action {
            Action::CreateDevice { device, model } => devices.push(Device {
                id: device.clone(),
                model: model.clone(),
            }),
            Action::CreateUser { username, changes } => {
                let mut user = User {
                    username: username.clone(),
                    fields: Default::default(),
                };
                set_fields(&mut user, changes);
                users.insert(username.clone(), user);
            }
            Action::UpdateUser { username, changes } => {
                if let Some(user) = users.get_mut(username) {
                    set_fields(user, changes);
                }
            }
            Action::AddExtension {
                username,
                extension,
                kind,
                device,
                changes,
            } => {
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
            Action::UpdateExtension {
                extension,
                kind,
                device,
                changes,
                ..
            } => {
                if let Some(e) = exts.get_mut(extension) {
                    e.kind = *kind;
                    e.device = device.clone();
                    if let Some(d) = Change::value_of(changes, "description") {
                        e.description = Text::from(d);
                    }
                }
            }
            Action::ReassignDevice {
                device,
                from_extension,
                to_extension,
                from_becomes,
                ..
            } => {
                if let Some(from) = exts.get_mut(from_extension)
                    && from.device.as_ref() == Some(device)
                {
                    from.device = None;
                    if *from_becomes != ExtensionKind::Device {
                        from.kind = *from_becomes;
                    }
                }
                if let Some(to) = exts.get_mut(to_extension) {
                    to.device = Some(device.clone());
                    to.kind = ExtensionKind::Device;
                }
            }
            Action::RemoveExtension { extension, .. } => {
                exts.remove(extension);
            }
            Action::RemoveUser { username } => {
                users.remove(username);
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
