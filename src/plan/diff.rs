//! The diff: desired × current → actions and the errors that need the target.
//! Pure: no I/O, deterministic order (by action type, then by key).

use super::{Action, Change, Plan, PlannedAction};
use crate::FastMap;
use crate::diagnostic::{Code, Diagnostic, Sink};
use crate::model::{
    Column, Desired, DesiredExtension, DeviceCell, Directory, Extension, ExtensionKind,
    SortedCursor, Text, USER_COLUMNS, cmp_extension,
};

/// What the diff needs besides the two states.
#[derive(Debug, Clone)]
pub struct DiffOptions {
    /// Remove extensions missing from the CSV, and users left without extensions.
    pub prune: bool,
    /// Set the password of existing users from the Password cell.
    pub reset_passwords: bool,
    /// Usernames whose Password cell changed since the last applied revision,
    /// sorted; their passwords are set without `reset_passwords` (SPEC section 3,
    /// rule 9).
    pub password_changed: Vec<Text>,
    /// What an extension becomes when its device moves to another extension.
    pub reassigned_becomes: ExtensionKind,
    /// Devices that must exist (the config's inventory file), sorted by id.
    pub inventory: Vec<crate::model::Device>,
    /// Extensions that a caller diffing part of the directory removes itself
    /// (sorted by number): a device they hold is freed, not reassigned, as
    /// `prune` does for the extensions the CSV leaves out.
    pub removed: Vec<Text>,
    /// The file's column number of each column, for diagnostics.
    pub columns: [Option<u32>; 10],
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            prune: false,
            reset_passwords: false,
            password_changed: Vec::new(),
            reassigned_becomes: ExtensionKind::Virtual,
            inventory: Vec::new(),
            removed: Vec::new(),
            columns: std::array::from_fn(|i| u32::try_from(i + 1).ok()),
        }
    }
}

struct Builder<'a> {
    desired: &'a Desired,
    current: &'a Directory,
    opts: &'a DiffOptions,
    errors: Sink,
    /// Devices of the inventory file that the target lacks, sorted.
    new_devices: Vec<&'a crate::model::Device>,
    /// Who holds each device now: device id → index into current.extensions.
    /// Built on first use: a plan where no device moves never needs it. foldhash,
    /// not the standard SipHash: at a million extensions building it took 6% of a
    /// full plan.
    holders: Option<FastMap<&'a str, usize>>,
}

