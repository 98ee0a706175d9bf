"""Facts about the host that change what the benchmarks measure, recorded with their results."""

from __future__ import annotations

from datamover_tcp.transport import system_congestion


def tcp_congestion_control() -> str:
    """The kernel's default TCP congestion control (on the project's machine cubic instead of
    BBR made 1 MiB reads over loopback 1.5x as fast: docs/performance.md), or "unknown"."""
    return system_congestion() or "unknown"
