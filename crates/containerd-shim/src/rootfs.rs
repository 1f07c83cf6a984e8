//! The task's root filesystem: the mounts containerd's snapshotter hands over (an
//! overlay, usually), mounted on `<bundle>/rootfs` at create and unmounted at delete.

use std::collections::HashMap;
use std::path::Path;

use containerd_shim::protos::types::mount::Mount;
use nix::mount::MsFlags;

use crate::error::{Error, Result};

/// The bundle's `config.json` annotations.
pub fn annotations(bundle: &Path) -> Result<HashMap<String, String>> {
    let path = bundle.join("config.json");
    let bytes = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    let mut out = HashMap::new();
    if let Some(map) = v.get("annotations").and_then(|a| a.as_object()) {
        for (k, v) in map {
            if let Some(s) = v.as_str() {
                out.insert(k.clone(), s.to_string());
            }
        }
    }
    Ok(out)
}

/// The mount(2) flag an option sets (`true`) or clears (`false`); anything else goes to
/// the filesystem as data.
fn flag(option: &str) -> Option<(MsFlags, bool)> {
    Some(match option {
        "defaults" => (MsFlags::empty(), true),
        "ro" => (MsFlags::MS_RDONLY, true),
        "rw" => (MsFlags::MS_RDONLY, false),
        "nosuid" => (MsFlags::MS_NOSUID, true),
        "suid" => (MsFlags::MS_NOSUID, false),
        "nodev" => (MsFlags::MS_NODEV, true),
        "dev" => (MsFlags::MS_NODEV, false),
        "noexec" => (MsFlags::MS_NOEXEC, true),
        "exec" => (MsFlags::MS_NOEXEC, false),
        "sync" => (MsFlags::MS_SYNCHRONOUS, true),
        "async" => (MsFlags::MS_SYNCHRONOUS, false),
        "dirsync" => (MsFlags::MS_DIRSYNC, true),
        "noatime" => (MsFlags::MS_NOATIME, true),
        "atime" => (MsFlags::MS_NOATIME, false),
        "nodiratime" => (MsFlags::MS_NODIRATIME, true),
        "diratime" => (MsFlags::MS_NODIRATIME, false),
        "relatime" => (MsFlags::MS_RELATIME, true),
        "norelatime" => (MsFlags::MS_RELATIME, false),
        "strictatime" => (MsFlags::MS_STRICTATIME, true),
        "bind" => (MsFlags::MS_BIND, true),
        "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, true),
        _ => return None,
    })
}

/// Splits a mount's options into flags and filesystem data.
fn split_options(options: &[String]) -> Result<(MsFlags, String)> {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        match flag(o) {
            Some((f, true)) => flags |= f,
            Some((f, false)) => flags &= !f,
            None => data.push(o.as_str()),
        }
    }
    let data = data.join(",");
    // mount(2) copies one page of data.
    if data.len() >= 4096 {
        return Err(Error::Invalid(format!(
            "mount options of {} bytes: longer than mount(2) takes (too many layers?)",
            data.len()
        )));
    }
    Ok((flags, data))
}

/// Mounts `mounts` in order on `<bundle>/rootfs`. Returns whether anything was mounted
/// (nothing when containerd passes none: the bundle's rootfs is used as it is).
pub fn mount(bundle: &Path, mounts: &[Mount]) -> Result<bool> {
    let target = bundle.join("rootfs");
    for (i, m) in mounts.iter().enumerate() {
        let mounted = split_options(&m.options).and_then(|(flags, data)| {
            let fstype = Some(m.type_.as_str()).filter(|t| !t.is_empty());
            let source = Some(m.source.as_str()).filter(|s| !s.is_empty());
            let data = Some(data.as_str()).filter(|d| !d.is_empty());
            nix::mount::mount(source, &target, fstype, flags, data).map_err(|e| {
                Error::io(
                    "mount",
                    &target,
                    std::io::Error::other(format!("{} ({}): {e}", m.source, m.type_)),
                )
            })?;
            // A read-only bind mount is a bind, then a read-only remount.
            if flags.contains(MsFlags::MS_BIND | MsFlags::MS_RDONLY) {
                nix::mount::mount(
                    None::<&str>,
                    &target,
                    None::<&str>,
                    flags | MsFlags::MS_REMOUNT,
                    None::<&str>,
                )
                .map_err(|e| Error::io("remount read-only", &target, e.into()))?;
            }
            Ok(())
        });
        if let Err(e) = mounted {
            if i > 0 {
                unmount(bundle);
            }
            return Err(e);
        }
    }
    Ok(!mounts.is_empty())
}

/// Unmounts everything on `<bundle>/rootfs` (lazily: a process still holding it does
/// not keep the mount in the host's table).
pub fn unmount(bundle: &Path) {
    let target = bundle.join("rootfs");
    loop {
        match nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => break,
            Err(e) => {
                log::warn!("unmount {}: {e}", target.display());
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let o: Vec<String> = ["ro", "nosuid", "index=off", "lowerdir=/a:/b", "rw"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (flags, data) = split_options(&o).unwrap();
        assert_eq!(flags, MsFlags::MS_NOSUID);
        assert_eq!(data, "index=off,lowerdir=/a:/b");
    }

    #[test]
    fn overlong_options_are_refused() {
        let o = vec![format!("lowerdir={}", "/x".repeat(3000))];
        let e = split_options(&o).unwrap_err();
        assert!(e.to_string().contains("6009 bytes"), "{e}");
    }
}
