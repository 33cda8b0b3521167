#!/usr/bin/env bash
# build-deb.sh - build dist/oneiric_<version>-<rev>_<arch>.deb (run by `make deb`).
#
# The package is self-contained under /opt/oneiric and runs on Debian's own /usr/bin/python3
# (3.11 on bookworm), not on the interpreter that builds it:
#   /opt/oneiric/lib/       the project wheel and its dependencies, installed with pip --target
#                           from binary wheels chosen for CPython 3.11 / manylinux (so the build
#                           interpreter's patch version and site-packages do not matter), at the
#                           versions pinned in the project venv (pip freeze), bytecode
#                           precompiled (hash-based .pyc: valid whatever the file mtimes)
#   /opt/oneiric/bin/       oneiricd, oneiricctl: `#!/usr/bin/python3 -I` wrappers that put
#                           lib/ first on sys.path and call the CLI's main() directly (no
#                           entry-point scanning, no pkg_resources: oneiricctl starts fast)
#   /usr/bin/oneiricd, /usr/bin/oneiricctl -> the wrappers
#   /lib/systemd/system/oneiricd.{service,socket}, /usr/lib/{sysusers,tmpfiles}.d/oneiric.conf
#   /etc/oneiric/oneiricd.toml (conffile), /etc/oneiric/conf.d/
#   /usr/share/doc/oneiric/{deployment.md,copyright}
# Maintainer scripts: packaging/debian/{postinst,prerm,postrm}.
#
# Env: VENV (default .venv), DEB_REVISION (default 1), OUT (default dist),
#      SOURCE_DATE_EPOCH (default: the last commit's time, for reproducible archives).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
VENV=${VENV:-.venv}
PIP=("$VENV/bin/python" -m pip)
OUT=${OUT:-dist}
WORK=build/deb
STAGE=$WORK/root
PREFIX=/opt/oneiric
LOG=$WORK/build.log

log() { printf '[build-deb %(%T)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; [ -f "$LOG" ] && tail -30 "$LOG" >&2; exit 1; }
quiet() { "$@" >>"$LOG" 2>&1 || die "failed: $* (log: $LOG)"; }

[ -x "$VENV/bin/python" ] || die "no venv at $VENV: run make venv"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found"

case "$(uname -m)" in
  x86_64) ARCH=amd64 PLAT=x86_64 ;;
  aarch64) ARCH=arm64 PLAT=aarch64 ;;
  *) die "unsupported machine $(uname -m)" ;;
esac
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

t0=$SECONDS
rm -rf "$WORK"
mkdir -p "$WORK/src" "$WORK/wheels" "$STAGE" "$OUT"
: >"$LOG"

# --- 1. the project wheel, built from a clean copy of the sources (no stale build/lib, no
# egg-info or __pycache__ of the developer tree)
shopt -s nullglob
sources=(pyproject.toml src README* LICENSE*)
shopt -u nullglob
tar --exclude=__pycache__ --exclude='*.egg-info' -cf - "${sources[@]}" | tar -xf - -C "$WORK/src"
quiet "${PIP[@]}" wheel --no-deps --wheel-dir "$WORK/wheels" "$WORK/src"
WHEEL=$(ls "$WORK"/wheels/oneiric-*.whl)
VERSION=$(basename "$WHEEL" | cut -d- -f2)
DEB_VERSION=$VERSION-${DEB_REVISION:-1}
log "wheel $(basename "$WHEEL")"

# --- 2. wheel + dependencies into /opt/oneiric/lib, for CPython 3.11 on glibc <= 2.36
# (bookworm), at the venv's versions
"${PIP[@]}" freeze --exclude-editable 2>/dev/null | grep -E '^[A-Za-z0-9_.-]+==' >"$WORK/constraints.txt" || true
LIB=$STAGE$PREFIX/lib
platforms=(--platform "manylinux2014_$PLAT")
for minor in $(seq 36 -1 17); do platforms+=(--platform "manylinux_2_${minor}_$PLAT"); done
quiet "${PIP[@]}" install --target "$LIB" --no-compile --no-warn-script-location \
  --only-binary=:all: --implementation cp --python-version 3.11 --abi cp311 "${platforms[@]}" \
  --constraint "$WORK/constraints.txt" "$WHEEL"
