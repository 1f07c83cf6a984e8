//! Resolving `--user name[:group]` against the image's own /etc/passwd and /etc/group,
//! for the process `run` starts (the image's layers are read, each file capped); `exec
//! -u` resolves inside the running container instead (see `vessel_container::user`).

use std::io::Read;
use std::path::PathBuf;

use super::{EngineError, Result};

pub use vessel_container::user::User;

/// Finds `rel` (like `etc/passwd`) in the topmost layer that has it, read up to
/// [`vessel_container::user::MAX_DB_SIZE`].
fn find_in_layers(layers_top_first: &[PathBuf], rel: &str) -> Result<Option<String>> {
    for l in layers_top_first {
        let p = l.join(rel);
        if !std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
            continue;
        }
        let Ok(f) = std::fs::File::open(&p) else {
            continue;
        };
        let mut text = String::new();
        let cap = vessel_container::user::MAX_DB_SIZE;
        if f.take(cap + 1).read_to_string(&mut text).is_err() {
            continue;
        }
        if text.len() as u64 > cap {
            return Err(EngineError::InvalidFlag(format!(
                "the image's /{rel} is larger than {} MiB",
                cap >> 20
            )));
        }
        return Ok(Some(text));
    }
    Ok(None)
}

/// Resolves `spec` (`""`, `name`, `uid`, `name:group`, `uid:gid`) inside an image whose
/// layer directories are given top first. Numeric ids need no entry, as in Docker.
pub fn resolve(spec: &str, layers_top_first: &[PathBuf]) -> Result<User> {
    let passwd = find_in_layers(layers_top_first, "etc/passwd")?.unwrap_or_default();
    let group = find_in_layers(layers_top_first, "etc/group")?.unwrap_or_default();
    vessel_container::user::resolve_in(spec, &passwd, &group)
        .map_err(|e| EngineError::InvalidFlag(e.to_string()))
}

/// The ids of groups `names` (names or numbers; `--group-add`) in the image's /etc/group.
pub fn group_ids(names: &[String], layers_top_first: &[PathBuf]) -> Result<Vec<u32>> {
    let group = find_in_layers(layers_top_first, "etc/group")?.unwrap_or_default();
    names
        .iter()
        .map(|n| {
            if let Ok(id) = n.parse::<u32>() {
                return Ok(id);
            }
            group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == n)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    EngineError::InvalidFlag(format!(
                        "--group-add {n}: unable to find group {n}: no matching entries in the image's /etc/group"
                    ))
                })
        })
        .collect()
}

/// The `HOME` a process gets: from passwd, unless the environment sets it.
pub fn home_env(env: &[String], user: &User) -> Option<String> {
    (!env.iter().any(|e| e.starts_with("HOME="))).then(|| format!("HOME={}", user.home))
}
