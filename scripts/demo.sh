#!/usr/bin/env bash
# `make dev` until `hangar dev` exists: a short tour of `hangar run`, `hangar policy` and
# `hangar doctor`, then the most complete thing there is: a controller with a drone under it.
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

# The most complete thing there is until `hangar dev` (issue 7): a controller and a drone.
"$hangar" controller --listen 127.0.0.1:8080 --store /var/lib/hangar/dev/controller.sqlite &
controller=$!
trap 'kill $controller 2>/dev/null; wait $controller 2>/dev/null' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:8080/pub/health >/dev/null && break; sleep 0.1; done

cat <<MSG

Try it yourself:
  $hangar run -- sh                     # a shell in a fresh busybox sandbox
  $hangar run --image python            # a Python REPL: the python policy's own command
  $hangar policy check policies/python.toml
  $hangar doctor --attack               # the isolation attack suite on this host
  $hangar bench spawn                   # spawn latency against bwrap and posix_spawn

Now a controller (http://127.0.0.1:8080, its store in /var/lib/hangar/dev) and a drone under
it run; Ctrl-C stops both and every backend. From another shell:
  $hangar connect doc-1 --image python -- python3 -m http.server 8080   # waits until ready, prints the URL
  $hangar connect doc-1 --image python --json                           # the same backend: spawned false
  $hangar cluster                                                       # drones, load, backends by status
  $hangar status BACKEND --follow                                       # its statuses as they change
  $hangar terminate BACKEND
  curl -N http://127.0.0.1:8080/pub/b/BACKEND/status-stream             # the same, as server-sent events
The proxy that carries the URL's traffic comes next; until then the drone's admin API
reaches a backend's logs: $hangar drone logs BACKEND --socket /run/hangar/drone.sock
MSG

"$hangar" drone --socket /run/hangar/drone.sock --controller http://127.0.0.1:8080 --name dev
