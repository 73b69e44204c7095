//! `pbxsync adopt`: asks the engine for the CSV rewritten with the target's state,
//! writes it in place atomically, and says what changed.

use super::admin::json;
use super::args::Format;
use super::{CliError, Context, Outcome, display_path, print_diagnostics};
use crate::engine::AdoptOutcome;
use crate::render::diagnostics as render_diag;
use crate::render::untrusted;
use crate::validate::Validated;

pub fn run(ctx: &Context, format: Format) -> Result<Outcome, CliError> {
    let config = ctx.config()?;
    let path = &config.source_path;
    let name = display_path(path);
    let counts = match ctx.engine(&config).adopt()? {
        AdoptOutcome::Invalid(v) => {
            refused(ctx, format, &name, &name, &v, "fix these first")?;
            return Ok(Outcome::Failure);
        }
        AdoptOutcome::TargetInvalid(v) => {
            // The lines are those of the file as adopting would have written it.
            let view = format!("{name} (as adopted)");
            refused(
                ctx,
                format,
                &name,
                &view,
                &v,
                "the target holds values the CSV's rules refuse; correct them in the PBX (or allow them in pbxsync.yaml's policy) and adopt again",
            )?;
            return Ok(Outcome::Failure);
        }
        AdoptOutcome::AlreadyMatches => (0, 0, 0),
        AdoptOutcome::Adopted(adopted) => {
            super::write_atomically(path, &adopted.bytes)?;
            (adopted.changed, adopted.added, adopted.removed)
        }
    };
    let (changed, added, removed) = counts;
    match format {
        Format::Json => json(&serde_json::json!({
            "format_version": 1,
            "path": name,
            "adopted": true,
            "changed": changed,
            "added": added,
            "removed": removed,
        }))?,
        Format::Text if !ctx.quiet => {
            let name = untrusted(&name);
            if counts == (0, 0, 0) {
                eprintln!("{name} already matches the target.");
            } else {
                let rows = if changed == 1 { "row" } else { "rows" };
                eprintln!(
                    "Adopted the target's state into {name}: {changed} {rows} changed, {added} added, {removed} removed."
                );
            }
        }
        Format::Text => {}
    }
    Ok(Outcome::Success)
}

/// Says why the file was not adopted: the diagnostics (shown against `view`, as
/// `validate` shows them), then what to do.
fn refused(
    ctx: &Context,
    format: Format,
    name: &str,
    view: &str,
    v: &Validated<'_>,
    what_to_do: &str,
) -> Result<(), CliError> {
    match format {
        Format::Json => {
            let (errors, warnings) = render_diag::json(&v.diagnostics);
            json(&serde_json::json!({
                "format_version": 1,
                "path": name,
                "adopted": false,
                "errors": errors,
                "warnings": warnings,
            }))
        }
        Format::Text => {
            print_diagnostics(ctx, view, v);
            eprintln!(
                "{}: not adopted, the file is left as it is; {what_to_do} ({})",
                untrusted(name),
                render_diag::counts_with(&v.diagnostics, &v.omitted)
            );
            Ok(())
        }
    }
}
