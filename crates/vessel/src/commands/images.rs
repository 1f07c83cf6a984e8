//! `images`, `image inspect`, `rmi`, `tag`, `import`.

use std::io::Write;

use serde_json::json;
use vessel_image::import::Changes;
use vessel_image::store::Removed;
use vessel_image::{ImageRecord, Reference, Store};

use crate::cli::{Format, ImagesArgs, ImportArgs, RmiArgs};
use crate::{CmdResult, Failure};

fn parse_ref(s: &str) -> Result<Reference, Failure> {
    s.parse::<Reference>()
        .map_err(|e| Failure::new(crate::EXIT_ENGINE, e))
}

/// `vessel images`.
pub fn list(store: &Store, args: &ImagesArgs) -> CmdResult {
    let images = store.list()?;
    let mut out = std::io::stdout().lock();
    if args.quiet {
        for img in &images {
            let _ = writeln!(
                out,
                "{}",
                if args.no_trunc {
                    img.id.to_string()
                } else {
                    img.id.short().to_string()
                }
            );
        }
        return Ok(0);
    }
    let rows: Vec<(String, String, &ImageRecord)> = images
        .iter()
        .flat_map(|img| {
            let names: Vec<(String, String)> = if img.tags.is_empty() {
                vec![("<none>".into(), "<none>".into())]
            } else {
                img.tags
                    .iter()
                    .map(|t| match t.rsplit_once(':') {
                        Some((r, tag)) => (r.to_string(), tag.to_string()),
                        None => (t.clone(), "<none>".into()),
                    })
                    .collect()
            };
            names.into_iter().map(move |(r, t)| (r, t, img))
        })
        .collect();
    let to_row = |v: serde_json::Value| match v {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    if crate::template::print_if_template(
        &args.format,
        || {
            rows.iter()
                .map(|(repo, tag, img)| {
                    to_row(json!({
                        "Repository": repo,
                        "Tag": tag,
                        "ID": if args.no_trunc { img.id.to_string() } else { img.id.short().to_string() },
                        "CreatedAt": img.created.clone().unwrap_or_default(),
                        "CreatedSince": img.created.as_deref().map(human_age).unwrap_or_else(|| "N/A".into()),
                        "Size": human_size(img.size),
                    }))
                })
                .collect()
        },
        &[
            ("ID", "IMAGE ID"),
            ("CreatedSince", "CREATED"),
            ("CreatedAt", "CREATED AT"),
        ],
    )? {
        return Ok(0);
    }
    if args.format == Format::Json {
        let v: Vec<_> = rows
            .iter()
            .map(|(repo, tag, img)| {
                json!({
                    "Repository": repo, "Tag": tag, "ID": img.id.to_string(),
                    "Created": img.created, "Size": img.size, "Layers": img.layers.len(),
                })
            })
            .collect();
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        );
        return Ok(0);
    }
    let table: Vec<[String; 5]> = rows
        .iter()
        .map(|(repo, tag, img)| {
            [
                repo.clone(),
                tag.clone(),
                if args.no_trunc {
                    img.id.to_string()
                } else {
                    img.id.short().to_string()
                },
                img.created
                    .as_deref()
                    .map(human_age)
                    .unwrap_or_else(|| "N/A".into()),
                human_size(img.size),
            ]
        })
        .collect();
    print_table(
        &mut out,
        &["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"],
        &table,
    );
    Ok(0)
}

/// `vessel image inspect`: Docker-shaped JSON with the OCI config.
pub fn inspect(
    store: &Store,
    names: &[String],
    format: Option<&crate::template::Format>,
) -> CmdResult {
    let mut docs = Vec::new();
    for name in names {
        let img = store.resolve(name)?;
        let config = store.config(&img)?;
        let manifest = store.manifest(&img)?;
        let c = config.config().clone().unwrap_or_default();
        docs.push(json!({
            "Id": img.id.to_string(),
            "RepoTags": img.tags,
            "ManifestDigest": img.manifest.to_string(),
            "Created": img.created,
            "Size": img.size,
            "Architecture": config.architecture().to_string(),
            "Os": config.os().to_string(),
            "Config": {
                "Env": c.env(),
                "Cmd": c.cmd(),
                "Entrypoint": c.entrypoint(),
                "WorkingDir": c.working_dir().clone().unwrap_or_default(),
                "User": c.user().clone().unwrap_or_default(),
                "Labels": c.labels(),
                "StopSignal": c.stop_signal(),
                "ExposedPorts": c.exposed_ports(),
            },
            "RootFS": { "Type": "layers", "Layers": img.layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>() },
            "Layers": manifest.layers().iter().map(|l| json!({
                "MediaType": l.media_type().to_string(), "Digest": l.digest().to_string(), "Size": l.size(),
            })).collect::<Vec<_>>(),
        }));
    }
    crate::template::print_inspect(docs, format)?;
    Ok(0)
}

/// `vessel rmi`.
pub fn remove(engine: &vessel_engine::Engine, args: &RmiArgs) -> CmdResult {
    let mut failed = None;
    for name in &args.images {
        match engine.remove_image(name, args.force) {
            Ok(done) => {
                for r in done {
                    match r {
                        Removed::Untagged(t) => println!("Untagged: {t}"),
                        Removed::Deleted(d) => println!("Deleted: {d}"),
                    }
                }
            }
            Err(e) => {
                eprintln!("vessel: {e}");
                failed = Some(1);
            }
        }
    }
    Ok(failed.unwrap_or(0))
}

/// `vessel tag`.
pub fn tag(store: &Store, source: &str, target: &str) -> CmdResult {
    let img = store.resolve(source)?;
    store.tag(&img.id, &parse_ref(target)?)?;
    Ok(0)
}

/// `vessel import`.
pub fn import(store: &Store, args: &ImportArgs) -> CmdResult {
    let changes = Changes::parse(&args.changes).map_err(|e| Failure::new(crate::EXIT_ENGINE, e))?;
    let reference = args.reference.as_deref().map(parse_ref).transpose()?;
    let img = vessel_image::import::import(store, &args.source, reference.as_ref(), &changes)?;
    println!("{}", img.id);
    Ok(0)
}

/// Prints aligned columns, Docker style (three spaces between columns).
pub fn print_table<const N: usize>(
    out: &mut impl Write,
    headers: &[&str; N],
    rows: &[[String; N]],
) {
    let rows: Vec<Vec<String>> = rows.iter().map(|r| r.to_vec()).collect();
    print_rows(out, headers, &rows);
}

/// [`print_table`] for a number of columns known only at run time.
pub fn print_rows(out: &mut impl Write, headers: &[&str], rows: &[Vec<String>]) {
    let n = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == n {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        s
    };
    let _ = writeln!(out, "{}", line(headers.to_vec()));
    for r in rows {
        let _ = writeln!(out, "{}", line(r.iter().map(String::as_str).collect()));
    }
}

/// "3 minutes ago", as Docker prints ages.
pub use vessel_engine::lifecycle::human_age;

/// Sizes in Docker's decimal units ("4.26MB").
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < UNITS.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes}B")
    } else {
        format!("{:.3}", v)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
            + UNITS[i]
    }
}
