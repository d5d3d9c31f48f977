#!/usr/bin/env bash
# `make qemu-check`: builds selfcheck.c (static) and runs it in a QEMU guest through run.sh,
# with a small --disk so that the idmapped-mount check runs on ext4 as Hangar's images will.
# Exit status: selfcheck's (0 = every check passed), or run.sh's when the guest failed.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# Tools first (gcc, libc.a, qemu, kernel): a fresh machine may have none of them.
bash "$here/fetch.sh"

work=$(mktemp -d "${TMPDIR:-/tmp}/hangar-qemu-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
gcc -static -O2 -Wall -o "$work/selfcheck" "$here/selfcheck.c"

# The disk's root is owned by 1000:1000, so the idmap check sees 1000 shift to 101000.
mkdir -p "$work/disk"
echo "hangar qemu selfcheck disk" > "$work/disk/README"
chown -R 1000:1000 "$work/disk"

bash "$here/run.sh" --timeout "${HANGAR_QEMU_TIMEOUT:-300}" --disk "$work/disk:/disk" -- "$work/selfcheck" /disk
