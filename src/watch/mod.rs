//! `watch`: keeps the target in sync with the repository by itself, the way Argo
//! CD or Flux keep a cluster in sync. A loop around the engine: file events on
//! the repository's refs (debounced) and a polling timer wake it; each round asks
//! the engine, cheaply, whether the revision or the target moved, and only then
//! plans, applies or keeps a pending plan. It never prints: what happens goes to
//! a callback as [`Log`] records, which the CLI writes as text or JSON lines.
//!
//! What it guarantees (SPEC section 6):
//! - each revision of the CSV is synced once: the target's last applied
//!   revision says what was done, also across restarts and between watchers;
//! - a bad commit is logged and skipped; the next good one is synced at once;
//! - a failed apply is retried with exponential backoff and jitter, and a newer
//!   commit replaces the failing one at once;
//! - drift (the target no longer holding what the last apply wrote) is found by
//!   the poll and healed on request;
//! - a first SIGINT/SIGTERM lets the apply in flight finish or roll back and
//!   ends the loop; a second exits at once (the apply's transaction is rolled
//!   back by the database, the lock dies with the process).

mod log;
mod trigger;

pub use log::{Kind, Log};

use crate::config::{AutoApply, Config};
use crate::engine::{
    ApplyOutcome, Drift, Engine, EngineError, EngineOptions, PlanOutcome, Planned, Prepared,
    Refusal, Request, Revision, SourceChoice,
};
use crate::plan::Plan;
use crate::policy::SyncOptions;
use crate::render::plan::{count, users_and_extensions};
use crate::source::FileStamp;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How `watch` was started.
#[derive(Debug, Clone, Copy, Default)]
pub struct Settings {
    /// One round, then return (for cron and CI).
    pub once: bool,
    /// Follow the file on disk (saves) instead of the commits of `source.ref`.
    pub working_tree: bool,
}

/// How the watch ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Stopped by a signal, or a `--once` round that left the target in sync.
    InSync,
    /// A `--once` round that left a plan (or drift) for a person.
    Pending,
    /// A `--once` round whose commit was bad or whose apply failed.
    Failed,
}

/// What wakes the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// A file that may move the revision changed.
    Changed,
    /// SIGINT or SIGTERM.
    Stop,
}

/// A failure that stops `watch` before its first round.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("cannot handle signals: {0}")]
    Signals(std::io::Error),
}

/// Where logs go (from the loop, and from the thread that receives signals).
pub type LogSink<'l> = dyn Fn(&Log) + Sync + 'l;

/// The longest wait before a failed apply is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Runs the watch until a signal (or, with `once`, for one round).
pub fn run(
    config: &Config,
    options: EngineOptions,
    settings: Settings,
    log: &LogSink<'_>,
) -> Result<Ending, WatchError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = AtomicBool::new(false);
    let (wake, woken) = std::sync::mpsc::channel();
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).map_err(WatchError::Signals)?;
    let signals_handle = signals.handle();
    std::thread::scope(|scope| {
        let (stop, signal_wake) = (&stop, wake.clone());
        // A first signal asks the loop to stop (and the engine to stop before
        // it writes); a second ends the process at once, as `kill -9` would:
        // the database rolls back the transaction under way and the lock dies
        // with the process.
        scope.spawn(move || {
            for signal in signals.forever() {
                if stop.swap(true, Ordering::SeqCst) {
                    std::process::exit(128 + signal);
                }
                log(&Log::new(Kind::Stopping).reason(format!(
                    "{}: the apply under way finishes or rolls back; a second signal stops at once",
                    if signal == SIGINT {
                        "SIGINT"
                    } else {
                        "SIGTERM"
                    }
                )));
                let _ = signal_wake.send(Wake::Stop);
            }
        });
        let engine = Engine::new(config, options).cancellable(stop);
        let mut watcher = Watcher::new(&engine, settings);
        // File events are a speed-up: without them (a network mount, too many
        // watches) the poll still finds every change.
        let _events = if settings.once {
            None
        } else {
            match trigger::follow(&engine, settings.working_tree, wake) {
                Ok(t) => Some(t),
                Err(e) => {
                    log(&Log::new(Kind::PollingOnly).reason(e.to_string()));
                    None
                }
            }
        };
        if !settings.once {
            log(&Log::new(Kind::Started).reason(watcher.describe()));
        }
        let ending = watcher.watch(&woken, stop, log);
        signals_handle.close();
        Ok(ending)
    })
}

