"""The stream benchmark in smoke mode: two processes per fabric, data integrity checked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "verbs_stream.py"


def test_bench_smoke_two_processes() -> None:
    res = subprocess.run([sys.executable, str(BENCH), "--smoke"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "integrity: ok" in out
    for name in ("memcpy", "RDMA WRITE over shm", "RDMA READ over shm", "plain TCP", "RDMA WRITE over zmq tcp://",
                 "RDMA READ over zmq tcp://", "plain Unix", "RDMA WRITE over zmq ipc://", "RDMA READ over zmq ipc://",
                 "zmq_ipc_read_vs_unix"):
        assert name in out, out
    assert "soft provider (roce-v2 personality, shm fabric" in out
    assert "zmq-ipc fabric" in out
