//! Connecting to a PostgreSQL target: the URL and its libpq parameters, the
//! password (URL, `PGPASSWORD`, `~/.pgpass`), TLS as `sslmode` says, and errors
//! that name the host and the database (never the password).

use crate::backend::BackendError;

/// Where a target is, for people: never the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The host as the URL gives it (a name, an address or a socket folder).
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub user: String,
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "database {} on {}:{} as {}",
            self.dbname, self.host, self.port, self.user
        )
    }
}

/// A parsed `postgres://` URL, ready to open connections.
pub struct Connector {
    address: Address,
    // helper fills in: postgres::Config, the TLS choice, ...
}

impl Connector {
    /// Parses a `postgres://` or `postgresql://` URL. Errors never show the password.
    pub fn parse(_url: &str) -> Result<Connector, BackendError> {
        todo!("connect helper")
    }

    /// Opens a connection with `application_name` (unless the URL sets one).
    pub fn connect(&self, _application_name: &str) -> Result<postgres::Client, BackendError> {
        todo!("connect helper")
    }

    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The schema the URL's `options=-csearch_path=…` names (its first one), if any.
    pub fn schema(&self) -> Option<&str> {
        todo!("connect helper")
    }
}