impl<'a> Builder<'a> {
    /// The extension that holds a device now.
    fn holder(&mut self, device: &str) -> Option<&'a Extension> {
        let current = self.current;
        let holders = self.holders.get_or_insert_with(|| {
            let mut holders =
                FastMap::with_capacity_and_hasher(current.extensions.len(), Default::default());
            holders.extend(
                current
                    .extensions
                    .iter()
                    .enumerate()
                    .filter_map(|(i, e)| e.device.as_deref().map(|d| (d, i))),
            );
            holders
        });
        holders.get(device).map(|&i| &current.extensions[i])
    }

    fn error(&mut self, line: u32, column: Column, code: Code, message: String, hint: String) {
        self.errors
            .push(error_at(self.opts, line, column, code, message, hint));
    }

    fn device_known(&self, id: &str) -> bool {
        self.current.device(id).is_some()
            || self
                .new_devices
                .binary_search_by(|d| d.id.as_str().cmp(id))
                .is_ok()
    }

    /// The device the O-for-zero / I-or-L-for-one slip would have meant.
    fn did_you_mean(&self, id: &str) -> Option<String> {
        crate::validate::rules::slip_fixed(id).filter(|fixed| self.device_known(fixed))
    }

    /// The kind and device an extension ends with, from its row.
    fn target_of(
        &mut self,
        row: &DesiredExtension,
        current: Option<&Extension>,
    ) -> (ExtensionKind, Option<Text>) {
        match &row.device {
            DeviceCell::Virtual => (ExtensionKind::Virtual, None),
            DeviceCell::Keep => match current {
                Some(c) => (c.kind, c.device.clone()),
                None => (ExtensionKind::VoicemailOnly, None),
            },
            DeviceCell::Device(id) => {
                let unchanged = current.is_some_and(|c| c.device.as_ref() == Some(id));
                if !unchanged && !self.device_known(id) {
                    let hint = match self.did_you_mean(id) {
                        Some(m) => format!("did you mean {m}?"),
                        None => "add it with `pbxsync devices add` or to the inventory file, or check the MAC on the phone's label".into(),
                    };
                    self.error(
                        row.line,
                        Column::Device,
                        Code::DeviceNotFound,
                        format!("device {id} does not exist in the inventory"),
                        hint,
                    );
                }
                (ExtensionKind::Device, Some(id.clone()))
            }
        }
    }

    /// What the extension that holds a device now becomes when the device moves.
    fn becomes_when_released(&self, holder: &Extension) -> ExtensionKind {
        match self.desired.extension(&holder.number).map(|r| &r.device) {
            Some(DeviceCell::Device(id)) if Some(id) != holder.device.as_ref() => {
                ExtensionKind::Device
            }
            Some(DeviceCell::Virtual) => ExtensionKind::Virtual,
            _ => self.opts.reassigned_becomes,
        }
    }

    /// The extensions to add and to update, and the devices to reassign.
    fn plan_extensions(&mut self) -> ExtensionActions {
        let mut out = ExtensionActions::default();
        let mut extensions = SortedCursor::new(&self.current.extensions);
        for row in &self.desired.extensions {
            let current_ext = extensions.find(|e| cmp_extension(&e.number, &row.number));
            if let Some(cur) = current_ext
                && cur.username != row.username
            {
                self.error(
                    row.line,
                    Column::Extension,
                    Code::ExtensionOwnedByOtherUser,
                    format!(
                        "extension {} belongs to user {}, not {}; an extension never moves from one user to another",
                        row.number, cur.username, row.username
                    ),
                    format!(
                        "give {} another extension, or remove {} from {} first",
                        row.username, row.number, cur.username
                    ),
                );
                continue;
            }
            let (kind, device) = self.target_of(row, current_ext);
            // The device moves from the extension that holds it now.
            let moving_from = match (&device, current_ext) {
                (Some(d), Some(cur)) if cur.device.as_ref() == Some(d) => None,
                (Some(d), _) => self.holder(d).filter(|holder| holder.number != row.number),
                (None, _) => None,
            };
            let reassign = moving_from
                .filter(|holder| {
                    (!self.opts.prune || self.desired.extension(&holder.number).is_some())
                        && self
                            .opts
                            .removed
                            .binary_search_by(|n| cmp_extension(n, &holder.number))
                            .is_err()
                })
                .map(|holder| PlannedAction {
                    action: Action::ReassignDevice {
                        username: row.username.clone(),
                        device: device.clone().unwrap_or_default(),
                        from_extension: holder.number.clone(),
                        to_extension: row.number.clone(),
                        from_becomes: self.becomes_when_released(holder),
                    },
                    line: Some(row.line),
                    blame: None,
                });
            let description_managed = self.desired.managed.contains(Column::Description);
            match current_ext {
                None => {
                    let mut changes = Vec::new();
                    if description_managed && !row.description.is_empty() {
                        changes.push(Change::new("description", None, &row.description));
                    }
                    out.add.push(PlannedAction {
                        action: Action::AddExtension {
                            username: row.username.clone(),
                            extension: row.number.clone(),
                            kind,
                            device,
                            changes,
                        },
                        line: Some(row.line),
                        blame: None,
                    });
                }
                Some(cur) => {
                    let mut changes = Vec::new();
                    if description_managed && row.description != cur.description {
                        changes.push(Change::new(
                            "description",
                            Some(&cur.description),
                            &row.description,
                        ));
                    }
                    // A device that arrives by reassignment is shown by that action.
                    if reassign.is_none() {
                        if kind != cur.kind {
                            changes.push(Change::new(
                                "kind",
                                Some(cur.kind.as_str()),
                                kind.as_str(),
                            ));
                        }
                        if device != cur.device {
                            changes.push(Change::new(
                                "device",
                                Some(cur.device.as_deref().unwrap_or("")),
                                device.as_deref().unwrap_or(""),
                            ));
                        }
                    }
                    if !changes.is_empty() {
                        out.update.push(PlannedAction {
                            action: Action::UpdateExtension {
                                username: row.username.clone(),
                                extension: row.number.clone(),
                                kind,
                                device,
                                changes,
                            },
                            line: Some(row.line),
                            blame: None,
                        });
                    }
                }
            }
            out.reassign.extend(reassign);
        }
        out
    }
}

