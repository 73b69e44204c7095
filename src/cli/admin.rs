//! The commands around the pipeline: export, status, history, devices, licenses.

use super::args::{DevicesCommand, Format, LicensesCommand};
use super::{CliError, Context, Outcome, out};
use crate::backend::Models;
use crate::model::{Device, Text};
use crate::render::plan::{NO_CHANGES, NoteDoc, Tense, count, differs, notes_text, summary_words};
use crate::render::untrusted;
use std::path::Path;

/// Prints a JSON document on stdout, pretty.
pub(super) fn json(value: &serde_json::Value) -> Result<(), CliError> {
    out(&format!(
        "{}\n",
        serde_json::to_string_pretty(value).unwrap_or_default()
    ))
}

pub fn export(ctx: &Context, file: Option<&Path>) -> Result<Outcome, CliError> {
    let config = ctx.config()?;
    let dir = ctx.engine(&config).directory()?;
    let csv = crate::export::to_csv(&dir);
    match file {
        Some(path) => {
            super::write_atomically(path, csv.as_bytes())?;
            if !ctx.quiet {
                eprintln!(
                    "wrote {} extensions to {}",
                    dir.extensions.len(),
                    path.display()
                );
            }
        }
        None => out(&csv)?,
    }
    Ok(Outcome::Success)
}

pub fn status(ctx: &Context, format: Format) -> Result<Outcome, CliError> {
    let config = ctx.config()?;
    let clock = ctx.clock();
    let Some(status) = ctx.engine(&config).status(&mut |e| {
        if let crate::engine::Event::Phase(phase) = e {
            clock.lap(phase)
        }
    })?
    else {
        let msg = "no state yet: nothing has been applied to this target";
        match format {
            Format::Json => json(&serde_json::json!({"format_version": 1, "initialized": false}))?,
            _ => out(&format!("{msg}\n"))?,
        }
        return Ok(Outcome::Success);
    };
    let crate::engine::Status {
        target,
        serial,
        counts,
        last_applied: last,
        last_record,
        lock_holder: holder,
        pending,
        drift,
        last_on_ref,
    } = status;
    match format {
        Format::Json => json(&serde_json::json!({
            "format_version": 1,
            "initialized": true,
            "target": target,
            "serial": serial,
            "users": counts.users,
            "extensions": counts.extensions,
            "devices": counts.devices,
            "last_applied": last,
            "last_applied_at": last_record.as_ref().map(|r| r.time.clone()),
            "last_applied_on_ref": last_on_ref,
            "pending": pending.as_ref().ok().map(|p| p.summary()),
            "pending_errors": pending.as_ref().map(|p| p.error_count()).unwrap_or(0),
            "pending_differs": pending.as_ref().ok().map(|p| differs(p, JSON_DIFFERS_SHOWN)),
            "drift": drift.as_ref().map(|p| p.summary()),
            "drift_differs": drift.as_ref().map(|p| differs(p, JSON_DIFFERS_SHOWN)),
            "lock_holder": holder,
            "notes": pending.as_ref().map(|p| NoteDoc::all(&p.notes)).unwrap_or_default(),
        }))?,
        _ => {
            let mut s = format!(
                "target:        {}\nserial:        {serial}\ndirectory:     {} users, {} extensions, {} devices\n",
                target, counts.users, counts.extensions, counts.devices
            );
            match (&last, &last_record) {
                (Some(l), Some(r)) => s.push_str(&format!(
                    "last applied:  {} at {} (history #{})\n",
                    r.source, r.time, l.history_id
                )),
                _ => s.push_str("last applied:  never\n"),
            }
            if last_on_ref == Some(false) {
                s.push_str(&format!(
                    "               that commit is no longer on `{}`: history was rewritten since (a force push, an amend, a rebase); plans and applies still work\n",
                    untrusted(&config.source_ref)
                ));
            }
            match &pending {
                Ok(p) if !p.errors.is_empty() => s.push_str(&format!(
                    "pending:       the committed CSV has {} (run `pbxsync plan`)\n",
                    count(p.error_count(), "error")
                )),
                Ok(p) if p.has_changes() => {
                    s.push_str(&format!(
                        "pending:       {}; see `pbxsync plan`\n",
                        count(p.actions.len() as u64, "change")
                    ));
                    push_differs(&mut s, p);
                }
                Ok(_) => s.push_str(&format!("pending:       {NO_CHANGES}\n")),
                Err(e) => s.push_str(&format!("pending:       unknown ({e})\n")),
            }
            match &drift {
                Some(p) if p.has_changes() => {
                    s.push_str(&format!(
                        "drift:         {} from the last applied CSV (made outside pbxsync); `pbxsync adopt` keeps what the target holds\n",
                        count(p.actions.len() as u64, "difference")
                    ));
                    push_differs(&mut s, p);
                }
                Some(_) => s.push_str("drift:         none\n"),
                None => {}
            }
            match holder {
                Some(h) => s.push_str(&format!("lock:          held by {h}\n")),
                None => s.push_str("lock:          free\n"),
            }
            out(&s)?;
            if let Ok(p) = &pending
                && !ctx.quiet
            {
                eprint!("{}", notes_text(&p.notes, ctx.verbose, ctx.stderr_style));
            }
        }
    }
    Ok(Outcome::Success)
}

