//! The tables of a PostgreSQL target: their identity, the migrations, pbxsync's
//! triggers. Everything lives in one schema; the migrations run inside a
//! transaction under an advisory lock, so two controllers starting at once
//! migrate once.

use super::{PgError, quoted};
use crate::backend::BackendError;
use postgres::{Client, GenericClient};

/// What `meta.application` holds in a schema pbxsync made.
pub(super) const APPLICATION: &str = "pbxsync";

/// The schema version this pbxsync writes: the number of migrations.
pub(super) fn known_version() -> i64 {
    migrations("s").len() as i64
}

/// The migrations, for the schema `s` (a quoted identifier); the schema version
/// is the number applied. Never edit a released one, append a new one.
///
/// The serial is bumped by statement-level triggers, once a statement, whatever
/// writes. The row digests are forgotten by row-level triggers when anything but
/// an apply changes an extension or its user: an apply sets
/// `pbxsync.applying` for its transaction and writes the digests itself.
pub(super) fn migrations(s: &str) -> Vec<String> {
    vec![
        format!(
            r#"
CREATE TABLE {s}.meta (
    key text PRIMARY KEY,
    value text NOT NULL
);
INSERT INTO {s}.meta (key, value) VALUES ('application', '{APPLICATION}');

-- One row: the change serial and what the last successful apply recorded.
CREATE TABLE {s}.state (
    id integer PRIMARY KEY CHECK (id = 1),
    serial bigint NOT NULL DEFAULT 0,
    last_commit text,
    last_blob text,
    last_serial bigint,
    last_inventory text,
    last_pruned boolean NOT NULL DEFAULT false,
    last_kept_extensions bigint,
    last_kept_users bigint,
    last_history_id bigint
);
INSERT INTO {s}.state (id) VALUES (1);

CREATE TABLE {s}.users (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username text NOT NULL UNIQUE,
    first_name text NOT NULL DEFAULT '',
    last_name text NOT NULL DEFAULT '',
    email text NOT NULL DEFAULT '',
    im text NOT NULL DEFAULT '',
    mobile text NOT NULL DEFAULT ''
) WITH (fillfactor = 85);

CREATE TABLE {s}.passwords (
    user_id bigint PRIMARY KEY REFERENCES {s}.users (id) ON DELETE CASCADE,
    hash text NOT NULL
);

CREATE TABLE {s}.devices (
    id text PRIMARY KEY,
    model text NOT NULL DEFAULT ''
);

-- Users and extensions leave room in their pages (fillfactor) so that an
-- update that changes no indexed column is a HOT update: written beside the
-- old row, without new index entries.
-- A SIP secret is made at creation: by pbxsync (16 random bytes in hex), or by
-- the default for a row someone else inserts (gen_random_uuid draws from the
-- server's strong random source).
CREATE TABLE {s}.extensions (
    number text PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES {s}.users (id),
    kind text NOT NULL CHECK (kind IN ('device', 'virtual', 'voicemail_only')),
    device text UNIQUE REFERENCES {s}.devices (id),
    description text NOT NULL DEFAULT '',
    sip_secret text NOT NULL DEFAULT replace(gen_random_uuid()::text, '-', ''),
    row_digest bigint
) WITH (fillfactor = 85);
CREATE INDEX extensions_user_id ON {s}.extensions (user_id);

-- One row; NULL is unlimited.
CREATE TABLE {s}.licenses (
    id integer PRIMARY KEY CHECK (id = 1),
    users bigint CHECK (users >= 0),
    voicemail bigint CHECK (voicemail >= 0)
);
INSERT INTO {s}.licenses (id) VALUES (1);

CREATE TABLE {s}.history (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time text NOT NULL,
    local_user text NOT NULL,
    git_author text,
    source text NOT NULL,
    commit_id text,
    blob text NOT NULL,
    summary text NOT NULL,
    outcome text NOT NULL,
    -- The applied CSV, its passwords blanked, zstd-compressed; NULL when none.
    csv_zstd bytea
);

-- Who holds the apply lock, written by the holder once it has the advisory
-- lock and cleared when it lets go. Only shown while the lock is held.
CREATE TABLE {s}.lock_holder (
    id integer PRIMARY KEY CHECK (id = 1),
    pid bigint NOT NULL,
    host text NOT NULL,
    since text NOT NULL,
    backend_pid integer NOT NULL
);

CREATE FUNCTION {s}.bump_serial() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE {s}.state SET serial = serial + 1 WHERE id = 1;
    RETURN NULL;
END $$;
CREATE TRIGGER users_serial AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {s}.users
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.bump_serial();
CREATE TRIGGER passwords_serial AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {s}.passwords
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.bump_serial();
CREATE TRIGGER devices_serial AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {s}.devices
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.bump_serial();
CREATE TRIGGER extensions_serial AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {s}.extensions
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.bump_serial();
CREATE TRIGGER licenses_serial AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {s}.licenses
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.bump_serial();

CREATE FUNCTION {s}.forget_digest() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.row_digest := NULL;
    RETURN NEW;
END $$;
CREATE TRIGGER extensions_digest_stale BEFORE UPDATE ON {s}.extensions
    FOR EACH ROW
    WHEN (NEW.row_digest IS NOT NULL
          AND (OLD.number, OLD.user_id, OLD.kind, OLD.device, OLD.description)
              IS DISTINCT FROM (NEW.number, NEW.user_id, NEW.kind, NEW.device, NEW.description)
          AND current_setting('pbxsync.applying', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION {s}.forget_digest();

CREATE FUNCTION {s}.forget_user_digests() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE {s}.extensions SET row_digest = NULL
    WHERE user_id = NEW.id AND row_digest IS NOT NULL;
    RETURN NULL;
END $$;
CREATE TRIGGER users_digest_stale AFTER UPDATE ON {s}.users
    FOR EACH ROW
    WHEN ((OLD.username, OLD.first_name, OLD.last_name, OLD.email, OLD.im, OLD.mobile)
              IS DISTINCT FROM (NEW.username, NEW.first_name, NEW.last_name, NEW.email, NEW.im, NEW.mobile)
          AND current_setting('pbxsync.applying', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION {s}.forget_user_digests();
"#
        ),
        format!(
            r#"
-- What a SIP registrar reads from this schema (Kamailio's auth_db with
-- db_postgres, its `subscriber` table at version 7): a view over the
-- extensions that hold a device, so it changes with every apply's commit and
-- costs the apply nothing. The domain is `publish.kamailio.domain` of the
-- config, kept in `publish` (NULL: nothing is published, the view is empty).
CREATE TABLE {s}.publish (
    id integer PRIMARY KEY CHECK (id = 1),
    kamailio_domain text
);
INSERT INTO {s}.publish (id) VALUES (1);
CREATE TABLE {s}.version (
    id serial PRIMARY KEY,
    table_name varchar(32) NOT NULL UNIQUE,
    table_version integer NOT NULL DEFAULT 0
);
INSERT INTO {s}.version (table_name, table_version) VALUES ('subscriber', 7);
CREATE VIEW {s}.subscriber AS
SELECT CASE WHEN e.number ~ '^[0-9]{{1,9}}$' THEN e.number::integer ELSE 0 END AS id,
       e.number::varchar(64) AS username,
       p.kamailio_domain::varchar(64) AS domain,
       e.sip_secret::varchar(64) AS password,
       md5(e.number || ':' || p.kamailio_domain || ':' || e.sip_secret)::varchar(128) AS ha1,
       md5(e.number || '@' || p.kamailio_domain || ':' || p.kamailio_domain || ':' || e.sip_secret)::varchar(128) AS ha1b
FROM {s}.extensions e JOIN {s}.publish p ON p.id = 1
WHERE p.kamailio_domain IS NOT NULL AND e.kind = 'device' AND e.device IS NOT NULL;
"#
        ),
    ]
}

/// What a schema holds, as far as opening it cares.
pub(super) enum Found {
    /// No schema of that name, or one without tables: pbxsync may make its own.
    Empty { exists: bool },
    /// pbxsync's tables at a schema version.
    Ours { version: i64 },
}

/// Looks at schema `name`: refused when it holds tables pbxsync did not make.
pub(super) fn inspect(
    client: &mut impl GenericClient,
    name: &str,
    shown: &str,
) -> Result<Found, BackendError> {
    let context = || format!("cannot read the schema of {shown}");
    let exists: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            &[&name],
        )
        .map_err(|e| e.context(context()))?
        .get(0);
    if !exists {
        return Ok(Found::Empty { exists: false });
    }
    let tables: Vec<String> = client
        .query(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY c.relname",
            &[&name],
        )
        .map_err(|e| e.context(context()))?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if tables.is_empty() {
        return Ok(Found::Empty { exists: true });
    }
    let not_ours = |reason: String| BackendError::ForeignSchema {
        schema: shown.to_owned(),
        reason,
    };
    if !tables.iter().any(|t| t == "meta") {
        let some: Vec<&str> = tables.iter().take(5).map(String::as_str).collect();
        return Err(not_ours(format!(
            "schema `{name}` holds tables pbxsync did not make ({}); give pbxsync a schema of its own \
             (the config key `schema`, or `options=-csearch_path%3DNAME` in the URL)",
            some.join(", ")
        )));
    }
    let meta = format!("SELECT key, value FROM {}.meta", quoted(name));
    let rows = client.query(&meta, &[]).map_err(|_| {
        not_ours(format!(
            "schema `{name}` has a table `meta` that pbxsync did not make; give pbxsync a schema of its own"
        ))
    })?;
    let value = |key: &str| {
        rows.iter()
            .find(|r| r.try_get::<_, &str>(0).ok() == Some(key))
            .and_then(|r| r.try_get::<_, String>(1).ok())
    };
    if value("application").as_deref() != Some(APPLICATION) {
        return Err(not_ours(format!(
            "schema `{name}` holds another program's tables; give pbxsync a schema of its own"
        )));
    }
    let version = value("schema_version")
        .and_then(|v| v.parse::<i64>().ok())
        .ok_or_else(|| not_ours("its schema version is missing".to_owned()))?;
    Ok(Found::Ours { version })
}

/// Brings schema `name` up to date: creates it when missing, runs the
/// migrations it lacks in one transaction. Refuses a newer or foreign schema
/// before writing anything.
pub(super) fn migrate(
    client: &mut Client,
    name: &str,
    shown: &str,
    lock_key: i64,
) -> Result<(), BackendError> {
    let known = known_version();
    if let Found::Ours { version } = inspect(client, name, shown)?
        && version == known
    {
        return Ok(());
    }
    let context = || format!("cannot set up the tables of {shown}");
    let mut tx = client.transaction().map_err(|e| e.context(context()))?;
    // Two controllers opening a new database at once: one migrates, the other
    // waits here and then finds the schema up to date.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key])
        .map_err(|e| e.context(context()))?;
    let version = match inspect(&mut tx, name, shown)? {
        Found::Empty { exists } => {
            if !exists {
                tx.batch_execute(&format!("CREATE SCHEMA {}", quoted(name)))
                    .map_err(|e| e.context(context()))?;
            }
            0
        }
        Found::Ours { version } => version,
    };
    if version > known {
        return Err(BackendError::NewerSchema {
            path: shown.to_owned(),
            found: version,
            known,
        });
    }
    for migration in &migrations(&quoted(name))[version as usize..] {
        tx.batch_execute(migration)
            .map_err(|e| e.context(context()))?;
    }
    tx.execute(
        &format!(
            "INSERT INTO {}.meta (key, value) VALUES ('schema_version', $1) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            quoted(name)
        ),
        &[&known.to_string()],
    )
    .map_err(|e| e.context(context()))?;
    tx.commit().map_err(|e| e.context(context()))
}
