//! Image references: `[registry/]repository[:tag][@digest]`, parsed as Docker does.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::error::Error;

/// The tag used when a reference names none.
pub const DEFAULT_TAG: &str = "latest";

/// A parsed image reference.
///
/// `busybox` is `busybox:latest`; `docker.io/library/busybox` is the same image (Docker's
/// canonical prefix is dropped so local names stay short); `127.0.0.1:5000/app:1` keeps its
/// registry host, which is where `pull` and `push` go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    registry: Option<String>,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// The registry host (`host[:port]`), if the reference names one.
    pub fn registry(&self) -> Option<&str> {
        self.registry.as_deref()
    }

    /// The repository path without registry (`library/busybox`, `app`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, `latest` when none was given and no digest was either.
    pub fn tag(&self) -> Option<&str> {
        match (&self.tag, &self.digest) {
            (Some(t), _) => Some(t),
            (None, None) => Some(DEFAULT_TAG),
            (None, Some(_)) => None,
        }
    }

    /// The pinned digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `registry/repository` or `repository`: what `vessel images` shows as REPOSITORY.
    pub fn name(&self) -> String {
        match &self.registry {
            Some(r) => format!("{r}/{}", self.repository),
            None => self.repository.clone(),
        }
    }

    /// The key under which a tag is stored: `name:tag`, or `None` for a digest-only reference.
    pub fn tag_key(&self) -> Option<String> {
        self.tag().map(|t| format!("{}:{t}", self.name()))
    }

    /// A copy of this reference with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }
}

fn valid_component(c: &str) -> bool {
    // Docker: [a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*
    !c.is_empty()
        && c.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
        && c.as_bytes()[0].is_ascii_alphanumeric()
        && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && (t.as_bytes()[0].is_ascii_alphanumeric() || t.as_bytes()[0] == b'_')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |reason| Error::InvalidReference {
            reference: s.to_string(),
            reason,
        };
        if s.is_empty() {
            return Err(bad("empty"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (
                r,
                Some(
                    d.parse::<Digest>()
                        .map_err(|_| bad("digest is not sha256:<64 hex>"))?,
                ),
            ),
            None => (s, None),
        };
        // A ':' after the last '/' separates the tag; one before it is a registry port.
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(bad(
                    "tag must be 1-128 of [A-Za-z0-9_.-], not starting with . or -",
                ));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                if !valid_host(first) {
                    return Err(bad("registry host has invalid characters"));
                }
                (Some(first.to_string()), path.to_string())
            }
            _ => (None, name.to_string()),
        };
        if !repository.split('/').all(valid_component) {
            return Err(bad(
                "repository must be lowercase [a-z0-9._-] components separated by /",
            ));
        }
        // docker.io/library/x and x name the same image.
        let (registry, repository) = match registry.as_deref() {
            Some("docker.io" | "index.docker.io") => (
                None,
                repository
                    .strip_prefix("library/")
                    .map(str::to_string)
                    .unwrap_or(repository),
            ),
            _ => (registry, repository),
        };
        Ok(Reference {
            registry,
            repository,
            tag: tag.map(str::to_string),
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        } else if self.digest.is_none() {
            write!(f, ":{DEFAULT_TAG}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn defaults_tag_latest() {
        let x = r("busybox");
        assert_eq!(x.registry(), None);
        assert_eq!(x.tag_key().unwrap(), "busybox:latest");
        assert_eq!(x.to_string(), "busybox:latest");
    }

    #[test]
    fn registry_with_port_is_not_a_tag() {
        let x = r("127.0.0.1:5000/busybox");
        assert_eq!(x.registry(), Some("127.0.0.1:5000"));
        assert_eq!(x.repository(), "busybox");
        assert_eq!(x.tag(), Some("latest"));
        let y = r("localhost:5000/a/b:v1.2");
        assert_eq!(y.registry(), Some("localhost:5000"));
        assert_eq!(y.repository(), "a/b");
        assert_eq!(y.tag(), Some("v1.2"));
    }

    #[test]
    fn docker_hub_prefix_is_dropped() {
        assert_eq!(
            r("docker.io/library/busybox:1").tag_key().unwrap(),
            "busybox:1"
        );
        assert_eq!(r("docker.io/user/app").name(), "user/app");
    }

    #[test]
    fn digest_only() {
        let d = Digest::of(b"x");
        let x = r(&format!("reg.example:5000/app@{d}"));
        assert_eq!(x.tag(), None);
        assert_eq!(x.digest(), Some(&d));
        assert_eq!(x.tag_key(), None);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "UPPER",
            "a:",
            "a:-x",
            "a@sha256:zz",
            "a//b",
            "-a",
            "a b",
            "a/../b",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad:?} accepted");
        }
    }
}
