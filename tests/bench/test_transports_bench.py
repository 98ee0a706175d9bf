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
    with open("/proc/sys/net/ipv4/tcp_congestion_control") as handle:  # recorded: it moves TCP results
        assert {r["host_tcp_congestion"] for r in rows} == {handle.read().strip()}
    assert "host TCP congestion control" in result.stdout


def test_transports_bench_tcp_options_reach_both_ends_and_bad_ones_fail_the_case(tmp_path: Path) -> None:
    """--tcp-option is recorded with the TCP cases it ran with; a value the transport refuses
    fails that case with the transport's message (the target child reports it), not a hang."""
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "bench.transports", "--smoke", "--cases", "tcp,loopback",
                             "--tcp-option", "phase_collapse=false", "--json", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[transport.tcp] options on both ends: phase_collapse=false" in result.stdout
    rows = json.loads(out.read_text())
    assert rows[0]["options"] == {"phase_collapse": False} and rows[1]["options"] == {}
    bad = subprocess.run([sys.executable, "-m", "bench.transports", "--smoke", "--cases", "tcp",
                          "--tcp-option", "recv_buffer=100"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert "tcp          failed: RuntimeError: target: transport 'tcp'" in bad.stdout, bad.stdout + bad.stderr
    assert "recv_buffer must be an integer >= 4096" in bad.stdout
    unquoted = subprocess.run([sys.executable, "-m", "bench.transports", "--smoke", "--tcp-option", "congestion=cubic"],
                              capture_output=True, text=True, timeout=60)
    assert unquoted.returncode == 2 and "a string needs quotes" in unquoted.stderr
    unknown = subprocess.run([sys.executable, "-m", "bench.transports", "--smoke", "--tcp-option", "congestoin=1"],
                             capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and "congestoin: not a [transport.tcp] option" in unknown.stderr
