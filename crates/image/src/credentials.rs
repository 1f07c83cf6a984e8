//! Registry credentials, kept where and as Docker keeps them: `config.json` in
//! `$DOCKER_CONFIG` (else `~/.docker`), whose `auths` map a registry to a base64
//! `user:password`, or, when `credHelpers` names a helper for that registry or
//! `credsStore` one for all, in that helper: `docker-credential-NAME get|store|erase`,
//! spoken to in its JSON protocol on standard input and output.
//!
//! Docker Hub is keyed as Docker keys it, `https://index.docker.io/v1/`; any other
//! registry by its `host[:port]`, and an entry written with a scheme or a path (as older
//! clients did) is found too.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};

/// Docker Hub's key in `auths`.
pub const DOCKER_HUB: &str = "https://index.docker.io/v1/";

/// A user name and its password (or token).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, ****)", self.username)
    }
}

/// The key of registry `host` (as a reference names it: `docker.io` when it names none).
pub fn server_key(host: &str) -> String {
    match host {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        h => h.to_string(),
    }
}

/// The registry a user names (`vessel login SERVER`, Docker's `serveraddress`) as a
/// reference names it: `host[:port]` without scheme or path, `docker.io` for none.
pub fn registry_host(given: Option<&str>) -> String {
    match given.map(bare) {
        None | Some("") => "docker.io".to_string(),
        Some(h) => h.to_string(),
    }
}

/// `host[:port]` of a key, whatever scheme or path it was written with.
fn bare(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

/// The credentials file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn config_path() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("config.json"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| Error::Credentials("neither DOCKER_CONFIG nor HOME is set".into()))?;
    Ok(PathBuf::from(home).join(".docker").join("config.json"))
}

/// The file's JSON (an empty object if there is none).
fn load(path: &Path) -> Result<Map<String, Value>> {
    match std::fs::read(path) {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Ok(Map::new()),
        Ok(b) => match serde_json::from_slice(&b) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(Error::Credentials(format!(
                "{}: not a JSON object",
                path.display()
            ))),
            Err(e) => Err(Error::Credentials(format!("{}: {e}", path.display()))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Map::new()),
        Err(e) => Err(Error::Credentials(format!("read {}: {e}", path.display()))),
    }
}

/// Writes the file whole (by rename), readable by its owner only, as Docker does.
fn save(path: &Path, config: &Map<String, Value>) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let fail = |what: &str, p: &Path, e: std::io::Error| {
        Error::Credentials(format!("{what} {}: {e}", p.display()))
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| fail("create", dir, e))?;
    let tmp = dir.join(".config.json.tmp");
    let mut text = serde_json::to_vec_pretty(config)
        .map_err(|e| Error::Credentials(format!("encode {}: {e}", path.display())))?;
    text.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| fail("write", &tmp, e))?;
    f.write_all(&text)
        .and_then(|()| f.sync_all())
        .map_err(|e| fail("write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| fail("write", path, e))
}

/// The helper that keeps `key`'s credentials, if one is configured.
fn helper_for(config: &Map<String, Value>, key: &str) -> Option<String> {
    let named = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let per_registry = config.get("credHelpers").and_then(Value::as_object);
    per_registry
        .and_then(|m| {
            m.get(key)
                .or_else(|| m.iter().find(|(k, _)| bare(k) == bare(key)).map(|(_, v)| v))
        })
        .and_then(|v| named(Some(v)))
        .or_else(|| named(config.get("credsStore")))
}

/// Runs `docker-credential-NAME ACTION` with `input` on its standard input.
fn run_helper(name: &str, action: &str, input: &[u8]) -> Result<(bool, String)> {
    use std::io::Seek;
    let program = format!("docker-credential-{name}");
    let failed = |e: std::io::Error| Error::Credentials(format!("{program} {action}: {e}"));
    // The input from a file, not a pipe: a helper that exits without reading it must
    // not kill us with SIGPIPE (the CLI restores its default action).
    let mut stdin = tempfile::tempfile().map_err(failed)?;
    stdin
        .write_all(input)
        .and_then(|()| stdin.rewind())
        .map_err(failed)?;
    let out = Command::new(&program)
        .arg(action)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Error::Credentials(format!("run the credential helper {program}: {e}")))?;
    // Helpers print their error on stdout (the protocol's), some on stderr.
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
    if out.status.success() {
        Ok((true, text(&out.stdout)))
    } else {
        let mut why = text(&out.stdout);
        if why.is_empty() {
            why = text(&out.stderr);
        }
        Ok((false, format!("{program} {action}: {why}")))
    }
}

