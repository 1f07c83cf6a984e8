//! `vessel load` and `vessel save`: images to and from tar archives, in the two formats
//! the ecosystem exchanges them in.
//!
//! - **docker-archive** (`docker save`): `manifest.json` lists each image's config file,
//!   `RepoTags` and layer files (uncompressed tars, at `<id>/layer.tar` in old archives or
//!   `blobs/sha256/<diff id>` since Docker 25). We write the Docker 25 layout, which is an
//!   OCI layout as well (`oci-layout`, `index.json`), so Docker, Podman and skopeo all
//!   read it.
//! - **oci-archive**: an OCI image layout in a tar; `index.json` points at manifests, and
//!   tags are the `org.opencontainers.image.ref.name` annotations.
//!
//! A tar can be read only once, front to back, and nothing orders its entries usefully,
//! so `load` first extracts the archive under the store's `tmp/` (entry names are checked:
//! `..` and absolute paths are refused, and links are resolved inside the archive, never
//! on disk), then stores every blob with its digest verified and every layer unpacked
//! with the diff id its config names, and only then commits and tags the images.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::str::FromStr;

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use serde::{Deserialize, Serialize};
use tracing::{debug, info_span};

use crate::digest::{Digest, HashingReader};
use crate::error::{Error, Result};
use crate::limits::{self, DISK_BUDGET, ENTRY_OVERHEAD, MAX_CONFIG, MAX_MANIFEST};
use crate::manifest::{check_manifest, classify, select_platform, Kind, OCI_INDEX, OCI_MANIFEST};
use crate::progress::Progress;
use crate::reference::Reference;
use crate::store::{ImageRecord, LayerRecord, NewImage, Store};
use crate::tar_guard::TarGuard;
use crate::unpack::{self, Compression};

/// The annotation OCI layouts name an image (or just its tag) with.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation containerd and Docker 25+ put the full image name in.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";

const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// The archive format `save` writes (`load` detects it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// `docker save`'s format, in Docker 25's layout (also a valid OCI layout).
    Docker,
    /// An OCI image layout in a tar.
    Oci,
}

/// One entry of a docker-archive `manifest.json`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// An archive extracted under `tmp/`: regular files on disk, links as a map.
struct Extracted {
    dir: PathBuf,
    files: HashSet<String>,
    /// Archive path -> archive path it stands for (symlinks resolved relative to the
    /// link, hard links as named).
    links: HashMap<String, String>,
}

impl Drop for Extracted {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Splits an archive entry name into clean components, refusing any that could point
/// outside the archive.
fn entry_path(raw: &str) -> Result<String> {
    let hostile = |reason: &str| Error::HostileEntry {
        entry: raw.to_string(),
        reason: reason.to_string(),
    };
    if raw.starts_with('/') {
        return Err(hostile("absolute path in archive"));
    }
    let mut parts = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(hostile("'..' in archive path")),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(hostile("empty path"));
    }
    Ok(parts.join("/"))
}

/// Resolves a symlink target relative to the link's directory, staying inside the archive.
fn link_target(link: &str, target: &str) -> Result<String> {
    let hostile = |reason: &str| Error::HostileEntry {
        entry: format!("{link} -> {target}"),
        reason: reason.to_string(),
    };
    if target.starts_with('/') {
        return Err(hostile("absolute link target in archive"));
    }
    let mut parts: Vec<&str> = link.split('/').collect();
    parts.pop();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(hostile("link points outside the archive"));
                }
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

impl Extracted {
    /// Extracts the archive under the store's `tmp/`, within the store's disk budget; on
    /// error, nothing of it is left.
    fn extract(store: &Store, reader: impl Read) -> Result<Extracted> {
        let budget = store.disk_budget()?;
        let dir = store.tmp_path("load");
        fs::create_dir(&dir).map_err(Error::io("create", &dir))?;
        let mut x = Extracted {
            dir,
            files: HashSet::new(),
            links: HashMap::new(),
        };
        let mut guard = TarGuard::new(reader, "archive", budget, DISK_BUDGET);
        let result = x.extract_entries(&mut guard, budget);
        match result {
            Err(e) => Err(guard.take_failure().unwrap_or(e)),
            Ok(()) => Ok(x),
        }
    }

