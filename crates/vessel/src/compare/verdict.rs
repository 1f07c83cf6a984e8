//! The judgements `compare` draws from what it read, as pure functions: what each one
//! would get wrong, and the check against it, are written next to it and unit-tested with
//! made-up readings (a host list that changes during the run, a volatile overlay...).

use std::collections::BTreeSet;

use super::measure::{FileSystem, Perf, Timings};
use super::report::Cell;

/// How much of a kernel-wide list (symbols, modules) the host has an instance can read.
#[derive(Debug, Clone, PartialEq)]
pub enum Visibility {
    /// The instance runs on the host's kernel and reads (nearly) all of the host's list.
    Yes {
        /// Share of the host's entries read inside, 0 to 1.
        share: f64,
    },
    /// The host's kernel, but only part of its list is readable inside (a filtered view).
    Partly {
        /// Share read inside.
        share: f64,
    },
    /// The host's kernel, none of its list readable inside.
    Hidden,
    /// The list cannot be read inside at all.
    Unreadable,
    /// Another kernel: what the instance reads is that kernel's list, never the host's,
    /// whatever names the two have in common.
    OwnKernel {
        /// Share of the host's names that also occur in the instance's kernel's list.
        common: f64,
    },
    /// The host lists nothing that was there throughout the reading.
    HostListsNone,
}

/// Share of the host's list read inside at or above which it counts as all of it.
const ALL: f64 = 0.99;

/// Judges what an instance can read of a host list.
///
/// Wrong if: (1) the host's list changes while the instance reads its own (the host
/// loads a module, the VM side's start loads several): the host is read just before and
/// just after the instance, and only entries present at both times count, so an entry
/// that came or went in between counts for nothing; (2) the instance runs another kernel
/// whose names coincide with the host's (the same kernel version): `same_kernel` (boot id
/// equal) decides whose list it is, so this row can never contradict the "own kernel"
/// row; names shared with another kernel are reported, not taken for the host's.
pub fn visibility<T: Ord>(
    same_kernel: bool,
    inside: Option<&[T]>,
    host_before: &[T],
    host_after: &[T],
) -> Visibility {
    let after: BTreeSet<&T> = host_after.iter().collect();
    let stable: BTreeSet<&T> = host_before.iter().filter(|e| after.contains(e)).collect();
    // Nothing of the host's to see (a kernel without loadable modules has no
    // /proc/modules, inside or out); another kernel's list is still its own.
    if stable.is_empty() && same_kernel {
        return Visibility::HostListsNone;
    }
    let Some(inside) = inside else {
        return Visibility::Unreadable;
    };
    if stable.is_empty() {
        return Visibility::OwnKernel { common: 0.0 };
    }
    let inside: BTreeSet<&T> = inside.iter().collect();
    let share = stable.iter().filter(|e| inside.contains(*e)).count() as f64 / stable.len() as f64;
    match (same_kernel, share) {
        (false, common) => Visibility::OwnKernel { common },
        (true, s) if s >= ALL => Visibility::Yes { share: s },
        (true, s) if s > 0.0 => Visibility::Partly { share: s },
        (true, _) => Visibility::Hidden,
    }
}

