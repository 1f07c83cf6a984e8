//! Discover the cgroup hierarchies of this host from `/proc/self/mountinfo` and where the
//! calling process sits in them from `/proc/self/cgroup`. Pure parsing, unit-tested.

use std::path::{Path, PathBuf};

/// How cgroups are mounted on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// Only cgroup v1 hierarchies.
    Legacy,
    /// cgroup v1 controller hierarchies plus a (mostly empty) cgroup2 hierarchy.
    Hybrid,
    /// A single cgroup2 hierarchy holds every controller.
    Unified,
}

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// Where it is mounted, e.g. `/sys/fs/cgroup/memory`.
    pub mountpoint: PathBuf,
    /// The cgroup that is the root of this mount (`/` unless bind-mounted or in a cgroupns).
    pub root: String,
    /// The v1 controllers bound to it (`["cpu", "cpuacct"]`); empty for cgroup2.
    pub controllers: Vec<String>,
    /// Whether this is the cgroup2 hierarchy.
    pub v2: bool,
}

/// All cgroup hierarchies of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// v1/hybrid/v2.
    pub mode: CgroupMode,
    /// v1 hierarchies with at least one controller (named hierarchies such as
    /// `name=systemd` are left alone).
    pub v1: Vec<Hierarchy>,
    /// The cgroup2 hierarchy, if mounted.
    pub v2: Option<Hierarchy>,
}

/// v1 controllers vessel knows how to configure or must join.
const KNOWN_V1: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "hugetlb",
    "net_cls",
    "net_prio",
    "perf_event",
    "rdma",
    "misc",
];

/// Parse the text of `/proc/self/mountinfo` into the cgroup layout. Returns `None` when no
/// cgroup filesystem is mounted at all.
pub fn parse_mountinfo(text: &str) -> Option<Layout> {
    let mut v1: Vec<Hierarchy> = Vec::new();
    let mut v2: Option<Hierarchy> = None;
    for line in text.lines() {
        // 35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:5 - cgroup cgroup rw,memory
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let root = unescape(pre[3]);
        let mountpoint = PathBuf::from(unescape(pre[4]));
        match post[0] {
            // Prefer the canonical location if several are mounted.
            "cgroup2" if v2.is_none() || mountpoint == Path::new("/sys/fs/cgroup") => {
                v2 = Some(Hierarchy {
                    mountpoint,
                    root,
                    controllers: Vec::new(),
                    v2: true,
                });
            }
            "cgroup" => {
                let controllers: Vec<String> = post[2]
                    .split(',')
                    .filter(|o| KNOWN_V1.contains(o))
                    .map(str::to_string)
                    .collect();
                if controllers.is_empty() {
                    continue;
                }
                if v1.iter().any(|h| h.controllers == controllers) {
                    continue; // same hierarchy mounted twice (bind mounts)
                }
                v1.push(Hierarchy {
                    mountpoint,
                    root,
                    controllers,
                    v2: false,
                });
            }
            _ => {}
        }
    }
    let mode = match (v1.is_empty(), v2.is_some()) {
        (true, true) => CgroupMode::Unified,
        (false, true) => CgroupMode::Hybrid,
        (false, false) => CgroupMode::Legacy,
        (true, false) => return None,
    };
    Some(Layout { mode, v1, v2 })
}

