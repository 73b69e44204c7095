use super::*;
use crate::model::{Device, User};
use crate::validate::{Policy, check};

const HEADER: &str = "Extension,First Name,Last Name,Web Username,Password,Description,Email,IM,Mobile,Device MAC Address";

fn user(username: &str, fields: [&str; 5]) -> User {
    User {
        username: username.into(),
        fields: fields.map(Text::from),
    }
}

fn ext(number: &str, username: &str, device: Option<&str>, description: &str) -> Extension {
    let kind = match device {
        Some("virtual") => ExtensionKind::Virtual,
        Some(_) => ExtensionKind::Device,
        None => ExtensionKind::VoicemailOnly,
    };
    Extension {
        number: number.into(),
        username: username.into(),
        kind,
        device: device.filter(|d| *d != "virtual").map(Text::from),
        description: description.into(),
    }
}

/// The directory the files below were applied to: jflynn with two extensions
/// (one on a device), wchen with one.
fn target() -> Directory {
    let mut dir = Directory {
        users: vec![
            user("jflynn", ["Jason", "Flynn", "jason@example.com", "", ""]),
            user("wchen", ["Wei", "Chen", "", "", ""]),
        ],
        extensions: vec![
            ext("1001", "jflynn", Some("0004F2000001"), "Sales, desk"),
            ext("1002", "jflynn", Some("virtual"), ""),
            ext("1003", "wchen", None, ""),
        ],
        devices: vec![Device {
            id: "0004F2000001".into(),
            model: "".into(),
        }],
        ..Directory::default()
    };
    dir.sort();
    dir
}

fn run(bytes: &[u8], dir: &Directory) -> Adopted {
    let policy = Policy {
        allow_empty: true,
        ..Policy::default()
    };
    let file = check(bytes, &policy);
    assert!(!file.has_errors(), "{:?}", file.diagnostics);
    adopt(bytes, &file, dir).expect("adopt")
}

fn text(adopted: &Adopted) -> &str {
    std::str::from_utf8(&adopted.bytes).expect("UTF-8")
}

/// The file of `target()`, with the line end `eol`.
fn file(eol: &str) -> String {
    [
        HEADER,
        "1001,Jason,Flynn,jflynn,\"Sec_ret12\",\"Sales, desk\",jason@example.com,,,00:04:f2:00:00:01",
        "1002,Jason,Flynn,jflynn,,,,,,VIRTUAL",
        "1003,Wei,Chen,wchen,Wei_pass12,,,,,",
        "",
    ]
    .join(eol)
}

#[test]
fn a_file_that_agrees_is_kept_byte_for_byte() {
    for eol in ["\n", "\r\n", "\r"] {
        let input = file(eol);
        let adopted = run(input.as_bytes(), &target());
        assert!(adopted.is_unchanged(), "{eol:?}");
        assert_eq!(text(&adopted), input, "{eol:?}");
    }
}

#[test]
fn user_fields_are_rewritten_on_every_row_of_the_user_and_nothing_else() {
    let mut dir = target();
    dir.users[0].fields[2] = "jason.flynn@example.com".into();
    for eol in ["\n", "\r\n", "\r"] {
        let adopted = run(file(eol).as_bytes(), &dir);
        let expected = [
            HEADER,
            "1001,Jason,Flynn,jflynn,\"Sec_ret12\",\"Sales, desk\",jason.flynn@example.com,,,00:04:f2:00:00:01",
            // Its Email cell was empty, filled in by the other row: it agrees.
            "1002,Jason,Flynn,jflynn,,,,,,VIRTUAL",
            "1003,Wei,Chen,wchen,Wei_pass12,,,,,",
            "",
        ]
        .join(eol);
        assert_eq!(text(&adopted), expected, "{eol:?}");
        assert_eq!((adopted.changed, adopted.added, adopted.removed), (1, 0, 0));
    }
    // A field no row fills in is written on each row of the user.
    dir.users[0].fields[3] = "jflynn@im".into();
    let adopted = run(file("\n").as_bytes(), &dir);
    assert_eq!(
        text(&adopted),
        [
            HEADER,
            "1001,Jason,Flynn,jflynn,\"Sec_ret12\",\"Sales, desk\",jason.flynn@example.com,jflynn@im,,00:04:f2:00:00:01",
            "1002,Jason,Flynn,jflynn,,,,jflynn@im,,VIRTUAL",
            "1003,Wei,Chen,wchen,Wei_pass12,,,,,",
            "",
        ]
        .join("\n")
    );
    assert_eq!(adopted.changed, 2);
}

