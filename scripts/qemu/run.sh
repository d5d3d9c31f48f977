#!/usr/bin/env bash
# Runs one program inside a throwaway QEMU (TCG) guest with a Debian cloud kernel and a real,
# pure cgroup v2 hierarchy, and exits with that program's exit status.
#
#   scripts/qemu/run.sh [--timeout SECONDS] [--file HOSTPATH[:GUESTPATH]]...
#                       [--disk HOSTDIR:GUESTPATH]... -- PROGRAM [ARGS...]
#
# PROGRAM (best statically linked: the guest has no libraries unless you add them) is put
# at /payload/<its basename> and run there as root, cwd /, with ARGS; its stdout and stderr
# go to the serial console, which this script streams to stdout. Each --file copies a file
# or a directory (recursively, owners and modes kept) into the guest, at GUESTPATH or else
# at /payload/<basename>. Those end up on the guest's root, a tmpfs, copied once more at boot.
# Each --disk turns HOSTDIR into an ext4 image (mke2fs -d, owners and modes kept), attached
# as a virtio disk and mounted at GUESTPATH before the payload starts: better for big trees
# (no copy, no RAM), and needed for a tree that is to be idmapped (a Hangar image): tmpfs
# supports idmapped mounts only from Linux 6.3 on, and Debian 12's kernel is 6.1.
# The guest's /init is guest-init.c (see there for what it sets up).
#
# Exit status: the payload's (128+N if it died of signal N). When no payload status comes
# back it fails with a message saying why: 2 usage, 3 host setup (fetch, compile,
# initramfs), 4 qemu failed to start or died, 5 timeout, 6 guest setup failed.
#
# Environment:
#   HANGAR_QEMU_CACHE    kernel cache (default /var/cache/hangar/qemu; see fetch.sh)
#   HANGAR_QEMU_MODULES  kernel modules to load in the guest, dependencies are added
#                        (default "overlay")
#   HANGAR_QEMU_MEM      guest memory in MiB (default 1024)
#   HANGAR_QEMU_SMP      guest CPUs (default 2)
#   HANGAR_QEMU_APPEND   extra kernel command line words (e.g. "loglevel=7" to see more)
# Needs root (fetch.sh installs packages; the initramfs keeps owners and /dev/console).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${HANGAR_QEMU_CACHE:-/var/cache/hangar/qemu}
export HANGAR_QEMU_CACHE=$cache

die() { echo "run.sh: error: $1" >&2; exit "${2:-3}"; }
usage() {
    echo "usage: $0 [--timeout SECONDS] [--file HOSTPATH[:GUESTPATH]]... [--disk HOSTDIR:GUESTPATH]... -- PROGRAM [ARGS...]" >&2
    exit 2
}

timeout_s=300
files=()
disks=()
while [ $# -gt 0 ]; do
    case $1 in
        --timeout) [ $# -ge 2 ] || usage; timeout_s=$2; shift 2 ;;
        --timeout=*) timeout_s=${1#*=}; shift ;;
        --file) [ $# -ge 2 ] || usage; files+=("$2"); shift 2 ;;
        --file=*) files+=("${1#*=}"); shift ;;
        --disk) [ $# -ge 2 ] || usage; disks+=("$2"); shift 2 ;;
        --disk=*) disks+=("${1#*=}"); shift ;;
        --) shift; break ;;
        -h|--help) usage ;;
        *) echo "run.sh: unexpected argument: $1 (PROGRAM goes after --)" >&2; usage ;;
    esac