/// The stored credentials for registry `host`, if any.
pub fn lookup(host: &str) -> Result<Option<Credentials>> {
    let key = server_key(host);
    let config = load(&config_path()?)?;
    if let Some(helper) = helper_for(&config, &key) {
        let (ok, out) = run_helper(&helper, "get", key.as_bytes())?;
        if !ok {
            // The protocol's answer for "nothing stored".
            if out.contains("credentials not found") {
                return Ok(None);
            }
            return Err(Error::Credentials(out));
        }
        let v: Value = serde_json::from_str(&out).map_err(|e| {
            Error::Credentials(format!("docker-credential-{helper} get: bad JSON: {e}"))
        })?;
        let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let (username, secret) = (field("Username"), field("Secret"));
        return Ok((!secret.is_empty()).then_some(Credentials { username, secret }));
    }
    let Some(auths) = config.get("auths").and_then(Value::as_object) else {
        return Ok(None);
    };
    let entry = auths.get(&key).or_else(|| {
        auths
            .iter()
            .find(|(k, _)| bare(k) == bare(&key))
            .map(|(_, v)| v)
    });
    let Some(entry) = entry else {
        return Ok(None);
    };
    if let Some(auth) = entry
        .get("auth")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        let bad = || {
            Error::Credentials(format!(
                "the auth of {key} in config.json is not base64 user:password"
            ))
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| bad())?;
        let text = String::from_utf8(raw).map_err(|_| bad())?;
        let (user, pass) = text.split_once(':').ok_or_else(bad)?;
        return Ok(Some(Credentials {
            username: user.to_string(),
            secret: pass.to_string(),
        }));
    }
    let field = |k: &str| entry.get(k).and_then(Value::as_str).map(str::to_string);
    Ok(match (field("username"), field("password")) {
        (Some(username), Some(secret)) => Some(Credentials { username, secret }),
        _ => None,
    })
}

/// Stores `creds` for registry `host`: in its helper if one is configured, else in
/// `auths`. Returns the file written (or the helper's name).
pub fn store(host: &str, creds: &Credentials) -> Result<String> {
    let key = server_key(host);
    let path = config_path()?;
    let mut config = load(&path)?;
    if let Some(helper) = helper_for(&config, &key) {
        let input = json!({"ServerURL": key, "Username": creds.username, "Secret": creds.secret});
        let (ok, out) = run_helper(&helper, "store", input.to_string().as_bytes())?;
        if !ok {
            return Err(Error::Credentials(out));
        }
        // Docker leaves an empty entry in auths, naming the registry.
        let mut auths = take_auths(&mut config);
        auths.insert(key, json!({}));
        config.insert("auths".into(), Value::Object(auths));
        save(&path, &config)?;
        return Ok(format!("docker-credential-{helper}"));
    }
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", creds.username, creds.secret));
    let mut auths = take_auths(&mut config);
    auths.retain(|k, _| bare(k) != bare(&key));
    auths.insert(key, json!({ "auth": auth }));
    config.insert("auths".into(), Value::Object(auths));
    save(&path, &config)?;
    Ok(path.display().to_string())
}

/// Forgets registry `host`'s credentials. Returns whether there were any.
pub fn erase(host: &str) -> Result<bool> {
    let key = server_key(host);
    let path = config_path()?;
    let mut config = load(&path)?;
    let mut had = false;
    if let Some(helper) = helper_for(&config, &key) {
        let (ok, out) = run_helper(&helper, "erase", key.as_bytes())?;
        if ok {
            had = true;
        } else if !out.contains("credentials not found") {
            return Err(Error::Credentials(out));
        }
    }
    if let Some(auths) = config.get_mut("auths").and_then(Value::as_object_mut) {
        let before = auths.len();
        auths.retain(|k, _| bare(k) != bare(&key));
        if auths.len() != before {
            had = true;
            save(&path, &config)?;
        }
    }
    Ok(had)
}

/// Takes `auths` out of the config (an empty map if it has none, or not a map).
fn take_auths(config: &mut Map<String, Value>) -> Map<String, Value> {
    match config.remove("auths") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_docker() {
        assert_eq!(server_key("docker.io"), DOCKER_HUB);
        assert_eq!(server_key("registry-1.docker.io"), DOCKER_HUB);
        assert_eq!(server_key("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(bare("https://reg.example:5000/v2/"), "reg.example:5000");
        assert_eq!(bare(DOCKER_HUB), "index.docker.io");
        assert_eq!(
            registry_host(Some("http://127.0.0.1:5000/")),
            "127.0.0.1:5000"
        );
        assert_eq!(registry_host(Some("")), "docker.io");
        assert_eq!(registry_host(None), "docker.io");
    }

    #[test]
    fn helpers_per_registry_win_over_the_store() {
        let config: Map<String, Value> = serde_json::from_value(json!({
            "credsStore": "desktop",
            "credHelpers": {"https://gcr.example": "gcloud"}
        }))
        .unwrap();
        assert_eq!(
            helper_for(&config, "gcr.example").as_deref(),
            Some("gcloud")
        );
        assert_eq!(
            helper_for(&config, "other.example").as_deref(),
            Some("desktop")
        );
        assert_eq!(helper_for(&Map::new(), "x"), None);
    }
}
