//! PostgreSQL for the tests: each test gets its own empty schema in the database
//! that `PBXSYNC_TEST_POSTGRES` names (CI creates a fresh one per run), dropped
//! again when the test ends, also when it fails. Fixtures and checks run SQL with
//! `psql`, as a person or another program behind pbxsync's back would.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The variable that names the test database; unset, the PostgreSQL tests skip.
pub const VAR: &str = "PBXSYNC_TEST_POSTGRES";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// One test's schema. Dropping it drops the schema and everything in it.
pub struct Schema {
    /// The database's URL as `PBXSYNC_TEST_POSTGRES` gives it (no schema).
    pub base: String,
    /// The schema's name: `t_<test>_<pid>_<n>`, lower case, at most 63 bytes.
    pub name: String,
    /// The target URL: `base` with `options=-csearch_path%3D<name>`.
    pub url: String,
}

impl Schema {
    /// A fresh schema name for `test` (the schema is not created: pbxsync creates
    /// it), or None, said loudly, when `PBXSYNC_TEST_POSTGRES` is unset.
    pub fn new(test: &str) -> Option<Schema> {
        let Some(base) = std::env::var(VAR).ok().filter(|v| !v.is_empty()) else {
            skipped(test, &format!("{VAR} is unset"));
            return None;
        };
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let suffix = format!("_{}_{n}", std::process::id());
        let mut stem: String = test
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        stem.truncate(63 - 2 - suffix.len());
        let name = format!("t_{stem}{suffix}");
        let url = with_schema(&base, &name);
        let schema = Schema { base, name, url };
        // A leftover of an earlier run with the same pid and counter is not ours.
        schema.drop_schema();
        Some(schema)
    }

    /// Runs SQL with `search_path` set to this schema; the unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        psql(
            &self.base,
            &format!("SET search_path TO {};\n{sql}", self.name),
        )
    }

    /// The tables in this schema, sorted.
    pub fn tables(&self) -> Vec<String> {
        let out = psql(
            &self.base,
            &format!(
                "SELECT table_name FROM information_schema.tables \
                 WHERE table_schema = '{}' ORDER BY 1",
                self.name
            ),
        );
        out.lines().map(str::to_string).collect()
    }

    /// Whether the schema exists.
    pub fn exists(&self) -> bool {
        psql(
            &self.base,
            &format!(
                "SELECT count(*) FROM pg_namespace WHERE nspname = '{}'",
                self.name
            ),
        ) == "1"
    }

    fn drop_schema(&self) {
        let _ = try_psql(
            &self.base,
            &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name),
        );
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        self.drop_schema();
    }
}

/// Says loudly that a test did not run: straight to the process's stderr, which
/// the test harness does not capture (it captures `eprintln!`).
pub fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED ({why}): {test}");
}

/// `url` with `options=-csearch_path%3D<schema>` appended.
pub fn with_schema(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-csearch_path%3D{schema}")
}

/// `url` with this password in its user info (the user `postgres` when it has none).
pub fn with_password(url: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (user, host) = match authority.rsplit_once('@') {
        Some((info, host)) => (info.split(':').next().unwrap_or("postgres"), host),
        None => ("postgres", authority),
    };
    format!("{scheme}://{user}:{password}@{host}{tail}")
}

/// `psql` on `url` (any libpq URL) running `sql`; its output, unaligned and
/// without headers, trimmed. Panics with psql's error when the SQL fails.
pub fn psql(url: &str, sql: &str) -> String {
    try_psql(url, sql).unwrap_or_else(|e| panic!("psql failed: {e}\nSQL: {sql}"))
}

/// As `psql`, the error as a value.
pub fn try_psql(url: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url])
        .args(["-c", sql])
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
