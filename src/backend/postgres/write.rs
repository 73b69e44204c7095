//! An apply: one `REPEATABLE READ` transaction that checks the serial, checks
//! the plan against the part of the directory it touches, and writes the
//! difference set by set: rows go to temporary tables by binary `COPY`, and one
//! statement a kind of change moves them into the directory. The round trips
//! are a few dozen, whatever the size of the plan.

use super::PgError;
use super::ledger::{insert_history, read_serial};
use super::read::{self, Subset};
use crate::backend::{ApplyReport, ApplyRequest, BackendError, Keys, Progress, memory};
use crate::model::{Device, Directory, Extension, Text, User};
use crate::plan::{Action, simulate};
use crate::{FastMap, FastSet};
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;
use postgres::{Client, IsolationLevel, Transaction};

pub(super) fn apply(
    client: &mut Client,
    shown: &str,
    request: ApplyRequest<'_>,
    read: Read,
    progress: &mut dyn FnMut(Progress),
) -> Result<ApplyReport, BackendError> {
    let context = || format!("cannot apply to {shown}");
    let mut tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .start()
        .map_err(|e| e.context(context()))?;
    // The row triggers that forget digests stand aside: this transaction writes
    // every digest itself.
    tx.batch_execute("SET LOCAL pbxsync.applying = 'on'")
        .map_err(|e| e.context(context()))?;
    // Locking the state row orders this apply after any write still under way
    // (their serial triggers update the row) and before any that follows.
    let current: i64 = tx
        .query_one("SELECT serial FROM state WHERE id = 1 FOR UPDATE", &[])
        .map_err(|e| e.context(context()))?
        .get(0);
    if current != request.expected_serial {
        return Err(BackendError::Stale {
            planned: request.expected_serial,
            current,
        });
    }
    progress(Progress::Started {
        total: request.actions.len(),
    });
    let total = request.actions.len();
    let step = |progress: &mut dyn FnMut(Progress), step: Step| {
        progress(Progress::Step {
            done: step.done_before(request.actions),
            total,
            step: step.name().to_owned(),
        })
    };
    step(progress, Step::Checking);
    let mut before =
        touched(&mut tx, request.actions, read.at(current)).map_err(|e| e.context(context()))?;
    // The plan is checked (`memory::checked`, on the other core) while the
    // writes run from the directory it leads to; the commit waits for the
    // check, and a plan that fails it is rolled back naming the action, even
    // when a write failed first.
    let after = simulate::apply(&before.dir, request.actions);
    let (actions, hashes) = (request.actions, request.password_hashes);
    let ids = std::mem::take(&mut before.ids);
    let cleared = std::thread::scope(|scope| {
        let check = scope.spawn(|| memory::checked(&before.dir, actions, hashes).map(drop));
        let written = Changes::between(&before.dir, &after, &request, ids)
            .and_then(|mut changes| changes.write(&mut tx, &context(), &mut |s| step(progress, s)));
        let checked = check
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        checked.and(written)
    })?;
    progress(Progress::Committing);
    let record = (request.record)();
    let finish = |tx: &mut Transaction<'_>| -> Result<(i64, i64), postgres::Error> {
        let serial = read_serial(tx)?;
        let history_id = insert_history(tx, &record)?;
        let kept = request.kept.map(|k| (k.extensions as i64, k.users as i64));
        tx.execute(
            "UPDATE state SET last_commit = $1, last_blob = $2, last_serial = $3, \
             last_inventory = $4, last_pruned = $5, last_kept_extensions = $6, \
             last_kept_users = $7, last_history_id = $8 WHERE id = 1",
            &[
                &record.commit,
                &record.blob,
                &serial,
                &request.inventory,
                &request.pruned,
                &kept.map(|k| k.0),
                &kept.map(|k| k.1),
                &history_id,
            ],
        )?;
        Ok((history_id, serial))
    };
    let (history_id, serial) = finish(&mut tx).map_err(|e| e.context(context()))?;
    tx.commit().map_err(|e| e.context(context()))?;
    Ok(ApplyReport {
        history_id,
        serial,
        cleared,
    })
}

