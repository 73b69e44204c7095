//! Tests of the URL handling, the password file and, when
//! `PBXSYNC_TEST_POSTGRES` names a server, real connections.

use super::*;
use std::os::unix::fs::PermissionsExt;

/// An environment with nothing set but the system's user name, and a home
/// where nothing is, so that the machine's own `~/.pgpass` plays no part.
fn env() -> Env {
    Env {
        os_user: Some("osuser".into()),
        home: Some(PathBuf::from("/nonexistent-home")),
        ..Env::default()
    }
}

fn parse(url: &str) -> Connector {
    match Connector::parse_with(url, &env()) {
        Ok(c) => c,
        Err(e) => panic!("{url}: {e}"),
    }
}

fn parse_err(url: &str, env: &Env) -> String {
    match Connector::parse_with(url, env) {
        Ok(c) => panic!("{url} parsed: {c:?}"),
        Err(e) => e.to_string(),
    }
}

fn address(host: &str, port: u16, dbname: &str, user: &str) -> Address {
    Address {
        host: host.into(),
        port,
        dbname: dbname.into(),
        user: user.into(),
    }
}

fn password_of(c: &Connector) -> Option<String> {
    c.config
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned())
}

// ---- the URL ----

#[test]
fn a_full_url_is_read_as_written() {
    let c = parse("postgresql://alice:secret@db.example:6543/pbx");
    assert_eq!(c.address(), &address("db.example", 6543, "pbx", "alice"));
    assert_eq!(password_of(&c).as_deref(), Some("secret"));
    assert_eq!(c.password_source(), Some(&PasswordSource::Url));
    assert_eq!(c.ssl_mode(), SslModeName::Prefer);
    assert_eq!(
        c.config.get_connect_timeout(),
        Some(&DEFAULT_CONNECT_TIMEOUT)
    );
}

#[test]
fn what_the_url_lacks_comes_from_the_environment() {
    let env = Env {
        pguser: Some("envuser".into()),
        pghost: Some("envhost".into()),
        pgport: Some("7000".into()),
        ..env()
    };
    let c = Connector::parse_with("postgres://", &env).unwrap();
    assert_eq!(c.address(), &address("envhost", 7000, "envuser", "envuser"));
    assert_eq!(c.config.get_ports(), &[7000]);

    // The URL's own values win over the environment.
    let c = Connector::parse_with("postgres://u@h:5999/d", &env).unwrap();
    assert_eq!(c.address(), &address("h", 5999, "d", "u"));

    // A host without a port takes PGPORT, as in libpq.
    let c = Connector::parse_with("postgres://u@h/d", &env).unwrap();
    assert_eq!(c.address().port, 7000);
}

#[test]
fn without_the_environment_the_defaults_are_libpqs() {
    let c = parse("postgres:///");
    assert_eq!(c.address(), &address("localhost", 5432, "osuser", "osuser"));
    let c = parse("postgres://bob@");
    assert_eq!(c.address(), &address("localhost", 5432, "bob", "bob"));
}

#[test]
fn query_parameters_host_and_port_win_over_the_authority() {
    let c = parse("postgres://u@ignored:1/d?host=%2Fvar%2Frun%2Fpostgresql&port=5433");
    assert_eq!(c.address(), &address("/var/run/postgresql", 5433, "d", "u"));
    let c = parse("postgres://u@/d?host=/tmp");
    assert_eq!(c.address().host, "/tmp");
}

#[test]
fn several_hosts_and_ipv6_are_read() {
    let c = parse("postgres://u@a:1,b:2,[::1]:3/d");
    assert_eq!(c.config.get_hosts().len(), 3);
    assert_eq!(c.config.get_ports(), &[1, 2, 3]);
    assert_eq!(c.address(), &address("a", 1, "d", "u"));
    let c = parse("postgres://u@[::1]/d");
    assert_eq!(c.address(), &address("::1", 5432, "d", "u"));
}

