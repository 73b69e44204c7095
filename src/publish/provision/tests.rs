//! Provisioning files: the built-in templates' exact text, escaping, template
//! choice, and what a run does to the folder (writes, skips, removals, modes).

use super::*;
use crate::model::{Secret, Text};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

fn phone(ext: &str, name: &str, mac: &str, model: &str, secret: &str) -> Phone {
    Phone {
        extension: Text::from(ext),
        display_name: Text::from(name),
        device: Text::from(mac),
        model: Text::from(model),
        sip_secret: Secret::new(secret),
    }
}

fn settings(dir: &Path) -> Settings {
    Settings {
        dir: dir.to_path_buf(),
        server: "pbx.example.com".into(),
        templates: BTreeMap::new(),
    }
}

fn ann() -> Phone {
    phone("201", "Ann Smith", "001565AABBCC", "Yealink T46U", "s3cret")
}

fn bob() -> Phone {
    phone(
        "202",
        "Bob Jones",
        "0004F2112233",
        "Polycom VVX 450",
        "hunter2",
    )
}

/// The names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

#[test]
fn yealink_file_is_exact() {
    let server = SipServer::parse("pbx.example.com:5070").unwrap();
    let r = render::yealink(&ann(), &server);
    assert_eq!(r.name, "001565aabbcc.cfg");
    assert_eq!(
        r.content,
        "#!version:1.0.0.1\n\
         account.1.enable = 1\n\
         account.1.label = 201\n\
         account.1.display_name = Ann Smith\n\
         account.1.auth_name = 201\n\
         account.1.user_name = 201\n\
         account.1.password = s3cret\n\
         account.1.sip_server.1.address = pbx.example.com\n\
         account.1.sip_server.1.port = 5070\n"
    );
}

#[test]
fn polycom_file_is_exact() {
    let server = SipServer::parse("pbx.example.com").unwrap();
    let r = render::polycom(&bob(), &server);
    assert_eq!(r.name, "0004F2112233.cfg");
    assert_eq!(
        r.content,
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n\
         <PHONE_CONFIG>\n  <ALL\n    \
         reg.1.address=\"202\"\n    \
         reg.1.label=\"202\"\n    \
         reg.1.displayName=\"Bob Jones\"\n    \
         reg.1.auth.userId=\"202\"\n    \
         reg.1.auth.password=\"hunter2\"\n    \
         reg.1.server.1.address=\"pbx.example.com\"\n    \
         reg.1.server.1.port=\"5060\"\n  \
         />\n</PHONE_CONFIG>\n"
    );
}

#[test]
fn yealink_values_cannot_add_keys() {
    let server = SipServer::parse("pbx").unwrap();
    let evil = phone(
        "201",
        "Ann\naccount.1.password = x\r\naccount.1.sip_server.1.address = evil\u{2028}z\u{0}",
        "001565AABBCC",
        "yealink",
        "pw\nline",
    );
    let r = render::yealink(&evil, &server);
    let lines: Vec<&str> = r.content.lines().collect();
    assert_eq!(lines.len(), 9, "{}", r.content);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("account.1.password"))
            .count(),
        1
    );
    assert!(!r.content.contains('\r') && !r.content.contains('\0'));
    assert_eq!(
        lines[3],
        "account.1.display_name = Ann account.1.password = x  account.1.sip_server.1.address = evil z "
    );
    assert_eq!(lines[6], "account.1.password = pw line");
}

#[test]
fn polycom_values_are_xml_escaped() {
    let server = SipServer::parse("pbx").unwrap();
    let evil = phone(
        "202",
        "\"/><ALL reg.1.auth.password=\"x\" a='&'\n",
        "0004F2112233",
        "POLYCOM VVX",
        "<&>",
    );
    let r = render::polycom(&evil, &server);
    assert!(r.content.contains(
        "reg.1.displayName=\"&quot;/&gt;&lt;ALL reg.1.auth.password=&quot;x&quot; a=&apos;&amp;&apos; \"\n"
    ));
    assert!(
        r.content
            .contains("reg.1.auth.password=\"&lt;&amp;&gt;\"\n")
    );
    assert_eq!(r.content.matches("reg.1.auth.password=\"").count(), 1);
    assert_eq!(r.content.matches('<').count(), 4, "{}", r.content);
}

#[test]
fn server_forms() {
    let p = |s: &str| SipServer::parse(s).map(|s| (s.host, s.port));
    assert_eq!(p("pbx").unwrap(), ("pbx".into(), 5060));
    assert_eq!(p("pbx:5080").unwrap(), ("pbx".into(), 5080));
    assert_eq!(p("[::1]:5080").unwrap(), ("::1".into(), 5080));
    assert_eq!(p("[::1]").unwrap(), ("::1".into(), 5060));
    assert_eq!(p("fe80::1").unwrap(), ("fe80::1".into(), 5060));
    assert!(p("pbx:0").is_err());
    assert!(p("pbx:x").is_err());
    assert!(p(":5060").is_err());
    assert!(p("").is_err());
    assert!(p("pbx\n:1").is_err());
}

