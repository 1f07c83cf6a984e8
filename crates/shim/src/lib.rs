//! The pieces of a detached container's monitor that must stay small.
//!
//! A detached container's monitor starts as `vessel` itself (it needs the engine to start
//! the container), then, with the container running, replaces itself with the
//! `vessel-shim` binary: a process that only copies output into the log, forwards
//! signals and waits. When the container exits, the shim executes `vessel` again to
//! record the exit and clean up. So the process that stays around for the container's
//! whole life, like conmon, holds almost no memory. [`logs`] is the log format both
//! halves write and `vessel logs` reads; [`attach`] is the attach socket both serve.

pub mod attach;
pub mod logs;
