//! Plans as text (Terraform-style), JSON (SPEC section 9) and Markdown (a pull
//! request comment). Passwords are `(sensitive)`; secrets are not in a plan at all.

use super::Style;
use crate::plan::{Action, Change, Plan, PlannedAction, Summary};
use serde::Serialize;
use std::fmt::Write;

/// What a rendered plan says besides its actions.
#[derive(Debug, Clone, Serialize)]
pub struct Base {
    pub target: String,
    pub serial: i64,
}

pub struct PlanView<'a> {
    pub plan: &'a Plan,
    /// The source (serialized as the JSON `source` object).
    pub source: serde_json::Value,
    pub base: Base,
}

fn symbol(a: &Action) -> char {
    match a {
        Action::CreateDevice { .. } | Action::CreateUser { .. } | Action::AddExtension { .. } => {
            '+'
        }
        Action::UpdateUser { .. } | Action::UpdateExtension { .. } => '~',
        Action::ReassignDevice { .. } => '>',
        Action::RemoveExtension { .. } | Action::RemoveUser { .. } => '-',
    }
}

/// One line that names the action and what it acts on.
pub fn headline(a: &Action) -> String {
    match a {
        Action::CreateDevice { device, model } if model.is_empty() => {
            format!("create_device {device}")
        }
        Action::CreateDevice { device, model } => format!("create_device {device} ({model})"),
        Action::CreateUser { username, .. } => format!("create_user {username}"),
        Action::UpdateUser { username, .. } => format!("update_user {username}"),
        Action::AddExtension {
            username,
            extension,
            kind,
            device,
            ..
        } => match device {
            Some(d) => format!("add_extension {extension} for {username} ({kind} {d})"),
            None => format!("add_extension {extension} for {username} ({kind})"),
        },
        Action::UpdateExtension {
            username,
            extension,
            ..
        } => format!("update_extension {extension} of {username}"),
        Action::ReassignDevice {
            device,
            from_extension,
            to_extension,
            from_becomes,
            ..
        } => {
            let becomes = match from_becomes {
                crate::model::ExtensionKind::Device => "gets its own device".to_string(),
                k => format!("becomes {k}"),
            };
            format!(
                "reassign_device {device} from {from_extension} to {to_extension} ({from_extension} {becomes})"
            )
        }
        Action::RemoveExtension {
            username,
            extension,
            device,
        } => match device {
            Some(d) => format!("remove_extension {extension} of {username} (frees {d})"),
            None => format!("remove_extension {extension} of {username}"),
        },
        Action::RemoveUser { username } => format!("remove_user {username}"),
    }
}

fn changes(a: &Action) -> &[Change] {
    match a {
        Action::CreateUser { changes, .. }
        | Action::UpdateUser { changes, .. }
        | Action::AddExtension { changes, .. }
        | Action::UpdateExtension { changes, .. } => changes,
        _ => &[],
    }
}

fn quoted(s: &str) -> String {
    format!("{s:?}")
}

/// `field: "old" → "new"`, or a word diff for long text.
fn change_lines(c: &Change, style: Style, out: &mut String, indent: &str) {
    if c.sensitive {
        let _ = writeln!(out, "{indent}{}: (sensitive)", c.field);
        return;
    }
    let to = c.to.as_deref().unwrap_or("");
    match c.from.as_deref() {
        None => {
            let _ = writeln!(out, "{indent}{}: {}", c.field, style.green(&quoted(to)));
        }
        Some(from) if from.len() + to.len() > 60 || from.contains('\n') || to.contains('\n') => {
            let diff = similar::TextDiff::from_words(from, to);
            let mut line = String::new();
            for change in diff.iter_all_changes() {
                let v = change.value();
                match change.tag() {
                    similar::ChangeTag::Equal => line.push_str(v),
                    similar::ChangeTag::Delete => line.push_str(&style.red(&format!("[-{v}-]"))),
                    similar::ChangeTag::Insert => {
                        line.push_str(&style.green(&format!("{{+{v}+}}")))
                    }
                }
            }
            let _ = writeln!(out, "{indent}{}: {}", c.field, line.replace('\n', "⏎"));
        }
        Some(from) => {
            let _ = writeln!(
                out,
                "{indent}{}: {} → {}",
                c.field,
                style.red(&quoted(from)),
                style.green(&quoted(to))
            );
        }
    }
}

fn where_from(a: &PlannedAction) -> String {
    let mut s = String::new();
    if let Some(line) = a.line {
        let _ = write!(s, "line {line}");
    }
    if let Some(b) = &a.blame {
        let short = &b.commit[..b.commit.len().min(8)];
        let _ = write!(s, ", {} in {short} on {}", b.author, b.date);
    }
    s
}

