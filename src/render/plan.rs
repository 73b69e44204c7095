//! Plans as text (Terraform-style), JSON (SPEC section 9) and Markdown (a pull
//! request comment). Passwords are `(sensitive)`; secrets are not in a plan at all.

use super::Style;
use crate::plan::{Action, Change, Note, Plan, PlannedAction, Summary, Unnamed};
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

/// Writes the line that names the action and what it acts on.
fn write_headline(a: &Action, out: &mut String) {
    let _ = match a {
        Action::CreateDevice { device, model } if model.is_empty() => {
            write!(out, "create_device {device}")
        }
        Action::CreateDevice { device, model } => write!(out, "create_device {device} ({model})"),
        Action::CreateUser { username, .. } => write!(out, "create_user {username}"),
        Action::UpdateUser { username, .. } => write!(out, "update_user {username}"),
        Action::AddExtension {
            username,
            extension,
            kind,
            device,
            ..
        } => match device {
            Some(d) => write!(out, "add_extension {extension} for {username} ({kind} {d})"),
            None => write!(out, "add_extension {extension} for {username} ({kind})"),
        },
        Action::UpdateExtension {
            username,
            extension,
            ..
        } => write!(out, "update_extension {extension} of {username}"),
        Action::ReassignDevice {
            device,
            from_extension,
            to_extension,
            from_becomes,
            ..
        } => match from_becomes {
            crate::model::ExtensionKind::Device => write!(
                out,
                "reassign_device {device} from {from_extension} to {to_extension} ({from_extension} gets its own device)"
            ),
            k => write!(
                out,
                "reassign_device {device} from {from_extension} to {to_extension} ({from_extension} becomes {k})"
            ),
        },
        Action::RemoveExtension {
            username,
            extension,
            device,
        } => match device {
            Some(d) => write!(
                out,
                "remove_extension {extension} of {username} (frees {d})"
            ),
            None => write!(out, "remove_extension {extension} of {username}"),
        },
        Action::RemoveUser { username } => write!(out, "remove_user {username}"),
    };
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

/// Writes `s` quoted and escaped as Rust's `{:?}` does.
fn quoted(s: &str) -> impl FnOnce(&mut String) + '_ {
    move |out| {
        let _ = write!(out, "{s:?}");
    }
}

/// `field: "old" → "new"`, or a word diff for long text.
fn change_lines(c: &Change, style: Style, out: &mut String, indent: &str) {
    out.push_str(indent);
    out.push_str(c.field);
    if c.sensitive {
        out.push_str(": (sensitive)\n");
        return;
    }
    out.push_str(": ");
    let to = c.to.as_deref().unwrap_or("");
    match c.from.as_deref() {
        None => style.paint_into(out, Style::GREEN, quoted(to)),
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
            out.push_str(&line.replace('\n', "⏎"));
        }
        Some(from) => {
            style.paint_into(out, Style::RED, quoted(from));
            out.push_str(" → ");
            style.paint_into(out, Style::GREEN, quoted(to));
        }
    }
    out.push('\n');
}

fn write_where_from(a: &PlannedAction, s: &mut String) {
    if let Some(line) = a.line {
        let _ = write!(s, "line {line}");
    }
    if let Some(b) = &a.blame {
        let short = &b.commit[..b.commit.len().min(8)];
        let _ = write!(s, ", {} in {short} on {}", b.author, b.date);
    }
}

/// Whether a summary says what a plan would do or what an apply did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tense {
    /// `1 user to create`
    Planned,
    /// `1 user created`
    Done,
}

/// `1 user`, `2 users`.
pub fn count(n: u64, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// `2 users and 1 extension`, or the one of them there is (`0` for neither):
/// an update or removal says what it acts on.
pub fn users_and_extensions(users: u64, extensions: u64) -> String {
    match (users, extensions) {
        (0, 0) => "0".to_string(),
        (u, 0) => count(u, "user"),
        (0, e) => count(e, "extension"),
        (u, e) => format!("{} and {}", count(u, "user"), count(e, "extension")),
    }
}

/// The counts of a summary in words, without the `Plan:` of the summary line:
/// `1 user to create, 2 extensions to add, …`, or after an apply `1 user
/// created, 2 extensions added, …`.
pub fn summary_words(s: &Summary, tense: Tense) -> String {
    let verb = |planned: &str, done: &str| match tense {
        Tense::Planned => format!("to {planned}"),
        Tense::Done => done.to_string(),
    };
    let mut parts = Vec::with_capacity(6);
    if s.create_device > 0 {
        parts.push(format!(
            "{} {} to the inventory",
            count(s.create_device, "device"),
            verb("add", "added")
        ));
    }
    for (what, planned, done) in [
        (count(s.create_user, "user"), "create", "created"),
        (count(s.add_extension, "extension"), "add", "added"),
        (
            users_and_extensions(s.update_user, s.update_extension),
            "update",
            "updated",
        ),
        (count(s.reassign_device, "device"), "reassign", "reassigned"),
        (
            users_and_extensions(s.remove_user, s.remove_extension),
            "remove",
            "removed",
        ),
    ] {
        parts.push(format!("{what} {}", verb(planned, done)));
    }
    parts.join(", ")
}

/// The summary line of SPEC section 4.
pub fn summary_line(s: &Summary) -> String {
    format!("Plan: {}.", summary_words(s, Tense::Planned))
}

/// A note (what a plan leaves alone) as JSON: `code` and `message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NoteDoc {
    pub code: &'static str,
    pub message: String,
}

