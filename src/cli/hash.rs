//! `pbxsync hash-password`: a password in, its argon2id PHC string out, so that a
//! repository need never hold a plaintext password (SPEC section 3, rule 9).

use super::{CliError, Context, Outcome};
use std::io::{BufRead, IsTerminal, Write};

pub fn run(ctx: &Context) -> Result<Outcome, CliError> {
    // Without a config, the default policy and hash parameters.
    let config = ctx.config_or_defaults()?;
    let password = if std::io::stdin().is_terminal() {
        let first = prompt("Password: ")?;
        if prompt("Again: ")? != first {
            return Err(CliError::Message(
                "the two passwords differ; nothing was hashed".into(),
            ));
        }
        first
    } else {
        read_line(&mut std::io::stdin().lock())?
    };
    if password.is_empty() {
        return Err(CliError::Message("no password given".into()));
    }
    if let Err(problem) = crate::validate::rules::password(&password, &config.policy.password) {
        return Err(CliError::Message(problem.message));
    }
    let hash = crate::apply::hash_password(&password, &config.policy.password_hash)
        .map_err(|e| CliError::Message(e.to_string()))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{hash}").map_err(|source| CliError::Write {
        path: "standard output".into(),
        source,
    })?;
    Ok(Outcome::Success)
}

/// One line, without its line end.
fn read_line(input: &mut impl BufRead) -> Result<String, CliError> {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .map_err(|source| CliError::Read {
            path: "standard input".into(),
            source,
        })?;
    let end = line.trim_end_matches(['\n', '\r']).len();
    line.truncate(end);
    Ok(line)
}

/// Asks on stderr and reads a line from the terminal with echo off, so that the
/// password is not left on the screen; echo is back on once the line is read.
fn prompt(question: &str) -> Result<String, CliError> {
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let echo = Echo::off();
    let line = read_line(&mut std::io::stdin().lock());
    drop(echo);
    eprintln!();
    line
}

/// The terminal's echo switched off while this lives (termios on standard input).
struct Echo(Option<libc::termios>);

impl Echo {
    fn off() -> Echo {
        // SAFETY: tcgetattr and tcsetattr on fd 0 with a termios they fill in.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut saved) != 0 {
                return Echo(None);
            }
            let mut quiet = saved;
            quiet.c_lflag &= !libc::ECHO;
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet) != 0 {
                return Echo(None);
            }
            Echo(Some(saved))
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: restores the settings tcgetattr gave.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved);
            }
        }
    }
}
