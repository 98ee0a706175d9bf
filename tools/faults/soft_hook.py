"""Random faults for the soft RDMA provider's fault hook (datamover_iser.verbs.faults).

The hook sees every message a QP or the CM is about to carry. Drops and corruptions are
absorbed by the soft provider's retransmission (as on a lossy RoCE fabric); delays hold the
link; a *break* tears the connection down, which the initiator must survive by ERL 0
session reinstatement. ``max_breaks`` bounds the breaks so a run always makes progress.
"""

from __future__ import annotations

import random
from collections import Counter

from datamover_iser.verbs.faults import Fault, FaultKind, FaultPoint


class SoftFaultHook:
    """A seeded hook: ``rate`` is the chance that one message gets a fault."""

    def __init__(self, seed: int, rate: float = 0.002, *, break_share: float = 0.25,
                 max_delay: float = 0.05, max_breaks: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.rate = rate
        self.break_share = break_share
        self.max_delay = max_delay
        self.max_breaks = max_breaks
        self.enabled = True
        self.fired: Counter[str] = Counter()
        self.points: Counter[str] = Counter()
        self.messages = 0

    def __call__(self, point: FaultPoint) -> Fault | None:
        self.messages += 1
        if not self.enabled or self.rng.random() >= self.rate:
            return None
        roll = self.rng.random()
        if roll < self.break_share and (self.max_breaks is None or self.fired["break"] < self.max_breaks):
            fault = Fault.broken()
        elif roll < 0.5:
            fault = Fault.drop()
        elif roll < 0.75:
            fault = Fault.corrupt()
        else:
            fault = Fault.delay(self.rng.uniform(0.001, self.max_delay))
        self.fired[fault.kind.value] += 1
        self.points[f"{point.kind}:{fault.kind.value}"] += 1
        return fault

    def summary(self) -> dict[str, object]:
        return {"messages": self.messages, "faults": sum(self.fired.values()),
                "by_action": dict(self.fired),
                "by_point": dict(self.points.most_common(12))}


__all__ = ["Fault", "FaultKind", "FaultPoint", "SoftFaultHook"]
