//! Provisioning files: one configuration file per device that an extension
//! holds, in the form its model reads, written atomically (mode 0640) only when
//! its content changes; files whose device no longer has an extension are
//! removed. pbxsync touches only files it wrote, listed in a manifest in the
//! folder.
//!
//! **Templates.** A device's model picks its template: a user template
//! configured for exactly that model name first, then the built-in Yealink
//! template for models starting with `yealink` and the built-in Polycom one for
//! `polycom` (case-insensitive). A device with no model or with a model nothing
//! covers gets no file, and a warning in the report.
//!
//! - Yealink: `<mac>.cfg` (lower case), `#!version:1.0.0.1`, then `account.1.*`.
//!   Control characters in values become spaces, so no value (a display name
//!   with a newline) can add a key of its own.
//! - Polycom: `<MAC>.cfg` (upper case), UC Software XML with `reg.1.*`
//!   attributes, values XML-escaped.
//! - User templates (minijinja, no auto-escaping, strict undefined, no loader:
//!   a template cannot include other files) get `extension`, `display_name`,
//!   `sip_server` (the host), `sip_port` (a number), `auth_user` (the
//!   extension), `sip_secret`, `mac` (lower case), `mac_upper` and `model`, as
//!   they are: a template escapes what its format needs (`|e` escapes for XML).
//!   The file is `<mac>.cfg` unless the template sets another name at its top
//!   level, e.g. `{% set file_name = "SEP" ~ mac_upper ~ ".cnf.xml" %}`; the
//!   name must be a plain, non-hidden file name.
//!
//! **Files.** The manifest (`.pbxsync-manifest.json`, mode 0640) records each
//! file pbxsync wrote with the xxh3-128 hash and length of its content. A file
//! is written when its content differs from the manifest's or when it is no
//! longer a plain file on disk (one listing of the folder; files are never
//! read back). New files are created unnamed (`O_TMPFILE`) and linked under
//! their name, changed ones through a temporary file and a rename. A name in
//! the folder that the manifest does not list is someone else's: it is left
//! alone, with a warning. A name in the manifest whose device has no file any
//! more is removed. The folder is created (mode 0750) when missing and locked
//! (`flock`) for the run.
//!
//! **Failures.** Every file is all or nothing (linked or renamed whole).
//! A template that does not parse or render stops the run before anything is
//! written. An I/O error on one file does not stop the others: the run writes
//! and removes what it can, then the manifest as the folder really is, and
//! returns the first error (by file name); the next run repairs the rest. New
//! names are claimed in the manifest before their files are created, so a run
//! cut short (a crash, a kill) never leaves a file the next run would take for
//! someone else's. Temporary files of a run killed mid-write
//! (`.*.pbxsync-tmp`) are left behind.

mod manifest;
mod render;
mod write;

pub use manifest::MANIFEST_NAME;
pub use render::{DEFAULT_SIP_PORT, SipServer};

use crate::model::Phone;
use manifest::{Entry, Manifest};
use rayon::prelude::*;
use render::{Kind, Rendered, UserTemplates};
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
    /// message each, naming the device and its extension. Also files in the
    /// folder that pbxsync did not write and so did not replace.
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(
        "cannot {doing} {}: {source}; check that the provisioning folder exists and that pbxsync may write to it, then run `pbxsync provision`",
        path.display()
    )]
    Io {
        path: PathBuf,
        doing: &'static str,
        source: std::io::Error,
    },
    #[error(
        "{} is not a manifest this pbxsync can read ({why}); move it away, then remove the files it lists by hand if they should go (pbxsync treats every file in the folder as someone else's until it writes a new manifest)",
        path.display()
    )]
    Manifest { path: PathBuf, why: String },
    #[error(
        "cannot read the template for model {model:?} at {}: {source}; check publish.provision.templates",
        template.display()
    )]
    TemplateRead {
        model: String,
        template: PathBuf,
        source: std::io::Error,
    },
    #[error("template {}{}: {message}; fix the template", template.display(), line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Template {
        template: PathBuf,
        line: Option<usize>,
        message: String,
    },
    #[error(
        "template {} names the file of device {device} {name:?}, which is not a plain file name (one path component, not starting with `.`); fix `file_name` in the template",
        template.display()
    )]
    FileName {
        template: PathBuf,
        device: String,
        name: String,
    },
    #[error(
        "publish.provision.server {server:?} is not `host` or `host:port`: {why}; fix it in the config"
    )]
    Server { server: String, why: String },
}

