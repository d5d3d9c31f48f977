#!/usr/bin/env bash
# Builds the busybox image from Debian's busybox-static: one static binary, its applet
# links, and the few files a shell expects. Usage: build.sh OUTPUT_DIR
# The image is written to OUTPUT_DIR/rootfs through a temporary directory and renamed
# into place, so an interrupted build never leaves a half image.
set -euo pipefail
out=${1:?usage: build.sh OUTPUT_DIR}
busybox=/bin/busybox
if ! dpkg -S "$busybox" 2>/dev/null | grep -q '^busybox-static:'; then
    echo "build.sh: $busybox is not Debian's busybox-static (apt-get install busybox-static)" >&2
    exit 1
fi

mkdir -p "$out"
tmp=$(mktemp -d "$out/.rootfs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
root=$tmp/rootfs
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,proc,dev,sys,var/tmp,home}
chmod 1777 "$root/tmp" "$root/var/tmp"
chmod 0700 "$root/root"
install -m 0755 "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list-full); do
    case "$applet" in bin/busybox) continue ;; esac
    mkdir -p "$root/$(dirname "$applet")"
    ln -sf /bin/busybox "$root/$applet"
done
cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat >"$root/etc/group" <<'GROUP'
root:x:0:
tty:x:5:
nogroup:x:65534:
GROUP
echo "127.0.0.1 localhost" >"$root/etc/hosts"
: >"$root/etc/resolv.conf"

rm -rf "$out/rootfs"
mv "$root" "$out/rootfs"
echo "busybox image: $out/rootfs ($(find "$out/rootfs" | wc -l) entries)"
