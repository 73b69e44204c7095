//! The only place that knows clap, colours, prompts, progress bars and exit codes.

mod admin;
mod adopt;
mod args;
mod hash;
mod init;
mod publish;
mod sync;
mod watch;

pub use args::{Cli, Color, Command, Format, PlanFormat};

use crate::config::{Config, ConfigError};
use crate::render::Style;
use crate::render::diagnostics::{self as render_diag, SourceView};
use crate::validate::{self, Policy, Validated};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// A failure the user has to act on; printed as `error: …`, exit 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Message(String),
    /// Kept whole, so that a command can tell a damaged state file from an
    /// error it may report and go on after.
    #[error(transparent)]
    Target(#[from] crate::backend::BackendError),
    #[error(transparent)]
    Engine(crate::engine::EngineError),
}

impl From<crate::engine::EngineError> for CliError {
    fn from(e: crate::engine::EngineError) -> CliError {
        match e {
            // Kept as a target error, so that a damaged state file reads as one.
            crate::engine::EngineError::Target(e) => CliError::Target(e),
            e => CliError::Engine(e),
        }
    }
}

/// What a command ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Something is wrong (validation errors included): exit 1.
    Failure,
    /// `--detailed-exitcode` and the plan has changes: exit 2.
    Changes,
}

pub fn main() -> ExitCode {
    let cli = match args::parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    match run(cli) {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Failure) => ExitCode::from(1),
        Ok(Outcome::Changes) => ExitCode::from(2),
        Err(e) => {
            if let CliError::Write { source, .. } = &e
                && source.kind() == std::io::ErrorKind::BrokenPipe
            {
                return ExitCode::SUCCESS;
            }
            // Errors quote files and config keys: shown with their controls escaped.
            eprintln!("error: {}", crate::render::untrusted_lines(&e.to_string()));
            ExitCode::from(1)
        }
    }
}

/// Prints clap's message. `--help` and `--version` exit 0; a command line that
/// cannot be parsed exits 1 like any other error, so that 2 only ever means
/// "changes pending" under `--detailed-exitcode`.
fn usage_error(e: &clap::Error) -> ExitCode {
    // A closed pipe (`pbxsync --help | head`) is not worth a panic or a message.
    let _ = e.print();
    if e.use_stderr() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Everything a command needs from the global flags.
pub struct Context {
    pub cli_config: Option<PathBuf>,
    pub cli_target: Option<String>,
    pub quiet: bool,
    pub verbose: bool,
    pub style: Style,
    pub stderr_style: Style,
    /// How the engine plans (`PBXSYNC_FULL_PLAN` set: always the whole directory).
    pub engine: crate::engine::EngineOptions,
}

/// With `-v`, says how long each phase took (on stderr).
pub struct Clock {
    on: bool,
    last: std::cell::Cell<std::time::Instant>,
}

impl Clock {
    pub fn lap(&self, phase: &str) {
        if self.on {
            let now = std::time::Instant::now();
            eprintln!(
                "{phase}: {:.0} ms",
                (now - self.last.get()).as_secs_f64() * 1000.0
            );
            self.last.set(now);
        }
    }
}

impl Context {
    /// The engine for `config`.
    pub fn engine<'c>(&self, config: &'c Config) -> crate::engine::Engine<'c> {
        crate::engine::Engine::new(config, self.engine)
    }

    pub fn clock(&self) -> Clock {
        Clock {
            on: self.verbose,
            last: std::cell::Cell::new(std::time::Instant::now()),
        }
    }

    /// The config: `--config`, else `pbxsync.yaml` found upwards.
    pub fn config(&self) -> Result<Config, CliError> {
        let path = match &self.cli_config {
            Some(p) => p.clone(),
            None => {
                Config::discover(&std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")))?
            }
        };
        let mut config = Config::load(&path)?;
        if let Some(t) = &self.cli_target {
            let target =
                crate::config::TargetUrl::parse(t, &std::env::current_dir().unwrap_or_default())
                    .map_err(|m| CliError::Message(format!("--target: {m}")))?;
            // The config's `schema` goes with another PostgreSQL URL.
            config.target = match (config.target.schema(), &target) {
                (Some(schema), crate::config::TargetUrl::Postgres { .. }) => {
                    target.with_schema(schema).map_err(CliError::Message)?
                }
                _ => target,
            };
        }
        Ok(config)
    }

    /// The config, or the defaults when there is none (for commands given a file).
    pub fn config_or_defaults(&self) -> Result<Config, CliError> {
        match self.config() {
            Ok(c) => Ok(c),
            Err(CliError::Config(ConfigError::NotFound { .. })) => Ok(Config::defaults(
                &std::env::current_dir().unwrap_or_default(),
            )),
            Err(e) => Err(e),
        }
    }
}

