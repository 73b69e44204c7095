//! The plan: the ordered actions that turn the current directory into the desired
//! one. `diff` computes it (pure); `checks` adds the license and safety findings.

pub mod checks;
pub mod diff;
pub mod order;
pub mod simulate;

pub use diff::{DiffOptions, diff};

use crate::diagnostic::{Diagnostic, Omitted};
use crate::model::{ExtensionKind, Text};
use serde::{Serialize, Serializer};

/// A field that an action sets or changes. `from` is `None` on creation; both are
/// `None` for a sensitive field (a password), which is never shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub field: &'static str,
    pub from: Option<Text>,
    pub to: Option<Text>,
    pub sensitive: bool,
}

impl Change {
    pub fn new(field: &'static str, from: Option<&str>, to: &str) -> Change {
        Change {
            field,
            from: from.map(Text::from),
            to: Some(Text::from(to)),
            sensitive: false,
        }
    }

    /// The new value of `field` among `changes`, when they set it.
    pub fn value_of<'c>(changes: &'c [Change], field: &str) -> Option<&'c str> {
        changes
            .iter()
            .find(|c| c.field == field)
            .map(|c| c.to.as_deref().unwrap_or(""))
    }

    pub fn password() -> Change {
        Change {
            field: "password",
            from: None,
            to: None,
            sensitive: true,
        }
    }
}

impl Serialize for Change {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("field", self.field)?;
        if self.sensitive {
            m.serialize_entry("sensitive", &true)?;
        } else {
            m.serialize_entry("from", &self.from)?;
            m.serialize_entry("to", &self.to)?;
        }
        m.end()
    }
}

/// One step of a plan (SPEC section 9). Field names are the JSON keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// A device of the configured inventory file that the target does not know yet.
    CreateDevice {
        device: Text,
        model: Text,
    },
    /// `changes` lists every managed user field that is set (from: null) and the
    /// password (sensitive).
    CreateUser {
        username: Text,
        changes: Vec<Change>,
    },
    UpdateUser {
        username: Text,
        changes: Vec<Change>,
    },
    /// `changes` holds the description when it is managed and not empty.
    AddExtension {
        username: Text,
        extension: Text,
        kind: ExtensionKind,
        device: Option<Text>,
        changes: Vec<Change>,
    },
    /// `kind` and `device` are the values after the change; `changes` names every
    /// field that changes (a device that arrives by a `ReassignDevice` is that
    /// action's), and a target writes the device only when it is among them.
    UpdateExtension {
        username: Text,
        extension: Text,
        kind: ExtensionKind,
        device: Option<Text>,
        changes: Vec<Change>,
    },
    /// The device moves from one extension to another; the one that held it becomes
    /// `from_becomes` (or gets the device the CSV gives it, then `device`).
    ReassignDevice {
        username: Text,
        device: Text,
        from_extension: Text,
        to_extension: Text,
        from_becomes: ExtensionKind,
    },
    RemoveExtension {
        username: Text,
        extension: Text,
        device: Option<Text>,
    },
    RemoveUser {
        username: Text,
    },
}

impl Action {
    pub fn type_name(&self) -> &'static str {
        match self {
            Action::CreateDevice { .. } => "create_device",
            Action::CreateUser { .. } => "create_user",
            Action::UpdateUser { .. } => "update_user",
            Action::AddExtension { .. } => "add_extension",
            Action::UpdateExtension { .. } => "update_extension",
            Action::ReassignDevice { .. } => "reassign_device",
            Action::RemoveExtension { .. } => "remove_extension",
            Action::RemoveUser { .. } => "remove_user",
        }
    }

    /// `<type> <key>` (`add_extension 1001`): how errors and progress name an
    /// action, whichever backend runs it.
    pub fn label(&self) -> String {
        let key = match self {
            Action::CreateDevice { device, .. } | Action::ReassignDevice { device, .. } => device,
            Action::CreateUser { username, .. }
            | Action::UpdateUser { username, .. }
            | Action::RemoveUser { username } => username,
            Action::AddExtension { extension, .. }
            | Action::UpdateExtension { extension, .. }
            | Action::RemoveExtension { extension, .. } => extension,
        };
        format!("{} {key}", self.type_name())
    }
}

