//! `vessel pull` and `vessel push`: images to and from registries, over the OCI
//! distribution API (Docker Registry HTTP API v2).
//!
//! The transfer itself is `oci-client`'s (it is async; each call here builds a small tokio
//! runtime and blocks on it, so the public API stays synchronous). Everything that decides
//! whether content is trustworthy is ours: every manifest, config and layer is checked
//! against the digest it was announced with before the store accepts it, media types are
//! checked against the ones vessel understands, and the image is committed (and tagged)
//! only once every blob is stored and every layer unpacked with the diff id its config
//! names. A pull that fails leaves no image and no tag; complete, verified blobs it
//! already stored stay as cache for the next attempt, as Docker's do.
//!
//! Manifests are stored byte for byte as the registry served them, so an image's manifest
//! digest is the registry's, and `push` sends those same bytes back.

use std::fs::File;
use std::io::{self, Read};
use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciEnvelope, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, RegistryOperation};
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use tracing::{debug, info_span};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::limits::{check_len, MAX_CONFIG, MAX_MANIFEST};
use crate::manifest::{check_manifest, classify, parse_digest, select_platform, Kind};
pub use crate::manifest::{
    DOCKER_CONFIG, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST,
};
use crate::progress::Progress;
use crate::reference::Reference;
use crate::store::{ImageRecord, LayerRecord, NewImage, Store};

/// Every manifest type a pull accepts, as sent in `Accept`.
const ACCEPTED_MANIFESTS: &[&str] = &[
    OCI_INDEX,
    DOCKER_MANIFEST_LIST,
    OCI_MANIFEST,
    DOCKER_MANIFEST,
];

/// Blobs are uploaded in pieces of this size (one PATCH request each).
const UPLOAD_CHUNK: usize = 4 << 20;

/// How much of an error response's body is read (for its message).
const ERROR_BODY_LIMIT: u64 = 64 << 10;

/// How to talk to a registry. Credentials and `--insecure` come from the caller (the CLI
/// reads flags and environment); the library reads neither.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// `(username, password)`: used as HTTP basic credentials, or exchanged for a bearer
    /// token when the registry asks for one. `None` is anonymous access.
    pub auth: Option<(String, String)>,
    /// Use plain HTTP instead of HTTPS. Loopback registries (`localhost`, `127.0.0.0/8`,
    /// `::1`) always use plain HTTP, as Docker treats them as insecure.
    pub insecure: bool,
    /// Without `auth`, use the credentials `vessel login` (or `docker login`) stored for
    /// the registry ([`crate::credentials`]), if any.
    pub stored_credentials: bool,
}

