//! Opening vessel's SQLite state databases (instances, images, network leases).
//!
//! vessel is daemonless: every command is a process that opens the database, does a few
//! statements and exits, and many run at once. SQLite's busy handler covers most
//! contention, but not all: while a fresh database is still in rollback-journal mode, two
//! processes that both hold a read lock and both want to write (switching to WAL, creating
//! the schema) deadlock, and SQLite resolves that by failing one of them at once with
//! `SQLITE_BUSY`, without waiting. [`open`] retries the whole set-up on such failures, so
//! the first commands run against a new data root do not fail with "database is locked".

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode};

/// How long a command waits for the database before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// Opens (creating) the database at `path` in WAL mode and creates `schema` (which must
/// be idempotent: `CREATE TABLE IF NOT EXISTS ...`).
///
/// Closing a connection does not checkpoint the WAL (writers do, every 64 pages): each
/// vessel command opens and closes its database, and a checkpoint on close would put two
/// fsyncs on the hot path of `vessel run`.
pub fn open(path: &Path, schema: &str) -> rusqlite::Result<Connection> {
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

fn try_open(path: &Path, schema: &str) -> rusqlite::Result<Connection> {
    let db = Connection::open(path)?;
    db.busy_timeout(BUSY_TIMEOUT)?;
    // WAL is persistent: only a new database needs the (exclusive) switch.
    let mode: String = db.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        db.pragma_update(None, "journal_mode", "WAL")?;
    }
    db.pragma_update(None, "synchronous", "NORMAL")?;
    // Checkpoint every 64 pages written (the default is 1000): with no checkpoint on
    // close, the next process to open the database rebuilds the WAL index by reading every
    // frame since the last checkpoint, and each vessel command is a new process.
    db.pragma_update(None, "wal_autocheckpoint", 64)?;
    db.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )?;
    db.pragma_update(None, "foreign_keys", "ON")?;
    db.execute_batch(schema)?;
    Ok(db)
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
    fn a_file_that_is_not_a_database_is_an_error_not_a_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let start = Instant::now();
        let e = open(&path, SCHEMA).unwrap_err();
        assert!(!is_busy(&e), "{e}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
