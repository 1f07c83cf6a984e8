//! Resolve a container path under the rootfs without letting symlinks escape it.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// Join `unsafe_path` (a path inside the container) onto `root`, resolving symlinks as if
/// `root` were `/`: absolute link targets restart at `root` and `..` never climbs above
/// it. Components that do not exist yet are appended as they are.
pub(crate) fn secure_join(root: &Path, unsafe_path: &Path) -> Result<PathBuf> {
    let mut pending: VecDeque<OsString> = components(unsafe_path);
    let mut resolved: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(c) = pending.pop_front() {
        if c == ".." {
            resolved.pop();
            continue;
        }
        let candidate = root.join(resolved.iter().collect::<PathBuf>()).join(&c);
        match fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 255 {
                    return Err(Error::InvalidSpec(format!(
                        "too many symlinks resolving {} in {}",
                        unsafe_path.display(),
                        root.display()
                    )));
                }
                let target =
                    fs::read_link(&candidate).map_err(|e| Error::io("readlink", &candidate, e))?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for t in components(&target).into_iter().rev() {
                    pending.push_front(t);
                }
            }
            _ => resolved.push(c),
        }
    }
    Ok(root.join(resolved.iter().collect::<PathBuf>()))
}

fn components(p: &Path) -> VecDeque<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_cannot_escape() {
        let root = std::env::temp_dir().join(format!("vessel-sj-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("etc")).unwrap();
        symlink("/etc", root.join("abs")).unwrap();
        symlink("../../../../etc", root.join("rel")).unwrap();
        symlink("loop", root.join("loop")).unwrap();

        assert_eq!(
            secure_join(&root, Path::new("/abs/x")).unwrap(),
            root.join("etc/x")
        );
        assert_eq!(
            secure_join(&root, Path::new("/rel/x")).unwrap(),
            root.join("etc/x")
        );
        assert_eq!(
            secure_join(&root, Path::new("/../../x")).unwrap(),
            root.join("x")
        );
        assert_eq!(
            secure_join(&root, Path::new("/new/dir")).unwrap(),
            root.join("new/dir")
        );
        assert!(secure_join(&root, Path::new("/loop")).is_err());
        fs::remove_dir_all(&root).unwrap();
    }
}
