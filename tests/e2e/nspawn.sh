# shellcheck shell=bash
# nspawn.sh - boot a real systemd (PID 1) in a systemd-nspawn container on a Debian 12 host
# whose own PID 1 is not systemd, and drive it. Sourced by tests/e2e/systemd.sh.
# Derived from the team's reference harness (shared/systemd-nspawn/lab.sh); what differs:
#   - the debootstrapped root filesystem is cached, read-only, in $E2E_CACHE/rootfs-<hash of
#     suite + package list + this file's rootfs recipe version>, and every run boots an
#     overlayfs on top of it (a private upper layer in $NS_DIR), so a run never changes the
#     cache and a second run skips the minute of debootstrap;
#   - everything a run creates (container, overlay mount, cgroups, nspawn's propagation dir)
#     is removed by ns_down, which the caller runs from an EXIT trap.
#
# NEVER start a systemd manager on these machines outside its own PID and cgroup namespaces:
# nspawn as used here keeps to a sub-cgroup of its own in every hierarchy and cleans it up.
#
# Caller sets: NS_DIR (a private work directory), NS_MACHINE (container name).
# Optional env: NS_SUITE (bookworm or trixie), E2E_CACHE (default /var/cache/oneiric-e2e), MIRROR, E2E_REBUILD=1.

NS_SUITE=${NS_SUITE:-bookworm}   # or trixie (Debian 13: systemd 257, Python 3.13)
NS_PKGS="systemd,systemd-sysv,dbus,procps,python3,man-db"
NS_RECIPE=1   # bump when ns_rootfs changes what it puts in the root filesystem
NS_CPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
E2E_CACHE=${E2E_CACHE:-/var/cache/oneiric-e2e}

ns_log() { printf '[e2e %(%T)T] %s\n' -1 "$*" >&2; }

ns_mirror() {
  if [ -n "${MIRROR:-}" ]; then echo "$MIRROR"; return 0; fi
  local m
  m=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$m" ] || m=$(awk '/^deb / && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$m" ] || { ns_log "no Debian mirror in the apt sources; set MIRROR"; return 1; }
  echo "$m"
}

# --- host tools: systemd-container pinned to the host's systemd (the newest one would upgrade
# the host's systemd libraries), debootstrap
ns_setup() {
  if command -v systemd-nspawn >/dev/null && command -v debootstrap >/dev/null; then
    echo "systemd-nspawn and debootstrap already installed"
    return 0
  fi
  local v
  v=$(dpkg-query -W -f='${Version}' systemd) || return 1
  apt-get update -q >/dev/null || return 1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      "systemd-container=$v" debootstrap \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      systemd-container debootstrap   # that version left the archive: take the current one
}

ns_rootfs_path() {
  local key
  key=$(printf '%s|%s|%s' "$NS_SUITE" "$NS_PKGS" "$NS_RECIPE" | sha256sum | cut -c1-12)
  echo "$E2E_CACHE/rootfs-$key"
}