#[test]
fn percent_encoding_is_decoded() {
    let c = parse(
        "postgres://us%40er:p%40ss%3Aw@h/my%20db?options=-csearch_path%3Dfoo&application_name=a%26b",
    );
    assert_eq!(c.address(), &address("h", 5432, "my db", "us@er"));
    assert_eq!(password_of(&c).as_deref(), Some("p@ss:w"));
    assert_eq!(c.config.get_options(), Some("-csearch_path=foo"));
    assert_eq!(c.config.get_application_name(), Some("a&b"));
    assert_eq!(c.schema(), Some("foo"));
}

#[test]
fn libpq_parameters_pass_through() {
    let c = parse(
        "postgres://u@h/d?connect_timeout=3&keepalives=0&target_session_attrs=read-write\
         &channel_binding=disable&application_name=x",
    );
    assert_eq!(
        c.config.get_connect_timeout(),
        Some(&Duration::from_secs(3))
    );
    assert!(!c.config.get_keepalives());
    assert!(c.url_names_application);
    assert!(!parse("postgres://u@h/d").url_names_application);
}

#[test]
fn unknown_parameters_are_named() {
    let e = parse_err("postgres://u:pw@h/d?frobnicate=1", &env());
    assert!(e.contains("unknown parameter `frobnicate`"), "{e}");
    assert!(
        e.contains("invalid PostgreSQL URL postgres://***@h/d"),
        "{e}"
    );
    let e = parse_err("postgres://u@h/d?sslmode=sometimes", &env());
    assert!(e.contains("sslmode `sometimes`"), "{e}");
    let e = parse_err("mysql://u@h/d", &env());
    assert!(e.contains("postgres://"), "{e}");
    let e = parse_err("postgres://u@h:99999/d", &env());
    assert!(e.contains("port `99999`"), "{e}");
    let e = parse_err("postgres://u@h/d?connect_timeout=soon", &env());
    assert!(e.contains("connect_timeout"), "{e}");
}

#[test]
fn errors_and_debug_never_show_the_password() {
    let secret = "Sup3rS3cret";
    let urls = [
        format!("postgres://u:{secret}@h/d?frobnicate=1"),
        format!("postgres://u:{secret}@h:notaport/d"),
        format!("postgres://u:{secret}@h/d?sslmode=nope"),
        format!("postgres://u:{secret}@h/d?connect_timeout=x"),
        format!("postgres://u:{secret}@h/d?sslrootcert=/nonexistent.crt&sslmode=verify-ca"),
        format!("postgres://u@h/d?password={secret}&frobnicate=1"),
        format!("postgres://u@h/d?{secret}"),
        format!("postgres://u@h/d?password{secret}=1"),
    ];
    for url in &urls {
        let e = Connector::parse_with(url, &env()).unwrap_err();
        let text = format!("{e} {e:?}");
        assert!(!text.contains(secret), "{url}: {text}");
    }
    let c = parse(&format!("postgres://u:{secret}@h/d"));
    assert!(!format!("{c:?}").contains(secret));
    let env = Env {
        pgpassword: Some(secret.into()),
        ..env()
    };
    assert!(!format!("{env:?}").contains(secret));
}

// ---- the password ----

#[test]
fn pgpassword_is_used_when_the_url_has_none() {
    let env = Env {
        pgpassword: Some("frompg".into()),
        ..env()
    };
    let c = Connector::parse_with("postgres://u@h/d", &env).unwrap();
    assert_eq!(password_of(&c).as_deref(), Some("frompg"));
    assert_eq!(c.password_source(), Some(&PasswordSource::PgPassword));
    // An empty URL password counts as none, as in libpq.
    let c = Connector::parse_with("postgres://u:@h/d", &env).unwrap();
    assert_eq!(c.password_source(), Some(&PasswordSource::PgPassword));
    let c = Connector::parse_with("postgres://u:url@h/d", &env).unwrap();
    assert_eq!(password_of(&c).as_deref(), Some("url"));
}

