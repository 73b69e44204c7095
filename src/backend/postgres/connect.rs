//! Connecting to a PostgreSQL target: the URL and its libpq parameters, the
//! password (URL, `PGPASSWORD`, `~/.pgpass`), TLS as `sslmode` says, and errors
//! that name the host and the database (never the password).
//!
//! tokio-postgres parses most of the URL. What it does not know as libpq does
//! (the host and port fallbacks, `sslmode=verify-*`, the certificate files, the
//! password file) is taken out of the URL first and applied here, so that its
//! parser never sees a parameter it would reject.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use openssl::x509::X509;
use openssl::x509::store::X509StoreBuilder;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use postgres::config::SslMode;
use postgres_openssl::MakeTlsConnector;

use crate::backend::BackendError;

const DEFAULT_PORT: u16 = 5432;
const DEFAULT_HOST: &str = "localhost";
/// libpq waits forever by default; a watcher against an unreachable host should
/// fail in a while instead.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// libpq's default socket folders (Debian's and upstream's): a password file
/// line for `localhost` covers a socket connection there, as libpq has it.
const DEFAULT_SOCKET_DIRS: &[&str] = &["/var/run/postgresql", "/run/postgresql", "/tmp"];

/// URL parameters tokio-postgres understands as libpq does; they pass through.
const PASSED_THROUGH: &[&str] = &[
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "hostaddr",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
    "sslnegotiation",
];

/// What a value re-encoded for tokio-postgres's parser must escape: everything
/// but letters, digits and a few harmless marks, so that an `@`, `&` or `=` in a
/// value cannot change how it splits the URL.
const VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

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

/// The environment values libpq reads, gathered in one place so that tests can
/// build their own instead of changing the process's environment.
#[derive(Clone, Default)]
pub struct Env {
    pub pguser: Option<String>,
    pub pgpassword: Option<String>,
    pub pghost: Option<String>,
    pub pgport: Option<String>,
    pub pgpassfile: Option<PathBuf>,
    pub home: Option<PathBuf>,
    /// The operating system's name for the user running pbxsync.
    pub os_user: Option<String>,
}

impl Env {
    /// The values of this process.
    pub fn from_process() -> Env {
        let text = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Env {
            pguser: text("PGUSER"),
            pgpassword: text("PGPASSWORD"),
            pghost: text("PGHOST"),
            pgport: text("PGPORT"),
            pgpassfile: text("PGPASSFILE").map(PathBuf::from),
            home: std::env::home_dir(),
            os_user: whoami::username().ok(),
        }
    }
}

// By hand, so that PGPASSWORD never reaches a log.
impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env")
            .field("pguser", &self.pguser)
            .field("pgpassword", &self.pgpassword.as_ref().map(|_| "***"))
            .field("pghost", &self.pghost)
            .field("pgport", &self.pgport)
            .field("pgpassfile", &self.pgpassfile)
            .field("home", &self.home)
            .field("os_user", &self.os_user)
            .finish()
    }
}

/// Where the password came from, for the hint of a refused login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    Url,
    PgPassword,
    PassFile {
        path: PathBuf,
        line: usize,
    },
    /// None was found; `unsafe_file` names a password file that was not read
    /// because others may read it.
    Nowhere {
        passfile: PathBuf,
        unsafe_file: bool,
    },
}

/// `sslmode` as libpq knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslModeName {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslModeName {
    fn parse(text: &str) -> Option<SslModeName> {
        Some(match text {
            "disable" => SslModeName::Disable,
            "allow" => SslModeName::Allow,
            "prefer" => SslModeName::Prefer,
            "require" => SslModeName::Require,
            "verify-ca" => SslModeName::VerifyCa,
            "verify-full" => SslModeName::VerifyFull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslModeName::Disable => "disable",
            SslModeName::Allow => "allow",
            SslModeName::Prefer => "prefer",
            SslModeName::Require => "require",
            SslModeName::VerifyCa => "verify-ca",
            SslModeName::VerifyFull => "verify-full",
        }
    }

    /// tokio-postgres has no `allow`: it tries TLS first, as `prefer` does,
    /// which only differs from libpq in the order of the two attempts.
    fn tokio(self) -> SslMode {
        match self {
            SslModeName::Disable => SslMode::Disable,
            SslModeName::Allow | SslModeName::Prefer => SslMode::Prefer,
            _ => SslMode::Require,
        }
    }
}

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    Nothing,
    /// The chain up to the root certificate, not the host name.
    Chain,
    /// The chain and the host name.
    Full,
}