    fn extract_entries(&mut self, reader: impl Read, budget: u64) -> Result<()> {
        let x = self;
        let mut written = 0u64;
        let mut archive = tar::Archive::new(reader);
        let entries = archive
            .entries()
            .map_err(|e| Error::malformed("archive", e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| Error::malformed("archive", e))?;
            written = written.saturating_add(ENTRY_OVERHEAD);
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let kind = entry.header().entry_type();
            if kind.is_dir() {
                entry_path(&raw).or_else(|e| {
                    if raw == "./" || raw == "." {
                        Ok(String::new())
                    } else {
                        Err(e)
                    }
                })?;
                continue;
            }
            let path = entry_path(&raw)?;
            if kind.is_symlink() || kind.is_hard_link() {
                let target = entry
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned())
                    .unwrap_or_default();
                let resolved = if kind.is_symlink() {
                    link_target(&path, &target)?
                } else {
                    entry_path(&target)?
                };
                x.links.insert(path, resolved);
                continue;
            }
            if !kind.is_file() {
                continue; // devices, fifos: nothing an image archive needs
            }
            // Refuse what cannot fit before writing any of it; the tar crate reads exactly
            // the entry's size, so the sum of sizes is what lands on disk.
            let left = budget.saturating_sub(written);
            if entry.size() > left {
                return Err(Error::TooLarge {
                    what: format!("archive entry {path:?}"),
                    size: entry.size(),
                    limit: left,
                    limit_name:
                        "left of the disk budget (free space of the image store less its reserve)",
                });
            }
            written = written.saturating_add(entry.size());
            let dest = x.dir.join(&path);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(Error::io("create", parent))?;
            }
            let mut f = File::create(&dest).map_err(Error::io("create", &dest))?;
            io::copy(&mut entry, &mut f).map_err(Error::io("extract archive entry to", &dest))?;
            x.links.remove(&path);
            x.files.insert(path);
        }
        Ok(())
    }

    /// The on-disk file for an archive path, following links inside the archive.
    fn resolve(&self, name: &str) -> Result<PathBuf> {
        let mut p = entry_path(name)?;
        for _ in 0..16 {
            if self.files.contains(&p) {
                return Ok(self.dir.join(&p));
            }
            match self.links.get(&p) {
                Some(t) => p = t.clone(),
                None => break,
            }
        }
        Err(Error::malformed(
            "archive",
            format!("{name} is missing from the archive"),
        ))
    }

    fn has(&self, name: &str) -> bool {
        self.files.contains(name) || self.links.contains_key(name)
    }

    fn open(&self, name: &str) -> Result<File> {
        let p = self.resolve(name)?;
        File::open(&p).map_err(Error::io("open", p))
    }

    /// Reads a document of at most `limit` bytes (see [`crate::limits`]).
    fn read(&self, name: &str, limit: u64) -> Result<Vec<u8>> {
        let p = self.resolve(name)?;
        limits::read_file_capped(&p, limit, &format!("archive {name}"))
    }

    fn blob_name(d: &Digest) -> String {
        format!("blobs/sha256/{}", d.hex())
    }
}

/// Counts bytes for progress as a blob is stored.
struct Counting<'a, R> {
    inner: R,
    progress: &'a dyn Progress,
    id: &'a str,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(self.id, n as u64);
        Ok(n)
    }
}

/// Loads every image in a docker-archive or oci-archive read from `reader`, tagging each
/// with the names the archive gives it. Nothing is committed unless the whole archive
/// checks out. Progress ids are 12-hex-digit digest prefixes: of each layer blob in an
/// oci-archive, of each layer's diff id in a docker-archive (whose layers have no other
/// name); statuses are `"Loaded"`.
pub fn load(store: &Store, reader: impl Read, progress: &dyn Progress) -> Result<Vec<ImageRecord>> {
    let span = info_span!("load");
    let _guard = span.enter();
    let x = Extracted::extract(store, reader)?;
    // Blobs this load adds: a load that fails removes those no committed image uses, so
    // a refused archive (a bomb layer, say) leaves nothing of itself in the store.
    let mut added = Vec::new();
    let result = stage_and_commit(store, &x, progress, &mut added);
    if result.is_err() {
        store.discard_unreferenced(&added);
    }
    result
}

