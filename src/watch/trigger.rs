//! File events that may mean a new revision: the repository's refs (`HEAD`,
//! `packed-refs`, `refs/…`) and, with `--working-tree`, the CSV's folder. Folders
//! are watched rather than files, because git and editors replace a file by
//! renaming another over it (a new inode). Events are debounced
//! (`watch.debounce_ms`): a commit touches several files, a save may be several
//! writes.

use super::Wake;
use crate::engine::{Engine, EngineError};
use notify_debouncer_mini::notify::{self, RecursiveMode};
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::Duration;

/// Why file events cannot be followed (the poll still works).
#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error("file events are not available ({0}); changes are found by polling only")]
    Notify(#[from] notify::Error),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Follows the files; dropping it stops.
pub struct Trigger {
    _debouncer: Debouncer<notify::RecommendedWatcher>,
}

/// Which changed paths may move the revision.
struct Relevant {
    git_dir: PathBuf,
    refs: PathBuf,
    packed_refs: PathBuf,
    csv: Option<PathBuf>,
}

impl Relevant {
    fn matches(&self, path: &Path) -> bool {
        path == self.git_dir.join("HEAD")
            || path == self.packed_refs
            || (path.starts_with(&self.refs) && path.extension().is_none_or(|e| e != "lock"))
            || self.csv.as_deref() == Some(path)
    }
}

/// Starts following the refs of the repository (and the CSV's folder with
/// `working_tree`), sending `Wake::Changed` after each burst of relevant events.
pub fn follow(
    engine: &Engine<'_>,
    working_tree: bool,
    wake: Sender<Wake>,
) -> Result<Trigger, TriggerError> {
    let config = engine.config();
    let folders = engine.ref_folders()?;
    let canonical = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let git_dir = canonical(&folders.git_dir);
    let common = canonical(&folders.common_dir);
    let csv_dir = config
        .source_path
        .parent()
        .map(canonical)
        .filter(|_| working_tree);
    let relevant = Relevant {
        refs: common.join("refs"),
        packed_refs: common.join("packed-refs"),
        csv: csv_dir
            .as_ref()
            .zip(config.source_path.file_name())
            .map(|(dir, name)| dir.join(name)),
        git_dir: git_dir.clone(),
    };
    let mut debouncer = new_debouncer(
        Duration::from_millis(config.watch.debounce_ms),
        move |events: DebounceEventResult| {
            // An error of the watcher itself: the poll covers what it missed.
            if let Ok(events) = events
                && events.iter().any(|e| relevant.matches(&e.path))
            {
                let _ = wake.send(Wake::Changed);
            }
        },
    )?;
    let watcher = debouncer.watcher();
    watcher.watch(&git_dir, RecursiveMode::NonRecursive)?;
    if common != git_dir {
        watcher.watch(&common, RecursiveMode::NonRecursive)?;
    }
    watcher.watch(&common.join("refs"), RecursiveMode::Recursive)?;
    if let Some(dir) = &csv_dir {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    Ok(Trigger {
        _debouncer: debouncer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_head_packed_refs_and_the_csv_matter_and_nothing_else() {
        let r = Relevant {
            git_dir: "/r/.git".into(),
            refs: "/r/.git/refs".into(),
            packed_refs: "/r/.git/packed-refs".into(),
            csv: Some("/r/users.csv".into()),
        };
        for path in [
            "/r/.git/HEAD",
            "/r/.git/packed-refs",
            "/r/.git/refs/heads/main",
            "/r/.git/refs/remotes/origin/main",
            "/r/users.csv",
        ] {
            assert!(r.matches(Path::new(path)), "{path}");
        }
        for path in [
            "/r/.git/index",
            "/r/.git/index.lock",
            "/r/.git/refs/heads/main.lock",
            "/r/.git/COMMIT_EDITMSG",
            "/r/.git/objects/ab/cdef",
            "/r/other.csv",
            "/r/.pbxsync/state.db",
        ] {
            assert!(!r.matches(Path::new(path)), "{path}");
        }
    }
}
