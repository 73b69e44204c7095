//! The engine: the one place that runs the pipeline `source → validate → target
//! read → diff → checks → (apply)`. `plan`, `apply`, `status` and `adopt` (and
//! later `watch`) are thin callers. It returns typed outcomes and reports what it does
//! through events; it never prints, prompts or knows the command line.

mod admin;
mod adopt;
mod apply;
pub mod pipeline;
mod publish;
mod status;

pub use adopt::AdoptOutcome;
pub use apply::{ApplyOutcome, Prepared, Ready, Refusal};
pub use pipeline::{InventoryError, SourceChoice};
pub use publish::{Credentials, Published};
pub use status::{Drift, Revision, Status, TargetState};

use crate::backend::{Backend, BackendError, DigestIndex, Progress};
use crate::config::Config;
use crate::model::{Desired, Device, Text, Usage};
use crate::plan::Plan;
use crate::policy::SyncOptions;
use crate::source::{Loaded, Pending, SourceError};
use crate::validate;
use std::sync::atomic::{AtomicBool, Ordering};

/// How the engine plans, whoever calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EngineOptions {
    /// Plan against the whole directory even where the row digests would let a
    /// plan read only the changed rows (the result is the same; this is for
    /// checking that, and for measuring).
    pub full_plan: bool,
    /// Name the extensions and users a plan without pruning leaves alone, not
    /// only count them (`-v`): a plan of the changed rows then reads the whole
    /// directory.
    pub list_unnamed: bool,
}

/// A failure of the pipeline. Each variant keeps the error it wraps, so that a
/// caller can tell a damaged state file from a CSV that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Target(#[from] BackendError),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    /// Hashing a password failed (argon2 found too little memory); the failed
    /// apply is in the history.
    #[error(transparent)]
    Hashing(#[from] crate::apply::HashError),
    /// The provisioning files could not be written.
    #[error(transparent)]
    Provision(#[from] crate::publish::provision::ProvisionError),
    /// `adopt`: the target holds a value the file cannot (its encoding).
    #[error(transparent)]
    Adopt(#[from] crate::adopt::AdoptError),
    #[error("cannot read {path}: {source}")]
    ReadPlan {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a plan saved by `pbxsync plan --out`: {message}")]
    NotAPlan { path: String, message: String },
    /// The target could not be opened for writing.
    #[error("no target")]
    NoTarget,
    /// A command that reads the target's records found no state file.
    #[error("the target has no state yet; run `pbxsync apply` (or `pbxsync init`) first")]
    NoState,
}

/// What the engine reports while it works. A caller may draw them, time them or
/// ignore them; nothing depends on it listening.
#[derive(Debug)]
pub enum Event<'a> {
    /// A phase of the work ended (what `-v` times).
    Phase(&'a str),
    /// Passwords are about to be hashed.
    Hashing { passwords: usize },
    /// The target's progress while it writes.
    Progress(Progress),
    /// The digest index could not be kept after an apply (a cache: the apply is
    /// done all the same).
    IndexNotKept(&'a BackendError),
    /// A plan was made, on this path (once per plan: a caller can count them).
    Planned(PlanPath),
}

/// Which rows a plan read: the same plan either way, at different cost. The
/// shortcut, which reads no row, is `PlanOutcome::NoChanges`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanPath {
    /// Only the rows whose digest changed since the last apply, and every row of
    /// their users: `rows` of them.
    ChangedRows { rows: usize },
    /// Every row of the file, against the whole directory.
    WholeDirectory,
}

/// The phase of the no-op shortcut (`-v` names it): the answer is "No changes",
/// as after a plan that read the rows, and this is how to tell them apart.
pub const NOTHING_CHANGED: &str = "nothing changed since the last apply (no row read)";

/// Where events go.
pub type Events<'e> = dyn FnMut(Event<'_>) + 'e;

/// Neither the CSV nor the target changed since the last apply: nothing to plan,
/// and no row was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unchanged {
    pub blob: String,
    pub commit: Option<String>,
    pub serial: i64,
    /// What the answer leaves alone (an edit of the working tree not planned).
    pub notes: Vec<crate::plan::Note>,
}

/// A plan, with the source it was made from and what an apply of it needs.
pub struct Planned {
    pub loaded: Loaded,
    pub plan: Plan,
    /// The target's serial the plan was made against.
    pub serial: i64,
    /// The desired state the plan was made from (apply reads the passwords here).
    pub desired: Desired,
    /// Row digests to store with the apply.
    pub digests: Vec<(Text, u64)>,
    /// The digest index the plan was made against, and the counts after it.
    pub index: Option<(DigestIndex, Usage)>,
    pub layout: crate::csv::Layout,
    pub delimiter: u8,
    /// Which rows the plan read.
    pub path: PlanPath,
}

/// What `plan` ends with.
pub enum PlanOutcome {
    /// The shortcut: nothing changed since the last apply.
    NoChanges(Unchanged),
    /// A plan without errors (it may have no actions).
    Planned(Box<Planned>),
    /// A plan with errors: the diagnostics are its `errors` (and `warnings`), and
    /// it has no actions.
    Invalid(Box<Planned>),
}

impl PlanOutcome {
    fn of(planned: Planned) -> PlanOutcome {
        if planned.plan.errors.is_empty() {
            PlanOutcome::Planned(Box::new(planned))
        } else {
            PlanOutcome::Invalid(Box::new(planned))
        }
    }
}

/// What to plan: the source and the flags.
#[derive(Debug, Clone)]
pub struct Request {
    pub source: SourceChoice,
    pub options: SyncOptions,
}

/// Runs pipelines against the target of one config.
pub struct Engine<'c> {
    config: &'c Config,
    options: EngineOptions,
    cancel: Option<&'c AtomicBool>,
}