/// A parsed `postgres://` URL, ready to open connections.
pub struct Connector {
    address: Address,
    config: postgres::Config,
    tls: MakeTlsConnector,
    ssl_mode: SslModeName,
    verify: Verify,
    password_source: Option<PasswordSource>,
    url_names_application: bool,
    schema: Option<String>,
    home: Option<PathBuf>,
}

// By hand: the config's own Debug hides the password, but this says what matters.
impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("address", &self.address)
            .field("ssl_mode", &self.ssl_mode)
            .field("verify", &self.verify)
            .field("password_source", &self.password_source)
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// Parses a `postgres://` or `postgresql://` URL. Errors never show the password.
    pub fn parse(url: &str) -> Result<Connector, BackendError> {
        Connector::parse_with(url, &Env::from_process())
    }

    /// [`Connector::parse`] with the environment given.
    pub fn parse_with(url: &str, env: &Env) -> Result<Connector, BackendError> {
        build(url, env).map_err(|reason| BackendError::Store {
            context: format!("invalid PostgreSQL URL {}", masked(url)),
            reason,
        })
    }

    /// Opens a connection with `application_name` (unless the URL sets one).
    pub fn connect(&self, application_name: &str) -> Result<postgres::Client, BackendError> {
        let mut config = self.config.clone();
        if !self.url_names_application {
            config.application_name(application_name);
        }
        config
            .connect(self.tls.clone())
            .map_err(|e| self.connect_error(&e))
    }

    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The schema the URL's `options=-csearch_path=…` names (its first one), if any.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The `sslmode` in force (`prefer` unless the URL says otherwise).
    pub fn ssl_mode(&self) -> SslModeName {
        self.ssl_mode
    }

    /// How much of the server's certificate is checked.
    pub fn verify(&self) -> Verify {
        self.verify
    }

    /// Where the password came from; `None` when there is none anywhere.
    pub fn password_source(&self) -> Option<&PasswordSource> {
        self.password_source.as_ref()
    }

    fn connect_error(&self, e: &postgres::Error) -> BackendError {
        let a = &self.address;
        if let Some(db) = e.as_db_error() {
            // 28xxx: the role, its password or pg_hba.conf; a hint where the
            // password came from is what helps then.
            let reason = if db.code().code().starts_with("28") {
                format!("{}; {}", db.message(), self.password_hint())
            } else {
                db.message().to_string()
            };
            return self.refused(reason);
        }
        let top = e.to_string();
        let chain = error_chain(e);
        // tokio-postgres calls a password asked for and not had a configuration error.
        if chain.contains("password missing") {
            return self.refused(format!(
                "the server asks for a password; {}",
                self.password_hint()
            ));
        }
        if top == "authentication error" {
            return self.refused(format!("{chain}; {}", self.password_hint()));
        }
        if top.starts_with("error performing TLS handshake") {
            return BackendError::Store {
                context: format!(
                    "cannot open a TLS session with PostgreSQL at {}:{} (sslmode={})",
                    a.host,
                    a.port,
                    self.ssl_mode.as_str()
                ),
                reason: tls_reason(&chain, self.ssl_mode),
            };
        }
        BackendError::Store {
            context: format!(
                "cannot connect to PostgreSQL at {}:{} (database {})",
                a.host, a.port, a.dbname
            ),
            reason: io_reason(e, &self.config).unwrap_or(chain),
        }
    }

    fn refused(&self, reason: String) -> BackendError {
        let a = &self.address;
        BackendError::Store {
            context: format!(
                "PostgreSQL at {}:{} refused user {} for database {}",
                a.host, a.port, a.user, a.dbname
            ),
            reason,
        }
    }

    fn password_hint(&self) -> String {
        let home = self.home.as_deref();
        match &self.password_source {
            Some(PasswordSource::Url) => "the password came from the URL".into(),
            Some(PasswordSource::PgPassword) => "the password came from PGPASSWORD".into(),
            Some(PasswordSource::PassFile { path, line }) => {
                format!(
                    "the password came from {} line {line}",
                    shown_path(path, home)
                )
            }
            Some(PasswordSource::Nowhere {
                passfile,
                unsafe_file,
            }) => {
                let file = shown_path(passfile, home);
                let mut hint = format!("no password was found in the URL, PGPASSWORD or {file}");
                if *unsafe_file {
                    hint.push_str(&format!(
                        " ({file} was not read: group or others may read it; chmod 0600 it)"
                    ));
                }
                hint
            }
            None => "no password was found".into(),
        }
    }
}

