//! Removing directories without waiting for the disk.
//!
//! Deleting even a few small files can take milliseconds each where the filesystem
//! discards freed blocks synchronously (ext4 mounted with `discard`, as on these hosts),
//! and a container's upper directory can hold any amount of data. Removal is on the path
//! of `vessel run --rm` and `vessel rm`, so a directory is first renamed into a trash
//! directory on the same filesystem (one metadata operation: it is gone from its place at
//! once) and then deleted off that path: by a background `rm -rf` ([`empty_soon`]), or,
//! in a process that has nothing left to report (a container's monitor after its last
//! report), right there ([`empty_now`]), which spares the exec of `rm` and the CPU it
//! takes from the next command. Entries that a crash left in the trash are deleted by the
//! next removal.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

/// Trash entries older than this are taken to be left over by a crash.
const STALE: Duration = Duration::from_secs(60);

/// Removes `dir`, deleting its contents in the background via `trash` (created if needed;
/// it must be on the same filesystem). Falls back to removing it here when it cannot be
/// moved (another filesystem, a mount point) or no background process can be started.
/// A missing `dir` is not an error.
pub fn remove_dir_soon(dir: &Path, trash: &Path) -> io::Result<()> {
    match move_to_trash(dir, trash)? {
        Some(moved) => {
            empty_soon(trash, &[moved]);
            Ok(())
        }
        None => Ok(()),
    }
}

/// The first half of [`remove_dir_soon`]: moves `dir` into `trash` (or, where it cannot
/// be moved, removes it here) and returns where it went, for [`empty_soon`]. `None`: there
/// is nothing left to delete.
pub fn move_to_trash(dir: &Path, trash: &Path) -> io::Result<Option<PathBuf>> {
    if fs::symlink_metadata(dir).is_err() {
        return Ok(None);
    }
    let moved = fs::create_dir_all(trash).and_then(|()| {
        let to = trash.join(unique_name());
        fs::rename(dir, &to).map(|()| to)
    });
    match moved {
        Ok(m) => Ok(Some(m)),
        // Removed meanwhile by a concurrent cleanup of the same instance: done.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(_) => remove_all_if_there(dir).map(|()| None),
    }
}

/// The second half of [`remove_dir_soon`]: deletes `moved` (entries of `trash`), and any
/// entry a crash left there, in a background `rm -rf`; here if it cannot be started.
pub fn empty_soon(trash: &Path, moved: &[PathBuf]) {
    if moved.is_empty() {
        return;
    }
    let mut victims = moved.to_vec();
    victims.extend(stale_entries(trash, moved));
    let spawned = Command::new("rm")
        .arg("-rf")
        .arg("--one-file-system")
        .arg("--")
        .args(&victims)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    // Not waited for: it outlives short-lived callers and is reaped by init.
    if spawned.is_err() {
        for m in moved {
            let _ = remove_all_if_there(m);
        }
    }
}

/// The second half of [`remove_dir_soon`] for a process that has nothing left to do:
/// deletes `moved`, and any entry a crash left in `trash`, here and now, without crossing
/// into other filesystems (as `rm --one-file-system`). What cannot be deleted here (a
/// tree deeper than [`MAX_DEPTH`], an unexpected error) is left to a background `rm`.
pub fn empty_now(trash: &Path, moved: &[PathBuf]) {
    if moved.is_empty() {
        return;
    }
    let mut victims = moved.to_vec();
    victims.extend(stale_entries(trash, moved));
    let left: Vec<PathBuf> = victims
        .into_iter()
        .filter(|v| remove_tree(v).is_err())
        .collect();
    empty_soon(trash, &left);
}

/// How deep [`empty_now`] descends (one descriptor per level) before it leaves a tree to
/// `rm`.
pub const MAX_DEPTH: usize = 64;

/// Removes `path` and everything under it that is on its filesystem; a missing `path` is
/// not an error. A directory on another filesystem (a mount point) is left alone and
/// makes the removal fail, as does a tree deeper than [`MAX_DEPTH`].
pub fn remove_tree(path: &Path) -> io::Result<()> {
    use rustix::fs::{FileType, Mode, OFlags, CWD};
    let st = match rustix::fs::lstat(path) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return rustix::fs::unlink(path).map_err(Into::into);
    }
    let dir = rustix::fs::openat(
        CWD,
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    empty_dir(&dir, st.st_dev, 0)?;
    drop(dir);
    rustix::fs::rmdir(path).map_err(Into::into)
}

