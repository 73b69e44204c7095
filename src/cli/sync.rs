//! `plan` and `apply`: the pipeline, drawn for people (or JSON/Markdown for bots).

use super::args::{Format, PlanFlags, PlanSource};
use super::{CliError, Context, Outcome, display_path, out, print_diagnostics_of};
use crate::apply;
use crate::backend::{ApplyRequest, Backend, BackendError, HistoryRecord, Progress, RecordedCsv};
use crate::config::Config;
use crate::diagnostic::Diagnostic;
use crate::plan::Plan;
use crate::render::plan::{self as render_plan, Base, PlanView};
use crate::source::{Loaded, Pending, SourceKind};
use crate::sync::{self, SourceChoice, SyncOptions};
use crate::validate;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

fn options(flags: &PlanFlags) -> SyncOptions {
    SyncOptions {
        prune: flags.prune,
        reset_passwords: flags.reset_passwords,
        allow_empty: flags.allow_empty,
        allow_large_change: flags.allow_large_change,
    }
}

fn choice(config: &Config, source: &PlanSource) -> SourceChoice {
    if let Some(file) = &source.file {
        SourceChoice::File(file.clone())
    } else if source.working_tree {
        SourceChoice::WorkingTree
    } else {
        SourceChoice::Git {
            rev: source
                .rev
                .clone()
                .unwrap_or_else(|| config.source_ref.clone()),
        }
    }
}

fn source_error(e: crate::source::SourceError) -> CliError {
    CliError::Message(e.to_string())
}

fn target_error(e: BackendError) -> CliError {
    CliError::Target(e)
}

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

/// Everything one run of the pipeline produced.
struct Planned {
    loaded: Loaded,
    plan: Plan,
    serial: i64,
    /// The desired state the plan was made from (apply reads the passwords here).
    desired: crate::model::Desired,
    /// Row digests to store with the apply.
    digests: Vec<(crate::model::Text, u64)>,
    /// The digest index the plan was made against, and the counts after it.
    index: Option<(crate::backend::DigestIndex, crate::model::Usage)>,
    layout: crate::csv::Layout,
    delimiter: u8,
}

fn base(config: &Config, serial: i64) -> Base {
    Base {
        target: target_name(config),
        serial,
    }
}

fn target_name(config: &Config) -> String {
    match &config.target {
        crate::config::TargetUrl::Sqlite(p) => format!("sqlite:{}", display_path(p)),
        // Never print credentials.
        crate::config::TargetUrl::Postgres(url) => redact_url(url),
    }
}

fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

/// The bytes of the configured inventory file (`None` without one), read once:
/// the no-op shortcut compares their digest, a plan reads the devices in them
/// (`inventory_devices`), which is where a file that cannot be read is reported.
type InventoryFile = Result<Option<Vec<u8>>, CliError>;

fn read_inventory(config: &Config) -> InventoryFile {
    config
        .inventory
        .as_ref()
        .map(|path| sync::read_inventory_bytes(path))
        .transpose()
        .map_err(|e| CliError::Message(e.to_string()))
}

/// The devices of the inventory file's `bytes` (none without one).
fn inventory_devices(
    config: &Config,
    bytes: Option<&[u8]>,
) -> Result<Vec<crate::model::Device>, CliError> {
    match (bytes, &config.inventory) {
        (Some(bytes), Some(path)) => sync::parse_devices(bytes, &path.display().to_string())
            .map_err(|e| CliError::Message(e.to_string())),
        _ => Ok(Vec::new()),
    }
}

