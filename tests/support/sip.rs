//! The real phone system for the end-to-end tests of SPEC section 11 (issue 19):
//! Debian's `kamailio` as the SIP registrar, reading the `subscriber` relation that
//! pbxsync publishes, and SIPp (`sipp`, package `sip-tester`) as the phone that sends
//! REGISTER. The recipe, and why each flag, is `examples/kamailio/NOTES.md`; the
//! configuration and the SIPp scenario are the ones in `examples/kamailio/`.
//!
//! Every process started here is stopped again, also when the test fails: Kamailio by
//! the `Kamailio` guard's `Drop` (SIGTERM, a bounded wait, then SIGKILL to its process
//! group), SIPp by a bounded wait in `register` (killed when it overruns). Every wait
//! is a bounded poll; nothing sleeps for a fixed time to let something happen.
//!
//! When the programs are missing, `available` says SKIPPED loudly, or fails the test
//! when `CI` is set (`.ci/run` installs them and sets it); `PBXSYNC_SKIP_SIP=1`
//! skips them in any case.

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Set to `1` to skip the SIP tests even where the programs are installed.
pub const SKIP_VAR: &str = "PBXSYNC_SKIP_SIP";

/// The SIP domain the tests publish (`publish.kamailio.domain`) and register in.
pub const DOMAIN: &str = "pbx.example.com";

/// Where Debian puts Kamailio's modules; `examples/kamailio/kamailio.cfg` sets `mpath`
/// to it.
const MODULES: &str = "/usr/lib/x86_64-linux-gnu/kamailio/modules";

/// The packages that hold the programs and modules the tests need.
const PACKAGES: &str = "kamailio kamailio-sqlite-modules kamailio-postgres-modules sip-tester";

/// How long Kamailio may take to answer its first OPTIONS, and to stop.
const PATIENCE: Duration = Duration::from_secs(30);

/// How long one SIPp run may take (it stops itself after 5 s with `-timeout`).
const SIPP_PATIENCE: Duration = Duration::from_secs(30);

/// Whether the SIP tests can run: true when `kamailio`, `sipp` and the modules are
/// there. Otherwise false with a loud SKIPPED line, or a panic when `CI` is set
/// (CI installs the programs, so missing ones are a broken CI, not a skip).
pub fn available(test: &str) -> bool {
    if std::env::var(SKIP_VAR).is_ok_and(|v| v == "1") {
        super::pg::skipped(test, &format!("{SKIP_VAR}=1"));
        return false;
    }
    let missing = missing();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "missing {}; install the Debian packages {PACKAGES} (`.ci/run` does)",
        missing.join(", ")
    );
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(
        !ci,
        "{test}: {why}. CI is set, so this fails instead of skipping ({SKIP_VAR}=1 skips)"
    );
    super::pg::skipped(test, &why);
    false
}

/// What is missing of the programs and modules, named for the message.
fn missing() -> Vec<String> {
    let mut missing = Vec::new();
    for program in ["kamailio", "sipp"] {
        if program_path(program).is_none() {
            missing.push(format!("`{program}`"));
        }
    }
    for module in ["db_sqlite.so", "db_postgres.so", "auth_db.so"] {
        if !Path::new(MODULES).join(module).is_file() {
            missing.push(format!("{MODULES}/{module}"));
        }
    }
    missing
}

/// A program on `PATH`, or in the `sbin` directories (where Debian puts `kamailio`,
/// not always on a user's `PATH`).
fn program_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn example(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/kamailio")
        .join(file)
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind a UDP port")
        .port()
}

/// The database Kamailio authenticates against.
pub enum Db<'a> {
    /// pbxsync's SQLite state file (absolute path), opened read-only.
    Sqlite(&'a Path),
    /// A PostgreSQL URL as `db_postgres` takes it (`postgres://user[:pw]@host:port/db`,
    /// no query) and the relation's name, e.g. `<schema>.subscriber`.
    Postgres { url: &'a str, table: &'a str },
}

/// A running Kamailio (the registrar of `examples/kamailio/kamailio.cfg`) on
/// 127.0.0.1, UDP. Dropping it stops it.
pub struct Kamailio {
    child: Child,
    /// Its UDP port on 127.0.0.1.
    pub port: u16,
    /// Runtime and working directory, pid file, and `kamailio.log` (its stderr).
    dir: tempfile::TempDir,
}

