//! Where COPY and ADD read from: the build context, or the root of another stage or image.
//! Every path is resolved by the kernel (`openat2`) relative to that root: in the context
//! with `RESOLVE_BENEATH`, so that `..` or a symlink leading out of it is an error; in an
//! image root with `RESOLVE_IN_ROOT`, where symlinks resolve inside the image as they would
//! in a container. What is found is then walked without following any symlink.

use std::fs::Metadata;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use sha2::{Digest as _, Sha256};

use crate::ignore::{self, Ignore};

/// How paths are confined to the root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confine {
    /// The build context: leaving it is an error.
    Beneath,
    /// An image's root: `/` and `..` stop at it, as in a container.
    InRoot,
}

/// A directory sources are read from.
pub struct SourceRoot {
    fd: OwnedFd,
    path: PathBuf,
    confine: Confine,
    ignore: Ignore,
}

/// One file, directory or link to copy.
pub struct Entry {
    /// Its path on the host (inside the root; not to be resolved again through symlinks).
    pub host: PathBuf,
    /// Its path relative to the copied source (empty for the source itself).
    pub rel: PathBuf,
    /// `lstat` of it.
    pub meta: Metadata,
}

/// A source that matched, with everything under it.
pub struct Matched {
    /// The source's path relative to the root.
    pub name: String,
    /// Whether it is a directory (whose contents are copied, not itself).
    pub is_dir: bool,
    /// The source first, then what is under a directory, in name order.
    pub entries: Vec<Entry>,
}

impl SourceRoot {
    /// Opens `path` as a root, with `.dockerignore` patterns (empty outside the context).
    pub fn open(path: &Path, confine: Confine, ignore: Ignore) -> Result<SourceRoot, String> {
        let path = path
            .canonicalize()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let fd = rustix::fs::open(
            &path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("open {}: {e}", path.display()))?;
        Ok(SourceRoot {
            fd,
            path,
            confine,
            ignore,
        })
    }