/// Plans against an open (or absent) target: only the rows that changed since the
/// last apply when it can, the whole directory otherwise.
fn run_pipeline(
    ctx: &Context,
    config: &Config,
    options: &SyncOptions,
    source: Pending,
    inventory: Vec<crate::model::Device>,
    mut target: Option<&mut Box<dyn Backend>>,
    keep_index: bool,
) -> Result<Planned, CliError> {
    let clock = ctx.clock();
    let policy = sync::policy(config, options);
    // A file's blob id is computed on another thread meanwhile.
    let (loaded, planned) = source
        .alongside(|bytes| -> Result<_, CliError> {
            let changed_rows_only =
                target.is_some() && sync::can_plan_changed_rows(options, None);
            let (validated, digests) = match target.as_deref_mut() {
                Some(t) if changed_rows_only => {
                    let (validated, digests) =
                        sync::validate_with_index(bytes, &policy, t, &inventory);
                    (validated, Some(digests))
                }
                _ => (validate::validate(bytes, &policy), None),
            };
            clock.lap("read and validate the CSV (and the target's row digests)");
            let (layout, delimiter) = (validated.layout.clone(), validated.delimiter);
            let mut changed = None;
            if let (Some(t), Some(digests)) = (target.as_deref_mut(), digests)
                && sync::can_plan_changed_rows(options, Some(&layout))
            {
                let digests = digests.map_err(target_error)?;
                let planned = sync::plan_changed_rows(
                    config,
                    options,
                    &validated,
                    t,
                    digests.index,
                    digests.new_devices,
                    keep_index,
                )
                .map_err(target_error)?;
                match planned {
                    Some(planned) => {
                        clock.lap(&format!(
                            "plan the {} changed rows (and their users' rows)",
                            planned.desired.extensions.len()
                        ));
                        changed = Some((digests.serial, planned));
                    }
                    None => clock.lap(
                        "look for what pruning removes (users without extensions: the whole directory is planned)",
                    ),
                }
            }
            let (serial, planned) = match changed {
                Some(changed) => changed,
                None => {
                    let mut target = target.as_deref_mut();
                    // The whole desired state is needed: read the rows again when
                    // they were not kept.
                    let validated = if changed_rows_only {
                        drop(validated);
                        validate::validate(bytes, &policy)
                    } else {
                        validated
                    };
                    let serial = match target.as_mut() {
                        Some(t) => t.serial().map_err(target_error)?,
                        None => 0,
                    };
                    (
                        serial,
                        // Cloned: the work may run twice (see `Pending::alongside`).
                        sync::plan_all(
                            config,
                            options,
                            validated,
                            target,
                            inventory.clone(),
                            keep_index,
                        )
                        .map_err(target_error)?,
                    )
                }
            };
            clock.lap("read the target, diff and checks");
            Ok((serial, planned, layout, delimiter))
        })
        .map_err(source_error)?;
    let (serial, planned, layout, delimiter) = planned?;
    let sync::Planned {
        mut plan,
        desired,
        digests,
        index,
    } = planned;
    sync::add_blame(config, &loaded, &mut plan).map_err(source_error)?;
    clock.lap("blame");
    Ok(Planned {
        loaded,
        plan,
        serial,
        desired,
        digests,
        index,
        layout,
        delimiter,
    })
}

fn view<'a>(config: &Config, planned: &'a Planned) -> PlanView<'a> {
    PlanView {
        plan: &planned.plan,
        source: serde_json::to_value(&planned.loaded.revision).unwrap_or_default(),
        base: base(config, planned.serial),
    }
}

fn source_name(config: &Config, loaded: &Loaded) -> String {
    match loaded.revision.kind {
        SourceKind::File => loaded.revision.path.clone(),
        _ => display_path(&config.source_path),
    }
}

/// Prints the plan in the chosen format; errors go to stderr with their lines.
fn show(ctx: &Context, config: &Config, planned: &Planned, format: Format) -> Result<(), CliError> {
    let v = view(config, planned);
    match format {
        Format::Json => super::out_with(|w| render_plan::json(&v).write_pretty_json(w)),
        Format::Markdown => super::out_streamed(|w| render_plan::write_markdown(&v, w)),
        Format::Text => {
            let mut all: Vec<Diagnostic> = planned.plan.errors.clone();
            all.extend(planned.plan.warnings.iter().cloned());
            if !all.is_empty() {
                // The decoded text to show lines of (decoding again is cheap;
                // validating again is not needed).
                let text = crate::csv::decode(&planned.loaded.bytes, config.encoding)
                    .map(|(t, _)| t.text)
                    .unwrap_or_default();
                let name = source_name(config, &planned.loaded);
                let view = crate::render::diagnostics::SourceView::new(
                    &name,
                    &text,
                    planned.delimiter,
                    Some(&planned.layout),
                );
                crate::diagnostic::sort(&mut all);
                print_diagnostics_of(ctx, &view, &all);
                super::print_omitted(ctx, &planned.plan.omitted);
            }
            if planned.plan.errors.is_empty() {
                super::out_streamed(|w| render_plan::write_text(&v, ctx.style, w))?;
            } else {
                eprintln!(
                    "{}: {}; nothing can be applied",
                    source_name(config, &planned.loaded),
                    crate::render::diagnostics::counts_with(&all, &planned.plan.omitted)
                );
            }
            Ok(())
        }
    }
}