fn stage_and_commit(
    store: &Store,
    x: &Extracted,
    progress: &dyn Progress,
    added: &mut Vec<Digest>,
) -> Result<Vec<ImageRecord>> {
    let staged = if x.has("manifest.json") {
        load_docker(store, x, progress, added)?
    } else if x.has("index.json") {
        if !x.has("oci-layout") {
            return Err(Error::malformed(
                "archive",
                "index.json without oci-layout: not an OCI image layout",
            ));
        }
        load_oci(store, x, progress, added)?
    } else {
        return Err(Error::malformed(
            "archive",
            "neither manifest.json (docker-archive) nor index.json (oci-archive) found",
        ));
    };
    // Every blob is stored and every layer unpacked: commit them all.
    let mut out: Vec<ImageRecord> = Vec::new();
    for s in staged {
        let mut tags = s.tags.iter();
        let image = store.commit(
            NewImage {
                manifest: &s.manifest,
                config: &s.config,
                config_doc: &s.config_doc,
                layers: &s.layers,
            },
            tags.next(),
        )?;
        for t in tags {
            store.tag(&image.id, t)?;
        }
        let image = store.get(&image.id)?;
        match out.iter_mut().find(|i| i.id == image.id) {
            Some(existing) => *existing = image,
            None => out.push(image),
        }
    }
    Ok(out)
}

/// An image whose blobs are all stored, ready to commit.
struct Staged {
    manifest: Digest,
    config: Digest,
    config_doc: ImageConfiguration,
    layers: Vec<LayerRecord>,
    tags: Vec<Reference>,
}

fn parse_config(bytes: &[u8], what: &str) -> Result<(ImageConfiguration, Vec<Digest>)> {
    let config = ImageConfiguration::from_reader(bytes).map_err(|e| Error::malformed(what, e))?;
    let diff_ids = config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| d.parse())
        .collect::<Result<Vec<Digest>>>()?;
    Ok((config, diff_ids))
}

fn load_docker(
    store: &Store,
    x: &Extracted,
    progress: &dyn Progress,
    added: &mut Vec<Digest>,
) -> Result<Vec<Staged>> {
    let entries: Vec<DockerEntry> = serde_json::from_slice(&x.read("manifest.json", MAX_MANIFEST)?)
        .map_err(|e| Error::malformed("archive manifest.json", e))?;
    if entries.is_empty() {
        return Err(Error::malformed("archive manifest.json", "lists no images"));
    }
    let mut staged = Vec::new();
    for entry in entries {
        let what = format!("config {}", entry.config);
        let config_bytes = x.read(&entry.config, MAX_CONFIG)?;
        let config_digest = Digest::of(&config_bytes);
        // Both layouts name the config file after its digest: check it.
        let named = entry
            .config
            .trim_start_matches("blobs/sha256/")
            .trim_end_matches(".json");
        if named.len() == 64
            && named.bytes().all(|b| b.is_ascii_hexdigit())
            && named != config_digest.hex()
        {
            return Err(Error::DigestMismatch {
                what,
                expected: format!("sha256:{named}"),
                actual: config_digest.to_string(),
            });
        }
        let (config, diff_ids) = parse_config(&config_bytes, &what)?;
        if diff_ids.len() != entry.layers.len() {
            return Err(Error::malformed(
                "archive manifest.json",
                format!(
                    "{} lists {} layers but its config has {} diff ids",
                    entry.config,
                    entry.layers.len(),
                    diff_ids.len()
                ),
            ));
        }
        let mut layers = Vec::with_capacity(diff_ids.len());
        for (path, diff_id) in entry.layers.iter().zip(diff_ids) {
            let mut head = [0u8; 4];
            let n = read_full(&mut x.open(path)?, &mut head)?;
            let compression = Compression::sniff(&head[..n]);
            let id = diff_id.short().to_string();
            let size = fs::metadata(x.resolve(path)?).map(|m| m.len()).ok();
            progress.start(&id, "Loading layer", size);
            let counting = Counting {
                inner: x.open(path)?,
                progress,
                id: &id,
            };
            // An uncompressed layer's blob digest is its diff id: verify it as it is stored.
            let expected = (compression == Compression::None).then_some((&diff_id, size));
            let (blob, size) = store.put_blob_noting(counting, expected, added)?;
            let media_type = match compression {
                Compression::None => LAYER_TAR,
                Compression::Gzip => LAYER_GZIP,
                Compression::Zstd => LAYER_ZSTD,
            };
            let layer = LayerRecord {
                blob,
                diff_id,
                media_type: media_type.to_string(),
                size,
            };
            store.unpack_layer(&layer)?;
            progress.finish(&id, "Loaded");
            layers.push(layer);
        }
        let stored_config = store.put_blob_bytes_noting(&config_bytes, added)?;
        let manifest =
            crate::import::manifest_json(&stored_config, config_bytes.len() as u64, &layers)?;
        let manifest = store.put_blob_bytes_noting(&manifest, added)?;
        let tags = entry
            .repo_tags
            .unwrap_or_default()
            .iter()
            .map(|t| Reference::from_str(t))
            .collect::<Result<Vec<_>>>()?;
        staged.push(Staged {
            manifest,
            config: stored_config,
            config_doc: config,
            layers,
            tags,
        });
    }
    Ok(staged)
}

