//! pbxsync keeps a phone system's users, extensions and device assignments in sync
//! with a CSV file in git: validate, plan, apply, record.
//!
//! The core (`model`, `policy`, `csv`, `validate`, `plan`) takes bytes and values
//! and returns values; `config`, `source`, `target` and `cli` are the edges that do
//! I/O; `engine` runs the pipeline between them and returns typed outcomes.

pub mod adopt;
pub mod apply;
pub mod backend;
pub mod bytes;
pub mod cli;
pub mod config;
pub mod csv;
pub mod diagnostic;
pub mod engine;
pub mod export;
pub mod fmt;
pub mod fsio;
pub mod model;
pub mod plan;
pub mod policy;
pub mod publish;
pub mod render;
pub mod source;
pub mod time;
pub mod validate;
pub mod watch;

/// Maps and sets keyed by names and numbers on hot paths: foldhash rather than
/// SipHash, whose resistance to chosen keys an administrator's own CSV does not
/// need.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type FastSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;