/// A share as a percentage for people: `100%`, `99.7%`, `0.3%`.
pub fn percent(share: f64) -> String {
    let p = share * 100.0;
    if (p - p.round()).abs() < 0.05 {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

/// The cell of a visibility row. `noun` names the entries ("symbols"), `listed` how
/// many the instance listed, `host_count` how many of the host's entries were compared.
pub fn visibility_text(v: &Visibility, noun: &str, listed: usize, host_count: usize) -> String {
    match v {
        Visibility::Yes { share } => format!(
            "yes ({} of the host's {host_count} {noun} read inside, at the same moment)",
            percent(*share)
        ),
        Visibility::Partly { share } => format!(
            "partly ({} of the host's {host_count} {noun} read inside; the same kernel)",
            percent(*share)
        ),
        Visibility::Hidden => {
            format!("no (none of the host's {host_count} {noun} readable; the same kernel)")
        }
        Visibility::Unreadable => format!("no ({noun} unreadable inside)"),
        Visibility::OwnKernel { common } => format!(
            "no (its own kernel's {listed} {noun}; {} of the host's names also occur there)",
            percent(*common)
        ),
        Visibility::HostListsNone => {
            format!("no (none to see: the host's kernel lists no {noun})")
        }
    }
}

/// "Host processes visible".
///
/// Wrong if judged by counting (a guest with more processes than the host would "see the
/// host's"): the host's processes are visible exactly when the instance's `/proc` is the
/// host kernel's and lists the host's PID namespace.
pub fn processes_visible(same_kernel: bool, pid_ns_inside: &str, pid_ns_host: &str) -> bool {
    same_kernel && !pid_ns_inside.is_empty() && pid_ns_inside == pid_ns_host
}

/// Whether two boot ids name the same running kernel.
///
/// Wrong if a boot id could not be read (two empty strings are equal): an unreadable or
/// malformed one is an error, so the kernel rows fail rather than claim a shared kernel.
pub fn same_kernel(inside: &str, host: &str) -> Result<bool, String> {
    let ok = |b: &str| b.len() == 36 && b.bytes().all(|c| c.is_ascii_hexdigit() || c == b'-');
    if !ok(host) {
        return Err(format!("the host's boot id {host:?} is not a boot id"));
    }
    if !ok(inside) {
        return Err(format!(
            "the boot id read inside, {inside:?}, is not a boot id"
        ));
    }
    Ok(inside == host)
}

/// "The same image ran unchanged".
///
/// Wrong if it counted runs that were started but failed: only runs that exited with
/// success count, and failures are named beside them; no success at all is no claim.
pub fn same_image(ran: u32, failed: u32) -> Cell {
    match (ran, failed) {
        (0, f) => Cell::Failed {
            reason: format!("no run of the image succeeded ({f} failed)"),
        },
        (r, 0) => Cell::Observed {
            text: format!("yes: {r} runs, all succeeded"),
            samples: r,
        },
        (r, f) => Cell::Observed {
            text: format!("yes: {r} runs succeeded ({f} failed)"),
            samples: r,
        },
    }
}

/// The median of a loop inside divided by the same loop's median on the host.
fn ratio(inside: &Timings, host: &Timings) -> (f64, f64, f64) {
    let (i, h) = (
        super::measure::median_ns_ms(&inside.ns),
        super::measure::median_ns_ms(&host.ns),
    );
    (i / h, i, h)
}

/// What a file system does with fsync, for people.
fn sync_words(fs: &FileSystem) -> String {
    match fs.fstype.as_str() {
        "" => "an unknown file system".into(),
        "tmpfs" | "ramfs" => format!("{}, in RAM (fsync has no disk to reach)", fs.fstype),
        t => t.to_string(),
    }
}

/// "File write+fsync+read". `vm_disk_host_fs` is, for a microVM, the host file system its
/// writable disk file is on (the guest's fsync flushes the virtio disk, and the VMM
/// fdatasyncs that file).
///
/// Wrong if fsync does nothing on one side (an overlay mounted `volatile`, as `run --rm`
/// mounts it): that side then skips the durability the row claims to time. A volatile
/// file system is refused, and each side's file system is written beside the figure.
pub fn file_cell(inside: &Perf, host: &Perf, vm_disk_host_fs: Option<&FileSystem>) -> Cell {
    if inside.file_fs.volatile {
        return Cell::Failed {
            reason: format!(
                "not measured: the file loop wrote on a {} mounted volatile, where fsync syncs nothing",
                inside.file_fs.fstype
            ),
        };
    }
    if host.file_fs.volatile {
        return Cell::Failed {
            reason: "not measured: the host's file loop wrote on a volatile mount".into(),
        };
    }
    let (r, i, h) = ratio(&inside.file, &host.file);
    let inside_fs = match vm_disk_host_fs {
        Some(disk) => format!(
            "{} on the guest's virtio disk, whose flush fdatasyncs its file on the host's {}",
            sync_words(&inside.file_fs),
            sync_words(disk)
        ),
        None => format!("{}, not volatile", sync_words(&inside.file_fs)),
    };
    Cell::measured(
        r,
        "x host",
        inside.file.ns.len() as u32,
        Some(format!(
            "median {i:.1} ms inside ({inside_fs}), {h:.1} ms on the host ({}), for {} bytes, fsync included on both",
            sync_words(&host.file_fs),
            inside.file.work
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_container_sees_the_host_list_even_when_the_host_loads_a_module_meanwhile() {
        let before = names(&["ext4", "overlay", "veth", "bridge"]);
        // The host loaded `tun` before the instance read its list, and `vhost` after.
        let inside = names(&["bridge", "ext4", "overlay", "tun", "veth"]);
        let after = names(&["bridge", "ext4", "overlay", "tun", "veth", "vhost"]);
        let v = visibility(true, Some(&inside), &before, &after);
        assert_eq!(v, Visibility::Yes { share: 1.0 });
        // And one unloaded meanwhile (gone before the instance read).
        let after = names(&["ext4", "overlay", "veth"]);
        let inside = names(&["ext4", "overlay", "veth"]);
        assert_eq!(
            visibility(true, Some(&inside), &before, &after),
            Visibility::Yes { share: 1.0 }
        );
        // The old rule (the whole list equal to the host's, read once at the start) said
        // "no" to exactly this.
        assert_ne!(inside, before);
    }

    #[test]
    fn another_kernel_never_shows_the_host_list_whatever_names_it_shares() {
        let host = names(&["ext4", "overlay", "virtio_blk"]);
        let inside = names(&["ext4", "overlay", "virtio_blk"]);
        let v = visibility(false, Some(&inside), &host, &host);
        assert_eq!(v, Visibility::OwnKernel { common: 1.0 });
        let t = visibility_text(&v, "modules", 3, 3);
        assert!(t.starts_with("no (its own kernel's 3 modules"), "{t}");
    }

    #[test]
    fn verdicts_agree_with_the_kernel_row_for_every_input() {
        let host = names(&["a", "b", "c", "d"]);
        let insides = [
            None,
            Some(names(&[])),
            Some(names(&["a"])),
            Some(names(&["a", "b", "c", "d"])),
            Some(names(&["a", "b", "c", "d", "e"])),
        ];
        for same in [true, false] {
            for inside in &insides {
                let v = visibility(same, inside.as_deref(), &host, &host);
                let t = visibility_text(&v, "modules", 0, 4);
                // A separate kernel never shows the host's list.
                if !same {
                    assert!(t.starts_with("no"), "{t}");
                }
                // "yes" only for the host's kernel, reading all of it.
                if t.starts_with("yes") {
                    assert!(same && inside.as_ref().is_some_and(|i| i.len() >= 4));
                }
            }
        }
        assert_eq!(
            visibility(true, Some(&names(&["a", "b"])), &host, &host),
            Visibility::Partly { share: 0.5 }
        );
        assert_eq!(
            visibility(true, Some(&names(&["x"])), &host, &host),
            Visibility::Hidden
        );
        assert_eq!(
            visibility::<String>(true, None, &host, &host),
            Visibility::Unreadable
        );
        assert_eq!(
            visibility(true, Some(&host), &names(&["a"]), &names(&["b"])),
            Visibility::HostListsNone
        );
        // The host's kernel has no modules: nothing to see, whether or not the instance
        // can open /proc/modules.
        assert_eq!(
            visibility::<String>(true, None, &[], &[]),
            Visibility::HostListsNone
        );
        // A host kernel without modules, a guest kernel with some: still the guest's own.
        assert_eq!(
            visibility(false, Some(&host), &[], &[]),
            Visibility::OwnKernel { common: 0.0 }
        );
    }

    #[test]
    fn sampled_symbol_hashes_work_the_same() {
        let before: Vec<u64> = (0..1000).map(|i| i * 32).collect();
        let mut inside = before.clone();
        inside.push(99_999 * 32); // a module's symbols, loaded meanwhile
        let mut after = inside.clone();
        after.push(100_000 * 32);
        assert_eq!(
            visibility(true, Some(&inside), &before, &after),
            Visibility::Yes { share: 1.0 }
        );
        assert!(matches!(
            visibility(false, Some(&inside), &before, &after),
            Visibility::OwnKernel { .. }
        ));
    }

    #[test]
    fn processes_are_the_hosts_only_in_the_hosts_pid_namespace() {
        assert!(processes_visible(
            true,
            "pid:[4026531836]",
            "pid:[4026531836]"
        ));
        assert!(!processes_visible(
            true,
            "pid:[4026532001]",
            "pid:[4026531836]"
        ));
        // Another kernel's init namespace may carry the same inode number.
        assert!(!processes_visible(
            false,
            "pid:[4026531836]",
            "pid:[4026531836]"
        ));
        assert!(!processes_visible(true, "", ""));
    }

    #[test]
    fn boot_ids_must_be_boot_ids() {
        let a = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
        let b = "1f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
        assert_eq!(same_kernel(a, a), Ok(true));
        assert_eq!(same_kernel(b, a), Ok(false));
        assert!(same_kernel("", "").unwrap_err().contains("host"));
        assert!(same_kernel("", a).unwrap_err().contains("inside"));
    }

    #[test]
    fn same_image_counts_successes_and_names_failures() {
        assert_eq!(
            same_image(10, 0),
            Cell::Observed {
                text: "yes: 10 runs, all succeeded".into(),
                samples: 10
            }
        );
        assert!(
            matches!(same_image(7, 3), Cell::Observed { text, samples: 7 } if text.contains("3 failed"))
        );
        assert!(matches!(same_image(0, 4), Cell::Failed { .. }));
    }

    fn perf(ms: u64, fstype: &str, volatile: bool) -> Perf {
        let t = |ns: u64| Timings {
            work: 8 << 20,
            ns: vec![ns, ns, ns],
        };
        Perf {
            cpu: t(1),
            syscall: t(1),
            file: t(ms * 1_000_000),
            file_fs: FileSystem {
                fstype: fstype.into(),
                volatile,
            },
        }
    }

    #[test]
    fn a_file_loop_on_a_volatile_overlay_is_refused() {
        let host = perf(40, "ext4", false);
        let c = file_cell(&perf(17, "overlay", true), &host, None);
        assert!(
            matches!(&c, Cell::Failed { reason } if reason.contains("volatile")),
            "{c:?}"
        );
        let c = file_cell(&perf(42, "overlay", false), &host, None);
        let Cell::Measured { value, detail, .. } = &c else {
            panic!("{c:?}")
        };
        assert!((*value - 42.0 / 40.0).abs() < 1e-9);
        let d = detail.as_deref().unwrap();
        assert!(
            d.contains("overlay, not volatile") && d.contains("fsync included"),
            "{d}"
        );
        let vm = file_cell(
            &perf(80, "overlay", false),
            &host,
            Some(&FileSystem {
                fstype: "tmpfs".into(),
                volatile: false,
            }),
        );
        let Cell::Measured { detail, .. } = &vm else {
            panic!("{vm:?}")
        };
        let d = detail.as_deref().unwrap();
        assert!(
            d.contains("fdatasyncs") && d.contains("tmpfs, in RAM"),
            "{d}"
        );
    }
}
