//! Reading the CSV out of a git commit, and who last changed each line of it.
//!
//! The CSV that gets applied is exactly the committed one, however the checkout
//! looks: it is read from the object database, or taken from the working tree
//! only when its git blob id proves it the committed content (`read_committed`).

use super::{
    Bytes, Committed, FileStamp, LineBlame, Loaded, Pending, SourceError, SourceKind,
    SourceRevision,
};
use crate::{FastMap, FastSet};
use git2::{ErrorCode, ObjectType, Oid, Repository};
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

/// Read the CSV at `csv_path` (absolute, or relative to `config_dir`) as it is
/// in the commit that `rev` names, in the repository containing `config_dir`.
pub fn read_git(config_dir: &Path, csv_path: &Path, rev: &str) -> Result<Loaded, SourceError> {
    read_located(&locate(config_dir, csv_path, rev)?)
}

/// The CSV of `located`, read from the object database.
fn read_located(located: &Located) -> Result<Loaded, SourceError> {
    let content = read_content(&located.repo, located.blob).map_err(git_error(format!(
        "reading {} at commit {}",
        located.path,
        short(located.commit)
    )))?;
    Ok(Loaded {
        bytes: content.into(),
        revision: revision(located)?,
    })
}

/// The CSV of commit `rev`, like `read_git`, but taken from the working tree
/// when the file there is as long as the committed one: a checkout usually
/// holds the committed content, and reading it from disk spares inflating it
/// (0.2-0.4 s for 123 MB). Its blob id is computed while it is validated
/// (`Pending::alongside`), and unless it is the committed blob's, the commit is
/// read after all and the work done again.
///
/// The bytes hashed must be the bytes used. The file is read into memory,
/// unless `map` is set and it has not changed for a while (`FileStamp::settled`):
/// then a large one is mapped, which spares a hundred megabytes of fresh memory,
/// and `alongside` also drops it for the commit when the file was written to
/// while it worked. An apply, which records the bytes in history after the
/// work, reads them.
pub fn read_committed(
    config_dir: &Path,
    csv_path: &Path,
    rev: &str,
    map: bool,
) -> Result<Pending, SourceError> {
    let located = locate(config_dir, csv_path, rev)?;
    let size = located
        .repo
        .odb()
        .and_then(|odb| odb.read_header(located.blob))
        .ok()
        .and_then(|(size, _)| u64::try_from(size).ok());
    let meta = std::fs::metadata(&located.file)
        .ok()
        .filter(|m| m.is_file() && Some(m.len()) == size);
    if let Some(meta) = meta {
        let stamp = FileStamp::of(&meta);
        let mapped = map && stamp.settled();
        let read = if mapped {
            Bytes::read(&located.file)
        } else {
            std::fs::read(&located.file).map(Bytes::from)
        };
        if let Ok(bytes) = read {
            // Git's own word, checked again after the work like the hash would be;
            // not taken for a file git converts (its word is then about the
            // converted bytes), which is hashed instead.
            let vouched = mapped && !converted(&located) && index_vouches(&located, &stamp);
            return Ok(Pending::committed(
                Loaded {
                    bytes,
                    revision: revision(&located)?,
                },
                Committed {
                    config_dir: config_dir.to_path_buf(),
                    csv_path: csv_path.to_path_buf(),
                    commit: located.commit.to_string(),
                    file: located.file.clone(),
                    stamp,
                },
                vouched,
            ));
        }
    }
    read_located(&located).map(Pending::from)
}

/// Whether git's index vouches for the working-tree file holding the committed
/// blob, as it does for `git status`: its entry names that blob and records the
/// file's length, inode and times as they are now, and the index was written
/// after the file last changed (else the entry is "racily clean" and git itself
/// would look at the content). Then the file need not be hashed.
fn index_vouches(located: &Located, stamp: &FileStamp) -> bool {
    let Ok(index) = located.repo.index() else {
        return false;
    };
    let Some(entry) = index.get_path(Path::new(&located.path), 0) else {
        return false;
    };
    let Some(written) = index
        .path()
        .and_then(|path| std::fs::metadata(path).ok())
        .map(|m| FileStamp::of(&m).modified)
    else {
        return false;
    };
    let time = |t: git2::IndexTime| (i64::from(t.seconds()), i64::from(t.nanoseconds()));
    // The index keeps the low 32 bits of these.
    let low = |n: u64| n as u32;
    entry.id == located.blob
        && entry.file_size == low(stamp.len)
        && entry.ino == low(stamp.inode)
        && entry.dev == low(stamp.device)
        && time(entry.mtime) == stamp.modified
        && time(entry.ctime) == stamp.changed
        && written > time(entry.mtime)
}

/// Whether git changes the bytes of the file between the commit and the checkout:
/// a clean/smudge filter, line-end conversion (`text`, `eol`, `crlf`,
/// `core.autocrlf`), another working-tree encoding, `$Id$` expansion. Git's index
/// then calls the checkout clean when converting it gives the committed blob,
/// which is not the checkout's bytes: a filter that keeps the length let `plan`
/// validate the checkout while `apply` (which hashes it) applied the commit.
/// An attribute that cannot be read counts as one that converts.
fn converted(located: &Located) -> bool {
    const CONVERTING: [&str; 6] = [
        "filter",
        "text",
        "eol",
        "crlf",
        "working-tree-encoding",
        "ident",
    ];
    let path = Path::new(&located.path);
    let by_attribute = CONVERTING.iter().any(|name| {
        match located
            .repo
            .get_attr_bytes(path, name, git2::AttrCheckFlags::default())
        {
            Ok(value) => !matches!(
                git2::AttrValue::from_bytes(value),
                git2::AttrValue::Unspecified | git2::AttrValue::False
            ),
            Err(_) => true,
        }
    });
    by_attribute
        || located.repo.config().is_ok_and(|config| {
            // `true` or `input`; unset or `false` converts nothing.
            config
                .get_string("core.autocrlf")
                .is_ok_and(|v| !v.eq_ignore_ascii_case("false"))
        })
}

/// Where the CSV of `located` comes from, with the commit's author and summary.
fn revision(located: &Located) -> Result<SourceRevision, SourceError> {
    let commit = located
        .repo
        .find_commit(located.commit)
        .map_err(git_error(format!("reading commit {}", located.commit)))?;

    // Author names and messages are not guaranteed to be UTF-8 (git stores
    // bytes); a lossy conversion is fine for a record meant for humans.
    let author = commit.author();
    let author = format!(
        "{} <{}>",
        String::from_utf8_lossy(author.name_bytes()),
        String::from_utf8_lossy(author.email_bytes())
    );
    let summary = commit
        .summary_bytes()
        .map(|s| String::from_utf8_lossy(s).into_owned());

    Ok(SourceRevision {
        kind: SourceKind::Git,
        path: located.path.clone(),
        commit: Some(located.commit.to_string()),
        blob: located.blob.to_string(),
        author: Some(author),
        summary,
    })
}

