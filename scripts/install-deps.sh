#!/usr/bin/env bash
# Installs the Debian packages Hangar needs to build, test and benchmark, if missing.
set -euo pipefail
packages=(
    libseccomp-dev   # seccomp programs (CShims)
    libcap-dev       # capability names and counts (CShims)
    libssl-dev       # HMAC-SHA256 for the drone's ingress preface (libcrypto)
    libsqlite3-dev   # the drone's state (GRDB over the system SQLite)
    busybox-static   # the busybox image
    debootstrap      # the python image
    bubblewrap       # the peer in `hangar bench spawn`
    iproute2         # network checks in tests
    e2fsprogs        # mkfs.ext4 for upper layers on disk
    wrk              # the load in `hangar bench connect`
    haproxy          # the peer in `hangar bench proxy`
    curl             # a real HTTP client in tests
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v swift >/dev/null || { echo "install-deps.sh: swift is not on PATH (Swift 6 toolchain needed)" >&2; exit 1; }