pub fn run(cli: Cli) -> Result<Outcome, CliError> {
    let color = |terminal: bool| match cli.color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => terminal && std::env::var_os("NO_COLOR").is_none(),
    };
    let ctx = Context {
        cli_config: cli.config,
        cli_target: cli.target,
        quiet: cli.quiet,
        verbose: cli.verbose,
        style: Style {
            color: color(std::io::stdout().is_terminal()),
        },
        stderr_style: Style {
            color: color(std::io::stderr().is_terminal()),
        },
        engine: crate::engine::EngineOptions {
            full_plan: std::env::var_os("PBXSYNC_FULL_PLAN").is_some(),
            // `plan -v` names what the CSV leaves alone, reading the whole
            // directory to do so; an apply (whose `-v` times its phases) and
            // the rest count them only.
            list_unnamed: cli.verbose && matches!(cli.command, Command::Plan { .. }),
        },
    };
    match cli.command {
        Command::Init { dir } => init::run(&ctx, dir.as_deref()),
        Command::Validate {
            source,
            format,
            allow_empty,
        } => validate_cmd(&ctx, source.file.as_deref(), format, allow_empty),
        Command::Fmt { check, file } => fmt_cmd(&ctx, file.as_deref(), check),
        Command::Plan {
            flags,
            format,
            out,
            detailed_exitcode,
        } => sync::plan_cmd(&ctx, &flags, format, out.as_deref(), detailed_exitcode),
        Command::Apply {
            plan_file,
            flags,
            auto_approve,
            format,
        } => sync::apply_cmd(&ctx, plan_file.as_deref(), &flags, auto_approve, format),
        Command::Watch {
            once,
            working_tree,
            detailed_exitcode,
            format,
        } => watch::watch_cmd(
            &ctx,
            crate::watch::Settings { once, working_tree },
            format,
            detailed_exitcode,
        ),
        Command::Export { out } => admin::export(&ctx, out.as_deref()),
        Command::Adopt { format } => adopt::run(&ctx, format),
        Command::Status { format } => admin::status(&ctx, format),
        Command::History { id, format } => admin::history(&ctx, id, format),
        Command::HashPassword => hash::run(&ctx),
        Command::Provision { format } => publish::provision(&ctx, format),
        Command::Secret { extension, format } => publish::secret(&ctx, &extension, format),
        Command::Devices(cmd) => admin::devices(&ctx, cmd),
        Command::Licenses(cmd) => admin::licenses(&ctx, cmd),
    }
}

