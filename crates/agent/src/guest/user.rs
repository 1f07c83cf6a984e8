//! Resolves the config's `user` (`uid[:gid]` or `name[:group]`) against the image's own
//! `/etc/passwd` and `/etc/group`, the way container engines do: never the host's, never
//! through NSS (the agent is static and the image may have any libc, or none).

/// Who the command runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (includes `gid`).
    pub groups: Vec<u32>,
    /// Home directory from `/etc/passwd`, for `HOME` when the config does not set it.
    pub home: Option<String>,
}

struct Passwd<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct Group<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = Passwd<'_>> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 {
            return None;
        }
        Some(Passwd {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

fn group_entries(text: &str) -> impl Iterator<Item = Group<'_>> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 {
            return None;
        }
        Some(Group {
            name: f[0],
            gid: f[2].parse().ok()?,
            members: f[3].split(',').filter(|m| !m.is_empty()).collect(),
        })
    })
}

/// Resolves `spec` ("" = root) with the contents of the image's `/etc/passwd` and
/// `/etc/group` (empty strings when the files are missing). A numeric uid need not exist
/// in `/etc/passwd` (its gid is then 0); a name must.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<Identity, String> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let entry = match user.parse::<u32>() {
        Ok(uid) => passwd_entries(passwd).find(|p| p.uid == uid),
        Err(_) => Some(
            passwd_entries(passwd)
                .find(|p| p.name == user)
                .ok_or_else(|| format!("user {user:?} not found in the image's /etc/passwd"))?,
        ),
    };
    let uid = match &entry {
        Some(p) => p.uid,
        None => user
            .parse::<u32>()
            .map_err(|_| format!("bad user {user:?}"))?,
    };
    let gid = match grp {
        None | Some("") => entry.as_ref().map_or(0, |p| p.gid),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_entries(group)
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| format!("group {g:?} not found in the image's /etc/group"))?,
        },
    };
    let mut groups = vec![gid];
    if let Some(name) = entry.as_ref().map(|p| p.name) {
        for g in group_entries(group) {
            if g.members.contains(&name) && !groups.contains(&g.gid) {
                groups.push(g.gid);
            }
        }
    }
    Ok(Identity {
        uid,
        gid,
        groups,
        home: entry.map(|p| p.home.to_string()).filter(|h| !h.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                          daemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
                          broken line\n\
                          app:x:1000:1000::/home/app:/bin/sh\n\
                          nobody:x:65534:65534:nobody:/home:/bin/false\n";
    const GROUP: &str = "root:x:0:\n\
                         wheel:x:10:app,daemon\n\
                         app:x:1000:\n\
                         audio:x:29:app\n\
                         nogroup:x:65534:\n";

    #[test]
    fn empty_is_root() {
        let id = resolve("", PASSWD, GROUP).unwrap();
        assert_eq!((id.uid, id.gid, id.groups), (0, 0, vec![0]));
        assert_eq!(id.home.as_deref(), Some("/root"));
    }

    #[test]
    fn names_resolve_with_supplementary_groups() {
        let id = resolve("app", PASSWD, GROUP).unwrap();
        assert_eq!((id.uid, id.gid), (1000, 1000));
        assert_eq!(id.groups, vec![1000, 10, 29]);
        assert_eq!(id.home.as_deref(), Some("/home/app"));
        let id = resolve("app:audio", PASSWD, GROUP).unwrap();
        assert_eq!(id.gid, 29);
        assert_eq!(id.groups, vec![29, 10]);
    }

    #[test]
    fn numbers_need_no_entry() {
        let id = resolve("4242", PASSWD, GROUP).unwrap();
        assert_eq!((id.uid, id.gid, id.home), (4242, 0, None));
        let id = resolve("4242:77", "", "").unwrap();
        assert_eq!((id.uid, id.gid, id.groups), (4242, 77, vec![77]));
        let id = resolve("65534", PASSWD, GROUP).unwrap();
        assert_eq!(id.gid, 65534);
    }

    #[test]
    fn unknown_names_are_errors_naming_them() {
        let err = resolve("ghost", PASSWD, GROUP).unwrap_err();
        assert!(
            err.contains("ghost") && err.contains("/etc/passwd"),
            "{err}"
        );
        let err = resolve("app:ghosts", PASSWD, GROUP).unwrap_err();
        assert!(
            err.contains("ghosts") && err.contains("/etc/group"),
            "{err}"
        );
        assert!(resolve("root", "", "").is_err());
    }
}
