"""Facts about the host that change what the benchmarks measure, recorded with their results."""

from __future__ import annotations

_CONGESTION = "/proc/sys/net/ipv4/tcp_congestion_control"


def tcp_congestion_control() -> str:
    """The kernel's default TCP congestion control (BBR's pacing alone moved 1 MiB reads over
    loopback by half on the project's machine: docs/performance.md), or "unknown"."""
    try:
        with open(_CONGESTION, encoding="ascii") as handle:
            return handle.read().strip() or "unknown"
    except OSError:
        return "unknown"
