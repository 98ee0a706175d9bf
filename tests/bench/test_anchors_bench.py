"""The anchor benchmark (our target and initiator beside tgtd and libiscsi) runs end to end.

A smoke run of a fraction of a second per case on 16 MiB LUNs: it checks that tgtd and our
target start, that bench/iscsi_load.c compiles and drives both, that iscsi-perf and our
load generator run, and that the table and JSON come out. Numbers are never asserted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _missing() -> str | None:
    for binary in ("tgtd", "tgtadm", "iscsi-perf"):
        if shutil.which(binary) is None and not os.access(f"/usr/sbin/{binary}", os.X_OK):
            return f"{binary} is not installed (scripts/install-peers.sh)"
    if os.geteuid() != 0:
        return "tgtd needs root"
    if shutil.which("cc") is None:
        return "no C compiler (build-essential)"
    if not Path("/usr/include/iscsi/iscsi.h").exists():
        return "libiscsi headers missing (libiscsi-dev)"
    return None


@pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
def test_anchors_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "anchors.json"
    plot = tmp_path / "anchors.png"
    result = subprocess.run([sys.executable, "-m", "bench.anchors", "--smoke", "--verify",
                             "--workloads", "rand-read-4k-qd32,rand-read-4k-qd1,seq-read-64k-qd32,seq-write-64k-qd32",
                             "--tcp-option", "sendfile=true", "--lun-option", "mmap", "--json", str(out),
                             "--plot", str(plot)],
                            capture_output=True, text=True, timeout=240, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "| rand-read-4k-qd32 |" in result.stdout and "ours / tgtd" in result.stdout
    assert "our target's LUN options: mmap" in result.stdout
    assert "ours / libiscsi" in result.stdout
    data = json.loads(out.read_text())
    assert data["verified"] == {"tgtd": True, "ours": True}
    from bench.host import tcp_congestion_control

    assert data["tcp_congestion_control"] == tcp_congestion_control() != "unknown"
    assert f"TCP congestion control {data['tcp_congestion_control']};" in result.stdout
    parts = {(row["part"], row["workload"], row["b"]) for row in data["rows"]}
    assert ("targets", "seq-write-64k-qd32", "ours") in parts
    assert ("initiators", "rand-read-4k-qd32", "ours->our target") in parts
    assert ("initiators", "rand-read-4k-qd1", "ours, busy_poll_us=100") in parts
    assert "| rand-read-4k-qd1 (ours, busy_poll_us=100) |" in result.stdout
    for row in data["rows"]:
        for sample in row["a_samples"] + row["b_samples"]:
            assert sample["ok"] and sample["ios"] > 0, (row["workload"], sample)
    assert "Data-Out 8 KiB" in result.stdout  # tgtd's default, read from its login answer
    assert plot.stat().st_size > 0


def test_ourload_parses_urls() -> None:
    from bench.ourload import parse_url

    assert parse_url("iscsi://127.0.0.1:3261/iqn.2026-11.x:y/1") == ("127.0.0.1", 3261, "iqn.2026-11.x:y", 1)
    assert parse_url("iscsi://host/iqn.a:b/0") == ("host", 3260, "iqn.a:b", 0)
    for bad in ("http://h/iqn/0", "iscsi://h/iqn", "iscsi://h/iqn/x"):
        with pytest.raises(ValueError):
            parse_url(bad)