/// A revision and the target's serial: what a round's result holds for. When
/// neither moved, nothing is planned again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    revision: Revision,
    serial: i64,
}

/// A revision whose apply failed, and when to try it again.
struct Failing {
    revision: Revision,
    attempts: u32,
    next_try: Instant,
}

/// What one round ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// The target holds the revision (applied now, earlier, or by another watcher).
    InSync,
    /// A plan waits for a person (or drift was found and not healed).
    Pending,
    /// The revision is bad, or its apply failed.
    Failed,
    /// Stopped on request.
    Stopped,
}

struct Watcher<'e, 'c> {
    engine: &'e Engine<'c>,
    settings: Settings,
    watch: crate::config::Watch,
    pending_path: PathBuf,
    /// The key of the last round that came to a result, and that result.
    handled: Option<(Key, Round)>,
    failing: Option<Failing>,
    /// The serial at which drift was last looked for (and reported if found).
    drift_checked: Option<i64>,
    /// The working-tree file's stamp and revision when it was last hashed.
    stamp: Option<(FileStamp, Revision)>,
    /// The last error reported, so that a lasting one is not logged every poll.
    last_error: Option<String>,
}

impl<'e, 'c> Watcher<'e, 'c> {
    fn new(engine: &'e Engine<'c>, settings: Settings) -> Watcher<'e, 'c> {
        let config = engine.config();
        Watcher {
            engine,
            settings,
            watch: config.watch,
            pending_path: pending_path(config),
            handled: None,
            failing: None,
            drift_checked: None,
            stamp: None,
            last_error: None,
        }
    }

    fn describe(&self) -> String {
        let config = self.engine.config();
        let source = if self.settings.working_tree {
            format!("{} (working tree)", config.source_path.display())
        } else {
            format!("{} at {}", config.source_path.display(), config.source_ref)
        };
        format!(
            "watching {source}; target {}; auto_apply {}, self_heal {}, poll every {} s",
            config.target.shown(),
            match self.watch.auto_apply {
                AutoApply::Never => "never",
                AutoApply::Safe => "safe",
                AutoApply::Always => "always",
            },
            self.watch.self_heal,
            self.watch.poll_seconds
        )
    }

    /// The loop: a round at once, then one per wake-up.
    fn watch(&mut self, woken: &Receiver<Wake>, stop: &AtomicBool, log: &LogSink<'_>) -> Ending {
        loop {
            let round = self.round(stop, log);
            if self.settings.once {
                return match round {
                    Round::InSync | Round::Stopped => Ending::InSync,
                    Round::Pending => Ending::Pending,
                    Round::Failed => Ending::Failed,
                };
            }
            if stop.load(Ordering::SeqCst) || !self.wait(woken) {
                log(&Log::new(Kind::Stopped));
                return Ending::InSync;
            }
        }
    }

    /// Waits for a change, the poll or a retry; `false` when told to stop.
    fn wait(&self, woken: &Receiver<Wake>) -> bool {
        let poll = jittered(Duration::from_secs(self.watch.poll_seconds), 10);
        let deadline = match &self.failing {
            Some(f) => (Instant::now() + poll).min(f.next_try),
            None => Instant::now() + poll,
        };
        let wake = woken.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        match wake {
            Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => false,
            Ok(Wake::Changed) | Err(RecvTimeoutError::Timeout) => {
                // Events that came meanwhile are this round's too.
                !woken.try_iter().any(|w| w == Wake::Stop)
            }
        }
    }

