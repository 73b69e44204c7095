//! One pass over the file: every row rule and every cross-row rule, all diagnostics
//! in line order, and the desired state built from the rows.

pub mod rules;

use crate::config::{Config, PasswordPolicy};
use crate::csv::{self as reader, Layout, ReadOptions, Record, Records};
use crate::diagnostic::{self, Code, Diagnostic};
use crate::model::{
    cmp_extension, Column, Desired, DesiredExtension, DesiredUser, DeviceCell, Secret, Text, USER_COLUMNS,
};
use rules::{ExtensionRule, Problem};
use std::borrow::Cow;

/// The rules that can be configured.
#[derive(Debug, Clone)]
pub struct Policy {
    pub read: ReadOptions,
    pub password: PasswordPolicy,
    pub extension: ExtensionRule,
    pub allow_apostrophes: bool,
    /// Accept a file without data rows as desired state.
    pub allow_empty: bool,
}

impl Policy {
    pub fn from_config(config: &Config) -> Policy {
        Policy {
            read: ReadOptions {
                encoding: config.encoding,
                delimiter: config.delimiter,
            },
            password: config.policy.password,
            // The config loader has compiled the pattern once already.
            extension: ExtensionRule::new(&config.policy.extension_pattern).unwrap_or(ExtensionRule::Default),
            allow_apostrophes: config.policy.allow_apostrophes,
            allow_empty: false,
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            read: ReadOptions::default(),
            password: PasswordPolicy::default(),
            extension: ExtensionRule::Default,
            allow_apostrophes: false,
            allow_empty: false,
        }
    }
}

/// The outcome of validating a file.
#[derive(Debug)]
pub struct Validated<'a> {
    /// The decoded text (for rendering diagnostics against it).
    pub text: Cow<'a, str>,
    pub windows_1252: bool,
    pub delimiter: u8,
    pub layout: Layout,
    /// Number of data rows (header and blank rows excluded).
    pub rows: usize,
    pub desired: Desired,
    /// Errors and warnings, in line order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Validated<'_> {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// The user fields of one row, before the rows of a user are merged.
struct RowUser {
    username: Text,
    fields: [Text; 5],
    password: Option<Secret>,
    line: u32,
    start: usize,
}

/// Where a device appears.
struct DeviceUse {
    id: Text,
    line: u32,
    start: usize,
}

struct Pass<'p, 't> {
    policy: &'p Policy,
    text: &'t str,
    delimiter: u8,
    layout: Layout,
    diagnostics: Vec<Diagnostic>,
}

impl Pass<'_, '_> {
    fn at(&mut self, record_line: u32, start: usize, field: usize, problem: Problem) {
        let span = reader::field_span(self.text, start, self.delimiter, field);
        self.diagnostics.push(Diagnostic {
            line: Some(record_line),
            column: Some(u32::try_from(field + 1).unwrap_or(u32::MAX)),
            span: Some(span),
            ..Diagnostic::error(problem.code, problem.message)
        });
        if let Some(d) = self.diagnostics.last_mut() {
            d.hint = problem.hint;
        }
    }

