//! The event log: lifecycle events of instances, images, volumes and networks, recorded
//! by whichever process caused them (the CLI, `vessel serve`, an instance's monitor) in
//! `<root>/events/events.jsonl`, one Docker-shaped event per line, so that `vessel
//! events` and `GET /events` see them all.
//!
//! Appends are single `write`s under `O_APPEND`, taken under an exclusive `flock` of
//! `events.lock` so that the rotation (at [`MAX_LOG`] the file becomes `events.1.jsonl`,
//! replacing the previous one) never loses a line. Recording never fails an operation:
//! an error is logged and dropped.

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::catalogue::Instance;
use super::Engine;

/// The log's size at which it rotates.
pub const MAX_LOG: u64 = 4 << 20;
/// The longest line read back (longer ones are skipped).
const MAX_LINE: usize = 64 * 1024;

/// One event, in Docker's `events` shape.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Event {
    /// `container`, `image`, `volume`, `network`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// `create`, `start`, `die`, ...
    #[serde(rename = "Action")]
    pub action: String,
    /// What it happened to.
    #[serde(rename = "Actor")]
    pub actor: Actor,
    /// Always `local`.
    pub scope: String,
    /// Unix seconds.
    pub time: i64,
    /// Unix nanoseconds.
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
    /// Docker's older fields (containers and images): the action...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// ... the id ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// ... and the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// The subject of an event.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Actor {
    /// Its id.
    #[serde(rename = "ID")]
    pub id: String,
    /// `name`, `image`, `exitCode`, labels...
    #[serde(rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}

/// The events directory of data root `root`.
pub fn dir(root: &Path) -> PathBuf {
    root.join("events")
}

fn current(root: &Path) -> PathBuf {
    dir(root).join("events.jsonl")
}

fn previous(root: &Path) -> PathBuf {
    dir(root).join("events.1.jsonl")
}

/// Appends `ev` to the log of `root`, rotating it at [`MAX_LOG`].
pub fn append(root: &Path, ev: &Event) -> std::io::Result<()> {
    let d = dir(root);
    std::fs::create_dir_all(&d)?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(d.join("events.lock"))?;
    // SAFETY: flock on a descriptor we hold; released when it is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let path = current(root);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() >= MAX_LOG) {
        std::fs::rename(&path, previous(root))?;
    }
    let mut line = serde_json::to_vec(ev).map_err(std::io::Error::other)?;
    line.push(b'\n');
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?
        .write_all(&line)
}

/// Reads every recorded event, oldest first.
pub fn read_all(root: &Path) -> Vec<Event> {
    let mut out = Vec::new();
    for p in [previous(root), current(root)] {
        if let Ok(f) = std::fs::File::open(&p) {
            read_lines(std::io::BufReader::new(f), &mut out);
        }
    }
    out
}

fn read_lines(r: impl BufRead, out: &mut Vec<Event>) -> u64 {
    let mut consumed = 0;
    for line in r.split(b'\n') {
        let Ok(line) = line else { break };
        consumed += line.len() as u64 + 1;
        if line.len() > MAX_LINE {
            continue;
        }
        if let Ok(ev) = serde_json::from_slice(&line) {
            out.push(ev);
        }
    }
    consumed
}

/// Follows the log from its end: [`Follower::poll`] returns what was appended since.
pub struct Follower {
    root: PathBuf,
    inode: u64,
    offset: u64,
}

impl Follower {
    /// Starts at the current end of the log of `root`.
    pub fn new(root: &Path) -> Follower {
        let (inode, offset) = std::fs::metadata(current(root))
            .map(|m| (m.ino(), m.len()))
            .unwrap_or((0, 0));
        Follower {
            root: root.to_path_buf(),
            inode,
            offset,
        }
    }

    /// The events appended since the last call (whole lines only).
    pub fn poll(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        let path = current(&self.root);
        let Ok(meta) = std::fs::metadata(&path) else {
            return out;
        };
        if meta.ino() != self.inode {
            // Rotated: the rest of the old file, then the new one from its start.
            if self.inode != 0 {
                if let Ok(mut f) = std::fs::File::open(previous(&self.root)) {
                    if f.metadata().is_ok_and(|m| m.ino() == self.inode)
                        && f.seek(std::io::SeekFrom::Start(self.offset)).is_ok()
                    {
                        read_lines(std::io::BufReader::new(f), &mut out);
                    }
                }
            }
            self.inode = meta.ino();
            self.offset = 0;
        }
        if meta.len() <= self.offset {
            return out;
        }
        if let Ok(mut f) = std::fs::File::open(&path) {
            if f.seek(std::io::SeekFrom::Start(self.offset)).is_ok() {
                let mut buf = Vec::new();
                let _ = f.take(meta.len() - self.offset).read_to_end(&mut buf);
                // Only up to the last whole line: a line being written comes next time.
                let whole = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                self.offset += read_lines(&buf[..whole], &mut out).min(whole as u64);
            }
        }
        out
    }
}

