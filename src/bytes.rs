//! A file's bytes, in memory or mapped: the CSV and the digest snapshot beside a
//! state file run to a hundred megabytes and to tens of megabytes.

use std::path::Path;
use std::sync::Arc;

/// A file's bytes: in memory (from git, or a small file), or mapped from the file
/// when it is large. A mapped file is read straight from the page cache: a
/// hundred-megabyte CSV is neither copied nor given fresh memory, which the
/// kernel would first have to clear. Clones share the bytes.
#[derive(Clone)]
pub enum Bytes {
    Owned(Arc<Vec<u8>>),
    Mapped(Arc<memmap2::Mmap>),
}

impl Bytes {
    /// Files from this size on are mapped.
    const MAP_FROM: u64 = 4 << 20;

    /// The bytes of the file at `path`.
    pub fn read(path: &Path) -> std::io::Result<Bytes> {
        let file = std::fs::File::open(path)?;
        if file.metadata()?.len() >= Bytes::MAP_FROM {
            // SAFETY: the map is only read. Another program truncating or
            // rewriting the file in place while pbxsync runs could end the
            // process, or show it other bytes than it checked (so that history
            // records a CSV other than the one planned), as it would `grep` or
            // `rg`, which map files the same way; editors and git replace files
            // rather than rewrite them. The target only ever receives the actions
            // of the plan that was shown.
            if let Ok(map) = unsafe { memmap2::Mmap::map(&file) } {
                return Ok(Bytes::Mapped(Arc::new(map)));
            }
        }
        std::fs::read(path).map(Bytes::from)
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(bytes: Vec<u8>) -> Bytes {
        Bytes::Owned(Arc::new(bytes))
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Owned(v) => v,
            Bytes::Mapped(m) => m,
        }
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl<T: AsRef<[u8]>> PartialEq<T> for Bytes {
    fn eq(&self, other: &T) -> bool {
        **self == *other.as_ref()
    }
}

impl Eq for Bytes {}

/// The length only: the content may be a hundred megabytes.
impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bytes({} bytes)", self.len())
    }
}
