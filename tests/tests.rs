//! One integration-test binary: the modules drive the real `pbxsync` executable on real
//! git repositories; `fuzz`, `properties` and `changed_rows` call the library too (the
//! reader and renderers, the engine), where the CLI cannot show what they check.

mod support;

mod admin;
mod adopt;
mod apply;
mod changed_rows;
mod cli;
mod config;
mod faults;
mod fmt;
mod fuzz;
mod git_edges;
mod hardening_bounds;
mod hardening_formula;
mod hardening_wrong_results;
mod hostile;
mod init;
mod kamailio;
mod passwords;
mod plan;
mod postgres;
mod properties;
mod publish;
mod reader;
mod secrets;
mod sources;
mod validate;
mod watch;
mod words;