/// The URL with its credentials hidden (`TargetUrl::shown`).
fn masked(url: &str) -> String {
    crate::config::TargetUrl::Postgres {
        url: url.to_owned(),
        schema: None,
    }
    .shown()
}

/// A path under the home folder as `~/…`, as people write it.
fn shown_path(path: &Path, home: Option<&Path>) -> String {
    match home.and_then(|h| path.strip_prefix(h).ok()) {
        Some(rest) => format!("~/{}", rest.display()),
        None => path.display().to_string(),
    }
}

/// An error and its causes, each once: tokio-postgres's own text is only its kind.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// The operating system's error in words, with what to check.
fn io_reason(e: &postgres::Error, config: &postgres::Config) -> Option<String> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io_words(io, config));
        }
        source = s.source();
    }
    None
}

fn io_words(io: &std::io::Error, config: &postgres::Config) -> String {
    use std::io::ErrorKind as K;
    match io.kind() {
        K::ConnectionRefused => "connection refused: is the server running there?".into(),
        K::TimedOut => {
            let secs = config
                .get_connect_timeout()
                .map_or(DEFAULT_CONNECT_TIMEOUT.as_secs(), |d| d.as_secs());
            format!("no answer within {secs} s: is the host up and the port open?")
        }
        K::NotFound => "no server socket there: is the server running?".into(),
        K::PermissionDenied => format!("permission denied ({io})"),
        K::HostUnreachable | K::NetworkUnreachable => {
            format!("the host cannot be reached ({io})")
        }
        _ => io.to_string(),
    }
}

fn tls_reason(chain: &str, mode: SslModeName) -> String {
    if chain.contains("does not support TLS") {
        format!(
            "the server does not offer TLS, and sslmode={} asks for it",
            mode.as_str()
        )
    } else if chain.contains("certificate verify failed") {
        // OpenSSL's own text ends with the reason in words ("self-signed
        // certificate", "IP address mismatch"); what precedes it is noise.
        let detail = chain.rsplit(": ").next().unwrap_or(chain).trim();
        let mut reason = format!("the server's certificate was not accepted: {detail}");
        if detail.contains("mismatch") {
            reason.push_str(
                " (verify-full also checks that the certificate names the host the URL \
                 gives; verify-ca does not)",
            );
        }
        reason
    } else {
        chain.to_string()
    }
}

/// The URL taken apart: the host list and the parameters pbxsync handles itself
/// are out; the rest goes to tokio-postgres.
struct UrlParts {
    /// `user:password` as written (still percent-encoded), if any.
    credentials: Option<String>,
    /// Each host with its port, when one is written.
    hosts: Vec<(String, Option<u16>)>,
    dbname: Option<String>,
    /// Decoded, in order.
    params: Vec<(String, String)>,
}

impl UrlParts {
    /// Removes every `key=` parameter and returns the last one's value, as the
    /// last one wins in libpq.
    fn take(&mut self, key: &str) -> Option<String> {
        let mut found = None;
        self.params.retain(|(k, v)| {
            if k == key {
                found = Some(v.clone());
                false
            } else {
                true
            }
        });
        found
    }
}

fn decode(text: &str, what: &str) -> Result<String, String> {
    percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| format!("the {what} is not valid UTF-8 once percent-decoded"))
}

fn parse_port(text: &str) -> Result<Option<u16>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    match text.parse::<u16>() {
        Ok(p) if p > 0 => Ok(Some(p)),
        _ => Err(format!("port `{text}` is not a number from 1 to 65535")),
    }
}