/// The steps of an apply, as its progress names them, in their order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Checking,
    Users,
    ExtensionsOut,
    ExtensionsIn,
    Digests,
    UsersOut,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Checking => "checking the plan",
            Step::Users => "creating devices and writing users",
            Step::ExtensionsOut => "removing extensions and releasing devices",
            Step::ExtensionsIn => "adding and updating extensions",
            Step::Digests => "recording row digests",
            Step::UsersOut => "removing users",
        }
    }

    /// The step that writes `action`.
    fn of(action: &Action) -> Step {
        match action {
            Action::CreateDevice { .. } | Action::CreateUser { .. } | Action::UpdateUser { .. } => {
                Step::Users
            }
            Action::RemoveExtension { .. } => Step::ExtensionsOut,
            Action::AddExtension { .. }
            | Action::UpdateExtension { .. }
            | Action::ReassignDevice { .. } => Step::ExtensionsIn,
            Action::RemoveUser { .. } => Step::UsersOut,
        }
    }

    /// How many actions are written before this step begins.
    fn done_before(self, actions: &[crate::plan::PlannedAction]) -> usize {
        actions
            .iter()
            .filter(|a| Step::of(&a.action) < self)
            .count()
    }
}

/// What the plan read that an apply may start from.
pub(super) struct Read {
    pub last: Option<LastRead>,
    pub numbers: Option<(i64, Vec<Text>)>,
}

impl Read {
    /// What still holds at `serial`: nothing was written since it was read.
    fn at(self, serial: i64) -> Read {
        Read {
            last: self.last.filter(|r| r.serial == serial),
            numbers: self.numbers.filter(|(s, _)| *s == serial),
        }
    }
}

/// What a plan read of the directory (`load_subset`), the keys it asked for,
/// and the serial it read at.
pub(super) struct LastRead {
    serial: i64,
    users: FastSet<Text>,
    extensions: FastSet<Text>,
    devices: FastSet<Text>,
    subset: Subset,
}

impl LastRead {
    pub(super) fn new(serial: i64, keys: &Keys, subset: Subset) -> LastRead {
        LastRead {
            serial,
            users: keys.users.iter().cloned().collect(),
            extensions: keys.extensions.iter().cloned().collect(),
            devices: keys.devices.iter().cloned().collect(),
            subset,
        }
    }

    pub(super) fn directory(&self) -> &Directory {
        &self.subset.dir
    }

    /// The keys of `keys` it did not read.
    fn missing(&self, keys: &Keys) -> Keys {
        let not_in = |list: &[Text], read: &FastSet<Text>| -> Vec<Text> {
            list.iter()
                .filter(|k| !read.contains(*k))
                .cloned()
                .collect()
        };
        Keys {
            users: not_in(&keys.users, &self.users),
            extensions: not_in(&keys.extensions, &self.extensions),
            devices: not_in(&keys.devices, &self.devices),
        }
    }
}

/// The part of the directory the actions touch, with what deciding them needs:
/// the users, extensions and devices they name, the extensions holding those
/// devices, every extension of a user they remove, and the users and devices
/// of all those extensions. What the plan read (`last_read`) is not read again.
fn touched(
    tx: &mut Transaction<'_>,
    actions: &[crate::plan::PlannedAction],
    read: Read,
) -> Result<Subset, postgres::Error> {
    let (mut keys, removed_users) = keys_of(actions);
    // Numbers the directory does not hold need no lookup.
    if let Some((_, numbers)) = &read.numbers {
        keys.extensions.retain(|n| {
            numbers
                .binary_search_by(|m| crate::model::cmp_extension(m, n))
                .is_ok()
        });
    }
    let last_read = read.last;
    let removed: Vec<&str> = removed_users.iter().map(Text::as_str).collect();
    let mut read = match last_read {
        Some(last) => {
            let missing = last.missing(&keys);

            let mut read = last.subset;
            if !(missing.users.is_empty()
                && missing.extensions.is_empty()
                && missing.devices.is_empty()
                && removed.is_empty())
            {
                read.merge(read::subset(tx, &missing, &removed)?);
            }
            read
        }
        None => read::subset(tx, &keys, &removed)?,
    };
    // The owners of the extensions read, and the devices they hold.
    let users: FastSet<&str> = read.dir.users.iter().map(|u| u.username.as_str()).collect();
    let devices: FastSet<&str> = read.dir.devices.iter().map(|d| d.id.as_str()).collect();
    let more = Keys {
        users: read
            .dir
            .extensions
            .iter()
            .filter(|e| !users.contains(e.username.as_str()))
            .map(|e| e.username.clone())
            .collect(),
        extensions: Vec::new(),
        devices: read
            .dir
            .extensions
            .iter()
            .filter_map(|e| e.device.as_ref())
            .filter(|d| !devices.contains(d.as_str()))
            .cloned()
            .collect(),
    };
    drop((users, devices));
    if !more.users.is_empty() || !more.devices.is_empty() {
        let extra = read::subset(tx, &more, &[])?;
        read.merge(extra);
    }
    Ok(read)
}

