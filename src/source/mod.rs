//! Where the desired CSV comes from: a commit of a git repository (the normal
//! case), the working tree (to try uncommitted edits), or a plain file.
//!
//! This is an I/O edge: it returns bytes plus a [`SourceRevision`] saying where
//! they came from, so that an apply can be traced back to a commit and a later
//! run can tell cheaply whether anything changed.

use serde::Serialize;
use std::path::{Path, PathBuf};

mod git;

pub use crate::bytes::Bytes;

pub use git::{
    RefFolders, blame, on_ref, peek, read_blob, read_committed, read_git, ref_folders,
    working_tree_differs,
};

/// How the desired CSV was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// Read from a commit of a git repository.
    Git,
    /// Read from disk, inside a repository's working tree, possibly uncommitted.
    WorkingTree,
    /// Read from a plain file, git plays no part.
    File,
}

/// Where the desired CSV came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceRevision {
    pub kind: SourceKind,
    /// The CSV's path: relative to the repository root (with `/`) in git mode,
    /// as given otherwise.
    pub path: String,
    /// Full hex commit id (git mode only).
    pub commit: Option<String>,
    /// Git blob id (hex) of the content, computed for non-git sources too so
    /// that every apply records a comparable content id.
    pub blob: String,
    /// `Name <email>` of the commit's author (git mode only).
    pub author: Option<String>,
    /// The commit's summary line (git mode only).
    pub summary: Option<String>,
}

/// The CSV's bytes and where they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub bytes: Bytes,
    pub revision: SourceRevision,
}

/// Who last changed one line of the CSV.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineBlame {
    /// Full hex commit id.
    pub commit: String,
    /// The commit author's name.
    pub author: String,
    /// `YYYY-MM-DD` (UTC) of the commit time.
    pub date: String,
}

/// Why the CSV could not be read. Every message says what the user can do.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "{} is not inside a git repository; run `git init` and commit the CSV, or use --working-tree or --file to read it from disk",
        dir.display()
    )]
    NotARepository { dir: PathBuf },
    #[error(
        "the git repository at {} is bare (it has no working tree); point pbxsync at a clone with a checkout",
        repo.display()
    )]
    BareRepository { repo: PathBuf },
    #[error(
        "the git repository at {} has no commits yet; commit the CSV (`git add` then `git commit`), or use --working-tree to read it from disk",
        repo.display()
    )]
    EmptyRepository { repo: PathBuf },
    #[error(
        "the branch `{branch}` checked out in the git repository at {} has no commits yet; commit the CSV on it, check out a branch that has one, or set `source.ref` to one",
        repo.display()
    )]
    UnbornBranch { branch: String, repo: PathBuf },
    #[error(
        "revision `{rev}` not found in the git repository at {}; give a branch, tag or commit id (see `git log --oneline`)",
        repo.display()
    )]
    RevisionNotFound { rev: String, repo: PathBuf },
    #[error("revision `{rev}` names a {kind}, not a commit; give a branch, tag or commit id")]
    NotACommit { rev: String, kind: &'static str },
    #[error("revision `{rev}` is ambiguous; give more digits of the commit id, or a branch or tag")]
    AmbiguousRevision { rev: String },
    #[error(
        "{path} is not in commit {commit}; `git add` and `git commit` it, or use --working-tree to read it from disk"
    )]
    NotInCommit { path: String, commit: String },
    #[error("{path} is {what} in commit {commit}, not a file; point at the CSV file itself")]
    NotAFile {
        path: String,
        commit: String,
        what: &'static str,
    },
    #[error(
        "{} is outside the git repository at {}; move the CSV into the repository, or use --file",
        path.display(),
        repo.display()
    )]
    OutsideRepository { path: PathBuf, repo: PathBuf },
    #[error("`{0}` is not a git object id (expected hex digits)")]
    InvalidBlobId(String),
    #[error("cannot read {}: {source}; check the path and its permissions", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("git: {context}: {source}")]
    Git {
        context: String,
        #[source]
        source: git2::Error,
    },
}

/// Read a plain file; git plays no part (kind [`SourceKind::File`]). Its blob id
/// is computed on demand (`Pending`).
pub fn read_file(path: &Path) -> Result<Pending, SourceError> {
    read_from_disk(path, SourceKind::File)
}

/// Read the CSV as it is on disk, committed or not (kind
/// [`SourceKind::WorkingTree`]). No repository is needed; the blob id is what
/// `git hash-object` would print, so it compares equal to the committed blob
/// when the file is unchanged.
pub fn read_working_tree(path: &Path) -> Result<Pending, SourceError> {
    read_from_disk(path, SourceKind::WorkingTree)
}

