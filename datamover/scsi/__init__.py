"""SCSI logical-unit emulation (SPC-5 / SBC-4 subset), independent of iSCSI.

The iSCSI target core uses :class:`LunMap` (one per target) and, through it,
:class:`LogicalUnit` objects over a :class:`Backend` (RAM or file). Command families live
in :mod:`datamover.scsi.commands`, one module each.
"""

from __future__ import annotations

from datamover.scsi.backend import Backend, BackendError, FileBackend, MemoryBackend
from datamover.scsi.command import CommandPlan, ScsiRequest, ScsiResult
from datamover.scsi.constants import Opcode, ScsiStatus, SenseKey
from datamover.scsi.lu import LogicalUnit, LunConfigError
from datamover.scsi.lunmap import LunFormatError, LunMap, decode_lun, encode_lun
from datamover.scsi.sense import ScsiError, Sense, SenseFormatError

__all__ = [
    "Backend",
    "BackendError",
    "CommandPlan",
    "FileBackend",
    "LogicalUnit",
    "LunConfigError",
    "LunFormatError",
    "LunMap",
    "MemoryBackend",
    "Opcode",
    "ScsiError",
    "ScsiRequest",
    "ScsiResult",
    "ScsiStatus",
    "Sense",
    "SenseFormatError",
    "SenseKey",
    "decode_lun",
    "encode_lun",
]