fn split_url(url: &str) -> Result<UrlParts, String> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or("it must start with postgres:// or postgresql://")?;
    // Credentials end at the first `@` before the path or the query: an `@`
    // inside a password must be written `%40`, as libpq asks.
    let (credentials, rest) = match rest.find(['@', '/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'@' => (Some(rest[..i].to_string()), &rest[i + 1..]),
        _ => (None, rest),
    };
    let host_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (hostlist, rest) = rest.split_at(host_end);
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, q),
        None => (rest, ""),
    };
    let dbname = match path.strip_prefix('/') {
        Some(db) if !db.is_empty() => Some(decode(db, "database name")?),
        _ => None,
    };
    Ok(UrlParts {
        credentials,
        hosts: parse_hostlist(hostlist)?,
        dbname,
        params: parse_query(query)?,
    })
}

fn parse_hostlist(list: &str) -> Result<Vec<(String, Option<u16>)>, String> {
    if list.is_empty() {
        return Ok(Vec::new());
    }
    list.split(',').map(parse_host).collect()
}

/// `name`, `name:port`, `[v6]` or `[v6]:port`.
fn parse_host(chunk: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(inner) = chunk.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("host `{chunk}` lacks its closing `]`"))?;
        let port = match after {
            "" => "",
            _ => after
                .strip_prefix(':')
                .ok_or_else(|| format!("unexpected `{after}` after host `[{host}]`"))?,
        };
        (host, port)
    } else {
        chunk.split_once(':').unwrap_or((chunk, ""))
    };
    if host.is_empty() {
        return Err("a host in the list is empty".into());
    }
    Ok((decode(host, "host")?, parse_port(&decode(port, "port")?)?))
}

fn parse_query(query: &str) -> Result<Vec<(String, String)>, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair
                .split_once('=')
                .ok_or("a parameter has no `=value` (parameters are `key=value`, joined by `&`)")?;
            Ok((
                decode(key, "parameter name")?,
                decode(value, "parameter value")?,
            ))
        })
        .collect()
}

/// Whether a parameter name may hold a password (`password`, or a pasted
/// fragment): such a name is never shown.
fn secret_like(key: &str) -> bool {
    let key = percent_decode_str(key).decode_utf8_lossy();
    key.len() > 40 || key.to_ascii_lowercase().contains("pass")
}

/// A parameter name for an error.
fn masked_key(key: &str) -> String {
    if secret_like(key) {
        "…".into()
    } else {
        percent_decode_str(key).decode_utf8_lossy().into_owned()
    }
}

