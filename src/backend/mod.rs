//! Where the current state lives. The `Backend` traits speak `Directory` and
//! `Action`, never CSV; SQLite is the embedded default, PostgreSQL follows.

use crate::model::{Device, Directory, Licenses, Phone, Secret, Text};
use crate::plan::PlannedAction;
use serde::Serialize;

#[cfg(test)]
mod conformance;
pub mod memory;
pub mod postgres;
mod recorded;
pub mod sqlite;

pub use recorded::{Compression, RecordedCsv};

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Another apply holds the lock.
    #[error("an apply is already running on this target ({0})")]
    Locked(LockHolder),
    /// The target changed since the plan was made.
    #[error("the target changed since this plan was made (serial {planned}, now {current})")]
    Stale { planned: i64, current: i64 },
    /// The store was written by a newer pbxsync. `path` names the store:
    /// "the state file …" or "schema … of database …".
    #[error(
        "{path} has schema version {found}, newer than this pbxsync knows ({known}); upgrade pbxsync"
    )]
    NewerSchema {
        path: String,
        found: i64,
        known: i64,
    },
    /// The file is not a pbxsync state file (corrupt, or another program's database).
    #[error("{path} is not a pbxsync state file: {reason}")]
    NotAStateFile { path: String, reason: String },
    /// A PostgreSQL schema holds another program's tables; nothing was written.
    #[error("{schema} is not pbxsync's: {reason}; nothing was written")]
    ForeignSchema { schema: String, reason: String },
    /// The store cannot be read as it was written: damaged on disk, or written
    /// by something that broke its rules. Nothing was written.
    #[error(
        "the state file {path} is damaged ({reason}); nothing was written. Restore it from a \
         backup; without one, move it away and run `pbxsync apply` to build the directory \
         again from the CSV (history, inventory, license limits and SIP secrets start anew)"
    )]
    Damaged { path: String, reason: String },
    /// An action of the plan could not be carried out; nothing was written.
    #[error("action {index} ({action}) failed: {reason}; nothing was written")]
    ActionFailed {
        index: usize,
        action: String,
        reason: String,
    },
    #[error("{0}")]
    Unsupported(String),
    /// The store is busy: another program kept it locked past the wait. Nothing
    /// was written; try again once it is done.
    #[error("{context}: {reason}")]
    Busy { context: String, reason: String },
    /// The store cannot hold more: the disk (or a quota) is full. Nothing was
    /// written; free space and try again.
    #[error("{context}: {reason}")]
    Full { context: String, reason: String },
    /// What the store holds cannot be read as it was written (a damaged page, a
    /// value of the wrong type). `ReportsDamage` turns it into `Damaged`, which
    /// names the store and what to do.
    #[error("{context}: {reason}")]
    Corrupt { context: String, reason: String },
    /// Any other failure of the store (permissions, the disk, a constraint
    /// someone else added), as the store reports it.
    #[error("{context}: {reason}")]
    Store { context: String, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// Who holds the apply lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockHolder {
    pub pid: u32,
    pub host: String,
    /// Local time, `HH:MM:SS` or an RFC 3339 timestamp.
    pub since: String,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} on host {} since {}",
            self.pid, self.host, self.since
        )
    }
}

/// Held while an apply runs; dropping it (or the process dying) releases the lock.
pub trait LockGuard {}

/// The revision of the CSV that the last successful apply came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppliedRevision {
    /// The commit, or `None` for a working-tree or plain-file apply.
    pub commit: Option<String>,
    /// The git blob id of the CSV content (computed for plain files too).
    pub blob: String,
    /// The target's serial right after that apply.
    pub serial: i64,
    pub history_id: i64,
    /// The digest of the inventory file that apply was planned with
    /// (`sync::inventory_digest`); `None` without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inventory: Option<String>,
    /// Whether that apply pruned: the directory then holds nothing the CSV
    /// leaves out.
    pub pruned: bool,
    /// How many extensions and users the target held after that apply that its
    /// CSV does not name (pruning off); `None` when not known (a state file
    /// written before this was kept). While nothing changed since, a plan says
    /// so without reading a row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept: Option<Kept>,
}

/// Extensions and users of the target that the applied CSV does not name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Kept {
    pub extensions: u64,
    pub users: u64,
}

/// One recorded apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryRecord {
    pub id: i64,
    /// RFC 3339, UTC.
    pub time: String,
    /// The local user that ran the apply.
    pub local_user: String,
    /// The git author of the source commit, when there is one.
    pub git_author: Option<String>,
    /// `commit <id>`, `working tree`, or `file <path>`.
    pub source: String,
    pub commit: Option<String>,
    pub blob: String,
    /// Counts of actions by type (the plan summary as JSON).
    pub summary: serde_json::Value,
    /// `applied` or `failed: <reason>`.
    pub outcome: String,
    /// The applied CSV with the Password column blanked.
    #[serde(rename = "csv_redacted")]
    pub csv: RecordedCsv,
}

