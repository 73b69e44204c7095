//! Files at the edges: written whole, through a temporary file and a rename, so
//! that a crash never leaves half a file (saved plans, a rewritten CSV, pending
//! plans); and paths as people are shown them.

use std::io::Write;
use std::path::{Path, PathBuf};

/// `path` as people are shown it: relative to the working directory when it is
/// inside it.
pub fn shown(path: &Path) -> String {
    let cwd = std::env::current_dir().unwrap_or_default();
    path.strip_prefix(&cwd)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Writes through a temporary file and a rename, so a crash never leaves half a file.
/// A symlink is written through, as an editor or `>` would: the file it points to
/// gets the content (keeping its permissions and, where allowed, its owner), and
/// the link stays a link.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let real = link_target(path)?;
    let dir = real
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let existing = std::fs::metadata(&real).ok();
    let (tmp, mut file) = create_beside(dir, &real, existing.is_some())?;
    let written = (|| {
        if let Some(meta) = &existing {
            use std::os::unix::fs::MetadataExt;
            // Only root may give a file away; anyone else keeps their own.
            let _ = std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()));
            file.set_permissions(meta.permissions())?;
        }
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &real)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Where `path` leads: the file at the end of its symlinks, which need not exist
/// yet (a link to a file still to be written).
fn link_target(path: &Path) -> std::io::Result<PathBuf> {
    let mut path = path.to_path_buf();
    // As many as Linux follows before it gives up with ELOOP.
    for _ in 0..40 {
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = std::fs::read_link(&path)?;
                // A relative target is relative to the link's directory.
                path = match path.parent() {
                    Some(dir) => dir.join(target),
                    None => target,
                };
            }
            _ => return Ok(path),
        }
    }
    Err(std::io::Error::from_raw_os_error(libc::ELOOP))
}

/// A new temporary file in `dir` for `target`, under a name nobody else has and
/// created exclusively, so that a file or a link left under that name is never
/// written through. Readable by its owner only while it replaces an existing file
/// (which may hold passwords) until that file's permissions are copied.
fn create_beside(
    dir: &Path,
    target: &Path,
    private: bool,
) -> std::io::Result<(PathBuf, std::fs::File)> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let mut attempt = 0;
    loop {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(std::io::Error::other)?;
        let tmp = dir.join(format!(
            ".{name}.{:016x}.pbxsync-tmp",
            u64::from_le_bytes(random)
        ));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if private { 0o600 } else { 0o666 })
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 8 => {
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
