//! `provision` and `secret`, and what an apply says of publishing.

use super::args::Format;
use super::{CliError, Context, Outcome, out};
use crate::engine::{Engine, EngineError, Published};
use crate::render::untrusted;

/// `pbxsync provision`: writes the provisioning files (and the registrar's
/// domain) from the target as it is.
pub fn provision(ctx: &Context, format: Format) -> Result<Outcome, CliError> {
    let config = ctx.config()?;
    let engine = ctx.engine(&config);
    let published = engine.publish()?;
    match format {
        Format::Json => super::admin::json(&serde_json::json!({
            "format_version": 1,
            "published": published_json(&published),
        }))?,
        _ => {
            if config.publish.kamailio.is_none() && config.publish.provision.is_none() {
                out("Nothing to publish: the config has no `publish` section.\n")?;
            }
            print_published(ctx, &published, true)?;
        }
    }
    Ok(Outcome::Success)
}

/// Publishes after an apply (or an apply with nothing to do, which repairs
/// what is published). Text lines are printed; the JSON is returned for the
/// apply's document. A failure is said, with what to do, and fails the run:
/// the apply itself is done.
pub fn after_apply(
    ctx: &Context,
    engine: &Engine<'_>,
    format: Format,
) -> (Option<serde_json::Value>, Outcome) {
    match engine.publish() {
        Ok(published) => {
            if format != Format::Json
                && let Err(e) = print_published(ctx, &published, false)
            {
                eprintln!("error: {e}");
                return (None, Outcome::Failure);
            }
            (Some(published_json(&published)), Outcome::Success)
        }
        Err(e) => {
            eprintln!("error: {}", publish_failed(&e));
            (
                Some(serde_json::json!({ "error": publish_failed(&e) })),
                Outcome::Failure,
            )
        }
    }
}

fn publish_failed(e: &EngineError) -> String {
    format!(
        "the directory is applied, but publishing it failed: {e}; \
         fix that and run `pbxsync provision` (the next apply repairs it too)"
    )
}

fn published_json(published: &Published) -> serde_json::Value {
    serde_json::json!({
        "registrar_domain": published.domain.as_ref().map(|(before, now)| {
            serde_json::json!({ "before": before, "now": now })
        }),
        "files": published.files,
    })
}

/// What publishing did, in words; `always` also says "unchanged".
fn print_published(ctx: &Context, published: &Published, always: bool) -> Result<(), CliError> {
    if let Some((_, now)) = &published.domain
        && !ctx.quiet
    {
        {
            out(&match now {
                Some(domain) => format!(
                    "Registrar: the subscriber view is published with domain {}.\n",
                    untrusted(domain)
                ),
                None => "Registrar: the subscriber view is withdrawn (no `publish.kamailio`).\n"
                    .to_owned(),
            })?;
        }
    }
    let Some(files) = &published.files else {
        return Ok(());
    };
    let changed = !files.written.is_empty() || !files.removed.is_empty();
    if !ctx.quiet && (changed || always) {
        out(&format!(
            "Provisioning files: {} written, {} removed, {} unchanged.\n",
            files.written.len(),
            files.removed.len(),
            files.unchanged
        ))?;
    }
    for warning in &files.warnings {
        eprintln!("warning: {}", untrusted(warning));
    }
    Ok(())
}

/// `pbxsync secret EXT`: one extension's SIP credentials, recorded in the
/// history as read.
pub fn secret(ctx: &Context, extension: &str, format: Format) -> Result<Outcome, CliError> {
    let config = ctx.config()?;
    let Some(credentials) = ctx.engine(&config).secret(extension)? else {
        return Err(CliError::Message(format!(
            "the target has no extension {}",
            untrusted(extension)
        )));
    };
    match format {
        Format::Json => super::admin::json(&serde_json::json!({
            "format_version": 1,
            "extension": credentials.extension,
            "auth_user": credentials.auth_user,
            "secret": credentials.secret.expose(),
            "domain": credentials.domain,
            "server": credentials.server,
        }))?,
        _ => {
            let mut text = format!(
                "extension:  {}\nauth user:  {}\nsecret:     {}\n",
                untrusted(&credentials.extension),
                untrusted(&credentials.auth_user),
                credentials.secret.expose()
            );
            if let Some(domain) = &credentials.domain {
                text.push_str(&format!("domain:     {domain}\n"));
            }
            if let Some(server) = &credentials.server {
                text.push_str(&format!("server:     {server}\n"));
            }
            out(&text)?;
        }
    }
    Ok(Outcome::Success)
}