pub use crate::model::Usage;

/// Extension numbers with the digest of the row last applied to each, sorted.
pub type DigestIndex = Vec<(Text, Option<u64>)>;

/// The entries a plan of some rows needs, named by key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Keys {
    pub users: Vec<Text>,
    pub extensions: Vec<Text>,
    /// Devices whose existence and current holder matter.
    pub devices: Vec<Text>,
}

/// What an apply needs beyond the plan.
pub struct ApplyRequest<'a> {
    pub actions: &'a [PlannedAction],
    /// The digest of the CSV row each extension now matches (see
    /// `RowDigests::load_index`), written in the same transaction.
    pub digests: &'a [(Text, u64)],
    /// The serial the plan was made against; a different current serial is refused
    /// with `BackendError::Stale` before anything is written.
    pub expected_serial: i64,
    /// argon2id PHC strings of the passwords being set, by username (computed before
    /// the transaction begins).
    pub password_hashes: &'a crate::FastMap<Text, String>,
    /// The digest of the inventory file the plan was made with, kept as the last
    /// apply's (`AppliedRevision::inventory`): every device it lists exists
    /// after the apply.
    pub inventory: Option<&'a str>,
    /// Whether the plan pruned (kept as `AppliedRevision::pruned`).
    pub pruned: bool,
    /// What the plan left alone (kept as `AppliedRevision::kept`).
    pub kept: Option<Kept>,
    /// Recorded in `history` in the same transaction (`id` is ignored). Called once
    /// the actions are written, so that the caller can make the record (redacting
    /// and compressing a large CSV) on another thread meanwhile.
    pub record: Box<dyn FnOnce() -> HistoryRecord + 'a>,
}

/// Progress of an apply, for the CLI to draw. The target never prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Started {
        total: usize,
    },
    Step {
        done: usize,
        total: usize,
        step: String,
    },
    Committing,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    pub history_id: i64,
    pub serial: i64,
    /// Extensions outside the actions whose stored digest the apply cleared (the
    /// other extensions of updated users), for `keep_index`.
    pub cleared: Vec<Text>,
}

/// The size of a directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub users: usize,
    pub extensions: usize,
    pub devices: usize,
}

