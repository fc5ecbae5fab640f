#!/usr/bin/env bash
# Run the whole benchmark end to end and write results/<grid>/report.md.
# Installs what it needs into ./.venv on first use; extra arguments go to the runner, e.g.
#   ./run_all.sh --preset cifar100 --data-root ~/data
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh test
exec python -m benchmarks.run "$@"
