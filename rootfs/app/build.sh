#!/usr/bin/env bash
# Builds an example's image: a base image's root file system with the example's server
# at /app/server.py. The base's files are hard links, not copies: images are read-only to
# every sandbox (the overlay's lower layer), so they can share inodes, and the image
# costs no space and builds in about a second.
set -euo pipefail
base=${1:?usage: build.sh BASE_IMAGE_DIR EXAMPLE_DIR OUTPUT_DIR}
example=${2:?usage: build.sh BASE_IMAGE_DIR EXAMPLE_DIR OUTPUT_DIR}
out=${3:?usage: build.sh BASE_IMAGE_DIR EXAMPLE_DIR OUTPUT_DIR}
name=$(basename "$out")
[ -d "$base/rootfs" ] || { echo "build.sh: no image in $base (make images builds it)" >&2; exit 1; }
[ -f "$example/server.py" ] || { echo "build.sh: no server.py in $example" >&2; exit 1; }

mkdir -p "$out"
tmp=$(mktemp -d "$out/.rootfs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cp -al "$base/rootfs" "$tmp/rootfs"
mkdir -m 0755 "$tmp/rootfs/app"
install -m 0644 "$example/server.py" "$tmp/rootfs/app/server.py"

rm -rf "$out/rootfs"
mv "$tmp/rootfs" "$out/rootfs"
echo "$name image: $out/rootfs ($(basename "$base") with $example/server.py at /app/server.py)"
