"""Facts about the host that change what the benchmarks measure, recorded with their results."""

from __future__ import annotations

from datamover_tcp.transport import system_congestion


def tcp_congestion_control() -> str:
    """The kernel's default TCP congestion control (BBR's pacing alone moved 1 MiB reads over
    loopback by half on the project's machine: docs/performance.md), or "unknown"."""
    return system_congestion() or "unknown"
