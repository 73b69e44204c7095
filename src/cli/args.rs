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
}

#[derive(Debug, Args, Clone, Default)]
pub struct SourceArgs {
    /// A CSV file anywhere (no git).
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
}
