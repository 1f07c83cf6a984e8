//! `vessel import`: a root filesystem (a directory or a tar) becomes a one-layer image.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use oci_spec::image::{
    ConfigBuilder, DescriptorBuilder, HistoryBuilder, ImageConfiguration,
    ImageConfigurationBuilder, ImageManifestBuilder, MediaType, RootFsBuilder,
};

use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, Result};
use crate::limits::DISK_BUDGET;
use crate::reference::Reference;
use crate::store::{ImageRecord, LayerRecord, NewImage, Store};
use crate::tar_guard::TarGuard;
use crate::unpack;

/// The media type vessel writes its own layers with.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Dockerfile-style instructions applied to the new image's config (`--change`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changes {
    /// `CMD`.
    pub cmd: Option<Vec<String>>,
    /// `ENTRYPOINT`.
    pub entrypoint: Option<Vec<String>>,
    /// `ENV`, in order.
    pub env: Vec<String>,
    /// `WORKDIR`.
    pub workdir: Option<String>,
    /// `USER`.
    pub user: Option<String>,
    /// `LABEL`.
    pub labels: HashMap<String, String>,
    /// `STOPSIGNAL`.
    pub stop_signal: Option<String>,
}

impl Changes {
    /// Parses `--change` lines: `CMD`, `ENTRYPOINT` (JSON or shell form), `ENV k=v`/`ENV k v`,
    /// `WORKDIR`, `USER`, `LABEL k=v`, `STOPSIGNAL`.
    pub fn parse<S: AsRef<str>>(lines: &[S]) -> Result<Changes> {
        let mut c = Changes::default();
        for line in lines {
            let line = line.as_ref().trim();
            let (instr, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let rest = rest.trim();
            let bad = |why: &str| Error::InvalidInput(format!("invalid --change {line:?}: {why}"));
            match instr.to_ascii_uppercase().as_str() {
                "CMD" => c.cmd = Some(command_form(rest).map_err(|e| bad(&e))?),
                "ENTRYPOINT" => c.entrypoint = Some(command_form(rest).map_err(|e| bad(&e))?),
                "ENV" => {
                    if rest.is_empty() {
                        return Err(bad("ENV needs a name"));
                    }
                    match rest.split_once('=') {
                        Some(_) => c.env.extend(rest.split_whitespace().map(str::to_string)),
                        None => {
                            let (k, v) = rest
                                .split_once(char::is_whitespace)
                                .ok_or_else(|| bad("ENV needs a value"))?;
                            c.env.push(format!("{k}={}", v.trim()));
                        }
                    }
                }
                "WORKDIR" if !rest.is_empty() => c.workdir = Some(rest.to_string()),
                "USER" if !rest.is_empty() => c.user = Some(rest.to_string()),
                "STOPSIGNAL" if !rest.is_empty() => c.stop_signal = Some(rest.to_string()),
                "LABEL" => {
                    for kv in rest.split_whitespace() {
                        let (k, v) = kv
                            .split_once('=')
                            .ok_or_else(|| bad("LABEL needs key=value"))?;
                        c.labels
                            .insert(k.to_string(), v.trim_matches('"').to_string());
                    }
                }
                "WORKDIR" | "USER" | "STOPSIGNAL" => return Err(bad("needs a value")),
                other => return Err(bad(&format!("unsupported instruction {other}"))),
            }
        }
        Ok(c)
    }
}

/// JSON array form (`["sh","-c","x"]`) or shell form (`sh -c x` → `/bin/sh -c "sh -c x"`).
fn command_form(s: &str) -> std::result::Result<Vec<String>, String> {
    if s.starts_with('[') {
        serde_json::from_str(s).map_err(|e| format!("not a JSON string array: {e}"))
    } else if s.is_empty() {
        Err("empty command".into())
    } else {
        Ok(vec!["/bin/sh".into(), "-c".into(), s.into()])
    }
}

/// Imports `source` (a directory, or a tar/tar.gz/tar.zst file) as a one-layer image tagged
/// `tag`, like `docker import`.
pub fn import(
    store: &Store,
    source: &Path,
    tag: Option<&Reference>,
    changes: &Changes,
) -> Result<ImageRecord> {
    let meta = fs::metadata(source).map_err(Error::io("import from", source))?;
    let layer = store_layer(store, "import", |tmp| {
        if meta.is_dir() {
            write_layer(tmp, |b| append_tree(b, source, false, &[]))
        } else {
            let f = File::open(source).map_err(Error::io("open", source))?;
            let stream = unpack::decompress(f).map_err(Error::io("read", source))?;
            // The tar is the user's, but may come from anywhere: the same header and
            // size limits as a layer's.
            let what = format!("tar {}", source.display());
            let mut guard = TarGuard::new(stream, what, store.disk_budget()?, DISK_BUDGET);
            let result = write_layer(tmp, |b| copy_tar(b, &mut guard, source));
            result.map_err(|e| guard.take_failure().unwrap_or(e))
        }
    })?;
    let config = build_config(
        std::slice::from_ref(&layer.diff_id),
        changes,
        &format!("vessel import {}", source.display()),
    )?;
    commit_single(store, config, vec![layer], tag)
}

/// Commits a new image made of `base` plus one layer holding the directory tree `source`
/// (like a `COPY` of a directory onto `/`), with `base`'s config otherwise unchanged, and
/// tags it `tag`.
pub fn add_layer(
    store: &Store,
    base: &ImageRecord,
    source: &Path,
    tag: Option<&Reference>,
    created_by: &str,
) -> Result<ImageRecord> {
    let layer = store_layer(store, "layer", |tmp| {
        write_layer(tmp, |b| append_tree(b, source, false, &[]))
    })?;
    let mut config = store.config(base)?;
    let mut diff_ids = config.rootfs().diff_ids().clone();
    diff_ids.push(layer.diff_id.to_string());
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(diff_ids)
        .build()
        .map_err(|e| Error::malformed("image rootfs", e))?;
    config.set_rootfs(rootfs);
    let mut history = config.history().clone().unwrap_or_default();
    history.push(
        HistoryBuilder::default()
            .created(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .created_by(created_by.to_string())
            .build()
            .map_err(|e| Error::malformed("image history", e))?,
    );
    config.set_history(Some(history));
    let mut layers = base.layers.clone();
    layers.push(layer);
    commit_single(store, config, layers, tag)
}

/// Stores a layer tar made elsewhere (a build step's changes, sent by a microVM's guest),
/// read as a pulled layer is, trusting none of it: the same header and size limits, the
/// disk budget, and the unpack's checks.
pub fn store_layer_tar(store: &Store, tar: &Path) -> Result<LayerRecord> {
    store_layer(store, "changes", |tmp| {
        let f = File::open(tar).map_err(Error::io("open", tar))?;
        let what = format!("layer {}", tar.display());
        let mut guard = TarGuard::new(f, what, store.disk_budget()?, DISK_BUDGET);
        let result = write_layer(tmp, |b| copy_tar(b, &mut guard, tar));
        result.map_err(|e| guard.take_failure().unwrap_or(e))
    })
}

/// Stores the overlayfs upper directory `upper` (what one step of a build changed) as a
/// layer: its whiteouts (0:0 character devices) become `.wh.NAME` entries and its opaque
/// directories (`trusted.overlay.opaque=y`) get a `.wh..wh..opq` entry, as the OCI
/// image spec writes them. The layer is stored and unpacked like any other.
pub fn store_upper_layer(store: &Store, upper: &Path) -> Result<LayerRecord> {
    store_upper_layer_except(store, upper, &[])
}

/// [`store_upper_layer`] leaving out the paths `skip` (relative to the root: what the
/// runtime placed there, such as the mount points of `/etc/hosts`).
pub fn store_upper_layer_except(store: &Store, upper: &Path, skip: &[&str]) -> Result<LayerRecord> {
    store_layer(store, "diff", |tmp| {
        write_layer(tmp, |b| append_tree(b, upper, true, skip))
    })
}

/// Stores a config given as JSON (Docker's fields beside the OCI's kept: `Healthcheck`,
/// `OnBuild`, `Shell`) with `layers` as its root file system, and its manifest, and
/// commits the image.
pub fn commit_json(
    store: &Store,
    config: &serde_json::Value,
    layers: &[LayerRecord],
    tag: Option<&Reference>,
) -> Result<ImageRecord> {
    let mut doc = config.clone();
    doc["rootfs"] = serde_json::json!({
        "type": "layers",
        "diff_ids": layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec(&doc).map_err(|e| Error::malformed("image config", e))?;
    let parsed: ImageConfiguration =
        serde_json::from_slice(&bytes).map_err(|e| Error::malformed("image config", e))?;
    let config_digest = store.put_blob_bytes(&bytes)?;
    let manifest = manifest_json(&config_digest, bytes.len() as u64, layers)?;
    let manifest_digest = store.put_blob_bytes(&manifest)?;
    store.commit(
        NewImage {
            manifest: &manifest_digest,
            config: &config_digest,
            config_doc: &parsed,
            layers,
        },
        tag,
    )
}

/// Stores a config and a manifest for `layers` and commits the image.
pub fn commit_single(
    store: &Store,
    config: ImageConfiguration,
    layers: Vec<LayerRecord>,
    tag: Option<&Reference>,
) -> Result<ImageRecord> {
    let config_json =
        serde_json::to_vec(&config).map_err(|e| Error::malformed("image config", e))?;
    let config_digest = store.put_blob_bytes(&config_json)?;
    let manifest_json = manifest_json(&config_digest, config_json.len() as u64, &layers)?;
    let manifest_digest = store.put_blob_bytes(&manifest_json)?;
    store.commit(
        NewImage {
            manifest: &manifest_digest,
            config: &config_digest,
            config_doc: &config,
            layers: &layers,
        },
        tag,
    )
}

/// The OCI image manifest (JSON) for a stored config and its layers.
pub fn manifest_json(config: &Digest, config_size: u64, layers: &[LayerRecord]) -> Result<Vec<u8>> {
    let descriptors = layers
        .iter()
        .map(|l| {
            DescriptorBuilder::default()
                .media_type(MediaType::from(l.media_type.as_str()))
                .digest(oci_digest(&l.blob)?)
                .size(l.size)
                .build()
                .map_err(|e| Error::malformed("layer descriptor", e))
        })
        .collect::<Result<Vec<_>>>()?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(
            DescriptorBuilder::default()
                .media_type(MediaType::ImageConfig)
                .digest(oci_digest(config)?)
                .size(config_size)
                .build()
                .map_err(|e| Error::malformed("config descriptor", e))?,
        )
        .layers(descriptors)
        .build()
        .map_err(|e| Error::malformed("image manifest", e))?;
    serde_json::to_vec(&manifest).map_err(|e| Error::malformed("image manifest", e))
}

/// Converts our digest into oci-spec's.
pub fn oci_digest(d: &Digest) -> Result<oci_spec::image::Digest> {
    d.to_string()
        .parse()
        .map_err(|e| Error::malformed("digest", e))
}

/// A linux/amd64 config with `changes` applied.
pub fn build_config(
    diff_ids: &[Digest],
    changes: &Changes,
    created_by: &str,
) -> Result<ImageConfiguration> {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut cfg = ConfigBuilder::default();
    if let Some(c) = &changes.cmd {
        cfg = cfg.cmd(c.clone());
    }
    if let Some(e) = &changes.entrypoint {
        cfg = cfg.entrypoint(e.clone());
    }
    if !changes.env.is_empty() {
        cfg = cfg.env(changes.env.clone());
    }
    if let Some(w) = &changes.workdir {
        cfg = cfg.working_dir(w.clone());
    }
    if let Some(u) = &changes.user {
        cfg = cfg.user(u.clone());
    }
    if !changes.labels.is_empty() {
        cfg = cfg.labels(changes.labels.clone());
    }
    if let Some(s) = &changes.stop_signal {
        cfg = cfg.stop_signal(s.clone());
    }
    let config = cfg
        .build()
        .map_err(|e| Error::malformed("image config", e))?;
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(|e| Error::malformed("image rootfs", e))?;
    let history = HistoryBuilder::default()
        .created(now.clone())
        .created_by(created_by.to_string())
        .build()
        .map_err(|e| Error::malformed("image history", e))?;
    ImageConfigurationBuilder::default()
        .created(now)
        .architecture(oci_spec::image::Arch::Amd64)
        .os(oci_spec::image::Os::Linux)
        .config(config)
        .rootfs(rootfs)
        .history(vec![history])
        .build()
        .map_err(|e| Error::malformed("image config", e))
}

type LayerWriter =
    tar::Builder<HashingWriter<flate2::write::GzEncoder<HashingWriter<io::BufWriter<File>>>>>;

/// Writes a gzip layer to `path` with `fill`, returning (blob digest, blob size, diff id).
/// Writes a layer blob with `write` into a work file, stores it by digest, unpacks it and
/// returns its record; the work file is removed whatever happens.
fn store_layer(
    store: &Store,
    what: &str,
    write: impl FnOnce(&Path) -> Result<(Digest, u64, Digest)>,
) -> Result<LayerRecord> {
    let tmp = store.tmp_path(what);
    let result = (|| {
        let (blob, size, diff_id) = write(&tmp)?;
        let (blob_d, _) = store.put_blob(
            File::open(&tmp).map_err(Error::io("open", &tmp))?,
            Some((&blob, Some(size))),
        )?;
        Ok::<_, Error>((blob_d, size, diff_id))
    })();
    let _ = fs::remove_file(&tmp);
    let (blob, size, diff_id) = result?;
    let layer = LayerRecord {
        blob,
        diff_id,
        media_type: LAYER_MEDIA_TYPE.to_string(),
        size,
    };
    store.unpack_layer(&layer)?;
    Ok(layer)
}

fn write_layer(
    path: &Path,
    fill: impl FnOnce(&mut LayerWriter) -> Result<()>,
) -> Result<(Digest, u64, Digest)> {
    let file = File::create(path).map_err(Error::io("create", path))?;
    let compressed = HashingWriter::new(io::BufWriter::with_capacity(1 << 20, file));
    let gz = flate2::write::GzEncoder::new(compressed, flate2::Compression::fast());
    let mut builder = tar::Builder::new(HashingWriter::new(gz));
    builder.mode(tar::HeaderMode::Complete);
    fill(&mut builder)?;
    let tar_hash = builder
        .into_inner()
        .map_err(Error::io("write layer", path))?;
    let (gz, diff_id, _) = tar_hash.finish();
    let compressed = gz.finish().map_err(Error::io("compress layer", path))?;
    let (mut buf, blob, size) = compressed.finish();
    buf.flush().map_err(Error::io("write layer", path))?;
    Ok((blob, size, diff_id))
}

/// Re-emits a tar stream's entries (so a compressed or odd input becomes a plain layer tar
/// that we compress ourselves); entries are copied verbatim, hostile ones included: the
/// unpacker is the one that judges them.
fn copy_tar(b: &mut LayerWriter, stream: impl Read, source: &Path) -> Result<()> {
    let mut archive = tar::Archive::new(stream);
    let entries = archive
        .entries()
        .map_err(|e| Error::malformed(format!("tar {}", source.display()), e))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| Error::malformed(format!("tar {}", source.display()), e))?;
        if let Some(exts) = entry
            .pax_extensions()
            .map_err(|e| Error::malformed("tar PAX header", e))?
        {
            let pairs: Vec<(String, Vec<u8>)> = exts
                .filter_map(|e| e.ok())
                .filter_map(|e| Some((e.key().ok()?.to_string(), e.value_bytes().to_vec())))
                .filter(|(k, _)| k.starts_with("SCHILY.xattr."))
                .collect();
            if !pairs.is_empty() {
                b.append_pax_extensions(pairs.iter().map(|(k, v)| (k.as_str(), &v[..])))
                    .map_err(Error::io("write layer for", source))?;
            }
        }
        let mut header = entry.header().clone();
        let path = entry.path_bytes().into_owned();
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let kind = header.entry_type();
        if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            continue;
        }
        let path = String::from_utf8_lossy(&path).into_owned();
        match link {
            Some(l) if kind.is_symlink() || kind.is_hard_link() => {
                b.append_link(&mut header, &path, String::from_utf8_lossy(&l).as_ref())
            }
            _ => b.append_data(&mut header, &path, &mut entry),
        }
        .map_err(|e| Error::malformed(format!("tar entry {path:?} in {}", source.display()), e))?;
    }
    Ok(())
}

/// Tars a directory tree, sorted for reproducible digests, keeping owners, modes, times,
/// xattrs, hard links, symlinks, devices and fifos. Symlinks are never followed. With
/// `overlay_upper`, the tree is an overlayfs upper directory whose whiteouts and opaque
/// directories become OCI whiteout entries.
fn append_tree(b: &mut LayerWriter, root: &Path, overlay_upper: bool, skip: &[&str]) -> Result<()> {
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = root.join(&rel);
        if overlay_upper && !rel.as_os_str().is_empty() && is_opaque(&full) {
            append_whiteout(b, &rel.join(unpack::OPAQUE_MARKER))?;
        }
        let mut names: Vec<_> = fs::read_dir(&full)
            .map_err(Error::io("read directory", &full))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(Error::io("read directory", &full))?;
        names.sort();
        let mut subdirs = Vec::new();
        for name in names {
            let rel_path = rel.join(&name);
            if skip.iter().any(|s| Path::new(s) == rel_path) {
                continue;
            }
            let path = root.join(&rel_path);
            let meta = fs::symlink_metadata(&path).map_err(Error::io("stat", &path))?;
            append_xattrs(b, &path)?;
            let mut h = tar::Header::new_gnu();
            h.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
            h.set_mode(meta.mode() & 0o7777);
            let ft = meta.file_type();
            let w = |e: io::Error| Error::io("add to layer", path.clone())(e);
            use std::os::unix::fs::FileTypeExt;
            if overlay_upper && ft.is_char_device() && meta.rdev() == 0 {
                let mut hidden = std::ffi::OsString::from(unpack::WHITEOUT_PREFIX);
                hidden.push(&name);
                append_whiteout(b, &rel.join(hidden))?;
                continue;
            }
            if ft.is_dir() {
                h.set_size(0);
                b.append_data(&mut h, &rel_path, io::empty()).map_err(w)?;
                subdirs.push(rel_path);
            } else if ft.is_symlink() {
                let target = fs::read_link(&path).map_err(Error::io("read link", &path))?;
                h.set_size(0);
                b.append_link(&mut h, &rel_path, &target).map_err(w)?;
            } else if meta.nlink() > 1
                && !ft.is_dir()
                && links.contains_key(&(meta.dev(), meta.ino()))
            {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                let first = &links[&(meta.dev(), meta.ino())];
                b.append_link(&mut h, &rel_path, first).map_err(w)?;
            } else {
                if meta.nlink() > 1 {
                    links.insert((meta.dev(), meta.ino()), rel_path.clone());
                }
                if ft.is_char_device() || ft.is_block_device() {
                    let dev = meta.rdev();
                    h.set_device_major(rustix::fs::major(dev)).map_err(w)?;
                    h.set_device_minor(rustix::fs::minor(dev)).map_err(w)?;
                    h.set_size(0);
                    b.append_data(&mut h, &rel_path, io::empty()).map_err(w)?;
                } else if ft.is_fifo() || ft.is_socket() {
                    if ft.is_socket() {
                        continue; // tar cannot carry sockets; GNU tar skips them too
                    }
                    h.set_size(0);
                    b.append_data(&mut h, &rel_path, io::empty()).map_err(w)?;
                } else {
                    let f = File::open(&path).map_err(Error::io("open", &path))?;
                    b.append_data(&mut h, &rel_path, f).map_err(w)?;
                }
            }
        }
        // Depth-first, in name order: push reversed so the first name pops first.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(())
}

/// Whether overlayfs marked the directory `dir` opaque (it hides the lower layers' one).
fn is_opaque(dir: &Path) -> bool {
    let mut val = [0u8; 4];
    matches!(rustix::fs::lgetxattr(dir, unpack::OPAQUE_XATTR, &mut val), Ok(1) if val[0] == b'y')
}

/// An OCI whiteout entry: an empty root-owned file named `.wh.NAME` (or `.wh..wh..opq`).
fn append_whiteout(b: &mut LayerWriter, rel: &Path) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(0);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    b.append_data(&mut h, rel, io::empty())
        .map_err(|e| Error::io("add whiteout to layer", rel)(e))
}