/// Whether `host` (`name[:port]`, `[v6]:port`) is a loopback registry, which Docker (and
/// vessel) speak plain HTTP to without being told.
pub fn is_loopback_registry(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if host.matches(':').count() == 1 {
        host.split(':').next().unwrap_or(host)
    } else {
        host
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// One registry conversation: a runtime, a client and the credentials.
struct Session {
    rt: tokio::runtime::Runtime,
    client: Client,
    /// For manifest GETs, which oci-client would buffer whole, at any size.
    http: reqwest::Client,
    auth: RegistryAuth,
    /// The registry host as the user named it (for messages).
    host: String,
    /// Whether we speak plain HTTP to it.
    plain: bool,
}

impl Session {
    fn new(reference: &Reference, opts: &RegistryOptions) -> Result<Session> {
        let host = reference.registry().unwrap_or("docker.io").to_string();
        let plain = opts.insecure || is_loopback_registry(&host);
        let config = ClientConfig {
            protocol: if plain {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            // We pick the platform ourselves, from the raw index.
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(30)),
            read_timeout: Some(Duration::from_secs(300)),
            ..ClientConfig::default()
        };
        let client = Client::try_from(config).map_err(|e| Error::Registry {
            registry: host.clone(),
            reason: explain(&e, opts.auth.is_some()),
        })?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(300))
            .user_agent(concat!("vessel/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Registry {
                registry: host.clone(),
                reason: explain(&OciDistributionError::RequestError(e), false),
            })?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("vessel-registry")
            .enable_all()
            .build()
            .map_err(Error::io("start registry client runtime", "(tokio)"))?;
        let stored = match &opts.auth {
            None if opts.stored_credentials => crate::credentials::lookup(&host)?,
            _ => None,
        };
        let auth = match (&opts.auth, stored) {
            (Some((user, pass)), _) => RegistryAuth::Basic(user.clone(), pass.clone()),
            (None, Some(c)) => RegistryAuth::Basic(c.username, c.secret),
            (None, None) => RegistryAuth::Anonymous,
        };
        Ok(Session {
            rt,
            client,
            http,
            auth,
            host,
            plain,
        })
    }

    /// `oci-client`'s reference for `r`, by digest if `digest` is given, else by tag.
    fn remote(&self, r: &Reference, digest: Option<&Digest>) -> oci_client::Reference {
        let registry = r.registry().unwrap_or("docker.io").to_string();
        // Docker Hub's official images live under library/, which local names leave out.
        let repository = if r.registry().is_none() && !r.repository().contains('/') {
            format!("library/{}", r.repository())
        } else {
            r.repository().to_string()
        };
        match digest.or(r.digest()) {
            Some(d) => oci_client::Reference::with_digest(registry, repository, d.to_string()),
            None => oci_client::Reference::with_tag(
                registry,
                repository,
                r.tag().unwrap_or("latest").to_string(),
            ),
        }
    }

    fn err(&self, what: &str, e: OciDistributionError) -> Error {
        match e {
            OciDistributionError::DigestError(DigestError::VerificationError {
                expected,
                actual,
            }) => Error::DigestMismatch {
                what: what.to_string(),
                expected,
                actual,
            },
            e => {
                let mut reason = format!(
                    "{what}: {}",
                    explain(&e, !matches!(self.auth, RegistryAuth::Anonymous))
                );
                if !self.plain
                    && matches!(&e, OciDistributionError::RequestError(re) if re.is_connect() || re.is_request())
                {
                    reason.push_str(" (for a plain-HTTP registry, use --insecure)");
                }
                Error::Registry {
                    registry: self.host.clone(),
                    reason,
                }
            }
        }
    }

    /// Authenticates for `op` up front, so that bad credentials or an unreachable registry
    /// fail here with their own message rather than as a confusing 401 later.
    fn login(&self, target: &oci_client::Reference, op: RegistryOperation) -> Result<()> {
        self.rt
            .block_on(self.client.auth(target, &self.auth, op))
            .map(|_| ())
            .map_err(|e| self.err("authenticate", e))
    }

    /// GETs the manifest `target` names, refusing it once it passes [`MAX_MANIFEST`]
    /// bytes: oci-client's own manifest pull buffers the whole body first, whatever a
    /// (hostile) registry sends. oci-client still does the authentication.
    fn manifest(&self, target: &oci_client::Reference, what: &str) -> Result<Vec<u8>> {
        let token = self
            .rt
            .block_on(
                self.client
                    .auth(target, &self.auth, RegistryOperation::Pull),
            )
            .map_err(|e| self.err(what, e))?;
        let url = format!(
            "{}://{}/v2/{}/manifests/{}",
            if self.plain { "http" } else { "https" },
            target.resolve_registry(),
            target.repository(),
            target.digest().or(target.tag()).unwrap_or("latest")
        );
        debug!(%url, "GET manifest");
        let mut request = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, ACCEPTED_MANIFESTS.join(", "));
        request = match (token, &self.auth) {
            (Some(token), _) => request.bearer_auth(token),
            (None, RegistryAuth::Basic(user, pass)) => request.basic_auth(user, Some(pass)),
            (None, _) => request,
        };
        let fail = |e: reqwest::Error| self.err(what, OciDistributionError::RequestError(e));
        self.rt.block_on(async {
            let mut response = request.send().await.map_err(fail)?;
            let status = response.status();
            // A body claimed over the limit is refused unread; one that only turns out
            // to be is refused as soon as it passes the limit.
            let limit = if status.is_success() {
                MAX_MANIFEST
            } else {
                ERROR_BODY_LIMIT
            };
            if let Some(claimed) = response.content_length() {
                if status.is_success() {
                    check_len(claimed, limit, what)?;
                }
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(fail)? {
                if body.len() as u64 + chunk.len() as u64 > limit {
                    if status.is_success() {
                        check_len(body.len() as u64 + chunk.len() as u64, limit, what)?;
                    }
                    break; // an error's body: its start says enough
                }
                body.extend_from_slice(&chunk);
            }
            match status.as_u16() {
                200 => Ok(body),
                401 => Err(self.err(what, OciDistributionError::UnauthorizedError { url })),
                code if status.is_client_error() => Err(self.err(
                    what,
                    match serde_json::from_slice::<OciEnvelope>(&body) {
                        Ok(envelope) => OciDistributionError::RegistryError { envelope, url },
                        Err(_) => OciDistributionError::ServerError {
                            code,
                            url,
                            message: String::from_utf8_lossy(&body).into_owned(),
                        },
                    },
                )),
                code => Err(self.err(
                    what,
                    OciDistributionError::ServerError {
                        code,
                        url,
                        message: String::from_utf8_lossy(&body).into_owned(),
                    },
                )),
            }
        })
    }

    /// Streams a blob into `sink`, reporting progress, stopping at `size` bytes.
    fn download<T>(
        &self,
        target: &oci_client::Reference,
        digest: &Digest,
        size: u64,
        progress: &dyn Progress,
        id: &str,
        sink: impl FnOnce(&mut dyn Read) -> Result<T>,
    ) -> Result<T> {
        let what = format!("blob {digest}");
        let d = digest.to_string();
        let stream = self
            .rt
            .block_on(self.client.pull_blob_stream(target, d.as_str()))
            .map_err(|e| self.err(&what, e))?;
        let mut reader = BlobReader {
            rt: &self.rt,
            stream: stream.stream,
            buf: Bytes::new(),
            read: 0,
            size,
            digest,
            host: &self.host,
            progress,
            id,
            failure: None,
        };
        let result = sink(&mut reader);
        match (result, reader.failure) {
            (Ok(v), None) => Ok(v),
            // The stream's own error says more than the store's "write blob" wrapper.
            (_, Some(f)) => Err(f),
            (Err(e), None) => Err(e),
        }
    }

    fn blob_exists(&self, target: &oci_client::Reference, digest: &Digest) -> Result<bool> {
        self.rt
            .block_on(self.client.blob_exists(target, &digest.to_string()))
            .map_err(|e| self.err(&format!("check blob {digest}"), e))
    }

    /// Uploads a blob from `reader`: the client consumes chunks on the runtime's threads
    /// while this thread reads the file and reports progress.
    fn upload(
        &self,
        target: &oci_client::Reference,
        digest: &Digest,
        size: u64,
        mut reader: impl Read,
        progress: &dyn Progress,
        id: &str,
    ) -> Result<()> {
        let what = format!("upload blob {digest}");
        let (tx, rx) =
            tokio::sync::mpsc::channel::<std::result::Result<Bytes, OciDistributionError>>(2);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let client = self.client.clone();
        let remote = target.clone();
        let d = digest.to_string();
        let task = self.rt.spawn(async move {
            client
                .push_blob_stream(&remote, stream, &d, Some(size))
                .await
        });
        let mut read_error = None;
        loop {
            let mut buf = vec![0u8; UPLOAD_CHUNK];
            let n = match read_full(&mut reader, &mut buf) {
                Ok(n) => n,
                Err(e) => {
                    // Poison the upload so a truncated blob is never committed remotely.
                    let _ = tx.blocking_send(Err(OciDistributionError::IoError(io::Error::new(
                        e.kind(),
                        e.to_string(),
                    ))));
                    read_error = Some(e);
                    break;
                }
            };
            if n == 0 {
                break;
            }
            buf.truncate(n);
            if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                break; // the upload ended early; its error is reported below
            }
            progress.advance(id, n as u64);
        }
        drop(tx);
        let joined = self.rt.block_on(task);
        if let Some(e) = read_error {
            return Err(Error::Io {
                op: "read blob for upload",
                path: digest.to_string().into(),
                source: e,
            });
        }
        match joined {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.err(&what, e)),
            Err(e) => Err(Error::Registry {
                registry: self.host.clone(),
                reason: format!("{what}: upload task failed: {e}"),
            }),
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A blocking `Read` over a blob download stream. It refuses to read past the announced
/// size (a hostile registry cannot fill the disk) and keeps the real cause of a failed
/// stream so the caller can report it instead of a generic I/O error.
struct BlobReader<'a> {
    rt: &'a tokio::runtime::Runtime,
    stream: futures_util::stream::BoxStream<'static, io::Result<Bytes>>,
    buf: Bytes,
    read: u64,
    size: u64,
    digest: &'a Digest,
    host: &'a str,
    progress: &'a dyn Progress,
    id: &'a str,
    failure: Option<Error>,
}

impl Read for BlobReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.buf.is_empty() {
            match self.rt.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(b)) => {
                    self.read += b.len() as u64;
                    if self.read > self.size {
                        self.failure = Some(Error::SizeMismatch {
                            what: format!("blob {}", self.digest),
                            expected: self.size,
                            actual: self.read,
                        });
                        return Err(io::Error::other("blob is larger than announced"));
                    }
                    self.progress.advance(self.id, b.len() as u64);
                    self.buf = b;
                }
                Some(Err(e)) => {
                    let failure = match e.get_ref().and_then(|i| i.downcast_ref::<DigestError>()) {
                        Some(DigestError::VerificationError { expected, actual }) => {
                            Error::DigestMismatch {
                                what: format!("blob {}", self.digest),
                                expected: expected.clone(),
                                actual: actual.clone(),
                            }
                        }
                        _ => Error::Registry {
                            registry: self.host.to_string(),
                            reason: format!("download blob {}: {e}", self.digest),
                        },
                    };
                    self.failure = Some(failure);
                    return Err(e);
                }
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf.split_to(n));
        Ok(n)
    }
}

