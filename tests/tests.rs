//! One integration-test binary: every module drives the real `pbxsync` executable.

mod support;

mod config;
mod fmt;
mod init;
mod properties;
mod reader;
mod validate;
