//! The current state as a CSV in the ten-column format: header row first, sorted by
//! extension, passwords empty. Applying the export plans no change. Cells that a
//! spreadsheet would run as formulas are written with the `'` escape.

use crate::model::{Column, Directory, Extension, ExtensionKind, User};
use crate::validate::rules;
use std::borrow::Cow;

/// The value export writes in `column` for `ext` (of `user`), before the formula
/// escape: passwords empty; the Device cell a device id, `virtual`, or empty for a
/// voicemail-only extension.
pub fn cell<'a>(ext: &'a Extension, user: Option<&'a User>, column: Column) -> &'a str {
    match column {
        Column::Extension => &ext.number,
        Column::WebUsername => &ext.username,
        Column::Password => "",
        Column::Description => &ext.description,
        // An empty cell keeps an existing extension's device, and a voicemail-only
        // extension has none: so empty is exactly right for it.
        Column::Device => match ext.kind {
            ExtensionKind::Device => ext.device.as_deref().unwrap_or(""),
            ExtensionKind::Virtual => "virtual",
            ExtensionKind::VoicemailOnly => "",
        },
        Column::FirstName | Column::LastName | Column::Email | Column::Im | Column::Mobile => {
            user.map_or("", |u| u.field(column))
        }
    }
}

pub fn to_csv(dir: &Directory) -> String {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::with_capacity(dir.extensions.len() * 120 + 128));
    let mut ok = writer.write_record(Column::ALL.map(Column::header)).is_ok();
    for ext in &dir.extensions {
        let user = dir.user(&ext.username);
        let cells = Column::ALL.map(|column| cell(ext, user, column));
        // A cell a spreadsheet would run as a formula gets the `'` escape, which
        // the reader takes away again: the export is safe to open and still plans
        // no change.
        let cells = Column::ALL.into_iter().zip(cells).map(|(column, value)| {
            match rules::escape(column, value) {
                Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
                Cow::Owned(s) => Cow::Owned(s.into_bytes()),
            }
        });
        ok &= writer.write_record(cells).is_ok();
    }
    match writer.into_inner() {
        Ok(bytes) if ok => String::from_utf8(bytes).unwrap_or_default(),
        _ => String::new(),
    }
}