impl NoteDoc {
    pub fn of(note: &Note) -> NoteDoc {
        match note {
            Note::Unnamed(u) => NoteDoc {
                code: "not-in-csv",
                message: format!(
                    "the target holds {} that the CSV does not name: kept (`--prune` would remove them; `plan -v` lists them)",
                    users_and_extensions_held(u)
                ),
            },
            Note::WorkingTreeDiffers => NoteDoc {
                code: "working-tree-not-planned",
                message: "the CSV in the working tree differs from the committed one, and the edit was not planned: commit it, or plan it with `--working-tree`".to_string(),
            },
        }
    }

    pub fn all(notes: &[Note]) -> Vec<NoteDoc> {
        notes.iter().map(NoteDoc::of).collect()
    }
}

/// `2 extensions and 1 user`, leaving out a count of 0.
fn users_and_extensions_held(u: &Unnamed) -> String {
    match (u.extensions, u.users) {
        (e, 0) => count(e, "extension"),
        (0, n) => count(n, "user"),
        (e, n) => format!("{} and {}", count(e, "extension"), count(n, "user")),
    }
}

/// Notes as text, for stderr: `note: …`, and with `verbose` the names of what
/// is kept where the plan has them. Names come from the target: escaped.
pub fn notes_text(notes: &[Note], verbose: bool, style: Style) -> String {
    let mut out = String::new();
    for note in notes {
        let _ = writeln!(out, "{}: {}", style.bold("note"), NoteDoc::of(note).message);
        if let (
            true,
            Note::Unnamed(Unnamed {
                names: Some(names), ..
            }),
        ) = (verbose, note)
        {
            for (what, list) in [("extensions", &names.extensions), ("users", &names.users)] {
                if !list.is_empty() {
                    let list: Vec<_> = list.iter().map(|n| super::untrusted(n)).collect();
                    let _ = writeln!(out, "  kept {what}: {}", list.join(", "));
                }
            }
        }
    }
    out
}

/// What every command says when there is nothing to do: `plan`, `apply` and
/// `status` in one wording.
pub const NO_CHANGES: &str = "No changes. The target matches the desired state.";

/// What a plan would change, one short entry per action, at most `limit`:
/// `update_user ann (email)`. For a glance (a log line, `status`) where the
/// whole plan would be too much.
pub fn differs(plan: &Plan, limit: usize) -> Vec<String> {
    plan.actions
        .iter()
        .take(limit)
        .map(|a| {
            let fields: Vec<&str> = changes(&a.action).iter().map(|c| c.field).collect();
            match &a.action {
                Action::UpdateUser { .. } | Action::UpdateExtension { .. }
                    if !fields.is_empty() =>
                {
                    format!("{} ({})", a.action.label(), fields.join(", "))
                }
                _ => a.action.label(),
            }
        })
        .collect()
}

/// Writes the plan as text (Terraform-style), with the actions rendered on every core a
/// batch at a time: they are most of a large plan's text.
pub fn write_text(
    view: &PlanView<'_>,
    style: Style,
    w: &mut impl std::io::Write,
) -> std::io::Result<()> {
    let plan = view.plan;
    if plan.actions.is_empty() {
        return writeln!(w, "{NO_CHANGES}");
    }
    w.write_all(b"pbxsync will perform the following actions:\n\n")?;
    let render = |chunk: &[PlannedAction]| {
        let mut out = String::with_capacity(chunk.len() * 160);
        for a in chunk {
            action_text(a, style, &mut out);
        }
        out
    };
    write_rendered(&plan.actions, render, w)?;
    writeln!(w, "\n{}", style.bold(&summary_line(&plan.summary())))
}