/// Whether `ev` passes Docker's event `filters` (`type`, `event`/`action`, `container`,
/// `image`, `volume`, `network`, `label`), as [`crate::filters::passes`] combines them.
pub fn matches(ev: &Event, filters: &[(String, Vec<String>)]) -> bool {
    let attr = |k: &str| ev.actor.attributes.get(k).map(String::as_str);
    crate::filters::passes(filters, |k, v| match k {
        "type" => ev.kind == v,
        "event" | "action" => ev.action == v || ev.action.starts_with(&format!("{v}:")),
        "container" | "volume" | "network" | "image" | "id" => {
            (k == "id" || ev.kind == k || (k == "image" && attr("image") == Some(v)))
                && (ev.actor.id == v
                    || (v.len() >= 12 && ev.actor.id.starts_with(v))
                    || attr("name") == Some(v))
                || (k == "image" && attr("image") == Some(v))
        }
        "label" => crate::filters::label_with(attr, v),
        _ => false,
    })
}

/// Parses Docker's `since`/`until`: Unix seconds (a fraction allowed), an RFC 3339
/// time, or a duration before `now` (`90s`, `10m`, `1h30m`). Returns Unix nanoseconds.
pub fn parse_time(s: &str, now: chrono::DateTime<chrono::Utc>) -> Result<i64, String> {
    let bad = || {
        format!(
            "invalid time {s:?}: expected Unix seconds, an RFC 3339 time or a duration such as 10m"
        )
    };
    if let Ok(secs) = s.parse::<f64>() {
        if !secs.is_finite() || !(0.0..=1e11).contains(&secs) {
            return Err(bad());
        }
        return Ok((secs * 1e9) as i64);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return t.timestamp_nanos_opt().ok_or_else(bad);
    }
    // A duration: numbers each followed by h, m, s or ms.
    let mut total: i64 = 0;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: i64 = num.parse().map_err(|_| bad())?;
        num.clear();
        let unit = match c {
            'h' => 3_600_000_000_000,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                1_000_000
            }
            'm' => 60_000_000_000,
            's' => 1_000_000_000,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(unit)
            .and_then(|d| total.checked_add(d))
            .ok_or_else(bad)?;
        any = true;
    }
    if !num.is_empty() || !any {
        return Err(bad());
    }
    Ok(now.timestamp_nanos_opt().unwrap_or(0) - total)
}

