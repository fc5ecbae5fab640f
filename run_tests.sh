#!/usr/bin/env bash
# Run kdbench's test suite (installs what it needs into ./.venv on first use).
# Extra arguments go to pytest, e.g. ./run_tests.sh -k kd -x
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh test
exec python -m pytest "$@"
