//! `pbxsync adopt`: asks the engine for the CSV rewritten with the target's state,
//! writes it in place atomically, and says what changed.

use super::admin::json;
use super::args::Format;
use super::{CliError, Context, Outcome, display_path, print_diagnostics};
use crate::engine::AdoptOutcome;
use crate::render::diagnostics as render_diag;
use crate::render::untrusted;

pub fn run(ctx: &Context, format: Format) -> Result<Outcome, CliError> {
    let config = ctx.config()?;
    let path = &config.source_path;
    let name = display_path(path);
    let counts = match ctx.engine(&config).adopt()? {
        AdoptOutcome::Invalid(v) => {
            match format {
                Format::Json => {
                    let (errors, warnings) = render_diag::json(&v.diagnostics);
                    json(&serde_json::json!({
                        "format_version": 1,
                        "path": name,
                        "adopted": false,
                        "errors": errors,
                        "warnings": warnings,
                    }))?;
                }
                Format::Text | Format::Markdown => {
                    print_diagnostics(ctx, &name, &v);
                    eprintln!(
                        "{}: not adopted, the file is left as it is; fix these first ({})",
                        untrusted(&name),
                        render_diag::counts_with(&v.diagnostics, &v.omitted)
                    );
                }
            }
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
        Format::Text | Format::Markdown if !ctx.quiet => {
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
        Format::Text | Format::Markdown => {}
    }
    Ok(Outcome::Success)
}
