//! Hostile sizes: tar headers claiming GiBs, decompression bombs and oversized documents
//! are refused with a clear error, without the memory or disk they claim, and leave
//! nothing behind.
//!
//! Nothing here allocates what the input claims: claimed sizes are produced lazily (a
//! reader of zeros), and a counting allocator measures the peak memory each test used.
//! Tests take a lock so that each one's peak is its own.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use vessel_image::archive::load;
use vessel_image::limits::{DiskLimits, MAX_CONFIG, MAX_MANIFEST, MAX_TAR_HEADER};
use vessel_image::progress::NoProgress;
use vessel_image::unpack::unpack_layer;
use vessel_image::{Digest, Error, Store, StoreOptions};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counters only
// observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
            let now = CURRENT.fetch_add(new_size, Ordering::Relaxed) + new_size;
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

static SERIAL: Mutex<()> = Mutex::new(());

/// The most any of these tests may allocate at once: far below what the input claims.
const PEAK_LIMIT: usize = 64 << 20;

/// Runs `f` alone and fails if it allocated more than [`PEAK_LIMIT`] at its peak.
fn bounded<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    PEAK.store(CURRENT.load(Ordering::Relaxed), Ordering::Relaxed);
    let base = CURRENT.load(Ordering::Relaxed);
    let out = f();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    assert!(
        peak < PEAK_LIMIT,
        "{what}: allocated {} MiB at its peak",
        peak >> 20
    );
    out
}

/// A 512-byte GNU header for `name` claiming `size` bytes.
fn header(kind: tar::EntryType, name: &str, size: u64) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_size(size);
    h.set_cksum();
    h.as_bytes().to_vec()
}

/// A tar whose first entry is `kind` claiming `size` bytes of data, which follow (zeros,
/// made lazily), then a file the extension header would describe, then the end.
fn claimed(kind: tar::EntryType, size: u64) -> impl Read {
    let pad = (512 - size % 512) % 512;
    let mut tail = header(tar::EntryType::Regular, "victim", 0);
    tail.extend_from_slice(&[0u8; 1024]);
    io::Cursor::new(header(kind, "././@LongLink", size))
        .chain(io::repeat(0).take(size + pad))
        .chain(io::Cursor::new(tail))
}

const THREE_GIB: u64 = 3 << 30;

#[test]
fn long_name_long_link_and_pax_headers_are_refused_before_buffering() {
    for (kind, label) in [
        (tar::EntryType::GNULongName, "GNU long name"),
        (tar::EntryType::GNULongLink, "GNU long link"),
        (tar::EntryType::XHeader, "PAX"),
        (tar::EntryType::XGlobalHeader, "PAX global"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let err = bounded(label, || {
            unpack_layer(claimed(kind, THREE_GIB), dir.path()).unwrap_err()
        });
        assert!(
            matches!(
                err,
                Error::TooLarge {
                    size: THREE_GIB,
                    limit: MAX_TAR_HEADER,
                    ..
                }
            ),
            "{label}: {err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("tar {label} header"))
                && msg.contains("is 3 GiB, over the 1 MiB limit"),
            "{label}: {msg}"
        );
        assert!(!dir.path().join("victim").exists(), "{label}");
    }
}

#[test]
fn header_at_the_limit_is_still_accepted() {
    // A PAX header of exactly the limit carrying a (harmless) comment record.
    let record_len = MAX_TAR_HEADER as usize;
    let prefix = format!("{record_len} comment=");
    let mut record = prefix.into_bytes();
    record.resize(record_len - 1, b'x');
    record.push(b'\n');
    let mut tar = header(tar::EntryType::XHeader, "PaxHeaders/f", record_len as u64);
    tar.extend_from_slice(&record);
    tar.extend_from_slice(&header(tar::EntryType::Regular, "f", 0));
    tar.extend_from_slice(&[0u8; 1024]);
    let dir = tempfile::tempdir().unwrap();
    unpack_layer(&tar[..], dir.path()).unwrap();
    assert!(dir.path().join("f").is_file());
}

/// A gzip stream of a tar holding one file of `size` zeros, built from repeated gzip
/// members (the decompressor reads concatenated members as one stream), so that neither
/// building nor holding it costs anything like `size`.
fn gzip_bomb(size: u64) -> Vec<u8> {
    const CHUNK: u64 = 16 << 20;
    assert_eq!(size % CHUNK, 0);
    let gz = |data: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    };
    let mut out = gz(&header(tar::EntryType::Regular, "zeros", size));
    let member = gz(&vec![0u8; CHUNK as usize]);
    for _ in 0..size / CHUNK {
        out.extend_from_slice(&member);
    }
    out.extend_from_slice(&gz(&[0u8; 1024]));
    out
}

