//! Checks on a whole plan: licenses (rule 10) and the safety threshold.

use super::{Action, Plan};
use crate::diagnostic::{Code, Diagnostic};
use crate::model::{Directory, ExtensionKind, Licenses, SortedCursor, Usage, cmp_extension};
use crate::policy::Safety;

/// License use: (user licenses, voicemail licenses).
fn usage<'a>(kinds: impl Iterator<Item = ExtensionKind> + 'a) -> (u64, u64) {
    kinds.fold((0, 0), |(u, v), k| {
        if k.uses_voicemail_license() {
            (u, v + 1)
        } else {
            (u + 1, v)
        }
    })
}

/// A kind of license that a directory uses more of than its limit allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shortfall {
    /// `user` or `voicemail`.
    pub what: &'static str,
    /// How many the directory uses (or would use after a plan).
    pub needed: u64,
    pub limit: u64,
}

impl Shortfall {
    /// How many licenses are missing.
    pub fn missing(&self) -> u64 {
        self.needed - self.limit
    }

    /// The `licenses set` flag of this kind.
    pub fn flag(&self) -> &'static str {
        if self.what == "user" {
            "--users"
        } else {
            "--voicemail"
        }
    }

    /// The extensions that use this kind of license.
    pub fn extensions(&self) -> &'static str {
        if self.what == "user" {
            "device or virtual"
        } else {
            "voicemail-only"
        }
    }
}

/// The kinds of license that `usage` needs more of than `limits` allow.
pub fn shortfalls(limits: Licenses, usage: Usage) -> Vec<Shortfall> {
    [
        ("user", limits.users, usage.user_licenses),
        ("voicemail", limits.voicemail, usage.voicemail_licenses),
    ]
    .into_iter()
    .filter_map(|(what, limit, needed)| {
        let limit = limit?;
        (needed > limit).then_some(Shortfall {
            what,
            needed,
            limit,
        })
    })
    .collect()
}

/// Adds `license-exceeded` errors when the directory after the plan needs more
/// licenses than the target has.
/// `current` must hold at least the extensions the plan touches; `before` counts the
/// whole directory.
pub fn licenses(plan: &mut Plan, current: &Directory, before: Usage) {
    let limits = current.licenses;
    if limits.users.is_none() && limits.voicemail.is_none() {
        return;
    }
    let after = usage_after(plan, current, before);
    for s in shortfalls(limits, after) {
        plan.errors.push(
            Diagnostic::error(
                Code::LicenseExceeded,
                format!(
                    "not enough {} licenses: after this plan the directory needs {} {} licenses, the limit is {}: {} more needed",
                    s.what,
                    s.needed,
                    s.what,
                    s.limit,
                    s.missing()
                ),
            )
            .with_hint(format!(
                "raise the limit with `pbxsync licenses set {} {}`, or make {} fewer {} extensions",
                s.flag(),
                s.needed,
                s.missing(),
                s.extensions()
            )),
        );
    }
}

/// The extension counts once the plan is applied.
/// `current` must hold at least the extensions the plan touches; `before` counts the
/// whole directory.
pub fn usage_after(plan: &Plan, current: &Directory, before: Usage) -> Usage {
    // Only the extensions the plan touches can change kind: compare their kinds
    // before and after (the last action on an extension decides). Actions come in
    // sorted runs, which a stable sort merges in linear time.
    let mut touched: Vec<(&str, Option<ExtensionKind>)> = Vec::new();
    for a in &plan.actions {
        match &a.action {
            Action::AddExtension {
                extension, kind, ..
            }
            | Action::UpdateExtension {
                extension, kind, ..
            } => touched.push((extension, Some(*kind))),
            Action::ReassignDevice {
                from_extension,
                to_extension,
                from_becomes,
                ..
            } => {
                if *from_becomes != ExtensionKind::Device {
                    touched.push((from_extension, Some(*from_becomes)));
                }
                touched.push((to_extension, Some(ExtensionKind::Device)));
            }
            Action::RemoveExtension { extension, .. } => touched.push((extension, None)),
            _ => {}
        }
    }
    touched.sort_by(|a, b| cmp_extension(a.0, b.0));
    let (mut users, mut voicemail) = (before.user_licenses, before.voicemail_licenses);
    let mut extensions = before.extensions;
    let mut existing = SortedCursor::new(&current.extensions);
    for (i, (ext, after)) in touched.iter().enumerate() {
        if touched.get(i + 1).is_some_and(|next| next.0 == *ext) {
            continue;
        }
        if let Some(cur) = existing.find(|e| cmp_extension(&e.number, ext)) {
            let (u, v) = usage(std::iter::once(cur.kind));
            users = users.saturating_sub(u);
            voicemail = voicemail.saturating_sub(v);
            extensions = extensions.saturating_sub(1);
        }
        if let Some(k) = after {
            let (u, v) = usage(std::iter::once(*k));
            users += u;
            voicemail += v;
            extensions += 1;
        }
    }
    Usage {
        extensions,
        user_licenses: users,
        voicemail_licenses: voicemail,
    }
}

/// Adds `too-large-change` when the plan updates or removes more than
/// `max_change_percent` of the existing extensions (and there are at least
/// `min_existing`).
/// `current` must hold at least the extensions the plan touches; `existing` counts
/// the whole directory.
pub fn safety(
    plan: &mut Plan,
    current: &Directory,
    existing: u64,
    safety: &Safety,
    allow_large_change: bool,
) {
    if allow_large_change || existing < safety.min_existing.max(1) {
        return;
    }
    // Actions come in sorted runs, which a stable sort merges in linear time.
    let mut changed: Vec<&str> = Vec::new();
    for a in &plan.actions {
        match &a.action {
            Action::UpdateExtension { extension, .. }
            | Action::RemoveExtension { extension, .. } => changed.push(extension),
            Action::ReassignDevice {
                from_extension,
                to_extension,
                ..
            } => {
                changed.push(from_extension);
                changed.push(to_extension);
            }
            _ => {}
        }
    }
    changed.sort_by(|a, b| cmp_extension(a, b));
    changed.dedup();
    let mut existing_ext = SortedCursor::new(&current.extensions);
    let changed = changed
        .iter()
        .filter(|e| existing_ext.find(|x| cmp_extension(&x.number, e)).is_some())
        .count() as u64;
    if changed * 100 > existing * u64::from(safety.max_change_percent) {
        plan.errors.push(
            Diagnostic::error(
                Code::TooLargeChange,
                format!(
                    "this plan changes or removes {changed} of {existing} existing extensions ({}%), more than the safety limit of {}%",
                    changed * 100 / existing,
                    safety.max_change_percent
                ),
            )
            .with_hint("review the plan; if it is intended, pass --allow-large-change"),
        );
    }
}