fn passfile(dir: &Path, text: &str, mode: u32) -> PathBuf {
    let path = dir.join("pgpass");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn the_password_file_is_read_with_libpqs_rules() {
    let dir = tempfile::tempdir().unwrap();
    let text = "# comment\n\
                other:5432:*:u:wrong\n\
                h:5432:d:u:first\\:with\\\\escapes:trailing\n\
                *:*:*:*:second\n";
    let env = Env {
        pgpassfile: Some(passfile(dir.path(), text, 0o600)),
        ..env()
    };
    let c = Connector::parse_with("postgres://u@h/d", &env).unwrap();
    assert_eq!(password_of(&c).as_deref(), Some("first:with\\escapes"));
    assert_eq!(
        c.password_source(),
        Some(&PasswordSource::PassFile {
            path: env.pgpassfile.clone().unwrap(),
            line: 3
        })
    );
    let c = Connector::parse_with("postgres://u@h:5433/d", &env).unwrap();
    assert_eq!(password_of(&c).as_deref(), Some("second"));
    // The URL's `passfile` wins over PGPASSFILE.
    let c = Connector::parse_with("postgres://u@h/d?passfile=/nonexistent", &env).unwrap();
    assert_eq!(password_of(&c), None);
}

#[test]
fn password_file_fields_match_as_libpq_matches_them() {
    let q = PassQuery {
        host: "db:1",
        port: "5432",
        dbname: "*",
        user: "u",
    };
    // `\:` in a field matches a colon; a literal `*` needs no escape to match `*`.
    assert_eq!(
        find_password("db\\:1:5432:*:u:pw", &q),
        Some((1, "pw".into()))
    );
    // libpq matches an unescaped `:` against a `:` of the host too.
    assert_eq!(
        find_password("db:1:5432:*:u:pw", &q),
        Some((1, "pw".into()))
    );
    // `*` only as a whole field; `d*` is a literal.
    let q = PassQuery {
        host: "h",
        port: "5432",
        dbname: "db",
        user: "u",
    };
    assert_eq!(find_password("h:5432:d*:u:pw", &q), None);
    assert_eq!(find_password("h:5432:db:u", &q), None);
    assert_eq!(find_password("h:5432:db:u:", &q), Some((1, String::new())));
    assert_eq!(
        find_password("h:5432:db:u:p\\", &q),
        Some((1, "p\\".into()))
    );
    assert_eq!(match_field("*:rest", "anything"), Some("rest"));
    assert_eq!(match_field("ab:rest", "a"), None);
    assert_eq!(match_field("a:rest", "ab"), None);
}

#[test]
fn localhost_in_the_password_file_covers_the_default_socket() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env {
        pgpassfile: Some(passfile(dir.path(), "localhost:5432:*:u:sock\n", 0o600)),
        ..env()
    };
    let c = Connector::parse_with("postgres://u@%2Fvar%2Frun%2Fpostgresql/d", &env).unwrap();
    assert_eq!(password_of(&c).as_deref(), Some("sock"));
    let c = Connector::parse_with("postgres://u@/d", &env).unwrap();
    assert_eq!(password_of(&c).as_deref(), Some("sock"));
    let c = Connector::parse_with("postgres://u@127.0.0.1/d", &env).unwrap();
    assert_eq!(password_of(&c), None);
}

#[test]
fn a_password_file_others_may_read_is_not_used() {
    let dir = tempfile::tempdir().unwrap();
    let path = passfile(dir.path(), "*:*:*:*:leaked\n", 0o644);
    let env = Env {
        pgpassfile: Some(path.clone()),
        ..env()
    };
    let c = Connector::parse_with("postgres://u@h/d", &env).unwrap();
    assert_eq!(password_of(&c), None);
    assert_eq!(
        c.password_source(),
        Some(&PasswordSource::Nowhere {
            passfile: path,
            unsafe_file: true
        })
    );
    assert!(
        c.password_hint().contains("chmod 0600"),
        "{}",
        c.password_hint()
    );
}