#[test]
fn model_prefix_and_user_template_precedence() {
    let mut users = BTreeMap::new();
    users.insert("Yealink T46U".to_owned(), PathBuf::from("/t"));
    assert_eq!(
        render::choose("Yealink T46U", &users),
        Some(Kind::User("Yealink T46U"))
    );
    assert_eq!(render::choose("yealink t46u", &users), Some(Kind::Yealink));
    assert_eq!(render::choose("YEALINK-T54W", &users), Some(Kind::Yealink));
    assert_eq!(
        render::choose("Polycom VVX 450", &users),
        Some(Kind::Polycom)
    );
    assert_eq!(render::choose("polycomish", &users), Some(Kind::Polycom));
    assert_eq!(render::choose("Cisco 7960", &users), None);
    assert_eq!(render::choose("My Yealink", &users), None);
    assert_eq!(render::choose("Yeal", &users), None);
    assert_eq!(render::choose("", &users), None);
}

#[test]
fn user_template_takes_precedence_and_gets_every_variable() {
    let tmp = tempfile::tempdir().unwrap();
    let template = tmp.path().join("t46u.j2");
    std::fs::write(
        &template,
        "{{ extension }}|{{ display_name }}|{{ sip_server }}|{{ sip_port }}|{{ auth_user }}|\
         {{ sip_secret }}|{{ mac }}|{{ mac_upper }}|{{ model }}|<&>\n",
    )
    .unwrap();
    let dir = tmp.path().join("prov");
    let mut s = settings(&dir);
    s.server = "pbx:5062".into();
    s.templates.insert("Yealink T46U".into(), template);
    let report = provision(
        &s,
        &[phone("201", "A & B", "001565AABBCC", "Yealink T46U", "pw")],
    )
    .unwrap();
    assert_eq!(report.written, ["001565aabbcc.cfg"]);
    assert_eq!(
        read(&dir, "001565aabbcc.cfg"),
        "201|A & B|pbx|5062|201|pw|001565aabbcc|001565AABBCC|Yealink T46U|<&>\n"
    );
}

#[test]
fn user_template_may_name_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    let template = tmp.path().join("cisco.j2");
    std::fs::write(
        &template,
        "{% set file_name = \"SEP\" ~ mac_upper ~ \".cnf.xml\" %}<user>{{ extension|e }}</user>\n",
    )
    .unwrap();
    let dir = tmp.path().join("prov");
    let mut s = settings(&dir);
    s.templates.insert("Cisco 7960".into(), template.clone());
    let report = provision(&s, &[phone("201", "A", "001565AABBCC", "Cisco 7960", "pw")]).unwrap();
    assert_eq!(report.written, ["SEP001565AABBCC.cnf.xml"]);
    assert_eq!(read(&dir, "SEP001565AABBCC.cnf.xml"), "<user>201</user>\n");

    std::fs::write(&template, "{% set file_name = \"../x\" %}x").unwrap();
    let err = provision(&s, &[phone("201", "A", "001565AABBCC", "Cisco 7960", "pw")]).unwrap_err();
    assert!(matches!(err, ProvisionError::FileName { .. }), "{err}");
}

#[test]
fn unknown_variable_names_template_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let template = tmp.path().join("broken.j2");
    std::fs::write(&template, "a = {{ extension }}\nb = {{ sip_passwrd }}\n").unwrap();
    let dir = tmp.path().join("prov");
    let mut s = settings(&dir);
    s.templates.insert("Cisco 7960".into(), template.clone());
    check_templates(&s).unwrap(); // it parses; only rendering finds the name
    let err = provision(&s, &[phone("201", "A", "001565AABBCC", "Cisco 7960", "pw")]).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, ProvisionError::Template { line: Some(2), .. }),
        "{text}"
    );
    assert!(text.contains(&template.display().to_string()), "{text}");
    assert!(
        text.contains("line 2") && text.contains("sip_passwrd"),
        "{text}"
    );
    // Nothing was written, not even the folder.
    assert!(!dir.exists());

    std::fs::write(&template, "{% if %}").unwrap();
    let err = check_templates(&s).unwrap_err();
    assert!(
        matches!(err, ProvisionError::Template { line: Some(1), .. }),
        "{err}"
    );

    s.templates
        .insert("Cisco 7960".into(), tmp.path().join("missing.j2"));
    let err = check_templates(&s).unwrap_err();
    assert!(err.to_string().contains("missing.j2"), "{err}");
}