/// What `sslmode` and the certificate parameters ask for.
struct TlsWish {
    mode: SslModeName,
    mode_given: bool,
    rootcert: Option<String>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

fn take_tls_wish(parts: &mut UrlParts) -> Result<TlsWish, String> {
    let mode_text = parts.take("sslmode");
    let mode = match &mode_text {
        Some(m) => SslModeName::parse(m).ok_or_else(|| {
            format!(
                "sslmode `{m}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
            )
        })?,
        None => SslModeName::Prefer,
    };
    Ok(TlsWish {
        mode,
        mode_given: mode_text.is_some(),
        rootcert: parts.take("sslrootcert").filter(|s| !s.is_empty()),
        cert: parts
            .take("sslcert")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
        key: parts
            .take("sslkey")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
    })
}

/// Where the server's certificate is checked against.
enum RootCert {
    File(PathBuf),
    /// The system's trusted roots (`sslrootcert=system`).
    System,
}

fn postgresql_dir(home: Option<&Path>) -> Option<PathBuf> {
    home.map(|h| h.join(".postgresql"))
}

/// The root certificate libpq would use: the one named, else
/// `~/.postgresql/root.crt` when it exists.
fn root_cert(wish: &TlsWish, home: Option<&Path>) -> Result<Option<RootCert>, String> {
    match wish.rootcert.as_deref() {
        Some("system") => Ok(Some(RootCert::System)),
        // libpq quietly skips a missing file under `require`; a file someone
        // named and that is not there is better said at once.
        Some(path) if !Path::new(path).exists() => Err(format!(
            "sslrootcert `{path}` does not exist (or cannot be read)"
        )),
        Some(path) => Ok(Some(RootCert::File(PathBuf::from(path)))),
        None => Ok(postgresql_dir(home)
            .map(|d| d.join("root.crt"))
            .filter(|p| p.exists())
            .map(RootCert::File)),
    }
}

/// libpq's rules for what a mode checks, given the root certificate found.
fn verify_level(
    wish: &mut TlsWish,
    root: Option<&RootCert>,
    home: Option<&Path>,
) -> Result<Verify, String> {
    if matches!(root, Some(RootCert::System)) {
        // As libpq: the system's roots vouch for any name, so only a host
        // name check makes them mean something.
        if !wish.mode_given {
            wish.mode = SslModeName::VerifyFull;
        } else if wish.mode != SslModeName::VerifyFull {
            return Err(format!(
                "sslrootcert=system needs sslmode=verify-full, not sslmode={}",
                wish.mode.as_str()
            ));
        }
    }
    Ok(match (wish.mode, root) {
        (SslModeName::Disable | SslModeName::Allow | SslModeName::Prefer, _) => Verify::Nothing,
        // libpq: under `require`, a root certificate on hand is used.
        (SslModeName::Require, None) => Verify::Nothing,
        (SslModeName::Require, Some(_)) => Verify::Chain,
        (mode, None) => {
            let default = postgresql_dir(home).map(|d| d.join("root.crt"));
            let default = default.map_or("~/.postgresql/root.crt".into(), |p| shown_path(&p, home));
            return Err(format!(
                "sslmode={} checks the server's certificate against a root certificate, \
                 and there is none: {default} does not exist; give sslrootcert=FILE \
                 (or sslrootcert=system with verify-full)",
                mode.as_str()
            ));
        }
        (SslModeName::VerifyCa, Some(_)) => Verify::Chain,
        (SslModeName::VerifyFull, Some(_)) => Verify::Full,
    })
}

fn tls_connector(
    wish: &mut TlsWish,
    home: Option<&Path>,
) -> Result<(MakeTlsConnector, Verify), String> {
    let ssl_error = |e: openssl::error::ErrorStack| format!("cannot set up TLS: {e}");
    let root = root_cert(wish, home)?;
    let verify = verify_level(wish, root.as_ref(), home)?;
    let mut builder = SslConnector::builder(SslMethod::tls()).map_err(ssl_error)?;
    if verify == Verify::Nothing {
        builder.set_verify(SslVerifyMode::NONE);
    } else {
        builder.set_verify(SslVerifyMode::PEER);
        if let Some(RootCert::File(path)) = &root {
            // Only the named roots: libpq does not add the system's to them.
            builder.set_cert_store(root_store(path)?);
        }
    }
    client_certificate(&mut builder, wish, home)?;
    let mut connector = MakeTlsConnector::new(builder.build());
    if verify == Verify::Chain {
        connector.set_callback(|config, _| {
            config.set_verify_hostname(false);
            Ok(())
        });
    }
    Ok((connector, verify))
}

fn sockets_only(hosts: &[String]) -> bool {
    !hosts.is_empty() && hosts.iter().all(|h| h.starts_with('/'))
}

/// A connector for connections that never start TLS.
fn plain_connector() -> Result<MakeTlsConnector, String> {
    let builder =
        SslConnector::builder(SslMethod::tls()).map_err(|e| format!("cannot set up TLS: {e}"))?;
    Ok(MakeTlsConnector::new(builder.build()))
}

fn root_store(path: &Path) -> Result<openssl::x509::store::X509Store, String> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| format!("cannot read sslrootcert `{shown}`: {e}"))?;
    let certs = X509::stack_from_pem(&pem)
        .map_err(|e| format!("sslrootcert `{shown}` is not a PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err(format!("sslrootcert `{shown}` holds no certificate"));
    }
    let mut store = X509StoreBuilder::new().map_err(|e| format!("cannot set up TLS: {e}"))?;
    for cert in certs {
        store
            .add_cert(cert)
            .map_err(|e| format!("cannot use sslrootcert `{shown}`: {e}"))?;
    }
    Ok(store.build())
}

