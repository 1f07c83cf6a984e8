//! Locating `vessel-init`, the static PID 1 that `--init` bind-mounts into a container.

use std::path::PathBuf;

use super::{EngineError, Result};

/// Where `vessel-init` appears inside the container.
pub const INIT_PATH: &str = "/dev/init";

/// The `vessel-init` binary: `VESSEL_INIT`, or beside the running `vessel` binary.
pub fn binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("VESSEL_INIT") {
        return Ok(PathBuf::from(p));
    }
    let exe = vessel_container::sealed::host_exe()
        .map_err(|e| EngineError::Internal(format!("locate the vessel binary: {e}")))?;
    let p = exe.with_file_name("vessel-init");
    if p.is_file() {
        Ok(p)
    } else {
        Err(EngineError::Internal(format!(
            "--init needs {} (build it with ./x setup, or set VESSEL_INIT)",
            p.display()
        )))
    }
}
