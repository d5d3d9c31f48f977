#!/usr/bin/env bash
# Makes sure the QEMU harness has what it needs on the host, and nothing by hand:
#   - qemu-system-x86_64, cpio, a static-capable C compiler (Debian packages);
#   - a Debian cloud kernel (vmlinuz + its module tree) unpacked in the cache directory
#     ${HANGAR_QEMU_CACHE:-/var/cache/hangar/qemu}.
# The kernel is the one the metapackage linux-image-cloud-amd64 currently depends on. No
# mirror is named here: apt's own configuration supplies it. Idempotent: once the cache
# holds a kernel (stamp file .kernel-ready) and the tools are on PATH, a run does nothing.
# Set HANGAR_QEMU_REFRESH=1 to fetch the kernel again (e.g. after a Debian point release).
set -euo pipefail

cache=${HANGAR_QEMU_CACHE:-/var/cache/hangar/qemu}
export DEBIAN_FRONTEND=noninteractive

log() { echo "fetch.sh: $*" >&2; }
die() { echo "fetch.sh: error: $*" >&2; exit 1; }

# apt-get update is slow and touches the network: run it at most once, and only when a
# look-up or a download failed without it (a fresh machine may have empty package lists).
updated=0
apt_update_once() {
    [ "$updated" = 1 ] && return 1
    updated=1
    log "running apt-get update (needed for: $1)"
    apt-get update -qq || die "apt-get update failed"
}

# One fetch at a time (two harness runs may start together on a fresh machine).
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

# --- host tools --------------------------------------------------------------------------
# command -> Debian package that provides it.
declare -A tools=(
    [qemu-system-x86_64]=qemu-system-x86
    [cpio]=cpio
    [xz]=xz-utils
    [zstd]=zstd
    [gcc]=gcc
    [mke2fs]=e2fsprogs
)
missing=()
for cmd in "${!tools[@]}"; do
    command -v "$cmd" >/dev/null || missing+=("${tools[$cmd]}")
done
# gcc -static needs libc.a, which comes with libc6-dev, not with gcc.
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || missing+=(libc6-dev)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing: ${missing[*]}"
    # --no-install-recommends: qemu's recommends pull in a GUI, OVMF, etc., none of which
    # a -nographic -kernel boot needs (seabios and the option ROMs are hard dependencies).
    # The first try stays silent: on a machine whose package lists are empty it fails, and
    # the retry after apt-get update is the one whose errors count.
    if ! apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
        apt_update_once "installing ${missing[*]}" || true
        apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends "${missing[@]}" >/dev/null \
            || die "apt-get install ${missing[*]} failed"
    fi
fi

# --- kernel ------------------------------------------------------------------------------
if [ -e "$cache/.kernel-ready" ] && [ "${HANGAR_QEMU_REFRESH:-0}" != 1 ]; then
    exit 0
fi

# The metapackage only depends on the real, versioned package
# (e.g. linux-image-6.1.0-56-cloud-amd64); that one carries vmlinuz and the modules.
resolve_kernel_package() {
    apt-cache depends linux-image-cloud-amd64 2>/dev/null \
        | awk '$1 == "Depends:" && $2 ~ /^linux-image-.*-cloud-amd64$/ { print $2; exit }'
}
pkg=$(resolve_kernel_package)
if [ -z "$pkg" ]; then
    apt_update_once "resolving linux-image-cloud-amd64" || true
    pkg=$(resolve_kernel_package)
fi
[ -n "$pkg" ] || die "cannot resolve the package behind linux-image-cloud-amd64 (apt-cache depends found none)"
log "kernel package: $pkg"

dl=$(mktemp -d "$cache/.download.XXXXXX")
trap 'rm -rf "$dl"' EXIT
# apt-get download writes to the current directory as the _apt user where it can write
# there (otherwise it warns and downloads as root): hand the directory to _apt.
chmod 755 "$dl"
chown _apt "$dl" 2>/dev/null || true
# quiet=1: no progress output; the first try's errors are dropped (see apt_update_once).
download() { (cd "$dl" && apt-get download -qq "$pkg") >/dev/null 2>"$dl/download.err"; }
if ! download; then
    # Stale lists can name a version the mirror no longer has: update, then resolve again
    # (a new kernel ABI also renames the package).
    if apt_update_once "downloading $pkg"; then
        pkg=$(resolve_kernel_package)
        [ -n "$pkg" ] || die "cannot resolve the package behind linux-image-cloud-amd64 after apt-get update"
        log "kernel package: $pkg"
    fi
    download || { cat "$dl/download.err" >&2; die "apt-get download $pkg failed"; }
fi
deb=$(find "$dl" -maxdepth 1 -name '*.deb' -print -quit)
[ -n "$deb" ] || die "apt-get download $pkg produced no .deb"

dpkg -x "$deb" "$dl/x"
vmlinuz=$(find "$dl/x/boot" -maxdepth 1 -name 'vmlinuz-*' -print -quit)
[ -n "$vmlinuz" ] || die "$pkg holds no /boot/vmlinuz-*"
release=${vmlinuz##*/vmlinuz-}
[ -d "$dl/x/lib/modules/$release" ] || die "$pkg holds no /lib/modules/$release"

# Replace the cache contents in one go; keep vmlinuz, the config (for reference) and the
# whole module tree (~90 MB): run.sh picks the modules it needs from it (HANGAR_QEMU_MODULES)
# and decompresses them (.ko.xz / .ko.zst) while it builds the initramfs.
rm -rf "$cache/vmlinuz" "$cache/config" "$cache/modules" "$cache/release" "$cache/package" "$cache/.kernel-ready"
mv "$vmlinuz" "$cache/vmlinuz"
cp "$dl/x/boot/config-$release" "$cache/config" 2>/dev/null || true
mv "$dl/x/lib/modules/$release" "$cache/modules"
echo "$release" > "$cache/release"
echo "$pkg $(dpkg-deb -f "$deb" Version)" > "$cache/package"
touch "$cache/.kernel-ready"
log "kernel $release ready in $cache"
