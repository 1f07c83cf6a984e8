# shellcheck shell=bash
# Shared helpers of the nested-virtualization testbed: the kernel cache and the initramfs.
# Sourced by testbed/run, testbed/kernel-env and testbed/setup; defines functions only.
#
# Cache layout (default <repo>/.testbed-cache, override with TESTBED_CACHE):
#   kernels/<package>_<version>/       a kernel .deb unpacked with dpkg-deb -x, depmod'ed
#       boot/vmlinuz-<kver>             bzImage
#       boot/vmlinux-<kver>             ELF image extracted from the bzImage (for VMMs that load ELF)
#       lib/modules/<kver>/             modules, modules.dep, modules.alias
#           testbed.devnodes            "<name> <major> <minor>" of modules' static device nodes
#       .complete                       written last: TB_CACHE_FORMAT, the entry is usable
#   resolved/<flavour>                  "<package> <version>" apt resolved, keyed by the apt lists' mtime
#   initramfs/<hash>.cpio               stage-1 initramfs for one L1 kernel
#   lock                                flock(1) serialises cache updates between concurrent runs

TB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TB_REPO=$(cd "$TB_DIR/.." && pwd)
TB_CACHE=${TESTBED_CACHE:-$TB_REPO/.testbed-cache}
TB_VERBOSE=${TESTBED_VERBOSE:-0}
# Bumped when the layout of a cached kernel changes: older entries are fetched anew.
TB_CACHE_FORMAT=2

# The L1 testbed kernel is Debian's generic kernel: unlike the cloud kernel it has 9p, which
# shares host directories with the testbed in both directions. The kernel that vessel's own
# microVMs boot inside the testbed is the cloud kernel, the one vessel targets.
# shellcheck disable=SC2034 # used by the scripts that source this file
TB_L1_FLAVOUR=${TESTBED_L1_FLAVOUR:-amd64}
# shellcheck disable=SC2034
TB_INNER_FLAVOUR=${TESTBED_INNER_FLAVOUR:-cloud-amd64}

# Modules the L1 guest loads from its initramfs (dependencies are added): the virtio-pci
# transport and 9p for the shares first, then KVM for AMD SVM (what TCG emulates), which
# loads in the background while the shares are mounted: kvm.ko alone takes a second.
TB_L1_MODULES=(virtio_pci 9pnet_virtio 9p)
TB_L1_KVM_MODULES=(kvm_amd)

tb_err() { printf 'testbed: %s\n' "$*" >&2; }
tb_die() { tb_err "$@"; exit 125; }
tb_log() { [ "${TB_VERBOSE:-0}" = 1 ] && printf 'testbed: %s\n' "$*" >&2; return 0; }

tb_need() {
  local cmd=$1 pkg=$2
  command -v "$cmd" >/dev/null 2>&1 ||
    tb_die "'$cmd' not found: install Debian package $pkg (apt-get install $pkg, or run testbed/setup)"
}

# Holds the cache lock for the rest of the calling shell (fd 9).
tb_lock() {
  mkdir -p "$TB_CACHE" || tb_die "cannot create cache directory $TB_CACHE"
  exec 9>"$TB_CACHE/lock"
  flock 9
}

# Releases it, and closes the descriptor so that QEMU does not inherit it.
tb_unlock() {
  flock -u 9
  exec 9>&-
}

# Prints "<package> <version>" of the versioned kernel package behind metapackage
# linux-image-<flavour>, as apt-cache offers it now; empty when apt does not know it.
tb_apt_resolve() {
  local flavour=$1 meta dep ver
  meta=linux-image-$flavour
  dep=$(apt-cache show --no-all-versions "$meta" 2>/dev/null |
    sed -n 's/^Depends: *//p' | tr ',' '\n' | sed 's/^ *//; s/ .*//' |
    grep -E "^linux-image-[0-9.]+-[0-9]+-$flavour\$" | head -n1)
  [ -n "$dep" ] || return 0
  ver=$(apt-cache show --no-all-versions "$dep" 2>/dev/null | sed -n 's/^Version: *//p' | head -n1)
  [ -n "$ver" ] || return 0
  printf '%s %s\n' "$dep" "$ver"
}

