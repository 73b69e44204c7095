//! The phones on the other end (SPEC section 11, issue 19), end to end with the real
//! programs: pbxsync applies a CSV with `publish.kamailio` and `publish.provision`;
//! Debian's Kamailio authenticates REGISTER against the `subscriber` relation pbxsync
//! published (SQLite: the state file, read-only; PostgreSQL: the test's schema); SIPp
//! registers with the credentials read from the provisioning file pbxsync wrote for
//! the device, the way a phone does. One scenario, run on each backend.
//!
//! Without `kamailio`/`sipp` the tests say SKIPPED (or fail when `CI` is set, see
//! `support::sip`); the PostgreSQL one also needs `PBXSYNC_TEST_POSTGRES`. Every
//! process started is stopped by a guard, also when an assertion fails.

use crate::support::pg::Schema;
use crate::support::sip::{self, DOMAIN, Db, Kamailio, Phone, Registration};
use crate::support::{HASH, HEADER, Test};
use Registration::{Refused, Registered};

/// Two Yealink desk phones and a Polycom in the inventory file.
const MAC_A: &str = "001565A00001";
const MAC_B: &str = "001565A00002";
const MAC_C: &str = "001565A00003";

/// Ana's desk phone (1001, MAC A) and voicemail box (1004), Ben's desk phone (1002,
/// MAC B) and soft number (1003, virtual), Dana's Polycom (1006, MAC C).
const ROWS_1: &str = "\
1001,Ana,Silva,asilva,Ana_pass12,Front desk,,,,001565A00001\n\
1002,Ben,Okafor,bokafor,Ben_pass34,Sales,,,,001565A00002\n\
1003,Ben,Okafor,bokafor,,Sales (soft phone),,,,virtual\n\
1004,Ana,Silva,asilva,,Voicemail,,,,\n\
1006,Dana,Wu,dwu,Dana_pass78,Support,,,,001565A00003\n";

/// Carla joins sales and takes Ben's desk phone; Ben's 1002 becomes virtual.
const ROWS_2: &str = "\
1001,Ana,Silva,asilva,,Front desk,,,,001565A00001\n\
1002,Ben,Okafor,bokafor,,Sales,,,,virtual\n\
1003,Ben,Okafor,bokafor,,Sales (soft phone),,,,virtual\n\
1004,Ana,Silva,asilva,,Voicemail,,,,\n\
1005,Carla,Reyes,creyes,Carla_pass56,Sales,,,,001565A00002\n\
1006,Dana,Wu,dwu,,Support,,,,001565A00003\n";

/// Ana's desk extension 1001 is gone (she keeps her voicemail box 1004).
const ROWS_3: &str = "\
1002,Ben,Okafor,bokafor,,Sales,,,,virtual\n\
1003,Ben,Okafor,bokafor,,Sales (soft phone),,,,virtual\n\
1004,Ana,Silva,asilva,,Voicemail,,,,\n\
1005,Carla,Reyes,creyes,,Sales,,,,001565A00002\n\
1006,Dana,Wu,dwu,,Support,,,,001565A00003\n";

enum Backend {
    Sqlite,
    Postgres(Schema),
}

#[test]
fn sqlite_phones_register_with_their_provisioning_files() {
    if !sip::available("kamailio::sqlite_phones_register_with_their_provisioning_files") {
        return;
    }
    scenario(&Backend::Sqlite);
}

#[test]
fn postgres_phones_register_with_their_provisioning_files() {
    let name = "kamailio::postgres_phones_register_with_their_provisioning_files";
    if !sip::available(name) {
        return;
    }
    let Some(schema) = Schema::new(name) else {
        return;
    };
    scenario(&Backend::Postgres(schema));
}

/// The provisioning file of a Yealink phone: `<mac lower>.cfg` in `provision/`.
fn phone_file(t: &Test, mac: &str) -> std::path::PathBuf {
    t.path(&format!("provision/{}.cfg", mac.to_ascii_lowercase()))
}

/// What the phone with this MAC reads from its file.
fn phone(t: &Test, mac: &str) -> Phone {
    Phone::yealink(&phone_file(t, mac))
}

