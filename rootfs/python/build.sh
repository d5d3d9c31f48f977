#!/usr/bin/env bash
# Builds the python image: a minimal Debian (debootstrap --variant=minbase) of the
# host's release with python3, its standard library and Debian's python3-websockets (so
# a WebSocket backend needs nothing more). Packages from PyPI can be
# added at build time: PIP_PACKAGES="requests numpy" build.sh OUTPUT_DIR
#
# Why debootstrap and not a selection of the host's /usr: the image is a real,
# self-consistent Debian whose libraries match its python exactly, it does not change
# when the host is upgraded, and apt or pip can add to it at build time.
# The mirror is the one apt on this machine uses. Downloaded packages are cached in
# /var/cache/hangar/debootstrap, so a rebuild does not download them again.
set -euo pipefail
out=${1:?usage: build.sh OUTPUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
mirror=$("$here/../lib/debian-mirror.sh")
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:?no VERSION_CODENAME in /etc/os-release}")
cache=/var/cache/hangar/debootstrap
include=python3,python3-websockets
[ -n "${PIP_PACKAGES:-}" ] && include=$include,python3-pip

mkdir -p "$out" "$cache"
tmp=$(mktemp -d "$out/.rootfs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
root=$tmp/rootfs
echo "python image: debootstrap $suite from $mirror (this takes a minute or two)"
# debootstrap's own lines go to a log; its phases are shown as they begin (progress).
debootstrap --variant=minbase --include="$include" --cache-dir="$cache" "$suite" "$root" "$mirror" 2>&1 |
    tee "$tmp/debootstrap.log" | awk -f "$here/../lib/debootstrap-progress.awk" ||
    { tail -n 30 "$tmp/debootstrap.log" >&2; exit 1; }

if [ -n "${PIP_PACKAGES:-}" ]; then
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    # shellcheck disable=SC2086
    chroot "$root" python3 -m pip install --no-cache-dir --break-system-packages $PIP_PACKAGES
    : >"$root/etc/resolv.conf"
fi

# What a sandbox never needs: package caches and lists, documentation.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/locale/*
echo "127.0.0.1 localhost" >"$root/etc/hosts"
: >"$root/etc/resolv.conf"

rm -rf "$out/rootfs"
mv "$root" "$out/rootfs"
echo "python image: $out/rootfs ($(du -sh "$out/rootfs" | cut -f1))"
