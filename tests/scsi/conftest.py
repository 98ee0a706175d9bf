from __future__ import annotations

import pytest

from datamover.scsi import LogicalUnit, MemoryBackend

#: 1 MiB at 512-byte blocks: 2048 blocks
LUN_BYTES = 1 << 20


@pytest.fixture
def mem_lu() -> LogicalUnit:
    """A clean RAM LUN without the power-on unit attention."""
    return LogicalUnit(MemoryBackend(LUN_BYTES), power_on_ua=False, serial="TESTSERIAL01")
