"""Unit attention conditions, kept per I_T nexus (SAM-5 5.14, SPC-5 5.14).

A unit attention tells one initiator port that something happened behind its back
(power on, reset, changed parameters). It is reported once, as CHECK CONDITION on that
nexus's next command, except for INQUIRY, REPORT LUNS and REQUEST SENSE, which go
through (REQUEST SENSE returns and clears it).

A nexus seen for the first time starts with a POWER ON, RESET OR BUS DEVICE RESET
OCCURRED condition (unless turned off), as after a power-on the device server would
have one for every nexus.
"""

from __future__ import annotations

from datamover.scsi.sense import POWER_ON_RESET, Sense

__all__ = ["UnitAttentions"]

#: ASC 29h (power on, reset, nexus loss) supersedes any other pending condition (SPC-5 5.14).
_RESET_CLASS_ASC = 0x29
#: more than this many queued conditions means the oldest are dropped (SPC allows it)
_MAX_QUEUED = 16


class UnitAttentions:
    """The pending conditions of one logical unit, one queue per nexus."""

    __slots__ = ("power_on", "pending")

    def __init__(self, power_on: bool = True) -> None:
        self.power_on = power_on
        #: nexus -> queued conditions, oldest first; a key exists for every known nexus,
        #: so the fast path is one dict lookup (an empty list means nothing pending)
        self.pending: dict[str, list[Sense]] = {}

    def register(self, nexus: str) -> list[Sense]:
        """Note a new nexus (giving it the power-on condition); return its queue."""
        queue = self.pending.get(nexus)
        if queue is None:
            queue = [POWER_ON_RESET] if self.power_on else []
            self.pending[nexus] = queue
        return queue

    def peek(self, nexus: str) -> Sense | None:
        """The condition the next command of ``nexus`` would report, without clearing."""
        queue = self.pending.get(nexus)
        if queue is None:
            return POWER_ON_RESET if self.power_on else None
        return queue[0] if queue else None

    def pop(self, nexus: str) -> Sense | None:
        """Report and clear the oldest condition of ``nexus`` (registering it if new)."""
        queue = self.register(nexus)
        return queue.pop(0) if queue else None

    def establish(self, sense: Sense, nexus: str | None = None, *, exclude: str | None = None) -> None:
        """Queue ``sense`` for one nexus, or for every known nexus but ``exclude``."""
        targets = [nexus] if nexus is not None else [n for n in self.pending if n != exclude]
        for name in targets:
            queue = self.register(name)
            if sense.asc == _RESET_CLASS_ASC:
                # a reset makes every older condition moot
                queue[:] = [sense]
            elif sense not in queue:
                if len(queue) >= _MAX_QUEUED:
                    del queue[1]  # keep the oldest (often the reset) and the newest
                queue.append(sense)

    def clear(self, nexus: str) -> None:
        """Drop every pending condition of ``nexus`` but keep it known."""
        self.pending[nexus] = []

    def forget(self, nexus: str) -> None:
        """Forget ``nexus`` entirely; it counts as new if it comes back."""
        self.pending.pop(nexus, None)