    /// One round: what the source names now and where the target stands (both
    /// cheap); a sync when the revision is new; a drift check otherwise.
    fn round(&mut self, stop: &AtomicBool, log: &LogSink<'_>) -> Round {
        let started = Instant::now();
        let revision = match self.revision() {
            Ok(r) => r,
            Err(e) => return self.error(&e, log),
        };
        let state = match self.engine.target_state() {
            Ok(state) => state,
            Err(e) => return self.error(&e, log),
        };
        self.last_error = None;
        let (serial, last) = match state {
            Some(s) => (s.serial, s.last_applied),
            None => (0, None),
        };
        let key = Key {
            revision: revision.clone(),
            serial,
        };
        // The content the source names is what the last apply wrote (by this
        // watcher, another one or a person): nothing to sync.
        if let Some(last) = last.as_ref().filter(|l| l.blob == revision.blob) {
            self.failing = None;
            self.remove_pending();
            let known = matches!(&self.handled, Some((k, Round::InSync)) if k.revision == revision);
            if !known {
                log(&Log::new(Kind::InSync)
                    .revision(&revision)
                    .reason(format!("already applied (history #{})", last.history_id)));
            }
            self.handled = Some((key, Round::InSync));
            return self.check_drift(serial, stop, log);
        }
        if let Some((handled, round)) = &self.handled
            && *handled == key
        {
            let round = *round;
            return match self.check_drift(serial, stop, log) {
                Round::InSync => round,
                drift => drift,
            };
        }
        if let Some(f) = &self.failing
            && f.revision == revision
            && Instant::now() < f.next_try
        {
            return Round::Failed;
        }
        if stop.load(Ordering::SeqCst) {
            return Round::Stopped;
        }
        let round = self.sync(&revision, log, started);
        if round != Round::Failed {
            self.failing = None;
        }
        round
    }

    /// The revision the source names now. A working-tree file is hashed again
    /// only when its stamp moved (or had not settled when it was last hashed).
    fn revision(&mut self) -> Result<Revision, EngineError> {
        if !self.settings.working_tree {
            let rev = self.engine.config().source_ref.clone();
            return self.engine.revision(&SourceChoice::Git { rev });
        }
        let stamp = self.engine.source_stamp();
        if let (Some(now), Some((then, revision))) = (&stamp, &self.stamp)
            && now == then
            && then.settled()
        {
            return Ok(revision.clone());
        }
        let revision = self.engine.revision(&SourceChoice::WorkingTree)?;
        self.stamp = stamp.map(|s| (s, revision.clone()));
        Ok(revision)
    }

    /// The source to plan: the commit the round found (so that a commit made
    /// meanwhile is the next round's), or the working-tree file.
    fn source(&self, revision: &Revision) -> SourceChoice {
        match (&revision.commit, self.settings.working_tree) {
            (Some(commit), false) => SourceChoice::Git {
                rev: commit.clone(),
            },
            _ => SourceChoice::WorkingTree,
        }
    }