/// The directory a backend stores: read a scope of it, write a plan in one
/// transaction. `Send`: a plan reads the backend's digests on another thread
/// while it validates the CSV.
pub trait DirectoryStore: Send {
    /// A description for people, e.g. `sqlite:/srv/pbx/.pbxsync/state.db`.
    fn describe(&self) -> String;
    /// The current directory, every list sorted (see `Directory`).
    fn load(&mut self) -> Result<Directory, BackendError>;
    /// How many users, extensions and devices the directory holds, without
    /// reading them when the backend can count (this default reads them).
    fn counts(&mut self) -> Result<Counts, BackendError> {
        let dir = self.load()?;
        Ok(Counts {
            users: dir.users.len(),
            extensions: dir.extensions.len(),
            devices: dir.devices.len(),
        })
    }
    /// The devices of `wanted` (sorted by id, as the inventory file is read) that
    /// the backend does not hold, in the same order: the inventory devices a plan
    /// of changed rows creates. This default reads the whole directory.
    fn missing_devices(&mut self, wanted: &[Device]) -> Result<Vec<Device>, BackendError> {
        let dir = self.load()?;
        Ok(wanted
            .iter()
            .filter(|d| dir.device(&d.id).is_none())
            .cloned()
            .collect())
    }
    /// The part of the directory a plan of some rows needs: the named users and
    /// extensions, the named devices that exist and the extensions holding them,
    /// the licenses; every list sorted.
    fn load_subset(&mut self, keys: &Keys) -> Result<Directory, BackendError>;
    /// Applies the actions in one transaction, phase by phase as
    /// `plan::order` gives them; on any failure nothing is written.
    fn apply(
        &mut self,
        request: ApplyRequest<'_>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<ApplyReport, BackendError>;
}

/// pbxsync's own records beside the directory.
pub trait Ledger {
    /// The change serial: bumped by every write, by pbxsync or anything else.
    fn serial(&mut self) -> Result<i64, BackendError>;
    fn last_applied(&mut self) -> Result<Option<AppliedRevision>, BackendError>;
    /// Records a failed apply (outside the failed transaction).
    fn record_failure(&mut self, record: &HistoryRecord) -> Result<i64, BackendError>;
    /// Records something done that is not an apply (a SIP secret read), as a
    /// failure is recorded: a history entry, no change of serial.
    fn record_event(&mut self, record: &HistoryRecord) -> Result<i64, BackendError> {
        self.record_failure(record)
    }
    /// Newest first, without the recorded CSVs (`csv` is empty).
    fn history(&mut self) -> Result<Vec<HistoryRecord>, BackendError>;
    fn history_entry(&mut self, id: i64) -> Result<Option<HistoryRecord>, BackendError>;
}

/// One apply at a time.
pub trait ApplyLock {
    /// Takes the apply lock, or fails at once with `BackendError::Locked`.
    fn try_lock(&mut self) -> Result<Box<dyn LockGuard>, BackendError>;
    /// The current lock holder, if an apply is running.
    fn lock_holder(&mut self) -> Result<Option<LockHolder>, BackendError>;
}

/// The digests of the CSV rows last applied, which let a plan read only the
/// rows that changed. Optional: a backend without them keeps these defaults,
/// and its plans read the whole directory.
pub trait RowDigests {
    /// Every extension with the digest of the CSV row last applied to it: `None`
    /// when unknown, or when anything changed the extension or its user since.
    /// Sorted by number (`cmp_extension`). Counts extensions by kind on the way.
    /// `None` when the backend keeps no digests.
    fn load_index(&mut self) -> Result<Option<(DigestIndex, Usage)>, BackendError> {
        Ok(None)
    }
    /// Keeps the index and usage as they are at `serial` (right after an apply),
    /// so that `load_index` at that serial need not read every extension. A
    /// cache: a backend may keep nothing, and a failure to keep it loses nothing.
    fn keep_index(
        &mut self,
        _serial: i64,
        _index: &DigestIndex,
        _usage: Usage,
    ) -> Result<(), BackendError> {
        Ok(())
    }
}

/// A license limit as a store keeps it (a signed 64-bit integer; `None` is
/// unlimited); a limit too large for that is refused.
pub(crate) fn stored_limit(n: Option<u64>) -> Result<Option<i64>, BackendError> {
    n.map(|n| {
        i64::try_from(n)
            .map_err(|_| BackendError::Unsupported(format!("license limit {n} is too large")))
    })
    .transpose()
}

/// What adding a device that the inventory holds already does to its model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Models {
    /// The new model replaces the old one, an empty one too (`devices add ID
    /// --model ""` clears a model).
    Replace,
    /// An empty new model keeps the old one: a device added again without a
    /// model (`devices add ID`, an import row with no model) keeps its model.
    KeepWhenEmpty,
}

/// Administration of what the CSV does not say: devices and license limits.
pub trait Inventory {
    /// Adds devices to the inventory; an id it holds already gets the new model as
    /// `models` says.
    fn add_devices(&mut self, devices: &[Device], models: Models) -> Result<(), BackendError>;
    /// Removes a device from the inventory; refused while an extension holds it.
    /// Returns false when the device was not there.
    fn remove_device(&mut self, id: &str) -> Result<bool, BackendError>;
    fn set_licenses(&mut self, licenses: Licenses) -> Result<(), BackendError>;
}

/// What the phone system reads from the target: the extensions that hold a
/// device, with their SIP secrets (for the provisioning files), and the domain
/// of the SIP registrar's relation (a view in the target's database, which
/// changes with every apply's commit; see `publish`).
pub trait PhoneSystem {
    /// Every extension that holds a device, sorted by extension.
    fn phones(&mut self) -> Result<Vec<Phone>, BackendError>;
    /// The SIP secret of one extension; `None` when there is no such extension.
    fn sip_secret(&mut self, extension: &str) -> Result<Option<Secret>, BackendError>;
    /// The domain the registrar's relation is published with; `None` when it
    /// is not published (the relation is empty).
    fn registrar_domain(&mut self) -> Result<Option<String>, BackendError>;
    /// Publishes the registrar's relation with `domain`, or empties it. Not a
    /// change of the directory: the serial stays.
    fn set_registrar_domain(&mut self, domain: Option<&str>) -> Result<(), BackendError>;
}

/// A store of the current state: every part of the contract, so that callers
/// hold one `Box<dyn Backend>`.
pub trait Backend:
    DirectoryStore + Ledger + ApplyLock + RowDigests + Inventory + PhoneSystem
{
}

impl<T: DirectoryStore + Ledger + ApplyLock + RowDigests + Inventory + PhoneSystem + ?Sized> Backend
    for T
{
}

/// A target whose errors that mean its store is damaged become
/// `BackendError::Damaged`, naming the store and what to do: whichever read
/// meets the damage (a page of users, the history, a value of the wrong type),
/// the user learns the same thing, and the command fails.
pub struct ReportsDamage<T> {
    inner: T,
    path: String,
    /// Why an error means damage, or `None` when it does not.
    damage: fn(&BackendError) -> Option<String>,
}

