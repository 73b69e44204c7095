//! An apply: one `REPEATABLE READ` transaction that checks the serial, checks
//! the plan against the part of the directory it touches, and writes the
//! difference set by set: rows go to temporary tables by binary `COPY`, and one
//! statement a kind of change moves them into the directory. The round trips
//! are a few dozen, whatever the size of the plan.

use super::ledger::{insert_history, read_serial};
use super::{PgError, read};
use crate::backend::{ApplyReport, ApplyRequest, BackendError, Keys, Progress, memory};
use crate::model::{Device, Directory, Extension, Text, User};
use crate::plan::Action;
use crate::{FastMap, FastSet};
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::Type;
use postgres::{Client, IsolationLevel, Transaction};

pub(super) fn apply(
    client: &mut Client,
    shown: &str,
    request: ApplyRequest<'_>,
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
    let step = |progress: &mut dyn FnMut(Progress), step: &str| {
        progress(Progress::Step {
            done: done_before(request.actions, step),
            total,
            step: step.to_owned(),
        })
    };
    step(progress, "checking the plan");
    let before = touched(&mut tx, request.actions).map_err(|e| e.context(context()))?;
    let after = memory::checked(before.clone(), &request)?;
    let changes = Changes::between(&before, &after, &request)?;
    let cleared = changes
        .write(&mut tx, &mut |s| step(progress, s))
        .map_err(|e| e.context(context()))?;
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

/// How many actions are written before step `step` begins: the steps of
/// `Changes::write` take the actions type by type.
fn done_before(actions: &[crate::plan::PlannedAction], step: &str) -> usize {
    let order = |a: &Action| match a {
        Action::CreateDevice { .. } | Action::CreateUser { .. } | Action::UpdateUser { .. } => 1,
        Action::RemoveExtension { .. } => 2,
        Action::AddExtension { .. }
        | Action::UpdateExtension { .. }
        | Action::ReassignDevice { .. } => 3,
        Action::RemoveUser { .. } => 5,
    };
    let before = match step {
        "creating devices and writing users" => 1,
        "removing extensions and releasing devices" => 2,
        "adding and updating extensions" => 3,
        "recording row digests" => 4,
        "removing users" => 5,
        _ => 0,
    };
    actions.iter().filter(|a| order(&a.action) < before).count()
}

/// The part of the directory the actions touch, with what deciding them needs:
/// the users, extensions and devices they name, the extensions holding those
/// devices, every extension of a user they remove, and the users and devices
/// of all those extensions.
fn touched(
    tx: &mut Transaction<'_>,
    actions: &[crate::plan::PlannedAction],
) -> Result<Directory, postgres::Error> {
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
                removed_users.push(username.as_str());
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
    let mut dir = read::subset(tx, &keys, &removed_users)?;
    // The owners of the extensions read, and the devices they hold.
    let users: FastSet<&str> = dir.users.iter().map(|u| u.username.as_str()).collect();
    let devices: FastSet<&str> = dir.devices.iter().map(|d| d.id.as_str()).collect();
    let more = Keys {
        users: dir
            .extensions
            .iter()
            .filter(|e| !users.contains(e.username.as_str()))
            .map(|e| e.username.clone())
            .collect(),
        extensions: Vec::new(),
        devices: dir
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
        dir.users.extend(extra.users);
        dir.devices.extend(extra.devices);
        dir.sort();
        dir.users.dedup_by(|a, b| a.username == b.username);
        dir.devices.dedup_by(|a, b| a.id == b.id);
    }
    Ok(dir)
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
}

impl<'a> Changes<'a> {
    fn between(
        before: &'a Directory,
        after: &'a Directory,
        request: &'a ApplyRequest<'a>,
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
                Action::CreateUser { username, changes: c }
                | Action::UpdateUser { username, changes: c }
                    if c.iter().any(|c| c.field == "password") =>
                {
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
        &self,
        tx: &mut Transaction<'_>,
        step: &mut dyn FnMut(&str),
    ) -> Result<Vec<Text>, postgres::Error> {
        let text2 = [Type::TEXT, Type::TEXT];
        if !(self.new_devices.is_empty() && self.new_users.is_empty() && self.changed_users.is_empty()) {
            step("creating devices and writing users");
        }
        if !self.new_devices.is_empty() {
            copy(tx, "t_devices", "id text, model text", &text2, |w| {
                self.new_devices
                    .iter()
                    .try_for_each(|d| w.write(&[&d.id.as_str(), &d.model.as_str()]))
            })?;
            tx.execute("INSERT INTO devices (id, model) SELECT id, model FROM t_devices", &[])?;
        }
        if !self.new_users.is_empty() {
            copy_users(tx, "t_new_users", &self.new_users)?;
            tx.execute(
                "INSERT INTO users (username, first_name, last_name, email, im, mobile) \
                 SELECT username, first_name, last_name, email, im, mobile FROM t_new_users",
                &[],
            )?;
        }
        if !self.changed_users.is_empty() {
            copy_users(tx, "t_changed_users", &self.changed_users)?;
            tx.execute(
                "UPDATE users u SET first_name = t.first_name, last_name = t.last_name, \
                 email = t.email, im = t.im, mobile = t.mobile \
                 FROM t_changed_users t WHERE u.username = t.username",
                &[],
            )?;
        }
        if !self.passwords.is_empty() {
            copy(tx, "t_passwords", "username text, hash text", &text2, |w| {
                self.passwords.iter().try_for_each(|(u, h)| w.write(&[u, h]))
            })?;
            tx.execute(
                "INSERT INTO passwords (user_id, hash) \
                 SELECT u.id, t.hash FROM t_passwords t JOIN users u ON u.username = t.username \
                 ON CONFLICT (user_id) DO UPDATE SET hash = EXCLUDED.hash",
                &[],
            )?;
        }
        if !(self.removed_extensions.is_empty() && self.released.is_empty()) {
            step("removing extensions and releasing devices");
        }
        if !self.removed_extensions.is_empty() {
            tx.execute(
                "DELETE FROM extensions WHERE number = ANY($1)",
                &[&self.removed_extensions],
            )?;
        }
        if !self.released.is_empty() {
            tx.execute(
                "UPDATE extensions SET device = NULL WHERE number = ANY($1)",
                &[&self.released],
            )?;
        }
        if !(self.changed_extensions.is_empty() && self.added_extensions.is_empty()) {
            step("adding and updating extensions");
        }
        if !self.changed_extensions.is_empty() {
            self.copy_extensions(tx, "t_changed_extensions", &self.changed_extensions, &[])?;
            tx.execute(
                "UPDATE extensions e SET user_id = u.id, kind = t.kind, device = t.device, \
                 description = t.description, row_digest = t.row_digest \
                 FROM t_changed_extensions t JOIN users u ON u.username = t.username \
                 WHERE e.number = t.number",
                &[],
            )?;
        }
        if !self.added_extensions.is_empty() {
            self.copy_extensions(tx, "t_added_extensions", &self.added_extensions, &self.secrets)?;
            tx.execute(
                "INSERT INTO extensions (number, user_id, kind, device, description, sip_secret, row_digest) \
                 SELECT t.number, u.id, t.kind, t.device, t.description, t.sip_secret, t.row_digest \
                 FROM t_added_extensions t JOIN users u ON u.username = t.username",
                &[],
            )?;
        }
        if !(self.digests.is_empty() && self.updated_users.is_empty()) {
            step("recording row digests");
            copy(
                tx,
                "t_digests",
                "number text PRIMARY KEY, row_digest bigint",
                &[Type::TEXT, Type::INT8],
                |w| self.digests.iter().try_for_each(|(n, d)| w.write(&[n, d])),
            )?;
            tx.execute(
                "UPDATE extensions e SET row_digest = d.row_digest FROM t_digests d \
                 WHERE e.number = d.number AND e.row_digest IS DISTINCT FROM d.row_digest",
                &[],
            )?;
        }
        let mut cleared = Vec::new();
        if !self.updated_users.is_empty() {
            for row in tx.query(
                "UPDATE extensions e SET row_digest = NULL FROM users u \
                 WHERE u.id = e.user_id AND u.username = ANY($1) AND e.row_digest IS NOT NULL \
                 AND NOT EXISTS (SELECT 1 FROM t_digests d WHERE d.number = e.number) \
                 RETURNING e.number",
                &[&self.updated_users],
            )? {
                cleared.push(Text::from(row.get::<_, &str>(0)));
            }
        }
        if !self.removed_users.is_empty() {
            step("removing users");
            tx.execute("DELETE FROM users WHERE username = ANY($1)", &[&self.removed_users])?;
        }
        Ok(cleared)
    }

    /// Copies extensions into temporary table `table`, with their digests and
    /// (for new ones) `secrets`.
    fn copy_extensions(
        &self,
        tx: &mut Transaction<'_>,
        table: &str,
        extensions: &[&Extension],
        secrets: &[String],
    ) -> Result<(), postgres::Error> {
        let mut types = vec![Type::TEXT; 7];
        types[5] = Type::INT8;
        copy(
            tx,
            table,
            "number text, username text, kind text, device text, description text, \
             row_digest bigint, sip_secret text",
            &types,
            |w| {
                for (i, e) in extensions.iter().enumerate() {
                    let digest = self.digests.get(e.number.as_str()).copied();
                    let secret = secrets.get(i).map(String::as_str);
                    w.write(&[
                        &e.number.as_str(),
                        &e.username.as_str(),
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
    }
}

fn copy_users(tx: &mut Transaction<'_>, table: &str, users: &[&User]) -> Result<(), postgres::Error> {
    copy(
        tx,
        table,
        "username text, first_name text, last_name text, email text, im text, mobile text",
        &[Type::TEXT; 6],
        |w| {
            users.iter().try_for_each(|u| {
                w.write(&[
                    &u.username.as_str(),
                    &u.fields[0].as_str(),
                    &u.fields[1].as_str(),
                    &u.fields[2].as_str(),
                    &u.fields[3].as_str(),
                    &u.fields[4].as_str(),
                ])
            })
        },
    )
}

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
    tx.batch_execute(&format!("CREATE TEMP TABLE {table} ({columns}) ON COMMIT DROP"))?;
    let sink = tx.copy_in(&format!("COPY {table} FROM STDIN BINARY"))?;
    let mut writer = BinaryCopyInWriter::new(sink, types);
    fill(&mut writer)?;
    writer.finish()?;
    Ok(())
}
