//! The directory in memory: a real backend, and the reference the conformance
//! suite holds the others to. It is kept simple rather than fast: what an apply
//! does to the directory is `plan::simulate`, checked before and after, and an
//! apply builds the new state aside and swaps it in only when every check passed.
//!
//! A clone is another handle on the same store, as opening the same SQLite file
//! twice is: both see every write, and the lock is shared. `write_behind` changes
//! the store as another program would, bumping the serial as SQLite's triggers do.

use crate::backend::{
    AppliedRevision, ApplyLock, ApplyReport, ApplyRequest, BackendError, Counts, DirectoryStore,
    HistoryRecord, Inventory, Keys, Ledger, LockGuard, LockHolder, Models, PhoneSystem, Progress,
    RowDigests,
};
use crate::model::{
    Device, Directory, Extension, ExtensionKind, Licenses, Phone, Secret, Text, User,
};
use crate::plan::{Action, Change, PlannedAction, check_kind, simulate};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

/// An extension number, ordered as `cmp_extension` orders them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Number(pub Text);

impl Ord for Number {
    fn cmp(&self, other: &Number) -> std::cmp::Ordering {
        crate::model::cmp_extension(&self.0, &other.0)
    }
}

impl PartialOrd for Number {
    fn partial_cmp(&self, other: &Number) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// What the store holds: the directory in sorted maps, and pbxsync's records.
#[derive(Debug, Clone, Default)]
pub struct Store {
    pub users: BTreeMap<Text, User>,
    pub extensions: BTreeMap<Number, Extension>,
    /// Models by device id.
    pub devices: BTreeMap<Text, Text>,
    pub licenses: Licenses,
    /// argon2id PHC strings by username.
    pub passwords: BTreeMap<Text, String>,
    /// SIP secrets by extension number, made when the extension is added.
    pub secrets: BTreeMap<Text, String>,
    /// The domain the registrar's relation is published with.
    pub registrar_domain: Option<String>,
    serial: i64,
    last_applied: Option<AppliedRevision>,
    /// Oldest first; `id` is the position plus one.
    history: Vec<HistoryRecord>,
}

impl Store {
    fn directory(&self) -> Directory {
        Directory {
            users: self.users.values().cloned().collect(),
            extensions: self.extensions.values().cloned().collect(),
            devices: self
                .devices
                .iter()
                .map(|(id, model)| Device {
                    id: id.clone(),
                    model: model.clone(),
                })
                .collect(),
            licenses: self.licenses,
        }
    }

    /// A store with this one's licenses and records, and no directory.
    fn clone_records(&self) -> Store {
        Store {
            licenses: self.licenses,
            registrar_domain: self.registrar_domain.clone(),
            serial: self.serial,
            last_applied: self.last_applied.clone(),
            history: self.history.clone(),
            ..Store::default()
        }
    }

    fn record(&mut self, record: &HistoryRecord) -> i64 {
        let id = self.history.len() as i64 + 1;
        self.history.push(HistoryRecord {
            id,
            ..record.clone()
        });
        id
    }
}

/// A store in memory (see the module's comment).
#[derive(Clone, Default)]
pub struct MemoryBackend {
    store: Arc<Mutex<Store>>,
    lock: Arc<Mutex<Option<LockHolder>>>,
}

impl MemoryBackend {
    pub fn new() -> MemoryBackend {
        MemoryBackend::default()
    }