impl Kamailio {
    /// Starts Kamailio on `port` against `db` and waits until it answers OPTIONS
    /// with 200 (a bounded poll, checking that the process is still alive: it exits,
    /// with status 0, when it cannot open the database).
    pub fn start(port: u16, db: Db) -> Kamailio {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = std::fs::File::create(dir.path().join("kamailio.log")).expect("log file");
        let mut cmd = Command::new(program_path("kamailio").expect("kamailio"));
        cmd.arg("-f")
            .arg(example("kamailio.cfg"))
            .args(["-DD", "-E", "-m", "64", "-M", "8"])
            .arg("-w")
            .arg(dir.path())
            .arg("-Y")
            .arg(dir.path())
            .arg("-P")
            .arg(dir.path().join("kamailio.pid"))
            .arg("-l")
            .arg(format!("udp:127.0.0.1:{port}"));
        match db {
            Db::Sqlite(file) => {
                assert!(file.is_absolute(), "{} is not absolute", file.display());
                // Four slashes: `sqlite:///` and the absolute path's own (NOTES.md).
                cmd.arg("-A")
                    .arg(format!("DBURL=\"sqlite:///{}\"", file.display()))
                    .arg("-A")
                    .arg(format!("SQLITE_READONLY=\"{}\"", file.display()));
            }
            Db::Postgres { url, table } => {
                cmd.args(["-A", "WITH_POSTGRES", "-A"])
                    .arg(format!("DBURL=\"{url}\""))
                    .arg("-A")
                    .arg(format!("SUBSCRIBER_TABLE=\"{table}\""));
            }
        }
        // Its own process group, so that a SIGKILL reaches the workers too.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn kamailio");
        let mut k = Kamailio { child, port, dir };
        k.wait_ready();
        k
    }

    /// Polls with OPTIONS until a `SIP/2.0 200` comes back.
    fn wait_ready(&mut self) {
        let probe = UdpSocket::bind("127.0.0.1:0").expect("bind the probe");
        probe
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let local = probe.local_addr().expect("probe address").port();
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        for n in 0.. {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "kamailio exited ({status}) before answering OPTIONS; its log:\n{}",
                    self.log()
                );
            }
            assert!(
                start.elapsed() < PATIENCE,
                "kamailio did not answer OPTIONS on 127.0.0.1:{} within {PATIENCE:?}; its log:\n{}",
                self.port,
                self.log()
            );
            let msg = format!(
                "OPTIONS sip:ping@127.0.0.1:{port} SIP/2.0\r\n\
                 Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK-probe{n}\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:probe@127.0.0.1>;tag=p{n}\r\n\
                 To: <sip:ping@127.0.0.1>\r\n\
                 Call-ID: probe-{n}@127.0.0.1\r\n\
                 CSeq: 1 OPTIONS\r\n\
                 Content-Length: 0\r\n\r\n",
                port = self.port
            );
            // A refused send (nothing bound yet: ICMP port unreachable) or a timeout
            // is "not yet"; the loop checks the process and the deadline again.
            if probe
                .send_to(msg.as_bytes(), ("127.0.0.1", self.port))
                .is_ok()
                && let Ok(len) = probe.recv(&mut buf)
                && buf[..len].starts_with(b"SIP/2.0 200")
            {
                return;
            }
        }
    }

    /// What Kamailio logged so far (its stderr and stdout).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kamailio.log")).unwrap_or_default()
    }

    /// The last lines of the log, for assertion messages.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// REGISTER as `user` with `secret` (auth user = `user`) in `DOMAIN`.
    pub fn register(&self, user: &str, secret: &str) -> Registration {
        register(self.port, DOMAIN, user, secret)
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's,
        // not yet reaped (try_wait said it runs), so it cannot have been reused.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < PATIENCE {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above; the negative pid names the process group it leads.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// What the registrar answered to a REGISTER with credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// 200 after the digest challenge (SIPp exit 0).
    Registered,
    /// 401 again, 403 or 404 after the credentials (SIPp exit 97).
    Refused,
}

/// REGISTER as `user` (the auth user too) with `secret` in `domain` at
/// 127.0.0.1:`port`, with SIPp and `examples/kamailio/register.xml`. Panics with
/// SIPp's output on any other outcome (no answer, an unexpected response).
pub fn register(port: u16, domain: &str, user: &str, secret: &str) -> Registration {
    register_as(port, domain, user, user, secret)
}

