"""The transport benchmark harness runs (numbers are never asserted: a benchmark reports)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_transports_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "bench.transports", "--smoke", "--cases",
                             "loopback,tcp,tcp-digests,iser-shm", "--json", str(out)],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "iser-shm / tcp:" in result.stdout
    assert "tcp-digests / tcp" in result.stdout
    rows = json.loads(out.read_text())
    assert [r["name"] for r in rows] == ["loopback", "tcp", "tcp-digests", "iser-shm"]
    assert all(r["write_mib_s"] and r["read_mib_s"] and r["read_4k_iops"] and not r["error"] for r in rows)
    assert rows[2]["negotiated"] == {"HeaderDigest": "CRC32C", "DataDigest": "CRC32C"}
    assert "soft provider" in rows[3]["provider"]