/// mountinfo escapes space, tab, newline and backslash as octal `\040` etc.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = std::str::from_utf8(&b[i + 1..i + 4]).ok();
            if let Some(v) = oct.and_then(|o| u8::from_str_radix(o, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line of `/proc/<pid>/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The v1 controllers of the hierarchy (empty for the cgroup2 line `0::/path`).
    pub controllers: Vec<String>,
    /// The cgroup path, relative to the hierarchy root as seen from the reader's cgroupns.
    pub path: String,
}

/// Parse the text of `/proc/<pid>/cgroup`.
pub fn parse_proc_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|line| {
            let mut it = line.splitn(3, ':');
            let _id = it.next()?;
            let ctrls = it.next()?;
            let path = it.next()?;
            Some(Membership {
                controllers: if ctrls.is_empty() {
                    Vec::new()
                } else {
                    ctrls.split(',').map(str::to_string).collect()
                },
                path: path.to_string(),
            })
        })
        .collect()
}

/// The directory on the host filesystem of cgroup `cgroup` (a path as found in
/// `/proc/self/cgroup`) in hierarchy `h`.
pub fn host_dir(h: &Hierarchy, cgroup: &str) -> PathBuf {
    let rel = if h.root == "/" {
        cgroup
    } else {
        cgroup.strip_prefix(h.root.as_str()).unwrap_or(cgroup)
    };
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() {
        h.mountpoint.clone()
    } else {
        h.mountpoint.join(rel)
    }
}

/// The calling process's cgroup in hierarchy `h`, per its `/proc/self/cgroup` lines.
pub fn own_cgroup<'a>(h: &Hierarchy, memberships: &'a [Membership]) -> &'a str {
    memberships
        .iter()
        .find(|m| {
            if h.v2 {
                m.controllers.is_empty()
            } else {
                m.controllers == h.controllers
            }
        })
        .map(|m| m.path.as_str())
        .unwrap_or("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const SELF_HYBRID: &str = "\
9:name=systemd:/
8:pids:/
4:memory:/process_api/c7b8
1:cpu:/
0::/
";

    #[test]
    fn detects_hybrid() {
        let l = parse_mountinfo(HYBRID).unwrap();
        assert_eq!(l.mode, CgroupMode::Hybrid);
        assert_eq!(l.v1.len(), 8, "name=systemd is not a controller hierarchy");
        assert_eq!(
            l.v2.as_ref().unwrap().mountpoint,
            Path::new("/sys/fs/cgroup/unified")
        );
        let mem = l.v1.iter().find(|h| h.controllers == ["memory"]).unwrap();
        let m = parse_proc_cgroup(SELF_HYBRID);
        assert_eq!(own_cgroup(mem, &m), "/process_api/c7b8");
        assert_eq!(
            host_dir(mem, "/process_api/c7b8/vessel/x"),
            Path::new("/sys/fs/cgroup/memory/process_api/c7b8/vessel/x")
        );
        assert_eq!(own_cgroup(l.v2.as_ref().unwrap(), &m), "/");
    }

    #[test]
    fn detects_unified_and_legacy() {
        let v2 = "25 20 0:22 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        let l = parse_mountinfo(v2).unwrap();
        assert_eq!(l.mode, CgroupMode::Unified);
        assert!(l.v1.is_empty());

        let v1 = "\
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";
        let l = parse_mountinfo(v1).unwrap();
        assert_eq!(l.mode, CgroupMode::Legacy);
        assert_eq!(l.v1[0].controllers, ["cpu", "cpuacct"]);
        let m = parse_proc_cgroup("3:cpu,cpuacct:/a/b\n2:memory:/c\n");
        assert_eq!(own_cgroup(&l.v1[0], &m), "/a/b");
        assert_eq!(own_cgroup(&l.v1[1], &m), "/c");

        assert!(parse_mountinfo("1 0 0:1 / / rw - ext4 /dev/vda rw\n").is_none());
    }

    #[test]
    fn host_dir_strips_mount_root() {
        let h = Hierarchy {
            mountpoint: "/sys/fs/cgroup".into(),
            root: "/kubepods/pod1".into(),
            controllers: vec![],
            v2: true,
        };
        assert_eq!(
            host_dir(&h, "/kubepods/pod1/c"),
            Path::new("/sys/fs/cgroup/c")
        );
        assert_eq!(host_dir(&h, "/"), Path::new("/sys/fs/cgroup"));
        assert_eq!(unescape("/a\\040b"), "/a b");
    }
}