#[test]
fn removed_extensions_lose_their_row_and_new_ones_are_appended_sorted() {
    let mut dir = target();
    dir.extensions.retain(|e| e.number != "1002");
    dir.users
        .push(user("mgarcia", ["María", "García", "", "", "+1 555"]));
    dir.extensions.push(ext("1010", "mgarcia", None, "=cmd|x"));
    dir.extensions
        .push(ext("1004", "wchen", Some("virtual"), "a \"quoted\" desk"));
    dir.sort();
    let adopted = run(file("\r\n").as_bytes(), &dir);
    assert_eq!(
        text(&adopted),
        [
            HEADER,
            "1001,Jason,Flynn,jflynn,\"Sec_ret12\",\"Sales, desk\",jason@example.com,,,00:04:f2:00:00:01",
            "1003,Wei,Chen,wchen,Wei_pass12,,,,,",
            "1004,Wei,Chen,wchen,,\"a \"\"quoted\"\" desk\",,,,virtual",
            // Formula-like cells get export's escape; Mobile is written as it is.
            "1010,María,García,mgarcia,,'=cmd|x,,,+1 555,",
            "",
        ]
        .join("\r\n")
    );
    assert_eq!((adopted.changed, adopted.added, adopted.removed), (0, 2, 1));
}

#[test]
fn rewritten_cells_are_escaped_and_quoted_only_when_needed_and_passwords_kept() {
    let mut dir = target();
    dir.extensions[0].description = "-1, upstairs".into();
    dir.extensions[2].description = "@lobby".into();
    dir.users[1].fields[0] = "Wei Li".into();
    let adopted = run(file("\n").as_bytes(), &dir);
    assert_eq!(
        text(&adopted),
        [
            HEADER,
            "1001,Jason,Flynn,jflynn,\"Sec_ret12\",\"'-1, upstairs\",jason@example.com,,,00:04:f2:00:00:01",
            "1002,Jason,Flynn,jflynn,,,,,,VIRTUAL",
            "1003,Wei Li,Chen,wchen,Wei_pass12,'@lobby,,,,",
            "",
        ]
        .join("\n")
    );
}

#[test]
fn devices_are_compared_by_what_they_mean() {
    let mut dir = target();
    // Another device, and a virtual extension back to voicemail only.
    dir.extensions[0].device = Some("0004F2000009".into());
    dir.extensions[1].kind = ExtensionKind::VoicemailOnly;
    // An empty cell keeps whatever device the extension has: it agrees.
    dir.extensions[2].kind = ExtensionKind::Virtual;
    let adopted = run(file("\n").as_bytes(), &dir);
    assert_eq!(
        text(&adopted),
        [
            HEADER,
            "1001,Jason,Flynn,jflynn,\"Sec_ret12\",\"Sales, desk\",jason@example.com,,,0004F2000009",
            "1002,Jason,Flynn,jflynn,,,,,,",
            "1003,Wei,Chen,wchen,Wei_pass12,,,,,",
            "",
        ]
        .join("\n")
    );
}

#[test]
fn reordered_and_left_out_columns_and_a_semicolon_delimiter() {
    let input = "mac;ext;username;last;first;password\n;1003;wchen;Chen;Wei;Wei_pass12\n0004F2000001;1001;jflynn;Flynn;Jason;\n";
    let mut dir = target();
    dir.users[1].fields[1] = "Chen-Li".into();
    dir.users[0].fields[2] = "not in the file".into();
    let adopted = run(input.as_bytes(), &dir);
    assert_eq!(
        text(&adopted),
        "mac;ext;username;last;first;password\n;1003;wchen;Chen-Li;Wei;Wei_pass12\n0004F2000001;1001;jflynn;Flynn;Jason;\nvirtual;1002;jflynn;Flynn;Jason;\n"
    );
    assert_eq!((adopted.changed, adopted.added), (1, 1));
}

