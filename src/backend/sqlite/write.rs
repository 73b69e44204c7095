//! An apply: the actions of a plan, in phases, in one transaction.

use super::ledger::{insert_history, read_serial, set_meta};
use super::read::id_array;
use super::schema::SuspendedTriggers;
use super::statements::{Sql, Statements};
use super::writeback::Writeback;
use super::{ReadUsers, sidecar, sqlite_error};
use crate::FastMap;
use crate::backend::{ApplyReport, ApplyRequest, BackendError, Progress};
use crate::model::{ExtensionKind, Text, USER_COLUMNS};
use crate::plan::order::{self, Phase, changes_field};
use crate::plan::{Action, Change, check_kind};
use rusqlite::types::ToSql;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::cell::RefCell;
use std::path::Path;

/// How many actions pass between two `Progress::Step` reports.
pub(super) const STEP_EVERY: usize = 1000;

/// `Target::apply` on a connection set up for it.
pub(super) fn apply_in_transaction(
    conn: &mut Connection,
    path: &Path,
    request: ApplyRequest<'_>,
    read_users: Option<ReadUsers>,
    progress: &mut dyn FnMut(Progress),
    context: &dyn Fn() -> String,
) -> Result<ApplyReport, BackendError> {
    // IMMEDIATE takes the write lock now, so the serial cannot change between the
    // check and the writes.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| sqlite_error(context(), e))?;
    let current = read_serial(&tx).map_err(|e| sqlite_error(context(), e))?;
    if current != request.expected_serial {
        return Err(BackendError::Stale {
            planned: request.expected_serial,
            current,
        });
    }
    progress(Progress::Started {
        total: request.actions.len(),
    });
    let triggers = SuspendedTriggers::drop_in(&tx).map_err(|e| sqlite_error(context(), e))?;
    // What was read at this serial still holds: nothing has written since.
    let read_users = read_users
        .filter(|read| read.serial == current)
        .unwrap_or_default();
    let cleared = Applier::new(&tx, &request, read_users, progress).run()?;
    // What the serial triggers do for every written row, once.
    tx.execute("UPDATE meta SET value = value + 1 WHERE key = 'serial'", [])
        .and_then(|_| triggers.restore(&tx))
        .map_err(|e| sqlite_error(context(), e))?;
    progress(Progress::Committing);
    let record = (request.record)();
    let finish = || -> rusqlite::Result<(i64, i64)> {
        let serial = read_serial(&tx)?;
        let history_id = insert_history(&tx, &record)?;
        set_meta(&tx, "last_commit", &record.commit)?;
        set_meta(&tx, "last_blob", &record.blob)?;
        set_meta(&tx, "last_serial", &serial)?;
        set_meta(&tx, "last_inventory", &request.inventory)?;
        set_meta(&tx, "last_pruned", &request.pruned)?;
        let kept = request.kept.map(|k| (k.extensions as i64, k.users as i64));
        set_meta(&tx, "last_kept_extensions", &kept.map(|k| k.0))?;
        set_meta(&tx, "last_kept_users", &kept.map(|k| k.1))?;
        set_meta(&tx, "last_history_id", &history_id)?;
        Ok((history_id, serial))
    };
    let (history_id, serial) = finish().map_err(|e| sqlite_error(context(), e))?;
    // The commit writes the pages to the WAL (see `checkpoint_apart`).
    let writeback = Writeback::start(sidecar(path, "-wal"));
    let committed = tx.commit();
    drop(writeback);
    committed.map_err(|e| sqlite_error(context(), e))?;
    Ok(ApplyReport {
        history_id,
        serial,
        cleared,
    })
}

