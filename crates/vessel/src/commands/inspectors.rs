//! `port`, `diff`, `export` and `history`: Docker's read-only views of an instance or an
//! image.

use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use crate::{CmdResult, Failure};
use vessel_engine::request::Isolation;
use vessel_engine::{Engine, EngineError};
use vessel_image::Store;

use super::images::{human_age, print_table};

fn fail(e: impl Into<EngineError>) -> Failure {
    Failure::new(1, e.into())
}

/// `vessel port INSTANCE [PORT[/PROTO]]`.
pub fn port(engine: &Engine, instance: &str, only: Option<&str>) -> CmdResult {
    let inst = engine.get(instance).map_err(fail)?;
    let ports = inst.request.published();
    let mut shown = 0;
    for p in ports {
        let private = format!("{}/{}", p.container_port, p.proto.as_str());
        if let Some(o) = only {
            if o != private && o != p.container_port.to_string() {
                continue;
            }
        }
        let ip = p.host_ip.map_or("0.0.0.0".to_string(), |i| i.to_string());
        match only {
            Some(_) => println!("{ip}:{}", p.host_port),
            None => println!("{private} -> {ip}:{}", p.host_port),
        }
        shown += 1;
    }
    match only {
        Some(o) if shown == 0 => Err(Failure::new(
            1,
            format!("no public port '{o}' published for {}", inst.name),
        )),
        _ => Ok(0),
    }
}

/// `vessel diff INSTANCE`: the overlay's upper directory, read on the host without
/// following anything in it.
pub fn diff(engine: &Engine, instance: &str) -> CmdResult {
    let inst = engine.get(instance).map_err(fail)?;
    if inst.request.isolation == Isolation::Vm {
        return Err(Failure::new(
            1,
            "diff is not supported for microVMs: their root filesystem is a disk image",
        ));
    }
    let upper = engine.instance_dir(&inst.id).join("upper");
    let store = engine.store().map_err(fail)?;
    let image = store
        .get(
            &inst
                .image_id
                .parse()
                .map_err(|e| Failure::new(1, format!("{e}")))?,
        )
        .map_err(|e| Failure::new(1, e))?;
    let lowers: Vec<std::fs::File> = store
        .layer_dirs(&image)
        .map_err(|e| Failure::new(1, e))?
        .iter()
        .filter_map(|d| std::fs::File::open(d).ok())
        .collect();
    let mut lines = Vec::new();
    walk(&upper, Path::new(""), &lowers, &mut lines);
    let mut out = std::io::stdout().lock();
    for l in lines {
        let _ = writeln!(out, "{l}");
    }
    Ok(0)
}

/// Whether `rel` exists in one of the image's layers, resolved inside each layer's root.
fn in_image(lowers: &[std::fs::File], rel: &Path) -> bool {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    lowers.iter().any(|l| {
        rustix::fs::openat2(
            l,
            rel,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
        .is_ok()
    })
}

fn walk(dir: &Path, at: &Path, lowers: &[std::fs::File], out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let rel = at.join(e.file_name());
        let path = Path::new("/").join(&rel);
        let Ok(ft) = e.file_type() else { continue };
        let meta = std::fs::symlink_metadata(e.path()).ok();
        // overlayfs marks a deletion with a 0/0 character device.
        let whiteout = ft.is_char_device()
            && meta.as_ref().is_some_and(|m| {
                use std::os::unix::fs::MetadataExt;
                m.rdev() == 0
            });
        if whiteout {
            out.push(format!("D {}", path.display()));
            continue;
        }
        // In the image before: changed (for a directory, something in it); else added.
        let mark = if in_image(lowers, &rel) { 'C' } else { 'A' };
        out.push(format!("{mark} {}", path.display()));
        if ft.is_dir() {
            walk(&e.path(), &rel, lowers, out);
        }
    }
}

/// `vessel export [-o FILE] INSTANCE`.
pub fn export(engine: &Engine, instance: &str, output: Option<&Path>) -> CmdResult {
    let inst = engine.get(instance).map_err(fail)?;
    // SAFETY: setting a signal disposition; a closed stdout must be an error, not death.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    match output {
        Some(path) => {
            let tmp = path.with_extension("vessel-partial");
            let mut f = std::fs::File::create(&tmp)
                .map_err(|e| Failure::new(1, format!("create {}: {e}", tmp.display())))?;
            let r = engine.copy_out(&inst, "/.", &mut f);
            match r {
                Ok(()) => std::fs::rename(&tmp, path)
                    .map(|()| 0)
                    .map_err(|e| Failure::new(1, format!("write {}: {e}", path.display()))),
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    Err(fail(e))
                }
            }
        }
        None => engine
            .copy_out(&inst, "/.", &mut std::io::stdout().lock())
            .map(|()| 0)
            .map_err(fail),
    }
}

/// `vessel history IMAGE`.
pub fn history(store: &Store, image: &str, no_trunc: bool, quiet: bool) -> CmdResult {
    let record = store.resolve(image).map_err(|e| Failure::new(1, e))?;
    let steps = store.history(&record).map_err(|e| Failure::new(1, e))?;
    let mut rows = Vec::new();
    for h in steps {
        let shown_id = match &h.image {
            Some(id) if no_trunc => id.to_string(),
            Some(id) => id.short().to_string(),
            None => "<missing>".to_string(),
        };
        let by = if no_trunc || h.created_by.chars().count() <= 45 {
            h.created_by
        } else {
            format!("{}…", h.created_by.chars().take(44).collect::<String>())
        };
        rows.push([
            shown_id,
            h.created.as_deref().map(human_age).unwrap_or_default(),
            by,
            super::images::human_size(h.size),
            h.comment,
        ]);
    }
    if quiet {
        for r in &rows {
            println!("{}", r[0]);
        }
    } else {
        print_table(
            &mut std::io::stdout().lock(),
            &["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
            &rows,
        );
    }
    Ok(0)
}
