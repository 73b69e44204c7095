//! The steps of the pipeline that `plan`, `apply` (and later `watch`) share: source
//! → validate → target → diff → checks. They return values; `engine` runs them in
//! order and the CLI decides what to print.

use crate::backend::ReportsDamage;
use crate::backend::postgres::PostgresTarget;
use crate::backend::sqlite::{self, SqliteTarget};
use crate::backend::{AppliedRevision, Backend, BackendError, DigestIndex};
use crate::config::{Config, TargetUrl};
use crate::diagnostic::Diagnostic;
use crate::model::{Column, Device, Directory, Text, Usage, cmp_extension};
use crate::plan::{self, Action, Blame, DiffOptions, Plan, PlannedAction, checks};
use crate::source::{self, Loaded, Pending, SourceError, SourceKind};
use crate::validate::{PasswordCells, Policy, RowRef, Validated};
use std::path::{Path, PathBuf};

/// Where the desired state is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceChoice {
    /// The CSV committed at a revision (default: the config's `source.ref`).
    Git { rev: String },
    /// The CSV on disk at the config's `source.path`.
    WorkingTree,
    /// Any file.
    File(PathBuf),
}

pub use crate::policy::SyncOptions;

/// Reads the desired CSV; the blob id of a file on disk is computed later
/// (`Pending::alongside`). `map_checkout`: a checkout standing for the commit
/// may be mapped (see `source::read_committed`), for a command that uses the
/// bytes only within `alongside`.
pub fn load_source(
    config: &Config,
    choice: &SourceChoice,
    map_checkout: bool,
) -> Result<Pending, SourceError> {
    match choice {
        SourceChoice::Git { rev } => {
            source::read_committed(&config.base_dir, &config.source_path, rev, map_checkout)
        }
        SourceChoice::WorkingTree => source::read_working_tree(&config.source_path),
        SourceChoice::File(path) => source::read_file(path),
    }
}

/// The policy of a config, for a plan.
pub fn policy(config: &Config, options: &SyncOptions) -> Policy {
    Policy {
        allow_empty: options.allow_empty,
        ..Policy::from_config(config)
    }
}

/// Opens the target. With `write` false, a SQLite file that does not exist yet
/// reads as `None` (an empty directory) and is not created.
pub fn open_target(url: &TargetUrl, write: bool) -> Result<Option<Box<dyn Backend>>, BackendError> {
    match url {
        TargetUrl::Sqlite(path) => {
            let name = path.display().to_string();
            let opened = if write {
                SqliteTarget::open(path).map(Some)
            } else {
                SqliteTarget::open_read_only(path)
            };
            let damaged = |e| match sqlite::target_damage(&e) {
                Some(reason) => BackendError::Damaged {
                    path: name.clone(),
                    reason,
                },
                None => e,
            };
            Ok(opened.map_err(damaged)?.map(|t| {
                Box::new(ReportsDamage::new(t, name.clone(), sqlite::target_damage))
                    as Box<dyn Backend>
            }))
        }
        TargetUrl::Postgres { url, schema } => {
            let opened = if write {
                PostgresTarget::open(url, schema.as_deref()).map(Some)
            } else {
                PostgresTarget::open_read_only(url, schema.as_deref())
            };
            Ok(opened?.map(|t| Box::new(t) as Box<dyn Backend>))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(
        "cannot read the inventory file {path}: {source}; fix `inventory:` in pbxsync.yaml or create the file"
    )]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: String,
        line: u32,
        message: String,
    },
}

/// Reads a devices file: CSV `id,model`, header row optional. Ids are read like the
/// Device column (MACs in any usual form).
pub fn read_devices(path: &Path) -> Result<Vec<Device>, InventoryError> {
    parse_devices(&read_inventory_bytes(path)?, &path.display().to_string())
}

pub fn read_inventory_bytes(path: &Path) -> Result<Vec<u8>, InventoryError> {
    std::fs::read(path).map_err(|source| InventoryError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// What an apply keeps of the inventory file it was planned with: equal digests,
/// equal files (xxh3-128 of the bytes, in hex).
pub fn inventory_digest(bytes: &[u8]) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(bytes))
}

