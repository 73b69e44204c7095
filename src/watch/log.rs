//! What `watch` reports: one record per event, which the CLI writes as a text
//! line or a JSON object per line (for log shippers). Nothing secret goes in:
//! plans name fields, never passwords or SIP secrets, and diagnostics carry no
//! cell of the Password column.

use crate::diagnostic::Diagnostic;
use crate::engine::{Planned, Revision};
use crate::plan::{Plan, Summary};
use serde::Serialize;
use std::time::{Duration, Instant};

/// How many entries of what differs a log line shows.
const DIFFERS_SHOWN: usize = 20;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The watcher started (what it watches, how it applies).
    Started,
    /// File events are not available; the poll alone finds changes.
    PollingOnly,
    /// The target holds the revision: nothing to do.
    InSync,
    /// The revision was applied.
    Applied,
    /// A plan waits for a person in `.pbxsync/pending.json`.
    Pending,
    /// A bad revision was skipped (its diagnostics are in the record).
    Skipped,
    /// Another apply held the target; tried again later.
    Locked,
    /// An apply failed (nothing was written); tried again later.
    Failed,
    /// Stopped on request before the apply wrote anything.
    Cancelled,
    /// The target no longer holds what the last apply wrote.
    Drift,
    /// A signal asked the watcher to stop.
    Stopping,
    /// Drift was written back (`self_heal`).
    Healed,
    /// After an apply, provisioning files were written or removed, or the
    /// registrar's domain changed.
    Published,
    /// After an apply, publishing failed (`pbxsync provision` repairs it).
    PublishFailed,
    /// The repository or the target could not be read.
    Error,
    /// The watcher stopped (a signal).
    Stopped,
}

/// The diagnostics a record keeps of a skipped plan (the first ones: the rest
/// are counted in the reason).
const KEPT_DIAGNOSTICS: usize = 20;

/// One event.
#[derive(Debug, Clone, Serialize)]
pub struct Log {
    /// UTC, RFC 3339.
    pub time: String,
    pub event: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The commit's author, `Name <email>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// The commit's subject line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// Why: what was decided and what to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What differs from the last apply (drift), at most `DIFFERS_SHOWN` entries.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub differs: Vec<String>,
    /// The errors of a skipped plan (the first 20).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Diagnostic>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<i64>,
    /// When a failed sync is tried again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_in_ms: Option<u64>,
    /// How long the round took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

impl Log {
    pub fn new(event: Kind) -> Log {
        Log {
            time: crate::time::utc_now(),
            event,
            commit: None,
            author: None,
            subject: None,
            summary: None,
            reason: None,
            differs: Vec::new(),
            errors: Vec::new(),
            history_id: None,
            serial: None,
            retry_in_ms: None,
            duration_ms: None,
        }
    }

    pub fn kind(self, event: Kind) -> Log {
        Log { event, ..self }
    }

    pub fn reason(self, reason: String) -> Log {
        Log {
            reason: Some(reason),
            ..self
        }
    }

    pub fn commit(self, commit: Option<String>) -> Log {
        Log { commit, ..self }
    }

    pub fn revision(self, revision: &Revision) -> Log {
        self.commit(revision.commit.clone())
    }

    /// The commit's author and subject, and the plan's summary.
    pub fn planned(self, planned: &Planned) -> Log {
        self.source(planned).plan(&planned.plan)
    }

    /// The commit, its author and subject.
    pub fn source(self, planned: &Planned) -> Log {
        let revision = &planned.loaded.revision;
        Log {
            commit: revision.commit.clone().or(self.commit),
            author: revision.author.clone(),
            subject: revision.summary.clone(),
            ..self
        }
    }

    pub fn plan(self, plan: &Plan) -> Log {
        Log {
            summary: Some(plan.summary()),
            ..self
        }
    }

    pub fn differs(self, plan: &Plan) -> Log {
        Log {
            differs: crate::render::plan::differs(plan, DIFFERS_SHOWN),
            ..self
        }
    }

    pub fn diagnostics(self, plan: &Plan) -> Log {
        Log {
            errors: plan.errors.iter().take(KEPT_DIAGNOSTICS).cloned().collect(),
            ..self
        }
    }

    pub fn applied(self, history_id: i64, serial: i64) -> Log {
        Log {
            history_id: Some(history_id),
            serial: Some(serial),
            ..self
        }
    }

    pub fn retry_in(self, delay: Duration) -> Log {
        Log {
            retry_in_ms: Some(delay.as_millis() as u64),
            ..self
        }
    }

    pub fn since(self, started: Instant) -> Log {
        Log {
            duration_ms: Some(started.elapsed().as_millis() as u64),
            ..self
        }
    }
}
