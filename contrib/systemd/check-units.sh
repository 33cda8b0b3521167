#!/usr/bin/env bash
# check-units.sh - static checks of the systemd integration, run by `make check-units` (and so
# by `make test`). No running systemd needed: everything is evaluated against a throw-away root
# directory laid out like the installed package (units, sysusers.d, tmpfiles.d, stub
# /usr/bin/oneiricd and /usr/bin/oneiricctl so that ExecStart=/ExecReload= resolve).
#
#   1. systemd-analyze verify of oneiricd.service + oneiricd.socket: ANY output is a failure
#      (unknown keys and typos only warn, with exit status 0).
#   2. systemd-analyze security --offline: exposure at most $MAX_EXPOSURE (default 2.0).
#   3. the settings the deployment contract relies on are present (Type=notify, watchdog,
#      ExecReload that waits, RestartPreventExitStatus=78, ...), and nothing systemd 252 lacks.
#   4. TimeoutStopSec is above the default config's drain_timeout + stop_timeout.
#   5. sysusers.d creates the oneiric user and group; tmpfiles.d creates the directories with
#      that owner (both applied with --root to the throw-away root).
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
MAX_EXPOSURE=${MAX_EXPOSURE:-2.0}
PY=$(command -v python3 || echo /usr/bin/python3)
pass=0 fail=0

ok() { printf 'PASS %s\n' "$1"; pass=$((pass + 1)); }
bad() { printf 'FAIL %s\n' "$1"; [ -n "${2:-}" ] && printf '%s\n' "$2" | sed 's/^/    /'; fail=$((fail + 1)); }

for tool in systemd-analyze systemd-sysusers systemd-tmpfiles; do
  command -v "$tool" >/dev/null || { echo "check-units: $tool not found (package systemd)" >&2; exit 1; }
done

ROOT=$(mktemp -d /tmp/oneiric-units.XXXXXX)
trap 'rm -rf "$ROOT"' EXIT

# --- the fake root: the host's own unit files (targets our unit depends on), usr-merged
mkdir -p "$ROOT/usr/bin" "$ROOT/usr/lib/systemd" "$ROOT/usr/lib/sysusers.d" \
  "$ROOT/usr/lib/tmpfiles.d" "$ROOT/etc/systemd/system"
ln -s usr/lib "$ROOT/lib"
ln -s usr/bin "$ROOT/bin"
ln -s usr/bin "$ROOT/sbin"
cp -a /usr/lib/systemd/system "$ROOT/usr/lib/systemd/"
for exe in oneiricd oneiricctl; do
  printf '#!/bin/sh\nexit 0\n' >"$ROOT/usr/bin/$exe"
  chmod 0755 "$ROOT/usr/bin/$exe"
done
install -m 0644 "$HERE/oneiricd.service" "$HERE/oneiricd.socket" "$ROOT/usr/lib/systemd/system/"
install -m 0644 "$HERE/sysusers.d/oneiric.conf" "$ROOT/usr/lib/sysusers.d/oneiric.conf"
install -m 0644 "$HERE/tmpfiles.d/oneiric.conf" "$ROOT/usr/lib/tmpfiles.d/oneiric.conf"

# --- 1. verify: exit status AND silence
out=$(systemd-analyze verify --man=no --root="$ROOT" oneiricd.service oneiricd.socket 2>&1)
rc=$?
if [ $rc -eq 0 ] && [ -z "$out" ]; then
  ok "systemd-analyze verify oneiricd.service oneiricd.socket (no output)"
else
  bad "systemd-analyze verify (exit $rc, output must be empty)" "$out"
fi

# --- 2. security exposure (--threshold counts in tenths: 20 means an exposure of 2.0)
threshold=$(awk -v m="$MAX_EXPOSURE" 'BEGIN{printf "%d", m * 10 + 0.5}')
out=$(systemd-analyze security --offline=yes --root="$ROOT" --threshold="$threshold" \
  --no-pager oneiricd.service 2>&1)
rc=$?
score=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for oneiricd.service: \([0-9.]*\).*/\1/p')
if [ -n "$score" ] && [ $rc -eq 0 ] && awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN{exit !(s <= m)}'; then
  ok "systemd-analyze security: exposure $score <= $MAX_EXPOSURE"