const UNCHANGED_SINCE_LAST_APPLY: &str =
    "No changes. The CSV and the target are as they were after the last apply.\n";

/// The shortcut of SPEC section 10: when neither the CSV content nor the target
/// changed since the last apply, there is nothing to plan and no row is read.
fn unchanged_since_last_apply(
    config: &Config,
    choice: &SourceChoice,
    options: &SyncOptions,
    target: &mut Box<dyn Backend>,
    inventory: &InventoryFile,
) -> Result<Option<(String, Option<String>, i64)>, CliError> {
    if options.reset_passwords {
        return Ok(None);
    }
    let Some(last) = target.last_applied().map_err(target_error)? else {
        return Ok(None);
    };
    // After a pruning apply the directory holds nothing the CSV leaves out: a
    // pruning plan of the same CSV finds nothing either.
    if (options.prune || config.prune) && !last.pruned {
        return Ok(None);
    }
    // Every device of the inventory file the last apply was planned with exists
    // after it: the same file asks for nothing more. Without one, nothing is
    // asked. A file that cannot be read is reported by the plan.
    match inventory {
        Ok(None) => {}
        Ok(Some(bytes)) if last.inventory == Some(sync::inventory_digest(bytes)) => {}
        _ => return Ok(None),
    }
    let (commit, blob) = match choice {
        SourceChoice::Git { rev } => {
            match crate::source::peek(&config.base_dir, &config.source_path, rev) {
                Ok((c, b)) => (Some(c), b),
                Err(_) => return Ok(None),
            }
        }
        _ => return Ok(None),
    };
    let serial = target.serial().map_err(target_error)?;
    Ok((blob == last.blob && serial == last.serial).then_some((blob, commit, serial)))
}

/// What the CSV committed at `source.ref` would change now, for `status`: nothing
/// when neither it nor the target changed since the last apply (no row is read),
/// else a plan as `plan` makes it.
pub(super) fn pending(
    ctx: &Context,
    config: &Config,
    target: &mut Box<dyn Backend>,
) -> Result<Plan, CliError> {
    let choice = SourceChoice::Git {
        rev: config.source_ref.clone(),
    };
    let options = SyncOptions::default();
    let inventory = read_inventory(config);
    if unchanged_since_last_apply(config, &choice, &options, target, &inventory)?.is_some() {
        return Ok(Plan::default());
    }
    let loaded = sync::load_source(config, &choice, true).map_err(source_error)?;
    let inventory = inventory.and_then(|file| inventory_devices(config, file.as_deref()))?;
    run_pipeline(
        ctx,
        config,
        &options,
        loaded,
        inventory,
        Some(target),
        false,
    )
    .map(|planned| planned.plan)
}