fn read_from_disk(path: &Path, kind: SourceKind) -> Result<Pending, SourceError> {
    let bytes = Bytes::read(path).map_err(|source| SourceError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let revision = SourceRevision {
        kind,
        path: path.display().to_string(),
        commit: None,
        blob: String::new(),
        author: None,
        summary: None,
    };
    Ok(Pending {
        loaded: Loaded { bytes, revision },
        hashed: false,
        committed: None,
    })
}

/// A source whose blob id may still have to be computed: read from disk, it has
/// none yet (git gives it with the content). SHA-1 of a hundred megabytes takes
/// about as long as validating them on one core, so a plan computes it
/// `alongside` the validation instead of before.
#[derive(Debug, Clone)]
pub struct Pending {
    loaded: Loaded,
    hashed: bool,
    /// Bytes from the working tree standing for this commit's CSV
    /// (`read_committed`): they are used only if their blob id is the commit's.
    committed: Option<Committed>,
}

/// The commit whose CSV a working-tree copy stands for.
#[derive(Debug, Clone)]
pub struct Committed {
    pub config_dir: PathBuf,
    pub csv_path: PathBuf,
    /// Full hex id.
    pub commit: String,
    /// The working-tree copy, and how it stood before it was read.
    pub file: PathBuf,
    pub stamp: FileStamp,
}

/// What a write to a file changes: its length, identity and times. Taken
/// before a checkout is mapped and again after its bytes were hashed and used:
/// the same both times, and settled the first, nothing wrote to it between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp {
    len: u64,
    device: u64,
    inode: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl FileStamp {
    /// How long a file must have been left alone for a later write to show in
    /// its change time: file times come from a coarse clock, so two writes
    /// within one tick can share one.
    const SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

    pub fn of(meta: &std::fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp {
            len: meta.len(),
            device: meta.dev(),
            inode: meta.ino(),
            modified: (meta.mtime(), meta.mtime_nsec()),
            changed: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// The stamp of the file at `path` now.
    pub fn now(path: &Path) -> Option<FileStamp> {
        std::fs::metadata(path).ok().map(|m| FileStamp::of(&m))
    }

    /// Unchanged for `SETTLE`: any write from now on changes the stamp. (The
    /// change time cannot be set back, unlike the modification time.)
    pub fn settled(&self) -> bool {
        let changed = std::time::UNIX_EPOCH
            + std::time::Duration::from_secs(u64::try_from(self.changed.0).unwrap_or(0))
            + std::time::Duration::from_nanos(u64::try_from(self.changed.1).unwrap_or(0));
        std::time::SystemTime::now()
            .duration_since(changed)
            .is_ok_and(|age| age > FileStamp::SETTLE)
    }
}

impl From<Loaded> for Pending {
    /// A source whose blob id is known.
    fn from(loaded: Loaded) -> Pending {
        Pending {
            loaded,
            hashed: true,
            committed: None,
        }
    }
}

impl Pending {
    /// Bytes read from the working tree for `committed`, with the commit's
    /// revision (its blob id among it) as the one they must turn out to have.
    /// `vouched`: git's index says they have it, so they are not hashed.
    fn committed(loaded: Loaded, committed: Committed, vouched: bool) -> Pending {
        Pending {
            loaded,
            hashed: vouched,
            committed: Some(committed),
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.loaded.bytes
    }

    /// The blob id, when it is known without hashing (git gave it).
    pub fn known_blob(&self) -> Option<&str> {
        self.hashed.then_some(self.loaded.revision.blob.as_str())
    }

    /// Whether the blob id is known without hashing (for tests).
    #[cfg(test)]
    pub fn vouched(&self) -> bool {
        self.hashed
    }

    /// Whether the bytes were mapped or read (for tests).
    #[cfg(test)]
    pub fn bytes_kind(&self) -> &'static str {
        match self.loaded.bytes {
            Bytes::Mapped(_) => "mapped",
            Bytes::Owned(_) => "read",
        }
    }

    /// The source, its blob id computed now.
    pub fn hashed(self) -> Result<Loaded, SourceError> {
        let (loaded, ()) = self.alongside(|_| ())?;
        Ok(loaded)
    }

    /// Runs `work` on the bytes while another thread computes the blob id; the
    /// source with its blob id, and what `work` returned. A working-tree copy
    /// that is not the committed content after all is dropped with what `work`
    /// made of it; the commit is read and `work` runs again.
    pub fn alongside<R>(
        mut self,
        mut work: impl FnMut(&[u8]) -> R,
    ) -> Result<(Loaded, R), SourceError> {
        // The blob id, unless known already (from git, or vouched for).
        let bytes = &self.loaded.bytes;
        let (blob, result) = if self.hashed {
            (None, work(bytes))
        } else {
            std::thread::scope(|s| {
                let blob = s.spawn(|| blob_id(bytes));
                let result = work(bytes);
                let blob = blob
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                (Some(blob), result)
            })
        };
        // Not the commit's blob, or a mapped checkout that something wrote to
        // while it was hashed (or vouched for) and used (see `read_committed`).
        let not_the_commit = |c: &Committed| {
            blob.as_ref()
                .is_some_and(|b| *b != self.loaded.revision.blob)
                || (matches!(self.loaded.bytes, Bytes::Mapped(_))
                    && FileStamp::now(&c.file).as_ref() != Some(&c.stamp))
        };
        match self.committed {
            Some(c) if not_the_commit(&c) => {
                drop(result);
                let loaded = read_git(&c.config_dir, &c.csv_path, &c.commit)?;
                let result = work(&loaded.bytes);
                Ok((loaded, result))
            }
            _ => {
                if let Some(blob) = blob {
                    self.loaded.revision.blob = blob;
                }
                Ok((self.loaded, result))
            }
        }
    }
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The git blob id (hex) of `bytes`, as `git hash-object` prints it. No
/// repository is needed. SHA-1, with the SHA extensions of the CPU where it has
/// them: several times faster than libgit2's collision-detecting SHA-1 on a file
/// of a hundred megabytes.
pub fn blob_id(bytes: &[u8]) -> String {
    // SHA-1 of `blob <len>\0<content>`, like git.
    use sha1::Digest;
    let mut hasher = sha1::Sha1::new();
    hasher.update(format!("blob {}\0", bytes.len()).as_bytes());
    hasher.update(bytes);
    hex(&hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_id_of_known_content() {
        // `printf 'hello\n' | git hash-object --stdin`
        assert_eq!(
            blob_id(b"hello\n"),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
        // The empty blob has a well-known id.
        assert_eq!(blob_id(b""), "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391");
    }

    #[test]
    fn read_file_returns_bytes_and_file_kind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.csv");
        std::fs::write(&path, b"hello\n").unwrap();
        let loaded = read_file(&path).unwrap().hashed().unwrap();
        assert_eq!(loaded.bytes, b"hello\n");
        assert!(
            matches!(loaded.bytes, Bytes::Owned(_)),
            "small files are read"
        );
        assert_eq!(loaded.revision.kind, SourceKind::File);
        assert_eq!(loaded.revision.path, path.display().to_string());
        assert_eq!(
            loaded.revision.blob,
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
        assert_eq!(loaded.revision.commit, None);
        assert_eq!(loaded.revision.author, None);
    }

    #[test]
    fn a_file_is_hashed_alongside_work_on_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.csv");
        // Large enough to be mapped rather than read.
        let content: Vec<u8> = (0..5_000_123).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        let pending = read_file(&path).unwrap();
        assert!(matches!(pending.loaded.bytes, Bytes::Mapped(_)));
        let (loaded, length) = pending.clone().alongside(<[u8]>::len).unwrap();
        assert_eq!(length, content.len());
        assert_eq!(loaded.bytes, content);
        assert_eq!(loaded.revision.blob, blob_id(&content));
        assert_eq!(loaded, pending.hashed().unwrap());
        // A source that came with its blob id keeps it.
        let known = Loaded {
            bytes: b"hello\n".to_vec().into(),
            revision: SourceRevision {
                blob: "from git".into(),
                ..loaded.revision
            },
        };
        let (same, ()) = Pending::from(known.clone()).alongside(|_| ()).unwrap();
        assert_eq!(same, known);
    }

    #[test]
    fn missing_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.csv");
        let err = read_file(&path).unwrap_err();
        assert!(matches!(err, SourceError::Io { .. }));
        assert!(err.to_string().contains("nope.csv"), "{err}");
    }

    #[test]
    fn kind_serializes_snake_case() {
        let json = |k| serde_json::to_string(&k).unwrap();
        assert_eq!(json(SourceKind::Git), "\"git\"");
        assert_eq!(json(SourceKind::WorkingTree), "\"working_tree\"");
        assert_eq!(json(SourceKind::File), "\"file\"");
    }
}
