#!/usr/bin/env bash
# The default test suite (what CI runs): installs what it needs, then runs pytest.
# pytest exits 5 when it collected nothing; that is a failure here, never a pass.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh || exit 1
# The interop lab's CI scenarios (1-3: real verbs on rdma_rxe, ours on both ends over iSER,
# libiscsi over iSER) boot a QEMU guest from tests/vm/test_lab_vm.py: 2 to 3 minutes.
# DATAMOVER_LAB=0 leaves them out (the test then skips and says so).
export DATAMOVER_LAB="${DATAMOVER_LAB:-1}"
.venv/bin/python -m pytest -q "$@"
status=$?
if [ "$status" -eq 5 ]; then
    echo "test: pytest ran no tests; failing" >&2
    exit 1
fi
exit "$status"