/// How many entries of what differs `status` lists as text, and as JSON.
const DIFFERS_SHOWN: usize = 10;
const JSON_DIFFERS_SHOWN: usize = 1000;

/// Lists under a status line what `plan` would change, one short entry per
/// action (escaped: names come from files and the target).
fn push_differs(s: &mut String, plan: &crate::plan::Plan) {
    for entry in differs(plan, DIFFERS_SHOWN) {
        s.push_str(&format!("                 {}\n", untrusted(&entry)));
    }
    if plan.actions.len() > DIFFERS_SHOWN {
        s.push_str(&format!(
            "                 … and {} more\n",
            plan.actions.len() - DIFFERS_SHOWN
        ));
    }
}

pub fn history(ctx: &Context, id: Option<i64>, format: Format) -> Result<Outcome, CliError> {
    let config = ctx.config()?;
    let engine = ctx.engine(&config);
    match id {
        Some(id) => {
            let Some((r, csv)) = engine.history_entry(id)? else {
                return Err(CliError::Message(format!(
                    "there is no apply #{id} in the history; see `pbxsync history`"
                )));
            };
            match format {
                Format::Json => json(
                    &serde_json::to_value(&r)
                        .map_err(|e| CliError::Message(format!("cannot show apply #{id}: {e}")))?,
                )?,
                _ => out(&format!(
                    "apply #{}\ntime:     {}{}\nwho:      {}{}\nsource:   {}\nblob:     {}\noutcome:  {}\nsummary:  {}\n\n{}",
                    r.id,
                    r.time,
                    // People read the local time; the stored UTC time stays first.
                    crate::time::local_time(&r.time)
                        .filter(|local| !local.ends_with(" UTC"))
                        .map(|local| format!(" ({local})"))
                        .unwrap_or_default(),
                    untrusted(&r.local_user),
                    r.git_author
                        .as_deref()
                        .map(|a| format!(" (commit author {})", untrusted(a)))
                        .unwrap_or_default(),
                    untrusted(&r.source),
                    r.blob,
                    r.outcome,
                    recorded_summary(&r),
                    crate::render::untrusted_lines(&csv)
                ))?,
            }
        }
        None => {
            let all = engine.history()?;
            match format {
                Format::Json => json(&serde_json::to_value(&all).unwrap_or_default())?,
                _ => {
                    if all.is_empty() {
                        out("no applies recorded yet\n")?;
                    }
                    out(&history_list(&all))?;
                }
            }
        }
    }
    Ok(Outcome::Success)
}

/// The counts of a recorded apply as words: what it did, or, for a failed
/// one, what it was to do.
fn recorded_summary(r: &crate::backend::HistoryRecord) -> String {
    let summary = summary_of(r);
    if summary.total == 0 {
        return "no actions".to_string();
    }
    let tense = if r.outcome == "applied" {
        Tense::Done
    } else {
        Tense::Planned
    };
    summary_words(&summary, tense)
}

/// The counts a history record keeps (its summary as JSON).
fn summary_of(r: &crate::backend::HistoryRecord) -> crate::plan::Summary {
    serde_json::from_value(r.summary.clone()).unwrap_or_default()
}

/// The history as a table, newest first, under a header row. An apply that
/// removed extensions or users says that it pruned (a `--prune` that found
/// nothing to remove changed nothing worth pointing at).
fn history_list(all: &[crate::backend::HistoryRecord]) -> String {
    let mut s = if all.is_empty() {
        String::new()
    } else {
        format!(
            "{:<5} {:<20}  {:<10} {:>11}  {:<47}  {}\n",
            "ID", "TIME (UTC)", "WHO", "ACTIONS", "SOURCE", "OUTCOME"
        )
    };
    for r in all {
        let summary = summary_of(r);
        let pruned = if r.outcome == "applied" && summary.remove_extension + summary.remove_user > 0
        {
            ", pruned"
        } else {
            ""
        };
        s.push_str(&format!(
            "#{:<4} {:<20}  {:<10} {:>11}  {:<47}  {}{pruned}\n",
            r.id,
            r.time,
            untrusted(&r.local_user),
            count(summary.total, "action"),
            untrusted(&r.source),
            untrusted(&r.outcome)
        ));
    }
    s
}

fn device_id(id: &str) -> Result<Text, CliError> {
    match crate::validate::rules::device(id.trim()) {
        Ok(crate::model::DeviceCell::Device(id)) => Ok(id),
        Ok(_) => Err(CliError::Message(format!("`{id}` is not a device id"))),
        Err(p) => Err(CliError::Message(match p.hint {
            Some(hint) => format!("{}; {hint}", p.message),
            None => p.message,
        })),
    }
}

