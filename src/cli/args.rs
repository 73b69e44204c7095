//! The command line, as clap sees it. `cli::run` turns it into a validated config.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "pbxsync",
    version,
    about = "Keep a PBX's users and extensions in sync with a CSV in git"
)]
pub struct Cli {
    /// The config file (default: pbxsync.yaml in this or a parent directory).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// The target, overriding the config (keeps database credentials out of git).
    #[arg(long, global = true, env = "PBXSYNC_TARGET", value_name = "URL")]
    pub target: Option<String>,
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    pub color: Color,
    /// Print nothing but errors and the requested data.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Say more about what is going on.
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
    Markdown,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a starter pbxsync.yaml, users.csv and .gitignore (and `git init` if needed).
    Init {
        /// The directory (default: the current one).
        dir: Option<PathBuf>,
    },
    /// Check the CSV (the working tree by default); exit 1 when anything is wrong.
    Validate {
        #[command(flatten)]
        source: SourceArgs,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        /// Accept a file without data rows.
        #[arg(long)]
        allow_empty: bool,
    },
    /// Rewrite the CSV in canonical form.
    Fmt {
        /// Exit 1 when the file is not in canonical form, without writing it.
        #[arg(long)]
        check: bool,
        /// The file (default: the config's source.path in the working tree).
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
    /// Show what the CSV would change in the target.
    Plan {
        #[command(flatten)]
        flags: PlanFlags,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        /// Save the plan (no secrets in it) for `pbxsync apply FILE`.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Exit 2 when the plan has changes (0 when none, 1 on errors).
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Apply the CSV (or a saved plan) to the target, all or nothing.
    Apply {
        /// A plan saved with `plan --out`.
        plan_file: Option<PathBuf>,
        #[command(flatten)]
        flags: PlanFlags,
        /// Do not ask for confirmation.
        #[arg(long)]
        auto_approve: bool,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Keep the target in sync with the repository: plan (and, as
    /// `watch.auto_apply` says, apply) every new commit, and report drift.
    Watch {
        /// One round, then exit (for cron and CI): 0 in sync, 1 when the commit is
        /// bad or its apply failed.
        #[arg(long)]
        once: bool,
        /// Follow saves of the file on disk instead of the commits of `source.ref`.
        #[arg(long)]
        working_tree: bool,
        /// With --once: exit 2 when a plan waits for a person or the target drifted.
        #[arg(long, requires = "once")]
        detailed_exitcode: bool,
        /// One line per event as text, or one JSON object per line.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// The current state as a CSV in the ten-column format.
    Export {
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Write the target's current state into the CSV in the working tree, so that
    /// changes made in the PBX by hand can be reviewed (`git diff`) and committed.
    Adopt {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Target, serial, last applied revision, pending changes, lock holder.
    Status {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// The recorded applies, or one of them.
    History {
        id: Option<i64>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Print the argon2id hash (PHC string) of a password, for a Password cell:
    /// read without echo on a terminal, else one line of standard input.
    HashPassword,
    /// The device inventory.
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// License limits.
    #[command(subcommand)]
    Licenses(LicensesCommand),
}

#[derive(Debug, Args, Clone, Default)]
pub struct SourceArgs {
    /// A CSV file anywhere (no git).
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct PlanSource {
    /// Plan another revision than the config's `source.ref` (e.g. to undo an import).
    #[arg(long, value_name = "REV", conflicts_with_all = ["working_tree", "file"])]
    pub rev: Option<String>,
    /// Take the file on disk instead of the committed one.
    #[arg(long, conflicts_with = "file")]
    pub working_tree: bool,
    /// Take any CSV file (no git).
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct PlanFlags {
    #[command(flatten)]
    pub source: PlanSource,
    /// Remove extensions missing from the CSV, and users left without extensions.
    #[arg(long)]
    pub prune: bool,
    /// Set existing users' passwords from the Password column.
    #[arg(long)]
    pub reset_passwords: bool,
    /// Accept a CSV without data rows as desired state.
    #[arg(long)]
    pub allow_empty: bool,
    /// Accept a plan over the safety threshold (`safety.max_change_percent`).
    #[arg(long)]
    pub allow_large_change: bool,
}

#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// Add a device to the inventory (a MAC or a soft-phone id).
    Add {
        id: String,
        #[arg(long, default_value = "")]
        model: String,
    },
    /// Add the devices of a CSV file (`id,model`, header optional).
    Import { file: PathBuf },
    /// List the inventory and which extension holds each device.
    List {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Remove a device that no extension holds.
    Remove { id: String },
}

#[derive(Debug, Subcommand)]
pub enum LicensesCommand {
    /// Limits and current use.
    Show {
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Set the limits; `unlimited` clears one.
    Set {
        #[arg(long, value_name = "N|unlimited")]
        users: Option<String>,
        #[arg(long, value_name = "N|unlimited")]
        voicemail: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
