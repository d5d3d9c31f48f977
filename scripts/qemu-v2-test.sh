#!/usr/bin/env bash
# The cgroup v2 driver for real: this host's cgroups are hybrid (no v2 memory controller),
# so `make test` boots a QEMU (TCG) guest with a pure cgroup v2 hierarchy and runs
# hangar-guest-check in it. That program is built from Sources/hangar-guest-check as a
# static executable and spawns real sandboxes through HangarSandbox: memory, pids, cpu,
# outcomes and teardown on v2. The busybox image goes in as an ext4 disk (the guest's
# Debian 12 kernel cannot idmap a tmpfs). Exit status: the checks' (0 = all passed), or
# scripts/qemu/run.sh's when the guest could not run them — never a silent pass.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
images=${HANGAR_IMAGES:-$PWD/images}
init=${HANGAR_INIT:-.build/debug/hangar-init}

bash scripts/qemu/fetch.sh
swift build -c release --product hangar-guest-check --scratch-path .build-static -Xswiftc -static-executable
[ -x "$init" ] || swift build --product hangar-init
[ -d "$images/busybox/rootfs" ] || { echo "qemu-v2-test: no busybox image in $images (make images)" >&2; exit 3; }

bash scripts/qemu/run.sh --timeout "${HANGAR_QEMU_TIMEOUT:-600}" \
    --file "$init:/payload/hangar-init" \
    --disk "$images/busybox/rootfs:/images/busybox" \
    -- .build-static/release/hangar-guest-check /images/busybox /payload/hangar-init
