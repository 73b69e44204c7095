//! `pbxsync init [DIR]`: a starter repository.

use super::{CliError, Context, Outcome};
use crate::model::Column;
use std::path::Path;

pub const STARTER_CONFIG: &str = "\
# pbxsync configuration. Every key but source.path is optional; see the README.
source:
  path: users.csv            # relative to this file
  ref: HEAD                  # branch, tag or commit: only committed content is applied
# inventory: devices.csv     # devices (id,model) that must exist
target: sqlite:.pbxsync/state.db
encoding: auto               # auto | utf-8 | windows-1252
policy:
  password: { min_length: 8, min_upper: 1, min_digits: 2 }
  password_hash: { m_cost_kib: 19456, t_cost: 2, p_cost: 1 }
  extension_pattern: '^[0-9]{2,8}$'
  allow_apostrophes: false
  reassigned_extension_becomes: virtual
prune: false
safety: { max_change_percent: 30, min_existing: 10 }
watch: { debounce_ms: 500, poll_seconds: 30, auto_apply: never, self_heal: false }
";

pub fn run(ctx: &Context, dir: Option<&Path>) -> Result<Outcome, CliError> {
    let dir = dir.unwrap_or(Path::new("."));
    let write_err = |path: &Path, source| CliError::Write {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| write_err(dir, e))?;
    let mut done = Vec::new();
    let config = dir.join(crate::config::FILE_NAME);
    if config.exists() {
        done.push(format!("kept {} (it exists)", config.display()));
    } else {
        std::fs::write(&config, STARTER_CONFIG).map_err(|e| write_err(&config, e))?;
        done.push(format!("wrote {}", config.display()));
    }
    let csv = dir.join("users.csv");
    if csv.exists() {
        done.push(format!("kept {} (it exists)", csv.display()));
    } else {
        let header = Column::ALL.map(Column::header).join(",");
        std::fs::write(&csv, format!("{header}\n")).map_err(|e| write_err(&csv, e))?;
        done.push(format!("wrote {}", csv.display()));
    }
    let gitignore = dir.join(".gitignore");
    let existing = std::fs::read_to_string(&gitignore).unwrap_or_default();
    if !existing
        .lines()
        .any(|l| l.trim() == ".pbxsync/" || l.trim() == ".pbxsync")
    {
        let sep = if existing.is_empty() || existing.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        std::fs::write(&gitignore, format!("{existing}{sep}.pbxsync/\n"))
            .map_err(|e| write_err(&gitignore, e))?;
        done.push(format!("added .pbxsync/ to {}", gitignore.display()));
    }
    if git2::Repository::discover(dir).is_err() {
        git2::Repository::init(dir).map_err(|e| {
            CliError::Message(format!("git init in {}: {}", dir.display(), e.message()))
        })?;
        done.push(format!("initialised a git repository in {}", dir.display()));
    }
    // The target: a fresh state file, so that `status` and `devices` work at once.
    let config = crate::config::Config::load(&config)?;
    if let crate::config::TargetUrl::Sqlite(path) = &config.target {
        let existed = path.exists();
        ctx.engine(&config)
            .create_state()
            .map_err(|e| CliError::Message(e.to_string()))?;
        if !existed {
            done.push(format!("created the state file {}", path.display()));
        }
    }
    if !ctx.quiet {
        super::out(&format!("{}\n", done.join("\n")))?;
    }
    Ok(Outcome::Success)
}