fn unauthorized(url: &str, has_creds: bool) -> String {
    if has_creds {
        format!("authentication failed: the registry rejected the username and password (401 Unauthorized for {url})")
    } else {
        format!(
            "authentication required (401 Unauthorized for {url}): give a username and password"
        )
    }
}

/// A one-line explanation of a client error, with the cause chain that `reqwest` hides
/// and a hint for the common cases.
fn explain(e: &OciDistributionError, has_creds: bool) -> String {
    match e {
        OciDistributionError::RegistryError { envelope, .. } => {
            let parts: Vec<String> = envelope
                .errors
                .iter()
                .map(|err| {
                    let hint = match err.code {
                        OciErrorCode::ManifestUnknown => " (no such tag or digest)",
                        OciErrorCode::NameUnknown => " (repository not found)",
                        OciErrorCode::BlobUnknown => " (blob not found)",
                        OciErrorCode::Unauthorized => {
                            " (authentication required: check the username and password)"
                        }
                        OciErrorCode::Denied => " (access denied)",
                        _ => "",
                    };
                    format!("{}{hint}", err.message)
                })
                .collect();
            parts.join("; ")
        }
        OciDistributionError::UnauthorizedError { url } => unauthorized(url, has_creds),
        OciDistributionError::AuthenticationFailure(reason) => {
            format!("authentication failed: {}", reason.trim())
        }
        OciDistributionError::ServerError { code: 404, url, .. } => {
            format!("not found (404 for {url})")
        }
        OciDistributionError::ServerError { code, url, message } => {
            format!("HTTP {code} for {url}: {}", message.trim())
        }
        OciDistributionError::RequestError(re) if re.status().map(|c| c.as_u16()) == Some(401) => {
            unauthorized(re.url().map(|u| u.as_str()).unwrap_or("?"), has_creds)
        }
        OciDistributionError::RequestError(re) if re.status().map(|c| c.as_u16()) == Some(403) => {
            format!(
                "access denied (403 Forbidden for {})",
                re.url().map(|u| u.as_str()).unwrap_or("?")
            )
        }
        OciDistributionError::RequestError(re) => {
            let mut msg = re.to_string();
            let mut src = std::error::Error::source(re);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            if re.is_connect() {
                msg.push_str(" (is the registry running and reachable?)");
            } else if re.is_timeout() {
                msg.push_str(" (timed out)");
            }
            msg
        }
        other => other.to_string(),
    }
}

