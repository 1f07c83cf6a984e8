//! The instance catalogue: one SQLite table shared by every `vessel` process and monitor.
//!
//! Names are unique by constraint, so two concurrent `vessel run --name x` cannot both
//! win. Each instance's full request is kept as JSON beside the columns `ps` needs.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use super::request::RunRequest;
use super::{EngineError, Result};

/// Where an instance is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Recorded, not started (or its start was interrupted).
    Created,
    /// Its process (or VM) runs.
    Running,
    /// It ran and finished; the exit code is recorded.
    Exited,
    /// Its monitor died without recording an end: the state is unknown until `rm -f`.
    Dead,
}

impl Status {
    /// The word `ps` and `inspect` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }

    fn parse(s: &str) -> Status {
        match s {
            "running" => Status::Running,
            "exited" => Status::Exited,
            "dead" => Status::Dead,
            _ => Status::Created,
        }
    }
}

/// One instance (container or VM) as recorded.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Instance {
    /// 64 hex digits.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    /// The image id it was created from.
    pub image_id: String,
    /// Recorded status (see [`super::Engine::refresh`] for the effective one).
    pub status: Status,
    /// The instance's main process on the host (container init, or the VMM).
    pub pid: Option<i32>,
    /// The monitor's pid and its start time (to tell pid reuse).
    pub monitor: Option<(i32, u64)>,
    /// Exit code once exited.
    pub exit_code: Option<i32>,
    /// Whether the kernel's OOM killer ended it.
    pub oom_killed: bool,
    /// RFC 3339 times.
    pub created: String,
    /// When its process started.
    pub started_at: Option<String>,
    /// When it finished.
    pub finished_at: Option<String>,
    /// Why it failed to start, if it did.
    pub error: Option<String>,
    /// The validated request it was created from.
    pub request: RunRequest,
}

/// Handle on the catalogue database.
pub struct Catalogue {
    path: PathBuf,
    /// Opened by [`Catalogue::open`], or on first use after [`Catalogue::deferred`].
    db: std::sync::OnceLock<Mutex<vessel_db::Db>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS instances (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    image TEXT NOT NULL,
    image_id TEXT NOT NULL,
    status TEXT NOT NULL,
    pid INTEGER,
    monitor_pid INTEGER,
    monitor_start INTEGER,
    exit_code INTEGER,
    oom_killed INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    error TEXT,
    request TEXT NOT NULL
);
";

const COLUMNS: &str =
    "id, name, image, image_id, status, pid, monitor_pid, monitor_start, exit_code, oom_killed, \
                       created, started_at, finished_at, error, request";

impl Catalogue {
    /// Opens (creating) `<root>/instances.db`.
    pub fn open(root: &Path) -> Result<Catalogue> {
        let c = Catalogue::deferred(root);
        drop(c.db()?);
        Ok(c)
    }

    /// The catalogue under `root`, whose database is opened on first use: for a monitor
    /// that has its instance already and so can start it before opening anything.
    pub fn deferred(root: &Path) -> Catalogue {
        Catalogue {
            path: root.join("instances.db"),
            db: std::sync::OnceLock::new(),
        }
    }

    /// Loads the database's schema into this connection, which the first statement would
    /// otherwise do: for a process that has time to spare before its first real one.
    pub fn warm(&self) {
        if let Ok(db) = self.db() {
            let _ = db.execute_batch("SELECT 1 FROM instances LIMIT 0");
        }
    }

    fn db(&self) -> Result<std::sync::MutexGuard<'_, vessel_db::Db>> {
        let db = match self.db.get() {
            Some(db) => db,
            None => {
                let root = self.path.parent().unwrap_or(Path::new("/"));
                vessel_db::private_dir(root, 0o711)
                    .map_err(|e| EngineError::io("create", root, e))?;
                let db = vessel_db::open(&self.path, SCHEMA)
                    .map_err(|e| EngineError::Db(self.path.clone(), e))?;
                self.db.get_or_init(|| Mutex::new(db))
            }
        };
        Ok(db.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> EngineError + '_ {
        move |e| EngineError::Db(self.path.clone(), e)
    }

    /// Records a new instance; fails with [`EngineError::NameInUse`] if the name is taken.
    pub fn insert(&self, inst: &Instance) -> Result<()> {
        let request = serde_json::to_string(&inst.request)
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        let r = self.db()?.execute(
            "INSERT INTO instances (id, name, image, image_id, status, created, request) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![inst.id, inst.name, inst.image, inst.image_id, inst.status.as_str(), inst.created, request],
        );
        match r {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(EngineError::NameInUse(inst.name.clone()))
            }
            r => r.map(|_| ()).map_err(self.err()),
        }
    }