    /// Changes the store as a program other than pbxsync would. `write` returns
    /// how many rows it wrote, and the serial is bumped once for each, as
    /// SQLite's triggers bump it.
    pub fn write_behind(&self, write: impl FnOnce(&mut Store) -> usize) {
        let mut store = self.store();
        let rows = write(&mut store);
        store.serial += rows as i64;
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        // A panic while the store was held left it as a whole state: each write
        // swaps a finished one in.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Holds the lock of a `MemoryBackend` until dropped.
struct MemoryLock {
    lock: Arc<Mutex<Option<LockHolder>>>,
}

impl LockGuard for MemoryLock {}

impl Drop for MemoryLock {
    fn drop(&mut self) {
        *self.lock.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl DirectoryStore for MemoryBackend {
    fn describe(&self) -> String {
        "memory".to_owned()
    }

    fn load(&mut self) -> Result<Directory, BackendError> {
        Ok(self.store().directory())
    }

    fn counts(&mut self) -> Result<Counts, BackendError> {
        let store = self.store();
        Ok(Counts {
            users: store.users.len(),
            extensions: store.extensions.len(),
            devices: store.devices.len(),
        })
    }

    fn load_subset(&mut self, keys: &Keys) -> Result<Directory, BackendError> {
        let store = self.store();
        let devices: BTreeSet<&str> = keys.devices.iter().map(Text::as_str).collect();
        let numbers: BTreeSet<&str> = keys.extensions.iter().map(Text::as_str).collect();
        let mut dir = Directory {
            users: keys
                .users
                .iter()
                .filter_map(|u| store.users.get(u).cloned())
                .collect(),
            extensions: store
                .extensions
                .values()
                .filter(|e| {
                    numbers.contains(e.number.as_str())
                        || e.device.as_deref().is_some_and(|d| devices.contains(d))
                })
                .cloned()
                .collect(),
            devices: devices
                .iter()
                .filter_map(|id| {
                    store.devices.get(*id).map(|model| Device {
                        id: Text::from(*id),
                        model: model.clone(),
                    })
                })
                .collect(),
            licenses: store.licenses,
        };
        dir.sort();
        dir.users.dedup_by(|a, b| a.username == b.username);
        Ok(dir)
    }

    fn apply(
        &mut self,
        request: ApplyRequest<'_>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<ApplyReport, BackendError> {
        let mut store = self.store();
        if store.serial != request.expected_serial {
            return Err(BackendError::Stale {
                planned: request.expected_serial,
                current: store.serial,
            });
        }
        progress(Progress::Started {
            total: request.actions.len(),
        });
        let (after, passwords) = applied(
            &store,
            &store.directory(),
            request.actions,
            request.password_hashes,
        )?;
        let mut next = Store {
            users: after
                .users
                .into_iter()
                .map(|u| (u.username.clone(), u))
                .collect(),
            extensions: after
                .extensions
                .into_iter()
                .map(|e| (Number(e.number.clone()), e))
                .collect(),
            devices: after.devices.into_iter().map(|d| (d.id, d.model)).collect(),
            passwords,
            ..store.clone_records()
        };
        // A SIP secret is made when an extension is added and goes with it.
        for number in next.extensions.keys() {
            let secret = match store.secrets.get(&number.0) {
                Some(secret) => secret.clone(),
                None => new_secret()?,
            };
            next.secrets.insert(number.0.clone(), secret);
        }
        progress(Progress::Committing);
        let record = (request.record)();
        next.serial = store.serial + 1;
        let history_id = next.record(&record);
        next.last_applied = Some(AppliedRevision {
            commit: record.commit.clone(),
            blob: record.blob.clone(),
            serial: next.serial,
            history_id,
            inventory: request.inventory.map(str::to_owned),
            pruned: request.pruned,
            kept: request.kept,
        });
        *store = next;
        Ok(ApplyReport {
            history_id,
            serial: store.serial,
            cleared: Vec::new(),
        })
    }
}

/// The store after the request's actions, or the first action that cannot be
/// carried out. Each action is checked against the store before the apply and
/// what the plan itself creates and removes (the phases of an apply make any
/// order of a plan's actions work); the directory after is `simulate`'s, and
/// what must hold of it (users and devices that exist, one extension per
/// device) is checked last, naming the action that broke it.
/// `before` is `store`'s directory. Returns the directory after, and the
/// password hashes after.
fn applied(
    store: &Store,
    before: &Directory,
    actions: &[PlannedAction],
    hashes: &crate::FastMap<Text, String>,
) -> Result<(Directory, BTreeMap<Text, String>), BackendError> {
    let fail = |index: usize, reason: String| BackendError::ActionFailed {
        index,
        action: actions[index].action.label(),
        reason,
    };
    let mut passwords = store.passwords.clone();
    let mut created_devices = BTreeSet::new();
    let mut created_users = BTreeSet::new();
    let mut added = BTreeSet::new();
    let mut removed = BTreeSet::new();
    for planned in actions {
        match &planned.action {
            Action::CreateUser { username, .. } => {
                created_users.insert(username.clone());
            }
            Action::AddExtension { extension, .. } => {
                added.insert(extension.clone());
            }
            Action::RemoveExtension { extension, .. } => {
                removed.insert(extension.clone());
            }
            _ => {}
        }
    }
    let user_exists = |u: &Text| store.users.contains_key(u) || created_users.contains(u);
    let extension = |n: &Text| {
        store
            .extensions
            .get(&Number(n.clone()))
            .filter(|_| !removed.contains(n))
    };
    let extension_exists = |n: &Text| extension(n).is_some() || added.contains(n);
    let mut seen_users = BTreeSet::new();
    let mut seen_extensions = BTreeSet::new();
    let mut removed_once = BTreeSet::new();
    for (i, planned) in actions.iter().enumerate() {
        let check = match &planned.action {
            Action::CreateDevice { device, .. } => {
                if store.devices.contains_key(device) || !created_devices.insert(device.clone()) {
                    Err(format!("device {device} already exists"))
                } else {
                    Ok(())
                }
            }
            Action::CreateUser { username, changes } => {
                if store.users.contains_key(username) || !seen_users.insert(username.clone()) {
                    Err(format!("user {username} already exists"))
                } else {
                    set_password(&mut passwords, hashes, username, changes)
                }
            }
            Action::UpdateUser { username, changes } => {
                if user_exists(username) {
                    set_password(&mut passwords, hashes, username, changes)
                } else {
                    Err(format!("user {username} does not exist"))
                }
            }
            Action::AddExtension {
                username,
                extension: number,
                kind,
                device,
                ..
            } => check_kind(*kind, device).and_then(|()| {
                if !user_exists(username) {
                    Err(format!("user {username} does not exist"))
                } else if extension(number).is_some() || !seen_extensions.insert(number.clone()) {
                    Err(format!("extension {number} already exists"))
                } else {
                    Ok(())
                }
            }),
            Action::UpdateExtension {
                username,
                extension: number,
                kind,
                device,
                ..
            } => check_kind(*kind, device).and_then(|()| {
                match extension(number).filter(|e| e.username == *username) {
                    Some(_) if user_exists(username) => Ok(()),
                    _ => Err(format!(
                        "extension {number} does not exist or does not belong to {username}"
                    )),
                }
            }),
            Action::ReassignDevice {
                from_extension,
                to_extension,
                from_becomes,
                ..
            } => {
                let gives_up =
                    *from_becomes != ExtensionKind::Device && !removed.contains(from_extension);
                if gives_up && !extension_exists(from_extension) {
                    Err(format!("extension {from_extension} does not exist"))
                } else if !extension_exists(to_extension) {
                    Err(format!("extension {to_extension} does not exist"))
                } else {
                    Ok(())
                }
            }
            Action::RemoveExtension {
                extension: number, ..
            } => {
                let exists = store.extensions.contains_key(&Number(number.clone()));
                if exists && removed_once.insert(number.clone()) {
                    Ok(())
                } else {
                    Err(format!("extension {number} does not exist"))
                }
            }
            Action::RemoveUser { username } => {
                if store.users.contains_key(username) || created_users.contains(username) {
                    passwords.remove(username);
                    Ok(())
                } else {
                    Err(format!("user {username} does not exist"))
                }
            }
        };
        check.map_err(|reason| fail(i, reason))?;
    }

    let after = simulate::apply(before, actions);
    // What must hold of the directory after, each broken by a known action.
    let mut holders: BTreeMap<&str, &str> = BTreeMap::new();
    for e in &after.extensions {
        if after.user(&e.username).is_none() {
            let index = actions.iter().position(
                |a| matches!(&a.action, Action::RemoveUser { username } if *username == e.username),
            );
            return Err(fail(
                index.unwrap_or(0),
                format!("user {} still has extensions", e.username),
            ));
        }
        let Some(device) = e.device.as_deref() else {
            continue;
        };
        let gave = || gave_device(actions, &e.number, device).unwrap_or(0);
        if after.device(device).is_none() {
            return Err(fail(
                gave(),
                format!("device {device} is not in the inventory"),
            ));
        }
        if let Some(other) = holders.insert(device, &e.number) {
            // The one of the two that the plan gave it.
            let index = gave_device(actions, &e.number, device)
                .or_else(|| gave_device(actions, other, device))
                .unwrap_or(0);
            return Err(fail(
                index,
                format!("device {device} is assigned to another extension"),
            ));
        }
    }
    Ok((after, passwords))
}

/// The directory after the request's actions on `before`, or the first action
/// that cannot be carried out, decided as this backend decides it: a backend
/// that writes set by set checks a plan this way first, on the part of its
/// directory that the plan touches (`postgres::write`), so that it fails on the
/// same action as every other backend.
pub(crate) fn checked(
    before: &Directory,
    actions: &[PlannedAction],
    hashes: &crate::FastMap<Text, String>,
) -> Result<Directory, BackendError> {
    let store = Store {
        users: before
            .users
            .iter()
            .map(|u| (u.username.clone(), u.clone()))
            .collect(),
        extensions: before
            .extensions
            .iter()
            .map(|e| (Number(e.number.clone()), e.clone()))
            .collect(),
        devices: before
            .devices
            .iter()
            .map(|d| (d.id.clone(), d.model.clone()))
            .collect(),
        licenses: before.licenses,
        ..Store::default()
    };
    applied(&store, before, actions, hashes).map(|(after, _)| after)
}

/// Keeps the password hash of `username` when `changes` set the password.
fn set_password(
    passwords: &mut BTreeMap<Text, String>,
    hashes: &crate::FastMap<Text, String>,
    username: &Text,
    changes: &[Change],
) -> Result<(), String> {
    if !changes.iter().any(|c| c.field == "password") {
        return Ok(());
    }
    let hash = hashes
        .get(username)
        .ok_or_else(|| format!("no password hash was computed for user {username}"))?;
    passwords.insert(username.clone(), hash.clone());
    Ok(())
}

/// The last action of the plan that gives `device` to extension `number`.
fn gave_device(actions: &[PlannedAction], number: &str, device: &str) -> Option<usize> {
    actions.iter().rposition(|a| match &a.action {
        Action::AddExtension {
            extension,
            device: Some(d),
            ..
        }
        | Action::UpdateExtension {
            extension,
            device: Some(d),
            ..
        } => extension == number && d == device,
        Action::ReassignDevice {
            device: d,
            to_extension,
            ..
        } => to_extension == number && d == device,
        _ => false,
    })
}

impl Ledger for MemoryBackend {
    fn serial(&mut self) -> Result<i64, BackendError> {
        Ok(self.store().serial)
    }

    fn last_applied(&mut self) -> Result<Option<AppliedRevision>, BackendError> {
        Ok(self.store().last_applied.clone())
    }

    fn record_failure(&mut self, record: &HistoryRecord) -> Result<i64, BackendError> {
        Ok(self.store().record(record))
    }

    fn history(&mut self) -> Result<Vec<HistoryRecord>, BackendError> {
        Ok(self
            .store()
            .history
            .iter()
            .rev()
            .map(|r| HistoryRecord {
                csv: Default::default(),
                ..r.clone()
            })
            .collect())
    }

    fn history_entry(&mut self, id: i64) -> Result<Option<HistoryRecord>, BackendError> {
        let store = self.store();
        let entry = id
            .checked_sub(1)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| store.history.get(i));
        Ok(entry.cloned())
    }
}

impl ApplyLock for MemoryBackend {
    fn try_lock(&mut self) -> Result<Box<dyn LockGuard>, BackendError> {
        let mut held = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(holder) = &*held {
            return Err(BackendError::Locked(holder.clone()));
        }
        *held = Some(LockHolder {
            pid: std::process::id(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            since: crate::time::utc_now(),
        });
        Ok(Box::new(MemoryLock {
            lock: Arc::clone(&self.lock),
        }))
    }

    fn lock_holder(&mut self) -> Result<Option<LockHolder>, BackendError> {
        Ok(self.lock.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// 16 random bytes in hex, as the other backends make SIP secrets.
fn new_secret() -> Result<String, BackendError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| BackendError::Store {
        context: "cannot generate a SIP secret".to_owned(),
        reason: e.to_string(),
    })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl PhoneSystem for MemoryBackend {
    fn phones(&mut self) -> Result<Vec<Phone>, BackendError> {
        let store = self.store();
        Ok(store
            .extensions
            .values()
            .filter_map(|e| {
                let device = e.device.clone()?;
                let user = store.users.get(&e.username);
                let name = user.map_or(String::new(), |u| {
                    format!("{} {}", u.fields[0], u.fields[1]).trim().to_owned()
                });
                Some(Phone {
                    extension: e.number.clone(),
                    display_name: Text::from(name),
                    model: store.devices.get(&device).cloned().unwrap_or_default(),
                    device,
                    sip_secret: Secret::new(store.secrets.get(&e.number).map_or("", |s| s)),
                })
            })
            .collect())
    }

    fn sip_secret(&mut self, extension: &str) -> Result<Option<Secret>, BackendError> {
        Ok(self.store().secrets.get(extension).map(|s| Secret::new(s)))
    }

    fn registrar_domain(&mut self) -> Result<Option<String>, BackendError> {
        Ok(self.store().registrar_domain.clone())
    }

    fn set_registrar_domain(&mut self, domain: Option<&str>) -> Result<(), BackendError> {
        self.store().registrar_domain = domain.map(str::to_owned);
        Ok(())
    }
}

/// No digests: plans of a memory backend read the whole directory.
impl RowDigests for MemoryBackend {}

impl Inventory for MemoryBackend {
    /// One bump of the serial per device written, as SQLite's triggers do.
    fn add_devices(&mut self, devices: &[Device], models: Models) -> Result<(), BackendError> {
        let mut store = self.store();
        for device in devices {
            let kept = models == Models::KeepWhenEmpty && device.model.is_empty();
            match store.devices.get_mut(&device.id) {
                Some(_) if kept => continue,
                Some(model) => *model = device.model.clone(),
                None => {
                    store
                        .devices
                        .insert(device.id.clone(), device.model.clone());
                }
            }
            store.serial += 1;
        }
        Ok(())
    }

    fn remove_device(&mut self, id: &str) -> Result<bool, BackendError> {
        let mut store = self.store();
        if let Some(e) = store
            .extensions
            .values()
            .find(|e| e.device.as_deref() == Some(id))
        {
            return Err(BackendError::Unsupported(format!(
                "device {id} is assigned to extension {}; \
                 take it off the extension before removing it from the inventory",
                e.number
            )));
        }
        let removed = store.devices.remove(id).is_some();
        if removed {
            store.serial += 1;
        }
        Ok(removed)
    }

    fn set_licenses(&mut self, licenses: Licenses) -> Result<(), BackendError> {
        crate::backend::stored_limit(licenses.users)?;
        crate::backend::stored_limit(licenses.voicemail)?;
        let mut store = self.store();
        store.licenses = licenses;
        store.serial += 1;
        Ok(())
    }
}