#[test]
fn devices_without_template_get_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("prov");
    let report = provision(
        &settings(&dir),
        &[
            ann(),
            phone("203", "C", "00AABBCCDDEE", "", "pw"),
            phone("204", "D", "00AABBCCDDEF", "Cisco 7960", "pw"),
            phone("205", "E", "../etc/passw", "Yealink", "pw"),
        ],
    )
    .unwrap();
    assert_eq!(report.written, ["001565aabbcc.cfg"]);
    assert_eq!(report.warnings.len(), 3, "{:?}", report.warnings);
    assert!(report.warnings[0].contains("00AABBCCDDEE") && report.warnings[0].contains("203"));
    assert!(report.warnings[0].contains("no model"));
    assert!(report.warnings[1].contains("00AABBCCDDEF") && report.warnings[1].contains("204"));
    assert!(report.warnings[1].contains("Cisco 7960"));
    assert!(report.warnings[2].contains("205"));
    assert_eq!(
        listing(&dir),
        [".pbxsync-manifest.json", "001565aabbcc.cfg"]
    );
}

#[test]
fn writes_files_and_manifest_only_with_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/prov");
    let report = provision(&settings(&dir), &[ann(), bob()]).unwrap();
    assert_eq!(report.written, ["0004F2112233.cfg", "001565aabbcc.cfg"]);
    assert_eq!(
        listing(&dir),
        [
            ".pbxsync-manifest.json",
            "0004F2112233.cfg",
            "001565aabbcc.cfg"
        ]
    );
    for name in listing(&dir) {
        let mode = std::fs::metadata(dir.join(&name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640, "{name}");
    }
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o750);
    let manifest: serde_json::Value = serde_json::from_str(&read(&dir, MANIFEST_NAME)).unwrap();
    let hash = manifest["files"]["001565aabbcc.cfg"]["xxh3"]
        .as_str()
        .unwrap();
    assert_eq!(
        hash,
        manifest::hash(read(&dir, "001565aabbcc.cfg").as_bytes())
    );
    assert_eq!(hash.len(), 32);
}

#[test]
fn unchanged_files_are_not_rewritten() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("prov");
    let s = settings(&dir);
    provision(&s, &[ann(), bob()]).unwrap();
    let inode = |name: &str| std::fs::metadata(dir.join(name)).unwrap().ino();
    let (a, b, m) = (
        inode("001565aabbcc.cfg"),
        inode("0004F2112233.cfg"),
        inode(MANIFEST_NAME),
    );

    let report = provision(&s, &[ann(), bob()]).unwrap();
    assert_eq!(
        report,
        Report {
            unchanged: 2,
            ..Report::default()
        }
    );
    assert_eq!(inode("001565aabbcc.cfg"), a);
    assert_eq!(inode("0004F2112233.cfg"), b);
    assert_eq!(
        inode(MANIFEST_NAME),
        m,
        "an idle run leaves even the manifest alone"
    );

    let mut renamed = ann();
    renamed.display_name = "Ann Jones".into();
    let report = provision(&s, &[renamed, bob()]).unwrap();
    assert_eq!(report.written, ["001565aabbcc.cfg"]);
    assert_eq!(report.unchanged, 1);
    assert_ne!(inode("001565aabbcc.cfg"), a);
    assert_eq!(inode("0004F2112233.cfg"), b);
    assert!(read(&dir, "001565aabbcc.cfg").contains("display_name = Ann Jones\n"));
}

#[test]
fn deleted_file_is_rewritten() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("prov");
    let s = settings(&dir);
    provision(&s, &[ann(), bob()]).unwrap();
    std::fs::remove_file(dir.join("001565aabbcc.cfg")).unwrap();
    let report = provision(&s, &[ann(), bob()]).unwrap();
    assert_eq!(report.written, ["001565aabbcc.cfg"]);
    assert_eq!(report.unchanged, 1);
    assert!(read(&dir, "001565aabbcc.cfg").starts_with("#!version:1.0.0.1\n"));
}

#[test]
fn removed_phone_loses_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("prov");
    let s = settings(&dir);
    provision(&s, &[ann(), bob()]).unwrap();
    let report = provision(&s, &[bob()]).unwrap();
    assert_eq!(report.removed, ["001565aabbcc.cfg"]);
    assert_eq!(
        listing(&dir),
        [".pbxsync-manifest.json", "0004F2112233.cfg"]
    );
    let manifest = read(&dir, MANIFEST_NAME);
    assert!(!manifest.contains("001565aabbcc"), "{manifest}");

    // A phone that loses its model loses its file too.
    let mut no_model = bob();
    no_model.model = "".into();
    let report = provision(&s, &[no_model]).unwrap();
    assert_eq!(report.removed, ["0004F2112233.cfg"]);
    assert_eq!(report.warnings.len(), 1);
    assert_eq!(listing(&dir), [".pbxsync-manifest.json"]);
}