/// The keys the actions name, and the users they remove.
fn keys_of(actions: &[crate::plan::PlannedAction]) -> (Keys, Vec<Text>) {
    let mut keys = Keys::default();
    let mut removed_users = Vec::new();
    for planned in actions {
        match &planned.action {
            Action::CreateDevice { device, .. } => keys.devices.push(device.clone()),
            Action::CreateUser { username, .. } | Action::UpdateUser { username, .. } => {
                keys.users.push(username.clone())
            }
            Action::RemoveUser { username } => {
                keys.users.push(username.clone());
                removed_users.push(username.clone());
            }
            Action::AddExtension {
                username,
                extension,
                device,
                ..
            }
            | Action::UpdateExtension {
                username,
                extension,
                device,
                ..
            }
            | Action::RemoveExtension {
                username,
                extension,
                device,
            } => {
                keys.users.push(username.clone());
                keys.extensions.push(extension.clone());
                keys.devices.extend(device.iter().cloned());
            }
            Action::ReassignDevice {
                username,
                device,
                from_extension,
                to_extension,
                ..
            } => {
                keys.users.push(username.clone());
                keys.devices.push(device.clone());
                keys.extensions.push(from_extension.clone());
                keys.extensions.push(to_extension.clone());
            }
        }
    }
    for list in [&mut keys.users, &mut keys.extensions, &mut keys.devices] {
        list.sort_unstable();
        list.dedup();
    }
    (keys, removed_users)
}

/// What an apply writes: the difference between the touched part of the
/// directory before and after, and the digests and passwords of the request.
struct Changes<'a> {
    new_devices: Vec<&'a Device>,
    new_users: Vec<&'a User>,
    changed_users: Vec<&'a User>,
    removed_users: Vec<&'a str>,
    /// Username and argon2id PHC string.
    passwords: Vec<(&'a str, &'a str)>,
    removed_extensions: Vec<&'a str>,
    /// Changed extensions that let go of their device before any takes it.
    released: Vec<&'a str>,
    changed_extensions: Vec<&'a Extension>,
    added_extensions: Vec<&'a Extension>,
    /// The users of `UpdateUser` actions: the digests of their other
    /// extensions are forgotten.
    updated_users: Vec<&'a str>,
    digests: FastMap<&'a str, i64>,
    /// A SIP secret for each added extension.
    secrets: Vec<String>,
    /// User ids by username: as read, and of the users the apply creates.
    ids: FastMap<Text, i64>,
}

