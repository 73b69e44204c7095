//! The current state as a CSV in the ten-column format: header row first, sorted by
//! extension, passwords empty. Applying the export plans no change. Cells that a
//! spreadsheet would run as formulas are written with the `'` escape.

use crate::model::{Column, Directory, ExtensionKind};
use crate::validate::rules;
use std::borrow::Cow;

pub fn to_csv(dir: &Directory) -> String {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::with_capacity(dir.extensions.len() * 120 + 128));
    let mut ok = writer.write_record(Column::ALL.map(Column::header)).is_ok();
    for ext in &dir.extensions {
        let user = dir.user(&ext.username);
        let field = |c: Column| {
            user.map_or("", |u| {
                crate::model::USER_COLUMNS
                    .iter()
                    .position(|x| *x == c)
                    .map_or("", |k| u.fields[k].as_str())
            })
        };
        // An empty cell keeps an existing extension's device, and a voicemail-only
        // extension has none: so empty is exactly right for it.
        let device = match ext.kind {
            ExtensionKind::Device => ext.device.as_deref().unwrap_or(""),
            ExtensionKind::Virtual => "virtual",
            ExtensionKind::VoicemailOnly => "",
        };
        let cells = [
            ext.number.as_str(),
            field(Column::FirstName),
            field(Column::LastName),
            ext.username.as_str(),
            "",
            ext.description.as_str(),
            field(Column::Email),
            field(Column::Im),
            field(Column::Mobile),
            device,
        ];
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
