//! Opening vessel's SQLite state databases (instances, images, network leases).
//!
//! vessel is daemonless: every command is a process that opens the database, does a few
//! statements and exits, and many run at once. SQLite's busy handler covers most
//! contention, but not all: while a fresh database is still in rollback-journal mode, two
//! processes that both hold a read lock and both want to write (switching to WAL, creating
//! the schema) deadlock, and SQLite resolves that by failing one of them at once with
//! `SQLITE_BUSY`, without waiting. [`open`] retries the whole set-up on such failures, so
//! the first commands run against a new data root do not fail with "database is locked".
//!
//! Checkpoints (copying the WAL back into the database, with two fsyncs) are kept off the
//! path of a command's result: a commit only notes that the WAL has grown past
//! [`CHECKPOINT_PAGES`], and the connection checkpoints when it is dropped, at the end of
//! the command, unless the process called [`defer_checkpoints`] (a `vessel run` leaves
//! them to its monitor, which runs after the run has returned).

use std::ops::{Deref, DerefMut};
use std::os::raw::c_int;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rusqlite::hooks::Wal;
use rusqlite::{Connection, ErrorCode};

/// WAL size, in pages, past which the next drop of a connection checkpoints. With no
/// checkpoint, the next process to open the database rebuilds the WAL index by reading
/// every frame since the last one, and each vessel command is a new process: so it is
/// far below SQLite's default of 1000.
pub const CHECKPOINT_PAGES: c_int = 64;

/// How long a checkpoint waits for other processes' transactions.
const CHECKPOINT_WAIT: Duration = Duration::from_millis(250);

/// A commit of this process left a WAL of [`CHECKPOINT_PAGES`] or more.
static DUE: AtomicBool = AtomicBool::new(false);
/// This process leaves checkpoints to another one ([`defer_checkpoints`]).
static DEFERRED: AtomicBool = AtomicBool::new(false);

fn note_wal_size(_: &Wal, pages: c_int) -> rusqlite::Result<()> {
    if pages >= CHECKPOINT_PAGES {
        DUE.store(true, Ordering::Relaxed);
    }
    Ok(())
}

/// Connections of this process no longer checkpoint when dropped: a later process
/// (one that writes to the same databases) will. For a command whose caller waits for
/// its exit.
pub fn defer_checkpoints() {
    DEFERRED.store(true, Ordering::Relaxed);
}

/// A database connection that checkpoints, when due, as it is dropped.
#[derive(Debug)]
pub struct Db(Connection);

impl Deref for Db {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.0
    }
}

impl DerefMut for Db {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.0
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if DUE.load(Ordering::Relaxed) && !DEFERRED.load(Ordering::Relaxed) {
            // TRUNCATE, not PASSIVE: the WAL must also start again from empty. The first
            // connection of a process to open a database that no other process has open
            // rebuilds the WAL index from every frame in the WAL, and afterwards counts
            // none of them as copied back; a WAL that is only ever copied back, never
            // emptied, grows without end and is copied back again in full each time.
            // (RESTART is not enough: until the next write rewrites the WAL's header, a
            // new process's recovery reads the old frames back in, again as not copied.)
            // Emptying it waits for readers and writers of other processes: briefly,
            // then it is left to the next checkpoint.
            let _ = self.0.busy_timeout(CHECKPOINT_WAIT);
            match self
                .0
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    r.get::<_, i64>(0)
                }) {
                Ok(0) => {}
                Ok(_) => tracing::debug!("WAL checkpoint of {:?}: busy", self.0.path()),
                Err(e) => tracing::debug!("WAL checkpoint of {:?}: {e}", self.0.path()),
            }
        }
    }
}

/// How long a command waits for the database before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// Opens (creating) the database at `path` in WAL mode and creates `schema` (which must
/// be idempotent: `CREATE TABLE IF NOT EXISTS ...`).
///
/// Closing a connection does not checkpoint the WAL by SQLite's rule (the last
/// connection to close does), nor do commits: see the module's documentation.
pub fn open(path: &Path, schema: &str) -> rusqlite::Result<Db> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    let mut pause = Duration::from_millis(2);
    loop {
        match try_open(path, schema) {
            Err(e) if is_busy(&e) && Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            r => return r,
        }
    }
}