/// Carries out the actions of one apply inside its transaction, without
/// pbxsync's triggers: every statement that changes an extension sets its row
/// digest itself (the one of the request, or NULL), and an update of a user
/// clears the digests of all its extensions first.
///
/// `extensions.device` is UNIQUE: the actions run in the phases of
/// `plan::order`, which never let two extensions hold a device at once, sorted
/// inside a phase into the order of the tables. Digests that no statement wrote
/// are recorded at the end.
pub(super) struct Applier<'a, 'r, 'p> {
    conn: &'a Connection,
    request: &'a ApplyRequest<'r>,
    progress: &'p mut dyn FnMut(Progress),
    done: usize,
    statements: Statements<'a>,
    /// The position of each extension in the request's digests.
    digests: FastMap<&'r str, usize>,
    /// Whether a statement wrote each of the request's digests.
    written: RefCell<Vec<bool>>,
    /// User ids by username: as the plan read them, created, or looked up.
    user_ids: RefCell<FastMap<Text, i64>>,
    /// The users whose extensions the plan read (their ids, sorted), and those
    /// extensions (`ReadUsers::extensions`).
    read_ids: Vec<i64>,
    read_extensions: Vec<(i64, Text)>,
    secrets: RefCell<Secrets>,
    /// Extensions outside the actions whose digest `clear_digests_of` cleared.
    cleared: Vec<Text>,
}

/// Why an action failed, for people.
pub(super) struct Reason(String);

impl From<rusqlite::Error> for Reason {
    fn from(e: rusqlite::Error) -> Reason {
        Reason(match e {
            rusqlite::Error::SqliteFailure(_, Some(message)) => message,
            e => e.to_string(),
        })
    }
}

pub(super) type Outcome = Result<(), Reason>;