/// Whether an extension of `kind` may hold `device`: a `device` extension holds one,
/// a `virtual` or `voicemail_only` one none. Every backend refuses an action that
/// breaks this, with this reason.
pub fn check_kind(kind: ExtensionKind, device: &Option<Text>) -> Result<(), String> {
    match (kind, device) {
        (ExtensionKind::Device, None) => Err("kind device without a device".to_owned()),
        (ExtensionKind::Virtual | ExtensionKind::VoicemailOnly, Some(d)) => {
            Err(format!("kind {kind} with device {d}"))
        }
        _ => Ok(()),
    }
}

/// Who last changed the CSV line an action comes from (git blame).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blame {
    pub commit: String,
    pub author: String,
    pub date: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedAction {
    #[serde(flatten)]
    pub action: Action,
    /// The CSV line the action comes from; `None` for removals and inventory devices.
    pub line: Option<u32>,
    /// Boxed: most plans have none, and a plan of a million rows holds a million
    /// actions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blame: Option<Box<Blame>>,
}

/// Counts of actions by type (SPEC section 9, `summary`). Read back from a
/// history record, a missing count is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Summary {
    pub create_device: u64,
    pub create_user: u64,
    pub update_user: u64,
    pub add_extension: u64,
    pub update_extension: u64,
    pub reassign_device: u64,
    pub remove_extension: u64,
    pub remove_user: u64,
    pub total: u64,
}

impl Summary {
    pub fn of(actions: &[PlannedAction]) -> Summary {
        let mut s = Summary::default();
        for a in actions {
            *match a.action {
                Action::CreateDevice { .. } => &mut s.create_device,
                Action::CreateUser { .. } => &mut s.create_user,
                Action::UpdateUser { .. } => &mut s.update_user,
                Action::AddExtension { .. } => &mut s.add_extension,
                Action::UpdateExtension { .. } => &mut s.update_extension,
                Action::ReassignDevice { .. } => &mut s.reassign_device,
                Action::RemoveExtension { .. } => &mut s.remove_extension,
                Action::RemoveUser { .. } => &mut s.remove_user,
            } += 1;
            s.total += 1;
        }
        s
    }
}

/// What a plan says besides its actions: what it leaves alone, so that
/// silence is never taken for "in sync" (SPEC section 4). Not a diagnostic:
/// nothing is wrong with the CSV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// Pruning is off and the target holds extensions and users that the CSV
    /// does not name: they are kept.
    Unnamed(Unnamed),
    /// Git mode: the CSV in the working tree differs from the committed one,
    /// which is what was planned.
    WorkingTreeDiffers,
}

/// The extensions and users of the target that the CSV does not name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Unnamed {
    pub extensions: u64,
    pub users: u64,
    /// Their numbers and usernames, when they were asked for (`-v`) or came
    /// for free (a plan of the whole directory).
    pub names: Option<UnnamedNames>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnnamedNames {
    pub extensions: Vec<Text>,
    pub users: Vec<Text>,
}

impl Unnamed {
    /// The note, when there is anything unnamed.
    pub fn note(self) -> Option<Note> {
        (self.extensions + self.users > 0).then_some(Note::Unnamed(self))
    }
}

/// The outcome of planning: the actions, and what stops them from being applied.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub actions: Vec<PlannedAction>,
    /// At most `diagnostic::KEPT_PER_CODE` of each code, the first ones.
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
    /// How many more errors and warnings there were.
    pub omitted: Omitted,
    /// What the plan leaves alone.
    pub notes: Vec<Note>,
}

impl Plan {
    pub fn summary(&self) -> Summary {
        Summary::of(&self.actions)
    }
    pub fn has_changes(&self) -> bool {
        !self.actions.is_empty()
    }
    pub fn is_applicable(&self) -> bool {
        self.errors.is_empty()
    }
    /// How many errors the plan has, those left out included.
    pub fn error_count(&self) -> u64 {
        self.errors.len() as u64 + self.omitted.errors()
    }
}
