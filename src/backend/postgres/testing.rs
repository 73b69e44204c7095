//! Schemas of their own for tests against a real server
//! (`PBXSYNC_TEST_POSTGRES`).

use std::sync::atomic::{AtomicUsize, Ordering};

/// The server tests use, or `None` (said loudly) when `PBXSYNC_TEST_POSTGRES`
/// is unset.
pub(crate) fn server(test: &str) -> Option<String> {
    match std::env::var("PBXSYNC_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("SKIPPED (PBXSYNC_TEST_POSTGRES is unset): {test}");
            None
        }
    }
}

/// A schema name no other test uses, dropped with the value.
pub(crate) struct Scratch {
    pub url: String,
    pub schema: String,
}

impl Scratch {
    pub(crate) fn new(url: &str, test: &str) -> Scratch {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        // PostgreSQL cuts names at 63 bytes: the test's name is cut first, so
        // the pid and counter that make the name unique stay.
        let mut name: String = test
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        name.truncate(40);
        let schema = format!(
            "t_{name}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Scratch {
            url: url.to_owned(),
            schema,
        }
    }

    /// A connection with the schema first on its search path.
    pub(crate) fn client(&self) -> postgres::Client {
        let mut client = postgres::Client::connect(&self.url, postgres::NoTls).unwrap();
        client
            .batch_execute(&format!(
                "SET search_path TO {}",
                super::quoted(&self.schema)
            ))
            .unwrap();
        client
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&self.url, postgres::NoTls) {
            let _ = client.batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                super::quoted(&self.schema)
            ));
        }
    }
}