pub fn parse_devices(bytes: &[u8], name: &str) -> Result<Vec<Device>, InventoryError> {
    let invalid = |line: u32, message: String| InventoryError::Invalid {
        path: name.to_string(),
        line,
        message,
    };
    let text = match crate::csv::decode(bytes, crate::config::Encoding::Auto) {
        Ok((t, _)) => t.text,
        Err(d) => return Err(invalid(d.line.unwrap_or(1), d.message)),
    };
    let delimiter = crate::csv::detect_delimiter(&text, crate::config::Delimiter::Auto);
    // The records of `range` (starting a record on `line`) as devices; the first
    // one may be a header row.
    let read = |range: std::ops::Range<usize>, line: u32, header: bool| {
        let mut records = crate::csv::Records::within(&text, range, delimiter, line);
        let mut devices: Vec<Device> = Vec::new();
        let mut first = header;
        while let Some(rec) = records.next() {
            let id = rec.get(0).trim();
            if std::mem::take(&mut first)
                && matches!(
                    id.to_ascii_lowercase().as_str(),
                    "id" | "device" | "mac" | "device id"
                )
            {
                continue;
            }
            match crate::validate::rules::device(id) {
                Ok(crate::model::DeviceCell::Device(id)) => devices.push(Device {
                    id,
                    model: Text::from(rec.get(1).trim()),
                }),
                Ok(_) => return Err(invalid(rec.line, format!("`{id}` is not a device id"))),
                Err(p) => return Err(invalid(rec.line, p.message)),
            }
        }
        Ok(devices)
    };
    // A file without quotes has a record per line: a large one is read in parts
    // on every core (a million devices: 0.2 s on one). The first record, a
    // possible header, is read on its own, up to the end of its line.
    let bytes = text.as_bytes();
    let body = if text.len() >= 1 << 20 && memchr::memchr(b'"', bytes).is_none() {
        crate::csv::Records::new(&text, delimiter)
            .next()
            .and_then(|rec| {
                Some((
                    rec.start + memchr::memchr(b'\n', &bytes[rec.start..])? + 1,
                    rec.line + 1,
                ))
            })
    } else {
        None
    };
    let mut devices = match body {
        Some((start, line)) => {
            use rayon::prelude::*;
            let mut devices = read(0..start, 1, true)?;
            let parts: Vec<Result<Vec<Device>, InventoryError>> =
                crate::validate::split(&text, start, line)
                    .par_iter()
                    .map(|part| read(part.range.clone(), part.line, false))
                    .collect();
            // The first error in line order, as one pass would report it.
            for part in parts {
                devices.extend(part?);
            }
            devices
        }
        _ => read(0..text.len(), 1, true)?,
    };
    devices.sort_by(|a, b| a.id.cmp(&b.id));
    devices.dedup_by(|a, b| a.id == b.id);
    Ok(devices)
}

/// The diff options of a config, flags and file layout.
pub fn diff_options(
    config: &Config,
    options: &SyncOptions,
    validated: &Validated<'_>,
    inventory: Vec<Device>,
    password_changed: Vec<Text>,
) -> DiffOptions {
    DiffOptions {
        prune: options.prune || config.prune,
        reset_passwords: options.reset_passwords,
        password_changed,
        reassigned_becomes: config.policy.reassigned_extension_becomes.kind(),
        inventory,
        removed: Vec::new(),
        columns: Column::ALL.map(|c| {
            validated
                .layout
                .position(c)
                .and_then(|i| u32::try_from(i + 1).ok())
        }),
    }
}

/// Plans the desired state against the current one: the file's own diagnostics,
/// then every target-dependent error, then licenses and safety — all of them, so
/// that one run shows everything to fix (rule 13).
pub fn make_plan(
    config: &Config,
    options: &SyncOptions,
    validated: &Validated<'_>,
    current: &Directory,
    inventory: Vec<Device>,
    passwords: &PasswordBase,
) -> Plan {
    let changed = passwords.changed(&validated.index);
    let changed = usernames_of(&validated.desired, &changed);
    let opts = diff_options(config, options, validated, inventory, changed);
    let mut plan = plan::diff(&validated.desired, current, &opts);
    plan.warnings.extend(passwords.warning());
    if !opts.prune {
        plan.notes
            .extend(plan::diff::unnamed_note(&validated.desired, current));
    }
    finish_plan(
        config,
        options,
        validated,
        current,
        Usage::of(current),
        plan,
    )
}

/// The license and safety checks, and the file's own diagnostics, on a diff.
fn finish_plan(
    config: &Config,
    options: &SyncOptions,
    validated: &Validated<'_>,
    current: &Directory,
    usage: Usage,
    mut plan: Plan,
) -> Plan {
    checks::licenses(&mut plan, current, usage);
    checks::safety(
        &mut plan,
        current,
        usage.extensions,
        &config.safety,
        options.allow_large_change,
    );
    // Together, the file's and the plan's keep the first of each code again.
    let mut sink = crate::diagnostic::Sink::default();
    sink.extend(plan.errors.drain(..));
    sink.extend(plan.warnings.drain(..));
    sink.extend(validated.diagnostics.iter().cloned());
    let (all, omitted) = sink.finish();
    plan.omitted.merge(&validated.omitted);
    plan.omitted.merge(&omitted);
    (plan.errors, plan.warnings) = all.into_iter().partition(Diagnostic::is_error);
    crate::diagnostic::sort(&mut plan.errors);
    crate::diagnostic::sort(&mut plan.warnings);
    if !plan.errors.is_empty() {
        // A plan with an error is never applied, so it shows no actions.
        plan.actions.clear();
    }
    plan
}

/// A plan, with what an apply of it needs besides.
pub struct Planned {
    pub plan: Plan,
    /// The desired state the plan was made from (all of it, or the rows that
    /// changed and their users): apply reads the passwords here.
    pub desired: crate::model::Desired,
    /// The row digests to store with the apply: rows that will then match.
    pub digests: Vec<(Text, u64)>,
    /// The target's digest index the plan was made against, and the extension
    /// counts after the plan: `index_after` makes them the index after an apply.
    /// `None` when the plan read the whole directory.
    pub index: Option<(DigestIndex, Usage)>,
}

/// What rule 9 compares the Password cells with (SPEC section 3, rule 9): the
/// CSV of the last apply, read from the repository by its blob id. Nothing about
/// a password is stored for this.
#[derive(Debug, Default)]
pub enum PasswordBase {
    /// No existing user's password changed: no apply yet, the same file as the
    /// last apply, a last applied file without a Password column,
    /// `--reset-passwords` (which sets them all anyway), or a check.
    #[default]
    Unchanged,
    /// The Password cells of the CSV of the last apply.
    Cells(PasswordCells),
    /// The CSV of the last apply cannot be read (history rewritten and
    /// garbage-collected, or no repository): no existing password is set, and
    /// the warning says so.
    Missing(Diagnostic),
}

