//! Resolving a user spec (`name[:group]`, `uid[:gid]`) against /etc/passwd and
//! /etc/group, as Docker does: for `exec -u`, read inside the running container (after
//! joining its mount namespace), never from its files on the host.

use std::io::Read;

use crate::error::{Error, Result};

/// The most of /etc/passwd or /etc/group that is read: a hostile container may make
/// them as large as it likes.
pub const MAX_DB_SIZE: u64 = 4 << 20;

/// A resolved user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups from /etc/group.
    pub additional_gids: Vec<u32>,
    /// Home directory (for `HOME`).
    pub home: String,
}

/// Reads `path` (of the current root) up to [`MAX_DB_SIZE`]; a missing file is empty.
pub(crate) fn read_db(path: &str) -> Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking: a FIFO there must not hang us.
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    if !f.metadata().is_ok_and(|m| m.is_file()) {
        return Err(Error::User(format!(
            "{path} in the container is not a regular file"
        )));
    }
    let mut text = String::new();
    let n = f
        .take(MAX_DB_SIZE + 1)
        .read_to_string(&mut text)
        .map_err(|e| Error::io("read", path, e))?;
    if n as u64 > MAX_DB_SIZE {
        return Err(Error::User(format!(
            "{path} in the container is larger than {} MiB",
            MAX_DB_SIZE >> 20
        )));
    }
    Ok(text)
}

/// Resolves `spec` (`""`, `name`, `uid`, `name:group`, `uid:gid`) against the text of an
/// /etc/passwd and /etc/group. Numeric ids need no entry, as in Docker.
pub fn resolve_in(spec: &str, passwd: &str, group: &str) -> Result<User> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect())
        .filter(|f: &Vec<&str>| f.len() >= 7)
        .collect();
    let found = entries
        .iter()
        .find(|f| f[0] == user || (user.parse::<u32>().is_ok() && f[2] == user));
    let (uid, mut gid, name, home) = match (found, user.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse().map_err(|_| {
                Error::User(format!("bad uid in the image's /etc/passwd for {user}"))
            })?,
            f[3].parse().unwrap_or(0),
            Some(f[0]),
            f[5].to_string(),
        ),
        (None, Ok(uid)) => (uid, 0, None, "/".to_string()),
        (None, Err(_)) => {
            return Err(Error::User(format!(
                "unable to find user {user}: no matching entries in passwd file"
            )))
        }
    };
    let groups: Vec<Vec<&str>> = group
        .lines()
        .map(|l| l.split(':').collect())
        .filter(|f: &Vec<&str>| f.len() >= 4)
        .collect();
    if let Some(g) = grp {
        gid = match groups.iter().find(|f| f[0] == g) {
            Some(f) => f[2]
                .parse()
                .map_err(|_| Error::User(format!("bad gid for group {g}")))?,
            None => g.parse().map_err(|_| {
                Error::User(format!(
                    "unable to find group {g}: no matching entries in group file"
                ))
            })?,
        };
    }
    let additional_gids = match (grp, name) {
        (None, Some(n)) => groups
            .iter()
            .filter(|f| f[3].split(',').any(|m| m == n))
            .filter_map(|f| f[2].parse().ok())
            .filter(|&g| g != gid)
            .collect(),
        _ => Vec::new(),
    };
    let home = if home.is_empty() { "/".into() } else { home };
    Ok(User {
        uid,
        gid,
        additional_gids,
        home,
    })
}

/// The home directory of `uid` in the text of an /etc/passwd (`None` when it has no
/// entry or an empty home).
pub(crate) fn home_of(passwd: &str, uid: u32) -> Option<String> {
    let uid = uid.to_string();
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 7 && f[2] == uid)
        .map(|f| f[5].to_string())
        .filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_by_uid() {
        assert_eq!(home_of(PASSWD, 33).as_deref(), Some("/var/www"));
        assert_eq!(home_of(PASSWD, 0).as_deref(), Some("/root"));
        assert_eq!(home_of(PASSWD, 1000), None);
        assert_eq!(home_of("x:x:5:5:::sh", 5), None);
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/false\n";
    const GROUP: &str = "root:x:0:\nwww:x:33:\nextra:x:99:www,other\n";

    #[test]
    fn resolves_names_and_numbers() {
        assert_eq!(resolve_in("", PASSWD, GROUP).unwrap().uid, 0);
        let w = resolve_in("www", PASSWD, GROUP).unwrap();
        assert_eq!(
            (w.uid, w.gid, w.additional_gids.as_slice(), w.home.as_str()),
            (33, 33, &[99][..], "/var/www")
        );
        let n = resolve_in("1000:1000", PASSWD, GROUP).unwrap();
        assert_eq!((n.uid, n.gid), (1000, 1000));
        assert_eq!(resolve_in("www:root", PASSWD, GROUP).unwrap().gid, 0);
        assert!(resolve_in("nobody", PASSWD, GROUP)
            .unwrap_err()
            .to_string()
            .contains("unable to find user nobody"));
        assert!(resolve_in("www:nogroup", PASSWD, GROUP).is_err());
    }
}