    /// Plans `revision` and, as `auto_apply` says, applies it or keeps it pending.
    fn sync(&mut self, revision: &Revision, log: &LogSink<'_>, started: Instant) -> Round {
        let request = Request {
            source: self.source(revision),
            options: SyncOptions::default(),
        };
        let entry = |kind| Log::new(kind).revision(revision).since(started);
        if self.watch.auto_apply == AutoApply::Never {
            return match self.engine.plan(&request, true, &mut |_| {}) {
                Ok(PlanOutcome::NoChanges(unchanged)) => {
                    log(&entry(Kind::InSync).reason("no changes".into()));
                    self.handled(revision, Some(unchanged.serial), Round::InSync)
                }
                Ok(PlanOutcome::Invalid(planned)) => self.skip(revision, &planned, log, started),
                Ok(PlanOutcome::Planned(planned)) => {
                    self.keep_pending(revision, &planned, "auto_apply is never", log, started)
                }
                Err(e) => self.failed(revision, log, entry(Kind::Failed).reason(e.to_string())),
            };
        }
        let ready = match self.engine.prepare_apply(None, &request, &mut |_| {}) {
            Err(e) => return self.failed(revision, log, entry(Kind::Failed).reason(e.to_string())),
            Ok(Prepared::NoChanges(unchanged)) => {
                log(&entry(Kind::InSync).reason("no changes".into()));
                return self.handled(revision, Some(unchanged.serial), Round::InSync);
            }
            Ok(Prepared::Invalid(planned)) => return self.skip(revision, &planned, log, started),
            Ok(Prepared::Refused(Refusal::Locked(holder))) => {
                let entry = entry(Kind::Locked)
                    .reason(format!("another apply holds the target ({holder})"));
                return self.failed(revision, log, entry);
            }
            Ok(Prepared::Refused(refusal)) => {
                let entry = entry(Kind::Failed).reason(format!("refused: {refusal:?}"));
                return self.failed(revision, log, entry);
            }
            Ok(Prepared::Ready(ready)) => ready,
        };
        let plan = &ready.planned().plan;
        if !plan.has_changes() {
            self.remove_pending();
            log(&entry(Kind::InSync)
                .planned(ready.planned())
                .reason("no changes".into()));
            return self.handled(revision, Some(ready.planned().serial), Round::InSync);
        }
        if self.watch.auto_apply == AutoApply::Safe
            && let Some(why) = unsafe_reason(plan)
        {
            let planned: &Planned = ready.planned();
            let why = format!("not safe to apply by itself: {why}");
            return self.keep_pending(revision, planned, &why, log, started);
        }
        let planned_entry = entry(Kind::Applied).planned(ready.planned());
        match self.engine.apply(*ready, &mut |_| {}) {
            Ok(ApplyOutcome::Applied { report, .. }) => {
                self.remove_pending();
                log(&planned_entry
                    .applied(report.history_id, report.serial)
                    .since(started));
                publish(self.engine, log);
                self.handled(revision, Some(report.serial), Round::InSync)
            }
            Ok(ApplyOutcome::Cancelled) => {
                log(&planned_entry
                    .kind(Kind::Cancelled)
                    .reason("stopped before writing; nothing was written".into())
                    .since(started));
                Round::Stopped
            }
            Ok(ApplyOutcome::Stale { planned, current }) => {
                let why =
                    format!("the target changed during the plan (serial {planned}, now {current})");
                self.failed(revision, log, planned_entry.kind(Kind::Failed).reason(why))
            }
            Ok(ApplyOutcome::Failed { error }) | Err(error) => {
                let entry = planned_entry.kind(Kind::Failed).reason(error.to_string());
                self.failed(revision, log, entry.since(started))
            }
        }
    }

    /// A bad revision (invalid CSV, licenses exceeded, too large a change, an
    /// empty file): logged with its diagnostics and skipped until the revision
    /// or the target moves.
    fn skip(
        &mut self,
        revision: &Revision,
        planned: &Planned,
        log: &LogSink<'_>,
        started: Instant,
    ) -> Round {
        log(&Log::new(Kind::Skipped)
            .revision(revision)
            .source(planned)
            .reason(skip_reason(&planned.plan))
            .diagnostics(&planned.plan)
            .since(started));
        self.handled(revision, Some(planned.serial), Round::Failed)
    }

    /// Remembers the result for `revision` at `serial` (unknown: tried again).
    fn handled(&mut self, revision: &Revision, serial: Option<i64>, round: Round) -> Round {
        self.handled = serial.map(|serial| {
            (
                Key {
                    revision: revision.clone(),
                    serial,
                },
                round,
            )
        });
        round
    }