/// The SIP secret of an extension that has no provisioning file, from `pbxsync
/// secret` (the soft-phone way to get one).
fn secret(t: &Test, ext: &str) -> String {
    let out = t.ok(["secret", ext]).stdout;
    out.lines()
        .find_map(|l| l.strip_prefix("secret:"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| panic!("no `secret:` line in `pbxsync secret {ext}`:\n{out}"))
}

/// Asserts an outcome, with Kamailio's log in the message (a database error looks
/// like a refusal from the outside).
fn expect(k: &Kamailio, case: &str, got: Registration, want: Registration) {
    assert_eq!(
        got,
        want,
        "{case}: wanted {want:?}, got {got:?}; kamailio's log (tail):\n{}",
        k.log_tail()
    );
}

fn scenario(backend: &Backend) {
    // The registrar's port is chosen first: the provisioning files name it.
    let port = sip::free_udp_port();
    let target = match backend {
        Backend::Sqlite => String::new(),
        Backend::Postgres(s) => format!("target: '{}'\n", s.url),
    };
    let t = Test::repo_with(&format!(
        "{target}inventory: devices.csv\npolicy: {{{HASH}}}\npublish:\n  \
         kamailio: {{domain: {DOMAIN}}}\n  \
         provision: {{dir: provision, server: \"127.0.0.1:{port}\"}}\n"
    ));
    t.write(".gitignore", ".pbxsync/\nprovision/\n");
    t.write(
        "devices.csv",
        format!("id,model\n{MAC_A},Yealink T46U\n{MAC_B},Yealink T46U\n{MAC_C},Polycom VVX 450\n"),
    );
    t.commit_csv(format!("{HEADER}{ROWS_1}"));
    t.apply(&[]);

    let k = match backend {
        Backend::Sqlite => Kamailio::start(port, Db::Sqlite(&t.state())),
        Backend::Postgres(s) => Kamailio::start(
            port,
            Db::Postgres {
                url: &sip::postgres_url(&s.base),
                table: &format!("{}.subscriber", s.name),
            },
        ),
    };

    // A new user's desk phone registers with what its file says.
    let ana = phone(&t, MAC_A);
    assert_eq!((ana.user.as_str(), ana.port), ("1001", port), "{ana:?}");
    expect(
        &k,
        "Ana's new desk phone (1001)",
        ana.register(DOMAIN),
        Registered,
    );
    let ben = phone(&t, MAC_B);
    assert_eq!(ben.user, "1002", "{ben:?}");
    expect(
        &k,
        "Ben's new desk phone (1002)",
        ben.register(DOMAIN),
        Registered,
    );

    let dana = Phone::polycom(&t.path(&format!("provision/{MAC_C}.cfg")));
    assert_eq!(dana.user, "1006", "{dana:?}");
    expect(
        &k,
        "Dana's new Polycom (1006)",
        dana.register(DOMAIN),
        Registered,
    );

    // A wrong secret is refused.
    let wrong = format!("{}x", ana.secret);
    expect(
        &k,
        "1001 with a wrong secret",
        k.register("1001", &wrong),
        Refused,
    );
    expect(
        &k,
        "1001 with Ben's secret",
        k.register("1001", &ben.secret),
        Refused,
    );

    // Extensions that hold no device have no file, and do not register even with
    // their own secret: the relation leaves them out.
    let files = provision_files(&t);
    assert_eq!(
        files,
        [
            // Polycom's upper-case name sorts first.
            format!("{MAC_C}.cfg"),
            format!("{}.cfg", MAC_A.to_ascii_lowercase()),
            format!("{}.cfg", MAC_B.to_ascii_lowercase()),
        ],
        "one file per device an extension holds"
    );
    expect(
        &k,
        "virtual 1003 with its own secret",
        k.register("1003", &secret(&t, "1003")),
        Refused,
    );
    expect(
        &k,
        "voicemail_only 1004 with its own secret",
        k.register("1004", &secret(&t, "1004")),
        Refused,
    );

    // Carla takes Ben's desk phone: the file for that MAC now holds 1005, which
    // registers; Ben's 1002 (now virtual) is refused with the secret it had.
    t.commit_csv(format!("{HEADER}{ROWS_2}"));
    t.apply(&[]);
    let carla = phone(&t, MAC_B);
    assert_eq!(carla.user, "1005", "the moved phone's file: {carla:?}");
    assert_ne!(carla.secret, ben.secret, "1005 has a secret of its own");
    expect(
        &k,
        "1005 on the phone moved to it",
        carla.register(DOMAIN),
        Registered,
    );
    expect(
        &k,
        "1002 after its phone moved away (old secret)",
        k.register("1002", &ben.secret),
        Refused,
    );
    expect(&k, "1001, untouched", ana.register(DOMAIN), Registered);
    expect(&k, "1006, untouched", dana.register(DOMAIN), Registered);

    // `--prune` removes 1001 with its device: refused, and its file is gone.
    t.commit_csv(format!("{HEADER}{ROWS_3}"));
    t.apply(&["--prune"]);
    assert!(
        !phone_file(&t, MAC_A).exists(),
        "the pruned extension's file is gone; provision/ holds {:?}",
        provision_files(&t)
    );
    expect(
        &k,
        "1001 after --prune removed it (its old secret)",
        ana.register(DOMAIN),
        Refused,
    );
    expect(
        &k,
        "1005 after the prune",
        carla.register(DOMAIN),
        Registered,
    );
    expect(
        &k,
        "1006 after the prune",
        dana.register(DOMAIN),
        Registered,
    );
}

/// The phone configuration files in `provision/` (not the manifest), sorted.
fn provision_files(t: &Test) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(t.path("provision"))
        .expect("provision/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cfg"))
        .collect();
    names.sort();
    names
}
