//! Writing in the provisioning folder: each file whole (an unnamed file linked
//! under its name, or a temporary file renamed over the old one), so a phone
//! fetching it sees the old file or the new one, never half; mode 0640
//! whatever the umask. Unlike `fsio::write_atomically` a symlink under
//! a file's name is replaced, not written through: pbxsync owns the names in its
//! manifest, and nothing outside the folder.
//!
//! Files are not synced one by one (100,000 fsyncs would take minutes); a run
//! syncs the file system once (`syncfs`) before the manifest that records them.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

pub const FILE_MODE: u32 = 0o640;
pub const DIR_MODE: u32 = 0o750;

/// A temporary name beside `name`, hidden and unique to this process and call.
pub fn tmp_name(name: &str) -> String {
    static RUN: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let run = *RUN.get_or_init(|| {
        let mut random = [0u8; 8];
        let _ = getrandom::fill(&mut random);
        u64::from_le_bytes(random) ^ u64::from(std::process::id())
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(".{name}.{run:016x}{n:x}.pbxsync-tmp")
}

/// Writes `bytes` under `name` in `dir` through `tmp` (created exclusively, so
/// nothing left under that name is written through) and a rename; `sync` makes
/// the file durable before the rename.
pub fn write_new(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    tmp: &str,
    sync: bool,
) -> std::io::Result<()> {
    let tmp = dir.join(tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(&tmp)?;
    let written = (|| {
        // The umask may have taken the group's read bit away.
        file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
        file.write_all(bytes)?;
        if sync {
            file.sync_all()?;
        }
        drop(file);
        std::fs::rename(&tmp, dir.join(name))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Creates `name` in `dir` (open as `dir_handle`), which must not exist, with
/// `bytes`: written into an unnamed file (`O_TMPFILE`) that is then linked under
/// its name, so the name appears with its whole content at once, with one
/// change to the folder instead of a create and a rename (which halves the time
/// of a first run over 100,000 phones). Where the file system or `/proc` does
/// not allow it, a temporary file and a rename, as `write_new`.
pub fn create_new(
    dir: &Path,
    dir_handle: &std::fs::File,
    name: &str,
    bytes: &[u8],
) -> std::io::Result<()> {
    match create_linked(dir_handle, name, bytes) {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL | libc::ENOENT | libc::EPERM)
            ) =>
        {
            write_new(dir, name, bytes, &tmp_name(name), false)
        }
        other => other,
    }
}

fn create_linked(dir_handle: &std::fs::File, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::fd::FromRawFd;
    let c_name = CString::new(name).map_err(std::io::Error::other)?;
    // SAFETY: a valid directory descriptor and a NUL-terminated path.
    let fd = unsafe {
        libc::openat(
            dir_handle.as_raw_fd(),
            c".".as_ptr(),
            libc::O_TMPFILE | libc::O_WRONLY | libc::O_CLOEXEC,
            FILE_MODE as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    if umask_narrows() {
        file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    }
    file.write_all(bytes)?;
    let proc_path = CString::new(format!("/proc/self/fd/{fd}")).map_err(std::io::Error::other)?;
    // SAFETY: NUL-terminated paths and a valid directory descriptor.
    let linked = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path.as_ptr(),
            dir_handle.as_raw_fd(),
            c_name.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if linked != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the process's umask takes bits of 0640 away (then each file is
/// `fchmod`ed; otherwise creating it with 0640 is enough). Read once from
/// `/proc` (setting the umask to read it would race with other threads);
/// assumed when unknown.
fn umask_narrows() -> bool {
    static NARROWS: OnceLock<bool> = OnceLock::new();
    *NARROWS.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                let line = status.lines().find(|l| l.starts_with("Umask:"))?;
                u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
            })
            .is_none_or(|umask| umask & FILE_MODE != 0)
    })
}

/// Makes the folder's entries (renames, removals) durable.
pub fn fsync_dir(dir: &std::fs::File) -> std::io::Result<()> {
    dir.sync_all()
}

/// Makes everything written on the folder's file system durable, at once.
pub fn syncfs(dir: &std::fs::File) -> std::io::Result<()> {
    // SAFETY: a valid, open file descriptor.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Opens the folder, creating it (mode 0750) when missing, and holds an
/// exclusive lock on it while the returned handle lives, so two runs (an apply
/// and `pbxsync provision`) never interleave their writes and manifests.
pub fn open_and_lock(dir: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)?;
        // The umask may have taken bits away; the folder holds secrets, so
        // nothing is added beyond 0750 either.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))?;
    }
    let handle = std::fs::File::open(dir)?;
    // SAFETY: a valid, open file descriptor.
    if unsafe { libc::flock(handle.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(handle)
}
