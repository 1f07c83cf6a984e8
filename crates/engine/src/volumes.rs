//! Named volumes (`vessel volume create`, `-v NAME:/path`, `--mount type=volume`):
//! directories under `<root>/volumes/NAME/_data`, as Docker's `local` driver lays them
//! out, each with its description in `NAME/volume.json`. An instance's request names
//! the volumes it uses, so a volume in use cannot be removed.

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{EngineError, Result};

/// The label Docker puts on a volume it made for an unnamed `--mount type=volume` (or an
/// image's `VOLUME`): `volume prune` without `--all` removes only those.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

/// One volume, as `docker volume inspect` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeInfo {
    /// RFC 3339 creation time.
    pub created_at: String,
    /// Always `local`.
    pub driver: String,
    /// User labels.
    pub labels: BTreeMap<String, String>,
    /// The host directory mounted into instances.
    pub mountpoint: PathBuf,
    /// Its name.
    pub name: String,
    /// Driver options (none are accepted).
    pub options: BTreeMap<String, String>,
    /// Always `local`.
    pub scope: String,
}

/// The volumes under one data root.
pub struct Volumes {
    dir: PathBuf,
}

/// Whether `name` is a volume name Docker accepts: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() >= 2
        && name.len() <= 255
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn check_name(name: &str) -> Result<()> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(EngineError::InvalidFlag(format!(
            "invalid volume name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, at least 2 characters"
        )))
    }
}

impl Volumes {
    /// The volumes of data root `root`.
    pub fn new(root: &Path) -> Volumes {
        Volumes {
            dir: root.join("volumes"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Creates volume `name` (a random one if `None`) with `labels`; an existing volume
    /// of that name is returned as it is, as Docker does.
    pub fn create(
        &self,
        name: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<VolumeInfo> {
        let name = match name {
            Some(n) => {
                check_name(n)?;
                n.to_string()
            }
            None => crate::names::new_id(),
        };
        if let Ok(v) = self.inspect(&name) {
            return Ok(v);
        }
        // Traversable (not listable): a `--userns` container's root reaches its volume.
        vessel_db::private_dir(&self.dir, 0o711)
            .map_err(|e| EngineError::io("create", &self.dir, e))?;
        let dir = self.path(&name);
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            // Made by a concurrent create: theirs stands once it is described.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                for _ in 0..50 {
                    if let Ok(v) = self.inspect(&name) {
                        return Ok(v);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                return Err(EngineError::Conflict(format!(
                    "volume {name} is half-made ({} has no volume.json): remove that directory",
                    dir.display()
                )));
            }
            Err(e) => return Err(EngineError::io("create", dir, e)),
        }
        let data = dir.join("_data");
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&data)
            .map_err(|e| EngineError::io("create", &data, e))?;
        let info = VolumeInfo {
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            driver: "local".into(),
            labels,
            mountpoint: data,
            name,
            options: BTreeMap::new(),
            scope: "local".into(),
        };
        // Written whole, then renamed: a volume without its description is not one.
        let json =
            serde_json::to_vec_pretty(&info).map_err(|e| EngineError::Internal(e.to_string()))?;
        let tmp = dir.join("volume.json.tmp");
        std::fs::write(&tmp, json).map_err(|e| EngineError::io("write", &tmp, e))?;
        std::fs::rename(&tmp, dir.join("volume.json"))
            .map_err(|e| EngineError::io("write", dir.join("volume.json"), e))?;
        Ok(info)
    }

    /// Volume `name`.
    pub fn inspect(&self, name: &str) -> Result<VolumeInfo> {
        if !valid_name(name) {
            return Err(EngineError::NoSuchVolume(name.to_string()));
        }
        let meta = self.path(name).join("volume.json");
        let bytes = match std::fs::read(&meta) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(EngineError::NoSuchVolume(name.to_string()))
            }
            Err(e) => return Err(EngineError::io("read", meta, e)),
        };
        let mut info: VolumeInfo = serde_json::from_slice(&bytes)
            .map_err(|e| EngineError::Internal(format!("{}: {e}", meta.display())))?;
        // Where it is now, whatever the file says (the data root may have moved).
        info.mountpoint = self.path(name).join("_data");
        info.name = name.to_string();
        Ok(info)
    }

    /// Every volume, by name.
    pub fn list(&self) -> Result<Vec<VolumeInfo>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(EngineError::io("read", &self.dir, e)),
        };
        let mut out: Vec<VolumeInfo> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|n| self.inspect(&n).ok())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Deletes volume `name` and its data. The caller checked that no instance uses it.
    pub fn remove(&self, name: &str) -> Result<()> {
        self.inspect(name)?;
        let dir = self.path(name);
        // The description first: from here on it is no volume, whatever is left.
        let meta = dir.join("volume.json");
        std::fs::remove_file(&meta).map_err(|e| EngineError::io("remove", meta, e))?;
        std::fs::remove_dir_all(&dir).map_err(|e| EngineError::io("remove", dir, e))
    }

    /// Bytes used by `info`'s data (what `prune` reclaims); symlinks are not followed.
    pub fn size(info: &VolumeInfo) -> u64 {
        fn walk(p: &Path) -> u64 {
            let Ok(m) = std::fs::symlink_metadata(p) else {
                return 0;
            };
            if m.is_dir() {
                std::fs::read_dir(p)
                    .map(|d| d.filter_map(|e| e.ok()).map(|e| walk(&e.path())).sum())
                    .unwrap_or(0)
            } else {
                m.len()
            }
        }
        walk(&info.mountpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dockers_rule() {
        for ok in ["ab", "data", "my-vol_1.x", "0a"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["a", "", "-a", ".a", "a/b", "..", "a b", "a:b", "_a"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn create_is_idempotent_and_remove_deletes_the_data() {
        let root = tempfile::tempdir().unwrap();
        let v = Volumes::new(root.path());
        let a = v.create(Some("data"), BTreeMap::new()).unwrap();
        std::fs::write(a.mountpoint.join("f"), "x").unwrap();
        let b = v.create(Some("data"), BTreeMap::new()).unwrap();
        assert_eq!(a, b);
        assert_eq!(Volumes::size(&a), 1);
        assert_eq!(v.list().unwrap().len(), 1);
        v.remove("data").unwrap();
        assert!(!root.path().join("volumes/data").exists());
        assert!(matches!(
            v.inspect("data"),
            Err(EngineError::NoSuchVolume(_))
        ));
        assert!(matches!(
            v.inspect("../x"),
            Err(EngineError::NoSuchVolume(_))
        ));
        assert!(v.create(Some("../x"), BTreeMap::new()).is_err());
    }
}