/// The folders whose changes may move a ref of the repository containing
/// `config_dir`: the git folder (`HEAD`) and the common one (`packed-refs`,
/// `refs/`, which a linked worktree shares with its main checkout).
pub fn ref_folders(config_dir: &Path) -> Result<RefFolders, SourceError> {
    let (repo, _) = open(config_dir)?;
    Ok(RefFolders {
        git_dir: repo.path().to_path_buf(),
        common_dir: repo.commondir().to_path_buf(),
    })
}

/// Where a repository keeps its refs (`ref_folders`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefFolders {
    /// Holds `HEAD`.
    pub git_dir: PathBuf,
    /// Holds `packed-refs` and `refs/`.
    pub common_dir: PathBuf,
}

/// The commit id that `rev` resolves to and the blob id of the CSV in it,
/// without reading the blob: enough to tell whether anything changed since
/// the last apply.
pub fn peek(
    config_dir: &Path,
    csv_path: &Path,
    rev: &str,
) -> Result<(String, String), SourceError> {
    let located = locate(config_dir, csv_path, rev)?;
    Ok((located.commit.to_string(), located.blob.to_string()))
}

/// Whether `commit` (a full id) is the commit `rev` names now or one of its
/// ancestors: `false` when history was rewritten since (a force push, an amend,
/// a rebase), and when the repository no longer has the commit at all.
pub fn on_ref(config_dir: &Path, commit: &str, rev: &str) -> Result<bool, SourceError> {
    let (repo, config_dir) = open(config_dir)?;
    let workdir = repo.workdir().map_or(config_dir, Path::to_path_buf);
    let head = resolve_commit(&repo, &workdir, rev)?.id();
    let Ok(commit) = Oid::from_str(commit) else {
        return Ok(false);
    };
    if commit == head {
        return Ok(true);
    }
    // Collected: on no ref at all.
    if repo.find_commit(commit).is_err() {
        return Ok(false);
    }
    repo.graph_descendant_of(head, commit)
        .map_err(git_error(format!("walking the history of `{rev}`")))
}

/// Whether the CSV in the working tree differs from the one committed in
/// `commit`, as `git status` tells it (an edit not committed, staged or not,
/// or a deleted file): git's index vouches for an unchanged file from its
/// stat info, so that costs no read of the file. Only asked when `commit` is
/// the one checked out (HEAD): the working tree is not an edit of another
/// commit. A question git cannot answer is answered `false`: this is a note
/// beside a plan, never a reason for one to fail.
pub fn working_tree_differs(config_dir: &Path, csv_path: &Path, commit: &str) -> bool {
    let Ok(located) = locate(config_dir, csv_path, "HEAD") else {
        return false;
    };
    if located.commit.to_string() != commit {
        return false;
    }
    located
        .repo
        .status_file(Path::new(&located.path))
        .is_ok_and(|status| !status.is_empty() && !status.contains(git2::Status::IGNORED))
}

/// Who last changed each of `lines` (1-based) of `loaded`, a CSV read by
/// `read_git`: the newest commit whose version of the file has the line and
/// whose parents' versions do not. Lines past the end are left out.
///
/// Only the commits that changed the file are read, newest first, and only
/// until every line is placed: for a line changed since the last apply that is
/// a version or two. (libgit2's blame diffs every version of the file against
/// the one before, all the way back: 2.3 s for a file of a million lines with
/// a history of two commits.) A line is matched by its text, so a line moved
/// within the file keeps the commit that last changed it; at a merge it is
/// followed into the first parent that has it.
pub fn blame(
    config_dir: &Path,
    loaded: &Loaded,
    lines: &[u32],
) -> Result<HashMap<u32, LineBlame>, SourceError> {
    let (Some(commit), SourceKind::Git) = (&loaded.revision.commit, loaded.revision.kind) else {
        return Ok(HashMap::new());
    };
    let (repo, _) = open(config_dir)?;
    let context = || format!("blaming {} at commit {commit}", loaded.revision.path);
    let rel = Path::new(&loaded.revision.path);
    let start = Oid::from_str(commit)
        .and_then(|id| repo.find_commit(id))
        .map_err(git_error(context()))?;
    // The text of each wanted line, with the numbers of the lines that have it.
    let mut wanted: FastMap<&[u8], Vec<u32>> = FastMap::default();
    let mut numbers: Vec<u32> = lines.to_vec();
    numbers.sort_unstable();
    numbers.dedup();
    let mut next = numbers.iter().peekable();
    for (number, text) in (1u32..).zip(lines_of(&loaded.bytes)) {
        let Some(&&want) = next.peek() else { break };
        if number == want {
            wanted.entry(text).or_default().push(number);
            next.next();
        }
    }
    // The id of the file in a commit, if it has it.
    let blob_in = |commit: &git2::Commit<'_>| -> Result<Option<Oid>, git2::Error> {
        match commit.tree()?.get_path(rel) {
            Ok(entry) if entry.kind() == Some(ObjectType::Blob) => Ok(Some(entry.id())),
            Ok(_) => Ok(None),
            Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    };
    let start_blob = blob_in(&start).map_err(git_error(context()))?;
    let mut found: HashMap<Oid, LineBlame> = HashMap::new();
    let mut placed: HashMap<u32, LineBlame> = HashMap::new();
    let mut place = |commit: &git2::Commit<'_>, texts: Vec<&[u8]>| {
        if texts.is_empty() {
            return;
        }
        let line = found
            .entry(commit.id())
            .or_insert_with(|| LineBlame {
                commit: commit.id().to_string(),
                author: String::from_utf8_lossy(commit.author().name_bytes()).into_owned(),
                date: utc_date(commit.time().seconds()),
            })
            .clone();
        for text in texts {
            for &number in &wanted[text] {
                placed.insert(number, line.clone());
            }
        }
    };
    let mut walk = Walk::default();
    walk.push(start, start_blob, wanted.keys().copied().collect());
    while let Some((commit, blob, texts)) = walk.pop() {
        let parents: Vec<(git2::Commit<'_>, Option<Oid>)> = commit
            .parents()
            .map(|p| blob_in(&p).map(|b| (p, b)))
            .collect::<Result<_, _>>()
            .map_err(git_error(context()))?;
        // A parent with the same file: the lines are older than this commit.
        if let Some(i) = parents.iter().position(|(_, b)| b.is_some() && *b == blob) {
            let (parent, blob) = parents.into_iter().nth(i).expect("found above");
            walk.push(parent, blob, texts);
            continue;
        }
        let mut left = texts;
        for (parent, parent_blob) in parents {
            let Some(parent_blob) = parent_blob else {
                continue;
            };
            if left.is_empty() {
                break;
            }
            let content = read_content(&repo, parent_blob).map_err(git_error(context()))?;
            let there = lines_among(&content, &left);
            let (had, rest): (Vec<&[u8]>, Vec<&[u8]>) =
                left.into_iter().partition(|text| there.contains(text));
            left = rest;
            if !had.is_empty() {
                walk.push(parent, Some(parent_blob), had);
            }
        }
        // In no parent: this commit wrote them.
        place(&commit, left);
    }
    Ok(placed)
}

/// The commits a blame has still to look at, newest first, each with the file's
/// id in it and the lines traced into it. Lines that reach a commit along two
/// paths (both sides of a merge) are looked up together: no version of the file
/// is read twice for them.
#[derive(Default)]
struct Walk<'r, 't> {
    queue: std::collections::BinaryHeap<(i64, Oid)>,
    traced: HashMap<Oid, Traced<'r, 't>>,
}

