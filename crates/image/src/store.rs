//! The content-addressed image store.
//!
//! ```text
//! <root>/images/blobs/sha256/<hex>   every blob (manifests, configs, compressed layers), verified on write
//! <root>/images/layers/<hex>/        one unpacked directory per layer diff id, shared by all images
//! <root>/images/tmp/<pid>-<rand>     work in progress; renamed into place only when complete
//! <root>/images/images.db            SQLite: images, tags, layers, holds (WAL, safe across processes)
//! ```
//!
//! Nothing half-written ever becomes visible: blobs and layer directories are built under
//! `tmp/` and renamed into place once verified, and the database rows that point at them
//! are written in one transaction after that.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};

use oci_spec::image::{ImageConfiguration, ImageManifest};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use crate::digest::{Digest, HashingWriter};
use crate::error::{Error, Result};
use crate::limits::{self, DiskLimits, DISK_BUDGET};
use crate::reference::Reference;
use crate::unpack;

/// One layer of an image: the blob as stored and the diff id of its uncompressed tar.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LayerRecord {
    /// Digest of the blob as distributed (usually compressed).
    pub blob: Digest,
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: Digest,
    /// The layer media type from the manifest.
    pub media_type: String,
    /// Size of the blob in bytes.
    pub size: u64,
}

/// One step of an image's history ([`Store::history`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryStep {
    /// The image this step made: the newest step's is the image itself; older steps have
    /// none of their own.
    pub image: Option<Digest>,
    /// When (RFC 3339), if recorded.
    pub created: Option<String>,
    /// The command that made it.
    pub created_by: String,
    /// The size of the layer it made (0: none).
    pub size: u64,
    /// Its comment.
    pub comment: String,
}

/// An image in the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ImageRecord {
    /// The image id: the digest of its config, as Docker defines it.
    pub id: Digest,
    /// The digest of the manifest the image was stored with.
    pub manifest: Digest,
    /// Every `name:tag` that points at it.
    pub tags: Vec<String>,
    /// The config's `created` timestamp (RFC 3339), if it has one.
    pub created: Option<String>,
    /// The uncompressed size of all layers, in bytes.
    pub size: u64,
    /// Layers, bottom first.
    pub layers: Vec<LayerRecord>,
}

/// What `remove` did, in Docker's words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removed {
    /// A tag was removed.
    Untagged(String),
    /// An image (and its unshared blobs and layers) was deleted.
    Deleted(Digest),
}

/// A new image to commit to the store: every blob it names must already be stored.
pub struct NewImage<'a> {
    /// The manifest blob's digest.
    pub manifest: &'a Digest,
    /// The config blob's digest (the image id).
    pub config: &'a Digest,
    /// The parsed config.
    pub config_doc: &'a ImageConfiguration,
    /// Layers, bottom first.
    pub layers: &'a [LayerRecord],
}

/// How a store is opened: the settings a front end (or a test) chooses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// How much of the store's filesystem one blob, layer or archive load may fill.
    pub disk: DiskLimits,
}

/// The image store. Cheap to share between threads; safe to use from many processes.
pub struct Store {
    dir: PathBuf,
    db_path: PathBuf,
    db: Mutex<vessel_db::Db>,
    options: StoreOptions,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    manifest TEXT NOT NULL,
    created TEXT,
    size INTEGER NOT NULL,
    added TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tags (
    name TEXT PRIMARY KEY,
    image TEXT NOT NULL REFERENCES images(id)
);
CREATE TABLE IF NOT EXISTS image_layers (
    image TEXT NOT NULL REFERENCES images(id),
    idx INTEGER NOT NULL,
    blob TEXT NOT NULL,
    diff_id TEXT NOT NULL,
    media_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (image, idx)
);
CREATE INDEX IF NOT EXISTS image_layers_diff ON image_layers(diff_id);
CREATE INDEX IF NOT EXISTS image_layers_blob ON image_layers(blob);
CREATE TABLE IF NOT EXISTS holds (
    image TEXT NOT NULL REFERENCES images(id),
    holder TEXT NOT NULL,
    PRIMARY KEY (image, holder)
);
";

impl Store {
    /// Opens (creating if needed) the store under `<root>/images`, with default limits.
    pub fn open(root: &Path) -> Result<Store> {
        Store::open_with(root, StoreOptions::default())
    }

