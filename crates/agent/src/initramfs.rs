//! Host side: builds the microVM's initramfs, a `newc` cpio holding the static agent as
//! `/init` and the kernel modules it loads.
//!
//! The newc format is a few dozen lines (a 110-byte ASCII header per entry, 4-byte
//! alignment, a `TRAILER!!!` entry), so it is written here rather than pulled in as a
//! dependency. The archive is reproducible: fixed inode numbers, mtime 0, owner root.
//!
//! Layout:
//!
//! ```text
//! /init                       the agent (0755)
//! /dev/console                character device 5:1, so the kernel gives init fds 0-2
//! /lib/modules/<file>.ko      each module, by file name
//! /modules.order              the module file names, one a line, in load order
//! /proc /sys /mnt /mnt/lower /mnt/rw /newroot /run
//! ```

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Directory in the initramfs that holds the modules.
pub const MODULES_DIR: &str = "lib/modules";
/// File in the initramfs listing module file names in load order.
pub const MODULES_ORDER: &str = "modules.order";

const DIRS: &[&str] = &[
    "dev",
    "proc",
    "sys",
    "run",
    "mnt",
    "mnt/lower",
    "mnt/rw",
    "newroot",
    "lib",
    MODULES_DIR,
];

/// Writes an initramfs to `out` with `agent_binary` as `/init` and `modules` (module files,
/// dependencies first) under `/lib/modules/`, in that load order.
///
/// Fails if a file cannot be read, two modules share a file name, or `out` cannot be
/// written. `out` is written in place: build into a temporary name and rename it if other
/// processes may read it meanwhile.
pub fn build(out: &Path, agent_binary: &Path, modules: &[PathBuf]) -> io::Result<()> {
    let agent = fs::read(agent_binary).map_err(|e| annotate(e, "read the agent", agent_binary))?;
    let file = File::create(out).map_err(|e| annotate(e, "create", out))?;
    let mut cpio = Newc::new(BufWriter::new(file));
    for dir in DIRS {
        cpio.entry(dir, 0o040_755, (0, 0), &[])?;
    }
    cpio.entry("dev/console", 0o020_600, (5, 1), &[])?;
    cpio.entry("init", 0o100_755, (0, 0), &agent)?;

    let mut order = String::new();
    let mut seen = HashSet::new();
    for module in modules {
        let name = module
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.contains('\n'))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("module path {} has no usable file name", module.display()),
                )
            })?;
        if !seen.insert(name.to_string()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "two modules are named {name} (second: {})",
                    module.display()
                ),
            ));
        }
        let data = fs::read(module).map_err(|e| annotate(e, "read module", module))?;
        cpio.entry(&format!("{MODULES_DIR}/{name}"), 0o100_644, (0, 0), &data)?;
        order.push_str(name);
        order.push('\n');
    }
    cpio.entry(MODULES_ORDER, 0o100_644, (0, 0), order.as_bytes())?;
    cpio.finish()?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
}

/// Resolves `wanted` module names (e.g. `virtio_blk`; `-` and `_` are the same) to module
/// files under `modules_dir`, dependencies first and each once, from `modules_dir/modules.dep`.
///
/// Fails with `NotFound` naming the module if one (or a dependency) is not listed.
pub fn module_load_order(modules_dir: &Path, wanted: &[&str]) -> io::Result<Vec<PathBuf>> {
    let dep_file = modules_dir.join("modules.dep");
    let text = fs::read_to_string(&dep_file).map_err(|e| annotate(e, "read", &dep_file))?;
    let deps = parse_modules_dep(&text);
    let mut order = Vec::new();
    let mut visited = HashSet::new();
    for name in wanted {
        visit(&normalise(name), &deps, &mut visited, &mut order).map_err(|missing| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "kernel module {missing} (needed for {name}) is not listed in {}",
                    dep_file.display()
                ),
            )
        })?;
    }
    Ok(order.into_iter().map(|rel| modules_dir.join(rel)).collect())
}

/// One `modules.dep` line: the module's relative path and the paths it depends on.
struct DepEntry<'a> {
    path: &'a str,
    deps: Vec<&'a str>,
}

