#!/usr/bin/env bash
# tests/e2e/systemd.sh - end-to-end test of the Debian package under a real systemd.
# Run by `make e2e-systemd` (which builds the .deb first). Needs root and the Debian archive.
#
# Boots systemd (252 on bookworm, 257 on trixie: NS_SUITE) as PID 1 in a systemd-nspawn container (tests/e2e/nspawn.sh: cached
# debootstrap root filesystem + a throw-away overlay per run), installs dist/oneiric_*.deb
# and checks what an operator relies on: start returns after READY=1, StatusText, the control
# socket's access rules (alice in group oneiric is an admin, bob is refused with exit 4),
# pause/drain/status, a reload with a broken config fails and keeps the old one, restart
# keeps operator intent, the watchdog restarts a hung (SIGSTOPped) daemon, stop drains and
# exits cleanly, and the package removes (remove) and purges (purge) cleanly.
#
# Output: one `== step: NAME` block per step with its evidence, then PASS/FAIL/SKIP NAME; the
# last line is `N passed, M failed, K skipped`; exit status 0 only if nothing failed.
# Logs (container console, journal) go to $E2E_LOGS (default build/e2e).
#
# Env: NS_SUITE (bookworm, the default, or trixie), DEB (default: the suite's package in dist/:
#      oneiric_*_<arch>.deb for bookworm, oneiric_*+deb13_<arch>.deb for trixie), E2E_CACHE (default /var/cache/oneiric-e2e),
#      E2E_REBUILD=1 (rebuild the cached root filesystem), E2E_KEEP=1 (leave the container
#      running at the end for inspection; tear it down with Ctrl-C), MIRROR.
# shellcheck disable=SC2016  # single-quoted $ is for dpkg-query formats and the container's sh
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/e2e/nspawn.sh
. "$HERE/nspawn.sh"

E2E_LOGS=${E2E_LOGS:-$REPO/build/e2e}
CONF=/etc/oneiric/oneiricd.toml
SOCK=/run/oneiric/oneiricd.sock
HEALTH=/run/oneiric/health.json

[ "$(id -u)" = 0 ] || { echo "tests/e2e/systemd.sh must run as root" >&2; exit 2; }
case "$NS_SUITE" in
  bookworm) DEB_GLOB='oneiric_*-[0-9]_*.deb' SUITE_PY=3.11 ;;
  trixie) DEB_GLOB='oneiric_*+deb13_*.deb' SUITE_PY=3.13 ;;
  *) echo "unknown NS_SUITE=$NS_SUITE (bookworm or trixie)" >&2; exit 2 ;;
esac
DEB=${DEB:-$(find "$REPO/dist" -maxdepth 1 -name "$DEB_GLOB" -printf '%T@ %p\n' 2>/dev/null | sort -rn | head -1 | cut -d' ' -f2-)}
if [ -z "$DEB" ] || [ ! -f "$DEB" ]; then echo "no dist/$DEB_GLOB: run make deb (or make e2e-systemd)" >&2; exit 2; fi

NS_DIR=$(mktemp -d /tmp/oneiric-e2e.XXXXXX)
NS_MACHINE=oneiric-e2e-$$
mkdir -p "$E2E_LOGS"
T_START=$SECONDS