/// `sslcert` and `sslkey`, or libpq's `~/.postgresql/postgresql.crt` and
/// `postgresql.key` when the certificate is there.
fn client_certificate(
    builder: &mut openssl::ssl::SslConnectorBuilder,
    wish: &TlsWish,
    home: Option<&Path>,
) -> Result<(), String> {
    let dir = postgresql_dir(home);
    let cert = match &wish.cert {
        Some(c) => c.clone(),
        None => match dir.as_ref().map(|d| d.join("postgresql.crt")) {
            Some(c) if c.exists() => c,
            _ if wish.key.is_some() => return Err("sslkey is given without sslcert".into()),
            _ => return Ok(()),
        },
    };
    let key = match (&wish.key, &dir) {
        (Some(k), _) => k.clone(),
        (None, Some(d)) => d.join("postgresql.key"),
        (None, None) => return Err("sslcert is given without sslkey".into()),
    };
    builder
        .set_certificate_chain_file(&cert)
        .map_err(|e| format!("cannot use sslcert `{}`: {e}", cert.display()))?;
    builder
        .set_private_key_file(&key, SslFiletype::PEM)
        .map_err(|e| {
            if e.to_string().contains("mismatch") {
                format!(
                    "sslkey `{}` does not belong to sslcert `{}`",
                    key.display(),
                    cert.display()
                )
            } else {
                format!("cannot use sslkey `{}`: {e}", key.display())
            }
        })?;
    builder.check_private_key().map_err(|e| {
        format!(
            "sslkey `{}` does not belong to sslcert `{}`: {e}",
            key.display(),
            cert.display()
        )
    })
}

/// The URL as tokio-postgres should read it: the credentials as written, no
/// hosts (added afterwards, with their ports), every value re-encoded.
fn tokio_url(parts: &UrlParts) -> String {
    let mut url = String::from("postgres://");
    if let Some(c) = &parts.credentials {
        url.push_str(c);
        url.push('@');
    }
    if let Some(db) = &parts.dbname {
        url.push('/');
        url.extend(utf8_percent_encode(db, VALUE));
    }
    let query: Vec<String> = parts
        .params
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, VALUE),
                utf8_percent_encode(v, VALUE)
            )
        })
        .collect();
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query.join("&"));
    }
    url
}

fn check_params(parts: &UrlParts) -> Result<(), String> {
    match parts
        .params
        .iter()
        .find(|(k, _)| !PASSED_THROUGH.contains(&k.as_str()))
    {
        Some((k, _)) => Err(format!(
            "unknown parameter `{}` (pbxsync knows {}, host, port, sslmode, sslrootcert, \
             sslcert, sslkey and passfile)",
            masked_key(k),
            PASSED_THROUGH.join(", ")
        )),
        None => Ok(()),
    }
}

/// The hosts and ports to use: the URL's (its `host`/`port` parameters win over
/// the part before the path), else `PGHOST`/`PGPORT`, else localhost:5432.
fn hosts_and_ports(
    parts: &mut UrlParts,
    env: &Env,
    has_hostaddr: bool,
) -> Result<(Vec<String>, Vec<u16>), String> {
    let (mut hosts, mut ports): (Vec<String>, Vec<Option<u16>>) =
        std::mem::take(&mut parts.hosts).into_iter().unzip();
    if let Some(h) = parts.take("host") {
        hosts = h.split(',').map(str::to_string).collect();
        ports.clear();
    }
    if let Some(p) = parts.take("port") {
        ports = p.split(',').map(parse_port).collect::<Result<_, _>>()?;
    }
    if hosts.is_empty() && !has_hostaddr {
        hosts = match &env.pghost {
            Some(h) => h.split(',').map(str::to_string).collect(),
            None => vec![DEFAULT_HOST.to_string()],
        };
    }
    if hosts.iter().any(String::is_empty) {
        return Err("a host in the list is empty".into());
    }
    let fallback = match &env.pgport {
        Some(p) => parse_port(p)
            .map_err(|e| format!("PGPORT: {e}"))?
            .unwrap_or(DEFAULT_PORT),
        None => DEFAULT_PORT,
    };
    let ports: Vec<u16> = if ports.is_empty() {
        vec![fallback]
    } else {
        ports.into_iter().map(|p| p.unwrap_or(fallback)).collect()
    };
    if ports.len() > 1 && ports.len() != hosts.len() {
        return Err(format!(
            "{} ports for {} hosts: give one port, or one for each host",
            ports.len(),
            hosts.len()
        ));
    }
    Ok((hosts, ports))
}

