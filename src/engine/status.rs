//! `status`: the target's records, what the committed CSV would change now
//! (pending) and what the last applied CSV would change now (drift).

use super::{Engine, EngineError, Events, Request, SourceChoice, pipeline};
use crate::backend::{AppliedRevision, Backend, BackendError, HistoryRecord, LockHolder};
use crate::plan::Plan;
use crate::policy::SyncOptions;

/// The state of the target.
pub struct Status {
    /// The target as shown to people (no credentials).
    pub target: String,
    pub serial: i64,
    pub counts: crate::backend::Counts,
    pub last_applied: Option<AppliedRevision>,
    /// The history record of the last apply.
    pub last_record: Option<HistoryRecord>,
    pub lock_holder: Option<LockHolder>,
    /// What the CSV committed at `source.ref` would change now; an error when it
    /// cannot be planned (a CSV that cannot be read, a missing commit).
    pub pending: Result<Plan, EngineError>,
    /// What the last applied CSV would change now; `None` when nothing was
    /// applied, or when that CSV is no longer in the repository.
    pub drift: Option<Plan>,
    /// Whether the last applied commit is still on `source.ref` (that commit or
    /// one of its ancestors); `Some(false)` after history was rewritten since.
    /// `None` without a last applied commit, or when `source.ref` names none.
    pub last_on_ref: Option<bool>,
}

/// Where the target stands (`Engine::target_state`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetState {
    pub serial: i64,
    pub last_applied: Option<AppliedRevision>,
}

/// A revision of the CSV (`Engine::revision`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Revision {
    /// The commit, in git mode.
    pub commit: Option<String>,
    /// The git blob id of the content.
    pub blob: String,
}

/// Whether the target still holds what the last apply wrote (`Engine::drift`).
#[derive(Debug)]
pub enum Drift {
    /// Nothing was applied yet: nothing to drift from.
    NothingApplied,
    /// The last applied CSV would change nothing (at this serial).
    InSync { serial: i64 },
    /// The plan that would write the last applied CSV back.
    Found {
        last: AppliedRevision,
        plan: Plan,
        serial: i64,
    },
    /// The last applied CSV is no longer in the repository (history rewritten
    /// and collected): drift cannot be told.
    Unknown { last: AppliedRevision },
}