    /// Opens (creating if needed) the store under `<root>/images`.
    pub fn open_with(root: &Path, options: StoreOptions) -> Result<Store> {
        let dir = root.join("images");
        for sub in ["blobs/sha256", "layers", "tmp"] {
            fs::create_dir_all(dir.join(sub)).map_err(Error::io("create", dir.join(sub)))?;
        }
        // Layers hold the images' setuid binaries and device nodes: nobody but root may
        // reach them (the data root itself is traversable, see vessel_db::restrict).
        vessel_db::restrict(&dir, 0o700).map_err(Error::io("chmod 0700", dir.clone()))?;
        vessel_db::restrict(root, 0o711).map_err(Error::io("chmod 0711", root.to_path_buf()))?;
        let db_path = dir.join("images.db");
        let db_err = |source| Error::Database {
            path: db_path.clone(),
            source,
        };
        let db = vessel_db::open(&db_path, SCHEMA).map_err(db_err)?;
        let store = Store {
            dir,
            db_path,
            db: Mutex::new(db),
            options,
        };
        store.sweep_tmp();
        Ok(store)
    }

    /// Loads the database's schema into this connection, which the first statement would
    /// otherwise do: for a process that has time to spare before its first real one.
    pub fn warm(&self) {
        let _ = self.db().execute_batch("SELECT 1 FROM holds LIMIT 0");
    }

    fn db(&self) -> MutexGuard<'_, vessel_db::Db> {
        // A panic while holding the lock cannot leave SQLite inconsistent: keep going.
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn db_err(&self) -> impl FnOnce(rusqlite::Error) -> Error + '_ {
        move |source| Error::Database {
            path: self.db_path.clone(),
            source,
        }
    }

    /// Removes work files left by processes that no longer exist (a `kill -9` mid-pull).
    fn sweep_tmp(&self) {
        let Ok(entries) = fs::read_dir(self.dir.join("tmp")) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let pid = name
                .to_str()
                .and_then(|n| n.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
            if !alive {
                let p = e.path();
                let _ = fs::remove_dir_all(&p).or_else(|_| fs::remove_file(&p));
            }
        }
    }

