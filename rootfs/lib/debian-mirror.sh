#!/usr/bin/env bash
# Prints the Debian mirror this machine's apt is configured with (deb822 .sources or
# one-line sources.list), so that image builds use the same one. No mirror is named here.
set -euo pipefail
shopt -s nullglob
for f in /etc/apt/sources.list.d/*.sources; do
    awk '
        /^URIs:/ { uri = $2 }
        /^Suites:/ { for (i = 2; i <= NF; i++) if ($i !~ /-(security|updates|backports)$/) suite = 1 }
        /^$/ { if (uri != "" && suite && uri !~ /security/) { print uri; found = 1; exit } uri = ""; suite = 0 }
        END { if (!found && uri != "" && suite && uri !~ /security/) print uri }
    ' "$f" | head -n 1 | grep . && exit 0
done
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' "$f" \
        | head -n 1 | grep . && exit 0
done
echo "debian-mirror.sh: no Debian mirror found in the apt configuration" >&2
exit 1