/// The tag an OCI index entry names, if it names a whole reference.
fn oci_tag(annotations: Option<&HashMap<String, String>>) -> Result<Option<Reference>> {
    let Some(a) = annotations else {
        return Ok(None);
    };
    if let Some(full) = a.get(CONTAINERD_NAME) {
        return Reference::from_str(full).map(Some);
    }
    match a.get(REF_NAME) {
        // A bare "latest" is only a tag; without a repository there is nothing to name.
        Some(name) if name.contains(':') || name.contains('/') => {
            Reference::from_str(name).map(Some)
        }
        _ => Ok(None),
    }
}

fn load_oci(
    store: &Store,
    x: &Extracted,
    progress: &dyn Progress,
    added: &mut Vec<Digest>,
) -> Result<Vec<Staged>> {
    let index_bytes = x.read("index.json", MAX_MANIFEST)?;
    if classify(&index_bytes, "archive index.json")?.0 != Kind::Index {
        return Err(Error::malformed(
            "archive index.json",
            "is not an image index",
        ));
    }
    let index = ImageIndex::from_reader(&index_bytes[..])
        .map_err(|e| Error::malformed("archive index.json", e))?;
    if index.manifests().is_empty() {
        return Err(Error::malformed("archive index.json", "lists no images"));
    }
    let mut staged: Vec<Staged> = Vec::new();
    let mut by_manifest: HashMap<Digest, usize> = HashMap::new();
    for desc in index.manifests() {
        let tag = oci_tag(desc.annotations().as_ref())?;
        let mut digest: Digest = desc.digest().to_string().parse()?;
        let mut size = desc.size();
        let mut bytes = read_verified(x, &digest, size, MAX_MANIFEST)?;
        // A nested index (a multi-platform image): take its linux/amd64 manifest.
        if classify(&bytes, &format!("manifest {digest}"))?.0 == Kind::Index {
            let nested = ImageIndex::from_reader(&bytes[..])
                .map_err(|e| Error::malformed(format!("index {digest}"), e))?;
            (digest, size) = select_platform(&nested, &digest.to_string())?;
            bytes = read_verified(x, &digest, size, MAX_MANIFEST)?;
            if classify(&bytes, &format!("manifest {digest}"))?.0 != Kind::Manifest {
                return Err(Error::malformed(
                    format!("manifest {digest}"),
                    "an index entry for linux/amd64 is itself an index",
                ));
            }
        }
        if let Some(&i) = by_manifest.get(&digest) {
            staged[i].tags.extend(tag);
            continue;
        }
        let what = format!("manifest {digest}");
        let manifest = ImageManifest::from_reader(&bytes[..])
            .map_err(|e| Error::malformed(what.as_str(), e))?;
        check_manifest(&manifest)?;
        let config_digest: Digest = manifest.config().digest().to_string().parse()?;
        let config_bytes = read_verified(x, &config_digest, manifest.config().size(), MAX_CONFIG)?;
        let (config, diff_ids) = parse_config(&config_bytes, &format!("config {config_digest}"))?;
        if diff_ids.len() != manifest.layers().len() {
            return Err(Error::malformed(
                what,
                format!(
                    "{} layers but its config has {} diff ids",
                    manifest.layers().len(),
                    diff_ids.len()
                ),
            ));
        }
        let mut layers = Vec::with_capacity(diff_ids.len());
        for (l, diff_id) in manifest.layers().iter().zip(diff_ids) {
            let blob: Digest = l.digest().to_string().parse()?;
            let id = blob.short().to_string();
            progress.start(&id, "Loading layer", Some(l.size()));
            let counting = Counting {
                inner: x.open(&Extracted::blob_name(&blob))?,
                progress,
                id: &id,
            };
            store.put_blob_noting(counting, Some((&blob, Some(l.size()))), added)?;
            let layer = LayerRecord {
                blob,
                diff_id,
                media_type: l.media_type().to_string(),
                size: l.size(),
            };
            store.unpack_layer(&layer)?;
            progress.finish(&id, "Loaded");
            layers.push(layer);
        }
        let config_stored = store.put_blob_bytes_noting(&config_bytes, added)?;
        let manifest_stored = store.put_blob_bytes_noting(&bytes, added)?;
        by_manifest.insert(digest, staged.len());
        staged.push(Staged {
            manifest: manifest_stored,
            config: config_stored,
            config_doc: config,
            layers,
            tags: tag.into_iter().collect(),
        });
    }
    Ok(staged)
}