fn raw_tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// A docker-archive of one image `bomb:1` whose only layer is `layer`.
fn docker_archive(layer: &[u8]) -> Vec<u8> {
    let diff = Digest::of(b"whatever: unpacking fails before the diff id is compared");
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff.to_string()]}
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!([
        {"Config": "config.json", "RepoTags": ["bomb:1"], "Layers": ["l/layer.tar"]}
    ]))
    .unwrap();
    raw_tar(&[
        ("l/layer.tar", layer),
        ("config.json", &config),
        ("manifest.json", &manifest),
    ])
}

fn leftovers(root: &Path) -> Vec<PathBuf> {
    ["images/tmp", "images/layers"]
        .iter()
        .flat_map(|d| fs::read_dir(root.join(d)).unwrap())
        .map(|e| e.unwrap().path())
        .collect()
}

fn assert_nothing_left(root: &Path, store: &Store, what: &str) {
    assert!(
        store.list().unwrap().is_empty(),
        "{what}: an image was committed"
    );
    assert!(store.resolve("bomb:1").is_err(), "{what}: the tag exists");
    assert_eq!(
        leftovers(root),
        Vec::<PathBuf>::new(),
        "{what}: half-written state"
    );
}

#[test]
fn gzip_bomb_layer_is_stopped_at_the_disk_budget_and_leaves_nothing() {
    let budget = 64 << 20;
    let (root, store) = store_with_layer_budget(budget);
    let bomb = gzip_bomb(2 << 30);
    assert!(
        bomb.len() < 8 << 20,
        "the bomb itself is small: {}",
        bomb.len()
    );
    let archive = docker_archive(&bomb);
    let err = bounded("gzip bomb", || {
        load(&store, &archive[..], &NoProgress).unwrap_err()
    });
    assert!(
        matches!(err, Error::TooLarge { limit, .. } if limit <= budget),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("layer sha256:")
            && msg.contains("\"zeros\" is 2 GiB")
            && msg.contains("disk budget"),
        "{msg}"
    );
    assert_nothing_left(root.path(), &store, "gzip bomb");
    // Nothing of the refused archive stays: not even the (complete) bomb blob.
    let blobs: Vec<_> = fs::read_dir(root.path().join("images/blobs/sha256"))
        .unwrap()
        .collect();
    assert!(blobs.is_empty(), "blobs left: {blobs:?}");
    let used = du(root.path());
    assert!(
        used < 16 << 20,
        "{used} bytes on disk after the refused load"
    );
}

/// A store in a new directory whose layers may take at most `max_layer` bytes.
fn store_with_layer_budget(max_layer: u64) -> (tempfile::TempDir, Store) {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        root.path(),
        StoreOptions {
            disk: DiskLimits {
                reserve: None,
                max_layer: Some(max_layer),
            },
        },
    )
    .unwrap();
    (root, store)
}

#[test]
fn archive_bigger_than_the_budget_is_refused_while_extracting() {
    let (root, store) = store_with_layer_budget(1 << 20);
    // An archive entry claiming 3 GiB: refused from its header, nothing extracted.
    let mut tar = header(tar::EntryType::Regular, "blobs/sha256/big", THREE_GIB);
    let stream = io::Cursor::new(std::mem::take(&mut tar)).chain(io::repeat(0).take(THREE_GIB));
    load_is_refused(
        root.path(),
        &store,
        "huge archive entry",
        stream,
        "archive entry \"blobs/sha256/big\" is 3 GiB",
    );
}

/// Loads `stream`, which must be refused in bounded memory with an error containing
/// `expected`, leaving nothing behind.
fn load_is_refused(root: &Path, store: &Store, what: &str, stream: impl Read, expected: &str) {
    let err = bounded(what, || load(store, stream, &NoProgress).unwrap_err());
    assert!(err.to_string().contains(expected), "{err}");
    assert_nothing_left(root, store, what);
}

#[test]
fn archive_long_name_header_is_refused_before_buffering() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    load_is_refused(
        root.path(),
        &store,
        "archive long name",
        claimed(tar::EntryType::GNULongName, THREE_GIB),
        "archive: tar GNU long name header \"././@LongLink\" is 3 GiB",
    );
}