/// Deletes the entries of directory `dir` (on device `dev`), `depth` levels below the top.
fn empty_dir(dir: &std::os::fd::OwnedFd, dev: u64, depth: usize) -> io::Result<()> {
    use rustix::fs::{AtFlags, FileType, Mode, OFlags};
    if depth >= MAX_DEPTH {
        return Err(io::Error::other("directory tree too deep"));
    }
    let entries = rustix::fs::Dir::read_from(dir)?;
    let mut subdirs = Vec::new();
    let mut names = Vec::new();
    for e in entries {
        let e = e?;
        let name = e.file_name();
        if name == c".." || name == c"." {
            continue;
        }
        match e.file_type() {
            FileType::Directory => subdirs.push(name.to_owned()),
            FileType::Unknown => {
                let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?;
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    subdirs.push(name.to_owned());
                } else {
                    names.push(name.to_owned());
                }
            }
            _ => names.push(name.to_owned()),
        }
    }
    for n in &names {
        rustix::fs::unlinkat(dir, n.as_c_str(), AtFlags::empty())?;
    }
    for n in &subdirs {
        let st = rustix::fs::statat(dir, n.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)?;
        if st.st_dev != dev {
            return Err(io::Error::other("a mount point inside"));
        }
        let sub = rustix::fs::openat(
            dir,
            n.as_c_str(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        empty_dir(&sub, dev, depth + 1)?;
        drop(sub);
        rustix::fs::unlinkat(dir, n.as_c_str(), AtFlags::REMOVEDIR)?;
    }
    Ok(())
}

fn remove_all_if_there(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

fn unique_name() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}

fn stale_entries(trash: &Path, except: &[PathBuf]) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(trash) else {
        return Vec::new();
    };
    let now = SystemTime::now();
    rd.flatten()
        .map(|e| e.path())
        .filter(|p| !except.contains(p))
        .filter(|p| {
            fs::symlink_metadata(p)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > STALE)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_gone(p: &Path) -> bool {
        for _ in 0..200 {
            if !p.exists() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn moves_at_once_and_deletes_in_the_background() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("victim");
        fs::create_dir_all(dir.join("a/b")).unwrap();
        fs::write(dir.join("a/b/f"), b"data").unwrap();
        let trash = t.path().join("trash");
        remove_dir_soon(&dir, &trash).unwrap();
        assert!(!dir.exists(), "gone from its place at once");
        let emptied = (0..200).any(|_| {
            let empty = fs::read_dir(&trash).unwrap().next().is_none();
            if !empty {
                std::thread::sleep(Duration::from_millis(10));
            }
            empty
        });
        assert!(emptied, "the trash was not emptied");
    }

    #[test]
    fn empty_now_deletes_here_without_following_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), b"k").unwrap();
        let dir = t.path().join("victim");
        fs::create_dir_all(dir.join("a/b/c")).unwrap();
        fs::write(dir.join("a/b/c/f"), b"data").unwrap();
        fs::write(dir.join("top"), b"data").unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("a/link")).unwrap();
        let trash = t.path().join("trash");
        let moved = move_to_trash(&dir, &trash).unwrap().unwrap();
        empty_now(&trash, std::slice::from_ref(&moved));
        assert!(!moved.exists(), "not deleted at once");
        assert!(fs::read_dir(&trash).unwrap().next().is_none());
        assert!(outside.join("keep").exists(), "followed a symlink");
    }

    #[test]
    fn a_tree_too_deep_to_delete_here_is_left_to_rm() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("victim");
        let mut deep = dir.clone();
        for _ in 0..MAX_DEPTH + 4 {
            deep.push("d");
        }
        fs::create_dir_all(&deep).unwrap();
        assert!(remove_tree(&dir).is_err());
        let trash = t.path().join("trash");
        let moved = move_to_trash(&dir, &trash).unwrap().unwrap();
        empty_now(&trash, std::slice::from_ref(&moved));
        assert!(wait_gone(&moved), "the background rm did not delete it");
    }

    #[test]
    fn a_missing_directory_is_fine_and_stale_trash_is_swept() {
        let t = tempfile::tempdir().unwrap();
        let trash = t.path().join("trash");
        remove_dir_soon(&t.path().join("nothing"), &trash).unwrap();
        fs::create_dir_all(trash.join("old/x")).unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        fs::File::open(trash.join("old"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let dir = t.path().join("victim");
        fs::create_dir(&dir).unwrap();
        remove_dir_soon(&dir, &trash).unwrap();
        assert!(wait_gone(&trash.join("old")), "a stale entry was left");
    }
}