    /// The components of `src` relative to the root; `..` above the root is an error in
    /// the context and stops at `/` in an image.
    fn components(&self, src: &str) -> Result<Vec<String>, String> {
        let mut out: Vec<String> = Vec::new();
        for c in src.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    if out.pop().is_none() && self.confine == Confine::Beneath {
                        return Err(format!("{src}: forbidden path outside the build context"));
                    }
                }
                c => out.push(c.to_string()),
            }
        }
        Ok(out)
    }

    /// The host path of `rel` (components below the root), resolved by the kernel inside
    /// the root; `None` if it does not exist or is excluded by `.dockerignore`.
    fn resolve(&self, rel: &[String], shown: &str) -> Result<Option<PathBuf>, String> {
        let joined = rel.join("/");
        if self.confine == Confine::Beneath && self.ignore.excluded(&joined) {
            return Ok(None);
        }
        let flags = match self.confine {
            Confine::Beneath => ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
            Confine::InRoot => ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        };
        let p = if joined.is_empty() {
            "."
        } else {
            joined.as_str()
        };
        let fd = match rustix::fs::openat2(
            &self.fd,
            p,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            flags,
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => return Ok(None),
            Err(rustix::io::Errno::XDEV) => {
                return Err(format!(
                    "{shown}: a symlink or path that leads outside the build context"
                ))
            }
            Err(e) => return Err(format!("{shown}: {e}")),
        };
        let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .map_err(|e| format!("{shown}: {e}"))?;
        if !real.starts_with(&self.path) {
            return Err(format!("{shown}: resolves outside its root"));
        }
        Ok(Some(real))
    }

    /// Expands a source (a path, or a pattern with `*`, `?`, `[...]`) to what it names,
    /// each with its contents. A path that names nothing is an error; so is a pattern
    /// that matches nothing.
    pub fn expand(&self, src: &str) -> Result<Vec<Matched>, String> {
        let parts = self.components(src)?;
        let mut candidates: Vec<Vec<String>> = vec![Vec::new()];
        let mut pattern = false;
        for part in &parts {
            if !ignore::is_pattern(part) {
                candidates.iter_mut().for_each(|c| c.push(part.clone()));
                continue;
            }
            pattern = true;
            let mut next = Vec::new();
            for c in &candidates {
                let Some(dir) = self.resolve(c, src)? else {
                    continue;
                };
                let Ok(list) = std::fs::read_dir(&dir) else {
                    continue;
                };
                let mut names: Vec<String> = list
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| ignore::glob(part, n))
                    .collect();
                names.sort();
                for n in names {
                    let mut m = c.clone();
                    m.push(n);
                    next.push(m);
                }
            }
            candidates = next;
        }
        let mut out = Vec::new();
        for c in candidates {
            let name = c.join("/");
            match self.resolve(&c, src)? {
                Some(host) => out.push(self.collect(&name, host)?),
                None if pattern => {}
                None => {
                    return Err(format!(
                        "{src}: not found in the build context or excluded by .dockerignore"
                    ))
                }
            }
        }
        if out.is_empty() {
            return Err(format!(
                "{src}: no source files were specified (the pattern matches nothing)"
            ));
        }
        Ok(out)
    }

    /// The source at `host` and, for a directory, everything under it that is not
    /// excluded, without following symlinks.
    fn collect(&self, name: &str, host: PathBuf) -> Result<Matched, String> {
        let meta = std::fs::symlink_metadata(&host).map_err(|e| format!("{name}: {e}"))?;
        let is_dir = meta.is_dir();
        let mut entries = vec![Entry {
            host: host.clone(),
            rel: PathBuf::new(),
            meta,
        }];
        if is_dir {
            let mut stack = vec![PathBuf::new()];
            while let Some(rel) = stack.pop() {
                let dir = host.join(&rel);
                let mut names: Vec<_> = std::fs::read_dir(&dir)
                    .map_err(|e| format!("{}: {e}", dir.display()))?
                    .filter_map(|e| e.ok().map(|e| e.file_name()))
                    .collect();
                names.sort();
                let mut subdirs = Vec::new();
                for n in names {
                    let r = rel.join(&n);
                    let in_context = format!("{name}/{}", r.to_string_lossy());
                    let excluded =
                        self.confine == Confine::Beneath && self.ignore.excluded(&in_context);
                    let p = host.join(&r);
                    let meta = std::fs::symlink_metadata(&p)
                        .map_err(|e| format!("{}: {e}", p.display()))?;
                    if meta.is_dir() {
                        // An excluded directory may hold re-included files.
                        if excluded && !self.ignore.has_exceptions() {
                            continue;
                        }
                        subdirs.push(r.clone());
                        if excluded {
                            continue;
                        }
                    } else if excluded {
                        continue;
                    }
                    entries.push(Entry {
                        host: p,
                        rel: r,
                        meta,
                    });
                }
                stack.extend(subdirs.into_iter().rev());
            }
            // Directories that only held excluded entries were walked but not listed;
            // listing them now keeps the parents of re-included files.
            entries.sort_by(|a, b| a.rel.cmp(&b.rel));
        }
        Ok(Matched {
            name: name.to_string(),
            is_dir,
            entries,
        })
    }
}

/// A digest of what the matched sources hold (names, types, modes, owners, sizes,
/// contents, link targets): the cache key of a COPY or ADD.
pub fn digest(matched: &[Matched]) -> Result<String, String> {
    let mut h = Sha256::new();
    for m in matched {
        h.update(m.name.as_bytes());
        h.update([0]);
        for e in &m.entries {
            let md = &e.meta;
            h.update(e.rel.to_string_lossy().as_bytes());
            h.update(format!(
                "\0{:o}\0{}\0{}\0{}\0{}\0",
                md.mode(),
                md.uid(),
                md.gid(),
                md.size(),
                md.rdev()
            ));
            if md.file_type().is_symlink() {
                let t = std::fs::read_link(&e.host)
                    .map_err(|x| format!("{}: {x}", e.host.display()))?;
                h.update(t.to_string_lossy().as_bytes());
            } else if md.is_file() {
                let mut f = std::fs::File::open(&e.host)
                    .map_err(|x| format!("{}: {x}", e.host.display()))?;
                let mut w = HashWrite(&mut h);
                std::io::copy(&mut f, &mut w).map_err(|x| format!("{}: {x}", e.host.display()))?;
            }
            h.update([0]);
        }
    }
    Ok(hex::encode(h.finalize()))
}

struct HashWrite<'a>(&'a mut Sha256);

impl std::io::Write for HashWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