#[test]
fn the_default_password_file_is_under_home() {
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join(".pgpass");
    std::fs::write(&path, "*:*:*:*:homepw\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let with_home = Env {
        home: Some(home.path().to_path_buf()),
        ..env()
    };
    let c = Connector::parse_with("postgres://u@h/d", &with_home).unwrap();
    assert_eq!(password_of(&c).as_deref(), Some("homepw"));
    assert_eq!(c.password_hint(), "the password came from ~/.pgpass line 1");
    let c = Connector::parse_with("postgres://u@h/d", &env()).unwrap();
    assert_eq!(
        c.password_hint(),
        "no password was found in the URL, PGPASSWORD or ~/.pgpass"
    );
}

// ---- search_path ----

#[test]
fn the_schema_is_the_first_of_search_path() {
    let cases = [
        ("-csearch_path=foo", Some("foo")),
        ("-c search_path=foo", Some("foo")),
        ("-csearch_path=a,b", Some("a")),
        ("-csearch_path=\"Foo\",b", Some("Foo")),
        ("-csearch_path=\"a\"\"b\"", Some("a\"b")),
        ("-csearch_path=Mixed", Some("mixed")),
        ("--search_path=x", Some("x")),
        ("-cstatement_timeout=5 -csearch_path=s", Some("s")),
        ("-csearch_path=first -csearch_path=last", Some("last")),
        ("-cstatement_timeout=5", None),
        ("-csearch_path=", None),
    ];
    for (options, want) in cases {
        assert_eq!(schema_from_options(options).as_deref(), want, "{options}");
    }
    assert_eq!(parse("postgres://u@h/d").schema(), None);
    assert_eq!(
        parse("postgres://u@h/d?options=-c search_path=raw").schema(),
        Some("raw")
    );
    // The server splits `options` on spaces; `\ ` keeps one.
    let c = parse("postgres://u@h/d?options=-c%20search_path%3D%22My%5C%20Schema%22");
    assert_eq!(c.schema(), Some("My Schema"));
}

// ---- sslmode ----

#[test]
fn sslmode_is_read_as_libpq_reads_it() {
    let cases = [
        ("disable", SslMode::Disable, Verify::Nothing),
        ("allow", SslMode::Prefer, Verify::Nothing),
        ("prefer", SslMode::Prefer, Verify::Nothing),
        ("require", SslMode::Require, Verify::Nothing),
    ];
    for (mode, tokio_mode, verify) in cases {
        let c = parse(&format!("postgres://u@h/d?sslmode={mode}"));
        assert_eq!(c.ssl_mode().as_str(), mode);
        assert_eq!(c.config.get_ssl_mode(), tokio_mode, "{mode}");
        assert_eq!(c.verify(), verify, "{mode}");
    }
}

fn snakeoil() -> Option<&'static str> {
    let path = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    Path::new(path).exists().then_some(path)
}

/// A self-signed certificate and its key of our own, named `NAME.crt` and
/// `NAME.key`, so that these tests need no file of the machine.
fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    use openssl::{asn1::Asn1Time, hash::MessageDigest, pkey::PKey, rsa::Rsa, x509::X509Name};
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut subject = X509Name::builder().unwrap();
    subject.append_entry_by_text("CN", name).unwrap();
    let subject = subject.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&subject).unwrap();
    b.set_issuer_name(&subject).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    let cert_path = dir.join(format!("{name}.crt"));
    let key_path = dir.join(format!("{name}.key"));
    std::fs::write(&cert_path, b.build().to_pem().unwrap()).unwrap();
    std::fs::write(&key_path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    (cert_path, key_path)
}

fn root_cert_file(dir: &Path) -> PathBuf {
    self_signed(dir, "root").0
}