    /// Checks one data row; returns its extension and user when it has the keys.
    fn row(&mut self, rec: &Record<'_>) -> Option<(DesiredExtension, RowUser, Option<DeviceUse>)> {
        let expected = self.layout.columns.len();
        if rec.fields.len() != expected {
            let n = rec.fields.len();
            let span = reader::field_span(self.text, rec.start, self.delimiter, usize::MAX);
            self.diagnostics.push(
                Diagnostic::error(
                    Code::WrongColumnCount,
                    format!("this row has {n} columns, expected {expected}"),
                )
                .at_line(rec.line)
                .with_span(span)
                .with_hint(if n > expected {
                    "a cell with a comma must be in double quotes: \"Conference room, 2nd floor\""
                } else {
                    "every row needs all the columns, empty ones included (commas with nothing between)"
                }),
            );
            return None;
        }
        let mut extension = Text::default();
        let mut username = Text::default();
        let mut user = <[Text; 5]>::default();
        let mut password = None;
        let mut description = Text::default();
        let mut device = DeviceCell::Keep;
        let mut keys_ok = true;
        for i in 0..expected {
            let column = self.layout.columns[i];
            let raw = rec.get(i);
            let value = raw.trim();
            if value.len() != raw.len() {
                self.at(
                    rec.line,
                    rec.start,
                    i,
                    Problem {
                        code: Code::Whitespace,
                        message: format!("{} has leading or trailing whitespace", column.header()),
                        hint: Some("remove the spaces around the value, or run `pbxsync fmt`".into()),
                    },
                );
            }
            if value.is_empty() {
                if column.required() {
                    keys_ok &= !matches!(column, Column::Extension | Column::WebUsername);
                    self.at(
                        rec.line,
                        rec.start,
                        i,
                        Problem {
                            code: Code::MissingRequired,
                            message: format!("{} is required", column.header()),
                            hint: Some(format!("fill in the {} of this row", column.header())),
                        },
                    );
                }
                continue;
            }
            let checked = match column {
                Column::Extension => {
                    extension = Text::from(value);
                    self.policy.extension.check(value)
                }
                Column::WebUsername => {
                    username = Text::from(value);
                    rules::username(value)
                }
                Column::FirstName | Column::LastName => {
                    rules::name(column.header(), value, self.policy.allow_apostrophes)
                }
                Column::Password => {
                    password = Some(Secret::new(value));
                    rules::password(value, &self.policy.password)
                }
                Column::Description => {
                    description = Text::from(value);
                    Ok(())
                }
                Column::Email => rules::email(value),
                Column::Im => Ok(()),
                Column::Mobile => rules::mobile(value),
                Column::Device => rules::device(value).map(|d| device = d),
            };
            if let Some(k) = USER_COLUMNS.iter().position(|c| *c == column) {
                user[k] = Text::from(value);
            }
            if let Err(problem) = checked {
                self.at(rec.line, rec.start, i, problem);
            }
        }
        if !keys_ok {
            return None;
        }
        let device_use = match &device {
            DeviceCell::Device(id) => Some(DeviceUse {
                id: id.clone(),
                line: rec.line,
                start: rec.start,
            }),
            _ => None,
        };
        Some((
            DesiredExtension {
                number: extension,
                username: username.clone(),
                description,
                device,
                line: rec.line,
            },
            RowUser {
                username,
                fields: user,
                password,
                line: rec.line,
                start: rec.start,
            },
            device_use,
        ))
    }

    fn field_of(&self, column: Column) -> usize {
        self.layout.position(column).unwrap_or(usize::MAX)
    }

    fn duplicate_extensions(&mut self, extensions: &mut Vec<(DesiredExtension, usize)>) {
        if !extensions.is_sorted_by(|a, b| cmp_extension(&a.0.number, &b.0.number).is_le()) {
            extensions.sort_by(|a, b| cmp_extension(&a.0.number, &b.0.number).then(a.0.line.cmp(&b.0.line)));
        }
        let column = self.field_of(Column::Extension);
        let mut kept: Vec<(DesiredExtension, usize)> = Vec::with_capacity(extensions.len());
        for (ext, start) in extensions.drain(..) {
            if let Some((first, _)) = kept.last().filter(|(k, _)| k.number == ext.number) {
                let problem = Problem {
                    code: Code::DuplicateExtension,
                    message: format!("extension {} is also on line {}", ext.number, first.line),
                    hint: Some("an extension can appear once; remove one of the two rows".into()),
                };
                self.at(ext.line, start, column, problem);
                continue;
            }
            kept.push((ext, start));
        }
        *extensions = kept;
    }

    fn duplicate_devices(&mut self, mut devices: Vec<DeviceUse>) {
        devices.sort_by(|a, b| a.id.cmp(&b.id).then(a.line.cmp(&b.line)));
        let column = self.field_of(Column::Device);
        for pair in devices.windows(2) {
            let (first, second) = (&pair[0], &pair[1]);
            if first.id == second.id {
                let problem = Problem {
                    code: Code::DuplicateDevice,
                    message: format!("device {} is also assigned on line {}", second.id, first.line),
                    hint: Some("a device rings one extension; give one of the rows another device, `virtual`, or nothing".into()),
                };
                self.at(second.line, second.start, column, problem);
            }
        }
    }