/// Pulls `reference` (by tag or by digest) into the store and tags it with the reference,
/// registry host included (`127.0.0.1:5000/busybox:latest`). From a multi-platform index,
/// the linux/amd64 image is pulled. Layers the store already holds are not downloaded.
///
/// Progress ids are the first 12 hex digits of each layer blob's digest, as Docker shows
/// them; statuses are `"Already exists"` and `"Pull complete"`; messages carry the
/// `Digest:` line.
pub fn pull(
    store: &Store,
    reference: &Reference,
    opts: &RegistryOptions,
    progress: &dyn Progress,
) -> Result<ImageRecord> {
    let span = info_span!("pull", image = %reference);
    let _guard = span.enter();
    let s = Session::new(reference, opts)?;
    let target = s.remote(reference, None);
    s.login(&target, RegistryOperation::Pull)?;
    progress.message(&format!(
        "{}: Pulling from {}",
        reference
            .tag()
            .map(str::to_string)
            .unwrap_or_else(|| reference
                .digest()
                .map(|d| d.to_string())
                .unwrap_or_default()),
        target.repository()
    ));

    let top = s.manifest(&target, &format!("manifest {reference}"))?;
    let top_digest = Digest::of(&top);
    if let Some(pinned) = reference.digest() {
        if *pinned != top_digest {
            return Err(Error::DigestMismatch {
                what: format!("manifest {reference}"),
                expected: pinned.to_string(),
                actual: top_digest.to_string(),
            });
        }
    }
    let (kind, _) = classify(&top, &format!("manifest of {reference}"))?;
    let manifest_bytes = match kind {
        Kind::Manifest => top,
        Kind::Index => {
            let index = ImageIndex::from_reader(&top[..])
                .map_err(|e| Error::malformed(format!("index of {reference}"), e))?;
            let (digest, size) = select_platform(&index, &reference.to_string())?;
            debug!(%digest, "selected linux/amd64 manifest");
            let what = format!("linux/amd64 manifest {digest} of {reference}");
            check_len(size, MAX_MANIFEST, &what)?;
            let body = s.manifest(&s.remote(reference, Some(&digest)), &what)?;
            let actual = Digest::of(&body);
            if actual != digest {
                return Err(Error::DigestMismatch {
                    what,
                    expected: digest.to_string(),
                    actual: actual.to_string(),
                });
            }
            if body.len() as u64 != size {
                return Err(Error::SizeMismatch {
                    what,
                    expected: size,
                    actual: body.len() as u64,
                });
            }
            if classify(&body, &what)?.0 != Kind::Manifest {
                return Err(Error::malformed(
                    what,
                    "an index entry for linux/amd64 is itself an index",
                ));
            }
            body
        }
    };
    let manifest = ImageManifest::from_reader(&manifest_bytes[..])
        .map_err(|e| Error::malformed(format!("manifest of {reference}"), e))?;
    check_manifest(&manifest)?;

    // The config: small, read into memory, verified, parsed.
    let config_digest = parse_digest(manifest.config().digest().as_ref())?;
    let config_size = manifest.config().size();
    check_len(config_size, MAX_CONFIG, &format!("config of {reference}"))?;
    let config_bytes = if store.has_blob(&config_digest) {
        store.read_blob(&config_digest, MAX_CONFIG)?
    } else {
        let data = s.download(
            &target,
            &config_digest,
            config_size,
            &crate::progress::NoProgress,
            "",
            |r| {
                let mut v = Vec::with_capacity(config_size as usize);
                r.read_to_end(&mut v)
                    .map_err(Error::io("download config", config_digest.to_string()))?;
                Ok(v)
            },
        )?;
        crate::digest::verify(
            &data,
            &config_digest,
            config_size,
            &format!("config of {reference}"),
        )?;
        data
    };
    let config = ImageConfiguration::from_reader(&config_bytes[..])
        .map_err(|e| Error::malformed(format!("config of {reference}"), e))?;
    let diff_ids = config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| parse_digest(d))
        .collect::<Result<Vec<_>>>()?;
    if diff_ids.len() != manifest.layers().len() {
        return Err(Error::malformed(
            format!("config of {reference}"),
            format!(
                "{} diff ids for {} layers",
                diff_ids.len(),
                manifest.layers().len()
            ),
        ));
    }

    // Layers: download what is missing, then unpack (which verifies each diff id).
    let mut layers = Vec::with_capacity(diff_ids.len());
    for (desc, diff_id) in manifest.layers().iter().zip(diff_ids) {
        let blob = parse_digest(desc.digest().as_ref())?;
        let layer = LayerRecord {
            blob,
            diff_id,
            media_type: desc.media_type().to_string(),
            size: desc.size(),
        };
        let id = layer.blob.short().to_string();
        if store.has_blob(&layer.blob) {
            store.unpack_layer(&layer)?;
            progress.finish(&id, "Already exists");
        } else {
            progress.start(&id, "Downloading", Some(layer.size));
            s.download(&target, &layer.blob, layer.size, progress, &id, |r| {
                store.put_blob(r, Some((&layer.blob, Some(layer.size))))
            })?;
            progress.message(&format!("{id}: Extracting"));
            store.unpack_layer(&layer)?;
            progress.finish(&id, "Pull complete");
        }
        layers.push(layer);
    }

    let stored_config = store.put_blob_bytes(&config_bytes)?;
    let stored_manifest = store.put_blob_bytes(&manifest_bytes)?;
    let image = store.commit(
        NewImage {
            manifest: &stored_manifest,
            config: &stored_config,
            config_doc: &config,
            layers: &layers,
        },
        Some(reference),
    )?;
    progress.message(&format!("Digest: {top_digest}"));
    Ok(image)
}