#[test]
fn verify_modes_are_stripped_and_need_a_root_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_cert_file(dir.path());
    let root = root.display();
    let c = parse(&format!(
        "postgres://u@h/d?sslmode=verify-ca&sslrootcert={root}"
    ));
    assert_eq!(
        (c.ssl_mode(), c.verify()),
        (SslModeName::VerifyCa, Verify::Chain)
    );
    assert_eq!(c.config.get_ssl_mode(), SslMode::Require);
    let c = parse(&format!(
        "postgres://u@h/d?sslrootcert={root}&sslmode=verify-full"
    ));
    assert_eq!(c.verify(), Verify::Full);
    // `require` with a root certificate checks the chain, as libpq does.
    let c = parse(&format!(
        "postgres://u@h/d?sslmode=require&sslrootcert={root}"
    ));
    assert_eq!(c.verify(), Verify::Chain);

    let e = parse_err("postgres://u@h/d?sslmode=verify-full", &env());
    assert!(
        e.contains("sslmode=verify-full") && e.contains("root.crt"),
        "{e}"
    );
    let e = parse_err(
        "postgres://u@h/d?sslmode=verify-ca&sslrootcert=/none.crt",
        &env(),
    );
    assert!(e.contains("sslrootcert `/none.crt` does not exist"), "{e}");
}

#[test]
fn the_default_root_certificate_is_under_home() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join(".postgresql")).unwrap();
    root_cert_file(&home.path().join(".postgresql"));
    let env = Env {
        home: Some(home.path().to_path_buf()),
        ..env()
    };
    let c = Connector::parse_with("postgres://u@h/d?sslmode=require", &env).unwrap();
    assert_eq!(c.verify(), Verify::Chain);
    let c = Connector::parse_with("postgres://u@h/d?sslmode=verify-full", &env).unwrap();
    assert_eq!(c.verify(), Verify::Full);
}

#[test]
fn sslrootcert_system_means_verify_full() {
    let c = parse("postgres://u@h/d?sslrootcert=system");
    assert_eq!(
        (c.ssl_mode(), c.verify()),
        (SslModeName::VerifyFull, Verify::Full)
    );
    let e = parse_err(
        "postgres://u@h/d?sslrootcert=system&sslmode=require",
        &env(),
    );
    assert!(e.contains("needs sslmode=verify-full"), "{e}");
}

#[test]
fn client_certificates_are_loaded_or_refused_clearly() {
    let e = parse_err(
        "postgres://u@h/d?sslcert=/none.crt&sslkey=/none.key",
        &env(),
    );
    assert!(e.contains("cannot use sslcert `/none.crt`"), "{e}");
    let e = parse_err("postgres://u@h/d?sslkey=/none.key", &env());
    assert!(e.contains("sslkey is given without sslcert"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "client");
    let (_, other_key) = self_signed(dir.path(), "other");
    let (cert, key, other_key) = (cert.display(), key.display(), other_key.display());
    let c = parse(&format!(
        "postgres://u@h/d?sslmode=require&sslcert={cert}&sslkey={key}"
    ));
    assert_eq!(c.verify(), Verify::Nothing);
    let e = parse_err(
        &format!("postgres://u@h/d?sslcert={cert}&sslkey={other_key}"),
        &env(),
    );
    assert!(e.contains("does not belong to sslcert"), "{e}");
}

#[test]
fn unix_sockets_never_use_tls() {
    let c = parse("postgres://u@%2Fvar%2Frun%2Fpostgresql/d?sslmode=verify-full");
    assert_eq!(c.ssl_mode(), SslModeName::VerifyFull);
    assert_eq!(c.config.get_ssl_mode(), SslMode::Disable);
    assert_eq!(c.verify(), Verify::Nothing);
}

// ---- a stand-in server that asks for a password ----

/// Serves one connection on a free local port: asks for a cleartext password
/// and, if one comes, refuses it as PostgreSQL refuses a wrong one.
fn password_refusing_server() -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let mut len = [0u8; 4];
        if stream.read_exact(&mut len).is_err() {
            return;
        }
        let mut startup = vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4)];
        let _ = stream.read_exact(&mut startup);
        // AuthenticationCleartextPassword.
        let _ = stream.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]);
        let mut head = [0u8; 5];
        if stream.read_exact(&mut head).is_err() {
            return;
        }
        let mut fields = Vec::new();
        for (code, value) in [
            (b'S', "FATAL"),
            (b'C', "28P01"),
            (b'M', "password authentication failed for user \"u\""),
        ] {
            fields.push(code);
            fields.extend_from_slice(value.as_bytes());
            fields.push(0);
        }
        fields.push(0);
        let mut message = vec![b'E'];
        message.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
        message.extend_from_slice(&fields);
        let _ = stream.write_all(&message);
    });
    port
}