/// An action's lines: its symbol, headline and where it comes from, then a line
/// per change.
fn action_text(a: &PlannedAction, style: Style, out: &mut String) {
    let sym = symbol(&a.action);
    let code = match sym {
        '+' => Style::GREEN,
        '~' => Style::YELLOW,
        '>' => Style::BLUE,
        _ => Style::RED,
    };
    out.push_str("  ");
    style.paint_into(out, code, |out| out.push(sym));
    out.push(' ');
    style.paint_into(out, Style::BOLD, |out| write_headline(&a.action, out));
    if a.line.is_some() || a.blame.is_some() {
        out.push_str("  # ");
        write_where_from(a, out);
    }
    out.push('\n');
    for c in changes(&a.action) {
        change_lines(c, style, out, "      ");
    }
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
    /// What the plan leaves alone (SPEC section 4).
    pub notes: Vec<NoteDoc>,
    /// Present when some errors or warnings were left out (more than
    /// `diagnostic::KEPT_PER_CODE` of a code): how many, by code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub omitted: Option<&'a crate::diagnostic::Omitted>,
    /// Present in saved plans: the flags the plan was made with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub options: Option<crate::policy::SyncOptions>,
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
        notes: NoteDoc::all(&view.plan.notes),
        omitted: Some(&view.plan.omitted).filter(|o| !o.is_empty()),
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
            notes: self.notes.clone(),
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
                let mut ser = serde_json::Serializer::with_formatter(&mut part, Nested::at(2));
                action.serialize(&mut ser)?;
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

/// `serde_json::ser::PrettyFormatter` (two spaces an indent) for a value that
/// starts some levels deep, so that it can be written apart and spliced in.
struct Nested {
    depth: usize,
    has_value: bool,
}

impl Nested {
    fn at(depth: usize) -> Nested {
        Nested {
            depth,
            has_value: false,
        }
    }

    /// An array or object begins: one level deeper, nothing in it yet.
    fn open<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        bracket: &[u8],
    ) -> std::io::Result<()> {
        self.depth += 1;
        self.has_value = false;
        w.write_all(bracket)
    }

    /// It ends: on a line of its own at the outer depth when it held anything.
    fn close<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        bracket: &[u8],
    ) -> std::io::Result<()> {
        self.depth -= 1;
        if self.has_value {
            self.new_line(w, false)?;
        }
        w.write_all(bracket)
    }

    fn new_line<W: ?Sized + std::io::Write>(&self, w: &mut W, comma: bool) -> std::io::Result<()> {
        const SPACES: &[u8] = &[b' '; 64];
        w.write_all(if comma { b",\n" } else { b"\n" })?;
        let mut n = self.depth * 2;
        while n > 0 {
            let k = n.min(SPACES.len());
            w.write_all(&SPACES[..k])?;
            n -= k;
        }
        Ok(())
    }
}

impl serde_json::ser::Formatter for Nested {
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.open(w, b"[")
    }

    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.close(w, b"]")
    }

    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.new_line(w, !first)
    }

    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, _: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }

    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.open(w, b"{")
    }

    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.close(w, b"}")
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.new_line(w, !first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }

    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, _: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }
}

fn md_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_md_escaped(&mut out, s);
    out
}

/// `s` with `|` escaped and line breaks made spaces (a table cell), appended
/// to `out`.
fn push_md_escaped(out: &mut String, s: &str) {
    if !s.contains(['|', '\n']) {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '|' => out.push_str("\\|"),
            '\n' => out.push(' '),
            c => out.push(c),
        }
    }
}

/// Writes the plan as Markdown (a pull request comment), the table's rows rendered on every
/// core a batch at a time, as `write_text` does.
pub fn write_markdown(view: &PlanView<'_>, w: &mut impl std::io::Write) -> std::io::Result<()> {
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
            "**{}: this plan cannot be applied.**\n",
            count(plan.error_count(), "error")
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
        for (code, n) in plan.omitted.of(crate::diagnostic::Severity::Error) {
            let _ = writeln!(
                out,
                "- … and {n} more `{code}` errors (the first {} of each code are listed)",
                crate::diagnostic::KEPT_PER_CODE
            );
        }
        out.push('\n');
    }
    for note in &plan.notes {
        let _ = writeln!(out, "> **Note:** {}\n", NoteDoc::of(note).message);
    }
    if plan.actions.is_empty() {
        out.push_str(NO_CHANGES);
        out.push('\n');
        return w.write_all(out.as_bytes());
    }
    let _ = writeln!(out, "**{}**\n", summary_line(&plan.summary()));
    out.push_str(
        "<details><summary>Actions</summary>\n\n| | action | changes | line |\n|---|---|---|---|\n",
    );
    w.write_all(out.as_bytes())?;
    let render = |chunk: &[PlannedAction]| {
        let mut out = String::with_capacity(chunk.len() * 160);
        let mut scratch = String::new();
        for a in chunk {
            action_markdown(a, &mut out, &mut scratch);
        }
        out
    };
    write_rendered(&plan.actions, render, w)?;
    w.write_all(b"\n</details>\n")
}