/// The extensions to add and to update, and the devices to reassign.
#[derive(Default)]
struct ExtensionActions {
    add: Vec<PlannedAction>,
    update: Vec<PlannedAction>,
    reassign: Vec<PlannedAction>,
}

/// The error `message` at a cell, with its hint.
fn error_at(
    opts: &DiffOptions,
    line: u32,
    column: Column,
    code: Code,
    message: String,
    hint: String,
) -> Diagnostic {
    let mut d = Diagnostic::error(code, message)
        .at_line(line)
        .with_hint(hint);
    d.column = opts.columns[column.index()];
    d
}

/// The users to create and to update, and the errors of new users without a
/// password.
fn plan_users(
    desired: &Desired,
    current: &Directory,
    opts: &DiffOptions,
) -> (Vec<PlannedAction>, Vec<PlannedAction>, Sink) {
    let managed = desired.managed;
    let mut create_users = Vec::new();
    let mut update_users = Vec::new();
    let mut errors = Sink::default();
    // Both sides are sorted by the same key: walk them together (a merge join)
    // instead of searching one for every entry of the other.
    let mut users = SortedCursor::new(&current.users);
    for user in &desired.users {
        let existing = users.find(|u| u.username.cmp(&user.username));
        let set_password = |existing: bool| {
            user.password.is_some()
                && (!existing
                    || opts.reset_passwords
                    || opts.password_changed.binary_search(&user.username).is_ok())
        };
        match existing {
            None => {
                // One allocation: every field and the password.
                let mut changes = Vec::with_capacity(USER_COLUMNS.len() + 1);
                changes.extend(
                    USER_COLUMNS
                        .iter()
                        .enumerate()
                        .filter(|(k, c)| managed.contains(**c) && !user.fields[*k].is_empty())
                        .map(|(k, c)| Change::new(c.field(), None, &user.fields[k])),
                );
                if set_password(false) {
                    changes.push(Change::password());
                } else {
                    errors.push(error_at(
                        opts,
                        user.line,
                        Column::Password,
                        Code::MissingRequired,
                        format!("{} is a new user and needs a password", user.username),
                        "fill in the Password cell of one of the user's rows".into(),
                    ));
                }
                create_users.push(PlannedAction {
                    action: Action::CreateUser {
                        username: user.username.clone(),
                        changes,
                    },
                    line: Some(user.line),
                    blame: None,
                });
            }
            Some(cur) => {
                let mut changes: Vec<Change> = USER_COLUMNS
                    .iter()
                    .enumerate()
                    .filter(|(k, c)| managed.contains(**c) && user.fields[*k] != cur.fields[*k])
                    .map(|(k, c)| Change::new(c.field(), Some(&cur.fields[k]), &user.fields[k]))
                    .collect();
                if set_password(true) {
                    changes.push(Change::password());
                }
                if !changes.is_empty() {
                    update_users.push(PlannedAction {
                        action: Action::UpdateUser {
                            username: user.username.clone(),
                            changes,
                        },
                        line: Some(user.line),
                        blame: None,
                    });
                }
            }
        }
    }

    (create_users, update_users, errors)
}