fn parse_modules_dep(text: &str) -> HashMap<String, DepEntry<'_>> {
    text.lines()
        .filter_map(|line| {
            let (path, deps) = line.split_once(':')?;
            let path = path.trim();
            let entry = DepEntry {
                path,
                deps: deps.split_whitespace().collect(),
            };
            Some((module_name(path), entry))
        })
        .collect()
}

/// Depth-first, dependencies before dependents. Err carries the missing module's name.
fn visit<'a>(
    name: &str,
    deps: &HashMap<String, DepEntry<'a>>,
    visited: &mut HashSet<String>,
    order: &mut Vec<&'a str>,
) -> Result<(), String> {
    if !visited.insert(name.to_string()) {
        return Ok(());
    }
    let entry = deps.get(name).ok_or_else(|| name.to_string())?;
    for dep in &entry.deps {
        visit(&module_name(dep), deps, visited, order)?;
    }
    order.push(entry.path);
    Ok(())
}

/// `kernel/drivers/virtio/virtio-ring.ko.xz` → `virtio_ring`.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.find(".ko").map_or(file, |i| &file[..i]);
    normalise(stem)
}

fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

fn annotate(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// A streaming newc ("070701") cpio writer.
struct Newc<W: Write> {
    out: W,
    written: u64,
    ino: u32,
}

impl<W: Write> Newc<W> {
    fn new(out: W) -> Self {
        Newc {
            out,
            written: 0,
            ino: 300_000,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad4(&mut self) -> io::Result<()> {
        let pad = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..pad])
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) -> io::Result<()> {
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name}: {} bytes is too large for a cpio entry", data.len()),
            )
        })?;
        let nlink = if mode & 0o170_000 == 0o040_000 { 2 } else { 1 };
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            size,
            0, // dev major
            0, // dev minor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        self.ino += 1;
        let mut header = String::with_capacity(110);
        header.push_str("070701");
        for f in fields {
            header.push_str(&format!("{f:08x}"));
        }
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad4()?;
        self.put(data)?;
        self.pad4()
    }

    fn finish(mut self) -> io::Result<W> {
        self.ino = 0;
        self.entry("TRAILER!!!", 0, (0, 0), &[])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/char/virtio_console.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/fs/overlayfs/overlay.ko:
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/hw_random/virtio-rng.ko.xz: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
";

    fn modules_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("modules.dep"), DEP).unwrap();
        dir
    }

    fn rel(dir: &Path, v: Vec<PathBuf>) -> Vec<String> {
        v.into_iter()
            .map(|p| p.strip_prefix(dir).unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn dependencies_come_first_and_once() {
        let dir = modules_dir();
        let order = module_load_order(
            dir.path(),
            &["virtio_mmio", "virtio_blk", "virtio_console", "overlay"],
        )
        .unwrap();
        assert_eq!(
            rel(dir.path(), order),
            [
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/virtio/virtio.ko",
                "kernel/drivers/virtio/virtio_mmio.ko",
                "kernel/drivers/block/virtio_blk.ko",
                "kernel/drivers/char/virtio_console.ko",
                "kernel/fs/overlayfs/overlay.ko",
            ]
        );
    }

    #[test]
    fn dashes_and_compressed_names_match() {
        let dir = modules_dir();
        let order = module_load_order(dir.path(), &["virtio_rng"]).unwrap();
        assert_eq!(
            rel(dir.path(), order).last().unwrap(),
            "kernel/drivers/char/hw_random/virtio-rng.ko.xz"
        );
    }

    #[test]
    fn missing_module_is_named() {
        let dir = modules_dir();
        let err = module_load_order(dir.path(), &["nope"]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("nope"), "{err}");
        let empty = tempfile::tempdir().unwrap();
        let err = module_load_order(empty.path(), &["virtio"]).unwrap_err();
        assert!(err.to_string().contains("modules.dep"), "{err}");
    }

    #[test]
    fn dependency_cycles_terminate() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("modules.dep"), "a.ko: b.ko\nb.ko: a.ko\n").unwrap();
        let order = module_load_order(dir.path(), &["a"]).unwrap();
        assert_eq!(rel(dir.path(), order), ["b.ko", "a.ko"]);
    }

    /// (name, mode, rdev, data) of one archive entry.
    type Entry = (String, u32, (u32, u32), Vec<u8>);

    /// Parses a newc archive back into its entries.
    fn parse(mut b: &[u8]) -> Vec<Entry> {
        let total = b.len();
        let mut out = Vec::new();
        loop {
            assert_eq!(&b[..6], b"070701");
            let field = |i: usize| {
                u32::from_str_radix(std::str::from_utf8(&b[6 + 8 * i..14 + 8 * i]).unwrap(), 16)
                    .unwrap()
            };
            let (mode, size, rdev, namesize) =
                (field(1), field(6), (field(9), field(10)), field(11));
            let name = std::str::from_utf8(&b[110..110 + namesize as usize - 1])
                .unwrap()
                .to_string();
            let data_at = (110 + namesize as usize + 3) & !3;
            let data = b[data_at..data_at + size as usize].to_vec();
            let next = (data_at + size as usize + 3) & !3;
            b = &b[next..];
            assert_eq!((total - b.len()) % 4, 0);
            if name == "TRAILER!!!" {
                assert!(b.is_empty());
                return out;
            }
            out.push((name, mode, rdev, data));
        }
    }

    #[test]
    fn archive_holds_init_modules_and_order() {
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("agent");
        fs::write(&agent, b"\x7fELF fake agent").unwrap();
        let m1 = dir.path().join("virtio_ring.ko");
        let m2 = dir.path().join("virtio.ko");
        fs::write(&m1, b"ring").unwrap();
        fs::write(&m2, b"virtio!").unwrap();
        let out = dir.path().join("initramfs.cpio");
        build(&out, &agent, &[m1.clone(), m2]).unwrap();
        let bytes = fs::read(&out).unwrap();
        let entries = parse(&bytes);
        let get = |n: &str| {
            entries
                .iter()
                .find(|e| e.0 == n)
                .unwrap_or_else(|| panic!("{n}"))
        };
        assert_eq!(get("init").1, 0o100_755);
        assert_eq!(get("init").3, b"\x7fELF fake agent");
        assert_eq!(get("dev/console").1, 0o020_600);
        assert_eq!(get("dev/console").2, (5, 1));
        assert_eq!(get("newroot").1, 0o040_755);
        assert_eq!(get("lib/modules/virtio.ko").3, b"virtio!");
        assert_eq!(get("modules.order").3, b"virtio_ring.ko\nvirtio.ko\n");
        // Directories precede what they contain.
        let pos = |n: &str| entries.iter().position(|e| e.0 == n).unwrap();
        assert!(pos("lib/modules") < pos("lib/modules/virtio.ko"));
        // Reproducible.
        build(&out, &agent, &[m1.clone(), dir.path().join("virtio.ko")]).unwrap();
        assert_eq!(fs::read(&out).unwrap(), bytes);
        // Duplicate names and missing files are errors naming the file.
        let err = build(&out, &agent, &[m1.clone(), m1]).unwrap_err();
        assert!(err.to_string().contains("virtio_ring.ko"), "{err}");
        let err = build(&out, &dir.path().join("missing"), &[]).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn archive_is_accepted_by_cpio_when_available() {
        let Ok(status) = std::process::Command::new("cpio").arg("--version").output() else {
            return;
        };
        if !status.status.success() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("agent");
        fs::write(&agent, b"agent").unwrap();
        let out = dir.path().join("i.cpio");
        build(&out, &agent, &[]).unwrap();
        let list = std::process::Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(File::open(&out).unwrap())
            .output()
            .unwrap();
        assert!(list.status.success());
        let names = String::from_utf8_lossy(&list.stdout);
        assert!(names.lines().any(|l| l == "init"), "{names}");
        assert!(names.lines().any(|l| l == "modules.order"), "{names}");
    }
}