/// A commit, the id of the file in it, and the lines traced into it.
type Traced<'r, 't> = (git2::Commit<'r>, Option<Oid>, Vec<&'t [u8]>);

impl<'r, 't> Walk<'r, 't> {
    fn push(&mut self, commit: git2::Commit<'r>, blob: Option<Oid>, texts: Vec<&'t [u8]>) {
        match self.traced.entry(commit.id()) {
            std::collections::hash_map::Entry::Occupied(mut entry) => {
                entry.get_mut().2.extend(texts)
            }
            std::collections::hash_map::Entry::Vacant(entry) => {
                self.queue.push((commit.time().seconds(), commit.id()));
                entry.insert((commit, blob, texts));
            }
        }
    }

    fn pop(&mut self) -> Option<Traced<'r, 't>> {
        let (_, id) = self.queue.pop()?;
        self.traced.remove(&id)
    }
}

/// The lines of `content`, without their `\n` (or lone `\r`: lines are counted as
/// the reader counts them); a last line without one counts.
fn lines_of(content: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut from = 0;
    memchr::memchr2_iter(b'\n', b'\r', content)
        .filter(|&i| crate::csv::ends_line(content, i))
        .chain(std::iter::once(content.len()))
        .map(move |end| {
            let line = &content[from.min(end)..end];
            from = end + 1;
            line
        })
}

/// Which of `texts` are lines of `content`. Only lines as long as one of them
/// are hashed: most lines of an older version are not.
fn lines_among<'t>(content: &[u8], texts: &[&'t [u8]]) -> FastSet<&'t [u8]> {
    let wanted: FastSet<&[u8]> = texts.iter().copied().collect();
    let longest = texts.iter().map(|t| t.len()).max().unwrap_or(0);
    let mut lengths = vec![false; longest + 1];
    for text in texts {
        lengths[text.len()] = true;
    }
    lines_of(content)
        .filter(|line| lengths.get(line.len()) == Some(&true))
        .filter_map(|line| wanted.get(line).copied())
        .collect()
}

/// The content of blob `blob_id` in the repository containing `config_dir`,
/// or `None` when the repository does not have it (e.g. a commit that was
/// applied once but has since been garbage-collected away).
pub fn read_blob(config_dir: &Path, blob_id: &str) -> Result<Option<Vec<u8>>, SourceError> {
    // `Oid::from_str` accepts abbreviations and pads them with zeros, which
    // would silently look up the wrong object; insist on a full id (SHA-1 or
    // SHA-256).
    let full_length = matches!(blob_id.len(), 40 | 64);
    if !full_length || !blob_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(SourceError::InvalidBlobId(blob_id.to_string()));
    }
    let oid =
        Oid::from_str(blob_id).map_err(|_| SourceError::InvalidBlobId(blob_id.to_string()))?;
    let (repo, _) = open(config_dir)?;
    match read_content(&repo, oid) {
        Ok(content) => Ok(Some(content)),
        // libgit2 also answers NotFound when the object exists but is not a
        // blob, which is the same thing for the caller.
        Err(e) if e.code() == ErrorCode::NotFound => Ok(None),
        Err(e) => Err(git_error(format!("reading blob {blob_id}"))(e)),
    }
}

/// The CSV pinned down in one commit.
struct Located {
    repo: Repository,
    commit: Oid,
    /// The same path with `/` separators, for people and records.
    path: String,
    /// Where the file is in the working tree.
    file: PathBuf,
    blob: Oid,
}

fn locate(config_dir: &Path, csv_path: &Path, rev: &str) -> Result<Located, SourceError> {
    let (repo, config_dir) = open(config_dir)?;
    let workdir = match repo.workdir() {
        Some(dir) => dir.canonicalize().map_err(|source| SourceError::Io {
            path: dir.to_path_buf(),
            source,
        })?,
        None => {
            return Err(SourceError::BareRepository {
                repo: repo.path().to_path_buf(),
            });
        }
    };
    let rel = repo_relative(&workdir, &config_dir.join(csv_path))?;
    let path = slash_path(&rel);

    let commit = resolve_commit(&repo, &workdir, rev)?;
    let commit_id = commit.id();
    let tree = commit
        .tree()
        .map_err(git_error(format!("reading the tree of commit {commit_id}")))?;
    if rel.as_os_str().is_empty() {
        return Err(SourceError::NotAFile {
            path: ".".to_string(),
            commit: short(commit_id),
            what: "the repository root",
        });
    }
    let entry = match tree.get_path(&rel) {
        Ok(entry) => entry,
        Err(e) if e.code() == ErrorCode::NotFound => {
            return Err(SourceError::NotInCommit {
                path,
                commit: short(commit_id),
            });
        }
        Err(e) => {
            return Err(git_error(format!(
                "looking up {path} in commit {commit_id}"
            ))(e));
        }
    };
    // A symlink is stored as a blob holding the link target; reading it would
    // "succeed" with nonsense, so it is rejected like a directory.
    const SYMLINK_MODE: i32 = 0o120000;
    let what = match entry.kind() {
        Some(ObjectType::Blob) if entry.filemode() == SYMLINK_MODE => Some("a symlink"),
        Some(ObjectType::Blob) => None,
        Some(ObjectType::Tree) => Some("a directory"),
        Some(ObjectType::Commit) => Some("a submodule"),
        _ => Some("not a regular file"),
    };
    if let Some(what) = what {
        return Err(SourceError::NotAFile {
            path,
            commit: short(commit_id),
            what,
        });
    }
    let blob = entry.id();
    // These borrow `repo`, which moves into the result.
    drop(entry);
    drop(tree);
    drop(commit);
    Ok(Located {
        repo,
        commit: commit_id,
        path,
        file: workdir.join(&rel),
        blob,
    })
}

/// The content of blob `id`. A loose object is inflated straight into a buffer
/// of its size; libgit2 cannot stream a packed one, which it reads whole and
/// this copies.
fn read_content(repo: &Repository, id: Oid) -> Result<Vec<u8>, git2::Error> {
    if let Ok(odb) = repo.odb()
        && let Ok((mut reader, size, ObjectType::Blob)) = odb.reader(id)
    {
        let mut content = Vec::with_capacity(size);
        if std::io::Read::read_to_end(&mut reader, &mut content).is_ok() && content.len() == size {
            return Ok(content);
        }
    }
    repo.find_blob(id).map(|blob| blob.content().to_vec())
}

/// Open the repository containing `config_dir`; also returns `config_dir`
/// canonicalized, so that paths relative to it compare with the workdir.
fn open(config_dir: &Path) -> Result<(Repository, PathBuf), SourceError> {
    // libgit2 hashes every object it reads again to check its id, by default
    // with SHA-1DC (collision-detecting SHA-1): half the time of reading a CSV
    // of 123 MB (0.25 s of 0.55 s). git itself does not do this on reads; the
    // objects' zlib streams still carry their checksums, which catch damage on
    // disk.
    static HASH_CHECK_OFF: std::sync::Once = std::sync::Once::new();
    HASH_CHECK_OFF.call_once(|| git2::opts::strict_hash_verification(false));
    let dir = config_dir
        .canonicalize()
        .map_err(|source| SourceError::Io {
            path: config_dir.to_path_buf(),
            source,
        })?;
    match Repository::discover(&dir) {
        Ok(repo) => Ok((repo, dir)),
        Err(e) if e.code() == ErrorCode::NotFound => Err(SourceError::NotARepository { dir }),
        Err(e) => Err(git_error(format!(
            "opening the repository containing {}",
            dir.display()
        ))(e)),
    }
}