pub fn plan_cmd(
    ctx: &Context,
    flags: &PlanFlags,
    format: Format,
    save: Option<&Path>,
    detailed_exitcode: bool,
) -> Result<Outcome, CliError> {
    let config = ctx.config()?;
    let options = options(flags);
    let choice = choice(&config, &flags.source);
    let mut target = sync::open_target(&config.target, false).map_err(target_error)?;
    let inventory = read_inventory(&config);
    if save.is_none()
        && let Some(t) = target.as_mut()
        && let Some((blob, commit, serial)) =
            unchanged_since_last_apply(&config, &choice, &options, t, &inventory)?
    {
        match format {
            Format::Json => {
                let doc = serde_json::json!({
                    "format_version": 1,
                    "source": {"kind": "git", "path": display_path(&config.source_path), "commit": commit, "blob": blob},
                    "base": base(&config, serial),
                    "summary": crate::plan::Summary::default(),
                    "actions": [], "errors": [], "warnings": [],
                });
                out(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&doc).unwrap_or_default()
                ))?;
            }
            _ => out(UNCHANGED_SINCE_LAST_APPLY)?,
        }
        return Ok(Outcome::Success);
    }
    let clock = ctx.clock();
    let loaded = sync::load_source(&config, &choice, true).map_err(source_error)?;
    clock.lap("read the source");
    let inventory = inventory_devices(&config, inventory?.as_deref())?;
    if config.inventory.is_some() {
        clock.lap("read the inventory file");
    }
    let planned = run_pipeline(
        ctx,
        &config,
        &options,
        loaded,
        inventory,
        target.as_mut(),
        false,
    )?;
    let clock = ctx.clock();
    show(ctx, &config, &planned, format)?;
    clock.lap("show the plan");
    if !planned.plan.errors.is_empty() {
        return Ok(Outcome::Failure);
    }
    if let Some(path) = save {
        let v = view(&config, &planned);
        let doc = render_plan::PlanDoc {
            options: Some(options),
            ..render_plan::json(&v)
        };
        let mut text = Vec::new();
        doc.write_pretty_json(&mut text)
            .map_err(|e| CliError::Message(format!("cannot render the plan: {e}")))?;
        super::write_atomically(path, &text)?;
        if !ctx.quiet {
            eprintln!(
                "Saved the plan to {}; apply it with `pbxsync apply {}`.",
                path.display(),
                path.display()
            );
        }
    }
    Ok(if detailed_exitcode && planned.plan.has_changes() {
        Outcome::Changes
    } else {
        Outcome::Success
    })
}

fn confirm() -> Result<bool, CliError> {
    let mut err = std::io::stderr();
    let _ = write!(err, "\nApply these changes? Only 'yes' is accepted: ");
    let _ = err.flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::Message(format!("cannot read the answer: {e}")))?;
    Ok(answer.trim() == "yes")
}

/// Draws progress events: a bar on a terminal, plain lines otherwise, nothing quiet.
struct ProgressDraw {
    bar: Option<indicatif::ProgressBar>,
    plain: bool,
}

impl ProgressDraw {
    fn new(ctx: &Context) -> ProgressDraw {
        let terminal = std::io::stderr().is_terminal();
        ProgressDraw {
            bar: None,
            plain: !ctx.quiet && !terminal,
        }
        .with_bar(!ctx.quiet && terminal)
    }

