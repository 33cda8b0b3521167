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
#   /usr/share/man/man{1,5,8}/  oneiricctl(1), oneiricd.toml(5), oneiricd(8), generated from the
#                           program and docs/configuration.md (packaging/gen_man.py)
#   /usr/share/{bash-completion,zsh,fish}/…  shell completion for oneiricctl, from click
# Env: VENV (default .venv), DEB_REVISION (default 1), OUT (default dist),
#      DEB_SUITE (bookworm, the default: Debian 12, Python 3.11; or trixie: Debian 13, Python
#      3.13; a trixie package's version ends in +deb13 so both can sit in dist/),
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

DEB_SUITE=${DEB_SUITE:-bookworm}
case "$DEB_SUITE" in   # the suite's python3 and glibc: what the bundled wheels must fit
  bookworm) PYV=3.11 GLIBC_MINOR=36 SUFFIX="" ;;
  trixie) PYV=3.13 GLIBC_MINOR=41 SUFFIX="+deb13" ;;
  *) die "unknown DEB_SUITE=$DEB_SUITE (bookworm or trixie)" ;;
esac
PYTAG=cp${PYV/./}
PYNEXT=${PYV%.*}.$((${PYV#*.} + 1))

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
DEB_VERSION=$VERSION-${DEB_REVISION:-1}$SUFFIX
log "wheel $(basename "$WHEEL")"

# --- 2. wheel + dependencies into /opt/oneiric/lib, for the suite's CPython and glibc (3.11 and
# glibc <= 2.36 on bookworm; 3.13 and <= 2.41 on trixie), at the venv's versions
"${PIP[@]}" freeze --exclude-editable 2>/dev/null | grep -E '^[A-Za-z0-9_.-]+==' >"$WORK/constraints.txt" || true
LIB=$STAGE$PREFIX/lib
platforms=(--platform "manylinux2014_$PLAT")
for minor in $(seq "$GLIBC_MINOR" -1 17); do platforms+=(--platform "manylinux_2_${minor}_$PLAT"); done
quiet "${PIP[@]}" install --target "$LIB" --no-compile --no-warn-script-location \
  --only-binary=:all: --implementation cp --python-version "$PYV" --abi "$PYTAG" "${platforms[@]}" \
  --constraint "$WORK/constraints.txt" "$WHEEL"
rm -rf "${LIB:?}/bin"   # console scripts pointing at the build interpreter; ours are below
# direct_url.json records the build directory: not reproducible, and of no use on a host
rm -f "$LIB"/oneiric-*.dist-info/direct_url.json
sed -i '/direct_url\.json/d' "$LIB"/oneiric-*.dist-info/RECORD
find "$LIB" -name __pycache__ -prune -exec rm -rf {} +
# Hash-based bytecode (PEP 552): dpkg may clamp mtimes; the wrappers never write .pyc files
# (/opt is read-only for the daemon anyway). Any CPython of the suite's minor version writes the
# same magic number: the system's, the venv's or pyenv's.
COMPILER=""
for py in /usr/bin/python3 "$VENV/bin/python" "$(command -v "python$PYV" || true)" \
    "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$PYV".*/bin/python"$PYV"; do
  [ -x "$py" ] || continue
  if "$py" -c "import sys; sys.exit(sys.version_info[:2] != (${PYV%.*}, ${PYV#*.}))" 2>/dev/null; then
    COMPILER=$py; break
  fi
done
if [ -n "$COMPILER" ]; then
  quiet "$COMPILER" -m compileall -q -j 0 --invalidation-mode unchecked-hash "$LIB"
else
  log "WARNING: no Python $PYV here to precompile bytecode; the package imports from source"
fi
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

if sys.version_info[:2] != (${PYV%.*}, ${PYV#*.}):
    sys.exit("$cmd: $PREFIX needs Python $PYV, this is %d.%d" % sys.version_info[:2])
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

# --- 4b. manual pages and shell completion, generated from the program itself
MAN=$WORK/man
quiet "$VENV/bin/python" packaging/gen_man.py "$MAN"
for page in "$MAN"/*.[158]; do
  section=${page##*.}
  install -D -m 0644 "$page" "$STAGE/usr/share/man/man$section/$(basename "$page")"
  gzip -9n "$STAGE/usr/share/man/man$section/$(basename "$page")"
done
completion() {  # click writes the script for a shell when asked through its variable
  _ONEIRICCTL_COMPLETE=${1}_source "$VENV/bin/python" -c \
    'from oneiric.cli.oneiricctl import main; main()' >"$2" || die "no $1 completion"
  [ -s "$2" ] || die "empty $1 completion"
}
install -d -m 0755 "$STAGE/usr/share/bash-completion/completions" \
  "$STAGE/usr/share/zsh/vendor-completions" "$STAGE/usr/share/fish/vendor_completions.d"
completion bash "$STAGE/usr/share/bash-completion/completions/oneiricctl"
completion zsh "$STAGE/usr/share/zsh/vendor-completions/_oneiricctl"
completion fish "$STAGE/usr/share/fish/vendor_completions.d/oneiricctl.fish"
chmod 0644 "$STAGE"/usr/share/bash-completion/completions/oneiricctl \
  "$STAGE"/usr/share/zsh/vendor-completions/_oneiricctl \
  "$STAGE"/usr/share/fish/vendor_completions.d/oneiricctl.fish

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
Depends: python3 (>= $PYV), python3 (<< $PYNEXT), libc6 (>= 2.17)
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