/// As `register`, with an auth user of its own (a phone's `auth_name`).
pub fn register_as(port: u16, domain: &str, user: &str, auth: &str, secret: &str) -> Registration {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = std::fs::File::create(dir.path().join("sipp.out")).expect("sipp.out");
    let err = std::fs::File::create(dir.path().join("sipp.err")).expect("sipp.err");
    let mut child = Command::new(program_path("sipp").expect("sipp"))
        .arg("-sf")
        .arg(example("register.xml"))
        .args(["-m", "1", "-nostdin", "-timeout", "5s", "-timeout_error"])
        .args(["-recv_timeout", "2000", "-i", "127.0.0.1", "-p"])
        .arg(free_udp_port().to_string())
        .args([
            "-key", "domain", domain, "-s", user, "-au", auth, "-ap", secret,
        ])
        .arg(format!("127.0.0.1:{port}"))
        // SIPp writes trace and error files into its working directory.
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn sipp");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if start.elapsed() > SIPP_PATIENCE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let output = || {
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
        format!(
            "stderr:\n{}\nstdout (tail):\n{}",
            read("sipp.err"),
            read("sipp.out")
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        )
    };
    match status.and_then(|s| s.code()) {
        Some(0) => Registration::Registered,
        Some(97) => Registration::Refused,
        Some(code) => panic!(
            "sipp REGISTER {user} at 127.0.0.1:{port}: exit {code} (1 = no answer or an unexpected response)\n{}",
            output()
        ),
        None => panic!(
            "sipp REGISTER {user} at 127.0.0.1:{port} did not end within {SIPP_PATIENCE:?} or was killed by a signal ({status:?})\n{}",
            output()
        ),
    }
}

/// What a desk phone reads from its provisioning file: account 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phone {
    /// `account.1.user_name`: the extension.
    pub user: String,
    /// `account.1.auth_name`.
    pub auth: String,
    /// `account.1.password`: the SIP secret.
    pub secret: String,
    /// `account.1.sip_server.1.address`.
    pub host: String,
    /// `account.1.sip_server.1.port`.
    pub port: u16,
}

impl Phone {
    /// Reads a Yealink file (`key = value` lines); panics naming the file and what
    /// it lacks.
    pub fn yealink(file: &Path) -> Phone {
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let get = |key: &str| -> String {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_else(|| panic!("no `{key}` in {}:\n{text}", file.display()))
        };
        let port = get("account.1.sip_server.1.port");
        Phone {
            user: get("account.1.user_name"),
            auth: get("account.1.auth_name"),
            secret: get("account.1.password"),
            host: get("account.1.sip_server.1.address"),
            port: port
                .parse()
                .unwrap_or_else(|_| panic!("port {port:?} in {}", file.display())),
        }
    }

    /// Reads a Polycom file (`PHONE_CONFIG` XML, `reg.1.*="…"` attributes); panics
    /// naming the file and what it lacks.
    pub fn polycom(file: &Path) -> Phone {
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let get = |key: &str| -> String {
            let start = format!("{key}=\"");
            text.lines()
                .map(str::trim)
                .find_map(|l| l.strip_prefix(start.as_str()))
                .and_then(|rest| rest.split_once('"'))
                .map(|(value, _)| xml_unescape(value))
                .unwrap_or_else(|| panic!("no `{key}` in {}:\n{text}", file.display()))
        };
        let port = get("reg.1.server.1.port");
        Phone {
            user: get("reg.1.address"),
            auth: get("reg.1.auth.userId"),
            secret: get("reg.1.auth.password"),
            host: get("reg.1.server.1.address"),
            port: port
                .parse()
                .unwrap_or_else(|_| panic!("port {port:?} in {}", file.display())),
        }
    }

    /// (extension, secret), as the brief of a test wants them.
    pub fn credentials(&self) -> (String, String) {
        (self.user.clone(), self.secret.clone())
    }

    /// REGISTER the way the phone does: at the server its file names, as its user,
    /// with its auth user and secret, in `domain`.
    pub fn register(&self, domain: &str) -> Registration {
        assert_eq!(self.host, "127.0.0.1", "the tests' SIP server is 127.0.0.1");
        register_as(self.port, domain, &self.user, &self.auth, &self.secret)
    }
}

/// The five predefined XML entities replaced by their characters.
fn xml_unescape(value: &str) -> String {
    value
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// `url` (a libpq URL) as `db_postgres` takes it: without the query (`?options=…`).
pub fn postgres_url(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_string()
}