fn append_xattrs(b: &mut LayerWriter, path: &Path) -> Result<()> {
    let mut names = vec![0u8; 4096];
    let n = match rustix::fs::llistxattr(path, &mut names) {
        Ok(0) | Err(_) => return Ok(()),
        Ok(n) => n,
    };
    let mut pairs = Vec::new();
    for name in names[..n].split(|&c| c == 0).filter(|s| !s.is_empty()) {
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        if name.starts_with("trusted.overlay.") {
            continue;
        }
        let mut val = vec![0u8; 65536];
        if let Ok(len) = rustix::fs::lgetxattr(path, name, &mut val) {
            val.truncate(len);
            pairs.push((format!("SCHILY.xattr.{name}"), val));
        }
    }
    if !pairs.is_empty() {
        b.append_pax_extensions(pairs.iter().map(|(k, v)| (k.as_str(), &v[..])))
            .map_err(Error::io("write xattrs of", path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_changes() {
        let c = Changes::parse(&[
            r#"CMD ["sh"]"#,
            "ENTRYPOINT echo hi",
            "ENV A=1 B=2",
            "ENV C three",
            "WORKDIR /w",
            "USER 1000:1000",
            "LABEL a=b",
        ])
        .unwrap();
        assert_eq!(c.cmd.unwrap(), vec!["sh"]);
        assert_eq!(c.entrypoint.unwrap(), vec!["/bin/sh", "-c", "echo hi"]);
        assert_eq!(c.env, vec!["A=1", "B=2", "C=three"]);
        assert_eq!(c.workdir.as_deref(), Some("/w"));
        assert_eq!(c.user.as_deref(), Some("1000:1000"));
        assert_eq!(c.labels["a"], "b");
    }

    #[test]
    fn rejects_unknown_changes() {
        assert!(Changes::parse(&["RUN rm -rf /"])
            .unwrap_err()
            .to_string()
            .contains("unsupported instruction RUN"));
        assert!(Changes::parse(&["CMD [broken"]).is_err());
    }

    #[test]
    fn import_dir_roundtrips_through_the_store() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("bin")).unwrap();
        fs::write(src.join("bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
        std::os::unix::fs::symlink("tool", src.join("bin/alias")).unwrap();
        fs::hard_link(src.join("bin/tool"), src.join("bin/hard")).unwrap();
        let store = Store::open(&tmp.path().join("root")).unwrap();
        let tag: Reference = "mybox:1".parse().unwrap();
        let changes = Changes::parse(&[r#"CMD ["/bin/tool"]"#]).unwrap();
        let img = import(&store, &src, Some(&tag), &changes).unwrap();
        assert_eq!(img.tags, vec!["mybox:1"]);
        let again = store.resolve("mybox:1").unwrap();
        assert_eq!(again.id, img.id);
        let cfg = store.config(&img).unwrap();
        assert_eq!(
            cfg.config().as_ref().unwrap().cmd().as_ref().unwrap(),
            &vec!["/bin/tool".to_string()]
        );
        let dirs = store.layer_dirs(&img).unwrap();
        let layer = &dirs[0];
        assert_eq!(
            fs::read(layer.join("bin/tool")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
        assert_eq!(
            fs::read_link(layer.join("bin/alias")).unwrap(),
            PathBuf::from("tool")
        );
        let (a, h) = (
            fs::metadata(layer.join("bin/tool")).unwrap(),
            fs::metadata(layer.join("bin/hard")).unwrap(),
        );
        assert_eq!(a.ino(), h.ino());
        // Importing the same tree again gives the same layer (stored once).
        let img2 = import(&store, &src, Some(&"other:2".parse().unwrap()), &changes).unwrap();
        assert_eq!(img2.layers[0].diff_id, img.layers[0].diff_id);
        assert_eq!(store.layer_dirs(&img2).unwrap()[0], *layer);
        // Removing one image keeps the shared layer for the other.
        store.remove("mybox:1", false).unwrap();
        assert!(layer.is_dir());
        assert!(matches!(
            store.resolve("mybox:1"),
            Err(Error::ImageNotFound(_))
        ));
        store.remove("other:2", false).unwrap();
        assert!(!layer.exists());
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn add_layer_stacks_on_the_base_and_keeps_its_config() {
        let tmp = tempfile::tempdir().unwrap();
        let (base_src, extra) = (tmp.path().join("base"), tmp.path().join("extra"));
        fs::create_dir_all(base_src.join("bin")).unwrap();
        fs::write(base_src.join("bin/sh"), b"shell").unwrap();
        fs::create_dir_all(extra.join("opt")).unwrap();
        fs::write(extra.join("opt/tool"), b"tool").unwrap();
        let store = Store::open(&tmp.path().join("root")).unwrap();
        let changes = Changes::parse(&[r#"CMD ["sh"]"#, "ENV A=1"]).unwrap();
        let base = import(
            &store,
            &base_src,
            Some(&"base:1".parse().unwrap()),
            &changes,
        )
        .unwrap();
        let tag: Reference = "derived:1".parse().unwrap();
        let img = add_layer(&store, &base, &extra, Some(&tag), "test").unwrap();
        assert_eq!(img.layers.len(), 2);
        assert_eq!(img.layers[0], base.layers[0]);
        let cfg = store.config(&img).unwrap();
        assert_eq!(cfg.rootfs().diff_ids().len(), 2);
        assert_eq!(cfg.history().as_ref().unwrap().len(), 2);
        let inner = cfg.config().as_ref().unwrap();
        assert_eq!(inner.cmd().as_ref().unwrap(), &vec!["sh".to_string()]);
        assert_eq!(inner.env().as_ref().unwrap(), &vec!["A=1".to_string()]);
        let dirs = store.layer_dirs(&img).unwrap();
        assert_eq!(fs::read(dirs[1].join("opt/tool")).unwrap(), b"tool");
        // Removing the derived image keeps the base's layer.
        store.remove("derived:1", false).unwrap();
        assert!(!dirs[1].exists());
        assert!(dirs[0].is_dir());
    }

    #[test]
    fn concurrent_stores_share_one_index() {
        // Separate Store handles are separate SQLite connections, as separate processes
        // have: concurrent imports and tags must all land.
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("f"), b"x").unwrap();
        let root = tmp.path().join("root");
        Store::open(&root).unwrap();
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (root, src) = (root.clone(), src.clone());
                std::thread::spawn(move || {
                    let store = Store::open(&root).unwrap();
                    let tag: Reference = format!("par:{i}").parse().unwrap();
                    import(&store, &src, Some(&tag), &Changes::default()).unwrap()
                })
            })
            .collect();
        let images: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let store = Store::open(&root).unwrap();
        for i in 0..8 {
            assert!(store.resolve(&format!("par:{i}")).is_ok());
        }
        // Same tree, same layer: unpacked once and shared.
        assert!(images
            .iter()
            .all(|i| i.layers[0].diff_id == images[0].layers[0].diff_id));
        assert_eq!(fs::read_dir(root.join("images/layers")).unwrap().count(), 1);
    }

    #[test]
    fn upper_dir_whiteouts_become_oci_whiteouts() {
        // Needs root: mknod of a whiteout and trusted.* xattrs, as overlayfs makes them.
        assert!(rustix::process::geteuid().is_root(), "run as root");
        let tmp = tempfile::tempdir().unwrap();
        let upper = tmp.path().join("upper");
        fs::create_dir_all(upper.join("opaque")).unwrap();
        fs::write(upper.join("opaque/kept"), b"k").unwrap();
        fs::write(upper.join("new"), b"n").unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            upper.join("gone"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .unwrap();
        rustix::fs::setxattr(
            upper.join("opaque"),
            unpack::OPAQUE_XATTR,
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let store = Store::open(&tmp.path().join("root")).unwrap();
        let layer = store_upper_layer(&store, &upper).unwrap();
        let blob = store.open_blob(&layer.blob).unwrap();
        let mut names = Vec::new();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(blob));
        for e in archive.entries().unwrap() {
            names.push(e.unwrap().path().unwrap().to_string_lossy().into_owned());
        }
        assert_eq!(
            names,
            vec![
                ".wh.gone",
                "new",
                "opaque",
                "opaque/.wh..wh..opq",
                "opaque/kept"
            ]
        );
        // Unpacked, it is an overlay layer again: whiteout device and opaque xattr.
        let dir = store.layer_path(&layer.diff_id);
        let gone = fs::symlink_metadata(dir.join("gone")).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(
            &gone.file_type()
        ));
        assert!(is_opaque(&dir.join("opaque")));
    }
}