    /// Keeps `planned` as `.pbxsync/pending.json` for a person to apply.
    fn keep_pending(
        &mut self,
        revision: &Revision,
        planned: &Planned,
        why: &str,
        log: &LogSink<'_>,
        started: Instant,
    ) -> Round {
        let entry = Log::new(Kind::Pending).revision(revision).planned(planned);
        if !planned.plan.has_changes() {
            self.remove_pending();
            log(&entry
                .kind(Kind::InSync)
                .reason("no changes".into())
                .since(started));
            return self.handled(revision, Some(planned.serial), Round::InSync);
        }
        let written = self
            .engine
            .saved_plan(planned, SyncOptions::default())
            .and_then(|text| {
                if let Some(dir) = self.pending_path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                crate::fsio::write_atomically(&self.pending_path, &text)
            });
        match written {
            Ok(()) => {
                let apply = format!("pbxsync apply {}", crate::fsio::shown(&self.pending_path));
                log(&entry
                    .reason(format!("{why}; review and run `{apply}`"))
                    .since(started));
                self.handled(revision, Some(planned.serial), Round::Pending)
            }
            Err(e) => {
                let why = format!("cannot write {}: {e}", self.pending_path.display());
                self.failed(revision, log, entry.kind(Kind::Failed).reason(why))
            }
        }
    }

    /// A pending plan that the target holds now (applied by a person, or
    /// replaced by a newer commit) is gone.
    fn remove_pending(&self) {
        let _ = std::fs::remove_file(&self.pending_path);
    }

    /// A failed sync: logged with when it is tried again, with exponential
    /// backoff and jitter (a newer revision does not wait).
    fn failed(&mut self, revision: &Revision, log: &LogSink<'_>, entry: Log) -> Round {
        let attempts = match &self.failing {
            Some(f) if f.revision == *revision => f.attempts + 1,
            _ => 0,
        };
        let base = Duration::from_secs(1).saturating_mul(1 << attempts.min(16));
        let delay = jittered(base.min(MAX_BACKOFF), 25);
        self.failing = Some(Failing {
            revision: revision.clone(),
            attempts,
            next_try: Instant::now() + delay,
        });
        self.handled = None;
        log(&entry.retry_in(delay));
        Round::Failed
    }

    /// An error before planning (the repository or the target cannot be read):
    /// logged once while it lasts.
    fn error(&mut self, e: &EngineError, log: &LogSink<'_>) -> Round {
        let message = e.to_string();
        if self.last_error.as_ref() != Some(&message) {
            log(&Log::new(Kind::Error).reason(message.clone()));
            self.last_error = Some(message);
        }
        Round::Failed
    }

    /// Whether the target still holds what the last apply wrote. Free when
    /// nothing wrote since (the serials match); otherwise planned once per serial,
    /// reported, and with `self_heal` applied back.
    fn check_drift(&mut self, serial: i64, stop: &AtomicBool, log: &LogSink<'_>) -> Round {
        if self.drift_checked == Some(serial) {
            return Round::InSync;
        }
        let started = Instant::now();
        let drift = match self.engine.drift() {
            Ok(drift) => drift,
            Err(e) => return self.error(&e, log),
        };
        self.drift_checked = Some(serial);
        match drift {
            Drift::NothingApplied | Drift::InSync { .. } => Round::InSync,
            Drift::Unknown { last } => {
                log(&Log::new(Kind::Drift).reason(format!(
                    "cannot tell drift: the CSV of the last apply (blob {}) is not in the repository any more",
                    last.blob
                )));
                Round::InSync
            }
            Drift::Found { last, plan, .. } => {
                let entry = Log::new(Kind::Drift)
                    .commit(last.commit.clone())
                    .plan(&plan)
                    .differs(&plan);
                if !self.watch.self_heal {
                    log(&entry
                        .reason("the target differs from the last apply; `pbxsync adopt` writes it into the CSV, `self_heal: true` writes it back".into())
                        .since(started));
                    return Round::Pending;
                }
                log(&entry.reason("healing: applying the last applied revision back".into()));
                if stop.load(Ordering::SeqCst) {
                    return Round::Stopped;
                }
                self.heal(&last, log, started)
            }
        }
    }