/// The extensions and users of `current` that `desired` does not name (both
/// sorted): what pruning removes, and what a plan without it leaves alone.
pub fn unnamed<'c>(
    desired: &'c Desired,
    current: &'c Directory,
) -> (
    impl Iterator<Item = &'c crate::model::Extension>,
    impl Iterator<Item = &'c crate::model::User>,
) {
    let mut wanted = SortedCursor::new(&desired.extensions);
    let extensions = current.extensions.iter().filter(move |ext| {
        wanted
            .find(|d| cmp_extension(&d.number, &ext.number))
            .is_none()
    });
    let mut wanted = SortedCursor::new(&desired.users);
    let users = current
        .users
        .iter()
        .filter(move |user| wanted.find(|d| d.username.cmp(&user.username)).is_none());
    (extensions, users)
}

/// What a plan of the whole directory without pruning leaves alone.
pub fn unnamed_note(desired: &Desired, current: &Directory) -> Option<super::Note> {
    let (extensions, users) = unnamed(desired, current);
    let names = super::UnnamedNames {
        extensions: extensions.map(|e| e.number.clone()).collect(),
        users: users.map(|u| u.username.clone()).collect(),
    };
    super::Unnamed {
        extensions: names.extensions.len() as u64,
        users: names.users.len() as u64,
        names: Some(names),
    }
    .note()
}