#[test]
fn the_byte_order_mark_and_a_last_line_without_line_break_are_kept() {
    let input = format!("\u{feff}{HEADER}\r\n1003,Wei,Chen,wchen,,,,,,");
    let mut dir = target();
    dir.extensions.retain(|e| e.number == "1003");
    dir.users[1].fields[4] = "+1 555".into();
    let adopted = run(input.as_bytes(), &dir);
    assert_eq!(
        text(&adopted),
        format!("\u{feff}{HEADER}\r\n1003,Wei,Chen,wchen,,,,,+1 555,")
    );
    dir.extensions.push(ext("1005", "wchen", None, ""));
    dir.sort();
    let adopted = run(input.as_bytes(), &dir);
    assert_eq!(
        text(&adopted),
        format!(
            "\u{feff}{HEADER}\r\n1003,Wei,Chen,wchen,,,,,+1 555,\r\n1005,Wei,Chen,wchen,,,,,+1 555,\r\n"
        )
    );
}

#[test]
fn a_file_without_rows_gets_the_header_and_every_extension() {
    let adopted = run(b"", &target());
    assert_eq!(
        text(&adopted),
        format!(
            "{HEADER}\n1001,Jason,Flynn,jflynn,,\"Sales, desk\",jason@example.com,,,0004F2000001\n1002,Jason,Flynn,jflynn,,,jason@example.com,,,virtual\n1003,Wei,Chen,wchen,,,,,,\n"
        )
    );
}

#[test]
fn windows_1252_is_written_back_in_windows_1252_or_refused() {
    // Every byte from 0x80 up, in a description that stays as it is.
    let high: Vec<u8> = (0x80..=0xFFu8).filter(|b| !matches!(b, 0xA0)).collect();
    let mut input = format!("{HEADER}\n1003,Wei,Chen,wchen,,\"").into_bytes();
    input.extend_from_slice(&high);
    input.extend_from_slice(b"\",,,,\n1001,Jos\xE9,Flynn,jflynn,,,,,,\n");
    let mut dir = target();
    dir.extensions.retain(|e| e.number != "1002");
    dir.extensions[1].description = encoding_rs::WINDOWS_1252.decode(&high).0.into();
    dir.extensions[0].description = "".into();
    dir.users[0].fields = ["Josè", "Flynn", "", "", ""].map(Text::from);
    dir.extensions[0].kind = ExtensionKind::VoicemailOnly;
    dir.extensions[0].device = None;
    let file = check(&input, &Policy::default());
    assert!(file.windows_1252);
    let adopted = adopt(&input, &file, &dir).expect("adopt");
    let mut expected = input.clone();
    let at = expected.len() - b"Jos\xE9,Flynn,jflynn,,,,,,\n".len();
    expected.truncate(at);
    expected.extend_from_slice(b"Jos\xE8,Flynn,jflynn,,,,,,\n");
    assert_eq!(adopted.bytes, expected);
    assert_eq!(adopted.changed, 1);
    dir.users[0].fields[0] = "Jo\u{142}".into();
    assert_eq!(
        adopt(&input, &file, &dir),
        Err(AdoptError::NotInWindows1252 {
            extension: "1001".into(),
            column: Column::FirstName,
            character: '\u{142}',
        })
    );
}

#[test]
fn quoted_line_breaks_in_kept_rows_stay_and_a_changed_owner_is_written() {
    let input = format!(
        "{HEADER}\r\n1001,Jason,Flynn,jflynn,,\"Sales,\r\ndesk\",,,,\r\n1003,Wei,Chen,wchen,,,,,,\r\n"
    );
    let mut dir = target();
    dir.extensions.retain(|e| e.number != "1002");
    dir.extensions[0].description = "Sales,\r\ndesk".into();
    dir.users[0].fields[2] = "".into();
    dir.extensions[1].username = "jflynn".into();
    let adopted = run(input.as_bytes(), &dir);
    assert_eq!(
        text(&adopted),
        format!(
            "{HEADER}\r\n1001,Jason,Flynn,jflynn,,\"Sales,\r\ndesk\",,,,\r\n1003,Jason,Flynn,jflynn,,,,,,\r\n"
        )
    );
}
