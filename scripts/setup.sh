#!/usr/bin/env bash
# Prepare a fresh Debian 12 machine (root, Python 3.11) to run datamover: Debian packages,
# a virtualenv in .venv with the project and its test dependencies. Idempotent; safe to rerun.
#   DATAMOVER_SKIP_APT=1   skip apt-get (packages already present)
#   DATAMOVER_PEERS=0      skip the real peers (libiscsi-bin, tgt, tshark)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1; then PYTHON=$(command -v "$candidate"); break; fi
    done
fi
[ -n "$PYTHON" ] || { echo "setup: no python3 found" >&2; exit 1; }
"$PYTHON" - <<'PY' || { echo "setup: Python 3.11 is required (Debian 12's pyverbs is built for it)" >&2; exit 1; }
import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)
PY

if [ "${DATAMOVER_SKIP_APT:-0}" != 1 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    packages=()
    # Debian's python3 has no venv module without python3-venv
    "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1 || packages+=(python3-venv)
    # ISA-L's CRC32C computes long data digests at twice the PyPI package's rate (optional)
    dpkg -s libisal2 >/dev/null 2>&1 || packages+=(libisal2)
    if [ "${DATAMOVER_PEERS:-1}" != 0 ]; then
        # libiscsi-dev and a C compiler build bench/iscsi_load.c (the benchmark smoke test)
        for pkg in libiscsi-bin libiscsi-dev tgt tshark gcc libc6-dev; do
            dpkg -s "$pkg" >/dev/null 2>&1 || packages+=("$pkg")
        done
    fi
    if [ ${#packages[@]} -gt 0 ]; then
        echo "setup: installing Debian packages: ${packages[*]}"
        # tshark asks whether non-root users may capture; answer no, non-interactively
        echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
    fi
fi

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
if [ -x scripts/install-pyverbs.sh ]; then
    scripts/install-pyverbs.sh || echo "setup: pyverbs unavailable; the iSER plugin will use its software provider"
fi
echo "setup: ready (.venv/bin/datamover)"