/// Pushes a stored image to `dest` (`registry/repository[:tag]`): layer blobs the
/// registry lacks, the config, then the manifest exactly as stored, so the remote manifest
/// digest (returned) equals the local one.
///
/// Progress ids are the first 12 hex digits of each blob's digest; statuses are
/// `"Layer already exists"` and `"Pushed"`.
pub fn push(
    store: &Store,
    image: &ImageRecord,
    dest: &Reference,
    opts: &RegistryOptions,
    progress: &dyn Progress,
) -> Result<Digest> {
    let span = info_span!("push", image = %image.id.short(), dest = %dest);
    let _guard = span.enter();
    if let Some(d) = dest.digest() {
        if *d != image.manifest {
            return Err(Error::InvalidInput(format!(
                "cannot push {} as {dest}: its manifest digest is {}",
                image.id.short(),
                image.manifest
            )));
        }
    }
    let manifest_bytes = store.read_blob(&image.manifest, MAX_MANIFEST)?;
    let what = format!("stored manifest {}", image.manifest);
    let (kind, content_type) = classify(&manifest_bytes, &what)?;
    if kind != Kind::Manifest {
        return Err(Error::malformed(
            what,
            "is an index; only single-platform images can be pushed",
        ));
    }
    let manifest = ImageManifest::from_reader(&manifest_bytes[..])
        .map_err(|e| Error::malformed(what.as_str(), e))?;

    let s = Session::new(dest, opts)?;
    let target = s.remote(dest, None);
    s.login(&target, RegistryOperation::Push)?;
    progress.message(&format!("The push refers to repository [{}]", dest.name()));

    let mut blobs = Vec::with_capacity(manifest.layers().len() + 1);
    for l in manifest.layers() {
        blobs.push((parse_digest(l.digest().as_ref())?, l.size(), true));
    }
    blobs.push((
        parse_digest(manifest.config().digest().as_ref())?,
        manifest.config().size(),
        false,
    ));
    for (digest, size, is_layer) in blobs {
        let id = digest.short().to_string();
        if s.blob_exists(&target, &digest)? {
            if is_layer {
                progress.finish(&id, "Layer already exists");
            }
            continue;
        }
        let file: File = store.open_blob(&digest)?;
        if is_layer {
            progress.start(&id, "Pushing", Some(size));
            s.upload(&target, &digest, size, file, progress, &id)?;
            progress.finish(&id, "Pushed");
        } else {
            s.upload(
                &target,
                &digest,
                size,
                file,
                &crate::progress::NoProgress,
                &id,
            )?;
        }
    }

    let header = content_type.parse().map_err(|e| {
        Error::InvalidInput(format!(
            "media type {content_type} is not a valid header: {e}"
        ))
    })?;
    s.rt.block_on(
        s.client
            .push_manifest_raw(&target, manifest_bytes.clone(), header),
    )
    .map_err(|e| s.err(&format!("upload manifest for {dest}"), e))?;
    progress.message(&format!(
        "{}: digest: {} size: {}",
        dest.tag().unwrap_or("latest"),
        image.manifest,
        manifest_bytes.len()
    ));
    Ok(image.manifest.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_plain_http() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback_registry(h), "{h}");
        }
        for h in [
            "registry.example.com",
            "10.0.0.1:5000",
            "docker.io",
            "localhost.example:5000",
            "[fe80::1]:5000",
        ] {
            assert!(!is_loopback_registry(h), "{h}");
        }
    }

    #[test]
    fn classifies_manifests() {
        let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{},"layers":[]}"#;
        assert_eq!(classify(m, "m").unwrap(), (Kind::Manifest, DOCKER_MANIFEST));
        let i = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(classify(i, "i").unwrap(), (Kind::Index, OCI_INDEX));
        let o = br#"{"schemaVersion":2,"config":{},"layers":[]}"#;
        assert_eq!(classify(o, "o").unwrap(), (Kind::Manifest, OCI_MANIFEST));
        let s1 = br#"{"schemaVersion":1,"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws"}"#;
        assert!(matches!(
            classify(s1, "s1"),
            Err(Error::UnknownMediaType(_))
        ));
        assert!(matches!(
            classify(b"{not json", "x"),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn docker_hub_names_get_library_prefix() {
        let s = Session::new(&"busybox".parse().unwrap(), &RegistryOptions::default()).unwrap();
        let r = s.remote(&"busybox:1".parse().unwrap(), None);
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("docker.io", "library/busybox", Some("1"))
        );
        let r = s.remote(&"127.0.0.1:5000/a/b".parse().unwrap(), None);
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("127.0.0.1:5000", "a/b", Some("latest"))
        );
    }

    #[test]
    fn selects_linux_amd64() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
                {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1,"platform":{{"os":"linux","architecture":"arm64"}}}},
                {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":2,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
            d('a'),
            d('b')
        );
        let index = ImageIndex::from_reader(json.as_bytes()).unwrap();
        let (digest, size) = select_platform(&index, "x").unwrap();
        assert_eq!((digest.to_string(), size), (d('b'), 2));
        let arm_only = json.replace("amd64", "s390x");
        let index = ImageIndex::from_reader(arm_only.as_bytes()).unwrap();
        assert!(matches!(
            select_platform(&index, "x"),
            Err(Error::NoMatchingPlatform(_))
        ));
    }
}