impl<T> ReportsDamage<T> {
    pub fn new(inner: T, path: String, damage: fn(&BackendError) -> Option<String>) -> Self {
        ReportsDamage {
            inner,
            path,
            damage,
        }
    }

    fn checked<R>(&self, result: Result<R, BackendError>) -> Result<R, BackendError> {
        result.map_err(|e| match (self.damage)(&e) {
            Some(reason) => BackendError::Damaged {
                path: self.path.clone(),
                reason,
            },
            None => e,
        })
    }
}

impl<T: DirectoryStore> DirectoryStore for ReportsDamage<T> {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn load(&mut self) -> Result<Directory, BackendError> {
        let r = self.inner.load();
        self.checked(r)
    }
    fn counts(&mut self) -> Result<Counts, BackendError> {
        let r = self.inner.counts();
        self.checked(r)
    }
    fn missing_devices(&mut self, wanted: &[Device]) -> Result<Vec<Device>, BackendError> {
        let r = self.inner.missing_devices(wanted);
        self.checked(r)
    }
    fn load_subset(&mut self, keys: &Keys) -> Result<Directory, BackendError> {
        let r = self.inner.load_subset(keys);
        self.checked(r)
    }
    fn apply(
        &mut self,
        request: ApplyRequest<'_>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<ApplyReport, BackendError> {
        let r = self.inner.apply(request, progress);
        self.checked(r)
    }
}

impl<T: Ledger> Ledger for ReportsDamage<T> {
    fn serial(&mut self) -> Result<i64, BackendError> {
        let r = self.inner.serial();
        self.checked(r)
    }
    fn last_applied(&mut self) -> Result<Option<AppliedRevision>, BackendError> {
        let r = self.inner.last_applied();
        self.checked(r)
    }
    fn record_failure(&mut self, record: &HistoryRecord) -> Result<i64, BackendError> {
        let r = self.inner.record_failure(record);
        self.checked(r)
    }
    fn record_event(&mut self, record: &HistoryRecord) -> Result<i64, BackendError> {
        let r = self.inner.record_event(record);
        self.checked(r)
    }
    fn history(&mut self) -> Result<Vec<HistoryRecord>, BackendError> {
        let r = self.inner.history();
        self.checked(r)
    }
    fn history_entry(&mut self, id: i64) -> Result<Option<HistoryRecord>, BackendError> {
        let r = self.inner.history_entry(id);
        self.checked(r)
    }
}

impl<T: ApplyLock> ApplyLock for ReportsDamage<T> {
    fn try_lock(&mut self) -> Result<Box<dyn LockGuard>, BackendError> {
        let r = self.inner.try_lock();
        self.checked(r)
    }
    fn lock_holder(&mut self) -> Result<Option<LockHolder>, BackendError> {
        let r = self.inner.lock_holder();
        self.checked(r)
    }
}

impl<T: RowDigests> RowDigests for ReportsDamage<T> {
    fn load_index(&mut self) -> Result<Option<(DigestIndex, Usage)>, BackendError> {
        let r = self.inner.load_index();
        self.checked(r)
    }
    fn keep_index(
        &mut self,
        serial: i64,
        index: &DigestIndex,
        usage: Usage,
    ) -> Result<(), BackendError> {
        let r = self.inner.keep_index(serial, index, usage);
        self.checked(r)
    }
}

impl<T: PhoneSystem> PhoneSystem for ReportsDamage<T> {
    fn phones(&mut self) -> Result<Vec<Phone>, BackendError> {
        let r = self.inner.phones();
        self.checked(r)
    }
    fn sip_secret(&mut self, extension: &str) -> Result<Option<Secret>, BackendError> {
        let r = self.inner.sip_secret(extension);
        self.checked(r)
    }
    fn registrar_domain(&mut self) -> Result<Option<String>, BackendError> {
        let r = self.inner.registrar_domain();
        self.checked(r)
    }
    fn set_registrar_domain(&mut self, domain: Option<&str>) -> Result<(), BackendError> {
        let r = self.inner.set_registrar_domain(domain);
        self.checked(r)
    }
}

impl<T: Inventory> Inventory for ReportsDamage<T> {
    fn add_devices(&mut self, devices: &[Device], models: Models) -> Result<(), BackendError> {
        let r = self.inner.add_devices(devices, models);
        self.checked(r)
    }
    fn remove_device(&mut self, id: &str) -> Result<bool, BackendError> {
        let r = self.inner.remove_device(id);
        self.checked(r)
    }
    fn set_licenses(&mut self, licenses: Licenses) -> Result<(), BackendError> {
        let r = self.inner.set_licenses(licenses);
        self.checked(r)
    }
}
