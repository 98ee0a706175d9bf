#!/bin/sh
# Install Debian's python3-pyverbs (rdma-core 44) and link it into the project's venv.
#
# PyPI's pyverbs does not work on Debian 12 (it fails to build with current Cython, or builds
# and then fails to import against the system's rdma-core); see
# docs on RDMA without hardware, §1. Only the pyverbs package is linked, not all of
# dist-packages. This works while the venv is CPython 3.11 (Debian 12 builds pyverbs for 3.11
# only). When the package cannot be installed, the script says so and exits 0: the project
# then runs on its soft RDMA provider.
set -u
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
    echo "install-pyverbs: no venv at $VENV (set VENV=...)" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-pyverbs: apt-get not available; skipping (the soft provider will be used)"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq || echo "install-pyverbs: apt-get update failed; trying the install anyway"
if ! DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-pyverbs; then
    echo "install-pyverbs: python3-pyverbs is not available here; skipping (the soft provider will be used)"
    exit 0
fi
SRC=/usr/lib/python3/dist-packages/pyverbs
if [ ! -d "$SRC" ]; then
    echo "install-pyverbs: $SRC missing after install; skipping"
    exit 0
fi
SP=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
ln -sfn "$SRC" "$SP/pyverbs"
if "$PY" -c 'import pyverbs.device, pyverbs.cmid, pyverbs.qp, pyverbs.mr, pyverbs.cq, pyverbs.wr' 2>/dev/null; then
    echo "install-pyverbs: pyverbs linked into $SP and importable"
    "$PY" -c 'from datamover_iser.verbs.select import probe_pyverbs; p = probe_pyverbs(); print("install-pyverbs: device probe:", p.reason)' 2>/dev/null || true
else
    echo "install-pyverbs: pyverbs linked but does not import with $PY (needs CPython 3.11); removing the link"
    rm -f "$SP/pyverbs"
fi
exit 0