cleanup() {
  local rc=$?
  if [ -n "${CURRENT_STEP:-}" ]; then   # interrupted inside a step: show what it had done
    sed 's/^/    /' "$NS_DIR/step.log" 2>/dev/null
    printf 'INTERRUPTED %s\n' "$CURRENT_STEP"
  fi
  if [ "${E2E_KEEP:-0}" = 1 ] && ns_leader >/dev/null 2>&1; then
    echo "E2E_KEEP=1: container $NS_MACHINE is up (nsenter -t $(ns_leader) -a); Ctrl-C tears it down"
    trap 'true' INT
    sleep infinity
  fi
  ns_down >/dev/null 2>&1 || true
  [ -f "$NS_DIR/console.log" ] && cp "$NS_DIR/console.log" "$E2E_LOGS/console.log"
  rm -rf "$NS_DIR"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --------------------------------------------------------------------------- step machinery
passed=0 failed=0 skipped=0 STEP_OK=1 aborted=""
note() { printf '%s\n' "$*"; }
# expect DESC CMD...: run CMD, record a failed expectation (the step continues)
expect() {
  local desc=$1; shift
  if "$@"; then note "ok: $desc"; else note "NOT OK: $desc"; STEP_OK=0; fi
}
bad() { note "NOT OK: $*"; STEP_OK=0; }
step() {   # step NAME FUNC [fatal]
  local name=$1 fn=$2 fatal=${3:-} t0=$SECONDS out
  printf '== step: %s\n' "$name"
  if [ -n "$aborted" ]; then
    printf 'SKIP %s (%s)\n' "$name" "$aborted"; skipped=$((skipped + 1)); return 0
  fi
  out=$NS_DIR/step.log
  STEP_OK=1
  CURRENT_STEP=$name
  "$fn" >"$out" 2>&1 || STEP_OK=0
  CURRENT_STEP=""
  sed 's/^/    /' "$out"
  if [ "$STEP_OK" = 1 ]; then
    printf 'PASS %s (%d s)\n' "$name" $((SECONDS - t0)); passed=$((passed + 1))
  else
    printf 'FAIL %s (%d s)\n' "$name" $((SECONDS - t0)); failed=$((failed + 1))
    [ -n "$fatal" ] && aborted="after '$name' failed"
  fi
}

# --------------------------------------------------------------------------- helpers
# run in the container, bounded; in the background + wait, so that a signal to this script
# (Ctrl-C, kill) runs the cleanup at once instead of after the command
cx() {
  ns_exec timeout "${CX_TIMEOUT:-90}" "$@" <&0 &
  wait $!
}
as() { local user=$1; shift; cx runuser -u "$user" -- "$@"; }
prop() { cx systemctl show -P "$1" oneiricd.service; }
# the live status document (as alice, an admin), queried with e2e-json
status_q() { as alice oneiricctl --json status | cx e2e-json "$1"; }
health_q() { cx e2e-json "$1" "$HEALTH"; }
health_admin_is() { [ "$(health_q "comp(\"$1\", \"$2\")[\"admin\"]" 2>/dev/null)" = "$3" ]; }
eq() { [ "$1" = "$2" ] || { note "   expected '$2', got '$1'"; return 1; }; }
wait_for() {   # wait_for SECONDS CMD...: poll every 0.2 s, bounded
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do [ $SECONDS -ge $deadline ] && return 1; sleep 0.2; done
}
journal_tail() { cx journalctl -u oneiricd.service --no-pager -o short-monotonic -n "${1:-15}"; }

# --------------------------------------------------------------------------- steps
s_host() {
  ns_setup >"$E2E_LOGS/host-setup.log" 2>&1 || { tail -20 "$E2E_LOGS/host-setup.log"; return 1; }
  tail -1 "$E2E_LOGS/host-setup.log"
  note "$(systemd-nspawn --version | head -1); $(dpkg-query -W -f='debootstrap ${Version}' debootstrap)"
}

s_rootfs() { ns_rootfs; }

s_boot() {
  ns_mount_root || return 1
  install -m 0755 "$HERE/e2e-json.py" "$(NS_ROOT)/usr/local/bin/e2e-json"
  install -m 0644 "$DEB" "$(NS_ROOT)/var/tmp/oneiric.deb"
  local t0=$SECONDS
  ns_boot || return 1
  note "booted in $((SECONDS - t0)) s"
}

s_install() {
  note "package: $(basename "$DEB")"
  # Test-only bounds, as a runtime drop-in (it vanishes with /run): a daemon that hangs at start
  # or stop fails its step in 30 s instead of the unit's 90 s + 75 s. Nothing is in flight in
  # these tests, so a clean stop takes milliseconds; every other setting is the shipped unit's.
  cx mkdir -p /run/systemd/system/oneiricd.service.d
  printf '[Service]\nTimeoutStartSec=30s\nTimeoutStopSec=30s\n' |
    cx sh -c 'cat >/run/systemd/system/oneiricd.service.d/40-e2e-bounds.conf'
  # postinst starts the service and waits for READY=1
  CX_TIMEOUT=120 expect "dpkg -i installs the package" cx dpkg -i /var/tmp/oneiric.deb
  expect "status 'install ok installed'" eq "$(cx dpkg-query -W -f='${Status}' oneiric)" "install ok installed"
  expect "system user oneiric" cx sh -c 'getent passwd oneiric | grep -q ":/var/lib/oneiric:/usr/sbin/nologin$"'
  expect "group oneiric" cx getent group oneiric
  expect "/usr/bin/oneiricd -> /opt/oneiric/bin/oneiricd" eq "$(cx readlink /usr/bin/oneiricd)" /opt/oneiric/bin/oneiricd
  expect "/usr/bin/oneiricctl -> /opt/oneiric/bin/oneiricctl" eq "$(cx readlink /usr/bin/oneiricctl)" /opt/oneiric/bin/oneiricctl
  expect "$CONF is a conffile" cx sh -c "dpkg-query -W -f='\${Conffiles}' oneiric | grep -q ' $CONF '"
  expect "/var/lib/oneiric is oneiric's, mode 750" eq "$(cx stat -c '%U:%G %a' /var/lib/oneiric)" "oneiric:oneiric 750"
  expect "oneiricd.service is enabled" eq "$(cx systemctl is-enabled oneiricd.service)" enabled
  expect "oneiricd.socket is not enabled (optional)" eq "$(cx systemctl is-enabled oneiricd.socket)" disabled
  expect "dpkg --verify finds nothing changed" eq "$(cx dpkg --verify oneiric)" ""
  # users for the access tests: alice administers (group oneiric), bob does not
  cx useradd --create-home --groups oneiric alice && cx useradd --create-home bob
  expect "alice is in group oneiric" cx sh -c 'id -nG alice | grep -qw oneiric'
}

s_python() {
  cx python3 -I -c "import sys; sys.path.insert(0, '/opt/oneiric/lib'); import msgspec, anyio, click, watchfiles, daemon, oneiric; print(sys.version.split()[0], sys.executable); print(*(m.__file__ for m in (msgspec, watchfiles, oneiric)), sep='\n')" >"$NS_DIR/py.out" 2>&1
  local rc=$?
  cat "$NS_DIR/py.out"
  expect "bundled libraries import on Debian's python3 (rc $rc)" test $rc = 0
  expect "Debian's interpreter ($SUITE_PY, /usr/bin/python3)" grep -q "^${SUITE_PY/./\\.}\.[0-9]* /usr/bin/python3$" "$NS_DIR/py.out"
  expect "modules come from /opt/oneiric/lib" test "$(grep -c '^/opt/oneiric/lib/' "$NS_DIR/py.out")" = 3
  expect "wrappers use /usr/bin/python3 -I" eq "$(cx head -1 /opt/oneiric/bin/oneiricctl)" '#!/usr/bin/python3 -I'
}

s_cli() {
  local rc heavy
  cx oneiricd --help >"$NS_DIR/o.out" 2>&1; rc=$?
  head -5 "$NS_DIR/o.out"
  expect "oneiricd --help (rc $rc)" test $rc = 0
  cx oneiricctl --help >"$NS_DIR/o.out" 2>&1; rc=$?
  head -5 "$NS_DIR/o.out"
  expect "oneiricctl --help (rc $rc)" test $rc = 0
  # oneiricctl must stay import-light: no anyio/watchfiles, no entry-point scanning
  heavy=$(cx python3 -I -X importtime /opt/oneiric/bin/oneiricctl --help 2>&1 >/dev/null \
    | grep -E '\| +(anyio|watchfiles|pkg_resources|importlib\.metadata|oneiric\.daemon)$' | awk -F'|' '{print $3}' | tr -d ' ' | tr '\n' ' ')
  expect "oneiricctl imports no anyio/watchfiles/pkg_resources/importlib.metadata (${heavy:-none})" test -z "$heavy"
  local t0 t1
  t0=$(date +%s%N); cx oneiricctl --help >/dev/null 2>&1; t1=$(date +%s%N)
  note "oneiricctl --help: $(((t1 - t0) / 1000000)) ms (nsenter included)"
  cx runuser -u oneiric -- oneiricd --check >"$NS_DIR/o.out" 2>&1; rc=$?
  cat "$NS_DIR/o.out"
  expect "oneiricd --check accepts the default config as user oneiric (rc $rc)" test $rc = 0
}

s_docs() {
  local page
  for page in oneiricctl oneiricd oneiricd.toml; do
    expect "man -w $page finds the installed page" cx sh -c "man -w $page | grep -q '^/usr/share/man/man[158]/$page\\.[158]\\.gz$'"
  done
  cx sh -c 'MANWIDTH=80 man oneiricctl 2>&1' >"$NS_DIR/man.out"
  expect "man oneiricctl renders every command (pause, drain, swap)" grep -q 'oneiricctl pause' "$NS_DIR/man.out"
  cx sh -c 'MANWIDTH=80 man 5 oneiricd.toml 2>&1' >"$NS_DIR/man.out"
  expect "man 5 oneiricd.toml documents [daemon] drain_timeout" grep -q 'drain_timeout' "$NS_DIR/man.out"
  expect "bash completion installed" cx test -s /usr/share/bash-completion/completions/oneiricctl
  expect "zsh completion installed" cx test -s /usr/share/zsh/vendor-completions/_oneiricctl
  expect "fish completion installed" cx test -s /usr/share/fish/vendor_completions.d/oneiricctl.fish
  # the installed script asks the installed oneiricctl, through click's protocol
  cx bash -c '. /usr/share/bash-completion/completions/oneiricctl; COMP_WORDS=(oneiricctl dr); COMP_CWORD=1; _oneiricctl_completion oneiricctl; echo "${COMPREPLY[*]}"' >"$NS_DIR/cmp.out" 2>&1
  expect "bash completion of 'oneiricctl dr' is 'drain' (got: $(cat "$NS_DIR/cmp.out"))" eq "$(cat "$NS_DIR/cmp.out")" drain
}

s_started_by_postinst() {
  note "after install: $(prop ActiveState)/$(prop SubState), MainPID $(prop MainPID)"
  expect "the package's postinst started oneiricd" eq "$(prop ActiveState)" active
}

s_start() {
  cx systemctl stop oneiricd.service
  cx systemctl reset-failed oneiricd.service 2>/dev/null
  local t0 t1 rc
  t0=$(date +%s%N)
  cx systemctl start oneiricd.service; rc=$?
  t1=$(date +%s%N)
  note "systemctl start: rc $rc in $(((t1 - t0) / 1000000)) ms"
  # Type=notify: start returns only after READY=1, so all of this holds at once
  expect "systemctl start succeeds" test $rc = 0
  expect "active/running right after start" eq "$(prop ActiveState)/$(prop SubState)" active/running
  expect "control socket exists when start returns" cx test -S $SOCK
  expect "health file says running" eq "$(health_q 'd["state"]')" running
  expect "health file pid is MainPID" eq "$(health_q 'd["pid"]')" "$(prop MainPID)"
  expect "adapter/cache is ready on provider memory (the default config's selection)" \
    eq "$(status_q 'comp("adapter", "cache")["provider"] + "/" + comp("adapter", "cache")["lifecycle"]')" memory/ready
  expect "service/heartbeat is ready" eq "$(status_q 'comp("service", "heartbeat")["lifecycle"]')" ready
  [ "$STEP_OK" = 1 ] || journal_tail 20
}

s_sandbox() {
  local pid exposure
  pid=$(prop MainPID)
  if [ -z "$pid" ] || [ "$pid" = 0 ]; then bad "no MainPID (the daemon is not running)"; return 1; fi
  cx touch /tmp/.e2e-host-tmp
  cx grep -E '^(Uid|Gid|NoNewPrivs|Seccomp|CapEff|CapBnd):' "/proc/$pid/status"
  expect "runs as oneiric:oneiric" eq "$(prop User):$(prop Group)" oneiric:oneiric
  expect "NoNewPrivs and a seccomp filter in effect" \
    cx sh -c "grep -q '^NoNewPrivs:.1' /proc/$pid/status && grep -q '^Seccomp:.2' /proc/$pid/status"
  expect "no capabilities (bounding set empty)" cx sh -c "grep -q '^CapBnd:.0000000000000000' /proc/$pid/status"
  # its mount namespace: the OS read-only, its state directory writable, /home and /tmp private
  expect "/usr, /etc, /opt are read-only for it; /var/lib/oneiric is writable" \
    cx nsenter -t "$pid" -m -- sh -c 'for d in /usr /etc /opt /var; do
        findmnt -no OPTIONS -T $d | grep -qE "(^|,)ro(,|$)" || exit 1; done
      findmnt -no OPTIONS -T /var/lib/oneiric | grep -qE "(^|,)rw(,|$)"'
  expect "/home is inaccessible, /tmp is private" \
    cx nsenter -t "$pid" -m -- sh -c '! ls /home/alice >/dev/null 2>&1 && ! test -e /tmp/.e2e-host-tmp'
  exposure=$(cx systemd-analyze security --no-pager oneiricd.service | sed -n 's/.*Overall exposure level for oneiricd.service: \([0-9.]*\).*/\1/p')
  note "systemd-analyze security (live): exposure $exposure"
  expect "live exposure <= 2.0" awk -v s="${exposure:-99}" 'BEGIN{exit !(s <= 2.0)}'
}

s_status_text() {
  local text; text=$(prop StatusText)
  note "StatusText: '$text'"
  expect "StatusText is set" test -n "$text"
  expect "StatusText says more than a word" test ${#text} -ge 8
  expect "StatusText is not a start-up message after READY" test -z "$(printf '%s' "$text" | grep -i 'starting')"
}

s_socket() {
  local st; st=$(cx stat -c '%A %U:%G' $SOCK)
  note "socket: $st; health file: $(cx stat -c '%A %U:%G' $HEALTH)"
  expect "socket mode 0660, oneiric:oneiric" eq "$st" "srw-rw---- oneiric:oneiric"
  expect "/run/oneiric is 0755 oneiric:oneiric" eq "$(cx stat -c '%a %U:%G' /run/oneiric)" "755 oneiric:oneiric"
}

s_alice_pause() {
  local rc
  as alice oneiricctl pause adapter cache --note "e2e pause"; rc=$?
  expect "alice: oneiricctl pause adapter cache (rc $rc)" test $rc = 0
  expect "adapter/cache is paused" eq "$(status_q 'comp("adapter", "cache")["admin"]')" paused
  expect "the note is kept" eq "$(status_q 'comp("adapter", "cache")["note"]')" "e2e pause"
  expect "other keys stay active" eq "$(status_q 'comp("service", "heartbeat")["admin"]')" active
  expect "the health file shows the pause" wait_for 5 health_admin_is adapter cache paused
}

s_alice_status() {
  local rc
  as alice oneiricctl status >"$NS_DIR/o.out" 2>&1; rc=$?
  cat "$NS_DIR/o.out"
  expect "alice: oneiricctl status exits 0 (paused is intent, not failure; rc $rc)" test $rc = 0
  expect "the table lists adapter cache as paused" grep -Eq 'adapter +cache +.*paused' "$NS_DIR/o.out"
  as alice oneiricctl health >/dev/null 2>&1; rc=$?
  expect "alice: oneiricctl health reads the health file (rc $rc)" test $rc = 0
}

s_journal_fields() {
  # the audit line of alice's pause carries ONEIRIC_KEY (journald's native protocol)
  local q="journalctl -u oneiricd.service ONEIRIC_KEY=adapter/cache --no-pager -o cat"
  journal_has_pause() { cx $q 2>/dev/null | grep -q 'op=pause target=adapter/cache note="e2e pause" outcome=ok'; }
  expect "journalctl -u oneiricd ONEIRIC_KEY=adapter/cache has the pause's audit line" wait_for 15 journal_has_pause
  cx $q | tail -5
  cx journalctl -u oneiricd.service ONEIRIC_KEY=adapter/cache ONEIRIC_OP=pause --no-pager -o verbose >"$NS_DIR/j.out" 2>&1
  expect "ONEIRIC_OP=pause and ONEIRIC_UID of alice" grep -q "ONEIRIC_UID=$(cx id -u alice)" "$NS_DIR/j.out"
}

s_metrics_textfile() {
  local prom=/var/lib/oneiric/metrics/oneiric.prom rc
  # a drop-in, as an operator would; the sandboxed unit may write its StateDirectory
  cx sh -c "mkdir -p /etc/oneiric/conf.d && printf '[metrics]\ntextfile = \"%s\"\n' $prom >/etc/oneiric/conf.d/90-metrics.toml"
  cx systemctl reload oneiricd.service; rc=$?
  expect "systemctl reload with [metrics] textfile (rc $rc)" test $rc = 0
  expect "the daemon writes $prom" wait_for 30 cx test -s $prom
  cx python3 -I -c '
import sys
sys.path.insert(0, "/opt/oneiric/lib")
from prometheus_client.parser import text_string_to_metric_families
fams = {f.name: f for f in text_string_to_metric_families(open(sys.argv[1]).read())}
print(len(fams), "families:", *sorted(fams))
assert fams["oneiric_daemon_state"].samples[0].labels == {"state": "running"}, fams["oneiric_daemon_state"]
paused = [s for s in fams["oneiric_intent_since_timestamp_seconds"].samples if s.labels["key"] == "cache"]
assert paused and paused[0].labels["admin"] == "paused", paused
assert any(s.name == "oneiric_swaps_total" for s in fams["oneiric_swaps"].samples)
print("adapter/cache paused since", paused[0].value)
' $prom >"$NS_DIR/prom.out" 2>&1; rc=$?
  cat "$NS_DIR/prom.out"
  expect "the textfile parses with prometheus_client's parser (bundled) and says adapter/cache is paused (rc $rc)" test $rc = 0
  expect "written atomically: no temporary file left beside it" \
    test "$(cx find /var/lib/oneiric/metrics -type f | wc -l)" = 1
  cx rm -f /etc/oneiric/conf.d/90-metrics.toml
  cx systemctl reload oneiricd.service
}

s_bob() {
  local rc op
  for op in "pause adapter cache" "resume adapter cache" "drain --no-wait" "reload"; do
    # shellcheck disable=SC2086
    as bob oneiricctl $op >"$NS_DIR/o.out" 2>&1; rc=$?
    note "bob: oneiricctl $op -> rc $rc: $(head -1 "$NS_DIR/o.out")"
    expect "bob: oneiricctl $op is refused with exit 4" test $rc = 4
  done
  as bob oneiricctl health >/dev/null 2>&1; rc=$?
  expect "bob: oneiricctl health reads the health file without the socket (rc $rc: 0 or 1, not 3/4)" test $rc -le 1
  expect "adapter/cache is still paused with alice's note" \
    eq "$(status_q 'comp("adapter", "cache")["admin"] + "/" + comp("adapter", "cache")["note"]')" "paused/e2e pause"
}

s_reload_broken() {
  local pid rc err provider
  pid=$(prop MainPID)
  provider=$(status_q 'comp("adapter", "cache")["provider"]')
  cx cp -p $CONF /root/oneiricd.toml.good
  # an atomic replace, as editors do; a TOML syntax error
  cx sh -c "cp $CONF $CONF.new && printf '\n[daemon\nbroken = \n' >>$CONF.new && mv $CONF.new $CONF"
  cx systemctl reload oneiricd.service; rc=$?
  note "systemctl reload with a broken config: rc $rc"
  expect "systemctl reload fails" test $rc != 0
  expect "the service is still active" eq "$(prop ActiveState)/$(prop SubState)" active/running
  expect "same MainPID" eq "$(prop MainPID)" "$pid"
  err=$(status_q 'd["config"]["last_error"]')
  note "config.last_error: $err"
  expect "status reports the config error" test -n "$err" -a "$err" != null -a "$err" != None
  expect "the running config is kept (adapter/cache provider unchanged: $provider)" \
    eq "$(status_q 'comp("adapter", "cache")["provider"]')" "$provider"
  note "StatusText: $(prop StatusText)"
  # restore the good config and reload
  cx cp -p /root/oneiricd.toml.good $CONF
  cx systemctl reload oneiricd.service; rc=$?
  expect "systemctl reload of the restored config succeeds (rc $rc)" test $rc = 0
  err=$(status_q 'd["config"]["last_error"]')
  expect "config error cleared (last_error: $err)" test -z "$err" -o "$err" = null -o "$err" = None
  expect "still the same MainPID" eq "$(prop MainPID)" "$pid"
  [ "$STEP_OK" = 1 ] || journal_tail 15
}

s_restart_keeps_pause() {
  local pid rc
  pid=$(prop MainPID)
  cx systemctl restart oneiricd.service; rc=$?
  note "MainPID $pid -> $(prop MainPID)"
  expect "systemctl restart (rc $rc)" test $rc = 0
  expect "a new MainPID" test "$(prop MainPID)" != "$pid" -a "$(prop MainPID)" != 0
  expect "adapter/cache is still paused after restart" eq "$(status_q 'comp("adapter", "cache")["admin"]')" paused
  expect "with its note" eq "$(status_q 'comp("adapter", "cache")["note"]')" "e2e pause"
}

s_upgrade() {
  local pid rc restarts
  pid=$(prop MainPID)
  restarts=$(prop NRestarts)
  # dpkg -i over the installed version runs the upgrade path: prerm upgrade (the daemon keeps
  # running), unpack, postinst configure <old version> (restart on the new files)
  CX_TIMEOUT=120 cx dpkg -i /var/tmp/oneiric.deb >"$NS_DIR/o.out" 2>&1; rc=$?
  tail -3 "$NS_DIR/o.out"
  expect "dpkg -i over the installed package (rc $rc)" test $rc = 0
  expect "status 'install ok installed'" eq "$(cx dpkg-query -W -f='${Status}' oneiric)" "install ok installed"
  note "MainPID $pid -> $(prop MainPID)"
  expect "postinst restarted the daemon (new MainPID, active)" \
    test "$(prop MainPID)" != "$pid" -a "$(prop ActiveState)" = active
  expect "not a crash: NRestarts unchanged ($restarts)" eq "$(prop NRestarts)" "$restarts"
  expect "adapter/cache is still paused after the upgrade" eq "$(status_q 'comp("adapter", "cache")["admin"]')" paused
  expect "the conffile is untouched" eq "$(cx dpkg --verify oneiric)" ""
}

s_drain() {
  local rc
  as alice oneiricctl drain --timeout 20 >"$NS_DIR/o.out" 2>&1; rc=$?
  cat "$NS_DIR/o.out"
  expect "alice: oneiricctl drain (everything) exits 0 (rc $rc)" test $rc = 0
  expect "every component is drained" \
    eq "$(status_q 'sorted(set(c["admin"] for c in comps))')" '["drained"]'
  as alice oneiricctl status >"$NS_DIR/o.out" 2>&1; rc=$?
  cat "$NS_DIR/o.out"
  expect "status exits 0 while drained (rc $rc)" test $rc = 0
  as alice oneiricctl resume --all; rc=$?
  expect "alice: oneiricctl resume --all (rc $rc)" test $rc = 0
  as alice oneiricctl resume adapter cache >/dev/null 2>&1
  expect "every component is active again" \
    eq "$(status_q 'sorted(set(c["admin"] for c in comps))')" '["active"]'
}

s_watchdog() {
  local pid new="" t0 rc
  cx mkdir -p /run/systemd/system/oneiricd.service.d
  printf '[Service]\nWatchdogSec=3s\n' | cx sh -c 'cat >/run/systemd/system/oneiricd.service.d/50-e2e-watchdog.conf'
  cx systemctl daemon-reload
  cx systemctl restart oneiricd.service; rc=$?
  expect "restart with WatchdogSec=3s (rc $rc)" test $rc = 0
  expect "WatchdogUSec is 3s" eq "$(prop WatchdogUSec)" 3s
  pid=$(prop MainPID)
  if [ -z "$pid" ] || [ "$pid" = 0 ]; then bad "no MainPID to stop (the daemon is not running)"; return 1; fi
  local restarts; restarts=$(prop NRestarts)
  t0=$SECONDS
  cx kill -STOP "$pid"
  note "SIGSTOP to MainPID $pid"
  local deadline=$((SECONDS + 40))
  while [ $SECONDS -lt $deadline ]; do
    new=$(prop MainPID)
    if [ -n "$new" ] && [ "$new" != 0 ] && [ "$new" != "$pid" ] && [ "$(prop ActiveState)" = active ]; then break; fi
    new=""
    sleep 0.5
  done
  note "new MainPID '${new:-none}' after $((SECONDS - t0)) s; NRestarts $restarts -> $(prop NRestarts)"
  expect "the watchdog restarted the hung daemon (new MainPID within 40 s)" test -n "$new"
  expect "NRestarts went up" test "$(prop NRestarts)" -gt "$restarts"
  expect "the journal says why" cx sh -c 'journalctl -u oneiricd.service --no-pager -o cat | grep -q "Watchdog timeout"'
  expect "the old process is gone" sh -c "! cx kill -0 $pid 2>/dev/null"
  cx rm -f /run/systemd/system/oneiricd.service.d/50-e2e-watchdog.conf
  cx systemctl daemon-reload
  cx systemctl restart oneiricd.service
  expect "back to the shipped WatchdogSec=30s" eq "$(prop WatchdogUSec)" 30s
  [ "$STEP_OK" = 1 ] || journal_tail 15
}

s_stop() {
  local rc t0 t1
  expect "running before stop" eq "$(prop ActiveState)" active
  t0=$(date +%s%N)
  cx systemctl stop oneiricd.service; rc=$?
  t1=$(date +%s%N)
  note "systemctl stop: rc $rc in $(((t1 - t0) / 1000000)) ms"
  expect "systemctl stop succeeds" test $rc = 0
  expect "Result=success" eq "$(prop Result)" success
  expect "exited with status 0" eq "$(prop ExecMainCode)/$(prop ExecMainStatus)" 1/0
  expect "inactive/dead" eq "$(prop ActiveState)/$(prop SubState)" inactive/dead
  expect "health file says stopped" eq "$(health_q 'd["state"]')" stopped
  expect "control socket removed" cx test ! -e $SOCK
  journal_tail 8
}

s_socket_activation() {
  local rc
  cx systemctl stop oneiricd.service
  cx systemctl reset-failed oneiricd.service  # the earlier steps' starts count towards the limit
  cx systemctl start oneiricd.socket; rc=$?
  expect "systemctl start oneiricd.socket (rc $rc)" test $rc = 0
  expect "systemd holds the socket: 0660 oneiric:oneiric" eq "$(cx stat -c '%A %U:%G' $SOCK)" "srw-rw---- oneiric:oneiric"
  expect "the service is not running yet" eq "$(prop ActiveState)" inactive
  as alice oneiricctl ping; rc=$?
  expect "alice: oneiricctl ping starts the daemon through the socket (rc $rc)" test $rc = 0
  # the control socket answers while the daemon is still starting (state "starting");
  # `systemctl start` joins the pending start job and returns once READY=1 arrived
  cx systemctl start oneiricd.service
  expect "the service is active" eq "$(prop ActiveState)" active
  cx systemctl stop oneiricd.service
  expect "the socket outlives a stop of the service" cx test -S $SOCK
  as alice oneiricctl ping >/dev/null 2>&1; rc=$?
  cx systemctl start oneiricd.service
  expect "the next connection starts it again (oneiricctl ping rc $rc)" test $rc = 0 -a "$(prop ActiveState)" = active
  cx systemctl stop oneiricd.socket oneiricd.service
  expect "socket file removed with the socket unit" cx test ! -e $SOCK
  # this step starts the service five times within seconds: systemd's default start limit
  # (5 in 10 s) is about crash loops, not this test, so its counter is reset first
  cx systemctl reset-failed oneiricd.service
  cx systemctl start oneiricd.service; rc=$?
  expect "oneiricd.service starts on its own again, binding the socket itself (rc $rc)" test $rc = 0
  [ "$STEP_OK" = 1 ] || journal_tail 15
}

s_remove() {
  local rc extra
  # the wrappers never write bytecode: /opt/oneiric holds exactly the package's files
  extra=$(cx sh -c 'find /opt/oneiric | sort >/tmp/have; dpkg -L oneiric | grep "^/opt/oneiric" | sort >/tmp/want; comm -23 /tmp/have /tmp/want | head -5')
  expect "nothing was added under /opt/oneiric at run time (${extra:-nothing})" test -z "$extra"
  expect "dpkg --verify still finds nothing changed" eq "$(cx dpkg --verify oneiric)" ""
  cx systemctl start oneiricd.service
  note "before remove: $(prop ActiveState), processes of oneiric: $(cx pgrep -u oneiric | wc -l)"
  cx dpkg -r oneiric; rc=$?
  expect "dpkg -r (rc $rc)" test $rc = 0
  expect "status 'deinstall ok config-files'" eq "$(cx dpkg-query -W -f='${Status}' oneiric)" "deinstall ok config-files"
  expect "no process of user oneiric left" test "$(cx pgrep -u oneiric | wc -l)" = 0
  expect "/opt/oneiric removed" cx test ! -e /opt/oneiric
  expect "/usr/bin/oneiricd and oneiricctl removed" cx test ! -e /usr/bin/oneiricd -a ! -L /usr/bin/oneiricctl
  expect "unit files removed" cx test ! -e /lib/systemd/system/oneiricd.service -a ! -e /lib/systemd/system/oneiricd.socket
  expect "config kept" cx test -f $CONF
  expect "state kept" cx test -d /var/lib/oneiric
  expect "user kept" cx getent passwd oneiric
}

s_purge() {
  local rc links
  cx dpkg -P oneiric; rc=$?
  expect "dpkg -P (rc $rc)" test $rc = 0
  expect "package unknown to dpkg" test -z "$(cx dpkg-query -W -f='${Status}' oneiric 2>/dev/null)"
  expect "/etc/oneiric removed" cx test ! -e /etc/oneiric
  expect "/var/lib/oneiric removed" cx test ! -e /var/lib/oneiric
  expect "/run/oneiric removed" cx test ! -e /run/oneiric
  links=$(cx find /etc/systemd/system -name 'oneiricd.*' 2>/dev/null | tr '\n' ' ')
  expect "no unit symlinks or masks left in /etc/systemd/system (${links:-none})" test -z "$links"
  cx rm -rf /run/systemd/system/oneiricd.service.d   # the test's own drop-ins
  cx systemctl daemon-reload
  expect "systemd no longer knows oneiricd.service" sh -c "! cx systemctl cat oneiricd.service >/dev/null 2>&1"
  note "the oneiric user and group are kept (Debian practice): $(cx getent passwd oneiric)"
}

s_teardown() {
  cx journalctl --no-pager -o short-monotonic >"$E2E_LOGS/journal.log" 2>&1
  note "container journal saved to $E2E_LOGS/journal.log"
  local t0=$SECONDS
  expect "container powered off, cgroups and overlay removed" ns_down
  note "teardown in $((SECONDS - t0)) s"
  expect "no mount left under $NS_DIR" test -z "$(grep " $NS_DIR" /proc/self/mountinfo)"
  expect "no container process left" test -z "$(pgrep -f "systemd-nspawn.*-M $NS_MACHINE" || true)"
  local d left=""
  for d in $(ns_cg_dirs); do [ -d "$d/$(ns_cg_name)" ] && left="$left $d"; done
  expect "no cgroup left (${left:-none})" test -z "$left"
}

# --------------------------------------------------------------------------- run
echo "oneiric e2e: $(basename "$DEB") on systemd-nspawn, run dir $NS_DIR, cache $E2E_CACHE"
step "host tools (systemd-container pinned to the host's systemd, debootstrap)" s_host fatal
step "root filesystem $(ns_rootfs_path)" s_rootfs fatal
step "boot systemd as PID 1 in the container" s_boot fatal
step "install the .deb" s_install fatal
step "bundled libraries run on Debian's /usr/bin/python3" s_python
step "oneiricd / oneiricctl wrappers, oneiricd --check" s_cli
step "man pages and shell completion installed" s_docs
step "package install started oneiricd" s_started_by_postinst
step "systemctl start returns after READY=1" s_start
step "StatusText is meaningful" s_status_text
step "sandbox in effect" s_sandbox
step "control socket and runtime directory permissions" s_socket
step "alice (group oneiric): oneiricctl pause adapter cache" s_alice_pause
step "alice: oneiricctl status" s_alice_status
step "journalctl -u oneiricd ONEIRIC_KEY=adapter/cache finds the pause" s_journal_fields
step "[metrics] textfile: written and parsed by prometheus_client" s_metrics_textfile
step "bob (not in group oneiric): mutations refused with exit 4" s_bob
step "systemctl reload with a broken config fails and keeps the old one" s_reload_broken
step "systemctl restart keeps the pause" s_restart_keeps_pause
step "package upgrade (reinstall) restarts the daemon and keeps the pause" s_upgrade
step "alice: oneiricctl drain, then resume" s_drain
step "watchdog restarts a SIGSTOPped daemon" s_watchdog
step "systemctl stop drains and exits cleanly" s_stop
step "socket activation with the optional oneiricd.socket" s_socket_activation
step "dpkg -r removes the program, keeps config and state" s_remove
step "dpkg -P purges config, state and run-time files" s_purge
aborted=""   # teardown runs even after a fatal failure
step "teardown (container, overlay, cgroups)" s_teardown
echo "total $((SECONDS - T_START)) s; logs in $E2E_LOGS"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
