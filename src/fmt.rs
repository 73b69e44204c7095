//! `pbxsync fmt`: the canonical form of a file, which never changes what it means.
//! Header row, columns in the canonical order (the ones the file has, no more:
//! adding a column would start managing it), trimmed cells, canonical MACs,
//! `virtual` in lower case, UTF-8, LF, blank rows dropped, row order kept.

use crate::csv::{Layout, Records};
use crate::model::Column;
use crate::validate::rules;

/// The canonical text of a decoded file that was read with `layout`.
pub fn canonical(text: &str, delimiter: u8, layout: &Layout) -> String {
    let order: Vec<(Column, usize)> = Column::ALL
        .into_iter()
        .filter_map(|c| layout.position(c).map(|i| (c, i)))
        .collect();
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::with_capacity(text.len() + 128));
    let header: Vec<&str> = order.iter().map(|(c, _)| c.header()).collect();
    let mut ok = writer.write_record(&header).is_ok();
    let mut records = Records::new(text, delimiter);
    let mut first = true;
    let mut cells: Vec<String> = Vec::with_capacity(order.len());
    while let Some(rec) = records.next() {
        if std::mem::take(&mut first) && layout.header_line == Some(rec.line) {
            continue;
        }
        cells.clear();
        cells.extend(
            order
                .iter()
                .map(|(c, i)| rules::canonical(*c, rec.get(*i)).into_owned()),
        );
        ok &= writer.write_record(&cells).is_ok();
    }
    let bytes = if ok {
        writer.into_inner().unwrap_or_default()
    } else {
        Vec::new()
    };
    String::from_utf8(bytes).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{Policy, validate};

    fn fmt(input: &str) -> String {
        let v = validate(input.as_bytes(), &Policy::default());
        canonical(&v.text, v.delimiter, &v.layout)
    }

    #[test]
    fn canonical_form() {
        let input = "1001, Jason ,Flynn,jflynn,Sec_ret12,\"Sales, desk\",,,,00:04:f2:12:34:56\r\n\r\n1002,Wei,Chen,wchen,Sec_ret12,,,,,VIRTUAL\r\n";
        assert_eq!(
            fmt(input),
            "Extension,First Name,Last Name,Web Username,Password,Description,Email,IM,Mobile,Device MAC Address\n\
             1001,Jason,Flynn,jflynn,Sec_ret12,\"Sales, desk\",,,,0004F2123456\n\
             1002,Wei,Chen,wchen,Sec_ret12,,,,,virtual\n"
        );
    }

    #[test]
    fn only_the_files_columns_in_canonical_order() {
        let input = "mac;username;ext;first;last\n0004f2123456;jflynn;1001;Jason;Flynn\n";
        assert_eq!(
            fmt(input),
            "Extension,First Name,Last Name,Web Username,Device MAC Address\n1001,Jason,Flynn,jflynn,0004F2123456\n"
        );
    }

    #[test]
    fn formula_like_cells_are_written_escaped_and_keep_their_value() {
        let input = format!(
            "{}1001,Jason,Flynn,-jflynn,=Sec_ret12,=SUM(A1),,@home,+1 555,\n1002,Wei,Chen,wchen,,'-x,,''y,,\n",
            crate::model::Column::ALL
                .map(crate::model::Column::header)
                .join(",")
                + "\n"
        );
        let out = fmt(&input);
        assert!(
            out.ends_with(
                "1001,Jason,Flynn,'-jflynn,'=Sec_ret12,'=SUM(A1),,'@home,+1 555,\n1002,Wei,Chen,wchen,,'-x,,'y,,\n"
            ),
            "{out}"
        );
        let before = validate(input.as_bytes(), &Policy::default());
        let after = validate(out.as_bytes(), &Policy::default());
        assert_eq!(before.desired.users, after.desired.users);
        assert_eq!(before.desired.extensions, after.desired.extensions);
        assert!(after.diagnostics.is_empty(), "{:?}", after.diagnostics);
        assert_eq!(fmt(&out), out);
    }

    #[test]
    fn formatting_is_idempotent() {
        let once = fmt("1001, Jason,Flynn,jflynn,Sec_ret12,,,,,0004f2123456\n");
        assert_eq!(fmt(&once), once);
    }
}