rm -rf "${LIB:?}/bin"   # console scripts pointing at the build interpreter; ours are below
# direct_url.json records the build directory: not reproducible, and of no use on a host
rm -f "$LIB"/oneiric-*.dist-info/direct_url.json
sed -i '/direct_url\.json/d' "$LIB"/oneiric-*.dist-info/RECORD
find "$LIB" -name __pycache__ -prune -exec rm -rf {} +
# Hash-based bytecode (PEP 552): dpkg may clamp mtimes; the wrappers never write .pyc files
# (/opt is read-only for the daemon anyway). Any CPython 3.11 writes the same magic number.
COMPILER=/usr/bin/python3
"$COMPILER" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null || COMPILER=$VENV/bin/python
quiet "$COMPILER" -m compileall -q -j 0 --invalidation-mode unchecked-hash "$LIB"
log "bundled: $(find "$LIB" -maxdepth 1 -name '*.dist-info' -printf '%f\n' | sed 's/\.dist-info$//' | sort | tr '\n' ' ')"

# --- 3. wrappers and /usr/bin links
mkdir -p "$STAGE$PREFIX/bin" "$STAGE/usr/bin"
for cmd in oneiricd oneiricctl; do
  cat >"$STAGE$PREFIX/bin/$cmd" <<EOF
#!/usr/bin/python3 -I
"""$cmd of the oneiric package: Debian's python3 with the libraries bundled in $PREFIX/lib.

Isolated mode (-I): PYTHON* variables and the user's site-packages cannot change what runs.
main() is called directly, without entry-point lookups, to keep start-up short.
"""
import sys

if sys.version_info[:2] != (3, 11):
    sys.exit("$cmd: $PREFIX needs Python 3.11, this is %d.%d" % sys.version_info[:2])
sys.dont_write_bytecode = True  # the bundled .pyc files are precompiled; /opt stays clean
sys.path.insert(0, "$PREFIX/lib")

from oneiric.cli.$cmd import main  # noqa: E402

sys.exit(main())
EOF
  chmod 0755 "$STAGE$PREFIX/bin/$cmd"
  ln -s "$PREFIX/bin/$cmd" "$STAGE/usr/bin/$cmd"
done

# --- 4. systemd integration, config, docs
install -D -m 0644 contrib/systemd/oneiricd.service "$STAGE/lib/systemd/system/oneiricd.service"
install -D -m 0644 contrib/systemd/oneiricd.socket "$STAGE/lib/systemd/system/oneiricd.socket"
install -D -m 0644 contrib/systemd/sysusers.d/oneiric.conf "$STAGE/usr/lib/sysusers.d/oneiric.conf"
install -D -m 0644 contrib/systemd/tmpfiles.d/oneiric.conf "$STAGE/usr/lib/tmpfiles.d/oneiric.conf"
install -D -m 0644 packaging/oneiricd.toml "$STAGE/etc/oneiric/oneiricd.toml"
install -d -m 0755 "$STAGE/etc/oneiric/conf.d"
DOC=$STAGE/usr/share/doc/oneiric
install -d -m 0755 "$DOC"
[ -f docs/deployment.md ] && install -m 0644 docs/deployment.md "$DOC/deployment.md"
cat >"$DOC/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: oneiric

Files: *
License: MIT
Comment: /opt/oneiric/lib bundles the Python dependencies of oneiric (anyio, msgspec, click,
 watchfiles, python-daemon and theirs); each one's licence is in its *.dist-info directory.
EOF

# --- 5. control files
mkdir -p "$STAGE/DEBIAN"
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$STAGE/DEBIAN/"
echo /etc/oneiric/oneiricd.toml >"$STAGE/DEBIAN/conffiles"
cat >"$STAGE/DEBIAN/control" <<EOF
Package: oneiric
Version: $DEB_VERSION
Architecture: $ARCH
Maintainer: oneiric developers <oneiric@localhost>
Installed-Size: $(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
Depends: python3 (>= 3.11), python3 (<< 3.12), libc6 (>= 2.17)
Recommends: systemd
Section: admin
Priority: optional
Description: host daemon for pluggable async Python components
 oneiricd loads pluggable async components (adapters, services, tasks, event
 handlers, workflows), keeps one active provider per key, hot-swaps them
 make-before-break and lets operators pause, resume and drain them with
 oneiricctl over a Unix socket. Runs under systemd as oneiricd.service.
 .
 Self-contained: its Python libraries live in /opt/oneiric/lib and it runs
 on the system's python3.
EOF
(cd "$STAGE" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' \
  | sort -z | xargs -0 md5sum) >"$STAGE/DEBIAN/md5sums"

# --- 6. the archive: every file root:root whatever the builder's uid
DEB=$OUT/oneiric_${DEB_VERSION}_$ARCH.deb
rm -f "$DEB"
quiet dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$DEB"
log "built $DEB ($(du -h "$DEB" | cut -f1), installed $(du -sh --exclude=DEBIAN "$STAGE" | cut -f1)) in $((SECONDS - t0)) s"
echo "$DEB"