    /// Applies the last applied revision back over drift.
    fn heal(
        &mut self,
        last: &crate::backend::AppliedRevision,
        log: &LogSink<'_>,
        started: Instant,
    ) -> Round {
        let source = match &last.commit {
            Some(commit) => SourceChoice::Git {
                rev: commit.clone(),
            },
            None if self.settings.working_tree => SourceChoice::WorkingTree,
            None => {
                log(&Log::new(Kind::Failed).reason(
                    "cannot heal: the last apply was not of a commit (it was of a file)".into(),
                ));
                return Round::Pending;
            }
        };
        let request = Request {
            source,
            options: SyncOptions {
                prune: last.pruned,
                ..SyncOptions::default()
            },
        };
        let entry = Log::new(Kind::Healed).commit(last.commit.clone());
        let outcome = match self.engine.prepare_apply(None, &request, &mut |_| {}) {
            Ok(Prepared::Ready(ready)) => {
                let entry = entry.planned(ready.planned());
                match self.engine.apply(*ready, &mut |_| {}) {
                    Ok(ApplyOutcome::Applied { report, .. }) => {
                        self.drift_checked = Some(report.serial);
                        log(&entry
                            .applied(report.history_id, report.serial)
                            .since(started));
                        publish(self.engine, log);
                        return Round::InSync;
                    }
                    Ok(ApplyOutcome::Cancelled) => return Round::Stopped,
                    Ok(ApplyOutcome::Stale { .. }) => "the target changed meanwhile".to_string(),
                    Ok(ApplyOutcome::Failed { error }) | Err(error) => error.to_string(),
                }
            }
            Ok(Prepared::NoChanges(_)) => return Round::InSync,
            Ok(Prepared::Refused(Refusal::Locked(holder))) => {
                format!("another apply holds the target ({holder})")
            }
            Ok(Prepared::Refused(r)) => format!("refused: {r:?}"),
            Ok(Prepared::Invalid(planned)) => skip_reason(&planned.plan),
            Err(e) => e.to_string(),
        };
        // Looked at again at the next poll.
        self.drift_checked = None;
        log(&Log::new(Kind::Failed)
            .commit(last.commit.clone())
            .reason(format!("healing failed: {outcome}"))
            .since(started));
        Round::Failed
    }
}

/// Where a plan waits for a person: `.pbxsync/pending.json` beside the config.
pub fn pending_path(config: &Config) -> PathBuf {
    config.base_dir.join(".pbxsync").join("pending.json")
}

/// Why `auto_apply: safe` leaves `plan` to a person: it moves devices or removes.
fn unsafe_reason(plan: &Plan) -> Option<String> {
    let summary = plan.summary();
    let removals = summary.remove_extension + summary.remove_user;
    let mut why = Vec::new();
    if summary.reassign_device > 0 {
        why.push(format!(
            "it reassigns {}",
            count(summary.reassign_device, "device")
        ));
    }
    if removals > 0 {
        why.push(format!(
            "it removes {}",
            users_and_extensions(summary.remove_user, summary.remove_extension)
        ));
    }
    (!why.is_empty()).then(|| why.join(" and "))
}

/// Why a plan with errors is skipped: the first error's code and message.
fn skip_reason(plan: &Plan) -> String {
    match plan.errors.first() {
        Some(d) => format!(
            "the CSV has {}, first {}: {}; fix it in a new commit",
            count(plan.error_count(), "error"),
            d.code.as_str(),
            d.message
        ),
        None => "the plan has errors".into(),
    }
}