done
[ $# -ge 1 ] || usage
[[ $timeout_s =~ ^[1-9][0-9]*$ ]] || die "--timeout needs a positive whole number of seconds, got '$timeout_s'" 2
program=$1
shift
if [ ! -f "$program" ] || [ ! -x "$program" ]; then die "PROGRAM '$program' is not an executable file" 2; fi

bash "$here/fetch.sh" || die "fetch.sh failed (qemu or the kernel is not available)"
for f in vmlinuz modules release; do
    [ -e "$cache/$f" ] || die "$cache/$f is missing; run with HANGAR_QEMU_REFRESH=1 to fetch the kernel again"
done
release=$(cat "$cache/release")

work=$(mktemp -d "${TMPDIR:-/tmp}/hangar-qemu.XXXXXX")
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    # Stop the VM if we are interrupted while it runs (timeout(1) passes TERM on to qemu).
    if [ -s "$work/qemu.pid" ]; then kill "$(cat "$work/qemu.pid")" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'echo "run.sh: interrupted, stopping the VM" >&2; exit 130' INT
trap 'echo "run.sh: terminated, stopping the VM" >&2; exit 143' TERM
root=$work/root
mkdir -p "$root/payload" "$root/lib/modules" "$root/dev"

# --- /init ---------------------------------------------------------------------------------
gcc -static -O2 -Wall -o "$root/init" "$here/guest-init.c" || die "compiling guest-init.c failed"

# --- kernel modules --------------------------------------------------------------------------
# A module's file may be plain or compressed (.ko.xz, .ko.zst, .ko.gz: Debian compresses
# them from 6.x in trixie on). The guest loads plain .ko files with finit_module(fd, "", 0),
# so decompress here. Dependencies come from the module's own .modinfo "depends=" field
# (the package ships no modules.dep: depmod runs at install time). Files are named
# NN-name.ko with dependencies first; the guest loads them in name order.
declare -A module_done=()
module_seq=0
find_module() { # name -> path of its file (names use _ where files may use -)
    local alt=${1//_/-}
    find "$cache/modules" -type f \( -name "$1.ko*" -o -name "$alt.ko*" \) -print -quit
}
plain_module() { # path -> decompressed bytes on stdout
    case $1 in
        *.ko) cat "$1" ;;
        *.ko.xz) xz -dc "$1" ;;
        *.ko.zst) zstd -qdc "$1" ;;
        *.ko.gz) gzip -dc "$1" ;;
        *) return 1 ;;
    esac
}
add_module() {
    local name=${1//-/_} path deps dep
    [ -z "${module_done[$name]:-}" ] || return 0
    module_done[$name]=1
    path=$(find_module "$name")
    # Built into this kernel (no file, listed in modules.builtin): nothing to load.
    if [ -z "$path" ]; then
        if grep -q "/${name//_/[-_]}\.ko\$" "$cache/modules/modules.builtin" 2>/dev/null; then return 0; fi
        die "kernel module '$name' not found in $cache/modules"
    fi
    plain_module "$path" > "$work/$name.ko" || die "cannot decompress $path"
    deps=$(tr '\0' '\n' < "$work/$name.ko" | sed -n 's/^depends=//p' | head -n 1)
    for dep in ${deps//,/ }; do add_module "$dep"; done
    module_seq=$((module_seq + 1))
    mv "$work/$name.ko" "$root/lib/modules/$(printf '%02d' "$module_seq")-$name.ko"
}
modules=${HANGAR_QEMU_MODULES-overlay}
[ ${#disks[@]} -eq 0 ] || modules="$modules virtio_pci virtio_blk"
for m in $modules; do add_module "$m"; done

# --- payload -----------------------------------------------------------------------------
if command -v readelf >/dev/null && readelf -lW "$program" 2>/dev/null | grep -q 'program interpreter'; then
    echo "run.sh: warning: $program is dynamically linked; the guest has only what --file adds" >&2
fi
guest_program=/payload/$(basename "$program")
cp "$program" "$root$guest_program"
for spec in "${files[@]}"; do
    host=${spec%%:*}
    if [ "$host" = "$spec" ]; then guest=/payload/$(basename "$host"); else guest=${spec#*:}; fi
    [ -e "$host" ] || die "--file $spec: $host does not exist" 2
    case $guest in
        /*) ;;
        *) die "--file $spec: the guest path must be absolute" 2 ;;
    esac
    case $guest in
        /init|/payload/argv|/payload/disks|/lib/modules|/lib/modules/*) die "--file $spec: $guest is the harness's own" 2 ;;
    esac
    mkdir -p "$(dirname "$root$guest")"
    # -a keeps owners, modes, symlinks and device nodes (a rootfs tree needs them); -T copies
    # a directory's contents onto GUESTPATH instead of nesting it inside an existing one.
    cp -aT "$host" "$root$guest" || die "copying $host into the initramfs failed"
done
# --disk: one raw ext4 image per directory, attached as virtio disks vda, vdb, ... in order.
drives=()
letters=abcdefghijklmnop
for i in "${!disks[@]}"; do
    spec=${disks[$i]}
    host=${spec%%:*}
    guest=${spec#*:}
    if [ "$host" = "$spec" ] || [ -z "$host" ]; then die "--disk $spec: expected HOSTDIR:GUESTPATH" 2; fi
    [ -d "$host" ] || die "--disk $spec: $host is not a directory" 2
    case $guest in
        /?*) ;;
        *) die "--disk $spec: the guest path must be absolute and not /" 2 ;;
    esac
    [ "$i" -lt ${#letters} ] || die "too many --disk options" 2
    # Room for the files plus ext4's own metadata and some space to write in.
    kib=$(du -sk "$host" | cut -f1)
    size_mib=$(( kib * 13 / 10 / 1024 + 64 ))
    img=$work/disk$i.img
    # No journal: a throwaway disk needs none and mke2fs and the guest are faster without.
    # -d copies owners and modes of everything below HOSTDIR; root_owner does it for the
    # top directory itself (its mode stays 0755).
    mke2fs -q -F -t ext4 -O ^has_journal -E "root_owner=$(stat -c %u:%g "$host")" -d "$host" \
        "$img" "${size_mib}M" >/dev/null \
        || die "mke2fs could not make an ext4 image of $host"
    drives+=(-drive "file=$img,format=raw,if=virtio,cache=unsafe")
    printf 'vd%s %s\n' "${letters:$i:1}" "$guest" >> "$root/payload/disks"
done

# argv for guest-init: NUL-separated, argv[0] first (no kernel command line quoting issues).
printf '%s\0' "$guest_program" "$@" > "$root/payload/argv"
# The kernel gives init /dev/console as fds 0-2 only if the initramfs has the node.
mknod "$root/dev/console" c 5 1 2>/dev/null || true

# Uncompressed newc: QEMU hands it to the kernel as is; decompressing under TCG costs time.
(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet) > "$work/initrd.cpio" \
    || die "building the initramfs with cpio failed"
initrd_mib=$(( $(stat -c %s "$work/initrd.cpio") / 1048576 ))

# --- boot ----------------------------------------------------------------------------------
# -accel tcg: KVM does not boot stock kernels on our CI hosts. -cpu max: TCG's richest model
# (static binaries built for x86-64-v2 and above still run). -nic none: the guest gets no
# network at all (only its own loopback). -no-reboot + panic=-1: a kernel panic or an init
# that dies ends QEMU instead of looping. -nographic: serial console on stdio.
qemu=(
    qemu-system-x86_64 -accel tcg -cpu max -m "${HANGAR_QEMU_MEM:-1024}" -smp "${HANGAR_QEMU_SMP:-2}"
    -nographic -no-reboot -no-user-config -nic none
    -kernel "$cache/vmlinuz" -initrd "$work/initrd.cpio" "${drives[@]}"
    -append "console=ttyS0 panic=-1 quiet ${HANGAR_QEMU_APPEND:-}"
)
echo "run.sh: booting kernel $release (TCG), initramfs ${initrd_mib} MiB, timeout ${timeout_s}s: $guest_program $*" >&2

start=$EPOCHREALTIME
started=""
exit_status=""
guest_error=""
# Read the console line by line (to stream it, and to catch the marker lines as they come).
# The VM runs under timeout(1); its exit code lands in qemu.rc once it is gone. sed drops
# the CRs of the serial line and the terminal escapes SeaBIOS prints (clear screen, etc.),
# which would otherwise end up in CI logs and in front of the first guest line.
while IFS= read -r line || [ -n "$line" ]; do
    printf '%s\n' "$line"
    printf '%s\n' "$line" >> "$work/console.log"
    # Matched anywhere in the line: a payload whose last output has no newline, or a kernel
    # message, can stand in front of a marker.
    if [[ $line =~ HANGAR-GUEST-START\  ]]; then
        started=$EPOCHREALTIME
    elif [[ $line =~ HANGAR-GUEST-EXIT\ ([0-9]+)$ ]] && [ -z "$exit_status" ]; then
        exit_status=${BASH_REMATCH[1]}
        ended=$EPOCHREALTIME
    elif [[ $line =~ HANGAR-GUEST-ERROR\ (.*)$ ]]; then
        guest_error=${BASH_REMATCH[1]}
    fi
done < <(
    {
        timeout --kill-after=10 "$timeout_s" "${qemu[@]}" </dev/null 2>&1 &
        echo $! > "$work/qemu.pid"
        rc=0
        wait $! || rc=$?
        { echo "$rc" > "$work/qemu.rc"; } 2>/dev/null || true # work is gone if interrupted
    } | sed -u -e 's/\r$//' -e 's/\x1bc//g' -e 's/\x1b\[[0-9;?]*[A-Za-z]//g'
)
wait $! 2>/dev/null || true # the process substitution, so qemu.rc is written
rm -f "$work/qemu.pid"
qemu_rc=$(cat "$work/qemu.rc" 2>/dev/null || echo unknown)
finish=$EPOCHREALTIME

secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
if [ -n "$exit_status" ]; then
    boot=unknown
    [ -z "$started" ] || boot=$(secs "$start" "$started")s
    payload=unknown
    [ -z "$started" ] || payload=$(secs "$started" "$ended")s
    echo "run.sh: payload exited with status $exit_status (boot to payload $boot, payload $payload, total $(secs "$start" "$finish")s, kernel $release)" >&2
    exit "$exit_status"
fi
if [ -n "$guest_error" ]; then
    die "guest setup failed before the payload ran: $guest_error" 6
fi
if [ "$qemu_rc" = 124 ] || [ "$qemu_rc" = 137 ]; then
    if [ -n "$started" ]; then
        die "timeout: the payload ran but no HANGAR-GUEST-EXIT line came within ${timeout_s}s" 5
    fi
    die "timeout: the guest did not reach the payload within ${timeout_s}s (no HANGAR-GUEST-START line)" 5
fi
qemu_error=$(grep -m 1 '^qemu-system-x86_64: ' "$work/console.log" 2>/dev/null || true)
if [ -n "$qemu_error" ]; then
    die "qemu failed (exit code $qemu_rc): ${qemu_error#qemu-system-x86_64: }" 4
fi
if grep -q 'Kernel panic' "$work/console.log" 2>/dev/null; then
    die "the guest kernel panicked (see the console above); qemu exit code $qemu_rc" 4
fi
if [ ! -s "$work/console.log" ]; then
    die "qemu printed nothing and exited with code $qemu_rc: it did not start (is qemu-system-x86_64 usable?)" 4
fi
if [ -z "$started" ]; then
    die "qemu exited (code $qemu_rc) before the guest reached the payload (no HANGAR-GUEST-START line; the kernel died early? too little memory? rerun with HANGAR_QEMU_APPEND=loglevel=7 to see the kernel's messages)" 4
fi
die "qemu exited (code $qemu_rc) while the payload ran, without a HANGAR-GUEST-EXIT line" 4