/// Computes the plan that turns `current` into `desired`.
pub fn diff(desired: &Desired, current: &Directory, opts: &DiffOptions) -> Plan {
    let new_devices: Vec<_> = opts
        .inventory
        .iter()
        .filter(|d| current.device(&d.id).is_none())
        .collect();
    let mut b = Builder {
        desired,
        current,
        opts,
        errors: Sink::default(),
        new_devices,
        holders: None,
    };
    let mut create_devices = Vec::new();
    let mut remove_extensions = Vec::new();
    let mut remove_users = Vec::new();

    for d in &b.new_devices {
        create_devices.push(PlannedAction {
            action: Action::CreateDevice {
                device: d.id.clone(),
                model: d.model.clone(),
            },
            line: None,
            blame: None,
        });
    }

    // Users and extensions are planned at once, on two cores.
    let ((create_users, update_users, user_errors), extensions) = rayon::join(
        || plan_users(desired, current, opts),
        || b.plan_extensions(),
    );
    b.errors.append(user_errors);

    if opts.prune {
        let (extensions, users) = unnamed(desired, current);
        remove_extensions.extend(extensions.map(|ext| PlannedAction {
            action: Action::RemoveExtension {
                username: ext.username.clone(),
                extension: ext.number.clone(),
                device: ext.device.clone(),
            },
            line: None,
            blame: None,
        }));
        remove_users.extend(users.map(|user| PlannedAction {
            action: Action::RemoveUser {
                username: user.username.clone(),
            },
            line: None,
            blame: None,
        }));
    }

    let ExtensionActions {
        add: add_extensions,
        update: update_extensions,
        reassign: mut reassigns,
    } = extensions;
    reassigns.sort_by(|a, b| match (&a.action, &b.action) {
        (
            Action::ReassignDevice {
                to_extension: x, ..
            },
            Action::ReassignDevice {
                to_extension: y, ..
            },
        ) => cmp_extension(x, y),
        _ => std::cmp::Ordering::Equal,
    });
    let mut actions = create_devices;
    actions.reserve(
        create_users.len()
            + update_users.len()
            + add_extensions.len()
            + update_extensions.len()
            + reassigns.len()
            + remove_extensions.len()
            + remove_users.len(),
    );
    for group in [
        create_users,
        update_users,
        add_extensions,
        update_extensions,
        reassigns,
        remove_extensions,
        remove_users,
    ] {
        actions.extend(group);
    }
    let (mut errors, omitted) = b.errors.finish();
    crate::diagnostic::sort(&mut errors);
    // Notes need the whole picture, which a diff of some rows does not have:
    // its caller adds them.
    Plan {
        actions,
        errors,
        warnings: Vec::new(),
        omitted,
        notes: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Device, Licenses, User};
    use crate::plan::{checks, simulate};
    use crate::validate::{Policy, validate};

    fn desired(rows: &str) -> Desired {
        let v = validate(rows.as_bytes(), &Policy::default());
        assert!(!v.has_errors(), "{:?}", v.diagnostics);
        v.desired
    }

    fn user(name: &str, first: &str) -> User {
        User {
            username: name.into(),
            fields: [
                first.into(),
                "Flynn".into(),
                "".into(),
                "".into(),
                "".into(),
            ],
        }
    }

    fn ext(n: &str, user: &str, kind: ExtensionKind, device: Option<&str>) -> Extension {
        Extension {
            number: n.into(),
            username: user.into(),
            kind,
            device: device.map(Text::from),
            description: "".into(),
        }
    }

    fn dir(users: Vec<User>, exts: Vec<Extension>, devices: &[&str]) -> Directory {
        let mut d = Directory {
            users,
            extensions: exts,
            devices: devices
                .iter()
                .map(|id| Device {
                    id: (*id).into(),
                    model: "".into(),
                })
                .collect(),
            licenses: Licenses::default(),
        };
        d.sort();
        d
    }

    fn types(plan: &Plan) -> Vec<&'static str> {
        plan.actions.iter().map(|a| a.action.type_name()).collect()
    }

    const DEV_A: &str = "0004F2000001";
    const DEV_B: &str = "0004F2000002";

    #[test]
    fn rule_3_new_user_and_extension() {
        let d = desired("1001,Jason,Flynn,jflynn,Sec_ret12,Desk,,,,virtual\n");
        let plan = diff(&d, &Directory::default(), &DiffOptions::default());
        assert_eq!(types(&plan), ["create_user", "add_extension"]);
        let Action::CreateUser { changes, .. } = &plan.actions[0].action else {
            panic!()
        };
        assert!(changes.iter().any(|c| c.sensitive && c.field == "password"));
        let Action::AddExtension { kind, .. } = &plan.actions[1].action else {
            panic!()
        };
        assert_eq!(*kind, ExtensionKind::Virtual);
    }

    #[test]
    fn rule_2_existing_user_gets_the_extension() {
        let d = desired("1001,Jason,Flynn,jflynn,,,,,,\n1002,Jason,Flynn,jflynn,,,,,,\n");
        let c = dir(
            vec![user("jflynn", "Jason")],
            vec![ext("1001", "jflynn", ExtensionKind::Virtual, None)],
            &[],
        );
        let plan = diff(&d, &c, &DiffOptions::default());
        assert_eq!(types(&plan), ["add_extension"]);
        let Action::AddExtension {
            extension, kind, ..
        } = &plan.actions[0].action
        else {
            panic!()
        };
        assert_eq!(
            (extension.as_str(), *kind),
            ("1002", ExtensionKind::VoicemailOnly)
        );
    }

    #[test]
    fn rule_1_updates_what_differs_only() {
        let d = desired("1001,Jasper,Flynn,jflynn,,New desk,,,,\n");
        let c = dir(
            vec![user("jflynn", "Jason")],
            vec![ext("1001", "jflynn", ExtensionKind::Device, Some(DEV_A))],
            &[DEV_A],
        );
        let plan = diff(&d, &c, &DiffOptions::default());
        assert_eq!(types(&plan), ["update_user", "update_extension"]);
        let Action::UpdateUser { changes, .. } = &plan.actions[0].action else {
            panic!()
        };
        assert_eq!(
            changes,
            &[Change::new("first_name", Some("Jason"), "Jasper")]
        );
        let Action::UpdateExtension {
            changes, device, ..
        } = &plan.actions[1].action
        else {
            panic!()
        };
        assert_eq!(changes, &[Change::new("description", Some(""), "New desk")]);
        assert_eq!(
            device.as_deref(),
            Some(DEV_A),
            "a blank device cell keeps the device (rule 6)"
        );
    }

    #[test]
    fn rule_4_an_extension_never_moves_between_users() {
        let d = desired("1001,Wei,Chen,wchen,Sec_ret12,,,,,\n");
        let c = dir(
            vec![user("jflynn", "Jason")],
            vec![ext("1001", "jflynn", ExtensionKind::Virtual, None)],
            &[],
        );
        let plan = diff(&d, &c, &DiffOptions::default());
        let e = &plan.errors[0];
        assert_eq!(
            (e.code, e.line, e.column),
            (Code::ExtensionOwnedByOtherUser, Some(1), Some(1))
        );
        assert!(e.message.contains("jflynn"), "{}", e.message);
    }

    #[test]
    fn rule_5_virtual_frees_the_device() {
        let d = desired("1001,Jason,Flynn,jflynn,,,,,,virtual\n");
        let c = dir(
            vec![user("jflynn", "Jason")],
            vec![ext("1001", "jflynn", ExtensionKind::Device, Some(DEV_A))],
            &[DEV_A],
        );
        let plan = diff(&d, &c, &DiffOptions::default());
        let Action::UpdateExtension { kind, device, .. } = &plan.actions[0].action else {
            panic!()
        };
        assert_eq!((*kind, device.as_deref()), (ExtensionKind::Virtual, None));
    }

    #[test]
    fn rule_7_reassignment_leaves_the_prior_extension_virtual_or_voicemail() {
        let d = desired(&format!(
            "1001,Jason,Flynn,jflynn,,,,,,\n1002,Jason,Flynn,jflynn,,,,,,{DEV_A}\n"
        ));
        let c = dir(
            vec![user("jflynn", "Jason")],
            vec![
                ext("1001", "jflynn", ExtensionKind::Device, Some(DEV_A)),
                ext("1002", "jflynn", ExtensionKind::Virtual, None),
            ],
            &[DEV_A],
        );
        let plan = diff(&d, &c, &DiffOptions::default());
        assert_eq!(types(&plan), ["reassign_device"]);
        let Action::ReassignDevice {
            from_extension,
            to_extension,
            from_becomes,
            ..
        } = &plan.actions[0].action
        else {
            panic!()
        };
        assert_eq!(
            (
                from_extension.as_str(),
                to_extension.as_str(),
                *from_becomes
            ),
            ("1001", "1002", ExtensionKind::Virtual)
        );
        let opts = DiffOptions {
            reassigned_becomes: ExtensionKind::VoicemailOnly,
            ..DiffOptions::default()
        };
        let plan = diff(&d, &c, &opts);
        let Action::ReassignDevice { from_becomes, .. } = &plan.actions[0].action else {
            panic!()
        };
        assert_eq!(*from_becomes, ExtensionKind::VoicemailOnly);
        let after = simulate::apply(&c, &plan.actions);
        assert_eq!(
            after.extension("1001").unwrap().kind,
            ExtensionKind::VoicemailOnly
        );
        assert_eq!(
            after.extension("1002").unwrap().device.as_deref(),
            Some(DEV_A)
        );
    }

    #[test]
    fn rule_7_unless_the_csv_gives_the_prior_extension_a_device() {
        let d = desired(&format!(
            "1001,Jason,Flynn,jflynn,,,,,,{DEV_B}\n1002,Jason,Flynn,jflynn,,,,,,{DEV_A}\n"
        ));
        let c = dir(
            vec![user("jflynn", "Jason")],
            vec![
                ext("1001", "jflynn", ExtensionKind::Device, Some(DEV_A)),
                ext("1002", "jflynn", ExtensionKind::Device, Some(DEV_B)),
            ],
            &[DEV_A, DEV_B],
        );
        let plan = diff(&d, &c, &DiffOptions::default());
        assert_eq!(types(&plan), ["reassign_device", "reassign_device"]);
        let after = simulate::apply(&c, &plan.actions);
        assert_eq!(
            after.extension("1001").unwrap().device.as_deref(),
            Some(DEV_B)
        );
        assert_eq!(
            after.extension("1002").unwrap().device.as_deref(),
            Some(DEV_A)
        );
        assert!(
            after
                .extensions
                .iter()
                .all(|e| e.kind == ExtensionKind::Device)
        );
    }

    #[test]
    fn device_not_found_suggests_the_o_for_zero_slip() {
        let d = desired("1001,Jason,Flynn,jflynn,Sec_ret12,,,,,OOO4F2OOOOO1\n");
        let c = dir(vec![], vec![], &[DEV_A]);
        let plan = diff(&d, &c, &DiffOptions::default());
        let e = &plan.errors[0];
        assert_eq!((e.code, e.column), (Code::DeviceNotFound, Some(10)));
        assert_eq!(e.hint.as_deref(), Some("did you mean 0004F2000001?"));
    }

    #[test]
    fn rule_9_passwords_of_existing_users_only_on_request() {
        let d = desired("1001,Jason,Flynn,jflynn,Sec_ret12,,,,,\n");
        let c = dir(
            vec![user("jflynn", "Jason")],
            vec![ext("1001", "jflynn", ExtensionKind::VoicemailOnly, None)],
            &[],
        );
        assert!(diff(&d, &c, &DiffOptions::default()).actions.is_empty());
        let reset = DiffOptions {
            reset_passwords: true,
            ..DiffOptions::default()
        };
        let plan = diff(&d, &c, &reset);
        let Action::UpdateUser { changes, .. } = &plan.actions[0].action else {
            panic!()
        };
        assert_eq!(changes, &[Change::password()]);
        let new_without = desired("1001,Jason,Flynn,jflynn,,,,,,\n");
        let plan = diff(&new_without, &Directory::default(), &DiffOptions::default());
        assert_eq!(plan.errors[0].code, Code::MissingRequired);
    }

    #[test]
    fn rule_10_licenses_are_counted_after_the_change() {
        let d = desired(
            "1001,Jason,Flynn,jflynn,Sec_ret12,,,,,\n1002,Jason,Flynn,jflynn,,,,,,\n1003,Jason,Flynn,jflynn,,,,,,virtual\n",
        );
        let c = Directory {
            licenses: Licenses {
                users: Some(5),
                voicemail: Some(1),
            },
            ..Directory::default()
        };
        let mut plan = diff(&d, &c, &DiffOptions::default());
        checks::licenses(&mut plan, &c, crate::model::Usage::of(&c));
        assert_eq!(plan.errors.len(), 1);
        assert_eq!(plan.errors[0].code, Code::LicenseExceeded);
        assert!(
            plan.errors[0]
                .message
                .starts_with("not enough voicemail licenses: after this plan the directory needs 2 voicemail licenses, the limit is 1: 1 more needed"),
            "{}",
            plan.errors[0].message
        );
    }

    #[test]
    fn rule_11_nothing_is_removed_without_prune() {
        let d = desired("1001,Jason,Flynn,jflynn,,,,,,\n");
        let c = dir(
            vec![user("jflynn", "Jason"), user("wchen", "Wei")],
            vec![
                ext("1001", "jflynn", ExtensionKind::VoicemailOnly, None),
                ext("1002", "wchen", ExtensionKind::Device, Some(DEV_A)),
            ],
            &[DEV_A],
        );
        assert!(diff(&d, &c, &DiffOptions::default()).actions.is_empty());
        let prune = DiffOptions {
            prune: true,
            ..DiffOptions::default()
        };
        let plan = diff(&d, &c, &prune);
        assert_eq!(types(&plan), ["remove_extension", "remove_user"]);
    }

    #[test]
    fn safety_threshold() {
        let rows: String = (0..10)
            .map(|i| format!("10{i:02},Jason,Flynn,jflynn,,Desk {i},,,,\n"))
            .collect();
        let d = desired(&rows);
        let c = dir(
            vec![user("jflynn", "Jason")],
            (0..10)
                .map(|i| {
                    ext(
                        &format!("10{i:02}"),
                        "jflynn",
                        ExtensionKind::VoicemailOnly,
                        None,
                    )
                })
                .collect(),
            &[],
        );
        let mut plan = diff(&d, &c, &DiffOptions::default());
        checks::safety(&mut plan, &c, 10, &crate::policy::Safety::default(), false);
        assert_eq!(plan.errors[0].code, Code::TooLargeChange);
        let mut plan = diff(&d, &c, &DiffOptions::default());
        checks::safety(&mut plan, &c, 10, &crate::policy::Safety::default(), true);
        assert!(plan.errors.is_empty());
    }
}