/// `d` give or take up to `percent`% of it, so that watchers started together
/// do not poll (or retry) together.
fn jittered(d: Duration, percent: u64) -> Duration {
    let mut random = [0u8; 8];
    let r = match getrandom::fill(&mut random) {
        Ok(()) => u64::from_le_bytes(random) % 2001,
        Err(_) => 1000,
    };
    // r in 0..=2000 maps to -percent%..=+percent%.
    let scale = 1000 * 100 + (r as i64 - 1000) * percent as i64;
    d.mul_f64(scale as f64 / 100_000.0)
}

/// Publishes what the apply just committed (the provisioning files), and logs
/// what changed or what failed. A failure is not retried until the next apply
/// (or `pbxsync provision`): the apply itself is done.
fn publish(engine: &Engine<'_>, log: &LogSink<'_>) {
    let started = Instant::now();
    match engine.publish() {
        Ok(published) => {
            let files = published.files.as_ref();
            let changed = files.is_some_and(|f| !f.written.is_empty() || !f.removed.is_empty());
            let warnings = files.map_or(0, |f| f.warnings.len());
            if changed || published.domain.is_some() || warnings > 0 {
                let mut reason = match files {
                    Some(f) => format!(
                        "provisioning files: {} written, {} removed, {} unchanged",
                        f.written.len(),
                        f.removed.len(),
                        f.unchanged
                    ),
                    None => String::new(),
                };
                if let Some((_, now)) = &published.domain {
                    let domain = now.as_deref().unwrap_or("(withdrawn)");
                    reason = format!("{reason}; registrar domain {domain}");
                }
                if let Some(first) = files.and_then(|f| f.warnings.first()) {
                    reason = format!("{reason}; {warnings} warning(s), the first: {first}");
                }
                log(&Log::new(Kind::Published)
                    .reason(reason.trim_start_matches("; ").to_owned())
                    .since(started));
            }
        }
        Err(e) => log(&Log::new(Kind::PublishFailed)
            .reason(format!("{e}; `pbxsync provision` writes them again"))
            .since(started)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ExtensionKind;
    use crate::plan::{Action, Change, PlannedAction};

    fn planned(action: Action) -> PlannedAction {
        PlannedAction {
            action,
            line: None,
            blame: None,
        }
    }

    #[test]
    fn jitter_stays_within_its_share() {
        let d = Duration::from_secs(10);
        for _ in 0..1000 {
            let j = jittered(d, 10);
            assert!(
                j >= Duration::from_secs(9) && j <= Duration::from_secs(11),
                "{j:?}"
            );
        }
        let spread: std::collections::HashSet<_> = (0..100).map(|_| jittered(d, 25)).collect();
        assert!(spread.len() > 50, "jitter does not vary: {spread:?}");
    }

    #[test]
    fn safe_means_no_reassignment_and_no_removal() {
        let remove = planned(Action::RemoveUser {
            username: "ann".into(),
        });
        let reassign = planned(Action::ReassignDevice {
            device: "0004F2000001".into(),
            from_extension: "1001".into(),
            to_extension: "1002".into(),
            from_becomes: ExtensionKind::Virtual,
            username: "bob".into(),
        });
        let update = planned(Action::UpdateUser {
            username: "ann".into(),
            changes: vec![Change {
                field: "email",
                from: Some("a@x".into()),
                to: Some("b@x".into()),
                sensitive: false,
            }],
        });
        let plan = |actions: Vec<PlannedAction>| Plan {
            actions,
            ..Plan::default()
        };
        assert_eq!(unsafe_reason(&plan(vec![update.clone()])), None);
        assert_eq!(
            unsafe_reason(&plan(vec![update.clone(), reassign.clone()])).as_deref(),
            Some("it reassigns 1 device")
        );
        assert_eq!(
            unsafe_reason(&plan(vec![reassign, remove])).as_deref(),
            Some("it reassigns 1 device and it removes 1 user")
        );
        assert_eq!(
            crate::render::plan::differs(&plan(vec![update]), 20),
            ["update_user ann (email)"]
        );
    }
}