#[test]
fn oversized_archive_documents_are_refused_unread() {
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    // manifest.json just over its limit (valid JSON: a list padded with spaces).
    let mut manifest = b"[".to_vec();
    manifest.resize(MAX_MANIFEST as usize, b' ');
    manifest.extend_from_slice(b"]");
    let archive = raw_tar(&[("manifest.json", &manifest)]);
    let err = load(&store, &archive[..], &NoProgress).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooLarge {
                limit: MAX_MANIFEST,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("archive manifest.json is 4.0 MiB, over the 4 MiB limit"),
        "{err}"
    );
    assert_nothing_left(root.path(), &store, "big manifest.json");

    // An OCI layout whose index announces a 100 GiB config: refused on the descriptor,
    // before anything is read.
    let config_digest = Digest::of(b"{}");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest.to_string(), "size": 100u64 << 30},
        "layers": []
    }))
    .unwrap();
    let manifest_digest = Digest::of(&manifest);
    let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json",
         "digest": manifest_digest.to_string(), "size": manifest.len()}
    ]}))
    .unwrap();
    let archive = raw_tar(&[
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        ("index.json", &index),
        (
            &format!("blobs/sha256/{}", manifest_digest.hex()),
            &manifest,
        ),
        (&format!("blobs/sha256/{}", config_digest.hex()), b"{}"),
    ]);
    let err = load(&store, &archive[..], &NoProgress).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooLarge {
                limit: MAX_CONFIG,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("is 100 GiB, over the 64 MiB limit"),
        "{err}"
    );
    assert_nothing_left(root.path(), &store, "big config");
}

/// Bytes allocated on disk under `p`.
fn du(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.blocks() * 512;
            }
        }
    }
    total
}

/// A one-connection-at-a-time HTTP server on a free loopback port: `respond` gets each
/// request's path and the connection. Returns its `host:port`.
fn serve(respond: impl Fn(&str, std::net::TcpStream) + Send + 'static) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            if let Some(path) = request_path(&conn) {
                respond(&path, conn);
            }
        }
    });
    addr
}

/// Reads an HTTP request's head from `conn`; returns its path.
fn request_path(conn: &std::net::TcpStream) -> Option<String> {
    use std::io::BufRead;
    let mut reader = io::BufReader::new(conn.try_clone().ok()?);
    let mut request = String::new();
    reader.read_line(&mut request).ok()?;
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    Some(request.split_whitespace().nth(1).unwrap_or("").to_string())
}

/// A registry that serves one manifest (of any size) at `/v2/big/manifests/1` and answers
/// everything else with 404. Returns its `host:port`.
fn fake_registry(manifest: Vec<u8>) -> String {
    serve(move |path, mut w| {
        let (status, kind, body): (&str, &str, &[u8]) = match path {
            "/v2/" => ("200 OK", "application/json", b"{}"),
            "/v2/big/manifests/1" => (
                "200 OK",
                "application/vnd.oci.image.manifest.v1+json",
                &manifest,
            ),
            _ => ("404 Not Found", "application/json", b"{\"errors\":[]}"),
        };
        let _ = write!(
                w,
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
        let _ = w.write_all(body);
    })
}

#[test]
fn pull_refuses_a_manifest_over_the_limit() {
    use vessel_image::registry::{pull, RegistryOptions};
    // A valid manifest padded with spaces to just over the limit.
    let mut manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": Digest::of(b"{}").to_string(), "size": 2},
        "layers": []
    }))
    .unwrap();
    manifest.resize(MAX_MANIFEST as usize + 1, b' ');
    let host = fake_registry(manifest);
    let root = tempfile::tempdir().unwrap();
    let store = Store::open(root.path()).unwrap();
    let reference = format!("{host}/big:1").parse().unwrap();
    let err = pull(&store, &reference, &RegistryOptions::default(), &NoProgress).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooLarge {
                limit: MAX_MANIFEST,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("is 4.0 MiB, over the 4 MiB limit"),
        "{err}"
    );
    assert!(store.list().unwrap().is_empty());
    assert_eq!(leftovers(root.path()), Vec::<PathBuf>::new());
}

