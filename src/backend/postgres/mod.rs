//! PostgreSQL target: one directory shared by several controllers.

pub mod connect;