    /// Renames an instance; fails with [`EngineError::NameInUse`] if `name` is taken.
    pub fn rename(&self, id: &str, name: &str) -> Result<()> {
        let r = self.db()?.execute(
            "UPDATE instances SET name = ?2 WHERE id = ?1",
            params![id, name],
        );
        match r {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(EngineError::NameInUse(name.to_string()))
            }
            r => r.map(|_| ()).map_err(self.err()),
        }
    }

    /// Replaces an instance's recorded request (once create has decided its network).
    pub fn set_request(&self, id: &str, request: &RunRequest) -> Result<()> {
        let request =
            serde_json::to_string(request).map_err(|e| EngineError::Internal(e.to_string()))?;
        self.db()?
            .execute(
                "UPDATE instances SET request = ?2 WHERE id = ?1",
                params![id, request],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Records a successful start, and the monitor (pid and start time) that watches it.
    pub fn set_running(
        &self,
        id: &str,
        pid: i32,
        started_at: &str,
        monitor: Option<(i32, u64)>,
    ) -> Result<()> {
        let (mpid, mstart) = monitor.map_or((None, None), |(p, s)| (Some(p), Some(s as i64)));
        self.db()?
            .execute(
                "UPDATE instances SET status = 'running', pid = ?2, started_at = ?3, error = NULL, exit_code = NULL, \
                 finished_at = NULL, oom_killed = 0, monitor_pid = COALESCE(?4, monitor_pid), \
                 monitor_start = COALESCE(?5, monitor_start) WHERE id = ?1",
                params![id, pid, started_at, mpid, mstart],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Records the end of a run (or a failed start, with `error`).
    pub fn set_exited(
        &self,
        id: &str,
        code: i32,
        oom: bool,
        finished_at: &str,
        error: Option<&str>,
    ) -> Result<()> {
        self.db()?
            .execute(
                "UPDATE instances SET status = 'exited', exit_code = ?2, oom_killed = ?3, finished_at = ?4, error = ?5, \
                 monitor_pid = NULL WHERE id = ?1",
                params![id, code, oom as i64, finished_at, error],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Marks an instance whose monitor vanished.
    pub fn set_dead(&self, id: &str, why: &str) -> Result<()> {
        self.db()?
            .execute(
                "UPDATE instances SET status = 'dead', error = ?2 WHERE id = ?1",
                params![id, why],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Forgets an instance.
    pub fn delete(&self, id: &str) -> Result<()> {
        self.db()?
            .execute("DELETE FROM instances WHERE id = ?1", params![id])
            .map_err(self.err())?;
        Ok(())
    }

    /// Every instance, newest first.
    pub fn list(&self) -> Result<Vec<Instance>> {
        let db = self.db()?;
        let mut stmt = db
            .prepare(&format!(
                "SELECT {COLUMNS} FROM instances ORDER BY created DESC"
            ))
            .map_err(self.err())?;
        let rows = stmt.query_map([], row_to_instance).map_err(self.err())?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.err())
    }

    /// Finds an instance by exact name, full id, or unique id prefix.
    pub fn find(&self, key: &str) -> Result<Instance> {
        let db = self.db()?;
        let by_name = db
            .query_row(
                &format!("SELECT {COLUMNS} FROM instances WHERE name = ?1 OR id = ?1"),
                params![key],
                row_to_instance,
            )
            .optional()
            .map_err(self.err())?;
        if let Some(i) = by_name {
            return Ok(i);
        }
        if !key.is_empty() && key.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut stmt = db
                .prepare(&format!("SELECT {COLUMNS} FROM instances WHERE id LIKE ?1"))
                .map_err(self.err())?;
            let mut found = stmt
                .query_map(
                    params![format!("{}%", key.to_ascii_lowercase())],
                    row_to_instance,
                )
                .map_err(self.err())?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(self.err())?;
            match found.len() {
                1 => return Ok(found.remove(0)),
                0 => {}
                _ => return Err(EngineError::Ambiguous(key.to_string())),
            }
        }
        Err(EngineError::NoSuchInstance(key.to_string()))
    }
}

fn row_to_instance(r: &Row<'_>) -> rusqlite::Result<Instance> {
    let request: String = r.get(14)?;
    let request: RunRequest = serde_json::from_str(&request).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(14, rusqlite::types::Type::Text, Box::new(e))
    })?;
    let monitor = match (r.get::<_, Option<i32>>(6)?, r.get::<_, Option<i64>>(7)?) {
        (Some(p), Some(s)) => Some((p, s as u64)),
        _ => None,
    };
    Ok(Instance {
        id: r.get(0)?,
        name: r.get(1)?,
        image: r.get(2)?,
        image_id: r.get(3)?,
        status: Status::parse(&r.get::<_, String>(4)?),
        pid: r.get(5)?,
        monitor,
        exit_code: r.get(8)?,
        oom_killed: r.get::<_, i64>(9)? != 0,
        created: r.get(10)?,
        started_at: r.get(11)?,
        finished_at: r.get(12)?,
        error: r.get(13)?,
        request,
    })
}

/// A pid's start time (field 22 of `/proc/<pid>/stat`), to tell a live process from a
/// reused pid. `None` if the process does not exist (or is a zombie).
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    if fields.first() == Some(&"Z") || fields.first() == Some(&"X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Whether the process `pid` that started at `start` still runs.
pub fn alive(pid: i32, start: u64) -> bool {
    process_start_time(pid) == Some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_is_stable() {
        let me = std::process::id() as i32;
        let t = process_start_time(me).expect("own stat");
        assert!(alive(me, t));
        assert!(!alive(me, t + 1));
        assert_eq!(process_start_time(i32::MAX), None);
    }
}