impl<'c> Engine<'c> {
    pub fn new(config: &'c Config, options: EngineOptions) -> Engine<'c> {
        Engine {
            config,
            options,
            cancel: None,
        }
    }

    /// An engine whose applies stop before writing once `cancel` is set (a
    /// watcher told to stop): hashing stops at the next password, and an apply
    /// not yet writing does not start. A write under way finishes or rolls back.
    pub fn cancellable(self, cancel: &'c AtomicBool) -> Engine<'c> {
        Engine {
            cancel: Some(cancel),
            ..self
        }
    }

    fn cancelled(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    }

    pub fn config(&self) -> &Config {
        self.config
    }

    /// Plans `request` against the target as it is. `shortcut`: when neither the
    /// CSV nor the target changed since the last apply, say so without reading
    /// a row.
    pub fn plan(
        &self,
        request: &Request,
        shortcut: bool,
        events: &mut Events<'_>,
    ) -> Result<PlanOutcome, EngineError> {
        let config = self.config;
        let mut target = pipeline::open_target(&config.target, false)?;
        let inventory = self.read_inventory();
        if shortcut
            && let Some(t) = target.as_mut()
            && let Some(unchanged) = self.unchanged_since_last_apply(request, t, &inventory)?
        {
            events(Event::Phase(NOTHING_CHANGED));
            return Ok(PlanOutcome::NoChanges(unchanged));
        }
        let loaded = pipeline::load_source(config, &request.source, true)?;
        events(Event::Phase("read the source"));
        let inventory = self.inventory_devices(inventory?.as_deref())?;
        if config.inventory.is_some() {
            events(Event::Phase("read the inventory file"));
        }
        let planned = self.run_pipeline(
            &request.options,
            loaded,
            inventory,
            target.as_mut(),
            false,
            events,
        )?;
        Ok(PlanOutcome::of(planned))
    }

    /// The bytes of the configured inventory file (`None` without one), read
    /// once: the no-op shortcut compares their digest, a plan reads the devices
    /// in them (`inventory_devices`), which is where a file that cannot be read
    /// is reported.
    fn read_inventory(&self) -> InventoryFile {
        self.config
            .inventory
            .as_ref()
            .map(|path| pipeline::read_inventory_bytes(path))
            .transpose()
    }

    /// The devices of the inventory file's `bytes` (none without one).
    fn inventory_devices(&self, bytes: Option<&[u8]>) -> Result<Vec<Device>, InventoryError> {
        match (bytes, &self.config.inventory) {
            (Some(bytes), Some(path)) => {
                pipeline::parse_devices(bytes, &path.display().to_string())
            }
            _ => Ok(Vec::new()),
        }
    }

    /// The shortcut of SPEC section 10: when neither the CSV content nor the
    /// target changed since the last apply, there is nothing to plan and no row is
    /// read.
    fn unchanged_since_last_apply(
        &self,
        request: &Request,
        target: &mut Box<dyn Backend>,
        inventory: &InventoryFile,
    ) -> Result<Option<Unchanged>, EngineError> {
        let config = self.config;
        let options = &request.options;
        if options.reset_passwords {
            return Ok(None);
        }
        let Some(last) = target.last_applied()? else {
            return Ok(None);
        };
        // After a pruning apply the directory holds nothing the CSV leaves out: a
        // pruning plan of the same CSV finds nothing either.
        if (options.prune || config.prune) && !last.pruned {
            return Ok(None);
        }
        // Every device of the inventory file the last apply was planned with
        // exists after it: the same file asks for nothing more. Without one,
        // nothing is asked. A file that cannot be read is reported by the plan.
        match inventory {
            Ok(None) => {}
            Ok(Some(bytes)) if last.inventory == Some(pipeline::inventory_digest(bytes)) => {}
            _ => return Ok(None),
        }
        let (commit, blob) = match &request.source {
            SourceChoice::Git { rev } => {
                match crate::source::peek(&config.base_dir, &config.source_path, rev) {
                    Ok((c, b)) => (Some(c), b),
                    Err(_) => return Ok(None),
                }
            }
            _ => return Ok(None),
        };
        let serial = target.serial()?;
        if blob != last.blob || serial != last.serial {
            return Ok(None);
        }
        // What that apply left alone is still there: nothing has written since.
        let kept = last.kept.filter(|_| !options.prune).and_then(|k| {
            crate::plan::Unnamed {
                extensions: k.extensions,
                users: k.users,
                names: None,
            }
            .note()
        });
        // Naming them (`-v`) needs the rows.
        if kept.is_some() && self.options.list_unnamed {
            return Ok(None);
        }
        let notes = kept
            .into_iter()
            .chain(commit.as_deref().and_then(|c| self.working_tree_note(c)))
            .collect();
        Ok(Some(Unchanged {
            blob,
            commit,
            serial,
            notes,
        }))
    }

    /// The note that the CSV in the working tree differs from the one committed
    /// in `commit`, which is what was planned (`source::working_tree_differs`).
    fn working_tree_note(&self, commit: &str) -> Option<crate::plan::Note> {
        crate::source::working_tree_differs(&self.config.base_dir, &self.config.source_path, commit)
            .then_some(crate::plan::Note::WorkingTreeDiffers)
    }

    /// Plans against an open (or absent) target: only the rows that changed since
    /// the last apply when it can, the whole directory otherwise.
    fn run_pipeline(
        &self,
        options: &SyncOptions,
        source: Pending,
        inventory: Vec<Device>,
        mut target: Option<&mut Box<dyn Backend>>,
        keep_index: bool,
        events: &mut Events<'_>,
    ) -> Result<Planned, EngineError> {
        let config = self.config;
        let blob = source.known_blob().map(str::to_owned);
        // A file's blob id is computed on another thread meanwhile.
        let (loaded, planned) = source.alongside(|bytes| -> Result<_, EngineError> {
            let (validated, serial, planned) = self.plan_bytes(
                bytes,
                options,
                &inventory,
                target.as_deref_mut(),
                keep_index,
                Some(blob.as_deref()),
                events,
            )?;
            Ok((serial, planned, validated.layout, validated.delimiter))
        })?;
        let (serial, (planned, path), layout, delimiter) = planned?;
        let pipeline::Planned {
            mut plan,
            desired,
            digests,
            index,
        } = planned;
        pipeline::add_blame(config, &loaded, &mut plan)?;
        events(Event::Phase("blame"));
        if loaded.revision.kind == crate::source::SourceKind::Git
            && let Some(commit) = &loaded.revision.commit
        {
            plan.notes.extend(self.working_tree_note(commit));
            events(Event::Phase("compare the working tree with the commit"));
        }
        Ok(Planned {
            loaded,
            plan,
            serial,
            desired,
            digests,
            index,
            layout,
            delimiter,
            path,
        })
    }
}

impl Engine<'_> {
    /// Validates `bytes` and plans them against `target` (or an empty directory):
    /// only the rows whose digest changed since the last apply when it can, the
    /// whole directory otherwise. The one place that chooses. Returns the file's
    /// validation (without its desired state, which is in the plan), the
    /// target's serial the plan was made against, and the plan with the path it
    /// took (also sent as `Event::Planned`).
    ///
    /// `passwords`: `Some(blob id of bytes, when known)` to compare the Password
    /// cells with the CSV of the last apply (rule 9), which is read on another
    /// thread meanwhile; `None` for a check, which sets no password.
    #[allow(clippy::too_many_arguments)]
    fn plan_bytes<'b>(
        &self,
        bytes: &'b [u8],
        options: &SyncOptions,
        inventory: &[Device],
        mut target: Option<&mut Box<dyn Backend>>,
        keep_index: bool,
        passwords: Option<Option<&str>>,
        events: &mut Events<'_>,
    ) -> Result<(validate::Validated<'b>, i64, (pipeline::Planned, PlanPath)), EngineError> {
        let config = self.config;
        let policy = pipeline::policy(config, options);
        let last = match (target.as_deref_mut(), passwords) {
            (Some(t), Some(_)) if !options.reset_passwords => t.last_applied()?,
            _ => None,
        };
        std::thread::scope(|s| {
            let base = s.spawn(|| {
                pipeline::PasswordBase::read(config, last.as_ref(), passwords.flatten(), &policy)
            });
            let base = || {
                base.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            };
            self.plan_validated(bytes, options, inventory, target, keep_index, base, events)
        })
    }

