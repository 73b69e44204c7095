//! The command line, as clap sees it. `cli::run` turns it into a validated config.

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
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
    /// When to colour the output (`NO_COLOR` set: never, unless `always`).
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

/// How a command prints its data: for people, or for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// How `plan` prints: also Markdown, for a pull-request comment. Only `plan` has
/// it: elsewhere Markdown would be text under another name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum PlanFormat {
    #[default]
    Text,
    Json,
    Markdown,
}

impl From<Format> for PlanFormat {
    fn from(format: Format) -> PlanFormat {
        match format {
            Format::Text => PlanFormat::Text,
            Format::Json => PlanFormat::Json,
        }
    }
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
        /// Print the diagnostics as text, or as one JSON document.
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
        /// Print the plan as text, as JSON (for scripts) or as Markdown (for a
        /// pull-request comment).
        #[arg(long, value_enum, default_value_t)]
        format: PlanFormat,
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
        /// Print the plan and the outcome as text, or the outcome as JSON (the plan
        /// is then not shown).
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
        /// Write the CSV to this file (atomically) instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Write the target's current state into the CSV in the working tree, so that
    /// changes made in the PBX by hand can be reviewed (`git diff`) and committed.
    Adopt {
        /// Say what was rewritten as text, or as JSON.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Target, serial, last applied revision, pending changes, lock holder.
    Status {
        /// Print the status as text, or as JSON.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// The recorded applies, or one of them.
    History {
        /// The number of one apply (`#3` in the list), to show it with its CSV.
        id: Option<i64>,
        /// Print the history as text, or as JSON.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Write the desk phones' provisioning files and publish the registrar's
    /// domain from the target as it is (an apply does this too): repairs files
    /// that an apply could not write.
    Provision {
        /// Say what was written as text, or as JSON.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Print one extension's SIP credentials, for a soft phone. The read is
    /// recorded in the history (who, when, which extension).
    Secret {
        /// The extension number.
        extension: String,
        /// Print the credentials as text, or as JSON.
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
        /// The MAC (any usual spelling, e.g. 00:04:f2:12:34:56) or soft-phone id.
        id: String,
        /// The phone's model (e.g. "Yealink T46U"). A device the inventory holds
        /// already keeps its model unless this is given; `--model ""` clears it.
        #[arg(long, value_name = "MODEL")]
        model: Option<String>,
    },
    /// Add the devices of a CSV file (`id,model`, header optional).
    Import {
        /// The CSV of devices; a row with no model keeps the model a device has.
        file: PathBuf,
    },
    /// List the inventory and which extension holds each device.
    List {
        /// Print the devices as text, or as JSON.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Remove a device that no extension holds.
    Remove {
        /// The MAC or soft-phone id of the device.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum LicensesCommand {
    /// Limits and current use.
    Show {
        /// Print the limits and use as text, or as JSON.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Set the limits; `unlimited` clears one.
    Set {
        /// How many device and virtual extensions the directory may hold.
        #[arg(long, value_name = "N|unlimited")]
        users: Option<String>,
        /// How many voicemail-only extensions the directory may hold.
        #[arg(long, value_name = "N|unlimited")]
        voicemail: Option<String>,
    },
}

/// The global flags that `init` does not use: it writes the config rather than
/// reading one, and prints plain lines.
const NOT_FOR_INIT: [&str; 4] = ["config", "target", "color", "verbose"];

/// The command line definition. `init` holds hidden copies of the global flags it
/// does not use: clap then does not add the global ones to `init --help`, and
/// `parse` refuses them.
pub fn command() -> clap::Command {
    let cli = Cli::command();
    let hidden: Vec<clap::Arg> = cli
        .get_arguments()
        .filter(|a| NOT_FOR_INIT.contains(&a.get_id().as_str()))
        .map(|a| a.clone().global(false).hide(true))
        .collect();
    cli.mut_subcommand("init", |init| init.args(hidden))
}

/// Parses the command line; a flag `init` does not use is refused, not ignored
/// (`init --target …` would otherwise look as if it set the target).
pub fn parse() -> Result<Cli, clap::Error> {
    let mut cmd = command();
    let matches = cmd.try_get_matches_from_mut(std::env::args_os())?;
    if let Some(init) = matches.subcommand_matches("init") {
        let given = |m: &clap::ArgMatches, id: &str| {
            m.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
        };
        if let Some(id) = NOT_FOR_INIT
            .iter()
            .find(|id| given(&matches, id) || given(init, id))
        {
            let message = format!(
                "`init` does not use --{id}: it writes pbxsync.yaml (and the state file it names) in DIR; edit that file afterwards"
            );
            // Built by the parse: the error shows `init`'s own usage line.
            let kind = clap::error::ErrorKind::ArgumentConflict;
            return Err(match cmd.find_subcommand_mut("init") {
                Some(init) => init.error(kind, message),
                None => cmd.error(kind, message),
            });
        }
    }
    Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        super::command().debug_assert();
    }

    /// Every argument a `--help` shows, in every command, says what it is for.
    #[test]
    fn every_shown_argument_has_a_description() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut cmd = super::command();
        // Built: global flags copied into subcommands, help and version added.
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "pbxsync", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
    }
}
