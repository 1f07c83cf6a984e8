//! x86_64 machine: memory map, boot parameters, ACPI tables, CPUID and register setup.

pub(crate) mod acpi;
pub(crate) mod boot_params;
pub(crate) mod cpuid;
pub(crate) mod layout;
pub(crate) mod regs;
