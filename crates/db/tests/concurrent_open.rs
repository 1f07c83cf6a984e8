//! Many processes opening one new database at once, as the first vessel commands against
//! a new data root do. Its own test binary, with this one test: it forks, and a fork
//! while another test thread holds SQLite's (or any) mutex would leave the child stuck.

use std::time::{Duration, Instant};

use vessel_db::open;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, who INTEGER NOT NULL);";

/// Separate processes, as vessel commands are: threads of one process share SQLite's
/// lock table and do not meet the deadlock.
#[test]
fn many_processes_opening_a_new_database_at_once_all_succeed() {
    for _ in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let n = 8;
        let go = Instant::now() + Duration::from_millis(200);
        let children: Vec<libc::pid_t> = (0..n)
            .map(|i| {
                // SAFETY: the test is single-threaded here; the child opens the database
                // and _exits.
                let forked = unsafe { libc::fork() };
                match forked {
                    0 => {
                        while Instant::now() < go {}
                        let ok = open(&path, SCHEMA)
                            .and_then(|db| db.execute("INSERT INTO t (who) VALUES (?1)", [i]))
                            .is_ok();
                        // SAFETY: ends the child without running the parent's exit handlers.
                        unsafe { libc::_exit(if ok { 0 } else { 1 }) }
                    }
                    pid => {
                        assert!(pid > 0, "fork failed");
                        pid
                    }
                }
            })
            .collect();
        for pid in children {
            let mut status = 0;
            // SAFETY: waiting for our own child with a valid status pointer.
            let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
            assert_eq!(waited, pid);
            assert!(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                "a process failed to open the new database"
            );
        }
        let db = open(&path, SCHEMA).unwrap();
        let rows: i64 = db
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, n);
        let mode: String = db
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }
}