impl<'a, 'r, 'p> Applier<'a, 'r, 'p> {
    fn new(
        conn: &'a Connection,
        request: &'a ApplyRequest<'r>,
        read_users: ReadUsers,
        progress: &'p mut dyn FnMut(Progress),
    ) -> Applier<'a, 'r, 'p> {
        let mut read_ids: Vec<i64> = read_users.ids.values().copied().collect();
        read_ids.sort_unstable();
        Applier {
            conn,
            request,
            progress,
            done: 0,
            statements: Statements::new(conn),
            digests: request
                .digests
                .iter()
                .enumerate()
                .map(|(i, (number, _))| (number.as_str(), i))
                .collect(),
            written: RefCell::new(vec![false; request.digests.len()]),
            user_ids: RefCell::new(read_users.ids),
            read_ids,
            read_extensions: read_users.extensions,
            secrets: RefCell::default(),
            cleared: Vec::new(),
        }
    }

    /// Returns the extensions outside the actions whose digests it cleared.
    fn run(mut self) -> Result<Vec<Text>, BackendError> {
        let actions = self.request.actions;
        for (phase, taking_part) in order::order(actions) {
            // Progress names only the steps that do work.
            if taking_part.is_empty() {
                continue;
            }
            match phase {
                Phase::CreateDevicesAndUsers => {
                    self.phase("creating devices and users");
                    let mut updates = Vec::new();
                    for i in taking_part {
                        match &actions[i].action {
                            Action::CreateDevice { device, model } => {
                                self.finish(i, self.create_device(device, model))?
                            }
                            Action::CreateUser { username, changes } => {
                                self.finish(i, self.create_user(username, changes))?
                            }
                            Action::UpdateUser { username, .. } => {
                                updates.push((self.check(i, self.user_id(username))?, i));
                            }
                            _ => {}
                        }
                    }
                    // Users are updated in the order of their ids, the order of the
                    // table: users added over the years are far from the order of
                    // their names, and updated by name they would be written all
                    // over the table.
                    updates.sort_unstable();
                    for &(id, i) in &updates {
                        if let Action::UpdateUser { username, changes } = &actions[i].action {
                            self.finish(i, self.update_user(id, username, changes))?;
                        }
                    }
                    self.clear_digests_of(updates.into_iter().map(|(id, _)| id).collect())
                        .map_err(|e| {
                            sqlite_error("cannot clear the row digests of updated users", e)
                        })?;
                }
                Phase::ReleaseDevices => {
                    self.phase("releasing devices");
                    for i in taking_part {
                        match &actions[i].action {
                            Action::UpdateExtension { extension, .. } => {
                                self.check(i, self.release(extension))?
                            }
                            Action::ReassignDevice {
                                from_extension,
                                to_extension,
                                ..
                            } => self.check(
                                i,
                                self.release(from_extension)
                                    .and_then(|()| self.release(to_extension)),
                            )?,
                            _ => {}
                        }
                    }
                }
                Phase::RemoveExtensions => {
                    self.phase("removing extensions");
                    for i in taking_part {
                        if let Action::RemoveExtension { extension, .. } = &actions[i].action {
                            self.finish(i, self.remove_extension(extension))?;
                        }
                    }
                }
                // Added and updated extensions in one pass in the order of their
                // numbers, the order of the table (the plan lists the added ones
                // first). Spread over the table, two passes would each dirty almost
                // every page of it, and once the apply outgrows its page cache
                // (APPLY_CACHE_KIB) the pages spilled to the WAL after the first
                // pass are written again after the second: with a cache of 64 MiB,
                // an apply of 100,000 changes to a million rows wrote 359 MB
                // instead of 277 MB.
                Phase::SetExtensions => {
                    self.phase("adding and updating extensions");
                    let mut sweep: Vec<(&str, usize)> = taking_part
                        .into_iter()
                        .filter_map(|i| match &actions[i].action {
                            Action::AddExtension { extension, .. }
                            | Action::UpdateExtension { extension, .. } => {
                                Some((extension.as_str(), i))
                            }
                            _ => None,
                        })
                        .collect();
                    sweep.sort_unstable();
                    for (_, i) in sweep {
                        let outcome = match &actions[i].action {
                            Action::AddExtension {
                                username,
                                extension,
                                kind,
                                device,
                                changes,
                            } => self.add_extension(username, extension, *kind, device, changes),
                            Action::UpdateExtension {
                                username,
                                extension,
                                kind,
                                device,
                                changes,
                            } => self.update_extension(username, extension, *kind, device, changes),
                            _ => continue,
                        };
                        self.finish(i, outcome)?;
                    }
                }
                Phase::GiveUpDevices => {
                    for i in taking_part {
                        if let Action::ReassignDevice {
                            from_extension,
                            from_becomes,
                            ..
                        } = &actions[i].action
                        {
                            self.check(i, self.give_up_device(from_extension, *from_becomes))?;
                        }
                    }
                }
                Phase::TakeDevices => {
                    for i in taking_part {
                        if let Action::ReassignDevice {
                            device,
                            to_extension,
                            ..
                        } = &actions[i].action
                        {
                            self.finish(i, self.take_device(to_extension, device))?;
                        }
                    }
                }
                Phase::RemoveUsers => {
                    self.phase("removing users");
                    for i in taking_part {
                        if let Action::RemoveUser { username } = &actions[i].action {
                            self.finish(i, self.remove_user(username))?;
                        }
                    }
                }
            }
        }

        if !self.request.digests.is_empty() {
            self.phase("recording row digests");
        }
        self.record_other_digests()
            .map_err(|e| sqlite_error("cannot record the row digests", e))?;
        Ok(self.cleared)
    }

    fn phase(&mut self, step: &str) {
        (self.progress)(Progress::Step {
            done: self.done,
            total: self.request.actions.len(),
            step: step.to_owned(),
        });
    }

    /// Reports a failed step of action `index`.
    fn check<T>(&self, index: usize, outcome: Result<T, Reason>) -> Result<T, BackendError> {
        outcome.map_err(|Reason(reason)| BackendError::ActionFailed {
            index,
            action: self.request.actions[index].action.label(),
            reason,
        })
    }

    /// Like `check`, for the last step of action `index`.
    fn finish(&mut self, index: usize, outcome: Outcome) -> Result<(), BackendError> {
        self.check(index, outcome)?;
        self.done += 1;
        if self.done.is_multiple_of(STEP_EVERY) {
            (self.progress)(Progress::Step {
                done: self.done,
                total: self.request.actions.len(),
                step: self.request.actions[index].action.label(),
            });
        }
        Ok(())
    }

    /// The digest a statement writing `extension` stores (as the bits of a u64),
    /// noting that it was written.
    fn digest(&self, extension: &str) -> Option<i64> {
        let &i = self.digests.get(extension)?;
        self.written.borrow_mut()[i] = true;
        Some(self.request.digests[i].1 as i64)
    }

    /// The rows last applied to the extensions of an updated user no longer
    /// describe it (what the users_digest_stale trigger does, for all at once).
    /// Extensions that the request gives a digest are left alone: a later
    /// statement writes it.
    fn clear_digests_of(&mut self, mut user_ids: Vec<i64>) -> rusqlite::Result<()> {
        if user_ids.is_empty() {
            return Ok(());
        }
        user_ids.sort_unstable();
        let mut stale = Vec::new();
        // The extensions of the users the plan read are known; the others are
        // looked up.
        let (read, unread): (Vec<i64>, Vec<i64>) = user_ids
            .into_iter()
            .partition(|id| self.read_ids.binary_search(id).is_ok());
        for id in read {
            let from = self
                .read_extensions
                .partition_point(|(owner, _)| *owner < id);
            for (_, number) in self.read_extensions[from..]
                .iter()
                .take_while(|(owner, _)| *owner == id)
            {
                if !self.digests.contains_key(number.as_str()) {
                    stale.push(number.to_string());
                }
            }
        }
        if !unread.is_empty() {
            let mut stmt = self.statements.get(Sql::StaleDigests)?;
            let mut rows = stmt.query([id_array(unread)])?;
            while let Some(row) = rows.next()? {
                let number = row.get_ref(0)?.as_str()?;
                if !self.digests.contains_key(number) {
                    stale.push(number.to_owned());
                }
            }
        }
        let mut clear = self.statements.get(Sql::ClearDigest)?;
        for number in stale {
            if clear.execute([&number])? > 0 {
                self.cleared.push(Text::from(number));
            }
        }
        Ok(())
    }

    /// The digests of the request that no statement wrote: rows whose extension
    /// did not change, of users that did.
    fn record_other_digests(&self) -> rusqlite::Result<()> {
        let written = self.written.borrow();
        let mut stmt = self.statements.get(Sql::SetDigest)?;
        for ((number, digest), _) in self
            .request
            .digests
            .iter()
            .zip(written.iter())
            .filter(|(_, written)| !**written)
        {
            stmt.execute(params![number.as_str(), *digest as i64])?;
        }
        Ok(())
    }

    fn create_device(&self, device: &str, model: &str) -> Outcome {
        let mut stmt = self.statements.get(Sql::InsertDevice)?;
        stmt.execute([device, model])
            .map_err(|e| unique_reason(e, || format!("device {device} already exists")))?;
        Ok(())
    }

    fn create_user(&self, username: &Text, changes: &[Change]) -> Outcome {
        let (fields, password) = self.user_changes(username, changes)?;
        let mut stmt = self.statements.get(Sql::InsertUser)?;
        let [first, last, email, im, mobile] = fields.map(|f| f.unwrap_or(""));
        stmt.execute(params![username.as_str(), first, last, email, im, mobile])
            .map_err(|e| unique_reason(e, || format!("user {username} already exists")))?;
        let id = self.conn.last_insert_rowid();
        self.user_ids.borrow_mut().insert(username.clone(), id);
        if let Some(hash) = password {
            let mut stmt = self.statements.get(Sql::InsertPassword)?;
            stmt.execute(params![id, hash])?;
        }
        Ok(())
    }

    /// Updates user `user_id`, named `username`.
    fn update_user(&self, user_id: i64, username: &Text, changes: &[Change]) -> Outcome {
        let (fields, password) = self.user_changes(username, changes)?;
        if let Some(hash) = password {
            let mut stmt = self.statements.get(Sql::UpsertPassword)?;
            stmt.execute(params![user_id, hash])?;
        }
        if fields.iter().any(Option::is_some) {
            let mut stmt = self.statements.get(Sql::UpdateUser)?;
            let [first, last, email, im, mobile] = fields;
            stmt.execute(params![user_id, first, last, email, im, mobile])?;
        }
        Ok(())
    }

    /// The user fields that `changes` sets (by `USER_COLUMNS`), and the password
    /// hash when the password is set.
    fn user_changes<'c>(
        &self,
        username: &str,
        changes: &'c [Change],
    ) -> Result<([Option<&'c str>; 5], Option<&'a str>), Reason> {
        let mut fields = [None; 5];
        let mut password = None;
        for change in changes {
            if change.field == "password" {
                let hash = self.request.password_hashes.get(username).ok_or_else(|| {
                    Reason(format!("no password hash was computed for user {username}"))
                })?;
                password = Some(hash.as_str());
            } else if let Some(i) = USER_COLUMNS.iter().position(|c| c.field() == change.field) {
                fields[i] = Some(change.to.as_deref().unwrap_or(""));
            }
            // Other fields (the username itself) are carried by the action.
        }
        Ok((fields, password))
    }

    fn user_id(&self, username: &Text) -> Result<i64, Reason> {
        if let Some(id) = self.user_ids.borrow().get(username) {
            return Ok(*id);
        }
        let mut stmt = self.statements.get(Sql::UserId)?;
        let id = stmt
            .query_row([username.as_str()], |r| r.get(0))
            .optional()?
            .ok_or_else(|| Reason(format!("user {username} does not exist")))?;
        self.user_ids.borrow_mut().insert(username.clone(), id);
        Ok(id)
    }

    fn release(&self, extension: &str) -> Outcome {
        let mut stmt = self.statements.get(Sql::Release)?;
        stmt.execute([extension])?;
        Ok(())
    }

    fn remove_extension(&self, extension: &str) -> Outcome {
        let mut stmt = self.statements.get(Sql::DeleteExtension)?;
        match stmt.execute([extension])? {
            0 => Err(Reason(format!("extension {extension} does not exist"))),
            _ => Ok(()),
        }
    }

    fn add_extension(
        &self,
        username: &Text,
        extension: &str,
        kind: ExtensionKind,
        device: &Option<Text>,
        changes: &[Change],
    ) -> Outcome {
        check_kind(kind, device).map_err(Reason)?;
        let user_id = self.user_id(username)?;
        let description = Change::value_of(changes, "description").unwrap_or("");
        let secret: [u8; 16] = self.secrets.borrow_mut().next()?;
        let mut stmt = self.statements.get(Sql::InsertExtension)?;
        stmt.execute(params![
            extension,
            user_id,
            kind.as_str(),
            device.as_deref(),
            description,
            secret,
            self.digest(extension),
        ])
        .map_err(|e| device_reason(e, extension, device))?;
        Ok(())
    }

    fn update_extension(
        &self,
        username: &Text,
        extension: &str,
        kind: ExtensionKind,
        device: &Option<Text>,
        changes: &[Change],
    ) -> Outcome {
        check_kind(kind, device).map_err(Reason)?;
        let user_id = self.user_id(username)?;
        // Columns left out of SET cost no index, constraint or foreign-key work
        // (the CHECK on kind builds a table of its values each time): the kind and
        // device are set only when they change (the release phase cleared a device
        // that changes). The owner never changes: a plan refuses that.
        let new_kind = changes_field(changes, "kind").then_some(kind.as_str());
        let new_device = device
            .as_deref()
            .filter(|_| changes_field(changes, "device"));
        let sql = match (new_kind.is_some(), new_device.is_some()) {
            (false, false) => Sql::UpdateExtension,
            (true, false) => Sql::UpdateExtensionKind,
            (false, true) => Sql::UpdateExtensionDevice,
            (true, true) => Sql::UpdateExtensionKindDevice,
        };
        let mut stmt = self.statements.get(sql)?;
        let description = Change::value_of(changes, "description");
        let digest = self.digest(extension);
        let mut values: Vec<&dyn ToSql> = vec![&extension, &user_id, &description, &digest];
        values.extend(new_kind.as_ref().map(|kind| kind as &dyn ToSql));
        values.extend(new_device.as_ref().map(|device| device as &dyn ToSql));
        let updated = stmt
            .execute(values.as_slice())
            .map_err(|e| device_reason(e, extension, device))?;
        match updated {
            0 => Err(Reason(format!(
                "extension {extension} does not exist or does not belong to {username}"
            ))),
            _ => Ok(()),
        }
    }

    fn give_up_device(&self, extension: &str, becomes: ExtensionKind) -> Outcome {
        let mut stmt = self.statements.get(Sql::GiveUpDevice)?;
        let digest = self.digest(extension);
        match stmt.execute(params![extension, becomes.as_str(), digest])? {
            0 => Err(Reason(format!("extension {extension} does not exist"))),
            _ => Ok(()),
        }
    }

    fn take_device(&self, extension: &str, device: &Text) -> Outcome {
        let mut stmt = self.statements.get(Sql::TakeDevice)?;
        let digest = self.digest(extension);
        let updated = stmt
            .execute(params![extension, device.as_str(), digest])
            .map_err(|e| device_reason(e, extension, &Some(device.clone())))?;
        match updated {
            0 => Err(Reason(format!("extension {extension} does not exist"))),
            _ => Ok(()),
        }
    }

    fn remove_user(&self, username: &str) -> Outcome {
        let mut stmt = self.statements.get(Sql::DeleteUser)?;
        let removed = stmt.execute([username]).map_err(|e| {
            if is_constraint(&e, rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY) {
                Reason(format!("user {username} still has extensions"))
            } else {
                Reason::from(e)
            }
        })?;
        match removed {
            0 => Err(Reason(format!("user {username} does not exist"))),
            _ => Ok(()),
        }
    }
}