/// Writes `actions` as `render` renders runs of them: the runs of a batch on
/// every core, the batches in turn, so that memory stays flat however long the
/// plan.
fn write_rendered(
    actions: &[PlannedAction],
    render: impl Fn(&[PlannedAction]) -> String + Sync,
    w: &mut impl std::io::Write,
) -> std::io::Result<()> {
    use rayon::prelude::*;
    const RUN: usize = 1024;
    for batch in actions.chunks(RUN * 16) {
        let parts: Vec<String> = if batch.len() > RUN {
            batch.par_chunks(RUN).map(&render).collect()
        } else {
            vec![render(batch)]
        };
        for part in &parts {
            w.write_all(part.as_bytes())?;
        }
    }
    Ok(())
}

/// An action's row of the Markdown table.
fn action_markdown(a: &PlannedAction, out: &mut String, scratch: &mut String) {
    out.push_str("| `");
    out.push(symbol(&a.action));
    out.push_str("` | ");
    scratch.clear();
    write_headline(&a.action, scratch);
    push_md_escaped(out, scratch);
    out.push_str(" | ");
    scratch.clear();
    for (i, c) in changes(&a.action).iter().enumerate() {
        if i > 0 {
            scratch.push_str("; ");
        }
        let to = c.to.as_deref().unwrap_or("");
        let _ = match (&c.from, c.sensitive) {
            (_, true) => write!(scratch, "{}: (sensitive)", c.field),
            (Some(f), false) => write!(scratch, "{}: `{f}` → `{to}`", c.field),
            (None, false) => write!(scratch, "{}: `{to}`", c.field),
        };
    }
    push_md_escaped(out, scratch);
    out.push_str(" | ");
    scratch.clear();
    write_where_from(a, scratch);
    push_md_escaped(out, scratch);
    out.push_str(" |\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostic::{Code, Diagnostic};
    use crate::model::ExtensionKind;

    /// What a writer of this module writes, as text.
    fn rendered(write: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> String {
        let mut out = Vec::new();
        write(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_large_plan_renders_every_action_in_order_as_text() {
        let mut plan = Plan::default();
        for i in 0..2500u32 {
            plan.actions.push(PlannedAction {
                action: Action::UpdateUser {
                    username: format!("user{i:05}").as_str().into(),
                    changes: vec![Change::new("first_name", Some("Zoë"), "Zoe \"Z\"")],
                },
                line: Some(i + 2),
                blame: None,
            });
        }
        let view = PlanView {
            plan: &plan,
            source: serde_json::Value::Null,
            base: Base {
                target: "sqlite:state.db".into(),
                serial: 7,
            },
        };
        let text = rendered(|w| write_text(&view, Style { color: false }, w));
        let mut expected = String::from("pbxsync will perform the following actions:\n\n");
        for i in 0..2500u32 {
            expected.push_str(&format!(
                "  ~ update_user user{i:05}  # line {}\n      first_name: \"Zoë\" → \"Zoe \\\"Z\\\"\"\n",
                i + 2
            ));
        }
        expected.push_str(
            "\nPlan: 0 users to create, 0 extensions to add, 2500 users to update, 0 devices to reassign, 0 to remove.\n",
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn a_large_plan_renders_every_action_in_order_as_markdown() {
        let mut plan = Plan::default();
        for i in 0..2500u32 {
            plan.actions.push(PlannedAction {
                action: Action::UpdateExtension {
                    username: "jflynn".into(),
                    extension: format!("{}", 10_000 + i).as_str().into(),
                    kind: ExtensionKind::Virtual,
                    device: None,
                    changes: vec![
                        Change::new("description", Some("a|b"), "c\nd"),
                        Change::password(),
                    ],
                },
                line: Some(i + 2),
                blame: None,
            });
        }
        let view = PlanView {
            plan: &plan,
            source: serde_json::Value::Null,
            base: Base {
                target: "sqlite:state.db".into(),
                serial: 7,
            },
        };
        let mut expected = String::from(
            "### pbxsync plan\n\nTarget `sqlite:state.db` (serial 7).\n\n\
             **Plan: 0 users to create, 0 extensions to add, 2500 extensions to update, 0 devices to reassign, 0 to remove.**\n\n\
             <details><summary>Actions</summary>\n\n| | action | changes | line |\n|---|---|---|---|\n",
        );
        for i in 0..2500u32 {
            expected.push_str(&format!(
                "| `~` | update_extension {} of jflynn | description: `a\\|b` → `c d`; password: (sensitive) | line {} |\n",
                10_000 + i,
                i + 2
            ));
        }
        expected.push_str("\n</details>\n");
        assert_eq!(rendered(|w| write_markdown(&view, w)), expected);
    }

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
