"""The values that cross the boundary between the iSCSI core and a logical unit.

The core calls :meth:`LogicalUnit.prepare` with the CDB as soon as a SCSI Command PDU
arrives (to learn how much write data to collect), then :meth:`LogicalUnit.execute`
with a :class:`ScsiRequest` once the data is in, and turns the :class:`ScsiResult` into
Data-In and a SCSI Response.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Literal

from datamover.scsi.constants import ScsiStatus
from datamover.scsi.sense import Sense

__all__ = ["Direction", "CommandPlan", "ScsiRequest", "ScsiResult", "DataOut"]

Direction = Literal["none", "read", "write", "bidi"]

#: write data as the core hands it over: one buffer, or a scatter-gather list of them
DataOut = memoryview | bytes | bytearray | Sequence[memoryview]


@dataclass(slots=True)
class CommandPlan:
    """What a CDB asks for, decided before any data moves.

    ``data_out_length`` is what the command would consume from the initiator according
    to the CDB; the core collects ``min(data_out_length, EDTL)``. ``data_in_length`` is
    the most the command returns (the allocation length for INQUIRY and the like).
    When ``ok`` is false the command fails with ``status`` (CHECK CONDITION and the
    ``error`` sense): the core should collect no data and may answer at once, or call
    ``execute`` (with no data), which reports the same error. Plans may be shared
    (:data:`PLAN_NONE`): treat them as read-only.
    """

    direction: Direction
    data_out_length: int = 0
    data_in_length: int = 0
    error: Sense | None = None
    #: GOOD when the command can proceed; otherwise the status it ends with at once
    #: (CHECK CONDITION with ``error``; RESERVATION CONFLICT will come without sense)
    status: int = ScsiStatus.GOOD

    def __post_init__(self) -> None:
        if self.error is not None and self.status == ScsiStatus.GOOD:
            self.status = ScsiStatus.CHECK_CONDITION

    @property
    def ok(self) -> bool:
        """True when the core should move data and call ``execute``."""
        return self.status == ScsiStatus.GOOD


#: the plan of a command that moves no data
PLAN_NONE = CommandPlan("none")


@dataclass(slots=True)
class ScsiRequest:
    """One command for a logical unit.

    ``nexus`` identifies the I_T nexus (initiator name + ISID + target name/portal
    group) so that unit attentions, and later reservations, are kept per initiator
    port. ``data_out`` may be shorter than the CDB asks (EDTL smaller than the transfer
    length): the LU then uses only the whole blocks received. ``data_in_buffer``, when
    large enough, receives READ data so no buffer is allocated per command.
    """

    cdb: bytes | bytearray | memoryview
    data_out: DataOut | None = None
    nexus: str = ""
    data_in_buffer: memoryview | None = None
    #: the initiator's Expected Data Transfer Length, when the core knows it (WRITE SAME
    #: and COMPARE AND WRITE refuse a Data-Out size other than what the CDB implies)
    expected_length: int | None = None


@dataclass(slots=True)
class ScsiResult:
    """The outcome of a command: SCSI status, sense (for CHECK CONDITION) and read data.

    ``data_in`` is at most the CDB's allocation/transfer length; the core truncates it
    to the Expected Data Transfer Length and computes residuals. ``sense`` is already
    in the format the LU reports (fixed or descriptor): send ``sense.encode()``.

    ``pending`` is set when the command goes on after ``execute`` returns (SANITIZE with
    IMMED=0 runs for seconds in the background): the other fields mean nothing then, and
    the outcome is the :class:`ScsiResult` the future resolves to, set from another
    thread. The core answers the command when it resolves (a ``concurrent.futures.Future``
    is used because it works with or without an event loop); an aborted task is simply
    not answered, while the operation itself goes on.
    """

    status: int = ScsiStatus.GOOD
    sense: Sense | None = None
    data_in: memoryview | bytes | None = None
    pending: Future[ScsiResult] | None = None

    @property
    def good(self) -> bool:
        return self.status == ScsiStatus.GOOD