#[test]
fn foreign_file_is_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("prov");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("001565aabbcc.cfg"), "mine\n").unwrap();
    std::fs::write(dir.join("other.txt"), "also mine\n").unwrap();
    let s = settings(&dir);
    let report = provision(&s, &[ann(), bob()]).unwrap();
    assert_eq!(report.written, ["0004F2112233.cfg"]);
    assert_eq!(report.warnings.len(), 1);
    let w = &report.warnings[0];
    assert!(
        w.contains("001565aabbcc.cfg exists and was not written by pbxsync; move it away"),
        "{w}"
    );
    assert_eq!(read(&dir, "001565aabbcc.cfg"), "mine\n");

    // Still someone else's on the next run, and never removed.
    let report = provision(&s, &[bob()]).unwrap();
    assert!(report.removed.is_empty());
    assert_eq!(read(&dir, "001565aabbcc.cfg"), "mine\n");
    assert_eq!(read(&dir, "other.txt"), "also mine\n");

    // Once moved away, the next run writes it.
    std::fs::remove_file(dir.join("001565aabbcc.cfg")).unwrap();
    let report = provision(&s, &[ann(), bob()]).unwrap();
    assert_eq!(report.written, ["001565aabbcc.cfg"]);
    assert!(report.warnings.is_empty());
}

#[test]
fn manifest_names_outside_the_folder_are_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("prov");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(tmp.path().join("precious"), "x").unwrap();
    std::fs::write(
        dir.join(MANIFEST_NAME),
        r#"{"pbxsync_provision_manifest":1,"files":{"../precious":{"xxh3":"00","len":1}}}"#,
    )
    .unwrap();
    provision(&settings(&dir), &[]).unwrap();
    assert!(tmp.path().join("precious").exists());

    std::fs::write(dir.join(MANIFEST_NAME), "not json").unwrap();
    let err = provision(&settings(&dir), &[ann()]).unwrap_err();
    assert!(matches!(err, ProvisionError::Manifest { .. }), "{err}");
}

#[test]
fn same_file_name_twice_is_guarded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("prov");
    let mut twin = ann();
    twin.extension = "299".into();
    let report = provision(&settings(&dir), &[ann(), twin]).unwrap();
    assert_eq!(report.written, ["001565aabbcc.cfg"]);
    assert_eq!(report.warnings.len(), 1);
    assert!(report.warnings[0].contains("299"));
    assert!(read(&dir, "001565aabbcc.cfg").contains("label = 201\n"));
}

#[test]
fn symlink_under_a_name_is_replaced_not_written_through() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("prov");
    let s = settings(&dir);
    provision(&s, &[ann()]).unwrap();
    let outside = tmp.path().join("outside");
    std::fs::write(&outside, "keep").unwrap();
    std::fs::remove_file(dir.join("001565aabbcc.cfg")).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("001565aabbcc.cfg")).unwrap();
    let report = provision(&s, &[ann()]).unwrap();
    assert_eq!(report.written, ["001565aabbcc.cfg"]);
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep");
    assert!(
        std::fs::symlink_metadata(dir.join("001565aabbcc.cfg"))
            .unwrap()
            .is_file()
    );
}

#[test]
fn write_failure_is_reported_and_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("prov");
    let s = settings(&dir);
    provision(&s, &[bob()]).unwrap();
    // A folder under the file's name: its rename fails, the other file is written.
    std::fs::create_dir(dir.join("001565aabbcc.cfg")).unwrap();
    std::fs::write(dir.join(MANIFEST_NAME), {
        let mut m: serde_json::Value = serde_json::from_str(&read(&dir, MANIFEST_NAME)).unwrap();
        m["files"]["001565aabbcc.cfg"] = serde_json::json!({"xxh3": "00", "len": 1});
        m.to_string()
    })
    .unwrap();
    let mut changed = bob();
    changed.sip_secret = Secret::new("new");
    let err = provision(&s, &[ann(), changed.clone()]).unwrap_err();
    assert!(err.to_string().contains("001565aabbcc.cfg"), "{err}");
    assert!(read(&dir, "0004F2112233.cfg").contains("\"new\""));
    assert_eq!(
        listing(&dir),
        [
            ".pbxsync-manifest.json",
            "0004F2112233.cfg",
            "001565aabbcc.cfg"
        ],
        "no temporary file is left behind"
    );
    std::fs::remove_dir(dir.join("001565aabbcc.cfg")).unwrap();
    let report = provision(&s, &[ann(), changed]).unwrap();
    assert_eq!(report.written, ["001565aabbcc.cfg"]);
    assert_eq!(report.unchanged, 1);
}
