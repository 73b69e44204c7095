//! `watch`: the loop runs in `crate::watch`; this draws its records, one line
//! per event (text or JSON), and maps how it ended to an exit code.

use super::args::Format;
use super::{CliError, Context, Outcome};
use crate::render::untrusted;
use crate::watch::{Ending, Kind, Log, Settings};
use std::io::Write;

pub fn watch_cmd(
    ctx: &Context,
    settings: Settings,
    format: Format,
    detailed_exitcode: bool,
) -> Result<Outcome, CliError> {
    let config = ctx.config()?;
    let broken = std::sync::Mutex::new(None);
    let ending = crate::watch::run(&config, ctx.engine, settings, &|log| {
        if ctx.quiet && matches!(log.event, Kind::Started | Kind::InSync | Kind::Stopped) {
            return;
        }
        let line = match format {
            Format::Json => serde_json::to_string(log).unwrap_or_default() + "\n",
            Format::Text => text(log),
        };
        let mut stdout = std::io::stdout().lock();
        if let Err(e) = stdout
            .write_all(line.as_bytes())
            .and_then(|()| stdout.flush())
            && let Ok(mut broken) = broken.lock()
        {
            broken.get_or_insert(e);
        }
    })
    .map_err(|e| CliError::Message(e.to_string()))?;
    if let Some(source) = broken.into_inner().ok().flatten() {
        return Err(CliError::Write {
            path: "standard output".into(),
            source,
        });
    }
    Ok(match ending {
        Ending::InSync => Outcome::Success,
        Ending::Pending if detailed_exitcode => Outcome::Changes,
        Ending::Pending => Outcome::Success,
        Ending::Failed => Outcome::Failure,
    })
}

/// One event as a line (and the errors or differences under it). Whatever came
/// from the repository or the target is escaped.
fn text(log: &Log) -> String {
    use std::fmt::Write;
    let event = serde_json::to_value(log.event)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let mut line = format!("{} {event}", log.time);
    if let Some(commit) = &log.commit {
        let _ = write!(line, " {}", &commit[..commit.len().min(12)]);
    }
    if let Some(subject) = &log.subject {
        let _ = write!(line, " \"{}\"", untrusted(subject));
    }
    if let Some(author) = &log.author {
        let _ = write!(line, " by {}", untrusted(author));
    }
    let mut parts = Vec::new();
    if let Some(summary) = &log.summary {
        use crate::render::plan::{Tense, summary_words};
        // What an apply did, or what a plan would do.
        let tense = match log.event {
            Kind::Applied | Kind::Healed => Tense::Done,
            _ => Tense::Planned,
        };
        parts.push(summary_words(summary, tense));
    }
    if let Some(reason) = &log.reason {
        parts.push(untrusted(reason).into_owned());
    }
    if let (Some(id), Some(serial)) = (log.history_id, log.serial) {
        parts.push(format!("history #{id}, serial {serial}"));
    }
    if let Some(ms) = log.retry_in_ms {
        parts.push(format!("retry in {:.1} s", ms as f64 / 1000.0));
    }
    if !parts.is_empty() {
        let _ = write!(line, ": {}", parts.join("; "));
    }
    if let Some(ms) = log.duration_ms {
        let _ = write!(line, " ({ms} ms)");
    }
    line.push('\n');
    for d in &log.errors {
        let at = match (d.line, d.column) {
            (Some(l), Some(c)) => format!("line {l}, column {c}: "),
            (Some(l), None) => format!("line {l}: "),
            _ => String::new(),
        };
        let _ = writeln!(
            line,
            "    {at}{}: {}",
            d.code.as_str(),
            untrusted(&d.message)
        );
    }
    for d in &log.differs {
        let _ = writeln!(line, "    {}", untrusted(d));
    }
    line
}
