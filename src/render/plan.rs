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

impl PlanDoc<'_> {
    /// Writes the document as `serde_json::to_writer_pretty` does, with the
    /// actions rendered on every core: they are most of a large plan's text.
    /// Rendered a batch at a time, so memory stays flat however long the plan.
    pub fn write_pretty_json(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        use rayon::prelude::*;
        const CHUNK: usize = 1024;
        if self.actions.len() < CHUNK {
            return serde_json::to_writer_pretty(w, self).map_err(std::io::Error::from);
        }
        // The document without actions, to splice them into.
        let head = serde_json::to_vec_pretty(&PlanDoc {
            actions: &[],
            ..*self
        })?;
        const EMPTY: &[u8] = b"\n  \"actions\": [],\n";
        let at = head
            .windows(EMPTY.len())
            .position(|w| w == EMPTY)
            .ok_or_else(|| std::io::Error::other("no actions in the plan document"))?
            + EMPTY.len()
            - 3;
        w.write_all(&head[..at])?;
        // Each action as the pretty printer writes an element of a list that is
        // a field of the document: on a new line, four spaces in.
        let render = |chunk: &[PlannedAction]| -> serde_json::Result<Vec<u8>> {
            let mut part = Vec::with_capacity(chunk.len() * 640);
            for action in chunk {
                part.extend_from_slice(b",\n    ");
                for (j, line) in serde_json::to_vec_pretty(action)?
                    .split(|b| *b == b'\n')
                    .enumerate()
                {
                    if j > 0 {
                        part.extend_from_slice(b"\n    ");
                    }
                    part.extend_from_slice(line);
                }
            }
            Ok(part)
        };
        let mut first = true;
        for batch in self.actions.chunks(CHUNK * 16) {
            let parts = batch
                .par_chunks(CHUNK)
                .map(render)
                .collect::<serde_json::Result<Vec<Vec<u8>>>>()?;
            for part in &parts {
                // The first action has no comma before it.
                w.write_all(if first { &part[1..] } else { part })?;
                first = false;
            }
        }
        w.write_all(b"\n  ]")?;
        w.write_all(&head[at + 1..])
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostic::{Code, Diagnostic};
    use crate::model::ExtensionKind;

    #[test]
    fn a_large_plan_renders_as_serde_json_would() {
        let mut plan = Plan::default();
        for i in 0..2500 {
            let username = format!("user{i}");
            plan.actions.push(PlannedAction {
                action: if i % 2 == 0 {
                    Action::CreateUser {
                        username: username.as_str().into(),
                        changes: vec![
                            Change::new("first_name", None, "Zoë \"Z\"\n"),
                            Change::password(),
                        ],
                    }
                } else {
                    Action::AddExtension {
                        username: username.as_str().into(),
                        extension: format!("{}", 1000 + i).as_str().into(),
                        kind: ExtensionKind::Virtual,
                        device: None,
                        changes: vec![Change::new("description", Some("old"), "new")],
                    }
                },
                line: Some(i + 2),
                blame: None,
            });
        }
        plan.warnings
            .push(Diagnostic::warning(Code::TooLargeChange, "careful"));
        let source = serde_json::json!({"kind": "file", "path": "\"actions\": [],"});
        let base = Base {
            target: "sqlite:state.db".into(),
            serial: 7,
        };
        let view = PlanView {
            plan: &plan,
            source: source.clone(),
            base: Base {
                target: base.target.clone(),
                serial: base.serial,
            },
        };
        for doc in [
            json(&view),
            PlanDoc {
                actions: &plan.actions[..3],
                ..json(&view)
            },
            PlanDoc {
                actions: &[],
                ..json(&view)
            },
        ] {
            let mut written = Vec::new();
            doc.write_pretty_json(&mut written).unwrap();
            assert_eq!(
                String::from_utf8(written).unwrap(),
                serde_json::to_string_pretty(&doc).unwrap()
            );
        }
    }
}