/// Gives `path` the permission bits `mode` unless it has them (one stat when it does).
/// vessel's state is root's: the data root is `0711` (traversal only, so that a user
/// namespace's root reaches its own instance's files), what is under it `0700`/`0600`.
pub fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)?;
    if meta.permissions().mode() & 0o7777 != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Creates the directory `path` (and its parents) and gives it `mode`.
pub fn private_dir(path: &Path, mode: u32) -> std::io::Result<()> {
    std::fs::create_dir_all(path)?;
    restrict(path, mode)
}

/// SQLite's own busy handler sleeps 1, 2, 5, 10... ms between tries. A vessel command
/// meets a busy database mostly for well under a millisecond: when a `vessel run` and its
/// monitor open the same database at once, one rebuilds the WAL index from the WAL while
/// the other waits. So this one starts at 25 µs and doubles up to 5 ms, and gives up after
/// [`BUSY_TIMEOUT`] in all.
fn busy_wait(tries: c_int) -> bool {
    let tries = u32::try_from(tries).unwrap_or(0);
    let pause = busy_pause(tries);
    if busy_waited(tries) + pause > BUSY_TIMEOUT {
        return false;
    }
    std::thread::sleep(pause);
    true
}

const BUSY_FIRST_PAUSE: Duration = Duration::from_micros(25);
const BUSY_MAX_PAUSE: Duration = Duration::from_millis(5);

/// The pause before try `n + 1` (`n` tries made).
fn busy_pause(n: u32) -> Duration {
    BUSY_FIRST_PAUSE
        .saturating_mul(1 << n.min(16))
        .min(BUSY_MAX_PAUSE)
}

/// The pauses before the first `n` tries, in all.
fn busy_waited(n: u32) -> Duration {
    // The pauses double until they reach the cap (8 of them), then stay there.
    let doubling = n.min(8);
    let ramp: Duration = (0..doubling).map(busy_pause).sum();
    ramp + BUSY_MAX_PAUSE.saturating_mul(n - doubling)
}

fn try_open(path: &Path, schema: &str) -> rusqlite::Result<Db> {
    let db = Connection::open(path)?;
    // The state of the host's containers is root's alone; SQLite gives its WAL and shm
    // files the database file's mode.
    restrict(path, 0o600).map_err(|e| {
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_PERM),
            Some(format!("chmod 0600 {}: {e}", path.display())),
        )
    })?;
    // SQLite makes the -wal and -shm files with the database's mode, but those of a
    // database made by an older vessel may still be world-readable.
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        match restrict(Path::new(&side), 0o600) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_PERM),
                    Some(format!("chmod 0600 {}: {e}", Path::new(&side).display())),
                ))
            }
            _ => {}
        }
    }
    db.busy_handler(Some(busy_wait))?;
    // WAL is persistent: only a new database needs the (exclusive) switch.
    let mode: String = db.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        db.pragma_update(None, "journal_mode", "WAL")?;
    }
    db.pragma_update(None, "synchronous", "NORMAL")?;
    // No checkpoint inside a commit; the hook only notes the WAL's size (it replaces
    // SQLite's own auto-checkpoint hook).
    db.wal_hook(Some(note_wal_size));
    db.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )?;
    db.pragma_update(None, "foreign_keys", "ON")?;
    // Parsing the schema's statements costs more than anything else a short command does
    // with the database, and every command is a new process: the database records which
    // schema it has (in its header's user_version), and a matching one is not run again.
    let version = schema_version(schema);
    let current: i32 = db.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current != version {
        db.execute_batch(&format!(
            "BEGIN IMMEDIATE; {schema}; PRAGMA user_version = {version}; COMMIT;"
        ))?;
    }
    Ok(Db(db))
}