/// A registry whose manifest at `/v2/huge/manifests/1` is a valid manifest followed by
/// `total` bytes of spaces, generated as they are sent, with or without a
/// `Content-Length`. Returns its `host:port` and the count of bytes it managed to send.
fn huge_manifest_registry(
    total: u64,
    with_length: bool,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = sent.clone();
    let addr = serve(move |path, mut w| {
        if path != "/v2/huge/manifests/1" {
            let (status, body) = if path == "/v2/" {
                ("200 OK", "{}")
            } else {
                ("404 Not Found", "{\"errors\":[]}")
            };
            let _ = write!(
                    w,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            return;
        }
        let length = if with_length {
            format!("Content-Length: {total}\r\n")
        } else {
            String::new()
        };
        let _ = write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n{length}Connection: close\r\n\r\n{{\"schemaVersion\":2,"
            );
        let chunk = vec![b' '; 1 << 20];
        let mut left = total;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            if w.write_all(&chunk[..n]).is_err() {
                break;
            }
            counter.fetch_add(n as u64, Ordering::Relaxed);
            left -= n as u64;
        }
    });
    (addr, sent)
}

/// A registry that sends a 2 GiB manifest, announced or not: the pull is refused as soon
/// as the body passes the limit (or at once, when its length says so), in bounded memory,
/// having read little of it, leaving nothing. (oci-client's manifest pull buffered all
/// of it before vessel could look at its size.)
#[test]
fn pull_refuses_a_huge_manifest_without_buffering_it() {
    use vessel_image::registry::{pull, RegistryOptions};
    for with_length in [true, false] {
        let (host, sent) = huge_manifest_registry(2 << 30, with_length);
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let reference = format!("{host}/huge:1").parse().unwrap();
        let started = std::time::Instant::now();
        let err = bounded("huge manifest", || {
            pull(&store, &reference, &RegistryOptions::default(), &NoProgress).unwrap_err()
        });
        assert!(
            matches!(
                err,
                Error::TooLarge {
                    limit: MAX_MANIFEST,
                    ..
                }
            ),
            "Content-Length {with_length}: {err:?}"
        );
        assert!(err.to_string().contains("over the 4 MiB limit"), "{err}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "took {:?}",
            started.elapsed()
        );
        // Give the server a moment to notice the closed connection.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let sent = sent.load(Ordering::Relaxed);
        assert!(sent < 256 << 20, "the registry sent {} MiB", sent >> 20);
        assert!(store.list().unwrap().is_empty());
        assert_eq!(leftovers(root.path()), Vec::<PathBuf>::new());
    }
}

/// A microVM build step's changes (`import::store_layer_tar`) come from a guest that ran
/// untrusted commands: they are read as a hostile layer is. A size the disk budget cannot
/// hold is refused from its header; paths that climb out, or go through a link to a host
/// path, do not leave the layer; nothing is left of a refused one.
#[test]
fn a_guests_changes_tar_is_read_as_a_hostile_layer() {
    use vessel_image::import::store_layer_tar;
    let (root, store) = store_with_layer_budget(1 << 20);
    let work = tempfile::tempdir().unwrap();
    // 3 GiB claimed and (sparsely) there: refused at the budget, in bounded memory.
    let huge = work.path().join("huge.tar");
    let mut f = fs::File::create(&huge).unwrap();
    f.write_all(&header(tar::EntryType::Regular, "big", THREE_GIB))
        .unwrap();
    f.set_len(512 + THREE_GIB + 1024).unwrap();
    let err = bounded("huge changes", || {
        store_layer_tar(&store, &huge).unwrap_err()
    });
    assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
    assert_eq!(leftovers(root.path()), Vec::<PathBuf>::new());

    // A path that climbs out of the layer.
    let climb = work.path().join("climb.tar");
    let mut raw = header(tar::EntryType::Regular, "../../escaped", 1);
    raw.extend_from_slice(&[b'x'; 512]);
    raw.extend_from_slice(&[0u8; 1024]);
    fs::write(&climb, raw).unwrap();
    let err = store_layer_tar(&store, &climb).unwrap_err();
    assert!(err.to_string().contains(".."), "{err}");
    assert!(!root.path().join("escaped").exists());
    assert_eq!(leftovers(root.path()), Vec::<PathBuf>::new());

    // A link to the host's /etc, then a file written through it: inside the layer.
    let marker = format!("vessel-changes-{}", std::process::id());
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, "hostetc", "/etc").unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(1);
    h.set_mode(0o644);
    b.append_data(&mut h, format!("hostetc/{marker}"), &b"x"[..])
        .unwrap();
    let through = work.path().join("through.tar");
    fs::write(&through, b.into_inner().unwrap()).unwrap();
    match store_layer_tar(&store, &through) {
        Ok(layer) => {
            let dir = store.unpack_layer(&layer).unwrap();
            assert!(dir.starts_with(root.path()), "{}", dir.display());
        }
        Err(e) => assert!(e.to_string().contains("hostetc"), "{e}"),
    }
    assert!(
        !Path::new("/etc").join(&marker).exists(),
        "a guest's changes wrote into the host's /etc"
    );
}