#[test]
fn a_refused_password_says_where_it_came_from() {
    let port = password_refusing_server();
    let env = Env {
        pgpassword: Some("wrongpw".into()),
        ..env()
    };
    let url = format!("postgres://u@127.0.0.1:{port}/d?sslmode=disable");
    let e = Connector::parse_with(&url, &env)
        .unwrap()
        .connect("t")
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "PostgreSQL at 127.0.0.1:{port} refused user u for database d: password \
             authentication failed for user \"u\"; the password came from PGPASSWORD"
        )
    );
}

#[test]
fn a_missing_password_says_where_it_was_looked_for() {
    let port = password_refusing_server();
    let url = format!("postgres://u@127.0.0.1:{port}/d?sslmode=disable");
    let e = connect_err(&url).to_string();
    assert!(
        e.starts_with(&format!(
            "PostgreSQL at 127.0.0.1:{port} refused user u for database d: "
        )) && e.contains("the server asks for a password; no password")
            && e.contains("no password was found in the URL, PGPASSWORD or ~/.pgpass"),
        "{e}"
    );
}

// ---- a real server ----

/// The test server's URL, or `None` after saying loudly that the test is skipped.
fn server() -> Option<String> {
    match std::env::var("PBXSYNC_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "SKIPPED: PBXSYNC_TEST_POSTGRES is unset (e.g. \
                 postgres://postgres@127.0.0.1:5432/postgres); no real connection was tested"
            );
            None
        }
    }
}

/// The server's URL with `extra` parameters added.
fn with_params(url: &str, extra: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{extra}")
}

fn connect(url: &str) -> Result<postgres::Client, BackendError> {
    Connector::parse_with(url, &env())?.connect("pbxsync-test")
}

fn connect_err(url: &str) -> BackendError {
    match connect(url) {
        Ok(_) => panic!("{url} connected"),
        Err(e) => e,
    }
}

fn encrypted(client: &mut postgres::Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0)
}

#[test]
fn connects_and_selects() {
    let Some(url) = server() else { return };
    let mut client = connect(&url).unwrap();
    let one: i32 = client.query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(one, 1);
    let app: String = client
        .query_one("SHOW application_name", &[])
        .unwrap()
        .get(0);
    assert_eq!(app, "pbxsync-test");
    let mut client = connect(&with_params(&url, "application_name=mine")).unwrap();
    let app: String = client
        .query_one("SHOW application_name", &[])
        .unwrap()
        .get(0);
    assert_eq!(app, "mine");
}

#[test]
fn sslmode_require_encrypts_and_disable_does_not() {
    let Some(url) = server() else { return };
    let mut client = connect(&with_params(&url, "sslmode=require")).unwrap();
    assert!(encrypted(&mut client));
    let mut client = connect(&with_params(&url, "sslmode=disable")).unwrap();
    assert!(!encrypted(&mut client));
}

