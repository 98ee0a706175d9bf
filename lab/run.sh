#!/usr/bin/env bash
# The interop lab (issue 7): real verbs (rdma_rxe) and the Linux kernel's iSCSI/iSER as peers,
# in a QEMU TCG guest booting Debian's kernel. Run as root on Debian 12; see docs/interop.md.
#   lab/run.sh                   all scenarios
#   lab/run.sh --scenarios ci    scenarios 1-3 (what CI runs)
#   lab/run.sh --list
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || scripts/setup.sh
exec .venv/bin/python -m lab "$@"