    fn with_bar(mut self, bar: bool) -> ProgressDraw {
        if bar {
            let b = indicatif::ProgressBar::new(0);
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg}")
            {
                b.set_style(style.progress_chars("=> "));
            }
            self.bar = Some(b);
        }
        self
    }

    fn message(&self, msg: &str) {
        if let Some(b) = &self.bar {
            b.set_message(msg.to_string());
        } else if self.plain {
            eprintln!("{msg}");
        }
    }

    fn event(&self, p: Progress) {
        match p {
            Progress::Started { total } => {
                if let Some(b) = &self.bar {
                    b.set_length(total as u64);
                } else if self.plain {
                    eprintln!("applying {total} actions");
                }
            }
            Progress::Step { done, total, step } => {
                if let Some(b) = &self.bar {
                    b.set_position(done as u64);
                    b.set_message(step);
                } else if self.plain {
                    eprintln!("applied {done}/{total} ({step})");
                }
            }
            Progress::Committing => self.message("committing"),
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

pub fn apply_cmd(
    ctx: &Context,
    plan_file: Option<&Path>,
    flags: &PlanFlags,
    auto_approve: bool,
    format: Format,
) -> Result<Outcome, CliError> {
    let config = ctx.config()?;
    let inventory_file = read_inventory(&config);
    // Nothing to apply, known without reading a row: as `plan` says it.
    if plan_file.is_none()
        && let Some(mut t) = sync::open_target(&config.target, false).map_err(target_error)?
        && unchanged_since_last_apply(
            &config,
            &choice(&config, &flags.source),
            &options(flags),
            &mut t,
            &inventory_file,
        )?
        .is_some()
    {
        if format != Format::Json && !ctx.quiet {
            out(UNCHANGED_SINCE_LAST_APPLY)?;
        }
        return Ok(Outcome::Success);
    }
    let saved: Option<SavedPlan> = match plan_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| CliError::Read {
                path: path.display().to_string(),
                source,
            })?;
            Some(serde_json::from_str(&text).map_err(|e| {
                CliError::Message(format!(
                    "{} is not a plan saved by `pbxsync plan --out`: {e}",
                    path.display()
                ))
            })?)
        }
        None => None,
    };
    let (options, choice) = match &saved {
        Some(s) => (
            s.options,
            match (s.source.kind.as_str(), &s.source.commit) {
                ("git", Some(commit)) => SourceChoice::Git {
                    rev: commit.clone(),
                },
                ("working_tree", _) => SourceChoice::WorkingTree,
                _ => SourceChoice::File(PathBuf::from(&s.source.path)),
            },
        ),
        None => (options(flags), choice(&config, &flags.source)),
    };
    let mut loaded = sync::load_source(&config, &choice, false).map_err(source_error)?;
    if let Some(s) = &saved {
        let hashed = loaded.hashed().map_err(source_error)?;
        if hashed.revision.blob != s.source.blob {
            return refuse(
                ctx,
                format,
                Diagnostic::error(
                    crate::diagnostic::Code::StalePlan,
                    "the CSV changed since this plan was made".to_string(),
                )
                .with_hint("run `pbxsync plan` again and review the new plan"),
            );
        }
        loaded = Pending::from(hashed);
    }
    // Everything that can fail without the target fails before the state file is
    // created; so does a first plan with errors.
    let inventory_file = inventory_file?;
    let inventory = inventory_devices(&config, inventory_file.as_deref())?;
    let inventory_digest = inventory_file.as_deref().map(sync::inventory_digest);
    let mut first = None;
    if let crate::config::TargetUrl::Sqlite(path) = &config.target
        && !path.exists()
    {
        let planned = run_pipeline(
            ctx,
            &config,
            &options,
            loaded.clone(),
            inventory.clone(),
            None,
            true,
        )?;
        if !planned.plan.errors.is_empty() {
            show(ctx, &config, &planned, format)?;
            return Ok(Outcome::Failure);
        }
        first = Some(planned);
    }
    let mut target = sync::open_target(&config.target, true)
        .map_err(target_error)?
        .ok_or_else(|| CliError::Message("no target".into()))?;
    let _lock = match target.try_lock() {
        Ok(guard) => guard,
        Err(BackendError::Locked(holder)) => return refuse(ctx, format, sync::locked(&holder)),
        Err(e) => return Err(target_error(e)),
    };
    if let Some(s) = &saved {
        let now = target.serial().map_err(target_error)?;
        if now != s.base.serial {
            return refuse(ctx, format, sync::stale_plan(s.base.serial, now));
        }
    }
    let mut planned = match first {
        // The state file was made just now and nothing has written to it (serial
        // 0): the plan against no target is the plan against it, and is not made
        // twice. It carries the (empty) digest index, so the one after the apply
        // is kept.
        Some(planned) if target.serial().map_err(target_error)? == 0 => planned,
        _ => run_pipeline(
            ctx,
            &config,
            &options,
            loaded,
            inventory,
            Some(&mut target),
            true,
        )?,
    };
    if let Some(s) = &saved
        && serde_json::to_value(&planned.plan.actions).unwrap_or_default() != s.actions
    {
        return refuse(
            ctx,
            format,
            Diagnostic::error(
                crate::diagnostic::Code::StalePlan,
                "planning again now gives other actions than the saved plan (the configuration or the flags changed since)",
            )
            .with_hint("run `pbxsync plan` again and review the new plan"),
        );
    }
    // The plan is shown before it is confirmed; quiet or JSON runs show only errors.
    if (format != Format::Json && !ctx.quiet) || !planned.plan.errors.is_empty() {
        show(ctx, &config, &planned, format)?;
    }
    if !planned.plan.errors.is_empty() {
        return Ok(Outcome::Failure);
    }
    if !planned.plan.has_changes() {
        return Ok(Outcome::Success);
    }
    if saved.is_none() && !auto_approve && !confirm()? {
        eprintln!("Apply cancelled; nothing was changed.");
        return Ok(Outcome::Failure);
    }
    let draw = ProgressDraw::new(ctx);
    let clock = ctx.clock();
    let hashed = apply::password_users(&planned.plan.actions).len();
    if hashed > 0 {
        draw.message(&format!("hashing {hashed} passwords"));
    }
    // A failure (argon2 finding too little memory) is recorded below, like a
    // failed write.
    let hashes = apply::hash_passwords(
        &planned.desired,
        &planned.plan.actions,
        &config.policy.password_hash,
    );
    clock.lap(&format!("hash {hashed} passwords"));
    let revision = &planned.loaded.revision;
    let record = HistoryRecord {
        id: 0,
        time: crate::time::utc_now(),
        local_user: sync::local_user(),
        git_author: revision.author.clone(),
        source: match (&revision.kind, &revision.commit) {
            (SourceKind::Git, Some(c)) => format!("commit {c}"),
            (SourceKind::WorkingTree, _) => format!("working tree {} (uncommitted)", revision.path),
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
            apply::redact_into(&text.text, planned.delimiter, &planned.layout, out)
        }),
        _ => RecordedCsv::default(),
    };
    let hashes = match hashes {
        Ok(hashes) => hashes,
        Err(e) => {
            draw.finish();
            // The message names a user at most, never a password.
            let failed = HistoryRecord {
                outcome: format!("failed: {e}"),
                csv: recorded_csv(),
                ..record
            };
            let _ = target.record_failure(&failed);
            return Err(CliError::Message(e.to_string()));
        }
    };
    // The target writes on one core. The other makes the history's CSV, which the
    // commit needs, and then the digest index after the apply (one thread, so the
    // writing thread keeps its core).
    let index = planned.index.take();
    let (actions, digests) = (&planned.plan.actions, &planned.digests);
    let (result, index) = std::thread::scope(|s| {
        let (csv_sender, csv) = std::sync::mpsc::sync_channel(1);
        let side = s.spawn(move || {
            // The apply may have failed and gone already: nobody to tell.
            let _ = csv_sender.send(recorded_csv());
            index.map(|(before, usage)| (sync::index_after(before, actions, digests), usage))
        });
        let request = ApplyRequest {
            inventory: inventory_digest.as_deref(),
            pruned: options.prune || config.prune,
            actions,
            digests,
            expected_serial: planned.serial,
            password_hashes: &hashes,
            record: Box::new(|| HistoryRecord {
                csv: csv.recv().unwrap_or_default(),
                ..record.clone()
            }),
        };
        let result = target.apply(request, &mut |p| draw.event(p));
        let index = side
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (result, index)
    });
    draw.finish();
    clock.lap("write to the target");
    match result {
        Ok(report) => {
            if let Some((mut index, usage)) = index {
                sync::forget(&mut index, &report.cleared);
                // A cache: the apply is done whether it is kept or not.
                if let Err(e) = target.keep_index(report.serial, &index, usage)
                    && ctx.verbose
                {
                    eprintln!("the digest index was not kept: {e}");
                }
                clock.lap("keep the digest index for the next plan");
            }
            match format {
                Format::Json => out(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "format_version": 1,
                        "outcome": "applied",
                        "history_id": report.history_id,
                        "serial": report.serial,
                        "summary": planned.plan.summary(),
                    }))
                    .unwrap_or_default()
                ))?,
                _ if !ctx.quiet => out(&format!(
                    "Apply complete: {} (history #{}, serial {}).\n",
                    render_plan::summary_line(&planned.plan.summary()).trim_start_matches("Plan: "),
                    report.history_id,
                    report.serial
                ))?,
                _ => {}
            }
            Ok(Outcome::Success)
        }
        Err(BackendError::Stale { planned, current }) => {
            refuse(ctx, format, sync::stale_plan(planned, current))
        }
        Err(e) => {
            let failed = HistoryRecord {
                outcome: format!("failed: {e}"),
                csv: recorded_csv(),
                ..record
            };
            let _ = target.record_failure(&failed);
            Err(target_error(e))
        }
    }
}

/// Prints a refusal (a diagnostic with a code) and fails.
fn refuse(ctx: &Context, format: Format, d: Diagnostic) -> Result<Outcome, CliError> {
    match format {
        Format::Json => out(&format!(
            "{}\n",
            serde_json::to_string_pretty(
                &serde_json::json!({"format_version": 1, "errors": [d], "warnings": []})
            )
            .unwrap_or_default()
        ))?,
        _ => {
            let view = crate::render::diagnostics::SourceView::empty("pbxsync");
            eprint!(
                "{}",
                crate::render::diagnostics::text(&d, &view, ctx.stderr_style)
            );
        }
    }
    Ok(Outcome::Failure)
}
