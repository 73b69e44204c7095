//! SQLite target (embedded default).
