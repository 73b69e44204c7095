//! One integration-test binary: every module drives the real `pbxsync` executable.

mod support;

mod admin;
mod apply;
mod changed_rows;
mod config;
mod faults;
mod fmt;
mod hardening_bounds;
mod init;
mod plan;
mod properties;
mod reader;
mod secrets;
mod sources;
mod validate;