fn resolve_commit<'r>(
    repo: &'r Repository,
    workdir: &Path,
    rev: &str,
) -> Result<git2::Commit<'r>, SourceError> {
    let object = match repo.revparse_single(rev) {
        Ok(object) => object,
        Err(e) if e.code() == ErrorCode::Ambiguous => {
            return Err(SourceError::AmbiguousRevision {
                rev: rev.to_string(),
            });
        }
        Err(e) => {
            // A fresh `git init` has an unborn HEAD and no refs at all; say
            // so, rather than that "HEAD" does not exist.
            if is_empty(repo) {
                return Err(SourceError::EmptyRepository {
                    repo: workdir.to_path_buf(),
                });
            }
            // `git checkout --orphan` or `git switch --orphan`: HEAD names a
            // branch that has no commit yet, while others have.
            if rev == "HEAD"
                && let Some(branch) = unborn_branch(repo)
            {
                return Err(SourceError::UnbornBranch {
                    branch,
                    repo: workdir.to_path_buf(),
                });
            }
            return match e.code() {
                ErrorCode::NotFound | ErrorCode::InvalidSpec | ErrorCode::UnbornBranch => {
                    Err(SourceError::RevisionNotFound {
                        rev: rev.to_string(),
                        repo: workdir.to_path_buf(),
                    })
                }
                _ => Err(git_error(format!("resolving revision `{rev}`"))(e)),
            };
        }
    };
    // A tag may point at a tree or a blob, and a raw id may name any object.
    object
        .peel_to_commit()
        .map_err(|_| SourceError::NotACommit {
            rev: rev.to_string(),
            kind: object.kind().map_or("unknown", |k| k.str()),
        })
}

/// The branch HEAD names when it has no commit yet.
fn unborn_branch(repo: &Repository) -> Option<String> {
    match repo.head() {
        Err(e) if e.code() == ErrorCode::UnbornBranch => {}
        _ => return None,
    }
    let head = repo.find_reference("HEAD").ok()?;
    let target = head.symbolic_target().ok().flatten()?;
    Some(
        target
            .strip_prefix("refs/heads/")
            .unwrap_or(target)
            .to_string(),
    )
}

/// True when HEAD is unborn and there are no refs at all: nothing was ever
/// committed (or fetched).
fn is_empty(repo: &Repository) -> bool {
    let unborn = matches!(repo.head(), Err(e) if e.code() == ErrorCode::UnbornBranch || e.code() == ErrorCode::NotFound);
    unborn
        && repo
            .references()
            .map(|mut refs| refs.next().is_none())
            .unwrap_or(false)
}

