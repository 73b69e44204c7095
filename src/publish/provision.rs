//! Provisioning files: one configuration file per device that an extension
//! holds, in the form its model reads, written atomically (mode 0640) only when
//! its content changes; files whose device no longer has an extension are
//! removed. pbxsync touches only files it wrote, listed in a manifest in the
//! folder.

use crate::model::Phone;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `publish.provision` of the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The folder the files go to (absolute).
    pub dir: PathBuf,
    /// The SIP server the phones register with: `host` or `host:port`.
    pub server: String,
    /// User templates (minijinja) by exact model name, absolute paths; they take
    /// precedence over the built-in Yealink and Polycom templates.
    pub templates: BTreeMap<String, PathBuf>,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// Files written (new or changed), by name.
    pub written: Vec<String>,
    /// Files removed (their device has no extension any more).
    pub removed: Vec<String>,
    /// Files whose content was already right.
    pub unchanged: usize,
    /// Devices that got no file: no model, or a model no template covers; one
    /// message each, naming the device and its extension.
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    // helper: I/O errors naming the file and what to do; a template that does
    // not parse or render, naming the template file and the line.
}

/// Writes the files of `phones` into `settings.dir` (created when missing).
pub fn provision(_settings: &Settings, _phones: &[Phone]) -> Result<Report, ProvisionError> {
    todo!("provision helper")
}

/// Checks the user templates (they exist and parse), for the config check.
pub fn check_templates(_settings: &Settings) -> Result<(), ProvisionError> {
    todo!("provision helper")
}

#[allow(dead_code)]
fn _unused(_: &Path) {}