pub fn devices(ctx: &Context, cmd: DevicesCommand) -> Result<Outcome, CliError> {
    match cmd {
        DevicesCommand::Add { id, model } => {
            // Without --model a device the inventory holds keeps its model;
            // `--model ""` clears it.
            let models = match model {
                Some(_) => Models::Replace,
                None => Models::KeepWhenEmpty,
            };
            let device = Device {
                id: device_id(&id)?,
                model: Text::from(model.as_deref().unwrap_or_default().trim()),
            };
            let config = ctx.config()?;
            ctx.engine(&config)
                .add_devices(std::slice::from_ref(&device), models)?;
            if !ctx.quiet {
                out(&format!("added {}\n", device.id))?;
            }
        }
        DevicesCommand::Import { file } => {
            let config = ctx.config()?;
            let imported = ctx.engine(&config).import_devices(&file)?;
            if !ctx.quiet {
                out(&format!("imported {imported} devices\n"))?;
            }
        }
        DevicesCommand::List { format } => {
            let config = ctx.config()?;
            let dir = ctx.engine(&config).directory_or_empty()?;
            let holders: std::collections::HashMap<&str, &Text> = dir
                .extensions
                .iter()
                .filter_map(|e| Some((e.device.as_deref()?, &e.number)))
                .collect();
            let holder = |id: &str| holders.get(id).map(|&n| n.clone());
            match format {
                Format::Json => json(&serde_json::Value::Array(
                    dir.devices
                        .iter()
                        .map(|d| serde_json::json!({"id": d.id, "model": d.model, "extension": holder(&d.id)}))
                        .collect(),
                ))?,
                _ => {
                    let mut s = String::new();
                    for d in &dir.devices {
                        let held = holder(&d.id).map_or("free".to_string(), |e| format!("extension {e}"));
                        s.push_str(&format!(
                            "{:<14} {:<24} {held}\n",
                            d.id,
                            crate::render::untrusted(&d.model)
                        ));
                    }
                    out(&s)?;
                }
            }
        }
        DevicesCommand::Remove { id } => {
            let id = device_id(&id)?;
            let config = ctx.config()?;
            if !ctx.engine(&config).remove_device(&id)? {
                return Err(CliError::Message(format!(
                    "device {id} is not in the inventory"
                )));
            }
            if !ctx.quiet {
                out(&format!("removed {id}\n"))?;
            }
        }
    }
    Ok(Outcome::Success)
}

fn limit(value: &str) -> Result<Option<u64>, CliError> {
    match value.trim() {
        "unlimited" => Ok(None),
        n => n.parse().map(Some).map_err(|_| {
            CliError::Message(format!(
                "`{value}` is not a number of licenses or `unlimited`"
            ))
        }),
    }
}

pub fn licenses(ctx: &Context, cmd: LicensesCommand) -> Result<Outcome, CliError> {
    match cmd {
        LicensesCommand::Show { format } => {
            let config = ctx.config()?;
            let dir = ctx.engine(&config).directory_or_empty()?;
            let usage = crate::model::Usage::of(&dir);
            let (users, voicemail) = (usage.user_licenses, usage.voicemail_licenses);
            let show = |l: Option<u64>| l.map_or("unlimited".to_string(), |n| n.to_string());
            match format {
                Format::Json => json(&serde_json::json!({
                    "users": {"limit": dir.licenses.users, "used": users},
                    "voicemail": {"limit": dir.licenses.voicemail, "used": voicemail},
                }))?,
                _ => out(&format!(
                    "user licenses:      {users} used of {}\nvoicemail licenses: {voicemail} used of {}\n",
                    show(dir.licenses.users),
                    show(dir.licenses.voicemail)
                ))?,
            }
        }
        LicensesCommand::Set { users, voicemail } => {
            let config = ctx.config()?;
            let (limits, usage) = ctx.engine(&config).set_licenses(|current| {
                if let Some(u) = users {
                    current.users = limit(&u)?;
                }
                if let Some(v) = voicemail {
                    current.voicemail = limit(&v)?;
                }
                Ok::<_, CliError>(())
            })?;
            if !ctx.quiet {
                out("licenses set\n")?;
            }
            // Not refused: a limit may be lowered ahead of a cleanup. But every
            // plan fails until then, which should not come as a surprise.
            for s in crate::plan::checks::shortfalls(limits, usage) {
                eprintln!(
                    "{}: {} {} licenses are in use, the new limit is {}: every plan is refused until the {} extensions are down to {} ({} fewer), or the limit is raised again",
                    ctx.stderr_style.yellow("warning"),
                    s.needed,
                    s.what,
                    s.limit,
                    s.extensions(),
                    s.limit,
                    s.missing()
                );
            }
        }
    }
    Ok(Outcome::Success)
}