    /// Merges the rows of each user; filled-in fields must agree.
    fn merge_users(&mut self, mut rows: Vec<RowUser>) -> Vec<DesiredUser> {
        // Rows arrive in line order, so a stable sort keeps each user's rows in order.
        rows.sort_by(|a, b| a.username.cmp(&b.username));
        let mut users: Vec<DesiredUser> = Vec::with_capacity(rows.len());
        let mut first_lines = [0u32; 5];
        let mut password_line = 0u32;
        for row in rows {
            let same = users.last().is_some_and(|u| u.username == row.username);
            if !same {
                first_lines = [row.line; 5];
                password_line = row.line;
                users.push(DesiredUser {
                    username: row.username,
                    fields: row.fields,
                    password: row.password,
                    line: row.line,
                });
                continue;
            }
            let Some(user) = users.last_mut() else { continue };
            let mut conflicts = Vec::new();
            for (k, value) in row.fields.into_iter().enumerate() {
                if value.is_empty() {
                    continue;
                }
                if user.fields[k].is_empty() {
                    user.fields[k] = value;
                    first_lines[k] = row.line;
                } else if user.fields[k] != value {
                    conflicts.push((
                        USER_COLUMNS[k],
                        format!(
                            "{} of user {} is `{}` here but `{}` on line {}",
                            USER_COLUMNS[k].header(),
                            user.username,
                            value,
                            user.fields[k],
                            first_lines[k]
                        ),
                    ));
                }
            }
            match (&user.password, row.password) {
                (None, Some(p)) => {
                    user.password = Some(p);
                    password_line = row.line;
                }
                (Some(a), Some(b)) if *a != b => conflicts.push((
                    Column::Password,
                    format!(
                        "the password of user {} differs from the one on line {password_line}",
                        user.username
                    ),
                )),
                _ => {}
            }
            for (column, message) in conflicts {
                let problem = Problem {
                    code: Code::ConflictingUserFields,
                    message,
                    hint: Some("rows of one user must agree; fill the field in once, or make the rows equal".into()),
                };
                let field = self.field_of(column);
                self.at(row.line, row.start, field, problem);
            }
        }
        users
    }
}

