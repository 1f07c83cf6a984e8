//! The build cache: one small JSON file per step key under `<data root>/build-cache/`,
//! naming the layer the step produced (or none). A key is a digest of everything the step
//! depends on (see `builder`), so an entry is never updated, only written once; a layer
//! that was removed from the store since makes its entry a miss.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vessel_image::{Digest, LayerRecord, Store};

/// The cache directory of a data root.
pub struct Cache {
    dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    layer: Option<StoredLayer>,
}

#[derive(Serialize, Deserialize)]
struct StoredLayer {
    blob: String,
    diff_id: String,
    media_type: String,
    size: u64,
}

/// A cache hit: the step's layer, if it made one.
pub type Hit = Option<LayerRecord>;

impl Cache {
    /// The cache of data root `root`.
    pub fn new(root: &Path) -> Cache {
        Cache {
            dir: root.join("build-cache"),
        }
    }

    /// The result recorded for `key`, if its layer is still in the store.
    pub fn get(&self, store: &Store, key: &str) -> Option<Hit> {
        let data = std::fs::read(self.dir.join(key)).ok()?;
        if data.len() > 64 << 10 {
            return None;
        }
        let e: Entry = serde_json::from_slice(&data).ok()?;
        let Some(l) = e.layer else {
            return Some(None);
        };
        let layer = LayerRecord {
            blob: l.blob.parse::<Digest>().ok()?,
            diff_id: l.diff_id.parse::<Digest>().ok()?,
            media_type: l.media_type,
            size: l.size,
        };
        let present = store.has_blob(&layer.blob) && store.layer_path(&layer.diff_id).is_dir();
        present.then_some(Some(layer))
    }

    /// Records what step `key` produced. Best effort: a cache that cannot be written only
    /// costs a rebuild.
    pub fn put(&self, key: &str, layer: Option<&LayerRecord>) {
        let e = Entry {
            layer: layer.map(|l| StoredLayer {
                blob: l.blob.to_string(),
                diff_id: l.diff_id.to_string(),
                media_type: l.media_type.clone(),
                size: l.size,
            }),
        };
        let written = vessel_db::private_dir(&self.dir, 0o700)
            .map_err(|e| e.to_string())
            .and_then(|()| serde_json::to_vec(&e).map_err(|e| e.to_string()))
            .and_then(|data| {
                vessel_image::store::write_atomic(&self.dir.join(key), &data)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            tracing::warn!(key, error = %e, "could not record a build cache entry");
        }
    }
}
