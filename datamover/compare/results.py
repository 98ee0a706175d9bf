"""What one transport's run produced: per-step measurements and per-I/O evidence.

Per-I/O evidence (status and sense, read digests) and the per-step normalised DI trace
are kept so the cross-check can name the first I/O or DI call where two transports
differ; measurements (latencies, CPU, datamover counters) feed the table and plots.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

#: (SCSI status, sense bytes as hex) of a completed I/O, or ("error", exception name)
Outcome = tuple[object, str]

GIB = float(1 << 30)
MIB = float(1 << 20)
GB = 1e9


#: datamover counters that count operations on the wire or the fabric (per direction)
OPERATION_KEYS = ("pdus_sent", "pdus_received", "verbs_ops")


def _copied_bytes(stats: dict[str, int]) -> int | None:
    """Payload bytes a datamover copied: ``payload_bytes_copied`` where a plugin counts it
    so (TCP), else ``payload_copies``, which loopback counts in bytes."""
    if "payload_bytes_copied" in stats:
        return stats["payload_bytes_copied"]
    return stats.get("payload_copies")


class RunStatus(enum.Enum):
    OK = "ok"
    NOT_IMPLEMENTED = "not implemented yet"
    FAILED = "failed"


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None for no values)."""
    if not sorted_values:
        return None
    rank = max(1, -(-int(fraction * 1_000_000) * len(sorted_values) // 1_000_000))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(slots=True)
class StepResult:
    """One step on one transport."""

    name: str
    pattern: str
    op: str
    block_size: int
    measured: bool
    ios: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, per I/O in index order
    outcomes: list[Outcome] = field(default_factory=list)
    digests: list[bytes | None] = field(default_factory=list)  # reads: CRC32C of the data
    verify_errors: int = 0
    first_verify_error: str | None = None
    trace: list[str] = field(default_factory=list)  # normalised initiator-side DI calls
    trace_dropped: int = 0

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written

    @property
    def mib_s(self) -> float:
        return self.bytes / MIB / self.seconds if self.seconds > 0 else 0.0

    @property
    def iops(self) -> float:
        return self.ios / self.seconds if self.seconds > 0 else 0.0

    def latency_us(self) -> dict[str, float | None]:
        ordered = sorted(self.latencies)
        return {name: (None if (v := percentile(ordered, q)) is None else round(v * 1e6, 1))
                for name, q in (("p50", 0.50), ("p99", 0.99), ("p999", 0.999))}

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name, "pattern": self.pattern, "op": self.op, "block_size": self.block_size,
            "measured": self.measured, "ios": self.ios, "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written, "seconds": round(self.seconds, 6),
            "mib_s": round(self.mib_s, 2), "iops": round(self.iops, 1), "latency_us": self.latency_us(),
            "verify_errors": self.verify_errors, "first_verify_error": self.first_verify_error,
            "non_good_statuses": sum(1 for status, _ in self.outcomes if status != 0),
            "trace_calls": len(self.trace), "trace_dropped": self.trace_dropped,
        }


@dataclass(slots=True)
class TransportRun:
    """Everything one transport's run produced (or why it did not run)."""

    name: str
    status: RunStatus = RunStatus.OK
    error: str | None = None
    describe: str = ""
    provider: str = ""
    capabilities: list[str] = field(default_factory=list)
    target_mode: str = ""  # "in-process", "child process (pid N)", "remote HOST:PORT"
    note: str | None = None  # something the reader should know about how it ran
    steps: list[StepResult] = field(default_factory=list)
    initiator_cpu: float | None = None  # seconds over the measured steps
    target_cpu: float | None = None  # None: not measurable (remote) or shared (in-process)
    cpu_shared: bool = False
    stats: dict[str, int] = field(default_factory=dict)  # initiator datamover counters over the steps
    target_stats: dict[str, int] | None = None  # target-side counters (in-process targets only)
    agrees: bool | None = None  # set by the cross-check (None: not compared)
    agreed: dict[str, str] = field(default_factory=dict)  # the keys the login settled on

    @property
    def ran(self) -> bool:
        return self.status is RunStatus.OK

    def measured_steps(self) -> list[StepResult]:
        return [step for step in self.steps if step.measured]

    def totals(self) -> dict[str, Any]:
        """Aggregates over the measured steps (the table's row)."""
        steps = self.measured_steps()
        seconds = sum(s.seconds for s in steps)
        moved = sum(s.bytes for s in steps)
        ios = sum(s.ios for s in steps)
        ordered = sorted(lat for s in steps for lat in s.latencies)
        all_moved = sum(s.bytes for s in self.steps)
        all_ios = sum(s.ios for s in self.steps)

        def per_gb(cpu: float | None) -> float | None:
            return round(cpu / (all_moved / GB), 3) if cpu is not None and all_moved else None

        # copies: both ends where both are visible; operations: the initiator's view only,
        # so that an in-process and a cross-process target count the same thing
        copied = _copied_bytes(self.stats)
        if copied is not None and self.target_stats is not None:
            copied += _copied_bytes(self.target_stats) or 0
        ops = None
        op_keys = [k for k in OPERATION_KEYS if k in self.stats]
        if op_keys and all_ios:
            ops = round(sum(self.stats[k] for k in op_keys) / all_ios, 2)
        return {
            "bytes": moved, "ios": ios, "seconds": round(seconds, 6),
            "mib_s": round(moved / MIB / seconds, 2) if seconds > 0 else None,
            "iops": round(ios / seconds, 1) if seconds > 0 else None,
            "latency_us": {name: (None if (v := percentile(ordered, q)) is None else round(v * 1e6, 1))
                           for name, q in (("p50", 0.50), ("p99", 0.99), ("p999", 0.999))},
            "initiator_cpu_s_per_gb": per_gb(self.initiator_cpu),
            "target_cpu_s_per_gb": per_gb(self.target_cpu),
            "cpu_shared": self.cpu_shared,
            "copies_per_byte": round(copied / all_moved, 3) if copied is not None and all_moved else None,
            "copies_counted_on": "initiator+target" if self.target_stats is not None else "initiator",
            "ops_per_io": ops,
            "verify_errors": sum(s.verify_errors for s in self.steps),
        }