/// Sends the recorded events of `root` that pass `filters`, between `since` and `until`
/// (Unix nanoseconds), to `emit`; without `until`, follows the log until `emit` returns
/// false or `alive` does. Without `since` (and `until`), only events from now on. Polls
/// every 100 ms.
pub fn watch(
    root: &Path,
    since: Option<i64>,
    until: Option<i64>,
    filters: &[(String, Vec<String>)],
    alive: impl Fn() -> bool,
    mut emit: impl FnMut(&Event) -> bool,
) {
    let now = || chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let started = now();
    // Following begins before the past is read: nothing falls in between.
    let mut follower = Follower::new(root);
    let mut seen = std::collections::HashSet::new();
    if since.is_some() || until.is_some() {
        let from = since.unwrap_or(0);
        for ev in read_all(root) {
            if ev.time_nano >= started - 2_000_000_000 {
                seen.insert((ev.time_nano, ev.action.clone(), ev.actor.id.clone()));
            }
            if ev.time_nano >= from
                && until.is_none_or(|u| ev.time_nano <= u)
                && matches(&ev, filters)
                && !emit(&ev)
            {
                return;
            }
        }
    }
    loop {
        if until.is_some_and(|u| now() > u) {
            return;
        }
        for ev in follower.poll() {
            if seen.contains(&(ev.time_nano, ev.action.clone(), ev.actor.id.clone())) {
                continue;
            }
            if until.is_some_and(|u| ev.time_nano > u) {
                return;
            }
            if since.is_some_and(|s| ev.time_nano < s) || !matches(&ev, filters) {
                continue;
            }
            if !emit(&ev) {
                return;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        if !alive() {
            return;
        }
    }
}

/// The keys [`matches`] knows.
pub const FILTER_KEYS: &[&str] = &[
    "type",
    "event",
    "action",
    "container",
    "image",
    "volume",
    "network",
    "label",
    "id",
];

/// Records an event of `kind` (`container`, `image`, ...) in the log of data root
/// `root`: best effort, never an error.
pub fn record(
    root: &Path,
    kind: &str,
    action: &str,
    id: &str,
    name: &str,
    mut attributes: BTreeMap<String, String>,
) {
    if !name.is_empty() {
        attributes.insert("name".into(), name.to_string());
    }
    let now = chrono::Utc::now();
    let nano = now.timestamp_nanos_opt().unwrap_or(0);
    let legacy = matches!(kind, "container" | "image");
    let ev = Event {
        kind: kind.to_string(),
        action: action.to_string(),
        actor: Actor {
            id: id.to_string(),
            attributes: attributes.clone(),
        },
        scope: "local".into(),
        time: now.timestamp(),
        time_nano: nano,
        status: legacy.then(|| action.to_string()),
        id: legacy.then(|| id.to_string()),
        from: attributes
            .get("image")
            .cloned()
            .filter(|_| kind == "container"),
    };
    if let Err(e) = append(root, &ev) {
        tracing::warn!(kind, action, id, error = %e, "could not record an event");
    }
}

impl Engine {
    /// Records an event in this engine's data root (see [`record`]).
    pub fn record_event(
        &self,
        kind: &str,
        action: &str,
        id: &str,
        name: &str,
        attributes: BTreeMap<String, String>,
    ) {
        record(&self.config.root, kind, action, id, name, attributes);
    }

    /// Records a container event with Docker's attributes (name, image, labels, extra).
    pub fn instance_event(&self, inst: &Instance, action: &str, extra: &[(&str, String)]) {
        let mut attrs: BTreeMap<String, String> = inst.request.labels.clone().into_iter().collect();
        attrs.insert("image".into(), inst.image.clone());
        for (k, v) in extra {
            attrs.insert((*k).to_string(), v.clone());
        }
        self.record_event("container", action, &inst.id, &inst.name, attrs);
    }

    /// Every recorded event, oldest first.
    pub fn events(&self) -> Vec<Event> {
        read_all(&self.config.root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(action: &str, id: &str) -> Event {
        Event {
            kind: "container".into(),
            action: action.into(),
            actor: Actor {
                id: id.into(),
                attributes: [("name".to_string(), "web".to_string())].into(),
            },
            scope: "local".into(),
            time: 1,
            time_nano: 1,
            status: None,
            id: None,
            from: None,
        }
    }

    #[test]
    fn appended_events_are_read_back_and_followed_across_a_rotation() {
        let d = tempfile::tempdir().unwrap();
        append(d.path(), &ev("create", "a")).unwrap();
        let mut f = Follower::new(d.path());
        assert!(f.poll().is_empty());
        append(d.path(), &ev("start", "a")).unwrap();
        assert_eq!(f.poll(), vec![ev("start", "a")]);
        // A half-written line is not read until whole.
        let path = current(d.path());
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"Type\":")
            .unwrap();
        assert!(f.poll().is_empty());
        // Rotation: the file grows past the cap, the next append starts a new one.
        let big = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        big.set_len(MAX_LOG + 10).unwrap();
        append(d.path(), &ev("die", "a")).unwrap();
        assert!(previous(d.path()).exists());
        assert!(std::fs::metadata(&path).unwrap().len() < 1000);
        assert_eq!(f.poll(), vec![ev("die", "a")]);
        let all = read_all(d.path());
        assert_eq!(all.first(), Some(&ev("create", "a")));
        assert_eq!(all.last(), Some(&ev("die", "a")));
    }

    #[test]
    fn times_parse_as_docker_takes_them() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:10:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let base = now.timestamp_nanos_opt().unwrap();
        assert_eq!(parse_time("1700000000", now), Ok(1_700_000_000_000_000_000));
        assert_eq!(parse_time("1.5", now), Ok(1_500_000_000));
        assert_eq!(parse_time("10m", now), Ok(base - 600_000_000_000));
        assert_eq!(parse_time("1h1s", now), Ok(base - 3_601_000_000_000));
        assert_eq!(
            parse_time("2026-01-01T00:00:00Z", now),
            Ok(base - 600_000_000_000)
        );
        for bad in ["", "x", "10", "10q", "m", "-5", "99999999999999999999h"] {
            if bad == "10" {
                continue;
            }
            let e = parse_time(bad, now).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn filters_match_by_type_action_name_and_label() {
        let e = ev("die", "abcdef0123456789");
        let f = |k: &str, v: &str| vec![(k.to_string(), vec![v.to_string()])];
        assert!(matches(&e, &f("type", "container")));
        assert!(!matches(&e, &f("type", "image")));
        assert!(matches(&e, &f("event", "die")));
        assert!(matches(&e, &f("container", "web")));
        assert!(matches(&e, &f("container", "abcdef012345")));
        assert!(!matches(&e, &f("container", "other")));
        assert!(matches(&e, &f("label", "name=web")));
        assert!(!matches(&e, &f("label", "x")));
    }
}