# --- the cached root filesystem (built once per package list, under a lock)
ns_rootfs() {
  local base tmp mirror rc=0
  base=$(ns_rootfs_path)
  mkdir -p "$E2E_CACHE"
  exec 9>"$E2E_CACHE/.lock"
  flock 9
  if [ "${E2E_REBUILD:-0}" = 1 ]; then rm -rf "$base"; E2E_REBUILD=0; fi
  if [ -x "$base/lib/systemd/systemd" ] && [ -f "$base/.complete" ]; then
    echo "cached: $base ($(du -sh "$base" | cut -f1))"
    flock -u 9; exec 9>&-
    return 0
  fi
  tmp=$base.tmp
  rm -rf "$tmp" "$base"
  mirror=$(ns_mirror) || { flock -u 9; exec 9>&-; return 1; }
  echo "debootstrap --variant=minbase --include=$NS_PKGS $NS_SUITE from $mirror"
  if debootstrap --variant=minbase --include="$NS_PKGS" "$NS_SUITE" "$tmp" "$mirror" \
      >"$E2E_CACHE/debootstrap.log" 2>&1; then
    rm -f "$tmp"/var/cache/apt/archives/*.deb
    echo oneiric-e2e >"$tmp/etc/hostname"
    date -u +%FT%TZ >"$tmp/.complete"
    mv "$tmp" "$base"
    echo "built: $base ($(du -sh "$base" | cut -f1))"
  else
    rc=1
    tail -20 "$E2E_CACHE/debootstrap.log"
    echo "debootstrap failed (log: $E2E_CACHE/debootstrap.log)"
  fi
  flock -u 9; exec 9>&-
  return $rc
}

# --- this run's root: overlayfs (cache read-only below, $NS_DIR/upper above)
NS_ROOT() { echo "$NS_DIR/root"; }

ns_mount_root() {
  local base; base=$(ns_rootfs_path)
  install -d -m 0755 "$NS_DIR/upper" "$NS_DIR/work" "$NS_DIR/root"
  # the upper layer's top directory becomes the container's "/": it must be 0755, or only
  # root could traverse it inside
  if mount -t overlay "oneiric-e2e-$NS_MACHINE" \
      -o "lowerdir=$base,upperdir=$NS_DIR/upper,workdir=$NS_DIR/work" "$NS_DIR/root"; then
    echo "overlay on $(NS_ROOT) (lower: $base)"
  else
    echo "overlayfs unavailable: copying the root filesystem"
    cp -a --reflink=auto "$base/." "$NS_DIR/root/" || return 1
  fi
}

# --- cgroups: the host has no systemd, so nspawn cannot get a scope from it (--keep-unit). Put
# the container under a sub-cgroup of our own in every hierarchy, so nothing lands at a
# hierarchy root and cleanup is a plain rmdir.
ns_cg_dirs() {
  local id ctrl path mnt fstype
  fstype=$(stat -fc %T /sys/fs/cgroup)
  while IFS=: read -r id ctrl path; do
    if [ "$fstype" = cgroup2fs ]; then
      [ "$id" = 0 ] && echo "/sys/fs/cgroup$path"
      continue
    fi
    case "$ctrl" in
      "") mnt=$(awk '$9=="cgroup2"{print $5; exit}' /proc/self/mountinfo) ;;
      *cpuset* | *net_cls* | *net_prio* | *perf_event* | *hugetlb* | *rdma* | *misc*) continue ;;
      name=systemd) mnt=$(awk '$9=="cgroup" && $NF ~ /name=systemd/ {print $5; exit}' /proc/self/mountinfo) ;;
      *) mnt=$(awk -v c="${ctrl%%,*}" '$9=="cgroup"{n=split($NF,o,",");for(i=1;i<=n;i++) if(o[i]==c){print $5; exit}}' /proc/self/mountinfo) ;;
    esac
    [ -n "$mnt" ] && [ -d "$mnt$path" ] && echo "${mnt}${path%/}"
  done </proc/self/cgroup
}
ns_cg_name() { echo "nspawn-$NS_MACHINE"; }
ns_cg_enter() {
  local d
  for d in $(ns_cg_dirs); do
    mkdir -p "$d/$(ns_cg_name)"
    echo "$BASHPID" >"$d/$(ns_cg_name)/cgroup.procs"
  done
}
ns_cg_procs() {  # the processes still in our sub-cgroups
  local d
  for d in $(ns_cg_dirs); do
    [ -d "$d/$(ns_cg_name)" ] && find "$d/$(ns_cg_name)" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -un
}
ns_cg_cleanup() {
  local d left=0 procs
  # the container's processes may still be exiting; anything left after 10 s was started by
  # our nspawn (they are in its cgroup) and is killed by pid
  for _ in $(seq 1 50); do [ -z "$(ns_cg_procs)" ] && break; sleep 0.2; done
  procs=$(ns_cg_procs)
  if [ -n "$procs" ]; then
    ns_log "killing leftover container processes: $(echo "$procs" | tr '\n' ' ')"
    # shellcheck disable=SC2086
    kill -KILL $procs 2>/dev/null
    for _ in $(seq 1 25); do [ -z "$(ns_cg_procs)" ] && break; sleep 0.2; done
  fi
  for d in $(ns_cg_dirs); do
    [ -d "$d/$(ns_cg_name)" ] || continue
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      find "$d/$(ns_cg_name)" -depth -type d -exec rmdir {} + 2>/dev/null || true
      [ -d "$d/$(ns_cg_name)" ] || break
      sleep 0.3
    done
    if [ -d "$d/$(ns_cg_name)" ]; then ns_log "could not remove $d/$(ns_cg_name)"; left=1; fi
  done
  return $left
}

ns_leader() {
  local np
  np=$(cat "$NS_DIR/nspawn.pid" 2>/dev/null) || return 1
  kill -0 "$np" 2>/dev/null || return 1
  awk '{print $1}' "/proc/$np/task/$np/children" 2>/dev/null
}

# --- boot: systemd as PID 1 in the background; returns when the manager is running
ns_boot() {
  local np pid="" st=""
  # shellcheck disable=SC2086  # NSPAWN_OPTS is a list of options
  ( ns_cg_enter
    exec systemd-nspawn --register=no --keep-unit -D "$(NS_ROOT)" -M "$NS_MACHINE" \
      -b --console=read-only ${NSPAWN_OPTS:-} </dev/null >"$NS_DIR/console.log" 2>&1 ) &
  np=$!
  echo "$np" >"$NS_DIR/nspawn.pid"
  for _ in $(seq 1 300); do   # until PID 1 inside is systemd (30 s)
    kill -0 "$np" 2>/dev/null || { cat "$NS_DIR/console.log"; echo "systemd-nspawn exited"; return 1; }
    pid=$(ns_leader || true)
    if [ -n "$pid" ] && readlink "/proc/$pid/exe" 2>/dev/null | grep -q 'systemd$'; then break; fi
    pid=""
    sleep 0.1
  done
  [ -n "$pid" ] || { echo "no systemd in the container after 30 s"; return 1; }
  echo "$pid" >"$NS_DIR/leader.pid"
  for _ in $(seq 1 60); do    # then until the manager is up (is-system-running --wait blocks)
    st=$(ns_exec timeout 60 systemctl is-system-running --wait 2>/dev/null || true)
    case "$st" in running | degraded) break ;; esac
    sleep 0.5
  done
  echo "container $NS_MACHINE: leader pid $pid, system state '$st'"
  if [ "$st" = degraded ]; then ns_exec systemctl --failed --no-pager --no-legend; fi
  case "$st" in running | degraded) return 0 ;; *) return 1 ;; esac
}

# --- run a command in the booted container: all its namespaces, a clean environment (the
# host's NOTIFY_SOCKET and friends must not leak in)
ns_exec() {
  local pid
  pid=$(ns_leader) || { echo "container not booted" >&2; return 125; }
  nsenter -t "$pid" -a -- /usr/bin/env -i PATH=$NS_CPATH LANG=C.UTF-8 TERM=dumb HOME=/root "$@"
}

# --- tear down: poweroff, wait, kill our own nspawn as a last resort, unmount, remove cgroups
ns_down() {
  local np pid rc=0
  np=$(cat "$NS_DIR/nspawn.pid" 2>/dev/null || true)
  if [ -n "$np" ] && kill -0 "$np" 2>/dev/null; then
    pid=$(ns_leader || true)
    [ -n "$pid" ] && ns_exec timeout 10 systemctl poweroff --no-block >/dev/null 2>&1
    for _ in $(seq 1 150); do kill -0 "$np" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$np" 2>/dev/null; then   # still shutting down (a unit that will not stop)
      kill -TERM "$np"                   # nspawn halts the container
      for _ in $(seq 1 50); do kill -0 "$np" 2>/dev/null || break; sleep 0.1; done
    fi
    if kill -0 "$np" 2>/dev/null && [ -n "$pid" ]; then
      # SIGKILL to the container's PID 1: the kernel kills its whole PID namespace (killing
      # nspawn instead would orphan the container)
      ns_log "container did not halt: killing its PID 1 ($pid)"
      kill -KILL "$pid" 2>/dev/null
      for _ in $(seq 1 50); do kill -0 "$np" 2>/dev/null || break; sleep 0.1; done
    fi
    if kill -0 "$np" 2>/dev/null; then kill -KILL "$np"; fi   # our own pid only
    wait "$np" 2>/dev/null || true
  fi
  rm -f "$NS_DIR/nspawn.pid" "$NS_DIR/leader.pid"
  rm -rf "/run/systemd/nspawn/propagate/$NS_MACHINE"
  ns_cg_cleanup || rc=1
  if mountpoint -q "$NS_DIR/root" 2>/dev/null; then
    for _ in 1 2 3 4 5; do umount "$NS_DIR/root" 2>/dev/null && break; sleep 0.5; done
    mountpoint -q "$NS_DIR/root" && { umount -l "$NS_DIR/root"; ns_log "overlay needed a lazy unmount"; rc=1; }
  fi
  if grep -q " $NS_DIR/" /proc/self/mountinfo; then ns_log "mounts left under $NS_DIR"; rc=1; fi
  return $rc
}