/// Reads a small blob (manifest, config) of at most `limit` bytes from the layout,
/// checking digest and size.
fn read_verified(x: &Extracted, digest: &Digest, size: u64, limit: u64) -> Result<Vec<u8>> {
    let name = Extracted::blob_name(digest);
    limits::check_len(size, limit, &format!("archive {name}"))?;
    if !x.has(&name) {
        return Err(Error::malformed(
            "archive",
            format!("blob {digest} is missing from the archive"),
        ));
    }
    let bytes = x.read(&name, limit)?;
    crate::digest::verify(&bytes, digest, size, &format!("archive {name}"))?;
    Ok(bytes)
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read", "archive layer")(e)),
        }
    }
    Ok(filled)
}

/// An image to save and the tags to save it under.
struct ToSave {
    image: ImageRecord,
    tags: Vec<String>,
}

/// Writes `images` (names or ids) to `writer` as one archive. An image named by tag is
/// saved with that tag; one named by id is saved untagged, as `docker save` does.
pub fn save(
    store: &Store,
    images: &[String],
    writer: impl Write,
    format: ArchiveFormat,
) -> Result<()> {
    let span = info_span!("save", ?format);
    let _guard = span.enter();
    if images.is_empty() {
        return Err(Error::InvalidInput("no images to save".into()));
    }
    let mut list: Vec<ToSave> = Vec::new();
    for name in images {
        let image = store.resolve(name)?;
        let tag = Reference::from_str(name)
            .ok()
            .and_then(|r| r.tag_key())
            .filter(|k| image.tags.contains(k));
        match list.iter_mut().find(|s| s.image.id == image.id) {
            Some(s) => s.tags.extend(tag.filter(|t| !s.tags.contains(t))),
            None => list.push(ToSave {
                image,
                tags: tag.into_iter().collect(),
            }),
        }
    }
    let mut w = ArchiveWriter::new(writer);
    w.file("oci-layout", OCI_LAYOUT.as_bytes())?;
    let mut index_entries = Vec::new();
    match format {
        ArchiveFormat::Oci => {
            for s in &list {
                let manifest = store.manifest(&s.image)?;
                w.stored_blob(store, &s.image.manifest)?;
                w.stored_blob(store, &s.image.id)?;
                for l in manifest.layers() {
                    w.stored_blob(store, &l.digest().to_string().parse()?)?;
                }
                let size = fs::metadata(store.blob_path(&s.image.manifest))
                    .map(|m| m.len())
                    .unwrap_or(0);
                index_entries.extend(index_entry(&s.image.manifest, size, &s.tags));
            }
        }
        ArchiveFormat::Docker => {
            let mut docker_manifest = Vec::new();
            let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
            for s in &list {
                w.stored_blob(store, &s.image.id)?;
                let mut layers = Vec::with_capacity(s.image.layers.len());
                for l in &s.image.layers {
                    let size = w.uncompressed_layer(store, l)?;
                    layers.push(LayerRecord {
                        blob: l.diff_id.clone(),
                        diff_id: l.diff_id.clone(),
                        media_type: LAYER_TAR.into(),
                        size,
                    });
                }
                let config_size = fs::metadata(store.blob_path(&s.image.id))
                    .map(|m| m.len())
                    .unwrap_or(0);
                let manifest = crate::import::manifest_json(&s.image.id, config_size, &layers)?;
                let manifest_digest = Digest::of(&manifest);
                w.blob(&manifest_digest, &manifest)?;
                index_entries.extend(index_entry(
                    &manifest_digest,
                    manifest.len() as u64,
                    &s.tags,
                ));
                docker_manifest.push(DockerEntry {
                    config: Extracted::blob_name(&s.image.id),
                    repo_tags: Some(s.tags.clone()),
                    layers: layers
                        .iter()
                        .map(|l| Extracted::blob_name(&l.blob))
                        .collect(),
                });
                for t in &s.tags {
                    if let Ok(r) = Reference::from_str(t) {
                        if let Some(tag) = r.tag() {
                            let top = s
                                .image
                                .layers
                                .last()
                                .map(|l| l.diff_id.hex().to_string())
                                .unwrap_or_default();
                            repositories
                                .entry(r.name())
                                .or_default()
                                .insert(tag.to_string(), top);
                        }
                    }
                }
            }
            let json = serde_json::to_vec(&docker_manifest)
                .map_err(|e| Error::malformed("manifest.json", e))?;
            w.file("manifest.json", &json)?;
            if !repositories.is_empty() {
                let json = serde_json::to_vec(&repositories)
                    .map_err(|e| Error::malformed("repositories", e))?;
                w.file("repositories", &json)?;
            }
        }
    }
    let index = serde_json::json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index_entries });
    let json = serde_json::to_vec(&index).map_err(|e| Error::malformed("index.json", e))?;
    w.file("index.json", &json)?;
    w.finish()
}

