//! The applied CSV a history entry records, compressed.

use serde::Serialize;

/// The applied CSV of a history entry, kept compressed: a directory of a million
/// users makes a CSV of over 100 MB, recorded with every apply. New entries use
/// zstd (a CSV of 1M rows shrinks to 8 MB, a quarter of LZ4's 33 MB: fewer pages
/// to write in the apply's transaction); entries written before keep LZ4.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordedCsv {
    /// The compressed bytes; empty when nothing was recorded.
    bytes: Vec<u8>,
    format: Compression,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Compression {
    /// A zstd frame.
    #[default]
    Zstd,
    /// An LZ4 block with its size prepended.
    Lz4,
}

/// zstd's fastest standard level: the CSV is compressed while the target writes,
/// on the second core, and must be done by the commit.
const ZSTD_LEVEL: i32 = 1;

/// As its text, as people read it; damaged bytes fail rather than read as none.
impl Serialize for RecordedCsv {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = self.checked_text().map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(&text)
    }
}

impl RecordedCsv {
    pub fn new(text: &str) -> RecordedCsv {
        if text.is_empty() {
            return RecordedCsv::default();
        }
        RecordedCsv::written(|out| out.write_all(text.as_bytes()))
    }

    /// The CSV that `write` writes, compressed as it comes: a CSV of a hundred
    /// megabytes is never held whole. Empty (nothing recorded) when `write` fails.
    pub fn written(
        write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
    ) -> RecordedCsv {
        let compress = || -> std::io::Result<Vec<u8>> {
            let mut encoder = zstd::stream::Encoder::new(Vec::new(), ZSTD_LEVEL)?;
            // 4 bytes that make a damaged entry fail to read instead of reading
            // as a CSV with some letters changed.
            encoder.include_checksum(true)?;
            write(&mut encoder)?;
            encoder.finish()
        };
        match compress() {
            Ok(bytes) => RecordedCsv {
                bytes,
                format: Compression::Zstd,
            },
            Err(_) => RecordedCsv::default(),
        }
    }

    /// As stored by `compressed` (an empty slice for no CSV).
    pub fn from_compressed(bytes: Vec<u8>, format: Compression) -> RecordedCsv {
        RecordedCsv { bytes, format }
    }

    pub fn compressed(&self) -> (&[u8], Compression) {
        (&self.bytes, self.format)
    }

    /// The CSV; empty when none was recorded or the stored bytes are damaged.
    pub fn text(&self) -> String {
        self.checked_text().unwrap_or_default()
    }

    /// The CSV (empty when none was recorded), or why the stored bytes cannot be
    /// read back. Entries recorded before zstd's checksum was added find only
    /// damage that breaks the compressed stream.
    pub fn checked_text(&self) -> Result<String, String> {
        if self.bytes.is_empty() {
            return Ok(String::new());
        }
        let bytes = match self.format {
            Compression::Zstd => {
                zstd::stream::decode_all(self.bytes.as_slice()).map_err(|e| e.to_string())
            }
            Compression::Lz4 => {
                lz4_flex::decompress_size_prepended(&self.bytes).map_err(|e| e.to_string())
            }
        }?;
        String::from_utf8(bytes).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_csv_reads_back_from_either_compression() {
        let text = "Extension,Password\n1001,\n".repeat(1000);
        let recorded = RecordedCsv::new(&text);
        let (bytes, format) = recorded.compressed();
        assert_eq!(format, Compression::Zstd);
        assert!(bytes.len() < text.len() / 10, "{} bytes", bytes.len());
        assert_eq!(recorded.text(), text);
        let lz4 = lz4_flex::compress_prepend_size(text.as_bytes());
        assert_eq!(
            RecordedCsv::from_compressed(lz4, Compression::Lz4).text(),
            text
        );
        assert_eq!(RecordedCsv::new("").text(), "");
        // Compressed as it is written, in pieces.
        let written =
            RecordedCsv::written(|out| text.lines().try_for_each(|line| writeln!(out, "{line}")));
        assert_eq!(written.compressed().1, Compression::Zstd);
        assert_eq!(written.text(), text);
        let failed = RecordedCsv::written(|out| {
            out.write_all(b"Extension,Password\n")?;
            Err(std::io::Error::other("disk full"))
        });
        assert_eq!(
            failed,
            RecordedCsv::default(),
            "a failed write records nothing"
        );
        assert_eq!(
            RecordedCsv::from_compressed(b"damaged".to_vec(), Compression::Zstd).text(),
            "",
            "damaged bytes read as no CSV"
        );
    }

    #[test]
    fn a_damaged_recorded_csv_never_reads_as_another_csv() {
        let text: String = (0..300)
            .map(|i| format!("{},First{i},Last{i},user{i},,Desk {i}\n", 1000 + i))
            .collect();
        let recorded = RecordedCsv::new(&text);
        let (bytes, format) = recorded.compressed();
        let mut errors = 0;
        for at in 0..bytes.len() {
            let mut damaged = bytes.to_vec();
            damaged[at] ^= 0x01;
            match RecordedCsv::from_compressed(damaged, format).checked_text() {
                Ok(read) => assert_eq!(read, text, "a flip at byte {at} read as another CSV"),
                Err(_) => errors += 1,
            }
        }
        assert!(errors > bytes.len() / 2, "{errors} of {}", bytes.len());
        let damaged = RecordedCsv::from_compressed(b"damaged".to_vec(), Compression::Zstd);
        assert!(
            serde_json::to_value(&damaged).is_err(),
            "not shown as no CSV"
        );
    }
}
