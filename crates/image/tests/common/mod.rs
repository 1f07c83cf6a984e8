//! Helpers shared by the registry and archive tests: a throwaway `docker-registry`, a
//! recording progress sink and small multi-layer images.

#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vessel_image::import::{build_config, commit_single, import, Changes};
use vessel_image::progress::Progress;
use vessel_image::{ImageRecord, Reference, Store};

/// Fails (never skips) when a tool the tests need is missing, naming the package.
pub fn require(binary: &str, package: &str) -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/bin", "/usr/sbin"])
    {
        let p = Path::new(dir).join(binary);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{binary}` not found: install the Debian package `{package}` (apt-get install -y {package})");
}

/// A port nobody listens on (right now).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A `docker-registry` on 127.0.0.1, killed on drop.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub host: String,
    /// The registry's storage root (blobs live under docker/registry/v2/blobs).
    pub storage: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry; with `auth`, it requires HTTP basic auth with those credentials.
    pub fn start(auth: Option<(&str, &str)>) -> Registry {
        let bin = require("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        fs::create_dir_all(&storage).unwrap();
        let mut last_err = String::new();
        // The free port can be taken between probing and binding: retry a few times.
        for _ in 0..5 {
            let port = free_port();
            let host = format!("127.0.0.1:{port}");
            let mut config = format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
                storage.display()
            );
            if let Some((user, pass)) = auth {
                let hash = bcrypt::hash(pass, 4).unwrap();
                let htpasswd = dir.path().join("htpasswd");
                fs::write(&htpasswd, format!("{user}:{hash}\n")).unwrap();
                config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: vessel-test\n    path: {}\n",
                    htpasswd.display()
                ));
            }
            let config_path = dir.path().join("config.yml");
            fs::write(&config_path, config).unwrap();
            let log = fs::File::create(dir.path().join("registry.log")).unwrap();
            let mut child = Command::new(&bin)
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    last_err = format!(
                        "exited with {status}: {}",
                        fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default()
                    );
                    break;
                }
                if http_status(&host, "/v2/").is_some() {
                    return Registry {
                        child,
                        host,
                        storage,
                        _dir: dir,
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_err = "did not answer on /v2/ within 20s".into();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("docker-registry failed to start: {last_err}");
    }

    /// `127.0.0.1:<port>/<name>` parsed as a reference.
    pub fn reference(&self, name: &str) -> Reference {
        format!("{}/{name}", self.host).parse().unwrap()
    }

    /// Where the registry keeps a blob's bytes.
    pub fn blob_data(&self, digest: &vessel_image::Digest) -> PathBuf {
        let hex = digest.hex();
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status code of a plain `GET path`, or `None` if nothing answers.
pub fn http_status(host: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let line = String::from_utf8_lossy(&buf[..n]);
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Every progress event, as text, in order.
#[derive(Default)]
pub struct Recorder(pub Mutex<Vec<String>>);

impl Recorder {
    /// The events so far.
    pub fn events(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl Progress for Recorder {
    fn start(&self, id: &str, what: &str, total: Option<u64>) {
        self.0
            .lock()
            .unwrap()
            .push(format!("start {id} {what} {total:?}"));
    }
    fn advance(&self, id: &str, bytes: u64) {
        self.0.lock().unwrap().push(format!("advance {id} {bytes}"));
    }
    fn finish(&self, id: &str, status: &str) {
        self.0.lock().unwrap().push(format!("finish {id} {status}"));
    }
    fn message(&self, msg: &str) {
        self.0.lock().unwrap().push(format!("message {msg}"));
    }
}

/// A two-layer image tagged `tag`: the lower layer has /etc/os-release and /bin/hello,
/// the upper one /app/data (with `marker` in it) and replaces /bin/hello. Config: CMD
/// `/bin/hello`, ENV `GREETING=hi`.
pub fn two_layer_image(store: &Store, tag: &str, marker: &str) -> ImageRecord {
    let src = tempfile::tempdir().unwrap();
    let lower = src.path().join("lower");
    fs::create_dir_all(lower.join("etc")).unwrap();
    fs::create_dir_all(lower.join("bin")).unwrap();
    fs::write(lower.join("etc/os-release"), "ID=vesseltest\n").unwrap();
    fs::write(lower.join("bin/hello"), "#!/bin/sh\necho lower\n").unwrap();
    let upper = src.path().join("upper");
    fs::create_dir_all(upper.join("app")).unwrap();
    fs::create_dir_all(upper.join("bin")).unwrap();
    fs::write(upper.join("app/data"), marker).unwrap();
    fs::write(upper.join("bin/hello"), "#!/bin/sh\necho upper\n").unwrap();
    let none = Changes::default();
    let a = import(
        store,
        &lower,
        Some(&"scratch-lower:tmp".parse().unwrap()),
        &none,
    )
    .unwrap();
    let b = import(
        store,
        &upper,
        Some(&"scratch-upper:tmp".parse().unwrap()),
        &none,
    )
    .unwrap();
    let layers = vec![a.layers[0].clone(), b.layers[0].clone()];
    let changes = Changes::parse(&[r#"CMD ["/bin/hello"]"#, "ENV GREETING=hi"]).unwrap();
    let diff_ids: Vec<_> = layers.iter().map(|l| l.diff_id.clone()).collect();
    let config = build_config(&diff_ids, &changes, "test").unwrap();
    let img = commit_single(store, config, layers, Some(&tag.parse().unwrap())).unwrap();
    store.remove("scratch-lower:tmp", false).unwrap();
    store.remove("scratch-upper:tmp", false).unwrap();
    img
}

/// Checks an image's config and layer contents are those `two_layer_image` made.
pub fn assert_two_layer_content(store: &Store, img: &ImageRecord, marker: &str) {
    let config = store.config(img).unwrap();
    let c = config.config().as_ref().unwrap();
    assert_eq!(c.cmd().as_ref().unwrap(), &vec!["/bin/hello".to_string()]);
    assert!(
        c.env()
            .as_ref()
            .unwrap()
            .contains(&"GREETING=hi".to_string()),
        "env: {:?}",
        c.env()
    );
    let dirs = store.layer_dirs(img).unwrap();
    assert_eq!(dirs.len(), 2);
    assert_eq!(
        fs::read_to_string(dirs[0].join("etc/os-release")).unwrap(),
        "ID=vesseltest\n"
    );
    assert_eq!(
        fs::read_to_string(dirs[0].join("bin/hello")).unwrap(),
        "#!/bin/sh\necho lower\n"
    );
    assert_eq!(
        fs::read_to_string(dirs[1].join("app/data")).unwrap(),
        marker
    );
    assert_eq!(
        fs::read_to_string(dirs[1].join("bin/hello")).unwrap(),
        "#!/bin/sh\necho upper\n"
    );
}

/// Files left under the store's tmp/ dir (a failed operation must leave none).
pub fn tmp_leftovers(root: &Path) -> Vec<PathBuf> {
    fs::read_dir(root.join("images/tmp"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}