    /// `plan_bytes`, with `passwords` joined once the file is validated.
    #[allow(clippy::too_many_arguments)]
    fn plan_validated<'b>(
        &self,
        bytes: &'b [u8],
        options: &SyncOptions,
        inventory: &[Device],
        mut target: Option<&mut Box<dyn Backend>>,
        keep_index: bool,
        passwords: impl FnOnce() -> pipeline::PasswordBase,
        events: &mut Events<'_>,
    ) -> Result<(validate::Validated<'b>, i64, (pipeline::Planned, PlanPath)), EngineError> {
        let config = self.config;
        let full_plan = self.options.full_plan;
        let policy = pipeline::policy(config, options);
        let changed_rows_only =
            target.is_some() && pipeline::can_plan_changed_rows(options, None, full_plan);
        let (validated, digests) = match target.as_deref_mut() {
            Some(t) if changed_rows_only => {
                let (validated, digests) =
                    pipeline::validate_with_index(bytes, &policy, t, inventory);
                (validated, Some(digests))
            }
            _ => (validate::validate(bytes, &policy), None),
        };
        let passwords = passwords();
        events(Event::Phase(
            "read and validate the CSV (and the target's row digests, and the Password cells of the last applied CSV)",
        ));
        if let (Some(t), Some(digests)) = (target.as_deref_mut(), digests)
            && pipeline::can_plan_changed_rows(options, Some(&validated.layout), full_plan)
        {
            let digests = digests?;
            let serial = digests.serial;
            let planned = pipeline::plan_changed_rows(
                config,
                options,
                &validated,
                t,
                digests,
                keep_index,
                &passwords,
                self.options.list_unnamed,
            )?;
            match planned {
                Some(planned) => {
                    let rows = planned.desired.extensions.len();
                    events(Event::Phase(&format!(
                        "plan the {rows} changed rows (and their users' rows)"
                    )));
                    events(Event::Phase("read the target, diff and checks"));
                    let path = PlanPath::ChangedRows { rows };
                    events(Event::Planned(path));
                    return Ok((validated, serial, (planned, path)));
                }
                None => events(Event::Phase(
                    "look for what pruning removes (users without extensions: the whole directory is planned)",
                )),
            }
        }
        // The whole desired state is needed: read the rows again when they were
        // not kept.
        let mut validated = if changed_rows_only {
            drop(validated);
            validate::validate(bytes, &policy)
        } else {
            validated
        };
        let serial = match target.as_mut() {
            Some(t) => t.serial()?,
            None => 0,
        };
        // Copied: the work may run twice (see `Pending::alongside`).
        let planned = pipeline::plan_all(
            config,
            options,
            &mut validated,
            target,
            inventory.to_vec(),
            keep_index,
            &passwords,
        )?;
        events(Event::Phase("read the target, diff and checks"));
        events(Event::Planned(PlanPath::WholeDirectory));
        Ok((validated, serial, (planned, PlanPath::WholeDirectory)))
    }

    /// Validates `bytes` with the checks that need the target (devices that do
    /// not exist, extensions of other users, licenses) when there is one (a state
    /// file, or an inventory file): the file's diagnostics and the plan's,
    /// together. Without either, the file alone is checked.
    pub fn check<'b>(
        &self,
        bytes: &'b [u8],
        allow_empty: bool,
    ) -> Result<validate::Validated<'b>, EngineError> {
        let config = self.config;
        let mut target = match config.file {
            Some(_) => pipeline::open_target(&config.target, false)?,
            None => None,
        };
        if target.is_none() && (config.file.is_none() || config.inventory.is_none()) {
            let policy = validate::Policy {
                allow_empty,
                ..validate::Policy::from_config(config)
            };
            return Ok(validate::check(bytes, &policy));
        }
        let inventory = match &config.inventory {
            Some(p) => pipeline::read_devices(p)?,
            None => Vec::new(),
        };
        let options = SyncOptions {
            allow_empty,
            allow_large_change: true,
            ..Default::default()
        };
        let (mut v, _, (planned, _)) = self.plan_bytes(
            bytes,
            &options,
            &inventory,
            target.as_mut(),
            false,
            None,
            &mut |_| {},
        )?;
        let plan = planned.plan;
        v.diagnostics = plan.errors;
        v.diagnostics.extend(plan.warnings);
        // The plan's count includes the file's.
        v.omitted = plan.omitted;
        crate::diagnostic::sort(&mut v.diagnostics);
        Ok(v)
    }
}

/// The inventory file's bytes, or why they cannot be read (reported when the
/// devices in them are needed).
type InventoryFile = Result<Option<Vec<u8>>, InventoryError>;

#[cfg(test)]
mod tests;
