//! Legacy PC devices on port I/O.

pub(crate) mod console_log;
pub(crate) mod i8042;
pub(crate) mod power;
pub(crate) mod serial;