impl PasswordBase {
    /// The CSV of the last apply (`last`), unless `current_blob` is that file:
    /// one read of its blob, validated as the file being planned is (on
    /// another thread while that is validated).
    pub fn read(
        config: &Config,
        last: Option<&AppliedRevision>,
        current_blob: Option<&str>,
        policy: &Policy,
    ) -> PasswordBase {
        let Some(last) = last else {
            return PasswordBase::Unchanged;
        };
        if current_blob == Some(last.blob.as_str()) {
            return PasswordBase::Unchanged;
        }
        let why = match source::read_blob(&config.base_dir, &last.blob) {
            // A file that left the Password column out managed no password:
            // cells that come back with the column are not taken as changes,
            // which would set every password at once.
            Ok(Some(bytes)) => {
                return PasswordCells::read(&bytes, &policy.read)
                    .map_or(PasswordBase::Unchanged, PasswordBase::Cells);
            }
            Ok(None) => "is not in the repository any more (history rewritten?)".to_string(),
            Err(e) => format!("cannot be read from the repository ({e})"),
        };
        let short = |id: &str| id.chars().take(12).collect::<String>();
        let which = match &last.commit {
            Some(commit) => format!("commit {}, blob {}", short(commit), short(&last.blob)),
            None => format!("blob {}", short(&last.blob)),
        };
        PasswordBase::Missing(
            Diagnostic::warning(
                crate::diagnostic::Code::LastAppliedCsvMissing,
                format!(
                    "the CSV of the last apply ({which}) {why}: no existing user's password is set, since a changed Password cell cannot be told from an unchanged one"
                ),
            )
            .with_hint("`--reset-passwords` sets the password of every user whose Password cell is filled"),
        )
    }

    /// The users of `rows` (`RowRef::user`, sorted) whose Password cell changed.
    fn changed(&self, rows: &[RowRef]) -> Vec<u64> {
        match self {
            PasswordBase::Cells(cells) => cells.changed(rows),
            _ => Vec::new(),
        }
    }

    fn warning(&self) -> Option<Diagnostic> {
        match self {
            PasswordBase::Missing(warning) => Some(warning.clone()),
            _ => None,
        }
    }
}

/// The usernames of `desired` among `users` (`RowRef::user`, sorted), sorted.
fn usernames_of(desired: &crate::model::Desired, users: &[u64]) -> Vec<Text> {
    if users.is_empty() {
        return Vec::new();
    }
    let mut names: Vec<Text> = desired
        .users
        .iter()
        .filter(|u| {
            users
                .binary_search(&crate::validate::user_key(&u.username))
                .is_ok()
        })
        .map(|u| u.username.clone())
        .collect();
    names.sort();
    names
}

/// Whether a plan may read only the rows whose digest changed. Resetting
/// passwords, or a file that leaves columns unmanaged need the whole directory,
/// as does `full_plan` (`EngineOptions::full_plan`). The one place this is
/// decided.
pub fn can_plan_changed_rows(
    options: &SyncOptions,
    layout: Option<&crate::csv::Layout>,
    full_plan: bool,
) -> bool {
    !options.reset_passwords
        && layout.is_none_or(|l| l.managed() == crate::model::ColumnSet::ALL)
        && !full_plan
}

/// What a plan of changed rows reads of the target while the CSV is validated.
pub struct TargetDigests {
    /// Read first: a write after it makes the plan stale.
    pub serial: i64,
    /// The digest index and extension counts; `None` when the target keeps no
    /// row digests (the whole directory is planned).
    pub index: Option<(DigestIndex, Usage)>,
    /// The devices of the inventory file that the target lacks.
    pub new_devices: Vec<Device>,
}

/// Validates the CSV for a plan of its changed rows (`validate::index`) while
/// another thread reads the target's serial, digest index and which devices of
/// `inventory` it lacks: the serial first, so that a write after it makes the
/// plan stale.
pub fn validate_with_index<'t>(
    bytes: &'t [u8],
    policy: &Policy,
    target: &mut Box<dyn Backend>,
    inventory: &[Device],
) -> (Validated<'t>, Result<TargetDigests, BackendError>) {
    std::thread::scope(|s| {
        let digests = s.spawn(|| -> Result<_, BackendError> {
            let serial = target.serial()?;
            let index = target.load_index()?;
            let new_devices = match inventory {
                [] => Vec::new(),
                wanted => target.missing_devices(wanted)?,
            };
            Ok(TargetDigests {
                serial,
                index,
                new_devices,
            })
        });
        let validated = crate::validate::index(bytes, policy);
        let digests = digests
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (validated, digests)
    })
}

