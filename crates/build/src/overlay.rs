//! A private overlayfs view of an image-so-far: the layers read-only below, a fresh upper
//! directory on top. What a step writes through the merged directory lands in the upper
//! one, which becomes the step's layer. Unmounted and deleted when dropped.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A mounted overlay under a work directory of the store.
pub struct Overlay {
    dir: PathBuf,
    merged: PathBuf,
    upper: PathBuf,
    mounted: bool,
}

impl Overlay {
    /// Mounts `layers` (bottom first) under a new directory `dir`.
    pub fn mount(dir: PathBuf, layers: &[PathBuf]) -> Result<Overlay> {
        let mut o = Overlay {
            merged: dir.join("merged"),
            upper: dir.join("upper"),
            dir,
            mounted: false,
        };
        let empty = o.dir.join("empty");
        for d in [&o.merged, &o.upper, &o.dir.join("work"), &empty] {
            std::fs::create_dir_all(d).map_err(|e| Error::io("create", d, e))?;
        }
        let mut lower: Vec<String> = layers
            .iter()
            .rev()
            .map(|l| escape(&l.to_string_lossy()))
            .collect();
        if lower.is_empty() {
            // FROM scratch: overlayfs needs a lower directory.
            lower.push(escape(&empty.to_string_lossy()));
        }
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            escape(&o.upper.to_string_lossy()),
            escape(&o.dir.join("work").to_string_lossy())
        );
        let data = std::ffi::CString::new(data)
            .map_err(|_| Error::Internal("a layer path holds a NUL byte".into()))?;
        rustix::mount::mount(
            "overlay",
            &o.merged,
            "overlay",
            rustix::mount::MountFlags::NODEV,
            Some(data.as_c_str()),
        )
        .map_err(|e| {
            Error::io(
                "mount an overlay of the image at",
                &o.merged,
                std::io::Error::from_raw_os_error(e.raw_os_error()),
            )
        })?;
        o.mounted = true;
        Ok(o)
    }

    /// The merged view (the image's root as the step sees it).
    pub fn merged(&self) -> &Path {
        &self.merged
    }

    /// Unmounts, leaving the upper directory to read: what the step changed.
    pub fn finish(&mut self) -> Result<&Path> {
        if self.mounted {
            rustix::mount::unmount(&self.merged, rustix::mount::UnmountFlags::empty()).map_err(
                |e| {
                    Error::io(
                        "unmount",
                        &self.merged,
                        std::io::Error::from_raw_os_error(e.raw_os_error()),
                    )
                },
            )?;
            self.mounted = false;
        }
        Ok(&self.upper)
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if self.mounted {
            let _ = rustix::mount::unmount(&self.merged, rustix::mount::UnmountFlags::DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// overlayfs option values separate with `,` and `:`: escape them.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace(':', "\\:")
        .replace(',', "\\,")
}