/// The index.json entries for a manifest: one per tag (the annotations carry the name),
/// or one bare entry for an untagged image.
fn index_entry(manifest: &Digest, size: u64, tags: &[String]) -> Vec<serde_json::Value> {
    let base = |annotations: Option<serde_json::Value>| {
        let mut v = serde_json::json!({ "mediaType": OCI_MANIFEST, "digest": manifest.to_string(), "size": size });
        if let Some(a) = annotations {
            v["annotations"] = a;
        }
        v
    };
    if tags.is_empty() {
        return vec![base(None)];
    }
    tags.iter()
        .map(|t| {
            // Docker's loader wants the fully qualified name in containerd's annotation.
            let full = match Reference::from_str(t) {
                Ok(r) if r.registry().is_none() => {
                    let repo = if r.repository().contains('/') {
                        r.repository().to_string()
                    } else {
                        format!("library/{}", r.repository())
                    };
                    format!("docker.io/{repo}:{}", r.tag().unwrap_or("latest"))
                }
                _ => t.clone(),
            };
            base(Some(
                serde_json::json!({ REF_NAME: t, CONTAINERD_NAME: full }),
            ))
        })
        .collect()
}

/// Writes tar entries with fixed metadata, each blob once.
struct ArchiveWriter<W: Write> {
    tar: tar::Builder<W>,
    written: HashSet<Digest>,
    /// Uncompressed sizes of the layers already written (docker-archive).
    layer_sizes: HashMap<Digest, u64>,
    dirs_done: bool,
}

impl<W: Write> ArchiveWriter<W> {
    fn new(w: W) -> Self {
        let mut tar = tar::Builder::new(w);
        tar.mode(tar::HeaderMode::Deterministic);
        ArchiveWriter {
            tar,
            written: HashSet::new(),
            layer_sizes: HashMap::new(),
            dirs_done: false,
        }
    }