# Like tb_apt_resolve, but remembers the answer while apt's package lists are unchanged:
# apt-cache takes over a second here, which every boot would otherwise pay.
tb_resolve() {
  local flavour=$1 stamp file line
  stamp=$(stat -c %Y /var/lib/apt/lists 2>/dev/null || echo none)
  file=$TB_CACHE/resolved/$flavour
  if [ -f "$file" ] && [ "$(sed -n 1p "$file")" = "$stamp" ]; then
    sed -n 2p "$file"
    return
  fi
  line=$(tb_apt_resolve "$flavour")
  if [ -n "$line" ]; then
    mkdir -p "$TB_CACHE/resolved"
    printf '%s\n%s\n' "$stamp" "$line" >"$file.tmp" && mv "$file.tmp" "$file"
  fi
  printf '%s\n' "$line"
}

# Extracts the ELF vmlinux from a bzImage, as the kernel's scripts/extract-vmlinux does:
# finds the compressed payload by its magic and decompresses it. Debian's generic kernel is
# XZ, the cloud kernel LZ4. Leaves no file when no payload decompresses to an ELF image
# (testbed/run then boots the bzImage, slower; VESSEL_TEST_VMLINUX is then empty).
tb_extract_vmlinux() {
  local bz=$1 out=$2 magic tool off
  for magic in '\xfd7zXZ\x00:xz -dc --single-stream' '\x02\x21\x4c\x18:lz4 -dc' \
    '\x28\xb5\x2f\xfd:zstd -dc' '\x1f\x8b\x08:gzip -dc'; do
    tool=${magic#*:}
    command -v "${tool%% *}" >/dev/null 2>&1 || continue
    for off in $(LC_ALL=C grep -obUaP "${magic%%:*}" "$bz" 2>/dev/null | head -n 3 | cut -d: -f1); do
      tail -c +$((off + 1)) "$bz" | $tool >"$out.tmp" 2>/dev/null
      if [ "$(od -An -c -N 4 "$out.tmp" 2>/dev/null | tr -d ' ')" = '177ELF' ]; then
        mv "$out.tmp" "$out"
        return 0
      fi
    done
  done
  rm -f "$out.tmp"
  return 0
}

# Makes sure linux-image-<flavour> is in the cache and prints its directory. Downloads and
# unpacks it when apt offers a version that is not cached yet; falls back to the newest
# cached one when apt knows nothing (no apt lists, offline).
tb_kernel() {
  local flavour=$1 line pkg ver dir tmp deb kver
  line=$(tb_resolve "$flavour")
  if [ -z "$line" ]; then
    dir=$(for d in "$TB_CACHE"/kernels/*/; do
      d=${d%/}
      [[ ${d##*/} =~ ^linux-image-[0-9.]+-[0-9]+-${flavour}_ ]] &&
        [ "$(cat "$d/.complete" 2>/dev/null)" = "$TB_CACHE_FORMAT" ] && echo "$d"
    done | sort -V | tail -n1)
    [ -n "$dir" ] || tb_die "kernel package linux-image-$flavour is not known to apt-cache and none is cached in $TB_CACHE/kernels: run 'apt-get update' (or testbed/setup)"
    printf "%s\n" "$dir"
    return
  fi
  read -r pkg ver <<<"$line"
  dir=$TB_CACHE/kernels/${pkg}_$ver
  if [ "$(cat "$dir/.complete" 2>/dev/null)" = "$TB_CACHE_FORMAT" ]; then
    printf '%s\n' "$dir"
    return
  fi
  tb_need dpkg-deb dpkg
  tb_need busybox busybox-static
  tb_need xz xz-utils
  tb_need lz4 lz4
  tb_err "fetching kernel $pkg=$ver with apt-get download (once; cached in $TB_CACHE)"
  rm -rf "$dir" "$dir.tmp"
  mkdir -p "$dir.tmp/deb"
  tmp=$dir.tmp
  # apt's sandbox user cannot write into root's directories; the warning is harmless.
  if ! (cd "$tmp/deb" && apt-get download -q "$pkg=$ver" >"$tmp/apt.log" 2>&1); then
    cat "$tmp/apt.log" >&2
    tb_die "kernel package $pkg=$ver could not be downloaded with apt-get download"
  fi
  deb=$(find "$tmp/deb" -name '*.deb' | head -n1)
  [ -n "$deb" ] || tb_die "apt-get download $pkg=$ver produced no .deb"
  dpkg-deb -x "$deb" "$tmp/root" || tb_die "dpkg-deb -x $deb failed"
  kver=$(tb_kver "$tmp/root" 2>/dev/null)
  if [ -z "$kver" ] || [ ! -f "$tmp/root/boot/vmlinuz-$kver" ]; then
    tb_die "package $pkg=$ver has no boot/vmlinuz-* and lib/modules/*: not a kernel image package?"
  fi
  # The package's postinst would run depmod; busybox's depmod writes what modprobe needs.
  busybox depmod -b "$tmp/root" "$kver" || tb_die "depmod of $pkg failed"
  awk '
    $1 == "alias" && $2 ~ /^devname:/ { name[$3] = substr($2, 9) }
    $1 == "alias" && $2 ~ /^char-major-[0-9]+-[0-9]+$/ { split($2, p, "-"); dev[$3] = p[3] " " p[4] }
    END { for (m in name) if (m in dev) print name[m], dev[m] }
  ' "$tmp/root/lib/modules/$kver/modules.alias" >"$tmp/root/lib/modules/$kver/testbed.devnodes"
  tb_extract_vmlinux "$tmp/root/boot/vmlinuz-$kver" "$tmp/root/boot/vmlinux-$kver"
  mv "$tmp/root" "$dir"
  rm -rf "$tmp"
  echo "$TB_CACHE_FORMAT" >"$dir/.complete"
  printf '%s\n' "$dir"
}