pub(super) fn is_constraint(e: &rusqlite::Error, extended: std::ffi::c_int) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.extended_code == extended)
}

pub(super) fn unique_reason(e: rusqlite::Error, reason: impl FnOnce() -> String) -> Reason {
    if is_constraint(&e, rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
        || is_constraint(&e, rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
    {
        Reason(reason())
    } else {
        Reason::from(e)
    }
}

/// Explains the constraint failures of giving `extension` a device.
pub(super) fn device_reason(e: rusqlite::Error, extension: &str, device: &Option<Text>) -> Reason {
    let device = device.as_deref().unwrap_or("");
    match &e {
        rusqlite::Error::SqliteFailure(f, Some(message))
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY =>
        {
            Reason(format!(
                "device {device} is not in the inventory ({message})"
            ))
        }
        rusqlite::Error::SqliteFailure(f, Some(message))
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                && message.contains("extensions.device") =>
        {
            Reason(format!("device {device} is assigned to another extension"))
        }
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            Reason(format!("extension {extension} already exists"))
        }
        _ => Reason::from(e),
    }
}

/// Fresh SIP secrets (16 random bytes), drawn from the system's random source a
/// batch at a time: one call for 256 secrets rather than one each.
#[derive(Default)]
pub(super) struct Secrets {
    random: Vec<[u8; 16]>,
}

impl Secrets {
    pub(super) const BATCH: usize = 256;

    pub(super) fn next(&mut self) -> Result<[u8; 16], Reason> {
        if self.random.is_empty() {
            self.random.resize(Self::BATCH, [0; 16]);
            getrandom::fill(self.random.as_flattened_mut())
                .map_err(|e| Reason(format!("cannot generate a SIP secret: {e}")))?;
        }
        self.random
            .pop()
            .ok_or_else(|| Reason("cannot generate a SIP secret".into()))
    }
}