    fn header(size: u64, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    fn dirs(&mut self) -> Result<()> {
        if !self.dirs_done {
            for d in ["blobs/", "blobs/sha256/"] {
                let mut h = Self::header(0, tar::EntryType::Directory);
                self.tar
                    .append_data(&mut h, d, io::empty())
                    .map_err(Error::io("write archive entry", d))?;
            }
            self.dirs_done = true;
        }
        Ok(())
    }

    fn file(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let mut h = Self::header(data.len() as u64, tar::EntryType::Regular);
        self.tar
            .append_data(&mut h, name, data)
            .map_err(Error::io("write archive entry", name))
    }

    fn blob(&mut self, d: &Digest, data: &[u8]) -> Result<()> {
        if self.written.insert(d.clone()) {
            self.dirs()?;
            self.file(&Extracted::blob_name(d), data)?;
        }
        Ok(())
    }

    /// Copies a stored blob into the archive, verifying it on the way.
    fn stored_blob(&mut self, store: &Store, d: &Digest) -> Result<()> {
        if self.written.contains(d) {
            return Ok(());
        }
        self.dirs()?;
        let f = store.open_blob(d)?;
        let size = f
            .metadata()
            .map_err(Error::io("stat", store.blob_path(d)))?
            .len();
        let name = Extracted::blob_name(d);
        let mut h = Self::header(size, tar::EntryType::Regular);
        let mut hashing = HashingReader::new(f);
        self.tar
            .append_data(&mut h, &name, &mut hashing)
            .map_err(Error::io("write archive entry", &name))?;
        let (actual, _) = hashing
            .finish()
            .map_err(Error::io("read", store.blob_path(d)))?;
        if actual != *d {
            return Err(Error::DigestMismatch {
                what: format!("stored blob {d}"),
                expected: d.to_string(),
                actual: actual.to_string(),
            });
        }
        self.written.insert(d.clone());
        Ok(())
    }

    /// Writes a layer uncompressed, as `blobs/sha256/<diff id>` (docker-archive layers are
    /// plain tars named by diff id); returns its size. The tar header needs the size
    /// first, so the layer is decompressed to a work file.
    fn uncompressed_layer(&mut self, store: &Store, l: &LayerRecord) -> Result<u64> {
        if let Some(&size) = self.layer_sizes.get(&l.diff_id) {
            return Ok(size);
        }
        self.dirs()?;
        let tmp = store.tmp_path("save-layer");
        let result = (|| {
            let stream = unpack::decompress(store.open_blob(&l.blob)?)
                .map_err(Error::io("decompress", store.blob_path(&l.blob)))?;
            let mut hashing = HashingReader::new(stream);
            let mut out = File::create(&tmp).map_err(Error::io("create", &tmp))?;
            io::copy(&mut hashing, &mut out).map_err(Error::io("decompress layer to", &tmp))?;
            let (diff_id, size) = hashing.finish().map_err(Error::io("decompress", &tmp))?;
            if diff_id != l.diff_id {
                return Err(Error::DigestMismatch {
                    what: format!("layer {} (uncompressed)", l.blob),
                    expected: l.diff_id.to_string(),
                    actual: diff_id.to_string(),
                });
            }
            let name = Extracted::blob_name(&l.diff_id);
            let mut h = Self::header(size, tar::EntryType::Regular);
            let f = File::open(&tmp).map_err(Error::io("open", &tmp))?;
            self.tar
                .append_data(&mut h, &name, f)
                .map_err(Error::io("write archive entry", &name))?;
            Ok(size)
        })();
        let _ = fs::remove_file(&tmp);
        let size = result?;
        self.written.insert(l.diff_id.clone());
        self.layer_sizes.insert(l.diff_id.clone(), size);
        debug!(layer = %l.diff_id, size, "saved layer");
        Ok(size)
    }

    fn finish(self) -> Result<()> {
        let mut w = self
            .tar
            .into_inner()
            .map_err(Error::io("finish archive", "(output)"))?;
        w.flush().map_err(Error::io("flush archive", "(output)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_are_cleaned_or_refused() {
        assert_eq!(entry_path("./blobs//sha256/ab").unwrap(), "blobs/sha256/ab");
        assert_eq!(entry_path("manifest.json").unwrap(), "manifest.json");
        for bad in ["../x", "a/../../x", "a/..", "/etc/passwd", "", "./"] {
            assert!(
                matches!(entry_path(bad), Err(Error::HostileEntry { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn link_targets_stay_inside() {
        assert_eq!(
            link_target("bbb/layer.tar", "../aaa/layer.tar").unwrap(),
            "aaa/layer.tar"
        );
        assert_eq!(link_target("a/b/c", "./d").unwrap(), "a/b/d");
        assert!(link_target("a/layer.tar", "../../etc/passwd").is_err());
        assert!(link_target("a/layer.tar", "/etc/passwd").is_err());
    }

    #[test]
    fn oci_tags_need_a_repository() {
        let ann = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        assert_eq!(oci_tag(Some(&ann(&[(REF_NAME, "latest")]))).unwrap(), None);
        let named = oci_tag(Some(&ann(&[(REF_NAME, "name:tag")])))
            .unwrap()
            .unwrap();
        assert_eq!(named.tag_key().unwrap(), "name:tag");
        let docker = oci_tag(Some(&ann(&[
            (REF_NAME, "latest"),
            (CONTAINERD_NAME, "docker.io/library/busybox:latest"),
        ])))
        .unwrap()
        .unwrap();
        assert_eq!(docker.tag_key().unwrap(), "busybox:latest");
        assert_eq!(oci_tag(None).unwrap(), None);
    }
}