impl<'a> Changes<'a> {
    fn between(
        before: &'a Directory,
        after: &'a Directory,
        request: &'a ApplyRequest<'a>,
        ids: FastMap<Text, i64>,
    ) -> Result<Changes<'a>, BackendError> {
        let old_devices: FastSet<&str> = before.devices.iter().map(|d| d.id.as_str()).collect();
        let old_users: FastMap<&str, &User> = before
            .users
            .iter()
            .map(|u| (u.username.as_str(), u))
            .collect();
        let new_users: FastSet<&str> = after.users.iter().map(|u| u.username.as_str()).collect();
        let old_extensions: FastMap<&str, &Extension> = before
            .extensions
            .iter()
            .map(|e| (e.number.as_str(), e))
            .collect();
        let new_extensions: FastSet<&str> =
            after.extensions.iter().map(|e| e.number.as_str()).collect();
        let mut changes = Changes {
            new_devices: after
                .devices
                .iter()
                .filter(|d| !old_devices.contains(d.id.as_str()))
                .collect(),
            new_users: Vec::new(),
            changed_users: Vec::new(),
            removed_users: before
                .users
                .iter()
                .filter(|u| !new_users.contains(u.username.as_str()))
                .map(|u| u.username.as_str())
                .collect(),
            passwords: Vec::new(),
            removed_extensions: before
                .extensions
                .iter()
                .filter(|e| !new_extensions.contains(e.number.as_str()))
                .map(|e| e.number.as_str())
                .collect(),
            released: Vec::new(),
            changed_extensions: Vec::new(),
            added_extensions: Vec::new(),
            updated_users: Vec::new(),
            digests: request
                .digests
                .iter()
                .map(|(n, d)| (n.as_str(), *d as i64))
                .collect(),
            secrets: Vec::new(),
            ids,
        };
        for user in &after.users {
            match old_users.get(user.username.as_str()) {
                None => changes.new_users.push(user),
                Some(old) if old.fields != user.fields => changes.changed_users.push(user),
                Some(_) => {}
            }
        }
        for e in &after.extensions {
            match old_extensions.get(e.number.as_str()) {
                None => changes.added_extensions.push(e),
                Some(old) if *old != e => {
                    if old.device.is_some() && old.device != e.device {
                        changes.released.push(old.number.as_str());
                    }
                    changes.changed_extensions.push(e);
                }
                Some(_) => {}
            }
        }
        for planned in request.actions {
            match &planned.action {
                Action::CreateUser {
                    username,
                    changes: c,
                }
                | Action::UpdateUser {
                    username,
                    changes: c,
                } if c.iter().any(|c| c.field == "password") => {
                    // `memory::checked` made sure there is one.
                    if let Some(hash) = request.password_hashes.get(username) {
                        changes.passwords.push((username.as_str(), hash.as_str()));
                    }
                }
                _ => {}
            }
            if let Action::UpdateUser { username, .. } = &planned.action {
                changes.updated_users.push(username.as_str());
            }
        }
        changes.secrets = secrets(changes.added_extensions.len())?;
        Ok(changes)
    }

    /// Writes the changes in the order of `plan::order`'s phases; returns the
    /// extensions outside them whose digests it forgot.
    fn write(
        &mut self,
        tx: &mut Transaction<'_>,
        context: &str,
        step: &mut dyn FnMut(Step),
    ) -> Result<Vec<Text>, BackendError> {
        let sql = |e: postgres::Error| e.context(context);
        if !(self.new_devices.is_empty()
            && self.new_users.is_empty()
            && self.changed_users.is_empty())
        {
            step(Step::Users);
        }
        if !self.new_devices.is_empty() {
            copy(
                tx,
                "t_devices",
                "id text, model text",
                &[Type::TEXT, Type::TEXT],
                |w| {
                    self.new_devices
                        .iter()
                        .try_for_each(|d| w.write(&[&d.id.as_str(), &d.model.as_str()]))
                },
            )
            .map_err(sql)?;
            tx.execute(
                "INSERT INTO devices (id, model) SELECT id, model FROM t_devices",
                &[],
            )
            .map_err(sql)?;
        }
        if !self.new_users.is_empty() {
            let names: Vec<&str> = self.new_users.iter().map(|u| u.username.as_str()).collect();
            copy_users(
                tx,
                "t_new_users",
                USER_ROW,
                Type::TEXT,
                &self.new_users,
                &names,
            )
            .map_err(sql)?;
            let created = tx
                .query(
                    "INSERT INTO users (username, first_name, last_name, email, im, mobile) \
                     SELECT username, first_name, last_name, email, im, mobile FROM t_new_users \
                     RETURNING username, id",
                    &[],
                )
                .map_err(sql)?;
            for row in created {
                self.ids
                    .insert(Text::from(row.get::<_, &str>(0)), row.get(1));
            }
        }
        if !self.changed_users.is_empty() {
            let ids = self.ids_of(
                self.changed_users.iter().map(|u| u.username.as_str()),
                context,
            )?;
            copy_users(
                tx,
                "t_changed_users",
                USER_BY_ID,
                Type::INT8,
                &self.changed_users,
                &ids,
            )
            .map_err(sql)?;
            tx.execute(
                "UPDATE users u SET first_name = t.first_name, last_name = t.last_name, \
                 email = t.email, im = t.im, mobile = t.mobile \
                 FROM t_changed_users t WHERE u.id = t.id",
                &[],
            )
            .map_err(sql)?;
        }
        if !self.passwords.is_empty() {
            let ids = self.ids_of(self.passwords.iter().map(|(u, _)| *u), context)?;
            copy(
                tx,
                "t_passwords",
                "user_id bigint, hash text",
                &[Type::INT8, Type::TEXT],
                |w| {
                    self.passwords
                        .iter()
                        .zip(&ids)
                        .try_for_each(|((_, hash), id)| w.write(&[id, hash]))
                },
            )
            .map_err(sql)?;
            tx.execute(
                "INSERT INTO passwords (user_id, hash) SELECT user_id, hash FROM t_passwords \
                 ON CONFLICT (user_id) DO UPDATE SET hash = EXCLUDED.hash",
                &[],
            )
            .map_err(sql)?;
        }
        if !(self.removed_extensions.is_empty() && self.released.is_empty()) {
            step(Step::ExtensionsOut);
        }
        if !self.removed_extensions.is_empty() {
            tx.execute(
                "DELETE FROM extensions WHERE number = ANY($1)",
                &[&self.removed_extensions],
            )
            .map_err(sql)?;
        }
        if !self.released.is_empty() {
            tx.execute(
                "UPDATE extensions SET device = NULL WHERE number = ANY($1)",
                &[&self.released],
            )
            .map_err(sql)?;
        }
        if !(self.changed_extensions.is_empty() && self.added_extensions.is_empty()) {
            step(Step::ExtensionsIn);
        }
        if !self.changed_extensions.is_empty() {
            self.copy_extensions(
                tx,
                "t_changed_extensions",
                &self.changed_extensions,
                &[],
                context,
            )?;
            tx.execute(
                "UPDATE extensions e SET user_id = t.user_id, kind = t.kind, device = t.device, \
                 description = t.description, row_digest = t.row_digest \
                 FROM t_changed_extensions t WHERE e.number = t.number",
                &[],
            )
            .map_err(sql)?;
        }
        if !self.added_extensions.is_empty() {
            self.copy_extensions(
                tx,
                "t_added_extensions",
                &self.added_extensions,
                &self.secrets,
                context,
            )?;
            tx.execute(
                "INSERT INTO extensions (number, user_id, kind, device, description, sip_secret, row_digest) \
                 SELECT number, user_id, kind, device, description, sip_secret, row_digest \
                 FROM t_added_extensions",
                &[],
            )
            .map_err(sql)?;
        }
        // The digests of rows whose extension did not change (rows of users
        // that did, or rows someone else wrote to since the last apply).
        let written: FastSet<&str> = self
            .changed_extensions
            .iter()
            .chain(&self.added_extensions)
            .map(|e| e.number.as_str())
            .collect();
        let (numbers, digests): (Vec<&str>, Vec<i64>) = self
            .digests
            .iter()
            .filter(|(n, _)| !written.contains(*n))
            .map(|(n, d)| (*n, *d))
            .unzip();
        if !numbers.is_empty() || !self.updated_users.is_empty() {
            step(Step::Digests);
        }
        if !numbers.is_empty() {
            tx.execute(
                "UPDATE extensions e SET row_digest = d.row_digest \
                 FROM unnest($1::text[], $2::bigint[]) AS d (number, row_digest) \
                 WHERE e.number = d.number AND e.row_digest IS DISTINCT FROM d.row_digest",
                &[&numbers, &digests],
            )
            .map_err(sql)?;
        }
        let mut cleared = Vec::new();
        if !self.updated_users.is_empty() {
            copy(tx, "t_digests", "number text", &[Type::TEXT], |w| {
                self.digests.keys().try_for_each(|n| w.write(&[n]))
            })
            .map_err(sql)?;
            let ids = self.ids_of(self.updated_users.iter().copied(), context)?;
            for row in tx
                .query(
                    "UPDATE extensions e SET row_digest = NULL \
                     WHERE e.user_id = ANY($1) AND e.row_digest IS NOT NULL \
                     AND NOT EXISTS (SELECT 1 FROM t_digests d WHERE d.number = e.number) \
                     RETURNING e.number",
                    &[&ids],
                )
                .map_err(sql)?
            {
                cleared.push(Text::from(row.get::<_, &str>(0)));
            }
        }
        if !self.removed_users.is_empty() {
            step(Step::UsersOut);
            let ids = self.ids_of(self.removed_users.iter().copied(), context)?;
            tx.execute("DELETE FROM users WHERE id = ANY($1)", &[&ids])
                .map_err(sql)?;
        }
        Ok(cleared)
    }

    /// The ids of `users`, in order. Every user the plan touches was read or
    /// created, so a missing one means the directory changed under the apply.
    fn ids_of<'u>(
        &self,
        users: impl Iterator<Item = &'u str>,
        context: &str,
    ) -> Result<Vec<i64>, BackendError> {
        users
            .map(|u| {
                self.ids.get(u).copied().ok_or_else(|| BackendError::Store {
                    context: context.to_owned(),
                    reason: format!(
                        "user {u} was not found while writing; nothing was written, try again"
                    ),
                })
            })
            .collect()
    }

    /// Copies extensions into temporary table `table`, with their users' ids,
    /// digests and (for new ones) `secrets`.
    fn copy_extensions(
        &self,
        tx: &mut Transaction<'_>,
        table: &str,
        extensions: &[&Extension],
        secrets: &[String],
        context: &str,
    ) -> Result<(), BackendError> {
        let ids = self.ids_of(extensions.iter().map(|e| e.username.as_str()), context)?;
        let types = [
            Type::TEXT,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            Type::TEXT,
        ];
        copy(
            tx,
            table,
            "number text, user_id bigint, kind text, device text, description text, \
             row_digest bigint, sip_secret text",
            &types,
            |w| {
                for (i, (e, id)) in extensions.iter().zip(&ids).enumerate() {
                    let digest = self.digests.get(e.number.as_str()).copied();
                    let secret = secrets.get(i).map(String::as_str);
                    w.write(&[
                        &e.number.as_str(),
                        id,
                        &e.kind.as_str(),
                        &e.device.as_deref(),
                        &e.description.as_str(),
                        &digest,
                        &secret,
                    ])?;
                }
                Ok(())
            },
        )
        .map_err(|e| e.context(context))
    }
}

