//! `vessel-init`, the static PID 1 that `--init` bind-mounts into a container (and the
//! agent of a microVM): where it appears, and the check that it is there.

use std::path::{Path, PathBuf};

use super::{EngineError, Result};

/// Where `vessel-init` appears inside the container.
pub const INIT_PATH: &str = "/dev/init";

/// The `vessel-init` binary at `path` ([`crate::EngineConfig::init`]), which must exist.
pub fn binary(path: &Path) -> Result<PathBuf> {
    if path.is_file() {
        Ok(path.to_path_buf())
    } else {
        Err(EngineError::Internal(format!(
            "--init needs {} (build it with ./x setup, or set {})",
            path.display(),
            crate::config::ENV_INIT
        )))
    }
}
