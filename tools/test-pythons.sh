#!/usr/bin/env bash
# test-pythons.sh - run the whole pytest suite on every supported Python (make test-pythons).
#
# For each version in $PYTHONS (default "3.11 3.12 3.13") it finds an interpreter (python3.X on
# PATH, else pyenv's ~/.pyenv/versions/3.X.*), makes .venv-3.X beside the main .venv, installs
# the project with its dev extras and runs pytest. A version with no interpreter is a failure,
# not a skip: the point of the target is that all of them pass.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHONS=${PYTHONS:-"3.11 3.12 3.13"}

find_python() {  # an interpreter that really runs (a pyenv shim may exist and refuse)
  local v=$1 p
  for p in $(command -v "python$v" 2>/dev/null) \
      "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$v".*/bin/python"$v"; do
    [ -x "$p" ] && "$p" -c 'import sys' >/dev/null 2>&1 && { echo "$p"; return 0; }
  done
  return 1
}

declare -A result
failed=0
for v in $PYTHONS; do
  if ! py=$(find_python "$v"); then
    echo "== Python $v: no interpreter found (python$v on PATH or pyenv)" >&2
    result[$v]="missing"; failed=1; continue
  fi
  venv=.venv-$v
  echo "== Python $v: $py ($("$py" -V 2>&1)) in $venv"
  if [ ! -f "$venv/.installed" ] || [ pyproject.toml -nt "$venv/.installed" ]; then
    { test -x "$venv/bin/python" || "$py" -m venv "$venv"; } &&
      "$venv/bin/python" -m pip install --quiet --upgrade pip &&
      "$venv/bin/python" -m pip install --quiet -e '.[dev]' &&
      touch "$venv/.installed" || { result[$v]="install failed"; failed=1; continue; }
  fi
  if "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"; then
    result[$v]="passed"
  else
    result[$v]="FAILED"; failed=1
  fi
done
echo
for v in $PYTHONS; do printf 'Python %-5s %s\n' "$v" "${result[$v]}"; done
exit $failed