/// Reads and checks a whole file. Never panics, whatever the bytes.
pub fn validate<'a>(bytes: &'a [u8], policy: &Policy) -> Validated<'a> {
    let mut diagnostics = Vec::new();
    let text = match reader::decode(bytes, policy.read.encoding) {
        Ok((text, warning)) => {
            diagnostics.extend(warning);
            text
        }
        Err(error) => {
            return Validated {
                text: Cow::Borrowed(""),
                windows_1252: false,
                delimiter: b',',
                layout: Layout::default_order(),
                rows: 0,
                desired: Desired::default(),
                diagnostics: vec![error],
            };
        }
    };
    let delimiter = reader::detect_delimiter(&text.text, policy.read.delimiter);
    let (layout, rows, extensions, users, mut diagnostics) = {
        let mut pass = Pass {
            policy,
            text: &text.text,
            delimiter,
            layout: Layout::default_order(),
            diagnostics,
        };
        let mut records = Records::new(&text.text, delimiter);
        let mut extensions = Vec::new();
        let mut users = Vec::new();
        let mut devices = Vec::new();
        let mut first = true;
        let mut rows = 0usize;
        while let Some(next) = records.next() {
            let rec = match next {
                Ok(rec) => rec,
                Err(d) => {
                    pass.diagnostics.push(d);
                    break;
                }
            };
            if std::mem::take(&mut first) {
                let cells: Vec<&str> = rec.fields.iter().collect();
                let span = reader::field_span(&text.text, rec.start, delimiter, usize::MAX);
                match reader::detect_header(&cells, rec.line, span) {
                    Ok(Some(layout)) => {
                        pass.layout = layout;
                        continue;
                    }
                    Ok(None) => {}
                    Err(errors) => {
                        // Without a usable header the rows cannot be read reliably.
                        pass.diagnostics.extend(errors);
                        break;
                    }
                }
            }
            rows += 1;
            if let Some((ext, user, device)) = pass.row(&rec) {
                extensions.push((ext, rec.start));
                users.push(user);
                devices.extend(device);
            }
        }
        pass.duplicate_extensions(&mut extensions);
        pass.duplicate_devices(devices);
        let users = pass.merge_users(users);
        (pass.layout, rows, extensions, users, pass.diagnostics)
    };
    if rows == 0 && !policy.allow_empty && !diagnostics.iter().any(|d| d.code == Code::BadHeader) {
        diagnostics.push(
            Diagnostic::error(
                Code::EmptyDesiredState,
                "the file has no data rows; an empty desired state would mean removing everything",
            )
            .with_hint("if the directory really should be empty, pass --allow-empty"),
        );
    }
    diagnostic::sort(&mut diagnostics);
    let desired = Desired {
        managed: layout.managed(),
        users,
        extensions: extensions.into_iter().map(|(e, _)| e).collect(),
    };
    Validated {
        text: text.text,
        windows_1252: text.windows_1252,
        delimiter,
        layout,
        rows,
        desired,
        diagnostics,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "Extension,First Name,Last Name,Web Username,Password,Description,Email,IM,Mobile,Device MAC Address\n";

    fn check(csv: &str) -> Validated<'_> {
        validate(csv.as_bytes(), &Policy::default())
    }

    fn codes(v: &Validated<'_>) -> Vec<(Option<u32>, Option<u32>, &'static str)> {
        v.diagnostics.iter().map(|d| (d.line, d.column, d.code.as_str())).collect()
    }

    #[test]
    fn a_valid_file_gives_the_desired_state() {
        let csv = format!(
            "{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,\"Sales, desk\",jason@example.com,,+1 555 0100,00:04:f2:12:34:56\n\
             1002,Jason,Flynn,jflynn,,,,,,virtual\n1003,Zoë,Berg,zberg,Sec_ret34,,,,,\n"
        );
        let v = check(&csv);
        assert!(v.diagnostics.is_empty(), "{:?}", v.diagnostics);
        assert_eq!(v.rows, 3);
        assert_eq!(v.desired.users.len(), 2);
        let jflynn = v.desired.user("jflynn").unwrap();
        assert_eq!(jflynn.field(Column::Email), "jason@example.com");
        assert_eq!(jflynn.line, 2);
        let e = v.desired.extension("1001").unwrap();
        assert_eq!(e.device, DeviceCell::Device("0004F2123456".into()));
        assert_eq!(e.description, "Sales, desk");
        assert_eq!(v.desired.extension("1002").unwrap().device, DeviceCell::Virtual);
        assert_eq!(v.desired.extension("1003").unwrap().device, DeviceCell::Keep);
    }

    #[test]
    fn header_or_not_gives_the_same_desired_state() {
        let body = "1001,Jason,Flynn,jflynn,Sec_ret12,,,,,virtual\n";
        let with = check(&format!("{HEADER}{body}")).desired;
        let without = check(body).desired;
        assert_eq!(with.users[0].fields, without.users[0].fields);
        assert_eq!(with.users[0].password, without.users[0].password);
        assert_eq!(with.extensions.len(), 1);
        assert_eq!(with.extensions[0].number, without.extensions[0].number);
    }

    #[test]
    fn a_header_may_reorder_and_leave_out_optional_columns() {
        let v = check("Web Username;Extension;Last Name;First Name\njflynn;1001;Flynn;Jason\n");
        assert!(v.diagnostics.is_empty(), "{:?}", v.diagnostics);
        assert!(!v.desired.managed.contains(Column::Email));
        assert!(v.desired.managed.contains(Column::WebUsername));
        assert_eq!(v.desired.extensions[0].username, "jflynn");
    }

    #[test]
    fn every_row_rule_reports_line_and_column() {
        let csv = format!(
            "{HEADER}1001,Jason ,Flynn,jflynn,Sec_ret12,,,,,\n\
             1x,Maria,O'Brien,MGarcia,secret12,,maria@,,call me,00:04:F2:12:34\n\
             1003,,Chen,wchen,Sec_ret12,,,,,\n1004,Aisha,Khan\n"
        );
        let v = check(&csv);
        assert_eq!(
            codes(&v),
            [
                (Some(2), Some(2), "whitespace"),
                (Some(3), Some(1), "bad-extension"),
                (Some(3), Some(3), "name-apostrophe"),
                (Some(3), Some(4), "bad-username"),
                (Some(3), Some(5), "password-policy"),
                (Some(3), Some(7), "bad-email"),
                (Some(3), Some(9), "bad-mobile"),
                (Some(3), Some(10), "bad-device"),
                (Some(4), Some(2), "missing-required"),
                (Some(5), None, "wrong-column-count"),
            ]
        );
        assert!(v.diagnostics.iter().all(|d| !d.message.contains("secret12")));
        assert!(v.diagnostics[9].message.contains("3 columns, expected 10"));
    }

    #[test]
    fn duplicates_name_both_lines() {
        let csv = format!(
            "{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,,,,,0004F2000001\n\
             1002,Maria,Garcia,mgarcia,Sec_ret12,,,,,00:04:f2:00:00:01\n1001,Wei,Chen,wchen,Sec_ret12,,,,,\n"
        );
        let v = check(&csv);
        assert_eq!(codes(&v), [(Some(3), Some(10), "duplicate-device"), (Some(4), Some(1), "duplicate-extension")]);
        assert!(v.diagnostics[0].message.contains("line 2"));
        assert!(v.diagnostics[1].message.contains("line 2"));
    }

    #[test]
    fn rows_of_one_user_must_agree_where_filled_in() {
        let csv = format!(
            "{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,,a@example.com,,,\n\
             1002,Jason,Flynn,jflynn,,,,,,\n1003,Jason,Flinn,jflynn,Sec_ret99,,b@example.com,,,\n"
        );
        let v = check(&csv);
        assert_eq!(
            codes(&v),
            [
                (Some(4), Some(3), "conflicting-user-fields"),
                (Some(4), Some(5), "conflicting-user-fields"),
                (Some(4), Some(7), "conflicting-user-fields"),
            ]
        );
        assert!(v.diagnostics[0].message.contains("line 2"));
        assert!(!v.diagnostics[1].message.contains("Sec_ret"));
    }

    #[test]
    fn an_empty_file_is_refused_unless_allowed() {
        for csv in ["", HEADER, "\n\n,,,,,,,,,\n"] {
            let v = check(csv);
            assert_eq!(codes(&v), [(None, None, "empty-desired-state")], "{csv:?}");
        }
        let policy = Policy { allow_empty: true, ..Policy::default() };
        assert!(validate(HEADER.as_bytes(), &policy).diagnostics.is_empty());
    }

    #[test]
    fn quoted_line_breaks_report_the_line_where_the_record_starts() {
        let csv = format!("{HEADER}1001,Jason,Flynn,jflynn,Sec_ret12,\"two\nlines\",,,,\n1001,Wei,Chen,wchen,Sec_ret12,,,,,\n");
        let v = check(&csv);
        assert_eq!(codes(&v), [(Some(4), Some(1), "duplicate-extension")]);
    }

    #[test]
    fn windows_1252_file_from_real_bytes() {
        let mut bytes = HEADER.as_bytes().to_vec();
        bytes.extend_from_slice(b"1001,Zo\xEB,Berg,zberg,Sec_ret12,,,,,\r\n");
        let v = validate(&bytes, &Policy::default());
        assert_eq!(codes(&v), [(Some(2), None, "invalid-utf8")]);
        assert!(!v.has_errors());
        assert_eq!(v.desired.users[0].field(Column::FirstName), "Zoë");
    }
}