fn build(url: &str, env: &Env) -> Result<Connector, String> {
    let mut parts = split_url(url)?;
    let mut wish = take_tls_wish(&mut parts)?;
    let passfile = parts.take("passfile").filter(|s| !s.is_empty());
    let has_hostaddr = parts.params.iter().any(|(k, _)| k == "hostaddr");
    let (hosts, ports) = hosts_and_ports(&mut parts, env, has_hostaddr)?;
    check_params(&parts)?;
    let mut config = postgres::Config::from_str(&tokio_url(&parts)).map_err(|e| {
        // Its messages name options, never values; still, no password can be in them.
        error_chain(&e).replace("invalid connection string: ", "")
    })?;
    for h in &hosts {
        config.host(h);
    }
    for p in &ports {
        config.port(*p);
    }
    let user = match config.get_user().filter(|u| !u.is_empty()) {
        Some(u) => u.to_string(),
        None => env.pguser.clone().or_else(|| env.os_user.clone()).ok_or(
            "the URL names no user, PGUSER is unset and the system's user name is unknown",
        )?,
    };
    config.user(&user);
    let dbname = config.get_dbname().unwrap_or(&user).to_string();
    config.dbname(&dbname);
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    let (tls, verify) = if sockets_only(&hosts) {
        // libpq never uses TLS over a Unix socket, whatever sslmode says;
        // tokio-postgres would ask the server for it there and be refused.
        config.ssl_mode(SslMode::Disable);
        (plain_connector()?, Verify::Nothing)
    } else {
        let (tls, verify) = tls_connector(&mut wish, env.home.as_deref())?;
        config.ssl_mode(wish.mode.tokio());
        (tls, verify)
    };

    let host = match hosts.first() {
        Some(h) => h.clone(),
        None => config
            .get_hostaddrs()
            .first()
            .map_or(DEFAULT_HOST.to_string(), |a| a.to_string()),
    };
    let port = ports.first().copied().unwrap_or(DEFAULT_PORT);
    let address = Address {
        host,
        port,
        dbname,
        user,
    };
    let password_source = password(&mut config, &address, env, passfile.map(PathBuf::from));
    Ok(Connector {
        url_names_application: config.get_application_name().is_some(),
        schema: config.get_options().and_then(schema_from_options),
        address,
        config,
        tls,
        ssl_mode: wish.mode,
        verify,
        password_source,
        home: env.home.clone(),
    })
}

/// Sets the password from the URL, `PGPASSWORD` or the password file, in that
/// order (an empty one counts as none, as in libpq), and says where it came from.
fn password(
    config: &mut postgres::Config,
    address: &Address,
    env: &Env,
    passfile: Option<PathBuf>,
) -> Option<PasswordSource> {
    if config.get_password().is_some_and(|p| !p.is_empty()) {
        return Some(PasswordSource::Url);
    }
    if let Some(p) = &env.pgpassword {
        config.password(p.as_bytes());
        return Some(PasswordSource::PgPassword);
    }
    let path = passfile
        .or_else(|| env.pgpassfile.clone())
        .or_else(|| env.home.as_ref().map(|h| h.join(".pgpass")))?;
    match read_passfile(&path) {
        PassFile::Text(text) => {
            let port = address.port.to_string();
            let wanted = PassQuery {
                host: passfile_host(&address.host),
                port: &port,
                dbname: &address.dbname,
                user: &address.user,
            };
            match find_password(&text, &wanted) {
                Some((line, password)) => {
                    config.password(password.as_bytes());
                    Some(PasswordSource::PassFile { path, line })
                }
                None => Some(PasswordSource::Nowhere {
                    passfile: path,
                    unsafe_file: false,
                }),
            }
        }
        PassFile::Unsafe => Some(PasswordSource::Nowhere {
            passfile: path,
            unsafe_file: true,
        }),
        PassFile::Absent => Some(PasswordSource::Nowhere {
            passfile: path,
            unsafe_file: false,
        }),
    }
}