/// One device's file as this run wants it.
struct Desired {
    content: String,
    hash: String,
}

/// Writes the files of `phones` into `settings.dir` (created when missing).
pub fn provision(settings: &Settings, phones: &[Phone]) -> Result<Report, ProvisionError> {
    let server = SipServer::parse(&settings.server)?;
    let users = UserTemplates::load(&settings.templates)?;
    let mut report = Report::default();

    // Render everything first: a template error stops the run before any file
    // is touched.
    let rendered: Vec<Result<Result<Rendered, String>, ProvisionError>> = phones
        .par_iter()
        .map(|phone| render_phone(phone, settings, &server, &users))
        .collect();
    let mut desired: BTreeMap<String, Desired> = BTreeMap::new();
    let mut owner: BTreeMap<String, usize> = BTreeMap::new();
    for (i, r) in rendered.into_iter().enumerate() {
        match r? {
            Err(warning) => report.warnings.push(warning),
            Ok(Rendered { name, content }) => {
                if let Some(&first) = owner.get(&name) {
                    let (a, b) = (&phones[first], &phones[i]);
                    report.warnings.push(format!(
                        "device {} (extension {}) gets no provisioning file: its file {name} is already device {}'s (extension {})",
                        b.device, b.extension, a.device, a.extension
                    ));
                    continue;
                }
                owner.insert(name.clone(), i);
                let hash = manifest::hash(content.as_bytes());
                desired.insert(name, Desired { content, hash });
            }
        }
    }

    let dir = settings.dir.as_path();
    let handle = write::open_and_lock(dir).map_err(|source| ProvisionError::Io {
        path: dir.to_path_buf(),
        doing: "create or open",
        source,
    })?;
    let mut manifest = Manifest::load(dir)?;

    // What each desired file needs, from one listing of the folder (not a
    // stat per file): a name that is not there, or not a plain file any more,
    // is written again.
    enum Step {
        Unchanged,
        Write { new: bool },
        Foreign,
    }
    let on_disk = list(dir)?;
    let desired: Vec<(String, Desired)> = desired.into_iter().collect();
    let steps: Vec<Step> = desired
        .par_iter()
        .map(|(name, want)| {
            let here = on_disk.get(name.as_str()).copied();
            match manifest.files.get(name) {
                None if here.is_some() => Step::Foreign,
                None => Step::Write { new: true },
                Some(entry) => {
                    let same = entry.xxh3.as_deref() == Some(want.hash.as_str())
                        && entry.len == want.content.len() as u64
                        && here == Some(true);
                    if same {
                        Step::Unchanged
                    } else {
                        Step::Write { new: false }
                    }
                }
            }
        })
        .collect();

    let mut to_write: Vec<(&str, &Desired, bool)> = Vec::new();
    let mut claimed = false;
    for ((name, want), step) in desired.iter().zip(&steps) {
        match step {
            Step::Unchanged => report.unchanged += 1,
            Step::Foreign => {
                let phone = &phones[owner[name]];
                report.warnings.push(format!(
                    "{} exists and was not written by pbxsync; move it away (device {}, extension {} gets no provisioning file until then)",
                    dir.join(name).display(),
                    phone.device,
                    phone.extension
                ));
            }
            Step::Write { new } => {
                if *new {
                    manifest
                        .files
                        .insert(name.clone(), Entry { xxh3: None, len: 0 });
                    claimed = true;
                }
                to_write.push((name, want, *new));
            }
        }
    }
    let wanted: std::collections::HashSet<&str> = desired.iter().map(|(n, _)| n.as_str()).collect();
    let to_remove: Vec<String> = manifest
        .files
        .keys()
        .filter(|n| !wanted.contains(n.as_str()))
        .cloned()
        .collect();

    if to_write.is_empty() && to_remove.is_empty() && !manifest_missing(dir) {
        return Ok(report);
    }
    if claimed {
        manifest.save(dir, &handle)?;
    }

    let results: Vec<std::io::Result<()>> = to_write
        .par_iter()
        .map(|(name, want, new)| {
            if *new {
                write::create_new(dir, &handle, name, want.content.as_bytes())
            } else {
                write::write_new(
                    dir,
                    name,
                    want.content.as_bytes(),
                    &write::tmp_name(name),
                    false,
                )
            }
        })
        .collect();
    let mut first_error: Option<ProvisionError> = None;
    for ((name, want, _), result) in to_write.iter().zip(results) {
        match result {
            Ok(()) => {
                manifest.files.insert(
                    (*name).to_owned(),
                    Entry {
                        xxh3: Some(want.hash.clone()),
                        len: want.content.len() as u64,
                    },
                );
                report.written.push((*name).to_owned());
            }
            Err(source) => {
                // The rename did not happen: what was there is still there.
                if manifest.files.get(*name).is_some_and(|e| e.xxh3.is_none()) {
                    manifest.files.remove(*name);
                }
                first_error.get_or_insert(ProvisionError::Io {
                    path: dir.join(name),
                    doing: "write",
                    source,
                });
            }
        }
    }
    if !report.written.is_empty() {
        // The files must be on disk before a manifest says they are.
        write::syncfs(&handle).map_err(|source| ProvisionError::Io {
            path: dir.to_path_buf(),
            doing: "sync",
            source,
        })?;
    }

    for name in to_remove {
        match std::fs::remove_file(dir.join(&name)) {
            Ok(()) => {
                manifest.files.remove(&name);
                report.removed.push(name);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                manifest.files.remove(&name);
            }
            Err(source) => {
                first_error.get_or_insert(ProvisionError::Io {
                    path: dir.join(&name),
                    doing: "remove",
                    source,
                });
            }
        }
    }

    manifest.save(dir, &handle)?;
    match first_error {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// The names in `dir`, each with whether it is a plain file (not a link, a
/// folder, …).
fn list(dir: &Path) -> Result<crate::FastMap<String, bool>, ProvisionError> {
    let io = |source| ProvisionError::Io {
        path: dir.to_path_buf(),
        doing: "list",
        source,
    };
    let mut names = crate::FastMap::default();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let Ok(name) = entry.file_name().into_string() else {
            continue; // pbxsync's names are UTF-8
        };
        // From the listing itself on the common file systems (d_type).
        let file = entry.file_type().map_err(io)?.is_file();
        names.insert(name, file);
    }
    Ok(names)
}

fn manifest_missing(dir: &Path) -> bool {
    std::fs::symlink_metadata(dir.join(MANIFEST_NAME)).is_err()
}

/// One phone's file, or the warning that says why it gets none.
fn render_phone(
    phone: &Phone,
    settings: &Settings,
    server: &SipServer,
    users: &UserTemplates,
) -> Result<Result<Rendered, String>, ProvisionError> {
    if !render::is_mac(&phone.device) {
        return Ok(Err(format!(
            "device {:?} (extension {}) gets no provisioning file: its id is not a MAC (12 hex digits), \
             as a soft phone's is; `pbxsync secret {}` gives its credentials",
            phone.device.as_str(),
            phone.extension,
            phone.extension
        )));
    }
    if phone.model.trim().is_empty() {
        return Ok(Err(format!(
            "device {} (extension {}) has no model in the inventory, so it gets no provisioning file",
            phone.device, phone.extension
        )));
    }
    Ok(Ok(
        match render::choose(&phone.model, &settings.templates) {
            Some(Kind::Yealink) => render::yealink(phone, server),
            Some(Kind::Polycom) => render::polycom(phone, server),
            Some(Kind::User(model)) => {
                users.render(model, &settings.templates[model], phone, server)?
            }
            None => {
                return Ok(Err(format!(
                    "device {} (extension {}) is a {:?}, which no template covers, so it gets no provisioning file; add a template for it to publish.provision.templates",
                    phone.device,
                    phone.extension,
                    phone.model.as_str()
                )));
            }
        },
    ))
}

/// Checks the user templates (they exist and parse), for the config check.
pub fn check_templates(settings: &Settings) -> Result<(), ProvisionError> {
    SipServer::parse(&settings.server)?;
    UserTemplates::load(&settings.templates).map(|_| ())
}

#[cfg(test)]
mod tests;
