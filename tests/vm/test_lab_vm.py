"""Boot the lab guest and run the CI scenarios (1, 2, 3): real pyverbs on rdma_rxe, ours on
both ends, libiscsi over iSER. Takes minutes under TCG, so it runs only with DATAMOVER_LAB=1,
which scripts/test.sh (the README's and CI's test command) sets unless told otherwise; a bare
pytest run skips it and says why. The report stays in out/lab/latest/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _why_not() -> str | None:
    if os.environ.get("DATAMOVER_LAB") != "1":
        return ("boots a QEMU guest for several minutes: set DATAMOVER_LAB=1 (scripts/test.sh does), "
                "or run `lab/run.sh --scenarios ci`")
    if os.geteuid() != 0:
        return "the lab needs root (apt-get, guest root mirrors the host's)"
    if shutil.which("apt-get") is None and shutil.which("qemu-system-x86_64") is None:
        return "neither apt-get nor qemu-system-x86_64: cannot build the guest here"
    return None


@pytest.mark.vm
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_lab_ci_scenarios() -> None:
    why = _why_not()
    if why:
        pytest.skip(why)
    proc = subprocess.run([sys.executable, "-m", "lab", "--scenarios", "ci"], cwd=REPO, capture_output=True,
                          text=True, timeout=3500)
    if proc.returncode == 2:
        pytest.skip(f"the lab could not be set up here: {proc.stderr.strip()[-500:]}")
    latest = REPO / "out" / "lab" / "latest"
    data = json.loads((latest / "report.json").read_text())
    statuses = {s["number"]: s["status"] for s in data["scenarios"]}
    assert sorted(statuses) == [1, 2, 3]
    assert all(v == "passed" for v in statuses.values()), (
        f"{statuses}; see {latest / 'report.md'}\n{(latest / 'report.md').read_text()[-3000:]}")
    assert proc.returncode == 0, proc.stdout[-2000:]