/// The host name a password file line must match: `localhost` for libpq's
/// default socket folder, as libpq does.
fn passfile_host(host: &str) -> &str {
    if DEFAULT_SOCKET_DIRS.contains(&host.trim_end_matches('/')) {
        DEFAULT_HOST
    } else {
        host
    }
}

enum PassFile {
    Text(String),
    /// Group or others may read or write it: libpq will not use it, nor will we.
    Unsafe,
    /// Missing, not a plain file, or unreadable.
    Absent,
}

fn read_passfile(path: &Path) -> PassFile {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return PassFile::Absent;
    };
    if !meta.is_file() {
        return PassFile::Absent;
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return PassFile::Unsafe;
    }
    match std::fs::read(path) {
        Ok(bytes) => PassFile::Text(String::from_utf8_lossy(&bytes).into_owned()),
        Err(_) => PassFile::Absent,
    }
}

/// What a password file line must match.
struct PassQuery<'a> {
    host: &'a str,
    port: &'a str,
    dbname: &'a str,
    user: &'a str,
}

/// libpq's rules: `host:port:database:user:password`, `*` matches anything,
/// `\:` and `\\` escape, comment lines start with `#`, the first match wins.
/// Returns the line number (from 1) and the password.
fn find_password(text: &str, wanted: &PassQuery) -> Option<(usize, String)> {
    text.lines().enumerate().find_map(|(i, line)| {
        if line.starts_with('#') || line.is_empty() {
            return None;
        }
        let rest = match_field(line, wanted.host)?;
        let rest = match_field(rest, wanted.port)?;
        let rest = match_field(rest, wanted.dbname)?;
        let rest = match_field(rest, wanted.user)?;
        Some((i + 1, unescape_password(rest)))
    })
}

/// If the line's first field matches `token`, the rest of the line after its `:`.
/// A translation of libpq's `pwdfMatchesString`.
fn match_field<'a>(line: &'a str, token: &str) -> Option<&'a str> {
    if let Some(rest) = line.strip_prefix("*:") {
        return Some(rest);
    }
    let (b, tok) = (line.as_bytes(), token.as_bytes());
    let (mut i, mut t) = (0, 0);
    while i < b.len() {
        let mut escaped = false;
        if b[i] == b'\\' {
            i += 1;
            escaped = true;
        }
        let c = *b.get(i)?;
        if c == b':' && t == tok.len() && !escaped {
            return Some(&line[i + 1..]);
        }
        if tok.get(t) != Some(&c) {
            return None;
        }
        i += 1;
        t += 1;
    }
    None
}

/// The password field: up to an unescaped `:`, with `\x` read as `x`.
fn unescape_password(field: &str) -> String {
    let mut out = String::new();
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ':' => break,
            '\\' => match chars.next() {
                Some(next) => out.push(next),
                None => out.push('\\'),
            },
            _ => out.push(c),
        }
    }
    out
}

/// The first schema of the last `search_path` set in `options`
/// (`-csearch_path=a,b`, `-c search_path=a` or `--search_path=a`).
fn schema_from_options(options: &str) -> Option<String> {
    let words = option_words(options);
    let mut found = None;
    let mut it = words.iter();
    while let Some(word) = it.next() {
        let setting = if word == "-c" {
            it.next().map(String::as_str)
        } else {
            word.strip_prefix("-c").or_else(|| word.strip_prefix("--"))
        };
        if let Some(list) = setting.and_then(|s| s.strip_prefix("search_path=")) {
            found = first_schema(list);
        }
    }
    found
}

/// `options` split on spaces, `\ ` keeping a space and `\\` a backslash, as the
/// server reads it.
fn option_words(options: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// The first name of a `search_path` list: `"Foo"` is `Foo` (`""` a quote);
/// an unquoted name is folded to lower case, as the server folds it.
fn first_schema(list: &str) -> Option<String> {
    let list = list.trim_start();
    if let Some(quoted) = list.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = quoted.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    name.push('"');
                } else {
                    break;
                }
            } else {
                name.push(c);
            }
        }
        return (!name.is_empty()).then_some(name);
    }
    let name = list.split(',').next()?.trim();
    (!name.is_empty()).then(|| name.to_lowercase())
}

#[cfg(test)]
mod tests;