impl Engine<'_> {
    /// The status of the target; `None` when it has no state yet. A damaged state
    /// file fails, like every other read of it.
    pub fn status(&self, events: &mut Events<'_>) -> Result<Option<Status>, EngineError> {
        let config = self.config;
        let Some(mut target) = pipeline::open_target(&config.target, false)? else {
            return Ok(None);
        };
        let serial = target.serial()?;
        let last = target.last_applied()?;
        let last_record = match &last {
            Some(l) => target.history_entry(l.history_id)?,
            None => None,
        };
        let holder = target.lock_holder()?;
        let counts = target.counts()?;
        let pending = match self.pending(&mut target, events) {
            Err(e @ EngineError::Target(BackendError::Damaged { .. })) => return Err(e),
            pending => pending,
        };
        let drift = match self.drift_of(&mut target, serial, last.as_ref())? {
            Drift::InSync { .. } => Some(Plan::default()),
            Drift::Found { plan, .. } => Some(plan),
            Drift::NothingApplied | Drift::Unknown { .. } => None,
        };
        let last_on_ref = last
            .as_ref()
            .and_then(|l| l.commit.as_deref())
            .and_then(|commit| {
                crate::source::on_ref(&config.base_dir, commit, &config.source_ref).ok()
            });
        Ok(Some(Status {
            last_on_ref,
            target: target.describe(),
            serial,
            counts,
            last_applied: last,
            last_record,
            lock_holder: holder,
            pending,
            drift,
        }))
    }

    /// Where the target stands, read cheaply (no row): its serial and the last
    /// applied revision; `None` when it has no state yet.
    pub fn target_state(&self) -> Result<Option<TargetState>, EngineError> {
        let Some(mut target) = pipeline::open_target(&self.config.target, false)? else {
            return Ok(None);
        };
        Ok(Some(TargetState {
            serial: target.serial()?,
            last_applied: target.last_applied()?,
        }))
    }

    /// The revision of the CSV that `source` names now, without reading a
    /// commit's blob: the commit and blob id in git mode; the file's blob id
    /// (hashing it) otherwise.
    pub fn revision(&self, source: &SourceChoice) -> Result<Revision, EngineError> {
        let config = self.config;
        match source {
            SourceChoice::Git { rev } => {
                let (commit, blob) =
                    crate::source::peek(&config.base_dir, &config.source_path, rev)?;
                Ok(Revision {
                    commit: Some(commit),
                    blob,
                })
            }
            _ => {
                let loaded = pipeline::load_source(config, source, false)?.hashed()?;
                Ok(Revision {
                    commit: None,
                    blob: loaded.revision.blob,
                })
            }
        }
    }

    /// Where the repository keeps its refs: the folders whose changes may mean
    /// a new commit of `source.ref`.
    pub fn ref_folders(&self) -> Result<crate::source::RefFolders, EngineError> {
        Ok(crate::source::ref_folders(&self.config.base_dir)?)
    }

    /// The working-tree CSV's stamp (length, identity, times), to tell without
    /// reading it whether it was written since; `None` when it is missing.
    pub fn source_stamp(&self) -> Option<crate::source::FileStamp> {
        crate::source::FileStamp::now(&self.config.source_path)
    }

    /// Drift: what the last applied CSV would change in the target now. Nothing,
    /// known without reading a row, when nothing has written since that apply;
    /// otherwise that CSV is planned against the whole directory (with pruning
    /// when that apply pruned), if its content is still in the repository.
    pub fn drift(&self) -> Result<Drift, EngineError> {
        let Some(mut target) = pipeline::open_target(&self.config.target, false)? else {
            return Ok(Drift::NothingApplied);
        };
        let serial = target.serial()?;
        let last = target.last_applied()?;
        self.drift_of(&mut target, serial, last.as_ref())
    }

    fn drift_of(
        &self,
        target: &mut Box<dyn Backend>,
        serial: i64,
        last: Option<&AppliedRevision>,
    ) -> Result<Drift, EngineError> {
        let config = self.config;
        let Some(last) = last else {
            return Ok(Drift::NothingApplied);
        };
        if last.serial == serial {
            return Ok(Drift::InSync { serial });
        }
        let Ok(Some(bytes)) = crate::source::read_blob(&config.base_dir, &last.blob) else {
            return Ok(Drift::Unknown { last: last.clone() });
        };
        let dir = target.load()?;
        let options = SyncOptions {
            prune: last.pruned,
            ..SyncOptions::default()
        };
        let v = crate::validate::validate(&bytes, &pipeline::policy(config, &options));
        // The last applied CSV itself: no Password cell changed since.
        let plan = pipeline::make_plan(
            config,
            &options,
            &v,
            &dir,
            Vec::new(),
            &pipeline::PasswordBase::Unchanged,
        );
        Ok(if plan.has_changes() {
            Drift::Found {
                last: last.clone(),
                plan,
                serial,
            }
        } else {
            Drift::InSync { serial }
        })
    }

    /// What the CSV committed at `source.ref` would change now: nothing when
    /// neither it nor the target changed since the last apply (no row is read),
    /// else a plan as `plan` makes it.
    fn pending(
        &self,
        target: &mut Box<dyn Backend>,
        events: &mut Events<'_>,
    ) -> Result<Plan, EngineError> {
        let config = self.config;
        let request = Request {
            source: SourceChoice::Git {
                rev: config.source_ref.clone(),
            },
            options: SyncOptions::default(),
        };
        let inventory = self.read_inventory();
        if let Some(unchanged) = self.unchanged_since_last_apply(&request, target, &inventory)? {
            return Ok(Plan {
                notes: unchanged.notes,
                ..Plan::default()
            });
        }
        let loaded = pipeline::load_source(config, &request.source, true)?;
        let inventory = inventory.and_then(|file| self.inventory_devices(file.as_deref()))?;
        let planned = self.run_pipeline(
            &request.options,
            loaded,
            inventory,
            Some(target),
            false,
            events,
        )?;
        Ok(planned.plan)
    }
}