else
  bad "systemd-analyze security: exposure '${score:-?}' (exit $rc), want <= $MAX_EXPOSURE" \
    "$(printf '%s\n' "$out" | grep -E '✗|Overall')"
fi

# --- 3. the contract's settings (key=value exactly as written in the unit)
unit=$HERE/oneiricd.service
missing=""
for want in 'Type=notify' 'NotifyAccess=main' 'ExecStart=/usr/bin/oneiricd' \
  'ExecReload=/usr/bin/oneiricctl reload' 'Restart=on-failure' 'RestartPreventExitStatus=78' \
  'User=oneiric' 'Group=oneiric' 'RuntimeDirectory=oneiric' 'RuntimeDirectoryPreserve=yes' \
  'StateDirectory=oneiric' 'ConfigurationDirectory=oneiric' 'ProtectSystem=strict' \
  'NoNewPrivileges=yes' 'PrivateTmp=yes' 'ProtectHome=yes'; do
  grep -qxF "$want" "$unit" || missing="$missing $want"
done
for key in WatchdogSec UMask TimeoutStopSec RestrictAddressFamilies SystemCallFilter; do
  grep -q "^$key=" "$unit" || missing="$missing $key="
done
if [ -z "$missing" ]; then ok "oneiricd.service has the settings the deployment relies on"
else bad "oneiricd.service lacks:$missing"; fi
# systemd 252 silently turns Type=notify-reload into Type=simple (it arrived in 253)
if grep -q '^Type=notify-reload' "$unit"; then bad "Type=notify-reload does not exist in systemd 252"
else ok "no settings newer than systemd 252"; fi

# --- 4. stop timeout above the drain budget of the default config
budget=$("$PY" - "$REPO/packaging/oneiricd.toml" <<'PY'
import re, sys, tomllib
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
def secs(v):
    if isinstance(v, (int, float)):
        return float(v)
    return sum(float(n) * UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", v))
d = tomllib.load(open(sys.argv[1], "rb")).get("daemon", {})
print(secs(d.get("drain_timeout", 30)) + secs(d.get("stop_timeout", 30)))
PY
)
stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s\{0,1\}$/\1/p' "$unit")
if [ -n "$budget" ] && [ -n "$stop" ] && awk -v a="$stop" -v b="$budget" 'BEGIN{exit !(a > b)}'; then
  ok "TimeoutStopSec=${stop}s > drain_timeout + stop_timeout = ${budget}s"
else
  bad "TimeoutStopSec='${stop:-?}' must be a plain number of seconds above the drain budget '${budget:-?}'"
fi

# --- 5. sysusers.d and tmpfiles.d, applied to the fake root
out=$(systemd-sysusers --root="$ROOT" oneiric.conf 2>&1)
rc=$?
uid=$(awk -F: '$1 == "oneiric" {print $3}' "$ROOT/etc/passwd" 2>/dev/null)
gid=$(awk -F: '$1 == "oneiric" {print $3}' "$ROOT/etc/group" 2>/dev/null)
if [ $rc -eq 0 ] && [ -n "$uid" ] && [ -n "$gid" ] && [ "$uid" -lt 1000 ]; then
  ok "sysusers.d/oneiric.conf creates system user oneiric ($uid) and group oneiric ($gid)"
else
  bad "sysusers.d/oneiric.conf (exit $rc, uid '${uid:-}', gid '${gid:-}')" "$out"
fi
out=$(systemd-tmpfiles --root="$ROOT" --create oneiric.conf 2>&1)
rc=$?
got=$(stat -c '%n %a %u:%g' "$ROOT/run/oneiric" "$ROOT/var/lib/oneiric" 2>&1 | sed "s|$ROOT||")
want=$(printf '/run/oneiric 755 %s:%s\n/var/lib/oneiric 750 %s:%s' "$uid" "$gid" "$uid" "$gid")
if [ $rc -eq 0 ] && [ -z "$out" ] && [ "$got" = "$want" ]; then
  ok "tmpfiles.d/oneiric.conf creates /run/oneiric and /var/lib/oneiric owned by oneiric"
else
  bad "tmpfiles.d/oneiric.conf (exit $rc)" "$out
got:
$got
want:
$want"
fi

echo "check-units: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
