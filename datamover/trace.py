"""DI call traces: what crossed the RFC 5047 boundary, in a transport-neutral form.

The core records its own down-calls and the up-calls it receives, so every transport is
traced the same way, by code the transport did not write. A normalised trace replaces
task tags, transfer tags and sequence numbers by their order of first appearance, so the
same workload gives the same trace over loopback, TCP and iSER. Comparative runs diff
these traces; the first diverging call names the plugin that behaved differently.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One DI call. ``fields`` are (name, value) pairs already chosen to be comparable."""

    role: str  # "initiator" / "target"
    call: str  # the RFC 5047 primitive in snake case
    fields: tuple[tuple[str, object], ...]

    def __str__(self) -> str:
        inner = " ".join(f"{k}={v}" for k, v in self.fields)
        return f"{self.role}:{self.call}({inner})"


@dataclass(slots=True)
class DITrace:
    """An append-only, bounded list of trace events (the cap keeps long runs safe)."""

    limit: int = 1_000_000
    events: list[TraceEvent] = field(default_factory=list)
    dropped: int = 0

    def record(self, role: str, call: str, **fields: object) -> None:
        if len(self.events) >= self.limit:
            self.dropped += 1
            return
        self.events.append(TraceEvent(role, call, tuple(fields.items())))

    def calls(self, call: str | None = None, role: str | None = None) -> list[TraceEvent]:
        return [e for e in self.events
                if (call is None or e.call == call) and (role is None or e.role == role)]

    def clear(self) -> None:
        self.events.clear()
        self.dropped = 0


#: fields that are identifiers: renumbered by first appearance when normalising
_TAG_FIELDS = frozenset({"itt", "ttt", "handle"})


def normalise(events: Iterable[TraceEvent]) -> list[str]:
    """A comparable rendering: tags renumbered in order of first appearance, per role.

    Events are grouped per role, task (ITT) and primitive, keeping their order within each
    group: the interleaving of independent tasks, and within a task of independent streams
    (unsolicited Data-Out arriving while Get_Data bursts complete), depends on timing and
    legitimately differs between transports; the calls themselves and their arguments do not.
    """
    renumber: dict[tuple[str, str, object], int] = {}
    counters: dict[tuple[str, str], int] = {}
    per_task: dict[tuple[str, object, str], list[str]] = {}
    order: list[tuple[str, object, str]] = []
    for event in events:
        parts = []
        task_key: object = None
        for name, value in event.fields:
            if name in _TAG_FIELDS:
                key = (event.role, name, value)
                if key not in renumber:
                    counters[key[:2]] = renumber[key] = counters.get(key[:2], 0) + 1
                value = f"#{renumber[key]}"
                if name == "itt":
                    task_key = value
            parts.append(f"{name}={value}")
        group = (event.role, task_key, event.call)
        if group not in per_task:
            per_task[group] = []
            order.append(group)
        per_task[group].append(f"{event.role}:{event.call}(" + " ".join(parts) + ")")
    out: list[str] = []
    # a fixed order of groups: role, then task in order of first use, then primitive
    def sort_key(group: tuple[str, object, str]) -> tuple[str, int, str]:
        role, task, call = group
        number = int(str(task)[1:]) if isinstance(task, str) and task.startswith("#") else 0
        return role, number, call

    for group in sorted(order, key=sort_key):
        out.extend(per_task[group])
    return out


def first_difference(a: list[str], b: list[str]) -> tuple[int, str | None, str | None] | None:
    """Index and the two differing lines of two normalised traces, or None if equal."""
    for index, (left, right) in enumerate(zip(a, b)):
        if left != right:
            return index, left, right
    if len(a) != len(b):
        index = min(len(a), len(b))
        return index, (a[index] if index < len(a) else None), (b[index] if index < len(b) else None)
    return None