    /// A fresh path under `tmp/`, named for this process so a crash can be swept.
    pub fn tmp_path(&self, what: &str) -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        self.dir
            .join("tmp")
            .join(format!("{}-{what}-{n}-{nanos}", std::process::id()))
    }

    /// The bytes one blob, layer or archive may write to the store's filesystem now.
    pub fn disk_budget(&self) -> Result<u64> {
        self.options.disk.budget(&self.dir.join("tmp"))
    }

    /// Where a blob lives (whether or not it is there).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(d.hex())
    }

    /// Whether the store holds the blob.
    pub fn has_blob(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Where a layer is unpacked (whether or not it is).
    pub fn layer_path(&self, diff_id: &Digest) -> PathBuf {
        self.dir.join("layers").join(diff_id.hex())
    }

    /// Stores a blob from a reader. With `expected`, the content must have that digest
    /// (and size, if given) or nothing is stored.
    pub fn put_blob(
        &self,
        reader: impl Read,
        expected: Option<(&Digest, Option<u64>)>,
    ) -> Result<(Digest, u64)> {
        self.put_blob_noting(reader, expected, &mut Vec::new())
    }

    /// Stores a blob as [`Store::put_blob`] does, adding its digest to `added` if this call
    /// is what put it in the store: what to [`Store::discard_unreferenced`] if the image it
    /// was for is not committed after all.
    pub fn put_blob_noting(
        &self,
        reader: impl Read,
        expected: Option<(&Digest, Option<u64>)>,
        added: &mut Vec<Digest>,
    ) -> Result<(Digest, u64)> {
        if let Some((d, _)) = expected {
            if self.has_blob(d) {
                return Ok((
                    d.clone(),
                    fs::metadata(self.blob_path(d))
                        .map(|m| m.len())
                        .unwrap_or(0),
                ));
            }
        }
        let budget = self.disk_budget()?;
        if let Some((d, Some(size))) = expected {
            if size > budget {
                return Err(Error::TooLarge {
                    what: format!("blob {d}"),
                    size,
                    limit: budget,
                    limit_name: DISK_BUDGET,
                });
            }
        }
        let tmp = self.tmp_path("blob");
        let result = self.write_blob(reader, &tmp, expected, budget);
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        let (digest, size, created) = result?;
        if created {
            added.push(digest.clone());
        }
        Ok((digest, size))
    }

    /// Removes those of `blobs` that no image refers to: blobs a failed load stored for
    /// images it did not commit. A blob another image (or another process's commit) uses
    /// is kept.
    pub fn discard_unreferenced(&self, blobs: &[Digest]) {
        let db = self.db();
        for d in blobs {
            let used: rusqlite::Result<bool> = db.query_row(
                "SELECT EXISTS(SELECT 1 FROM images WHERE id = ?1 OR manifest = ?1)
                     OR EXISTS(SELECT 1 FROM image_layers WHERE blob = ?1)",
                params![d.to_string()],
                |r| r.get(0),
            );
            // When in doubt (a database error), keep the blob: it is only cache.
            if let Ok(false) = used {
                let _ = fs::remove_file(self.blob_path(d));
            }
        }
    }

    fn write_blob(
        &self,
        reader: impl Read,
        tmp: &Path,
        expected: Option<(&Digest, Option<u64>)>,
        budget: u64,
    ) -> Result<(Digest, u64, bool)> {
        let file = File::create(tmp).map_err(Error::io("create", tmp))?;
        let mut w = HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, file));
        // One byte past the budget is enough to know the blob does not fit.
        let mut reader = reader.take(budget.saturating_add(1));
        std::io::copy(&mut reader, &mut w).map_err(Error::io("write blob", tmp))?;
        let (buf, digest, size) = w.finish();
        if size > budget {
            return Err(Error::TooLarge {
                what: expected.map_or_else(|| "blob".to_string(), |(d, _)| format!("blob {d}")),
                size,
                limit: budget,
                limit_name: DISK_BUDGET,
            });
        }
        let file = buf
            .into_inner()
            .map_err(|e| Error::io("write blob", tmp)(e.into_error()))?;
        if let Some((want, want_size)) = expected {
            if let Some(ws) = want_size {
                if ws != size {
                    return Err(Error::SizeMismatch {
                        what: format!("blob {want}"),
                        expected: ws,
                        actual: size,
                    });
                }
            }
            if *want != digest {
                return Err(Error::DigestMismatch {
                    what: "blob".into(),
                    expected: want.to_string(),
                    actual: digest.to_string(),
                });
            }
        }
        file.sync_all().map_err(Error::io("sync", tmp))?;
        let dest = self.blob_path(&digest);
        let existed = dest.is_file();
        fs::rename(tmp, &dest).map_err(Error::io("rename blob into", &dest))?;
        Ok((digest, size, !existed))
    }

    /// Stores a small blob held in memory.
    pub fn put_blob_bytes(&self, data: &[u8]) -> Result<Digest> {
        self.put_blob_bytes_noting(data, &mut Vec::new())
    }

    /// [`Store::put_blob_bytes`], noting a blob it added as [`Store::put_blob_noting`] does.
    pub fn put_blob_bytes_noting(&self, data: &[u8], added: &mut Vec<Digest>) -> Result<Digest> {
        let d = Digest::of(data);
        self.put_blob_noting(data, Some((&d, Some(data.len() as u64))), added)?;
        Ok(d)
    }

    /// Reads a whole blob of at most `limit` bytes (see [`crate::limits`]), verifying its
    /// digest (for manifests and configs).
    pub fn read_blob(&self, d: &Digest, limit: u64) -> Result<Vec<u8>> {
        let p = self.blob_path(d);
        if !p.is_file() {
            return Err(Error::BlobMissing(d.to_string()));
        }
        let data = limits::read_file_capped(&p, limit, &format!("blob {d}"))?;
        let actual = Digest::of(&data);
        if actual != *d {
            return Err(Error::DigestMismatch {
                what: format!("stored blob {}", p.display()),
                expected: d.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(data)
    }

    /// Opens a blob for streaming.
    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        let p = self.blob_path(d);
        File::open(&p).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::BlobMissing(d.to_string()),
            _ => Error::io("open", &p)(e),
        })
    }

    /// Unpacks a stored layer blob into its shared directory, unless it already is, and
    /// returns the directory. The unpacked content must hash to `diff_id` and fit the
    /// disk budget; a layer that fails leaves nothing behind.
    pub fn unpack_layer(&self, layer: &LayerRecord) -> Result<PathBuf> {
        let dest = self.layer_path(&layer.diff_id);
        if dest.is_dir() {
            return Ok(dest);
        }
        let blob = self.open_blob(&layer.blob)?;
        let budget = self.disk_budget()?;
        let tmp = self.tmp_path("layer");
        fs::create_dir(&tmp).map_err(Error::io("create", &tmp))?;
        let result = (|| {
            let out = unpack::unpack_layer_within(blob, &tmp, budget).map_err(|e| match e {
                Error::TooLarge {
                    what,
                    size,
                    limit,
                    limit_name,
                } => Error::TooLarge {
                    what: format!("layer {}: {what}", layer.blob),
                    size,
                    limit,
                    limit_name,
                },
                e => e,
            })?;
            if out.diff_id != layer.diff_id {
                return Err(Error::DigestMismatch {
                    what: format!("layer {} (uncompressed)", layer.blob),
                    expected: layer.diff_id.to_string(),
                    actual: out.diff_id.to_string(),
                });
            }
            fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .map_err(Error::io("chmod", &tmp))?;
            match fs::rename(&tmp, &dest) {
                Ok(()) => Ok(()),
                // Another process unpacked the same layer first: theirs is as good as ours.
                Err(_) if dest.is_dir() => {
                    let _ = fs::remove_dir_all(&tmp);
                    Ok(())
                }
                Err(e) => Err(Error::io("rename layer into", &dest)(e)),
            }
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result.map(|()| dest)
    }

    /// Records a complete image and points `tag` (if any) at it, in one transaction.
    pub fn commit(&self, image: NewImage<'_>, tag: Option<&Reference>) -> Result<ImageRecord> {
        for l in image.layers {
            if !self.has_blob(&l.blob) {
                return Err(Error::BlobMissing(l.blob.to_string()));
            }
        }
        for d in [image.manifest, image.config] {
            if !self.has_blob(d) {
                return Err(Error::BlobMissing(d.to_string()));
            }
        }
        let created = image.config_doc.created().clone();
        let size: u64 = image
            .layers
            .iter()
            .map(|l| dir_size(&self.layer_path(&l.diff_id)))
            .sum();
        let now = chrono::Utc::now().to_rfc3339();
        let mut db = self.db();
        let tx = db.transaction().map_err(self.db_err())?;
        tx.execute(
            "INSERT INTO images (id, manifest, created, size, added) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(id) DO UPDATE SET manifest = excluded.manifest",
            params![
                image.config.to_string(),
                image.manifest.to_string(),
                created,
                size as i64,
                now
            ],
        )
        .map_err(self.db_err())?;
        tx.execute(
            "DELETE FROM image_layers WHERE image = ?1",
            params![image.config.to_string()],
        )
        .map_err(self.db_err())?;
        for (i, l) in image.layers.iter().enumerate() {
            tx.execute(
                "INSERT INTO image_layers (image, idx, blob, diff_id, media_type, size) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![image.config.to_string(), i as i64, l.blob.to_string(), l.diff_id.to_string(), l.media_type, l.size as i64],
            )
            .map_err(self.db_err())?;
        }
        if let Some(key) = tag.and_then(Reference::tag_key) {
            tx.execute(
                "INSERT INTO tags (name, image) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET image = excluded.image",
                params![key, image.config.to_string()],
            )
            .map_err(self.db_err())?;
        }
        tx.commit().map_err(self.db_err())?;
        drop(db);
        // A re-tag can leave the image the tag pointed at before without tags; Docker keeps
        // those as dangling `<none>` images, and so do we.
        self.get(image.config)
    }

    /// Points `tag` at an existing image.
    pub fn tag(&self, image: &Digest, tag: &Reference) -> Result<()> {
        let key = tag
            .tag_key()
            .ok_or_else(|| Error::InvalidInput(format!("{tag} has no tag to set")))?;
        self.db()
            .execute(
                "INSERT INTO tags (name, image) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET image = excluded.image",
                params![key, image.to_string()],
            )
            .map_err(self.db_err())?;
        Ok(())
    }

    /// Finds an image by `name[:tag]`, `name@digest`, full id (`sha256:...`), or a unique id
    /// prefix of at least 4 hex digits.
    pub fn resolve(&self, name_or_id: &str) -> Result<ImageRecord> {
        let not_found = || Error::ImageNotFound(name_or_id.to_string());
        let db = self.db();
        let by_tag = Reference::from_str(name_or_id)
            .ok()
            .and_then(|r| r.tag_key().map(|k| (r, k)));
        if let Some((_, key)) = &by_tag {
            let id: Option<String> = db
                .query_row(
                    "SELECT image FROM tags WHERE name = ?1",
                    params![key],
                    |r| r.get(0),
                )
                .optional()
                .map_err(self.db_err())?;
            if let Some(id) = id {
                drop(db);
                return self.get(&id.parse()?);
            }
        }
        if let Ok(r) = Reference::from_str(name_or_id) {
            if let Some(d) = r.digest() {
                // name@digest: the manifest digest (or config digest) the image was stored with.
                let id: Option<String> = db
                    .query_row(
                        "SELECT id FROM images WHERE manifest = ?1 OR id = ?1",
                        params![d.to_string()],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(self.db_err())?;
                drop(db);
                return match id {
                    Some(id) => self.get(&id.parse()?),
                    None => Err(not_found()),
                };
            }
        }
        let hex = name_or_id.strip_prefix("sha256:").unwrap_or(name_or_id);
        if hex.len() >= 4 && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut stmt = db
                .prepare("SELECT id FROM images WHERE id LIKE ?1")
                .map_err(self.db_err())?;
            let ids: Vec<String> = stmt
                .query_map(
                    params![format!("sha256:{}%", hex.to_ascii_lowercase())],
                    |r| r.get(0),
                )
                .map_err(self.db_err())?
                .collect::<Result<_, _>>()
                .map_err(self.db_err())?;
            drop(stmt);
            drop(db);
            return match ids.as_slice() {
                [one] => self.get(&one.parse()?),
                [] => Err(not_found()),
                _ => Err(Error::InvalidInput(format!(
                    "image id prefix {name_or_id} is ambiguous"
                ))),
            };
        }
        Err(not_found())
    }

    /// Loads an image record by id.
    pub fn get(&self, id: &Digest) -> Result<ImageRecord> {
        let db = self.db();
        let row: Option<(String, Option<String>, i64)> = db
            .query_row(
                "SELECT manifest, created, size FROM images WHERE id = ?1",
                params![id.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(self.db_err())?;
        let (manifest, created, size) = row.ok_or_else(|| Error::ImageNotFound(id.to_string()))?;
        let mut stmt = db
            .prepare("SELECT name FROM tags WHERE image = ?1 ORDER BY name")
            .map_err(self.db_err())?;
        let tags = stmt
            .query_map(params![id.to_string()], |r| r.get(0))
            .map_err(self.db_err())?
            .collect::<Result<Vec<String>, _>>()
            .map_err(self.db_err())?;
        let mut stmt = db
            .prepare("SELECT blob, diff_id, media_type, size FROM image_layers WHERE image = ?1 ORDER BY idx")
            .map_err(self.db_err())?;
        let rows = stmt
            .query_map(params![id.to_string()], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(self.db_err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.db_err())?;
        let mut layers = Vec::with_capacity(rows.len());
        for (blob, diff_id, media_type, size) in rows {
            layers.push(LayerRecord {
                blob: blob.parse()?,
                diff_id: diff_id.parse()?,
                media_type,
                size: size as u64,
            });
        }
        Ok(ImageRecord {
            id: id.clone(),
            manifest: manifest.parse()?,
            tags,
            created,
            size: size as u64,
            layers,
        })
    }

    /// Every image, newest first.
    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        let ids: Vec<String> = {
            let db = self.db();
            let mut stmt = db
                .prepare("SELECT id FROM images ORDER BY created DESC, added DESC")
                .map_err(self.db_err())?;
            let ids = stmt
                .query_map([], |r| r.get(0))
                .map_err(self.db_err())?
                .collect::<Result<_, _>>()
                .map_err(self.db_err())?;
            ids
        };
        ids.iter().map(|id| self.get(&id.parse()?)).collect()
    }

    /// The image's parsed config.
    pub fn config(&self, image: &ImageRecord) -> Result<ImageConfiguration> {
        let data = self.read_blob(&image.id, limits::MAX_CONFIG)?;
        ImageConfiguration::from_reader(&data[..])
            .map_err(|e| Error::malformed(format!("image config {}", image.id), e))
    }

    /// The image's config document as stored (JSON).
    pub fn config_blob(&self, image: &ImageRecord) -> Result<Vec<u8>> {
        self.read_blob(&image.id, limits::MAX_CONFIG)
    }

    /// A field of the image's `config` object that the OCI's does not define (Docker's
    /// `Healthcheck`, `OnBuild`, `Shell`), as JSON; `None` if unset.
    pub fn config_field(
        &self,
        image: &ImageRecord,
        field: &str,
    ) -> Result<Option<serde_json::Value>> {
        let data = self.read_blob(&image.id, limits::MAX_CONFIG)?;
        let v: serde_json::Value = serde_json::from_slice(&data)
            .map_err(|e| Error::malformed(format!("image config {}", image.id), e))?;
        Ok(v.get("config")
            .and_then(|c| c.get(field))
            .filter(|f| !f.is_null())
            .cloned())
    }

    /// How the image was made (its config's history), newest step first, each with the
    /// size of the layer it made (0 for a step that made none). The newest step is the
    /// image's own; older ones have no image of their own (Docker's `<missing>`).
    pub fn history(&self, image: &ImageRecord) -> Result<Vec<HistoryStep>> {
        let config = self.config(image)?;
        let history = config.history().clone().unwrap_or_default();
        let mut layer = image.layers.len();
        let mut out = Vec::with_capacity(history.len());
        for (i, h) in history.iter().enumerate().rev() {
            let empty = h.empty_layer().unwrap_or(false);
            let size = if !empty && layer > 0 {
                layer -= 1;
                image.layers[layer].size
            } else {
                0
            };
            out.push(HistoryStep {
                image: (i + 1 == history.len()).then(|| image.id.clone()),
                created: h.created().clone(),
                created_by: h.created_by().clone().unwrap_or_default(),
                size,
                comment: h.comment().clone().unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// The image's parsed manifest.
    pub fn manifest(&self, image: &ImageRecord) -> Result<ImageManifest> {
        let data = self.read_blob(&image.manifest, limits::MAX_MANIFEST)?;
        ImageManifest::from_reader(&data[..])
            .map_err(|e| Error::malformed(format!("image manifest {}", image.manifest), e))
    }

    /// The image's unpacked layer directories, bottom first, unpacking any not yet unpacked.
    pub fn layer_dirs(&self, image: &ImageRecord) -> Result<Vec<PathBuf>> {
        image.layers.iter().map(|l| self.unpack_layer(l)).collect()
    }

    /// Marks an image as used by `holder` (a container or VM id): `rmi` refuses it then.
    pub fn hold(&self, image: &Digest, holder: &str) -> Result<()> {
        self.db()
            .execute(
                "INSERT OR IGNORE INTO holds (image, holder) VALUES (?1, ?2)",
                params![image.to_string(), holder],
            )
            .map_err(self.db_err())?;
        Ok(())
    }

    /// Drops every hold of `holder`.
    pub fn release(&self, holder: &str) -> Result<()> {
        self.db()
            .execute("DELETE FROM holds WHERE holder = ?1", params![holder])
            .map_err(self.db_err())?;
        Ok(())
    }

    /// Removes a tag, or an image given by id. The image itself is deleted, with every blob
    /// and layer no other image shares, once no tag points at it; an image held by an
    /// instance is refused unless `force`.
    pub fn remove(&self, name_or_id: &str, force: bool) -> Result<Vec<Removed>> {
        let image = self.resolve(name_or_id)?;
        let by_tag = Reference::from_str(name_or_id)
            .ok()
            .and_then(|r| r.tag_key())
            .filter(|k| image.tags.contains(k));
        let mut out = Vec::new();
        let mut db = self.db();
        let holders: Vec<String> = {
            let mut stmt = db
                .prepare("SELECT holder FROM holds WHERE image = ?1")
                .map_err(self.db_err())?;
            let h = stmt
                .query_map(params![image.id.to_string()], |r| r.get(0))
                .map_err(self.db_err())?
                .collect::<Result<_, _>>()
                .map_err(self.db_err())?;
            h
        };
        let tx = db.transaction().map_err(self.db_err())?;
        let untag: Vec<String> = match &by_tag {
            // Removing one of several tags only untags.
            Some(k) => vec![k.clone()],
            None if image.tags.len() > 1 && !force => {
                return Err(Error::InUse(
                    image.id.short().to_string(),
                    format!(
                        "referenced by {} tags ({}); remove by tag or use --force",
                        image.tags.len(),
                        image.tags.join(", ")
                    ),
                ))
            }
            None => image.tags.clone(),
        };
        let remaining = image.tags.len() - untag.len();
        if remaining == 0 && !holders.is_empty() && !force {
            return Err(Error::InUse(
                name_or_id.to_string(),
                format!(
                    "used by {} (remove it first, or use --force)",
                    holders.join(", ")
                ),
            ));
        }
        for t in &untag {
            tx.execute("DELETE FROM tags WHERE name = ?1", params![t])
                .map_err(self.db_err())?;
            out.push(Removed::Untagged(t.clone()));
        }
        let mut dead_blobs = Vec::new();
        let mut dead_layers = Vec::new();
        if remaining == 0 && (holders.is_empty() || force) {
            let id = image.id.to_string();
            tx.execute("DELETE FROM holds WHERE image = ?1", params![id])
                .map_err(self.db_err())?;
            tx.execute("DELETE FROM image_layers WHERE image = ?1", params![id])
                .map_err(self.db_err())?;
            tx.execute("DELETE FROM images WHERE id = ?1", params![id])
                .map_err(self.db_err())?;
            for l in &image.layers {
                let blob_used: i64 = tx
                    .query_row(
                        "SELECT COUNT(*) FROM image_layers WHERE blob = ?1",
                        params![l.blob.to_string()],
                        |r| r.get(0),
                    )
                    .map_err(self.db_err())?;
                if blob_used == 0 {
                    dead_blobs.push(l.blob.clone());
                }
                let diff_used: i64 = tx
                    .query_row(
                        "SELECT COUNT(*) FROM image_layers WHERE diff_id = ?1",
                        params![l.diff_id.to_string()],
                        |r| r.get(0),
                    )
                    .map_err(self.db_err())?;
                if diff_used == 0 {
                    dead_layers.push(l.diff_id.clone());
                }
            }
            let manifest_used: i64 = tx
                .query_row(
                    "SELECT COUNT(*) FROM images WHERE manifest = ?1",
                    params![image.manifest.to_string()],
                    |r| r.get(0),
                )
                .map_err(self.db_err())?;
            if manifest_used == 0 {
                dead_blobs.push(image.manifest.clone());
            }
            dead_blobs.push(image.id.clone());
            out.push(Removed::Deleted(image.id.clone()));
        }
        tx.commit().map_err(self.db_err())?;
        drop(db);
        // Files go after the rows: a crash here leaves unreferenced files, never rows
        // pointing at missing files.
        for b in dead_blobs {
            let _ = fs::remove_file(self.blob_path(&b));
        }
        for l in dead_layers {
            let p = self.layer_path(&l);
            if p.exists() {
                // Rename first so a half-removed tree is never seen as a complete layer.
                let tmp = self.tmp_path("rm");
                if fs::rename(&p, &tmp).is_ok() {
                    let _ = fs::remove_dir_all(&tmp);
                }
            }
        }
        Ok(out)
    }
}

/// Bytes used by the regular files under `p` (hard links counted once).
pub fn dir_size(p: &Path) -> u64 {
    use std::collections::HashSet;
    use std::os::unix::fs::MetadataExt;
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() && (m.nlink() == 1 || seen.insert((m.dev(), m.ino()))) {
                total += m.len();
            }
        }
    }
    total
}

/// Writes `data` to `path` atomically (temp file in the same directory, then rename).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).map_err(Error::io("create temp file in", dir))?;
    tmp.write_all(data)
        .map_err(Error::io("write", tmp.path().to_path_buf()))?;
    tmp.persist(path)
        .map_err(|e| Error::io("rename into", path)(e.error))?;
    Ok(())
}