/// `vessel login`: whether `creds` open registry `host` (`docker.io` for Docker Hub), as
/// `docker login` checks them: `GET /v2/`, and on a 401 the challenge it names, basic
/// (the same request with the credentials) or bearer (the token service's realm asked
/// for a token with them). A registry that needs no credentials accepts any.
pub fn check_login(
    host: &str,
    creds: &crate::credentials::Credentials,
    insecure: bool,
) -> Result<()> {
    let api_host = if crate::credentials::server_key(host) == crate::credentials::DOCKER_HUB {
        "registry-1.docker.io"
    } else {
        host
    };
    let plain = insecure || is_loopback_registry(api_host);
    let base = format!("{}://{api_host}/v2/", if plain { "http" } else { "https" });
    let fail = |reason: String| Error::Registry {
        registry: host.to_string(),
        reason,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::io("start registry client runtime", "(tokio)"))?;
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(60))
        .user_agent(concat!("vessel/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| fail(e.to_string()))?;
    rt.block_on(async {
        let send = |req: reqwest::RequestBuilder, url: String| async move {
            req.send().await.map_err(|e| {
                let mut reason = format!("GET {url}: {e}");
                if !plain && (e.is_connect() || e.is_request()) {
                    reason.push_str(" (for a plain-HTTP registry, use --insecure)");
                }
                reason
            })
        };
        let r = send(http.get(&base), base.clone()).await.map_err(fail)?;
        if r.status().is_success() {
            return Ok(());
        }
        if r.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Err(fail(format!("GET {base}: HTTP {}", r.status())));
        }
        let challenge = r
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let (scheme, params) = parse_challenge(&challenge);
        let answer = if scheme.eq_ignore_ascii_case("bearer") {
            let realm = params
                .iter()
                .find(|(k, _)| k == "realm")
                .map(|(_, v)| v.as_str())
                .ok_or_else(|| fail(format!("a bearer challenge without a realm: {challenge}")))?;
            let mut query = vec![("account", creds.username.as_str())];
            if let Some((_, service)) = params.iter().find(|(k, _)| k == "service") {
                query.push(("service", service.as_str()));
            }
            let url = reqwest::Url::parse_with_params(realm, &query)
                .map_err(|e| fail(format!("token realm {realm:?}: {e}")))?;
            let req = http
                .get(url.clone())
                .basic_auth(&creds.username, Some(&creds.secret));
            send(req, url.to_string()).await.map_err(fail)?
        } else {
            let req = http
                .get(&base)
                .basic_auth(&creds.username, Some(&creds.secret));
            send(req, base.clone()).await.map_err(fail)?
        };
        match answer.status() {
            s if s.is_success() => Ok(()),
            reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN => {
                Err(Error::Unauthorized(host.to_string()))
            }
            s => Err(fail(format!("login: HTTP {s}"))),
        }
    })
}

/// An RFC 7235 challenge: its scheme and its `key=value` parameters (values quoted or
/// not; a quoted one may hold commas).
fn parse_challenge(header: &str) -> (String, Vec<(String, String)>) {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars.by_ref().take_while(|c| *c != ',').collect();
        }
        params.push((key.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    (scheme.to_string(), params)
}

#[cfg(test)]
mod challenge_tests {
    use super::parse_challenge;

    #[test]
    fn challenges_parse() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="reg.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(s, "Bearer");
        assert_eq!(
            p,
            [
                (
                    "realm".to_string(),
                    "https://auth.example/token".to_string()
                ),
                ("service".to_string(), "reg.example".to_string()),
                ("scope".to_string(), "repository:a/b:pull,push".to_string()),
            ]
        );
        let (s, p) = parse_challenge(r#"Basic realm="vessel-test""#);
        assert_eq!((s.as_str(), p.len()), ("Basic", 1));
        assert_eq!(parse_challenge("").1, []);
    }
}
