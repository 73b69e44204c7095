//! The state file: created private, migrated, refused when foreign or newer, read
//! when read-only, damage reported.

use super::*;

#[test]
fn a_new_file_is_created_private_migrated_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/state.db");
    let mut target = SqliteTarget::open(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(target.describe(), format!("sqlite:{}", path.display()));
    assert_eq!(target.serial().unwrap(), 0);
    assert_eq!(target.load().unwrap(), Directory::default());
    assert_eq!(target.last_applied().unwrap(), None);
    drop(target);

    let mut target = SqliteTarget::open(&path).unwrap();
    assert_eq!(target.schema_version().unwrap(), MIGRATIONS.len() as i64);
    let app: i64 = target
        .conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .unwrap();
    assert_eq!(app, APPLICATION_ID);
    let mode: String = target
        .conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let page_size: i64 = target
        .conn
        .pragma_query_value(None, "page_size", |r| r.get(0))
        .unwrap();
    assert_eq!(page_size, PAGE_SIZE);
    assert_eq!(target.serial().unwrap(), 0);
}

#[test]
fn open_read_only_of_a_missing_file_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    assert!(SqliteTarget::open_read_only(&path).unwrap().is_none());
    assert!(!path.exists());
    SqliteTarget::open(&path).unwrap();
    let mut target = SqliteTarget::open_read_only(&path).unwrap().unwrap();
    assert_eq!(target.load().unwrap(), Directory::default());
    assert!(matches!(
        target.set_licenses(Licenses::default()),
        Err(BackendError::Io { .. })
    ));
}

#[test]
fn a_running_write_does_not_block_opening_and_reading() {
    let (dir, mut target) = seeded();
    let before = target.load().unwrap();
    let writer = Connection::open(dir.path().join("state.db")).unwrap();
    writer
        .execute_batch("BEGIN IMMEDIATE; DELETE FROM extensions;")
        .unwrap();
    // Blocked, the open or the read would wait out the busy timeout and fail
    // with `Busy`; they succeed, and see the state before the write.
    let mut reader = SqliteTarget::open(&dir.path().join("state.db")).unwrap();
    assert_eq!(reader.load().unwrap(), before);
    writer.execute_batch("ROLLBACK").unwrap();
}

#[test]
fn files_of_other_programs_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();

    let garbage = dir.path().join("garbage.db");
    let bytes: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&garbage, &bytes).unwrap();
    let err = SqliteTarget::open(&garbage).err().unwrap();
    assert!(matches!(err, BackendError::NotAStateFile { .. }), "{err}");
    assert_eq!(std::fs::read(&garbage).unwrap(), bytes);
    assert!(matches!(
        SqliteTarget::open_read_only(&garbage),
        Err(BackendError::NotAStateFile { .. })
    ));

    let foreign = dir.path().join("foreign.db");
    {
        let conn = Connection::open(&foreign).unwrap();
        conn.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('hi');")
            .unwrap();
    }
    let bytes = std::fs::read(&foreign).unwrap();
    let err = SqliteTarget::open(&foreign).err().unwrap();
    assert!(matches!(err, BackendError::NotAStateFile { .. }), "{err}");
    assert!(err.to_string().contains("not one of pbxsync"), "{err}");
    assert_eq!(std::fs::read(&foreign).unwrap(), bytes);

    let tagged = dir.path().join("tagged.db");
    Connection::open(&tagged)
        .unwrap()
        .pragma_update(None, "application_id", 42)
        .unwrap();
    let err = SqliteTarget::open(&tagged).err().unwrap();
    assert!(err.to_string().contains("another program"), "{err}");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    drop(SqliteTarget::open(&path).unwrap());
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 999)
        .unwrap();
    match SqliteTarget::open(&path) {
        Err(BackendError::NewerSchema { found, known, .. }) => {
            assert_eq!((found, known), (999, MIGRATIONS.len() as i64));
        }
        other => panic!("expected NewerSchema, got {:?}", other.err()),
    }
}

#[test]
fn a_read_only_file_reads_but_refuses_writes() {
    let (dir, mut target) = seeded();
    let path = dir.path().join("state.db");
    let history_id = target.record_failure(&record(&[])).unwrap();
    let before = (target.load().unwrap(), target.serial().unwrap());
    drop(target);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
    let bytes = std::fs::read(&path).unwrap();

    let mut target = SqliteTarget::open(&path).unwrap();
    assert_eq!((target.load().unwrap(), target.serial().unwrap()), before);
    assert!(target.history_entry(history_id).unwrap().is_some());
    assert_eq!(target.history().unwrap().len(), 2);

    let err = apply(&mut target, vec![create_user("dave", "Dave")]).unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
    assert!(target.record_failure(&record(&[])).is_err());
    assert!(target.add_devices(&[], Models::Replace).is_err());
    assert!(target.remove_device("D3").is_err());
    assert!(target.set_licenses(Licenses::default()).is_err());
    assert_eq!((target.load().unwrap(), target.serial().unwrap()), before);
    drop(target);
    assert_eq!(std::fs::read(&path).unwrap(), bytes);

    // Writable again, it takes writes again (SQLite's -wal and -shm files
    // created while it was read-only are writable again too).
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut target = SqliteTarget::open(&path).unwrap();
    for suffix in ["-wal", "-shm"] {
        let sidecar = dir.path().join(format!("state.db{suffix}"));
        if let Ok(meta) = std::fs::metadata(&sidecar) {
            assert!(!meta.permissions().readonly(), "{suffix}");
        }
    }
    apply(&mut target, vec![create_user("dave", "Dave")]).unwrap();
    assert!(target.load().unwrap().user("dave").is_some());
}

