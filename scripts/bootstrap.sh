#!/usr/bin/env bash
# Make ./.venv with kdbench and its dependencies installed; reinstall when pyproject.toml changes.
# Sourced by run_all.sh and run_tests.sh. KDBENCH_PYTHON picks the interpreter (default python3).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${KDBENCH_VENV:-$root/.venv}"
python="${KDBENCH_PYTHON:-python3}"
extras="${1:-test}"
stamp="$venv/.kdbench-installed"
want="$(sha1sum "$root/pyproject.toml" | cut -d' ' -f1) $extras"
if [ ! -x "$venv/bin/python" ]; then
    echo "kdbench: creating $venv" >&2
    "$python" -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "kdbench: installing dependencies into $venv (first run takes a few minutes)" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root[$extras]" >&2
    echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
