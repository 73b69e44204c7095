//! An apply in two steps, so that a person can review the plan between them:
//! `prepare_apply` checks a saved plan, takes the lock and plans; `apply` hashes
//! the passwords, writes in one transaction, records the history and keeps the
//! digest index.

use super::{
    Engine, EngineError, Event, Events, Planned, Request, SourceChoice, Unchanged, pipeline,
};
use crate::backend::{
    ApplyReport, ApplyRequest, Backend, BackendError, HistoryRecord, LockGuard, LockHolder,
    RecordedCsv,
};
use crate::plan::Summary;
use crate::policy::SyncOptions;
use crate::source::{Pending, SourceKind};
use std::path::{Path, PathBuf};

/// A plan saved with `plan --out`: the plan as JSON plus what is needed to make it
/// again (no secrets: apply reads them from the same source revision).
#[derive(serde::Deserialize)]
struct SavedPlan {
    source: SavedSource,
    base: SavedBase,
    options: SyncOptions,
    actions: serde_json::Value,
}

#[derive(serde::Deserialize)]
struct SavedSource {
    kind: String,
    path: String,
    commit: Option<String>,
    blob: String,
}

#[derive(serde::Deserialize)]
struct SavedBase {
    serial: i64,
}

impl SavedPlan {
    fn read(path: &Path) -> Result<SavedPlan, EngineError> {
        let text = std::fs::read_to_string(path).map_err(|source| EngineError::ReadPlan {
            path: path.display().to_string(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| EngineError::NotAPlan {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// Where the saved plan read its CSV.
    fn source(&self) -> SourceChoice {
        match (self.source.kind.as_str(), &self.source.commit) {
            ("git", Some(commit)) => SourceChoice::Git {
                rev: commit.clone(),
            },
            ("working_tree", _) => SourceChoice::WorkingTree,
            _ => SourceChoice::File(PathBuf::from(&self.source.path)),
        }
    }
}

impl Engine<'_> {
    /// `planned` as `plan --out` saves it, made with `options`: the plan's JSON
    /// document with the flags, which `apply FILE` reads back (`SavedPlan`).
    pub fn saved_plan(&self, planned: &Planned, options: SyncOptions) -> std::io::Result<Vec<u8>> {
        use crate::render::plan as render_plan;
        let view = render_plan::PlanView {
            plan: &planned.plan,
            source: serde_json::to_value(&planned.loaded.revision).unwrap_or_default(),
            base: render_plan::Base {
                target: self.config.target.shown(),
                serial: planned.serial,
            },
        };
        let doc = render_plan::PlanDoc {
            options: Some(options),
            ..render_plan::json(&view)
        };
        let mut text = Vec::new();
        doc.write_pretty_json(&mut text)?;
        Ok(text)
    }
}

/// Why an apply was refused before anything was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Another apply holds the lock.
    Locked(LockHolder),
    /// The target changed since the plan was made.
    Stale { planned: i64, current: i64 },
    /// The CSV of a saved plan changed since it was made.
    CsvChanged,
    /// Planning again gives other actions than the saved plan.
    ActionsDiffer,
}

/// What preparing an apply ends with.
pub enum Prepared {
    /// The shortcut: nothing changed since the last apply.
    NoChanges(Unchanged),
    Refused(Refusal),
    /// The plan has errors: nothing can be applied.
    Invalid(Box<Planned>),
    /// Planned, with the lock held until `apply` or until this is dropped.
    Ready(Box<Ready>),
}

/// A plan ready to apply: the target open for writing, its lock held.
pub struct Ready {
    // Dropped first: the lock goes before the target is closed.
    _lock: Box<dyn LockGuard>,
    target: Box<dyn Backend>,
    planned: Planned,
    options: SyncOptions,
    inventory_digest: Option<String>,
    saved: bool,
}

impl Ready {
    pub fn planned(&self) -> &Planned {
        &self.planned
    }

    /// Whether the plan came from a file saved by `plan --out` (reviewed already).
    pub fn saved(&self) -> bool {
        self.saved
    }
}

/// What an apply ends with.
pub enum ApplyOutcome {
    Applied {
        report: ApplyReport,
        summary: Summary,
    },
    /// The target changed between the plan and the write: nothing was written.
    Stale { planned: i64, current: i64 },
    /// Nothing was written; the failure is recorded in the history.
    Failed { error: EngineError },
    /// Stopped on request before the write began (`Engine::cancellable`):
    /// nothing was written, and nothing recorded.
    Cancelled,
}

impl Engine<'_> {
    /// Everything before the write: the shortcut (without `plan_file`), the saved
    /// plan's checks, the lock, the plan. Everything that can fail without the
    /// target fails before the state file is created; so does a first plan with
    /// errors.
    pub fn prepare_apply(
        &self,
        plan_file: Option<&Path>,
        request: &Request,
        events: &mut Events<'_>,
    ) -> Result<Prepared, EngineError> {
        let config = self.config;
        self.check_publish()?;
        let inventory_file = self.read_inventory();
        // Nothing to apply, known without reading a row: as `plan` says it.
        if plan_file.is_none()
            && let Some(mut t) = pipeline::open_target(&config.target, false)?
            && let Some(unchanged) =
                self.unchanged_since_last_apply(request, &mut t, &inventory_file)?
        {
            events(Event::Phase(super::NOTHING_CHANGED));
            return Ok(Prepared::NoChanges(unchanged));
        }
        let saved = plan_file.map(SavedPlan::read).transpose()?;
        let (options, choice) = match &saved {
            Some(s) => (s.options, s.source()),
            None => (request.options, request.source.clone()),
        };
        let mut loaded = pipeline::load_source(config, &choice, false)?;
        if let Some(s) = &saved {
            let hashed = loaded.hashed()?;
            if hashed.revision.blob != s.source.blob {
                return Ok(Prepared::Refused(Refusal::CsvChanged));
            }
            loaded = Pending::from(hashed);
        }
        let inventory_file = inventory_file?;
        let inventory = self.inventory_devices(inventory_file.as_deref())?;
        let inventory_digest = inventory_file.as_deref().map(pipeline::inventory_digest);
        let mut first = None;
        if let crate::config::TargetUrl::Sqlite(path) = &config.target
            && !path.exists()
        {
            let planned = self.run_pipeline(
                &options,
                loaded.clone(),
                inventory.clone(),
                None,
                true,
                events,
            )?;
            if !planned.plan.errors.is_empty() {
                return Ok(Prepared::Invalid(Box::new(planned)));
            }
            first = Some(planned);
        }
        let mut target =
            pipeline::open_target(&config.target, true)?.ok_or(EngineError::NoTarget)?;
        let lock = match target.try_lock() {
            Ok(guard) => guard,
            Err(BackendError::Locked(holder)) => {
                return Ok(Prepared::Refused(Refusal::Locked(holder)));
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(s) = &saved {
            let now = target.serial()?;
            if now != s.base.serial {
                return Ok(Prepared::Refused(Refusal::Stale {
                    planned: s.base.serial,
                    current: now,
                }));
            }
        }
        let planned = match first {
            // The state file was made just now and nothing has written to it
            // (serial 0): the plan against no target is the plan against it, and
            // is not made twice. It carries the (empty) digest index, so the one
            // after the apply is kept.
            Some(planned) if target.serial()? == 0 => planned,
            _ => self.run_pipeline(&options, loaded, inventory, Some(&mut target), true, events)?,
        };
        if let Some(s) = &saved
            && serde_json::to_value(&planned.plan.actions).unwrap_or_default() != s.actions
        {
            return Ok(Prepared::Refused(Refusal::ActionsDiffer));
        }
        if !planned.plan.errors.is_empty() {
            return Ok(Prepared::Invalid(Box::new(planned)));
        }
        Ok(Prepared::Ready(Box::new(Ready {
            _lock: lock,
            target,
            planned,
            options,
            inventory_digest,
            saved: saved.is_some(),
        })))
    }

    /// Hashes the passwords (on every core, before the transaction), writes the
    /// plan in one transaction with its history record, and keeps the digest
    /// index for the next plan. A failure is recorded in the history.
    pub fn apply(
        &self,
        ready: Ready,
        events: &mut Events<'_>,
    ) -> Result<ApplyOutcome, EngineError> {
        let config = self.config;
        let Ready {
            _lock,
            mut target,
            mut planned,
            options,
            inventory_digest,
            saved: _,
        } = ready;
        let hashed = crate::apply::to_hash(&planned.desired, &planned.plan.actions);
        if hashed > 0 {
            events(Event::Hashing { passwords: hashed });
        }
        // A failure (argon2 finding too little memory) is recorded below, like a
        // failed write.
        let hashes = crate::apply::hash_passwords(
            &planned.desired,
            &planned.plan.actions,
            &config.policy.password_hash,
            self.cancel,
        );
        events(Event::Phase(&format!("hash {hashed} passwords")));
        let revision = &planned.loaded.revision;
        let record = HistoryRecord {
            id: 0,
            time: crate::time::utc_now(),
            local_user: pipeline::local_user(),
            git_author: revision.author.clone(),
            source: match (&revision.kind, &revision.commit) {
                (SourceKind::Git, Some(c)) => format!("commit {c}"),
                (SourceKind::WorkingTree, _) => {
                    format!("working tree {} (uncommitted)", revision.path)
                }
                _ => format!("file {}", revision.path),
            },
            commit: revision.commit.clone(),
            blob: revision.blob.clone(),
            summary: serde_json::to_value(planned.plan.summary()).unwrap_or_default(),
            outcome: "applied".into(),
            csv: Default::default(),
        };
        let recorded_csv = || match crate::csv::decode(&planned.loaded.bytes, config.encoding) {
            Ok((text, _)) if !text.text.is_empty() => RecordedCsv::written(|out| {
                crate::apply::redact_into(&text.text, planned.delimiter, &planned.layout, out)
            }),
            _ => RecordedCsv::default(),
        };
        let hashes = match hashes {
            Err(crate::apply::HashError::Cancelled) => return Ok(ApplyOutcome::Cancelled),
            _ if self.cancelled() => return Ok(ApplyOutcome::Cancelled),
            Ok(hashes) => hashes,
            Err(e) => {
                // The message names a user at most, never a password.
                record_failure(target.as_mut(), record, recorded_csv(), &e);
                return Ok(ApplyOutcome::Failed { error: e.into() });
            }
        };
        // The target writes on one core. The other makes the history's CSV, which
        // the commit needs, and then the digest index after the apply (one
        // thread, so the writing thread keeps its core).
        let index = planned.index.take();
        let (actions, digests) = (&planned.plan.actions, &planned.digests);
        let (result, index) = std::thread::scope(|s| {
            let (csv_sender, csv) = std::sync::mpsc::sync_channel(1);
            let side = s.spawn(move || {
                // The apply may have failed and gone already: nobody to tell.
                let _ = csv_sender.send(recorded_csv());
                index
                    .map(|(before, usage)| (pipeline::index_after(before, actions, digests), usage))
            });
            let request = ApplyRequest {
                inventory: inventory_digest.as_deref(),
                pruned: options.prune || config.prune,
                kept: kept(&planned.plan, options.prune || config.prune),
                actions,
                digests,
                expected_serial: planned.serial,
                password_hashes: &hashes,
                record: Box::new(|| HistoryRecord {
                    csv: csv.recv().unwrap_or_default(),
                    ..record.clone()
                }),
            };
            let result = target.apply(request, &mut |p| events(Event::Progress(p)));
            let index = side
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (result, index)
        });
        events(Event::Phase("write to the target"));
        match result {
            Ok(report) => {
                if let Some((mut index, usage)) = index {
                    pipeline::forget(&mut index, &report.cleared);
                    // A cache: the apply is done whether it is kept or not.
                    if let Err(e) = target.keep_index(report.serial, &index, usage) {
                        events(Event::IndexNotKept(&e));
                    }
                    events(Event::Phase("keep the digest index for the next plan"));
                }
                Ok(ApplyOutcome::Applied {
                    report,
                    summary: planned.plan.summary(),
                })
            }
            Err(BackendError::Stale { planned, current }) => {
                Ok(ApplyOutcome::Stale { planned, current })
            }
            Err(e) => {
                record_failure(target.as_mut(), record, recorded_csv(), &e);
                Ok(ApplyOutcome::Failed { error: e.into() })
            }
        }
    }
}

/// Records a failed apply in history, with its reason and the redacted CSV. A
/// failure to record it is not reported over the failure itself.
/// What a plan leaves alone, to keep with its apply: nothing when it prunes;
/// unknown when its note was not made.
fn kept(plan: &crate::plan::Plan, pruned: bool) -> Option<crate::backend::Kept> {
    if pruned {
        return Some(crate::backend::Kept::default());
    }
    let counted = plan.notes.iter().find_map(|note| match note {
        crate::plan::Note::Unnamed(u) => Some(crate::backend::Kept {
            extensions: u.extensions,
            users: u.users,
        }),
        crate::plan::Note::WorkingTreeDiffers => None,
    });
    // A plan that reads the target and names everything in it has no note.
    Some(counted.unwrap_or_default())
}

fn record_failure(
    target: &mut dyn Backend,
    record: HistoryRecord,
    csv: RecordedCsv,
    reason: &dyn std::fmt::Display,
) {
    let failed = HistoryRecord {
        outcome: format!("failed: {reason}"),
        csv,
        ..record
    };
    let _ = target.record_failure(&failed);
}