/// How each row stands against the digests the target stored: both lists sorted
/// by number, merged in parts on every core.
fn stale(rows: &[RowRef], index: &[(Text, Option<u64>)]) -> Vec<RowState> {
    use rayon::prelude::*;
    const PART: usize = 1 << 16;
    rows.par_chunks(PART)
        .flat_map_iter(|part| {
            // The part's first number is the least: the index is merged from there.
            let from = part.first().map_or(0, |first| {
                index.partition_point(|(n, _)| cmp_extension(n, &first.number).is_lt())
            });
            let mut stored = crate::model::SortedCursor::new(&index[from..]);
            part.iter()
                .map(
                    move |row| match stored.find(|(n, _)| cmp_extension(n, &row.number)) {
                        None => RowState::New,
                        Some((_, digest)) if *digest == Some(row.digest) => RowState::Unchanged,
                        Some(_) => RowState::Changed,
                    },
                )
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A row of the file against the target's digest index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RowState {
    /// Its digest is the one stored for its extension.
    Unchanged,
    /// Its extension exists, with another digest or none.
    Changed,
    /// Its extension is not in the target.
    New,
}

/// A set of `RowRef::user`, which is an xxh3 hash already: hashing it again with
/// std's SipHash would cost more than the lookup, once per row of the file.
type UserSet = std::collections::HashSet<u64, std::hash::BuildHasherDefault<Prehashed>>;

/// A hasher for keys that are hashes.
#[derive(Default)]
struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by `u64` keys, which take `write_u64`.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn digests_of<'r>(rows: impl Iterator<Item = &'r RowRef>) -> Vec<(Text, u64)> {
    rows.map(|r| (r.number.clone(), r.digest)).collect()
}

/// Plans from the whole directory (`validated` from `validate::validate`; its
/// desired state moves into the plan). With `keep_index`, the digest index read
/// comes with the plan, so that an apply can keep the index after it
/// (`RowDigests::keep_index`) as after a plan of changed rows.
pub fn plan_all(
    config: &Config,
    options: &SyncOptions,
    validated: &mut Validated<'_>,
    target: Option<&mut Box<dyn Backend>>,
    inventory: Vec<Device>,
    keep_index: bool,
    passwords: &PasswordBase,
) -> Result<Planned, BackendError> {
    let (current, index) = match target {
        Some(t) => (t.load()?, t.load_index()?),
        None => (Directory::default(), Some(Default::default())),
    };
    // A target without row digests stores none and keeps no index.
    let Some((index, usage)) = index else {
        let plan = make_plan(config, options, validated, &current, inventory, passwords);
        return Ok(Planned {
            plan,
            desired: std::mem::take(&mut validated.desired),
            digests: Vec::new(),
            index: None,
        });
    };
    let plan = make_plan(config, options, validated, &current, inventory, passwords);
    // A digest stands for the whole row: a file that leaves columns out says
    // nothing about them, so its rows leave the stored digests alone.
    let digests = if validated.layout.managed() == crate::model::ColumnSet::ALL {
        // The changed rows, and every row of their users, as a plan of changed
        // rows stores them: an update of a user clears the digests of its other
        // extensions unless the apply stores them again.
        let stale = stale(&validated.index, &index);
        let changed_users: UserSet = validated
            .index
            .iter()
            .zip(&stale)
            .filter(|(_, stale)| **stale != RowState::Unchanged)
            .map(|(r, _)| r.user)
            .collect();
        digests_of(validated.index.iter().zip(&stale).filter_map(|(r, stale)| {
            (*stale != RowState::Unchanged || changed_users.contains(&r.user)).then_some(r)
        }))
    } else {
        Vec::new()
    };
    // What the license counts will be after the apply, for the kept index.
    let index = keep_index.then(|| {
        let after = plan::checks::usage_after(&plan, &current, usage);
        (index, after)
    });
    Ok(Planned {
        plan,
        desired: std::mem::take(&mut validated.desired),
        digests,
        index,
    })
}

/// Plans only the rows whose digest differs from the one the target stored when it
/// last applied them (`validated` from `validate::index`, the digests from
/// `Target::load_index`): an unchanged row costs an eight-byte comparison, and the
/// target is read for the changed rows only. `digests.new_devices`: the devices
/// of the inventory file that the target lacks (`Target::missing_devices`).
///
/// Pruning removes the extensions of the index that no row names, and their
/// owners that the CSV does not name. `None` when the target holds users that
/// the CSV does not name besides those (users without extensions): only the
/// whole directory finds them.
#[allow(clippy::too_many_arguments)]
pub fn plan_changed_rows(
    config: &Config,
    options: &SyncOptions,
    validated: &Validated<'_>,
    target: &mut Box<dyn Backend>,
    digests: TargetDigests,
    keep_index: bool,
    passwords: &PasswordBase,
    list_unnamed: bool,
) -> Result<Option<Planned>, BackendError> {
    let TargetDigests {
        index, new_devices, ..
    } = digests;
    let Some((index, usage)) = index else {
        return Ok(None);
    };
    // A row's digest leaves its Password cell out (the target stores no
    // fingerprint of a password): the users whose cell changed are planned
    // besides the rows whose digest did.
    let password_changed = passwords.changed(&validated.index);
    // Rows whose digest differs, and every row of their users.
    let stale = stale(&validated.index, &index);
    let prune = options.prune || config.prune;
    let indexed = index.len();
    // Pruned: the extensions no row names, with their owners (read now: the CSV
    // rows of an owner that the CSV names are planned with the changed ones).
    let gone = if prune {
        let numbers = not_in_rows(&validated.index, &index);
        target.load_subset(&crate::backend::Keys {
            users: Vec::new(),
            extensions: numbers,
            devices: Vec::new(),
        })?
    } else {
        Directory::default()
    };
    let mut owners: Vec<Text> = gone.extensions.iter().map(|e| e.username.clone()).collect();
    owners.sort();
    owners.dedup();
    // Kept for an apply (see `index_after`); a plan lets it go now.
    let index = keep_index.then_some(index);
    let rows = || {
        validated
            .index
            .iter()
            .zip(stale.iter().map(|s| *s != RowState::Unchanged))
    };
    let mut users: UserSet = rows()
        .filter_map(|(r, stale)| stale.then_some(r.user))
        .collect();
    users.extend(owners.iter().map(|o| crate::validate::user_key(o)));
    users.extend(password_changed.iter().copied());
    // Each with whether it changed: the extensions of the changed rows are planned.
    let user_rows: Vec<(&RowRef, bool)> = {
        use rayon::prelude::*;
        validated
            .index
            .par_iter()
            .zip(stale.par_iter())
            .map(|(r, s)| (r, *s != RowState::Unchanged))
            .filter(|(r, _)| users.contains(&r.user))
            .collect()
    };
    let desired = validated.subset(&user_rows);
    let mut devices: Vec<Text> = desired
        .extensions
        .iter()
        .filter_map(|e| match &e.device {
            crate::model::DeviceCell::Device(id) => Some(id.clone()),
            _ => None,
        })
        .collect();
    // The devices a typing slip would have meant, for the hint of device-not-found.
    let slips: Vec<Text> = devices
        .iter()
        .filter_map(|d| crate::validate::rules::slip_fixed(d))
        .map(Text::from)
        .collect();
    devices.extend(slips);
    devices.sort();
    devices.dedup();
    // Owners the CSV does not name: to remove, so read too.
    let removed_users: Vec<Text> = owners
        .into_iter()
        .filter(|o| desired.user(o).is_none())
        .collect();
    let mut key_users: Vec<Text> = desired.users.iter().map(|u| u.username.clone()).collect();
    key_users.extend(removed_users.iter().cloned());
    let keys = crate::backend::Keys {
        users: key_users,
        // An extension the index does not hold is not in the target: only the
        // others are looked up (the rows are sorted by number).
        extensions: validated
            .index
            .iter()
            .zip(&stale)
            .filter(|(_, s)| **s == RowState::Changed)
            .map(|(r, _)| r.number.clone())
            .collect(),
        devices,
    };
    let mut current = target.load_subset(&keys)?;
    // The users of the CSV that the target holds: all but the new ones, which
    // are among the changed rows' users.
    let named_users = || {
        let new_users = desired
            .users
            .iter()
            .filter(|u| current.user(&u.username).is_none())
            .count();
        validated.users.saturating_sub(new_users)
    };
    let unnamed = if prune {
        None
    } else if list_unnamed {
        Some(unnamed_listed(validated, target.load()?))
    } else {
        // Every extension of the target is in the index; the rows that are not
        // new name one each.
        let named_extensions = stale.iter().filter(|s| **s != RowState::New).count();
        Some(plan::Unnamed {
            extensions: indexed.saturating_sub(named_extensions) as u64,
            users: target.counts()?.users.saturating_sub(named_users()) as u64,
            names: None,
        })
    };
    if prune {
        // Every user the target holds is in the CSV, new, or removed here: else
        // some user without extensions is left for the whole directory to find.
        if target.counts()?.users != named_users() + removed_users.len() {
            return Ok(None);
        }
        current.extensions.extend(gone.extensions.iter().cloned());
        current.sort();
        current.extensions.dedup_by(|a, b| a.number == b.number);
    }
    // The inventory devices the target holds need no action, and the devices the
    // changed rows name are in `current`: only the missing ones are planned.
    let changed = usernames_of(&desired, &password_changed);
    let mut opts = diff_options(config, options, validated, new_devices, changed);
    // The removals of pruning are planned here, from the index: the diff sees
    // only part of the directory.
    opts.prune = false;
    opts.removed = gone.extensions.iter().map(|e| e.number.clone()).collect();
    let mut plan = plan::diff(&desired, &current, &opts);
    plan.warnings.extend(passwords.warning());
    plan.actions
        .extend(gone.extensions.iter().map(|e| PlannedAction {
            action: Action::RemoveExtension {
                username: e.username.clone(),
                extension: e.number.clone(),
                device: e.device.clone(),
            },
            line: None,
            blame: None,
        }));
    plan.actions
        .extend(removed_users.into_iter().map(|username| PlannedAction {
            action: Action::RemoveUser { username },
            line: None,
            blame: None,
        }));
    let usage_after = index
        .is_some()
        .then(|| plan::checks::usage_after(&plan, &current, usage));
    plan.notes.extend(unnamed.and_then(plan::Unnamed::note));
    let plan = finish_plan(config, options, validated, &current, usage, plan);
    // After the apply every row of these users matches: the changed rows, and the
    // others (whose stored digests an update of their user clears).
    let digests = digests_of(user_rows.iter().map(|(r, _)| *r));
    Ok(Some(Planned {
        plan,
        desired,
        digests,
        index: index.zip(usage_after),
    }))
}

/// The extensions and users of the whole directory `all` that no row of the
/// CSV names, by name (`plan -v` lists them): the rows know their extension's
/// number and their user's key.
fn unnamed_listed(validated: &Validated<'_>, all: Directory) -> plan::Unnamed {
    let mut named = crate::model::SortedCursor::new(&validated.index);
    let extensions: Vec<Text> = all
        .extensions
        .into_iter()
        .filter(|e| {
            named
                .find(|r| cmp_extension(&r.number, &e.number))
                .is_none()
        })
        .map(|e| e.number)
        .collect();
    let named_users: UserSet = validated.index.iter().map(|r| r.user).collect();
    let users: Vec<Text> = all
        .users
        .into_iter()
        .filter(|u| !named_users.contains(&crate::validate::user_key(&u.username)))
        .map(|u| u.username)
        .collect();
    plan::Unnamed {
        extensions: extensions.len() as u64,
        users: users.len() as u64,
        names: Some(plan::UnnamedNames { extensions, users }),
    }
}

/// The numbers of `index` that no row of `rows` names (both sorted by number).
fn not_in_rows(rows: &[RowRef], index: &[(Text, Option<u64>)]) -> Vec<Text> {
    let mut named = crate::model::SortedCursor::new(rows);
    index
        .iter()
        .filter(|(n, _)| named.find(|r| cmp_extension(&r.number, n)).is_none())
        .map(|(n, _)| n.clone())
        .collect()
}

/// The digest index after an apply of `actions`: `before` (read at the plan's
/// serial) with what the apply wrote. Extensions the actions touch are unknown
/// unless `digests` names them; removed ones go. Unknown is never wrong, only
/// slower: a plan reads such rows again. It needs nothing the apply reports, so it
/// is worked out while the target writes; `forget` then takes the digests the
/// apply cleared.
pub fn index_after(
    before: DigestIndex,
    actions: &[PlannedAction],
    digests: &[(Text, u64)],
) -> DigestIndex {
    // What the apply did to each extension it wrote, the last word last: touched
    // (unknown), then the digests it stored, then removals. Each part comes in
    // sorted runs, which a stable sort merges in linear time.
    let mut writes: Vec<(&str, Option<Option<u64>>)> = Vec::new();
    let mut removed = Vec::new();
    for planned in actions {
        match &planned.action {
            Action::AddExtension { extension, .. } | Action::UpdateExtension { extension, .. } => {
                writes.push((extension, Some(None)))
            }
            Action::ReassignDevice {
                from_extension,
                to_extension,
                ..
            } => {
                writes.push((from_extension, Some(None)));
                writes.push((to_extension, Some(None)));
            }
            Action::RemoveExtension { extension, .. } => removed.push((extension.as_str(), None)),
            _ => {}
        }
    }
    writes.extend(digests.iter().map(|(n, d)| (n.as_str(), Some(Some(*d)))));
    writes.extend(removed);
    writes.sort_by(|a, b| cmp_extension(a.0, b.0));
    // `None` removes; `Some(digest)` sets.
    let mut last: Vec<(&str, Option<Option<u64>>)> = Vec::with_capacity(writes.len());
    for write in writes {
        match last.last_mut() {
            Some(prev) if prev.0 == write.0 => *prev = write,
            _ => last.push(write),
        }
    }

    let mut index = Vec::with_capacity(before.len() + last.len());
    let mut writes = last.into_iter().peekable();
    for (number, digest) in before {
        while let Some((new, write)) = writes.next_if(|(n, _)| cmp_extension(n, &number).is_lt()) {
            index.extend(write.map(|d| (Text::from(new), d)));
        }
        match writes.next_if(|(n, _)| *n == number.as_str()) {
            Some((_, write)) => index.extend(write.map(|d| (number, d))),
            None => index.push((number, digest)),
        }
    }
    index.extend(writes.filter_map(|(n, write)| write.map(|d| (Text::from(n), d))));
    index
}

/// Makes the digests of `cleared` unknown in `index` (sorted by number), where it
/// holds them.
pub fn forget(index: &mut DigestIndex, cleared: &[Text]) {
    for number in cleared {
        if let Ok(i) = index.binary_search_by(|(n, _)| cmp_extension(n, number)) {
            index[i].1 = None;
        }
    }
}

/// Most actions a plan names the blame of: a blame reads older versions of the
/// file and looks for every action's line in each, which is worth it for a
/// reviewed change, not for a bulk import.
pub const BLAME_LIMIT: usize = 10_000;

/// Adds who last changed each action's line (git mode only).
pub fn add_blame(config: &Config, loaded: &Loaded, plan: &mut Plan) -> Result<(), SourceError> {
    if loaded.revision.commit.is_none()
        || loaded.revision.kind != SourceKind::Git
        || plan.actions.is_empty()
        || plan.actions.len() > BLAME_LIMIT
    {
        return Ok(());
    }
    let wanted: Vec<u32> = plan.actions.iter().filter_map(|a| a.line).collect();
    let lines = source::blame(&config.base_dir, loaded, &wanted)?;
    for action in &mut plan.actions {
        if let Some(b) = action.line.and_then(|l| lines.get(&l)) {
            action.blame = Some(Box::new(Blame {
                commit: b.commit.clone(),
                author: b.author.clone(),
                date: b.date.clone(),
            }));
        }
    }
    Ok(())
}

/// The local user, for history: `$USER` or `$LOGNAME`, else (services,
/// containers) the account of this process's effective user, else its uid.
pub fn local_user() -> String {
    if let Ok(user) = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")) {
        return user;
    }
    if let Ok(user) = whoami::username() {
        return user;
    }
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map_or_else(|_| "unknown".into(), |m| format!("uid {}", m.uid()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ExtensionKind;

    /// SQLite's contract without its row digests (`RowDigests`' defaults).
    struct WithoutDigests(SqliteTarget);

    impl crate::backend::DirectoryStore for WithoutDigests {
        fn describe(&self) -> String {
            self.0.describe()
        }
        fn load(&mut self) -> Result<Directory, BackendError> {
            self.0.load()
        }
        fn load_subset(&mut self, keys: &crate::backend::Keys) -> Result<Directory, BackendError> {
            self.0.load_subset(keys)
        }
        fn apply(
            &mut self,
            request: crate::backend::ApplyRequest<'_>,
            progress: &mut dyn FnMut(crate::backend::Progress),
        ) -> Result<crate::backend::ApplyReport, BackendError> {
            self.0.apply(request, progress)
        }
    }

    impl crate::backend::Ledger for WithoutDigests {
        fn serial(&mut self) -> Result<i64, BackendError> {
            self.0.serial()
        }
        fn last_applied(
            &mut self,
        ) -> Result<Option<crate::backend::AppliedRevision>, BackendError> {
            self.0.last_applied()
        }
        fn record_failure(
            &mut self,
            record: &crate::backend::HistoryRecord,
        ) -> Result<i64, BackendError> {
            self.0.record_failure(record)
        }
        fn history(&mut self) -> Result<Vec<crate::backend::HistoryRecord>, BackendError> {
            self.0.history()
        }
        fn history_entry(
            &mut self,
            id: i64,
        ) -> Result<Option<crate::backend::HistoryRecord>, BackendError> {
            self.0.history_entry(id)
        }
    }

    impl crate::backend::ApplyLock for WithoutDigests {
        fn try_lock(&mut self) -> Result<Box<dyn crate::backend::LockGuard>, BackendError> {
            self.0.try_lock()
        }
        fn lock_holder(&mut self) -> Result<Option<crate::backend::LockHolder>, BackendError> {
            self.0.lock_holder()
        }
    }

    impl crate::backend::PhoneSystem for WithoutDigests {
        fn phones(&mut self) -> Result<Vec<crate::model::Phone>, BackendError> {
            self.0.phones()
        }
        fn sip_secret(
            &mut self,
            extension: &str,
        ) -> Result<Option<crate::model::Secret>, BackendError> {
            self.0.sip_secret(extension)
        }
        fn registrar_domain(&mut self) -> Result<Option<String>, BackendError> {
            self.0.registrar_domain()
        }
        fn set_registrar_domain(&mut self, domain: Option<&str>) -> Result<(), BackendError> {
            self.0.set_registrar_domain(domain)
        }
    }

    impl crate::backend::Inventory for WithoutDigests {
        fn add_devices(
            &mut self,
            devices: &[Device],
            models: crate::backend::Models,
        ) -> Result<(), BackendError> {
            self.0.add_devices(devices, models)
        }
        fn remove_device(&mut self, id: &str) -> Result<bool, BackendError> {
            self.0.remove_device(id)
        }
        fn set_licenses(&mut self, licenses: crate::model::Licenses) -> Result<(), BackendError> {
            self.0.set_licenses(licenses)
        }
    }

    impl crate::backend::RowDigests for WithoutDigests {}

    #[test]
    fn a_backend_without_row_digests_is_planned_whole() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(
            "source:\n  path: users.csv\ntarget: sqlite:state.db\n",
            Path::new("pbxsync.yaml"),
            dir.path(),
        )
        .unwrap();
        let options = SyncOptions::default();
        let policy = policy(&config, &options);
        let csv = include_bytes!("../../examples/company/users.csv");
        let open = || SqliteTarget::open(&dir.path().join("state.db")).unwrap();
        let mut with: Box<dyn Backend> = Box::new(open());
        let mut without: Box<dyn Backend> = Box::new(WithoutDigests(open()));
        assert_eq!(without.load_index().unwrap(), None);

        let (validated, digests) = validate_with_index(csv, &policy, &mut without, &[]);
        let digests = digests.unwrap();
        assert_eq!(digests.index, None);
        let changed = plan_changed_rows(
            &config,
            &options,
            &validated,
            &mut without,
            digests,
            true,
            &PasswordBase::Unchanged,
            false,
        )
        .unwrap();
        assert!(changed.is_none(), "no plan of changed rows without digests");

        let all = |target: &mut Box<dyn Backend>| {
            let mut validated = crate::validate::validate(csv, &policy);
            let devices = parse_devices(
                include_bytes!("../../examples/company/devices.csv"),
                "devices.csv",
            )
            .unwrap();
            plan_all(
                &config,
                &options,
                &mut validated,
                Some(target),
                devices,
                true,
                &PasswordBase::Unchanged,
            )
            .unwrap()
        };
        let (planned_with, planned_without) = (all(&mut with), all(&mut without));
        assert!(
            planned_with.plan.errors.is_empty(),
            "{:?}",
            planned_with.plan
        );
        assert!(!planned_with.plan.actions.is_empty());
        assert_eq!(planned_without.plan, planned_with.plan);
        assert!(!planned_with.digests.is_empty() && planned_with.index.is_some());
        assert!(planned_without.digests.is_empty() && planned_without.index.is_none());
    }

    #[test]
    fn rows_stand_against_the_index_across_the_parts_of_the_merge() {
        // Several parts of the parallel merge, numbers of several lengths; every
        // third row is new, every fifth has another digest, every seventh is
        // stored without one, and the index holds numbers no row names (ten times
        // a number 5 modulo 7 never is one).
        let numbers: Vec<String> = (0..200_000u32).map(|i| (i * 7 + 5).to_string()).collect();
        let mut numbers_sorted = numbers.clone();
        numbers_sorted.sort_by(|a, b| cmp_extension(a, b));
        let rows: Vec<RowRef> = numbers_sorted
            .iter()
            .enumerate()
            .map(|(i, n)| RowRef {
                number: n.as_str().into(),
                digest: i as u64,
                user: 0,
                password: None,
                line: 0,
                start: 0,
            })
            .collect();
        let mut index: DigestIndex = Vec::new();
        let mut expected = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            index.push((format!("{}0", row.number).into(), Some(1)));
            let state = if i % 3 == 0 {
                RowState::New
            } else if i % 5 == 0 {
                index.push((row.number.clone(), Some(u64::MAX)));
                RowState::Changed
            } else if i % 7 == 0 {
                index.push((row.number.clone(), None));
                RowState::Changed
            } else {
                index.push((row.number.clone(), Some(row.digest)));
                RowState::Unchanged
            };
            expected.push(state);
        }
        index.sort_by(|a, b| cmp_extension(&a.0, &b.0));
        index.dedup_by(|a, b| a.0 == b.0);
        assert_eq!(stale(&rows, &index), expected);
    }

    #[test]
    fn the_index_after_an_apply_has_its_writes() {
        let before: DigestIndex = vec![
            ("99".into(), Some(1)),
            ("1001".into(), Some(2)),
            ("1002".into(), Some(3)),
            ("1003".into(), Some(4)),
            ("1004".into(), Some(5)),
        ];
        let planned = |action| PlannedAction {
            action,
            line: None,
            blame: None,
        };
        let actions = [
            planned(Action::AddExtension {
                username: "a".into(),
                extension: "1000".into(),
                kind: ExtensionKind::Device,
                device: Some("0004F2000001".into()),
                changes: Vec::new(),
            }),
            planned(Action::AddExtension {
                username: "a".into(),
                extension: "2000".into(),
                kind: ExtensionKind::Virtual,
                device: None,
                changes: Vec::new(),
            }),
            planned(Action::UpdateExtension {
                username: "a".into(),
                extension: "1001".into(),
                kind: ExtensionKind::Virtual,
                device: None,
                changes: Vec::new(),
            }),
            planned(Action::RemoveExtension {
                username: "a".into(),
                extension: "1002".into(),
                device: None,
            }),
            planned(Action::ReassignDevice {
                username: "a".into(),
                device: "0004F2000001".into(),
                from_extension: "1003".into(),
                to_extension: "1000".into(),
                from_becomes: ExtensionKind::Virtual,
            }),
        ];
        let digests = [(Text::from("1000"), 10), (Text::from("1001"), 11)];
        let mut index = index_after(before, &actions, &digests);
        // The apply cleared the digest of 99; 1002 is gone, and stays gone.
        forget(&mut index, &["99".into(), "1002".into()]);
        assert_eq!(
            index,
            [
                ("99".into(), None),
                ("1000".into(), Some(10)),
                ("1001".into(), Some(11)),
                ("1003".into(), None),
                ("1004".into(), Some(5)),
                ("2000".into(), None),
            ]
        );
    }

    #[test]
    fn devices_files_accept_a_header_and_any_mac_spelling() {
        let d = parse_devices(
            b"id,model\n00:04:f2:12:34:56,VVX 450\nsoftphone001,\n",
            "devices.csv",
        )
        .unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].id, "0004F2123456");
        assert_eq!(d[0].model, "VVX 450");
        assert_eq!(d[1].id, "SOFTPHONE001");
        let e = parse_devices(b"id,model\nnot a mac!,x\n", "devices.csv").unwrap_err();
        assert!(e.to_string().starts_with("devices.csv:2:"), "{e}");
    }

    #[test]
    fn a_large_devices_file_read_in_parts_reads_as_in_one_piece() {
        // Over 1 MiB without quotes: read in parts. A quote anywhere makes the
        // same file read in one piece.
        let mut text = String::from("\r\nDevice ID;Model\r\n");
        for i in 0..60_000u32 {
            let sep = if i % 7 == 0 { "\n\n" } else { "\r\n" };
            text.push_str(&format!(
                "00:04:f2:{:02x}:{:02x}:{:02x};VVX {i}{sep}",
                i >> 16,
                (i >> 8) & 255,
                i & 255
            ));
        }
        let parts = parse_devices(text.as_bytes(), "d.csv").unwrap();
        let whole = parse_devices(
            text.replacen("VVX 59999", "\"VVX 59999\"", 1).as_bytes(),
            "d.csv",
        )
        .unwrap();
        assert_eq!(parts.len(), 60_000);
        assert_eq!(parts, whole);
        assert_eq!(parts[1].id, "0004F2000001");
        assert_eq!(parts[1].model, "VVX 1");

        // The first bad row is the one reported, by its line, not the one in
        // the other part.
        let line_of = |i: u32| -> u32 {
            // Lines 1 (blank) and 2 (header), then each row plus a blank after every 7th.
            3 + i + (0..i).filter(|k| k % 7 == 0).count() as u32
        };
        let bad = text.replacen("00:04:f2:00:c3:50", "bad-mac!", 1).replacen(
            "00:04:f2:00:ea:60",
            "worse!",
            1,
        );
        for bad in [bad.clone(), bad.replacen("VVX 59999", "\"VVX 59999\"", 1)] {
            let e = parse_devices(bad.as_bytes(), "d.csv").unwrap_err();
            assert!(
                e.to_string()
                    .starts_with(&format!("d.csv:{}:", line_of(0xc350))),
                "{e}"
            );
        }
    }
}
