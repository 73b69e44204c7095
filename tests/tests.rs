//! One integration-test binary: every module drives the real `pbxsync` executable.

mod support;

mod admin;
mod apply;
mod changed_rows;
mod config;
mod faults;
mod fmt;
mod fuzz;
mod hardening_bounds;
mod hardening_formula;
mod hardening_wrong_results;
mod hostile;
mod init;
mod plan;
mod properties;
mod reader;
mod secrets;
mod sources;
mod validate;
