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
        // Drift: what the last applied CSV would change now. Nothing, when nothing
        // has written since that apply; otherwise it is planned against the whole
        // directory (when its content is still in the repository).
        let drift = match &last {
            None => None,
            Some(l) if l.serial == serial => Some(Plan::default()),
            Some(l) => match crate::source::read_blob(&config.base_dir, &l.blob) {
                Ok(Some(bytes)) => {
                    let dir = target.load()?;
                    let options = SyncOptions::default();
                    let v = crate::validate::validate(&bytes, &pipeline::policy(config, &options));
                    Some(pipeline::make_plan(config, &options, &v, &dir, Vec::new()))
                }
                _ => None,
            },
        };
        Ok(Some(Status {
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
        if self
            .unchanged_since_last_apply(&request, target, &inventory)?
            .is_some()
        {
            return Ok(Plan::default());
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