/// The summary line of SPEC section 4.
pub fn summary_line(s: &Summary) -> String {
    let mut line = format!(
        "Plan: {} users to create, {} extensions to add, {} to update, {} devices to reassign, {} to remove.",
        s.create_user,
        s.add_extension,
        s.update_user + s.update_extension,
        s.reassign_device,
        s.remove_extension + s.remove_user
    );
    if s.create_device > 0 {
        let _ = write!(
            line,
            " ({} devices to add to the inventory.)",
            s.create_device
        );
    }
    line
}

pub fn text(view: &PlanView<'_>, style: Style) -> String {
    let mut out = String::new();
    let plan = view.plan;
    if plan.actions.is_empty() {
        out.push_str("No changes. The target matches the desired state.\n");
        return out;
    }
    out.push_str("pbxsync will perform the following actions:\n\n");
    for a in &plan.actions {
        let sym = symbol(&a.action).to_string();
        let sym = match symbol(&a.action) {
            '+' => style.green(&sym),
            '~' => style.yellow(&sym),
            '>' => style.blue(&sym),
            _ => style.red(&sym),
        };
        let from = where_from(a);
        let from = if from.is_empty() {
            String::new()
        } else {
            format!("  # {from}")
        };
        let _ = writeln!(out, "  {sym} {}{from}", style.bold(&headline(&a.action)));
        for c in changes(&a.action) {
            change_lines(c, style, &mut out, "      ");
        }
    }
    let _ = writeln!(out, "\n{}", style.bold(&summary_line(&plan.summary())));
    out
}

/// The JSON document of SPEC section 9, serialized straight from the plan (a
/// plan of a million actions is never copied into a JSON tree first).
#[derive(Serialize)]
pub struct PlanDoc<'a> {
    pub format_version: u32,
    pub source: &'a serde_json::Value,
    pub base: &'a Base,
    pub summary: Summary,
    pub actions: &'a [PlannedAction],
    pub errors: &'a [crate::diagnostic::Diagnostic],
    pub warnings: &'a [crate::diagnostic::Diagnostic],
    /// Present in saved plans: the flags the plan was made with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<crate::sync::SyncOptions>,
}

pub fn json<'a>(view: &'a PlanView<'a>) -> PlanDoc<'a> {
    PlanDoc {
        format_version: 1,
        source: &view.source,
        base: &view.base,
        summary: view.plan.summary(),
        actions: &view.plan.actions,
        errors: &view.plan.errors,
        warnings: &view.plan.warnings,
        options: None,
    }
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub fn markdown(view: &PlanView<'_>) -> String {
    let plan = view.plan;
    let mut out = String::from("### pbxsync plan\n\n");
    let _ = writeln!(
        out,
        "Target `{}` (serial {}).\n",
        view.base.target, view.base.serial
    );
    if !plan.errors.is_empty() {
        let _ = writeln!(
            out,
            "**{} error(s): this plan cannot be applied.**\n",
            plan.errors.len()
        );
        for e in &plan.errors {
            let at = e.line.map(|l| format!("line {l}: ")).unwrap_or_default();
            let hint = e
                .hint
                .as_deref()
                .map(|h| format!(" — {h}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "- `{}` {at}{}{}",
                e.code,
                md_escape(&e.message),
                md_escape(&hint)
            );
        }
        out.push('\n');
    }
    if plan.actions.is_empty() {
        out.push_str("No changes. The target matches the desired state.\n");
        return out;
    }
    let _ = writeln!(out, "**{}**\n", summary_line(&plan.summary()));
    out.push_str(
        "<details><summary>Actions</summary>\n\n| | action | changes | line |\n|---|---|---|---|\n",
    );
    for a in &plan.actions {
        let changes: Vec<String> = changes(&a.action)
            .iter()
            .map(|c| {
                if c.sensitive {
                    format!("{}: (sensitive)", c.field)
                } else {
                    match &c.from {
                        Some(f) => {
                            format!("{}: `{}` → `{}`", c.field, f, c.to.as_deref().unwrap_or(""))
                        }
                        None => format!("{}: `{}`", c.field, c.to.as_deref().unwrap_or("")),
                    }
                }
            })
            .collect();
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} |",
            symbol(&a.action),
            md_escape(&headline(&a.action)),
            md_escape(&changes.join("; ")),
            md_escape(&where_from(a))
        );
    }
    out.push_str("\n</details>\n");
    out
}
