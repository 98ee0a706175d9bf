#!/usr/bin/env bash
# The main job: install what is needed, then run `datamover compare` on the embedded
# defaults (every registered transport, the same workload, cross-checked).
# Extra arguments go to `datamover compare` (e.g. --json report.json --plot plots/).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/datamover compare "$@"