pub fn read(path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|source| CliError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// A file's bytes, mapped rather than copied when it is large: `validate` of a
/// hundred-megabyte file then starts at once instead of copying it first.
pub fn read_mapped(path: &Path) -> Result<crate::source::Bytes, CliError> {
    crate::source::Bytes::read(path).map_err(|source| CliError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Prints to stdout; a closed pipe (`pbxsync … | head`) ends quietly.
pub fn out(s: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(s.as_bytes())
        .and_then(|_| stdout.flush())
        .map_err(|source| CliError::Write {
            path: "standard output".into(),
            source,
        })
}

/// Prints what `write` writes on stdout, buffered, with a final line break.
pub fn out_with(
    write: impl FnOnce(&mut std::io::BufWriter<std::io::StdoutLock<'_>>) -> std::io::Result<()>,
) -> Result<(), CliError> {
    out_streamed(|w| write(w).and_then(|()| w.write_all(b"\n")))
}

/// Prints what `write` writes on stdout, buffered.
pub fn out_streamed(
    write: impl FnOnce(&mut std::io::BufWriter<std::io::StdoutLock<'_>>) -> std::io::Result<()>,
) -> Result<(), CliError> {
    let mut w = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    write(&mut w)
        .and_then(|()| w.flush())
        .map_err(|source| CliError::Write {
            path: "standard output".into(),
            source,
        })
}

/// Prints a value as pretty JSON on stdout, streamed.
pub fn out_json<T: serde::Serialize>(value: &T) -> Result<(), CliError> {
    // serde_json's error keeps the kind of the I/O error it wraps (a closed pipe).
    out_with(|w| serde_json::to_writer_pretty(w, value).map_err(std::io::Error::from))
}

/// Shows a file's diagnostics as text on stderr.
pub fn print_diagnostics(ctx: &Context, name: &str, v: &Validated<'_>) {
    let view = SourceView::new(name, &v.text, v.delimiter, Some(&v.layout));
    print_diagnostics_of(ctx, &view, &v.diagnostics);
    print_omitted(ctx, &v.omitted);
}

/// Says on stderr how many diagnostics of each code were left out.
pub fn print_omitted(ctx: &Context, omitted: &crate::diagnostic::Omitted) {
    let _ = write!(
        std::io::stderr().lock(),
        "{}",
        render_diag::omitted_text(omitted, ctx.quiet, ctx.stderr_style)
    );
}

/// Shows diagnostics about a file (the file's own, or a plan's) on stderr.
pub fn print_diagnostics_of(
    ctx: &Context,
    view: &SourceView<'_>,
    diagnostics: &[crate::diagnostic::Diagnostic],
) {
    let mut diagnostics = diagnostics.to_vec();
    render_diag::fill_spans(&mut diagnostics, view);
    let mut err = std::io::stderr().lock();
    for d in &diagnostics {
        if ctx.quiet && !d.is_error() {
            continue;
        }
        let _ = writeln!(err, "{}", render_diag::text(d, view, ctx.stderr_style));
    }
}

/// How a path is shown: relative to the working directory when it is below it.
pub fn display_path(path: &Path) -> String {
    crate::fsio::shown(path)
}

fn validate_cmd(
    ctx: &Context,
    file: Option<&Path>,
    format: Format,
    allow_empty: bool,
) -> Result<Outcome, CliError> {
    let config = if file.is_some() {
        ctx.config_or_defaults()?
    } else {
        ctx.config()?
    };
    let path = file.map_or_else(|| config.source_path.clone(), Path::to_path_buf);
    let clock = ctx.clock();
    let bytes = read_mapped(&path)?;
    clock.lap("read the file");
    let v = ctx.engine(&config).check(&bytes, allow_empty)?;
    clock.lap("validate");
    let name = display_path(&path);
    match format {
        Format::Json => {
            let (errors, warnings) = render_diag::json(&v.diagnostics);
            let mut doc = serde_json::json!({
                "format_version": 1,
                "source": { "kind": "file", "path": name },
                "rows": v.rows,
                "users": v.users,
                "valid": !v.has_errors(),
                "errors": errors,
                "warnings": warnings,
            });
            if !v.omitted.is_empty() {
                doc["omitted"] = serde_json::to_value(&v.omitted).unwrap_or_default();
            }
            out(&format!(
                "{}\n",
                serde_json::to_string_pretty(&doc).unwrap_or_default()
            ))?;
        }
        Format::Text => {
            print_diagnostics(ctx, &name, &v);
            if v.has_errors() {
                eprintln!(
                    "{name}: {}",
                    render_diag::counts_with(&v.diagnostics, &v.omitted)
                );
            } else if !ctx.quiet {
                out(&format!(
                    "{name}: valid, {} rows, {} users ({})\n",
                    v.rows,
                    v.users,
                    render_diag::counts_with(&v.diagnostics, &v.omitted)
                ))?;
            }
        }
    }
    Ok(if v.has_errors() {
        Outcome::Failure
    } else {
        Outcome::Success
    })
}

fn fmt_cmd(ctx: &Context, file: Option<&Path>, check: bool) -> Result<Outcome, CliError> {
    let config = if file.is_some() {
        ctx.config_or_defaults()?
    } else {
        ctx.config()?
    };
    let path = file.map_or_else(|| config.source_path.clone(), Path::to_path_buf);
    let bytes = read_mapped(&path)?;
    let policy = Policy {
        allow_empty: true,
        ..Policy::from_config(&config)
    };
    let v = validate::check(&bytes, &policy);
    let name = display_path(&path);
    let formatted = crate::fmt::canonical(&v.text, v.delimiter, &v.layout);
    // fmt fixes whitespace, MAC spelling, encoding and layout; any other error
    // needs a person, so the file stays as it is.
    let after = validate::check(formatted.as_bytes(), &policy);
    if v.diagnostics
        .iter()
        .any(|d| d.code == crate::diagnostic::Code::BadHeader)
        || after.has_errors()
    {
        print_diagnostics(ctx, &name, &v);
        eprintln!(
            "{name}: not formatted; fix these first ({})",
            render_diag::counts_with(&v.diagnostics, &v.omitted)
        );
        return Ok(Outcome::Failure);
    }
    if formatted.as_bytes() == &*bytes {
        if !ctx.quiet {
            out(&format!("{name}: already formatted\n"))?;
        }
        return Ok(Outcome::Success);
    }
    if check {
        if !ctx.quiet {
            out(&format!(
                "{name}: would be reformatted (run `pbxsync fmt`)\n"
            ))?;
        }
        return Ok(Outcome::Failure);
    }
    write_atomically(&path, formatted.as_bytes())?;
    if !ctx.quiet {
        out(&format!("{name}: formatted\n"))?;
    }
    Ok(Outcome::Success)
}

/// Writes through a temporary file and a rename (`fsio::write_atomically`).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    crate::fsio::write_atomically(path, bytes).map_err(|source| CliError::Write {
        path: path.display().to_string(),
        source,
    })
}