/// The test server asks for no client certificate; offering one must not
/// get in the way.
#[test]
fn a_client_certificate_can_be_offered() {
    let Some(url) = server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "client");
    let url = with_params(
        &url,
        &format!(
            "sslmode=require&sslcert={}&sslkey={}",
            cert.display(),
            key.display()
        ),
    );
    assert!(encrypted(&mut connect(&url).unwrap()));
}

#[test]
fn search_path_options_reach_the_server() {
    let Some(url) = server() else { return };
    let mut client = connect(&with_params(&url, "options=-csearch_path%3Dpbx_test")).unwrap();
    let path: String = client.query_one("SHOW search_path", &[]).unwrap().get(0);
    assert_eq!(path, "pbx_test");
}

/// The snakeoil certificate is for `localhost` alone: checked by address it
/// fails the name check, by chain only it passes.
#[test]
fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
    let Some(url) = server() else { return };
    let Some(cert) = snakeoil() else {
        eprintln!("SKIPPED: no /etc/ssl/certs/ssl-cert-snakeoil.pem");
        return;
    };
    let c = Connector::parse_with(&url, &env()).unwrap();
    if c.address().host != "127.0.0.1" {
        eprintln!("SKIPPED: the verify test expects the server at 127.0.0.1");
        return;
    }
    let full = with_params(&url, &format!("sslmode=verify-full&sslrootcert={cert}"));
    let e = connect_err(&full).to_string();
    assert!(
        e.contains("cannot open a TLS session with PostgreSQL at 127.0.0.1")
            && e.contains("sslmode=verify-full")
            && e.contains("certificate"),
        "{e}"
    );
    let ca = with_params(&url, &format!("sslmode=verify-ca&sslrootcert={cert}"));
    assert!(encrypted(&mut connect(&ca).unwrap()));
    let by_name = with_params(&url, &format!("sslmode=verify-full&sslrootcert={cert}"))
        .replace("127.0.0.1", "localhost");
    assert!(encrypted(&mut connect(&by_name).unwrap()));
}

#[test]
fn a_root_certificate_that_did_not_sign_is_refused() {
    let Some(url) = server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let root = root_cert_file(dir.path());
    let url = with_params(
        &url,
        &format!("sslmode=verify-ca&sslrootcert={}", root.display()),
    );
    let e = connect_err(&url).to_string();
    assert!(
        e.contains("sslmode=verify-ca") && e.contains("certificate"),
        "{e}"
    );
}

#[test]
fn an_unreachable_port_says_where() {
    if server().is_none() {
        return;
    }
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let e = connect_err(&format!("postgres://postgres:pw@127.0.0.1:{port}/pbxdb")).to_string();
    assert!(
        e.contains(&format!(
            "cannot connect to PostgreSQL at 127.0.0.1:{port} (database pbxdb)"
        )) && e.contains("connection refused"),
        "{e}"
    );
    assert!(!e.contains(":pw"), "{e}");
}

#[test]
fn an_unknown_role_is_refused() {
    let Some(url) = server() else { return };
    let c = Connector::parse_with(&url, &env()).unwrap();
    let a = c.address();
    let url = format!(
        "postgres://no_such_role_pbx:secretpw@{}:{}/{}",
        a.host, a.port, a.dbname
    );
    let e = connect_err(&url).to_string();
    assert!(
        e.contains(&format!(
            "PostgreSQL at {}:{} refused user no_such_role_pbx for database {}",
            a.host, a.port, a.dbname
        )) && e.contains("no_such_role_pbx")
            && e.contains("the password came from the URL"),
        "{e}"
    );
    assert!(!e.contains("secretpw"), "{e}");
}

#[test]
fn a_missing_database_is_refused() {
    let Some(url) = server() else { return };
    let c = Connector::parse_with(&url, &env()).unwrap();
    let a = c.address();
    let url = format!("postgres://{}@{}:{}/no_such_db_pbx", a.user, a.host, a.port);
    let e = connect_err(&url).to_string();
    assert!(
        e.contains("refused user") && e.contains("no_such_db_pbx"),
        "{e}"
    );
}
