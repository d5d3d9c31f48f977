#!/usr/bin/env bash
# `make tour`: a short tour of the sandbox through `hangar run`, `hangar policy` and
# `hangar doctor`.
set -euo pipefail
hangar=${1:?usage: demo.sh HANGAR_BINARY}
say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

say "hangar run -- sh -c 'id; hostname; ip -o addr | cut -d \" \" -f2,7; grep -E \"^(Cap|NoNewPrivs|Seccomp)\" /proc/self/status'"
"$hangar" run -- sh -c 'id; hostname; ip -o addr | cut -d " " -f2,7; grep -E "^(Cap|NoNewPrivs|Seccomp)" /proc/self/status'

say "hangar run --image python -- python3 -c 'print(1+1)'"
"$hangar" run --image python -- python3 -c 'print(1+1)'

say "hangar run --memory 64m -- sh -c 'echo inside: \$(cat /proc/self/cgroup | grep memory)'"
"$hangar" run --memory 64m -- sh -c 'echo inside: $(grep memory /proc/self/cgroup)'

say "hangar run -- mount -t tmpfs none /mnt   # refused by seccomp"
"$hangar" run -- mount -t tmpfs none /mnt || echo "(exit status $?)"

say "hangar run --memory 16m -- sh -c 'x=\$(head -c 100000000 /dev/zero | tr \"\\0\" a)'   # ends as oom"
"$hangar" run --memory 16m -- sh -c 'x=$(head -c 100000000 /dev/zero | tr "\0" a)' || echo "(exit status $?)"

say "hangar doctor"
"$hangar" doctor || true

say "hangar policy show python"
"$hangar" policy show python | sed -n '1,12p'
echo "  …"

cat <<MSG

Try it yourself:
  $hangar run -- sh                     # a shell in a fresh busybox sandbox
  $hangar run --image python            # a Python REPL: the python policy's own command
  $hangar policy check policies/python.toml
  $hangar doctor --attack               # the isolation attack suite on this host
  $hangar bench spawn                   # spawn latency against bwrap and posix_spawn
  make dev                              # the whole system: controller, drone and proxy
MSG