/// The user_version that marks a database as having `schema`: a hash of its text (FNV-1a,
/// folded to a positive i32), so that any change to the schema runs it again. 0, SQLite's
/// default, is the empty schema.
fn schema_version(schema: &str) -> i32 {
    let s = schema.trim();
    if s.is_empty() {
        return 0;
    }
    let h = s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    ((h ^ (h >> 32)) as u32 & 0x7fff_ffff).max(1) as i32
}

/// Whether `e` is a lock conflict that a later attempt may not meet.
pub fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str =
        "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, who INTEGER NOT NULL);";

    #[test]
    fn commits_leave_the_wal_alone_and_the_drop_checkpoints_and_empties_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let wal = dir.path().join("state.db-wal");
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let db = open(&path, "CREATE TABLE IF NOT EXISTS b (x BLOB NOT NULL);").unwrap();
        let before = size(&path);
        // Each row fills a page or so: well past the checkpoint threshold.
        for _ in 0..2 * CHECKPOINT_PAGES {
            db.execute("INSERT INTO b VALUES (zeroblob(3000))", [])
                .unwrap();
        }
        assert_eq!(size(&path), before, "a commit copied the WAL back");
        assert!(size(&wal) > 2 * CHECKPOINT_PAGES as u64 * 3000);
        drop(db);
        assert_eq!(size(&wal), 0, "the WAL was not emptied");
        assert!(size(&path) > 2 * CHECKPOINT_PAGES as u64 * 3000);
        let db = open(&path, "").unwrap();
        let n: i64 = db
            .query_row("SELECT count(*) FROM b", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2 * CHECKPOINT_PAGES as i64);
    }

    #[test]
    fn the_busy_wait_starts_short_and_gives_up_after_the_timeout() {
        assert_eq!(busy_pause(0), Duration::from_micros(25));
        assert_eq!(busy_pause(1), Duration::from_micros(50));
        assert_eq!(busy_pause(40), BUSY_MAX_PAUSE);
        assert_eq!(busy_waited(2), Duration::from_micros(75));
        let all: Duration = (0..20).map(busy_pause).sum();
        assert_eq!(busy_waited(20), all);
        // About BUSY_TIMEOUT / BUSY_MAX_PAUSE tries in all.
        let limit = (0..)
            .find(|&n| busy_waited(n) + busy_pause(n) > BUSY_TIMEOUT)
            .unwrap();
        assert!((11_900..12_100).contains(&limit), "{limit}");
    }

    #[test]
    fn the_schema_runs_once_per_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let db = open(&path, SCHEMA).unwrap();
        let v: i32 = db
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, schema_version(SCHEMA));
        assert_ne!(v, 0);
        // A table the schema would create, dropped behind its back: a matching version
        // does not run the schema again...
        db.execute_batch("DROP TABLE t").unwrap();
        drop(db);
        let db = open(&path, SCHEMA).unwrap();
        let tables = |db: &Db| -> i64 {
            db.query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 't'",
                [],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert_eq!(tables(&db), 0);
        drop(db);
        // ...and a changed schema does, and records its own version.
        let grown =
            "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, who INTEGER NOT NULL);\n\
                     CREATE TABLE IF NOT EXISTS u (x INTEGER);";
        let db = open(&path, grown).unwrap();
        assert_eq!(tables(&db), 1);
        let v: i32 = db
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, schema_version(grown));
    }

    #[test]
    fn a_file_that_is_not_a_database_is_an_error_not_a_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let start = Instant::now();
        let e = open(&path, SCHEMA).unwrap_err();
        assert!(!is_busy(&e), "{e}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn wal_and_shm_of_an_older_database_are_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let db = open(&path, SCHEMA).unwrap();
        db.execute("INSERT INTO t (who) VALUES (1)", []).unwrap();
        let side = |s: &str| dir.path().join(format!("x.db{s}"));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        // As an older vessel left them: readable by every local user.
        for s in ["-wal", "-shm"] {
            assert!(side(s).exists(), "{s}");
            std::fs::set_permissions(side(s), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let again = open(&path, SCHEMA).unwrap();
        for s in ["-wal", "-shm"] {
            assert_eq!(mode(&side(s)), 0o600, "{s}");
        }
        drop((db, again));
    }
}
