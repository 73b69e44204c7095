//! `plan` and `apply`: the pipeline, drawn for people (or JSON/Markdown for bots).

use super::args::{Format, PlanFlags, PlanFormat, PlanSource};
use super::{CliError, Context, Outcome, display_path, out, print_diagnostics_of};
use crate::backend::Progress;
use crate::config::Config;
use crate::diagnostic::{Code, Diagnostic};
use crate::engine::{
    ApplyOutcome, Event, PlanOutcome, Planned, Prepared, Refusal, Request, SourceChoice,
};
use crate::policy::SyncOptions;
use crate::render::plan::{self as render_plan, Base, PlanView};
use crate::source::{Loaded, SourceKind};
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

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

fn base(config: &Config, serial: i64) -> Base {
    Base {
        target: config.target.shown(),
        serial,
    }
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
fn show(
    ctx: &Context,
    config: &Config,
    planned: &Planned,
    format: PlanFormat,
) -> Result<(), CliError> {
    let v = view(config, planned);
    match format {
        PlanFormat::Json => super::out_with(|w| render_plan::json(&v).write_pretty_json(w)),
        PlanFormat::Markdown => super::out_streamed(|w| render_plan::write_markdown(&v, w)),
        PlanFormat::Text => {
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
                print_notes(ctx, &planned.plan.notes);
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

/// What a plan leaves alone, on stderr (SPEC section 4); not with `--quiet`.
fn print_notes(ctx: &Context, notes: &[crate::plan::Note]) {
    if !ctx.quiet {
        eprint!(
            "{}",
            render_plan::notes_text(notes, ctx.verbose, ctx.stderr_style)
        );
    }
}

fn request(config: &Config, flags: &PlanFlags) -> Request {
    Request {
        source: choice(config, &flags.source),
        options: options(flags),
    }
}

pub fn plan_cmd(
    ctx: &Context,
    flags: &PlanFlags,
    format: PlanFormat,
    save: Option<&Path>,
    detailed_exitcode: bool,
) -> Result<Outcome, CliError> {
    let config = ctx.config()?;
    let engine = ctx.engine(&config);
    let request = request(&config, flags);
    let listener = Listener::new(ctx, None);
    let planned = match engine.plan(&request, save.is_none(), &mut |e| listener.event(e))? {
        PlanOutcome::NoChanges(unchanged) => {
            match format {
                PlanFormat::Json => {
                    let doc = serde_json::json!({
                        "format_version": 1,
                        "source": {"kind": "git", "path": display_path(&config.source_path), "commit": unchanged.commit, "blob": unchanged.blob},
                        "base": base(&config, unchanged.serial),
                        "summary": crate::plan::Summary::default(),
                        "actions": [], "errors": [], "warnings": [],
                        "notes": render_plan::NoteDoc::all(&unchanged.notes),
                    });
                    out(&format!(
                        "{}\n",
                        serde_json::to_string_pretty(&doc).unwrap_or_default()
                    ))?;
                }
                _ => {
                    out(&format!("{}\n", render_plan::NO_CHANGES))?;
                    print_notes(ctx, &unchanged.notes);
                }
            }
            return Ok(Outcome::Success);
        }
        PlanOutcome::Planned(planned) | PlanOutcome::Invalid(planned) => planned,
    };
    let clock = ctx.clock();
    show(ctx, &config, &planned, format)?;
    clock.lap("show the plan");
    if !planned.plan.errors.is_empty() {
        return Ok(Outcome::Failure);
    }
    if let Some(path) = save {
        let text = engine
            .saved_plan(&planned, request.options)
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
    // A terminal echoes the answer's line break; an answer from a pipe is not
    // echoed, and what comes next (progress) must start on a line of its own.
    if !std::io::stdin().is_terminal() || !answer.ends_with('\n') {
        let _ = writeln!(err);
    }
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
                    eprintln!("applying {}", render_plan::count(total as u64, "action"));
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

/// Draws the engine's events: `-v` phase timings, the progress of an apply.
struct Listener<'d> {
    clock: super::Clock,
    draw: Option<&'d ProgressDraw>,
    verbose: bool,
}

impl<'d> Listener<'d> {
    fn new(ctx: &Context, draw: Option<&'d ProgressDraw>) -> Listener<'d> {
        Listener {
            clock: ctx.clock(),
            draw,
            verbose: ctx.verbose,
        }
    }

    fn event(&self, event: Event<'_>) {
        match event {
            Event::Phase(phase) => self.clock.lap(phase),
            Event::Hashing { passwords } => {
                if let Some(draw) = self.draw {
                    draw.message(&format!(
                        "hashing {}",
                        render_plan::count(passwords as u64, "password")
                    ));
                }
            }
            Event::Progress(p) => {
                if let Some(draw) = self.draw {
                    draw.event(p);
                }
            }
            Event::IndexNotKept(e) => {
                if self.verbose {
                    eprintln!("the digest index was not kept: {e}");
                }
            }
            // `-v` reports the path as a phase.
            Event::Planned(_) => {}
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
    let engine = ctx.engine(&config);
    let listener = Listener::new(ctx, None);
    let ready = match engine.prepare_apply(plan_file, &request(&config, flags), &mut |e| {
        listener.event(e)
    })? {
        // Nothing to apply, known without reading a row: as `plan` says it.
        Prepared::NoChanges(unchanged) => {
            if format != Format::Json && !ctx.quiet {
                out(&format!("{}\n", render_plan::NO_CHANGES))?;
                print_notes(ctx, &unchanged.notes);
            }
            // What is published is repaired all the same.
            let (published, outcome) = super::publish::after_apply(ctx, &engine, format);
            if format == Format::Json {
                nothing_applied_json(published)?;
            }
            return Ok(outcome);
        }
        Prepared::Refused(refusal) => return refuse(ctx, format, refusal_diagnostic(&refusal)),
        Prepared::Invalid(planned) => {
            show(ctx, &config, &planned, format.into())?;
            return Ok(Outcome::Failure);
        }
        Prepared::Ready(ready) => ready,
    };
    let planned = ready.planned();
    // The plan is shown before it is confirmed; quiet or JSON runs show only errors.
    if format != Format::Json && !ctx.quiet {
        show(ctx, &config, planned, format.into())?;
    }
    if !planned.plan.has_changes() {
        drop(ready);
        let (published, outcome) = super::publish::after_apply(ctx, &engine, format);
        if format == Format::Json {
            nothing_applied_json(published)?;
        }
        return Ok(outcome);
    }
    if !ready.saved() && !auto_approve && !confirm()? {
        eprintln!("Apply cancelled; nothing was changed.");
        return Ok(Outcome::Failure);
    }
    let draw = ProgressDraw::new(ctx);
    let listener = Listener::new(ctx, Some(&draw));
    let result = engine.apply(*ready, &mut |e| listener.event(e));
    draw.finish();
    match result? {
        ApplyOutcome::Applied { report, summary } => {
            if format != Format::Json && !ctx.quiet {
                out(&format!(
                    "Applied: {} (history #{}, serial {}).\n",
                    render_plan::summary_words(&summary, render_plan::Tense::Done),
                    report.history_id,
                    report.serial
                ))?;
            }
            // After the commit: the provisioning files (the registrar's view
            // changed with the commit).
            let (published, outcome) = super::publish::after_apply(ctx, &engine, format);
            if format == Format::Json {
                out(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "format_version": 1,
                        "outcome": "applied",
                        "history_id": report.history_id,
                        "serial": report.serial,
                        "summary": summary,
                        "published": published,
                    }))
                    .unwrap_or_default()
                ))?;
            }
            Ok(outcome)
        }
        ApplyOutcome::Stale { planned, current } => refuse(
            ctx,
            format,
            refusal_diagnostic(&Refusal::Stale { planned, current }),
        ),
        ApplyOutcome::Failed { error } => Err(error.into()),
        // `apply` never asks the engine to stop.
        ApplyOutcome::Cancelled => Ok(Outcome::Failure),
    }
}

/// `apply --format json` with nothing to apply: still a document, so that a
/// script always has one to read.
fn nothing_applied_json(published: Option<serde_json::Value>) -> Result<(), CliError> {
    super::admin::json(&serde_json::json!({
        "format_version": 1,
        "outcome": "no_changes",
        "summary": crate::plan::Summary::default(),
        "published": published,
    }))
}

/// A refused apply, as the diagnostic that says what to do.
fn refusal_diagnostic(refusal: &Refusal) -> Diagnostic {
    let again = "run `pbxsync plan` again and review the new plan";
    match refusal {
        Refusal::Locked(holder) => Diagnostic::error(
            Code::Locked,
            format!("an apply is already running on this target ({holder})"),
        )
        .with_hint("wait for it to finish; the lock goes away with that process"),
        Refusal::Stale { planned, current } => Diagnostic::error(
            Code::StalePlan,
            format!(
                "the target changed since this plan was made (serial {planned}, now {current})"
            ),
        )
        .with_hint(again),
        Refusal::CsvChanged => Diagnostic::error(
            Code::StalePlan,
            "the CSV changed since this plan was made".to_string(),
        )
        .with_hint(again),
        Refusal::ActionsDiffer => Diagnostic::error(
            Code::StalePlan,
            "planning again now gives other actions than the saved plan (the configuration or the flags changed since)",
        )
        .with_hint(again),
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
            let view = crate::render::diagnostics::SourceView::no_file();
            eprint!(
                "{}",
                crate::render::diagnostics::text(&d, &view, ctx.stderr_style)
            );
        }
    }
    Ok(Outcome::Failure)
}