/// Copies users into temporary table `table` of `columns`: a key (`keys[i]`,
/// of type `key`: the username of a new user, the id of a known one) and the
/// five fields.
fn copy_users<K: postgres::types::ToSql + Sync>(
    tx: &mut Transaction<'_>,
    table: &str,
    columns: &str,
    key: Type,
    users: &[&User],
    keys: &[K],
) -> Result<(), postgres::Error> {
    let mut types = vec![Type::TEXT; 6];
    types[0] = key;
    copy(tx, table, columns, &types, |w| {
        users.iter().zip(keys).try_for_each(|(u, key)| {
            w.write(&[
                key,
                &u.fields[0].as_str(),
                &u.fields[1].as_str(),
                &u.fields[2].as_str(),
                &u.fields[3].as_str(),
                &u.fields[4].as_str(),
            ])
        })
    })
}

const USER_ROW: &str =
    "username text, first_name text, last_name text, email text, im text, mobile text";
const USER_BY_ID: &str =
    "id bigint, first_name text, last_name text, email text, im text, mobile text";

/// A SIP secret for each new extension: 16 random bytes in hex.
fn secrets(n: usize) -> Result<Vec<String>, BackendError> {
    let mut bytes = vec![[0u8; 16]; n];
    getrandom::fill(bytes.as_flattened_mut()).map_err(|e| BackendError::Store {
        context: "cannot generate SIP secrets".to_owned(),
        reason: e.to_string(),
    })?;
    Ok(bytes
        .iter()
        .map(|b| b.iter().map(|x| format!("{x:02x}")).collect())
        .collect())
}

/// Makes temporary table `table` (dropped at the commit) and copies into it
/// the rows `fill` writes.
fn copy(
    tx: &mut Transaction<'_>,
    table: &str,
    columns: &str,
    types: &[Type],
    fill: impl FnOnce(&mut BinaryCopyInWriter<'_>) -> Result<(), postgres::Error>,
) -> Result<(), postgres::Error> {
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE {table} ({columns}) ON COMMIT DROP"
    ))?;
    let sink = tx.copy_in(&format!("COPY {table} FROM STDIN BINARY"))?;
    let mut writer = BinaryCopyInWriter::new(sink, types);
    fill(&mut writer)?;
    writer.finish()?;
    Ok(())
}