/// `path` (absolute) relative to `workdir` (canonical).
///
/// The CSV may exist in the commit but not on disk (deleted, or not checked
/// out), so the file itself cannot be canonicalized. Instead the deepest
/// existing ancestor of its directory is canonicalized (resolving symlinks
/// such as a temp dir's) and the rest is applied lexically. The file name is
/// kept as given: if the CSV is itself a symlink, the path in git is the
/// link's, not its target's.
fn repo_relative(workdir: &Path, path: &Path) -> Result<PathBuf, SourceError> {
    let (dir, file) = match (path.parent(), path.file_name()) {
        (Some(dir), Some(file)) => (dir, Some(file)),
        _ => (path, None),
    };
    let mut resolved = None;
    for ancestor in dir.ancestors() {
        match ancestor.canonicalize() {
            Ok(canonical) => {
                let rest = dir.strip_prefix(ancestor).unwrap_or(Path::new(""));
                resolved = Some((canonical, rest));
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(SourceError::Io {
                    path: ancestor.to_path_buf(),
                    source,
                });
            }
        }
    }
    // The root always exists, so this only happens for a relative `path`,
    // which callers never pass; fall back to a lexical treatment.
    let (mut full, rest) = resolved.unwrap_or_else(|| (PathBuf::new(), dir));
    for component in rest.components() {
        match component {
            Component::Normal(name) => full.push(name),
            Component::ParentDir => {
                full.pop();
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    if let Some(file) = file {
        full.push(file);
    }
    match full.strip_prefix(workdir) {
        Ok(rel) => Ok(rel.to_path_buf()),
        Err(_) => Err(SourceError::OutsideRepository {
            path: full,
            repo: workdir.to_path_buf(),
        }),
    }
}

/// A repository-relative path with `/` separators, as git writes it.
fn slash_path(rel: &Path) -> String {
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// The abbreviated commit id shown in messages.
fn short(id: Oid) -> String {
    let mut hex = id.to_string();
    hex.truncate(7);
    hex
}

fn git_error(context: String) -> impl FnOnce(git2::Error) -> SourceError {
    move |source| SourceError::Git { context, source }
}

use crate::time::utc_date;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{SourceKind, read_working_tree};
    use std::process::Command;
    use tempfile::TempDir;

    /// A scratch repository driven by the real `git` CLI, isolated from the
    /// user's and system's git configuration.
    struct TestRepo {
        dir: TempDir,
    }

    const ALICE: (&str, &str) = ("Alice Example", "alice@example.com");
    const BOB: (&str, &str) = ("Bob Example", "bob@example.com");

    impl TestRepo {
        fn new() -> Self {
            let repo = TestRepo {
                dir: tempfile::tempdir().unwrap(),
            };
            repo.git(ALICE, "2024-01-01T00:00:00+0000", &["init", "-q"]);
            repo
        }

        fn path(&self) -> &Path {
            self.dir.path()
        }

        /// Run git in the repository as `who`, with author and committer date
        /// `date`; returns trimmed stdout.
        fn git(&self, who: (&str, &str), date: &str, args: &[&str]) -> String {
            let output = Command::new("git")
                .current_dir(self.path())
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_AUTHOR_DATE", date)
                .env("GIT_COMMITTER_DATE", date)
                .args(["-c", &format!("user.name={}", who.0)])
                .args(["-c", &format!("user.email={}", who.1)])
                .args([
                    "-c",
                    "init.defaultBranch=main",
                    "-c",
                    "commit.gpgsign=false",
                ])
                .args(args)
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "git {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8(output.stdout).unwrap().trim().to_string()
        }

        fn write(&self, rel: &str, content: &str) {
            let path = self.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }

        /// Write `rel`, commit everything as `who` at `date`; returns the
        /// full commit id.
        fn commit_file(
            &self,
            who: (&str, &str),
            date: &str,
            rel: &str,
            content: &str,
            message: &str,
        ) -> String {
            self.write(rel, content);
            self.git(who, date, &["add", "-A"]);
            self.git(who, date, &["commit", "-q", "-m", message]);
            self.git(who, date, &["rev-parse", "HEAD"])
        }
    }

    const V1: &str = "id,name\n1,Ann\n2,Ben\n";
    const V2: &str = "id,name\n1,Ann\n2,Ben\n3,Cat\n";

    /// A repository with two commits of `users.csv` by different authors,
    /// tagged `v1` and branch `old` at the first; returns the commit ids.
    fn two_commits() -> (TestRepo, String, String) {
        let repo = TestRepo::new();
        let first = repo.commit_file(
            ALICE,
            "2024-03-05T10:00:00+0000",
            "users.csv",
            V1,
            "Add users\n\nFirst batch.",
        );
        repo.git(ALICE, "2024-03-05T10:00:00+0000", &["tag", "v1"]);
        repo.git(ALICE, "2024-03-05T10:00:00+0000", &["branch", "old"]);
        // 23:30 at UTC-2 is the next day in UTC.
        let second = repo.commit_file(BOB, "2024-03-06T23:30:00-0200", "users.csv", V2, "Add Cat");
        (repo, first, second)
    }

    fn csv() -> &'static Path {
        Path::new("users.csv")
    }

    /// The commit of every line of the CSV at HEAD, in line order.
    fn commits(repo: &TestRepo) -> Vec<String> {
        blame_all(repo, "HEAD")
            .into_iter()
            .map(|b| b.commit)
            .collect()
    }

    /// The blame of every line of the CSV at `rev`, in line order.
    fn blame_all(repo: &TestRepo, rev: &str) -> Vec<LineBlame> {
        let loaded = read_git(repo.path(), csv(), rev).unwrap();
        let count = lines_of(&loaded.bytes).count() as u32;
        let count = if loaded.bytes.ends_with(b"\n") || loaded.bytes.is_empty() {
            count - 1
        } else {
            count
        };
        let all: Vec<u32> = (1..=count).collect();
        let mut lines = blame(repo.path(), &loaded, &all).unwrap();
        all.iter().map(|n| lines.remove(n).unwrap()).collect()
    }

    #[test]
    fn head_is_the_committed_content_not_the_working_tree() {
        let (repo, _, second) = two_commits();
        repo.write("users.csv", "uncommitted edit\n");
        let loaded = read_git(repo.path(), csv(), "HEAD").unwrap();
        assert_eq!(loaded.bytes, V2.as_bytes());
        let revision = loaded.revision;
        assert_eq!(revision.kind, SourceKind::Git);
        assert_eq!(revision.path, "users.csv");
        assert_eq!(revision.commit.as_deref(), Some(second.as_str()));
        assert_eq!(
            revision.blob,
            repo.git(BOB, "2024-01-01", &["rev-parse", "HEAD:users.csv"])
        );
        assert_eq!(
            revision.author.as_deref(),
            Some("Bob Example <bob@example.com>")
        );
        assert_eq!(revision.summary.as_deref(), Some("Add Cat"));
    }

    #[test]
    fn reads_at_parent_tag_branch_and_commit_ids() {
        let (repo, first, second) = two_commits();
        for rev in ["HEAD~1", "v1", "old", &first, &first[..8]] {
            let loaded = read_git(repo.path(), csv(), rev).unwrap();
            assert_eq!(loaded.bytes, V1.as_bytes(), "rev {rev}");
            assert_eq!(
                loaded.revision.commit.as_deref(),
                Some(first.as_str()),
                "rev {rev}"
            );
            assert_eq!(
                loaded.revision.author.as_deref(),
                Some("Alice Example <alice@example.com>")
            );
            // Only the summary line, not the body.
            assert_eq!(loaded.revision.summary.as_deref(), Some("Add users"));
        }
        let loaded = read_git(repo.path(), csv(), "main").unwrap();
        assert_eq!(loaded.revision.commit.as_deref(), Some(second.as_str()));
    }

    #[test]
    fn working_tree_blob_id_matches_git_hash_object() {
        let (repo, _, _) = two_commits();
        repo.write("users.csv", "uncommitted edit\n");
        let path = repo.path().join("users.csv");
        let loaded = read_working_tree(&path).unwrap().hashed().unwrap();
        assert_eq!(loaded.bytes, b"uncommitted edit\n");
        assert_eq!(loaded.revision.kind, SourceKind::WorkingTree);
        assert_eq!(loaded.revision.commit, None);
        let expected = repo.git(ALICE, "2024-01-01", &["hash-object", "users.csv"]);
        assert_eq!(loaded.revision.blob, expected);
        assert_eq!(crate::source::blob_id(&loaded.bytes), expected);
    }

    #[test]
    fn unchanged_working_tree_has_the_committed_blob_id() {
        let (repo, _, _) = two_commits();
        let on_disk = read_working_tree(&repo.path().join("users.csv"))
            .unwrap()
            .hashed()
            .unwrap();
        let (_, blob) = peek(repo.path(), csv(), "HEAD").unwrap();
        assert_eq!(on_disk.revision.blob, blob);
    }

    #[test]
    fn config_dir_in_a_subdirectory() {
        let repo = TestRepo::new();
        let commit = repo.commit_file(
            ALICE,
            "2024-03-05T10:00:00+0000",
            "pbx/data/users.csv",
            V1,
            "Add",
        );
        let config_dir = repo.path().join("pbx");
        let loaded = read_git(&config_dir, Path::new("data/users.csv"), "HEAD").unwrap();
        assert_eq!(loaded.bytes, V1.as_bytes());
        assert_eq!(loaded.revision.path, "pbx/data/users.csv");
        assert_eq!(loaded.revision.commit.as_deref(), Some(commit.as_str()));
        // `..` and an absolute path reach the same file.
        let via_parent = read_git(
            &config_dir.join("data"),
            Path::new("../data/./users.csv"),
            "HEAD",
        )
        .unwrap();
        assert_eq!(via_parent.revision, loaded.revision);
        let absolute = read_git(&config_dir, &config_dir.join("data/users.csv"), "HEAD").unwrap();
        assert_eq!(absolute.revision, loaded.revision);
    }

    #[test]
    fn reads_a_file_deleted_from_disk_with_its_directory() {
        let repo = TestRepo::new();
        repo.commit_file(
            ALICE,
            "2024-03-05T10:00:00+0000",
            "data/users.csv",
            V1,
            "Add",
        );
        std::fs::remove_dir_all(repo.path().join("data")).unwrap();
        let loaded = read_git(repo.path(), Path::new("data/users.csv"), "HEAD").unwrap();
        assert_eq!(loaded.bytes, V1.as_bytes());
        assert_eq!(loaded.revision.path, "data/users.csv");
    }

    #[test]
    fn peek_agrees_with_read_git() {
        let (repo, first, _) = two_commits();
        for rev in ["HEAD", "HEAD~1", "v1"] {
            let loaded = read_git(repo.path(), csv(), rev).unwrap();
            let (commit, blob) = peek(repo.path(), csv(), rev).unwrap();
            assert_eq!(Some(commit), loaded.revision.commit);
            assert_eq!(blob, loaded.revision.blob);
        }
        assert_eq!(peek(repo.path(), csv(), "v1").unwrap().0, first);
    }

    #[test]
    fn a_checkout_of_the_committed_content_is_read_from_disk() {
        let (repo, _, _) = two_commits();
        let committed = read_git(repo.path(), csv(), "HEAD").unwrap();
        // The object replaced by one of other content as long: git now gives
        // that, so content read from git would show.
        let object = |id: &str| {
            repo.path()
                .join(format!(".git/objects/{}/{}", &id[..2], &id[2..]))
        };
        let other = V2.replace("Cat", "Cot");
        repo.write("other.txt", &other);
        let other_id = repo.git(
            ALICE,
            "2024-03-08T10:00:00+0000",
            &["hash-object", "-w", "other.txt"],
        );
        let blob = &committed.revision.blob;
        std::fs::remove_file(object(blob)).unwrap();
        std::fs::copy(object(&other_id), object(blob)).unwrap();
        assert_eq!(
            read_git(repo.path(), csv(), "HEAD").unwrap().bytes,
            other.as_bytes()
        );
        let mut runs = 0;
        let (loaded, length) = read_committed(repo.path(), csv(), "HEAD", false)
            .unwrap()
            .alongside(|bytes| {
                runs += 1;
                bytes.len()
            })
            .unwrap();
        assert_eq!((runs, length), (1, V2.len()));
        assert_eq!(loaded, committed);
    }

    #[test]
    fn a_checkout_of_other_content_as_long_is_dropped_for_the_commit() {
        let (repo, _, _) = two_commits();
        let committed = read_git(repo.path(), csv(), "HEAD").unwrap();
        let edited = V2.replace("Cat", "Cot");
        repo.write("users.csv", &edited);
        let mut seen = Vec::new();
        let (loaded, ()) = read_committed(repo.path(), csv(), "HEAD", false)
            .unwrap()
            .alongside(|bytes| seen.push(String::from_utf8(bytes.to_vec()).unwrap()))
            .unwrap();
        // The work ran on the checkout, then again on the commit.
        assert_eq!(seen, [edited, V2.to_owned()]);
        assert_eq!(loaded, committed);
        // As long but not the commit's, through `hashed` too.
        assert_eq!(
            read_committed(repo.path(), csv(), "HEAD", false)
                .unwrap()
                .hashed()
                .unwrap(),
            committed
        );
        // Another length is not read from disk at all.
        repo.write("users.csv", "short\n");
        let mut runs = 0;
        let (loaded, ()) = read_committed(repo.path(), csv(), "v1", false)
            .unwrap()
            .alongside(|_| runs += 1)
            .unwrap();
        assert_eq!((runs, loaded.bytes.as_ref()), (1, V1.as_bytes()));
    }

    #[test]
    fn git_converting_the_file_is_seen_in_its_attributes_and_config() {
        let repo = TestRepo::new();
        let at = "2024-03-05T10:00:00+0000";
        repo.commit_file(ALICE, at, "users.csv", V1, "Add users");
        // Whatever the global configuration says.
        repo.git(ALICE, at, &["config", "core.autocrlf", "false"]);
        let converts = |attributes: &str| {
            repo.write(".gitattributes", attributes);
            converted(&locate(repo.path(), csv(), "HEAD").unwrap())
        };
        for unconverted in [
            "",
            "*.csv -text\n",
            "*.csv binary\n",
            "other.csv filter=lfs\n",
        ] {
            assert!(!converts(unconverted), "{unconverted:?}");
        }
        for converting in [
            "users.csv filter=swap\n",
            "* text=auto\n",
            "*.csv text\n",
            "*.csv eol=crlf\n",
            "*.csv crlf\n",
            "*.csv working-tree-encoding=UTF-16\n",
            "*.csv ident\n",
        ] {
            assert!(converts(converting), "{converting:?}");
        }
        repo.git(ALICE, at, &["config", "core.autocrlf", "input"]);
        assert!(converts(""), "core.autocrlf");
    }

    /// Waits (a bounded poll) until the file at `path` is settled: left alone
    /// long enough for any later write to show in its stamp.
    fn until_settled(path: &Path) {
        for _ in 0..600 {
            if FileStamp::now(path).is_some_and(|s| s.settled()) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("{} did not settle", path.display());
    }

    /// Waits (a bounded poll) until a file written now gets a modification time
    /// later than `path`'s.
    fn until_clock_passes(path: &Path) {
        let then = std::fs::metadata(path).unwrap().modified().unwrap();
        let probe = path.with_extension("clock");
        for _ in 0..1000 {
            std::fs::write(&probe, b"").unwrap();
            if std::fs::metadata(&probe).unwrap().modified().unwrap() > then {
                std::fs::remove_file(&probe).unwrap();
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        panic!("the file-system clock did not move past {then:?}");
    }

    #[test]
    fn a_settled_checkout_is_mapped_for_a_plan_and_dropped_when_written_meanwhile() {
        let repo = TestRepo::new();
        // Large enough to be mapped.
        let content: String = (0..300_000).map(|i| format!("{i},user{i:07}\n")).collect();
        assert!(content.len() >= 4 << 20);
        let at = "2024-03-05T10:00:00+0000";
        repo.commit_file(ALICE, at, "users.csv", &content, "Add users");
        let committed = read_git(repo.path(), csv(), "HEAD").unwrap();
        // Left alone long enough for a write to show in its stamp.
        until_settled(&repo.path().join("users.csv"));
        let pending = read_committed(repo.path(), csv(), "HEAD", true).unwrap();
        assert_eq!(pending.bytes_kind(), "mapped");
        // Written the same moment as the file, the index does not vouch for it
        // ("racily clean"), and the file is hashed; once git has looked again,
        // it does.
        let vouched_at_once = pending.vouched();
        repo.git(ALICE, at, &["update-index", "--really-refresh"]);
        let pending = read_committed(repo.path(), csv(), "HEAD", true).unwrap();
        assert!(
            pending.vouched(),
            "vouched after a refresh (at once: {vouched_at_once})"
        );
        let mut runs = 0;
        let (loaded, length) = pending
            .alongside(|bytes| {
                runs += 1;
                bytes.len()
            })
            .unwrap();
        assert_eq!((runs, length), (1, content.len()));
        assert_eq!(loaded, committed);
        // An apply reads it.
        let read = read_committed(repo.path(), csv(), "HEAD", false).unwrap();
        assert_eq!(read.bytes_kind(), "read");
        // Written in place while the work runs, after the hash is taken (of
        // the committed bytes: 5 MB take milliseconds): only the stamp tells,
        // and the work runs again on the commit.
        let edited = content.replacen("user0000000", "USER0000000", 1);
        let mut seen = Vec::new();
        let (loaded, ()) = read_committed(repo.path(), csv(), "HEAD", true)
            .unwrap()
            .alongside(|bytes| {
                if seen.is_empty() {
                    use std::io::Write;
                    // The write must land at a later file-system time than the
                    // stamp's, whatever the clock's granularity.
                    until_clock_passes(&repo.path().join("users.csv"));
                    let mut file = std::fs::OpenOptions::new()
                        .write(true)
                        .open(repo.path().join("users.csv"))
                        .unwrap();
                    file.write_all(edited.as_bytes()).unwrap();
                }
                seen.push(bytes.len());
            })
            .unwrap();
        assert_eq!(seen.len(), 2, "the work ran again on the commit");
        assert_eq!(loaded, committed);
        // Written just now: read, not mapped.
        let fresh = read_committed(repo.path(), csv(), "HEAD", true).unwrap();
        assert_eq!(fresh.bytes_kind(), "read");
        // Edited and left alone: the index no longer vouches (the times
        // differ), the hash is not the commit's, and the commit is used.
        until_settled(&repo.path().join("users.csv"));
        let pending = read_committed(repo.path(), csv(), "HEAD", true).unwrap();
        assert_eq!(pending.bytes_kind(), "mapped");
        assert!(!pending.vouched());
        let mut runs = 0;
        let (loaded, ()) = pending.alongside(|_| runs += 1).unwrap();
        assert_eq!((runs, loaded), (2, committed.clone()));
    }

    #[test]
    fn packed_objects_read_as_loose_ones_do() {
        let (repo, first, _) = two_commits();
        let loose = blame_all(&repo, "HEAD");
        repo.git(ALICE, "2024-03-08T10:00:00+0000", &["gc", "-q"]);
        let objects = repo.path().join(".git/objects");
        let loose_left = std::fs::read_dir(&objects)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().len() == 2)
            .count();
        assert_eq!(loose_left, 0, "gc packed every object");
        assert_eq!(
            read_git(repo.path(), csv(), "HEAD").unwrap().bytes,
            V2.as_bytes()
        );
        assert_eq!(
            read_git(repo.path(), csv(), "v1").unwrap().bytes,
            V1.as_bytes()
        );
        let old = read_git(repo.path(), csv(), "v1").unwrap().revision.blob;
        assert_eq!(
            read_blob(repo.path(), &old).unwrap().as_deref(),
            Some(V1.as_bytes())
        );
        assert_eq!(blame_all(&repo, "HEAD"), loose);
        assert_eq!(loose[0].commit, first);
    }

    #[test]
    fn read_blob_by_id() {
        let (repo, _, _) = two_commits();
        let old = read_git(repo.path(), csv(), "HEAD~1").unwrap();
        let bytes = read_blob(repo.path(), &old.revision.blob).unwrap();
        assert_eq!(bytes.as_deref(), Some(V1.as_bytes()));
        // A well-formed id the repository does not have.
        let unknown = crate::source::blob_id(b"never committed\n");
        assert_eq!(read_blob(repo.path(), &unknown).unwrap(), None);
        // A commit id is not a blob.
        let commit = old.revision.commit.unwrap();
        assert_eq!(read_blob(repo.path(), &commit).unwrap(), None);
        // Abbreviations and garbage are refused rather than guessed at.
        for bad in [&old.revision.blob[..7], "not hex at all", ""] {
            let err = read_blob(repo.path(), bad).unwrap_err();
            assert!(matches!(err, SourceError::InvalidBlobId(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn blame_attributes_lines_to_commits_authors_and_utc_dates() {
        let (repo, first, second) = two_commits();
        // An uncommitted edit must not show up in the blame of HEAD.
        repo.write("users.csv", "uncommitted\n");
        let lines = blame_all(&repo, "HEAD");
        let alice = LineBlame {
            commit: first.clone(),
            author: "Alice Example".to_string(),
            date: "2024-03-05".to_string(),
        };
        let bob = LineBlame {
            commit: second,
            author: "Bob Example".to_string(),
            date: "2024-03-07".to_string(),
        };
        assert_eq!(
            lines,
            vec![alice.clone(), alice.clone(), alice.clone(), bob]
        );

        // At an older revision, the blame is of the file as it was then.
        let lines = blame_all(&repo, "v1");
        assert_eq!(lines, vec![alice.clone(), alice.clone(), alice]);
    }

    #[test]
    fn blame_of_a_line_changed_in_the_middle() {
        let repo = TestRepo::new();
        let first = repo.commit_file(
            ALICE,
            "2024-03-05T10:00:00+0000",
            "users.csv",
            "a\nb\nc",
            "one",
        );
        let second = repo.commit_file(
            BOB,
            "2024-04-01T10:00:00+0000",
            "users.csv",
            "a\nB\nc",
            "two",
        );
        let commits = commits(&repo);
        // The last line has no newline and still counts.
        assert_eq!(commits, vec![first.clone(), second, first]);
    }

    #[test]
    fn blame_agrees_with_git_blame_on_a_history_of_edits() {
        // Lines are unique and keep their order, as the rows of a CSV do when
        // edited, added and removed: git's diff then matches lines exactly as
        // their texts do.
        let repo = TestRepo::new();
        let mut lines: Vec<String> = (0..40).map(|i| format!("{},row", 1000 + i)).collect();
        let mut next = 2000;
        let mut seed = 7u64;
        let mut random = |n: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        for round in 0..8 {
            for _ in 0..5 {
                let at = random(lines.len());
                match random(3) {
                    0 => {
                        lines[at] = format!("{},edit{round}", lines[at].split(',').next().unwrap())
                    }
                    1 => {
                        lines.insert(at, format!("{next},new"));
                        next += 1;
                    }
                    _ => drop(lines.remove(at)),
                }
            }
            let who = if round % 2 == 0 { ALICE } else { BOB };
            let date = format!("2024-03-{:02}T10:00:00+0000", round + 1);
            repo.commit_file(who, &date, "users.csv", &(lines.join("\n") + "\n"), "edit");
        }
        let ours = commits(&repo);
        let git = repo.git(
            ALICE,
            "2024-04-01T00:00:00+0000",
            &["blame", "--root", "-l", "-s", "users.csv"],
        );
        let theirs: Vec<String> = git
            .lines()
            .map(|l| l.split_whitespace().next().unwrap().to_owned())
            .collect();
        assert_eq!(ours, theirs);
    }

    /// A history with a merge: "a\nb\n" at the base, `side` on branch side,
    /// `main` on main, then side merged into main (with `options`) and committed
    /// as `merged`. The commits: base, side, main, merge.
    fn merged_history(
        side: &str,
        main: &str,
        options: &[&str],
        merged: &str,
    ) -> (TestRepo, [String; 4]) {
        let repo = TestRepo::new();
        let at = |day: u32| format!("2024-03-{day:02}T10:00:00+0000");
        let base = repo.commit_file(ALICE, &at(1), "users.csv", "a\nb\n", "base");
        repo.git(ALICE, &at(1), &["checkout", "-q", "-b", "side"]);
        let side = repo.commit_file(BOB, &at(2), "users.csv", side, "side");
        repo.git(ALICE, &at(3), &["checkout", "-q", "main"]);
        let main = repo.commit_file(ALICE, &at(3), "users.csv", main, "main");
        let mut merge = vec!["merge", "-q", "--no-commit"];
        merge.extend(options);
        merge.push("side");
        repo.git(ALICE, &at(4), &merge);
        let merge = repo.commit_file(ALICE, &at(4), "users.csv", merged, "merge");
        (repo, [base, side, main, merge])
    }

    #[test]
    fn blame_follows_a_line_into_the_branch_that_wrote_it() {
        // The merge takes both changes; its own line is new in neither parent.
        let (repo, [base, side, main, merge]) =
            merged_history("a\nb\nc\n", "A\nb\n", &[], "A\nb\nc\nd\n");
        assert_eq!(commits(&repo), [main, base, side, merge]);
    }

    #[test]
    fn blame_traces_lines_back_through_both_sides_of_a_merge() {
        // The merge keeps b as it was: main no longer has it, the side still does.
        let (repo, [base, side, ..]) =
            merged_history("a\nb\ns\n", "a\nB\n", &["-s", "ours"], "a\nb\ns\n");
        // a reaches the base through main, b through the side.
        assert_eq!(commits(&repo), [base.clone(), base, side]);
    }

    #[test]
    fn blame_keeps_the_commit_of_a_line_moved_and_gives_a_line_added_again_its_new_one() {
        let repo = TestRepo::new();
        let first = repo.commit_file(
            ALICE,
            "2024-03-01T10:00:00+0000",
            "users.csv",
            "a\nb\nc\n",
            "one",
        );
        repo.commit_file(
            BOB,
            "2024-03-02T10:00:00+0000",
            "users.csv",
            "a\nb\n",
            "drop c",
        );
        let sorted = repo.commit_file(
            BOB,
            "2024-03-03T10:00:00+0000",
            "users.csv",
            "c\nb\na\n",
            "c again, sorted",
        );
        let commits = commits(&repo);
        assert_eq!(commits, [sorted, first.clone(), first]);
    }

    #[test]
    fn blame_of_a_file_added_later_and_of_lines_past_the_end() {
        let repo = TestRepo::new();
        repo.commit_file(
            ALICE,
            "2024-03-01T10:00:00+0000",
            "other.txt",
            "x\n",
            "other",
        );
        let added = repo.commit_file(BOB, "2024-03-02T10:00:00+0000", "users.csv", "a\nb", "add");
        let loaded = read_git(repo.path(), csv(), "HEAD").unwrap();
        let lines = blame(repo.path(), &loaded, &[2, 3, 99]).unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[&2].commit, added);
        assert_eq!(lines[&2].author, "Bob Example");
    }

    #[test]
    fn blame_of_an_empty_file_is_empty() {
        let repo = TestRepo::new();
        repo.commit_file(ALICE, "2024-03-05T10:00:00+0000", "users.csv", "", "empty");
        assert_eq!(blame_all(&repo, "HEAD"), vec![]);
    }

    #[test]
    fn error_not_a_repository() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_git(dir.path(), csv(), "HEAD").unwrap_err();
        assert!(matches!(err, SourceError::NotARepository { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("not inside a git repository"), "{message}");
        assert!(
            message.contains("git init") && message.contains("--file"),
            "{message}"
        );
        assert!(matches!(
            peek(dir.path(), csv(), "HEAD"),
            Err(SourceError::NotARepository { .. })
        ));
    }

    #[test]
    fn error_empty_repository() {
        let repo = TestRepo::new();
        repo.write("users.csv", V1);
        let err = read_git(repo.path(), csv(), "HEAD").unwrap_err();
        assert!(
            matches!(err, SourceError::EmptyRepository { .. }),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("no commits yet"), "{message}");
        assert!(
            message.contains("git commit") && message.contains("--working-tree"),
            "{message}"
        );
    }

    #[test]
    fn error_revision_not_found() {
        let (repo, _, _) = two_commits();
        for rev in ["no-such-branch", "HEAD~5", "deadbeef", "v1..v2"] {
            let err = read_git(repo.path(), csv(), rev).unwrap_err();
            assert!(
                matches!(err, SourceError::RevisionNotFound { .. }),
                "{rev}: {err:?}"
            );
            let message = err.to_string();
            assert!(
                message.contains(&format!("revision `{rev}` not found")),
                "{message}"
            );
            assert!(message.contains("git log"), "{message}");
        }
    }

    #[test]
    fn error_ambiguous_revision() {
        let (repo, _, _) = two_commits();
        // Store two blobs whose ids share their first four hex digits (the
        // shortest abbreviation git accepts); about 300 tries are expected.
        let git = Repository::open(repo.path()).unwrap();
        let mut seen: HashMap<String, usize> = HashMap::new();
        let prefix = (0..)
            .find_map(|i| {
                let id = crate::source::blob_id(i.to_string().as_bytes());
                let prefix = id[..4].to_string();
                match seen.insert(prefix.clone(), i) {
                    Some(other) => {
                        git.blob(other.to_string().as_bytes()).unwrap();
                        git.blob(i.to_string().as_bytes()).unwrap();
                        Some(prefix)
                    }
                    None => None,
                }
            })
            .unwrap();
        let err = read_git(repo.path(), csv(), &prefix).unwrap_err();
        assert!(
            matches!(err, SourceError::AmbiguousRevision { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("more digits"), "{err}");
    }

    #[test]
    fn error_revision_not_a_commit() {
        let (repo, _, _) = two_commits();
        let err = read_git(repo.path(), csv(), "HEAD^{tree}").unwrap_err();
        assert!(
            matches!(err, SourceError::NotACommit { kind: "tree", .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("names a tree, not a commit"),
            "{err}"
        );
    }

    #[test]
    fn error_file_not_in_commit() {
        let (repo, first, _) = two_commits();
        // On disk but never committed.
        repo.write("new.csv", V1);
        let err = read_git(repo.path(), Path::new("new.csv"), "HEAD~1").unwrap_err();
        assert!(matches!(err, SourceError::NotInCommit { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains("new.csv") && message.contains(&first[..7]),
            "{message}"
        );
        assert!(
            message.contains("git add") && message.contains("git commit"),
            "{message}"
        );
        assert!(message.contains("--working-tree"), "{message}");
    }

    #[test]
    fn error_path_is_a_directory() {
        let repo = TestRepo::new();
        repo.commit_file(
            ALICE,
            "2024-03-05T10:00:00+0000",
            "data/users.csv",
            V1,
            "Add",
        );
        let err = read_git(repo.path(), Path::new("data"), "HEAD").unwrap_err();
        assert!(
            matches!(
                err,
                SourceError::NotAFile {
                    what: "a directory",
                    ..
                }
            ),
            "{err:?}"
        );
        let err = read_git(repo.path(), Path::new("."), "HEAD").unwrap_err();
        assert!(matches!(err, SourceError::NotAFile { .. }), "{err:?}");
    }

    #[test]
    fn error_path_outside_repository() {
        let (repo, _, _) = two_commits();
        let elsewhere = tempfile::tempdir().unwrap();
        let outside = elsewhere.path().join("users.csv");
        std::fs::write(&outside, V1).unwrap();
        let err = read_git(repo.path(), &outside, "HEAD").unwrap_err();
        assert!(
            matches!(err, SourceError::OutsideRepository { .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("outside the git repository"),
            "{err}"
        );
        let err = read_git(repo.path(), Path::new("../users.csv"), "HEAD").unwrap_err();
        assert!(
            matches!(err, SourceError::OutsideRepository { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn error_missing_config_dir_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nowhere");
        let err = read_git(&missing, csv(), "HEAD").unwrap_err();
        assert!(matches!(err, SourceError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains("nowhere"), "{err}");
    }
}
