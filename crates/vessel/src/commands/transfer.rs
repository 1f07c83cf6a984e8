//! `pull`, `push`, `load`, `save`.

use std::fs::File;
use std::io::{BufReader, BufWriter, IsTerminal, Write};

use vessel_image::archive::{self, ArchiveFormat};
use vessel_image::progress::Progress;
use vessel_image::registry::{self, RegistryOptions};
use vessel_image::{Reference, Store};

use crate::cli::{ArchiveKind, LoadArgs, PullArgs, PushArgs, RegistryArgs, SaveArgs};
use crate::progress::Bars;
use crate::{CmdResult, Failure};

fn options(a: &RegistryArgs) -> Result<RegistryOptions, Failure> {
    let auth = match (&a.username, &a.password) {
        (Some(u), Some(p)) => Some((u.clone(), p.clone())),
        (None, None) => None,
        _ => {
            return Err(Failure::new(
                crate::EXIT_ENGINE,
                "--username and --password go together",
            ))
        }
    };
    Ok(RegistryOptions {
        auth,
        insecure: a.insecure,
        stored_credentials: true,
    })
}

fn parse_ref(s: &str) -> Result<Reference, Failure> {
    s.parse::<Reference>()
        .map_err(|e| Failure::new(crate::EXIT_ENGINE, e))
}

/// `vessel pull`.
pub fn pull(store: &Store, args: &PullArgs) -> CmdResult {
    if let Some(p) = &args.platform {
        super::containers::check_platform(p)?;
    }
    let reference = parse_ref(&args.reference)?;
    let bars = Bars::new(args.registry.quiet);
    let img = registry::pull(store, &reference, &options(&args.registry)?, &bars)?;
    bars.message(&format!("Status: Downloaded {reference}"));
    println!("{}", img.id);
    Ok(0)
}

/// `vessel push`.
pub fn push(store: &Store, args: &PushArgs) -> CmdResult {
    let img = store.resolve(&args.image)?;
    let dest = parse_ref(args.destination.as_deref().unwrap_or(&args.image))?;
    let bars = Bars::new(args.registry.quiet);
    let digest = registry::push(store, &img, &dest, &options(&args.registry)?, &bars)?;
    println!("{digest}");
    Ok(0)
}

/// `vessel load`.
pub fn load(store: &Store, args: &LoadArgs) -> CmdResult {
    let bars = Bars::new(args.quiet);
    let images = match &args.input {
        Some(p) => {
            let f =
                File::open(p).map_err(|e| Failure::new(1, format!("open {}: {e}", p.display())))?;
            archive::load(store, BufReader::new(f), &bars)?
        }
        None => {
            if std::io::stdin().is_terminal() {
                return Err(Failure::new(
                    1,
                    "requested load from stdin, but stdin is a terminal: use -i FILE or a pipe",
                ));
            }
            archive::load(store, std::io::stdin().lock(), &bars)?
        }
    };
    for img in images {
        if img.tags.is_empty() {
            println!("Loaded image ID: {}", img.id);
        }
        for t in &img.tags {
            println!("Loaded image: {t}");
        }
    }
    Ok(0)
}

/// `vessel save`.
pub fn save(store: &Store, args: &SaveArgs) -> CmdResult {
    let format = match args.format {
        ArchiveKind::Docker => ArchiveFormat::Docker,
        ArchiveKind::Oci => ArchiveFormat::Oci,
    };
    match &args.output {
        Some(p) => {
            // Write beside the target and rename: a failed save leaves no half archive.
            let tmp = p.with_file_name(format!(
                ".{}.partial",
                p.file_name().and_then(|n| n.to_str()).unwrap_or("save")
            ));
            let f = File::create(&tmp)
                .map_err(|e| Failure::new(1, format!("create {}: {e}", tmp.display())))?;
            let mut w = BufWriter::new(f);
            let result = archive::save(store, &args.images, &mut w, format)
                .map_err(Failure::from)
                .and_then(|()| {
                    w.flush()
                        .map_err(|e| Failure::new(1, format!("write {}: {e}", p.display())))
                });
            if let Err(e) = result {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
            std::fs::rename(&tmp, p)
                .map_err(|e| Failure::new(1, format!("rename to {}: {e}", p.display())))?;
        }
        None => {
            if std::io::stdout().is_terminal() {
                return Err(Failure::new(
                    1,
                    "refusing to write an archive to a terminal: use -o FILE or a pipe",
                ));
            }
            let mut out = BufWriter::new(std::io::stdout().lock());
            archive::save(store, &args.images, &mut out, format)?;
            out.flush()
                .map_err(|e| Failure::new(1, format!("write standard output: {e}")))?;
        }
    }
    Ok(0)
}
