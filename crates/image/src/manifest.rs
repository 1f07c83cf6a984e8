//! Manifest documents: telling image manifests from indexes, checking the media types
//! inside them, and picking the linux/amd64 image of an index. Shared by registry pulls
//! and archive loads; no I/O here, so the parser can be fuzzed on its own.

use oci_spec::image::{Arch, ImageIndex, ImageManifest, Os};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::unpack::Compression;

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list (Docker's multi-platform index).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image config media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config media type.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// What a manifest document turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A single-platform image manifest (OCI or Docker schema 2).
    Manifest,
    /// A multi-platform index (OCI index or Docker manifest list).
    Index,
}

/// The fields every manifest flavour shares, enough to tell them apart.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Versioned {
    schema_version: Option<u32>,
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    config: Option<serde_json::Value>,
}

/// Classifies a manifest body by its `mediaType` (or, as OCI allows it to be absent, by
/// its shape), returning the kind and the media type to send it back with.
pub fn classify(body: &[u8], what: &str) -> Result<(Kind, &'static str)> {
    let v: Versioned = serde_json::from_slice(body).map_err(|e| Error::malformed(what, e))?;
    match v.media_type.as_deref() {
        Some(OCI_MANIFEST) => Ok((Kind::Manifest, OCI_MANIFEST)),
        Some(DOCKER_MANIFEST) => Ok((Kind::Manifest, DOCKER_MANIFEST)),
        Some(OCI_INDEX) => Ok((Kind::Index, OCI_INDEX)),
        Some(DOCKER_MANIFEST_LIST) => Ok((Kind::Index, DOCKER_MANIFEST_LIST)),
        Some(other) => Err(Error::UnknownMediaType(other.to_string())),
        None => {
            if v.schema_version != Some(2) {
                return Err(Error::malformed(
                    what,
                    "no mediaType and schemaVersion is not 2 (Docker schema 1 is not supported)",
                ));
            }
            match (v.manifests.is_some(), v.config.is_some()) {
                (true, false) => Ok((Kind::Index, OCI_INDEX)),
                (false, true) => Ok((Kind::Manifest, OCI_MANIFEST)),
                _ => Err(Error::malformed(
                    what,
                    "neither an image manifest nor an index",
                )),
            }
        }
    }
}

/// Checks the media types inside a parsed image manifest.
pub fn check_manifest(m: &ImageManifest) -> Result<()> {
    let config_type = m.config().media_type().to_string();
    if config_type != OCI_CONFIG && config_type != DOCKER_CONFIG {
        return Err(Error::UnknownMediaType(config_type));
    }
    for l in m.layers() {
        let t = l.media_type().to_string();
        if Compression::from_media_type(&t).is_none() {
            return Err(Error::UnknownMediaType(t));
        }
    }
    Ok(())
}

/// The linux/amd64 entry of an index (vessel runs amd64 guests and containers only).
pub fn select_platform(index: &ImageIndex, name: &str) -> Result<(Digest, u64)> {
    let entry = index
        .manifests()
        .iter()
        .find(|d| {
            d.platform()
                .as_ref()
                .is_some_and(|p| *p.os() == Os::Linux && *p.architecture() == Arch::Amd64)
        })
        .ok_or_else(|| Error::NoMatchingPlatform(name.to_string()))?;
    let t = entry.media_type().to_string();
    if t != OCI_MANIFEST && t != DOCKER_MANIFEST {
        return Err(Error::UnknownMediaType(t));
    }
    Ok((parse_digest(entry.digest().as_ref())?, entry.size()))
}

pub(crate) fn parse_digest(s: &str) -> Result<Digest> {
    s.parse()
}

/// Parses a manifest body the way a pull does: classify it, then parse and check an image
/// manifest, or parse an index and select its linux/amd64 entry. Returns the digest of the
/// selected entry for an index, `None` for an image manifest.
pub fn parse(body: &[u8], what: &str) -> Result<Option<(Digest, u64)>> {
    crate::limits::check_len(body.len() as u64, crate::limits::MAX_MANIFEST, what)?;
    match classify(body, what)?.0 {
        Kind::Manifest => {
            let m = ImageManifest::from_reader(body).map_err(|e| Error::malformed(what, e))?;
            check_manifest(&m)?;
            Ok(None)
        }
        Kind::Index => {
            let i = ImageIndex::from_reader(body).map_err(|e| Error::malformed(what, e))?;
            select_platform(&i, what).map(Some)
        }
    }
}
