//! Architecture-specific machine setup. Only x86_64 is supported.

pub(crate) mod x86_64;