#[test]
fn a_read_only_folder_is_read_as_the_file_is_unless_its_wal_holds_commits() {
    let (dir, mut target) = seeded();
    let path = dir.path().join("state.db");
    let before = (target.load().unwrap(), target.serial().unwrap());
    drop(target);
    assert!(!dir.path().join("state.db-shm").exists());
    let folder =
        |mode| std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    folder(0o555);
    let mut target = SqliteTarget::open_read_only(&path).unwrap().unwrap();
    assert!(target.immutable);
    assert_eq!((target.load().unwrap(), target.serial().unwrap()), before);
    drop(target);
    // Opened for writing, it is read-only too, and says so on a write.
    let mut target = SqliteTarget::open(&path).unwrap();
    assert_eq!(target.load().unwrap(), before.0);
    let err = target.add_devices(&[], Models::Replace).unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
    drop(target);
    assert!(!dir.path().join("state.db-shm").exists());
    // Commits still in a WAL file cannot be read without its shared memory:
    // refused, rather than the older state in the file shown.
    folder(0o755);
    std::fs::write(dir.path().join("state.db-wal"), b"frames").unwrap();
    folder(0o555);
    let err = SqliteTarget::open_read_only(&path)
        .err()
        .unwrap()
        .to_string();
    folder(0o755);
    assert!(
        err.contains("state.db-wal") && err.contains("read-only") && err.contains("writable"),
        "{err}"
    );
}

#[test]
fn an_extension_without_its_user_is_damage_not_left_out() {
    let (dir, mut target) = seeded();
    let number = target.load().unwrap().extensions[0].number.clone();
    let other = Connection::open(dir.path().join("state.db")).unwrap();
    other.pragma_update(None, "foreign_keys", false).unwrap();
    other
        .execute(
            "UPDATE extensions SET user_id = 4242 WHERE number = ?1",
            [number.as_str()],
        )
        .unwrap();
    for err in [
        target.load().unwrap_err(),
        target
            .load_subset(&crate::backend::Keys {
                extensions: vec![number.clone()],
                ..crate::backend::Keys::default()
            })
            .unwrap_err(),
    ] {
        let BackendError::Corrupt { reason, .. } = &err else {
            panic!("not damage: {err}");
        };
        assert!(
            reason.contains(&format!("extension {number} belongs to user id 4242")),
            "{reason}"
        );
    }
    // Text that is not UTF-8 is damage too; a busy file is not.
    other
        .execute(
            "UPDATE users SET first_name = CAST(x'ff' AS TEXT) WHERE id = (SELECT min(id) FROM users)",
            [],
        )
        .unwrap();
    other
        .execute(
            "UPDATE extensions SET user_id = (SELECT min(id) FROM users)",
            [],
        )
        .unwrap();
    let err = target.load().unwrap_err();
    assert!(
        target_damage(&err).is_some_and(|r| r.contains("utf-8")),
        "{err}"
    );
    let busy =
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None);
    assert_eq!(damage(&busy), None);
    let err = sqlite_error("cannot read the users", busy);
    assert!(matches!(err, BackendError::Busy { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "cannot read the users: Error code 5: database is locked"
    );
    assert_eq!(target_damage(&err), None);
}

#[test]
fn a_state_file_of_the_first_schema_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO users (username, password_hash) VALUES ('alice', '$argon2id$x'), ('bob', NULL)",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO history (time, local_user, source, blob, summary, outcome, csv_redacted) \
             VALUES ('t', 'u', 's', 'b', '{}', 'applied', 'Extension\n1001\n')",
            [],
        )
        .unwrap();
        // An entry of schema 3, its CSV LZ4-compressed.
        conn.execute_batch(MIGRATIONS[1]).unwrap();
        conn.execute_batch(MIGRATIONS[2]).unwrap();
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn.execute(
            "INSERT INTO history (time, local_user, source, blob, summary, outcome, \
             csv_redacted, csv_lz4) VALUES ('t', 'u', 's', 'b', '{}', 'applied', '', ?1)",
            [lz4_flex::compress_prepend_size(b"Extension\n1002\n")],
        )
        .unwrap();
    }
    // Reading (a plan) upgrades it too, so nobody has to apply first.
    let mut target = SqliteTarget::open_read_only(&path).unwrap().unwrap();
    assert_eq!(target.schema_version().unwrap(), MIGRATIONS.len() as i64);
    assert_eq!(target.load().unwrap().users.len(), 2);
    let hashes: Vec<(String, String)> = target
        .conn
        .prepare("SELECT username, hash FROM passwords JOIN users ON users.id = user_id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(hashes, [("alice".to_string(), "$argon2id$x".to_string())]);
    let old = target.history_entry(1).unwrap().unwrap();
    assert_eq!(
        old.csv.text(),
        "Extension\n1001\n",
        "old entries keep their CSV"
    );
    let lz4 = target.history_entry(2).unwrap().unwrap();
    assert_eq!(lz4.csv.text(), "Extension\n1002\n");
    let (index, _) = target.load_index().unwrap().unwrap();
    assert!(index.is_empty());
    // Compacted into pages of the current size, and back in WAL mode.
    let page_size: i64 = target
        .conn
        .pragma_query_value(None, "page_size", |r| r.get(0))
        .unwrap();
    let mode: String = target
        .conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!((page_size, mode.as_str()), (PAGE_SIZE, "wal"));
}