# Prints the kernel version (the lib/modules directory name) of a cached kernel.
tb_kver() { find "$1/lib/modules" -mindepth 1 -maxdepth 1 -printf "%f\n" | head -n1; }

# Prints the module files (relative to lib/modules/<kver>) that loading the given modules
# takes, dependencies first, each once.
tb_module_closure() {
  local moddir=$1; shift
  awk -v want="$*" '
    function base(p) { sub(/.*\//, "", p); sub(/\.ko(\.[a-z]+)?$/, "", p); gsub(/-/, "_", p); return p }
    function visit(m,   n, i, d) {
      if (m in done) return
      if (!(m in path)) { print "testbed: module " m " not found in modules.dep" > "/dev/stderr"; bad = 1; return }
      done[m] = 1
      n = split(deps[m], d, " ")
      for (i = 1; i <= n; i++) visit(base(d[i]))
      print path[m]
    }
    {
      p = $1; sub(/:$/, "", p); m = base(p); path[m] = p
      $1 = ""; deps[m] = $0
    }
    END {
      n = split(want, w, " ")
      for (i = 1; i <= n; i++) { x = w[i]; gsub(/-/, "_", x); visit(x) }
      exit bad
    }
  ' "$moddir/modules.dep"
}

# Builds (or reuses) the stage-1 initramfs for the L1 kernel in $1 and prints its path.
# It holds busybox, the modules of TB_L1_MODULES and TB_L1_KVM_MODULES, and /init; all the guest
# needs besides comes over 9p, so the archive stays a few MiB and changes only with the kernel.
tb_initramfs() {
  local kdir=$1 kver moddir busybox key out stage mods kvm_mods m
  tb_need busybox busybox-static
  busybox=$(command -v busybox)
  # A dynamically linked busybox would need the host's libc before /usr is mounted.
  if ! tb_file_is_static "$busybox"; then
    tb_die "$busybox is not statically linked: install Debian package busybox-static"
  fi
  kver=$(tb_kver "$kdir")
  moddir=$kdir/lib/modules/$kver
  mods=$(tb_module_closure "$moddir" "${TB_L1_MODULES[@]}") || tb_die "resolving modules ${TB_L1_MODULES[*]} failed"
  kvm_mods=$(tb_module_closure "$moddir" "${TB_L1_KVM_MODULES[@]}") || tb_die "resolving modules ${TB_L1_KVM_MODULES[*]} failed"
  kvm_mods=$(grep -vxF -f <(printf "%s\n" "$mods") <<<"$kvm_mods" || true)
  key=$( { printf "%s\n" "$kver" "$mods" "$kvm_mods"; cat "$TB_DIR/guest/init" "$busybox"; } | sha256sum | cut -c1-16)
  out=$TB_CACHE/initramfs/$key.cpio
  if [ -f "$out" ]; then
    printf '%s\n' "$out"
    return
  fi
  stage=$(mktemp -d "$TB_CACHE/initramfs-stage.XXXXXX")
  mkdir -p "$stage/bin" "$stage/modules" "$stage/dev" "$stage/proc" "$stage/sys" "$stage/newroot"
  cp "$busybox" "$stage/bin/busybox"
  ln -s busybox "$stage/bin/sh"
  cp "$TB_DIR/guest/init" "$stage/init"
  chmod 0755 "$stage/init"
  : >"$stage/modules/order"
  for m in $mods; do
    cp "$moddir/$m" "$stage/modules/"
    basename "$m" >>"$stage/modules/order"
  done
  : >"$stage/modules/order-kvm"
  for m in $kvm_mods; do
    cp "$moddir/$m" "$stage/modules/"
    basename "$m" >>"$stage/modules/order-kvm"
  done
  mkdir -p "$TB_CACHE/initramfs"
  (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | busybox cpio -o -H newc -R 0:0 >"$out.tmp" 2>/dev/null) ||
    tb_die "building the initramfs with busybox cpio failed"
  mv "$out.tmp" "$out"
  rm -rf "$stage"
  # Archives of other kernels or older /init scripts are dead weight now.
  find "$TB_CACHE/initramfs" -name "*.cpio" ! -name "$key.cpio" -delete
  printf '%s\n' "$out"
}

tb_file_is_static() {
  # A dynamically linked ELF executable has a PT_INTERP (type 3) program header.
  local f=$1 phoff phentsize phnum i type
  phoff=$(od -An -t u8 -j 32 -N 8 "$f" | tr -d ' ')
  phentsize=$(od -An -t u2 -j 54 -N 2 "$f" | tr -d ' ')
  phnum=$(od -An -t u2 -j 56 -N 2 "$f" | tr -d ' ')
  for ((i = 0; i < phnum; i++)); do
    type=$(od -An -t u4 -j $((phoff + i * phentsize)) -N 4 "$f" | tr -d ' ')
    [ "$type" = 3 ] && return 1
  done
  return 0
}

# Quotes $1 for sh: single quotes, with each ' as '\''.
tb_quote() { local s=${1//\'/\'\\\'\'}; printf "'%s'" "$s"; }

# Prints sh export lines for the kernel vessel's microVMs boot in tests (the cloud kernel
# in $1): the bzImage, the extracted ELF vmlinux (empty if extraction failed), the module
# tree and the version. The paths are the same on the host and inside the testbed.
tb_inner_env() {
  local dir=$1 kver vmlinux=
  kver=$(tb_kver "$dir")
  [ -f "$dir/boot/vmlinux-$kver" ] && vmlinux=$dir/boot/vmlinux-$kver
  echo "export VESSEL_TEST_KERNEL=$(tb_quote "$dir/boot/vmlinuz-$kver")"
  echo "export VESSEL_TEST_VMLINUX=$(tb_quote "$vmlinux")"
  echo "export VESSEL_TEST_MODULES=$(tb_quote "$dir/lib/modules/$kver")"
  echo "export VESSEL_TEST_KERNEL_VERSION=$(tb_quote "$kver")"
}
