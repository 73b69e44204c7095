//! The digest index kept after an apply (see `Target::keep_index`), so that the
//! next plan at the same serial reads one file instead of every extension.
//!
//! Layout: `MAGIC`, the tag (u32 length, bytes), the usage (3 × u64), the entry
//! count (u64), the entries (number length u8, number, 0 or 1, digest u64 when 1),
//! then the xxh3 of everything before it (u64). Integers are little-endian.

use crate::backend::DigestIndex;
use crate::model::{Text, Usage};

const MAGIC: &[u8; 8] = b"PBXSDIG1";

/// The snapshot of `index` and `usage`, valid for `tag` only; `None` when an
/// extension number is too long for it (over 255 bytes): a plan takes an
/// extension missing from the index for a new one, so the index is whole or not
/// kept.
pub fn encode(tag: &str, index: &DigestIndex, usage: Usage) -> Option<Vec<u8>> {
    if index.iter().any(|(n, _)| n.len() > usize::from(u8::MAX)) {
        return None;
    }
    let mut out = Vec::with_capacity(64 + tag.len() + index.len() * 17);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(tag.len() as u32).to_le_bytes());
    out.extend_from_slice(tag.as_bytes());
    for n in [
        usage.extensions,
        usage.user_licenses,
        usage.voicemail_licenses,
    ] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(&(index.len() as u64).to_le_bytes());
    for (number, digest) in index {
        out.push(number.len() as u8);
        out.extend_from_slice(number.as_bytes());
        match digest {
            Some(d) => {
                out.push(1);
                out.extend_from_slice(&d.to_le_bytes());
            }
            None => out.push(0),
        }
    }
    let sum = xxhash_rust::xxh3::xxh3_64(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    Some(out)
}

/// The index and usage of a snapshot made for `tag`; `None` for another tag, or
/// bytes that are not a whole, intact snapshot.
pub fn decode(bytes: &[u8], tag: &str) -> Option<(DigestIndex, Usage)> {
    let (body, sum) = bytes.split_at_checked(bytes.len().checked_sub(8)?)?;
    if xxhash_rust::xxh3::xxh3_64(body) != u64::from_le_bytes(sum.try_into().ok()?) {
        return None;
    }
    let mut r = Reader(body);
    if r.take(8)? != MAGIC {
        return None;
    }
    let tag_len = u32::from_le_bytes(r.take(4)?.try_into().ok()?) as usize;
    if r.take(tag_len)? != tag.as_bytes() {
        return None;
    }
    let usage = Usage {
        extensions: r.u64()?,
        user_licenses: r.u64()?,
        voicemail_licenses: r.u64()?,
    };
    let count = usize::try_from(r.u64()?).ok()?;
    // At least two bytes an entry: a count beyond that is damage.
    let mut index = Vec::with_capacity(count.min(r.0.len() / 2));
    for _ in 0..count {
        let len = usize::from(r.take(1)?[0]);
        let number = Text::from(std::str::from_utf8(r.take(len)?).ok()?);
        let digest = match r.take(1)?[0] {
            0 => None,
            1 => Some(r.u64()?),
            _ => return None,
        };
        index.push((number, digest));
    }
    r.0.is_empty().then_some((index, usage))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> DigestIndex {
        vec![
            ("99".into(), Some(7)),
            ("1001".into(), None),
            ("1002".into(), Some(u64::MAX)),
        ]
    }

    fn usage() -> Usage {
        Usage {
            extensions: 3,
            user_licenses: 2,
            voicemail_licenses: 1,
        }
    }

    #[test]
    fn a_snapshot_reads_back_for_its_tag_only() {
        let bytes = encode("id:5:2", &index(), usage()).unwrap();
        assert_eq!(decode(&bytes, "id:5:2"), Some((index(), usage())));
        assert_eq!(decode(&bytes, "id:6:2"), None);
        assert_eq!(
            decode(&encode("t", &Vec::new(), Usage::default()).unwrap(), "t"),
            Some((Vec::new(), Usage::default()))
        );
    }

    #[test]
    fn an_index_with_a_number_too_long_is_not_kept_at_all() {
        let mut index = index();
        index.push(("1".repeat(256).as_str().into(), Some(1)));
        assert_eq!(encode("t", &index, usage()), None);
    }

    #[test]
    fn damaged_or_cut_snapshots_are_refused() {
        let bytes = encode("t", &index(), usage()).unwrap();
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut], "t"), None, "cut at {cut}");
        }
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            assert_eq!(decode(&damaged, "t"), None, "byte {at} flipped");
        }
    }
}
