"""Helpers shared by the command families beyond the READ/WRITE hot path: write data as
bytes, LBA range and write-protect checks, and backend error mapping."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from datamover.scsi.backend import BackendError
from datamover.scsi.command import DataOut, ScsiRequest
from datamover.scsi.sense import (
    LBA_OUT_OF_RANGE,
    PARAMETER_LIST_LENGTH_ERROR,
    UNRECOVERED_READ_ERROR,
    WRITE_ERROR,
    WRITE_PROTECTED,
    ScsiError,
)

if TYPE_CHECKING:
    from datamover.scsi.lu import LogicalUnit

__all__ = [
    "data_length",
    "data_bytes",
    "parameter_list",
    "check_range",
    "check_writable",
    "read_blocks",
    "backend_write",
]

T = TypeVar("T")


def data_length(data: DataOut | None) -> int:
    """Bytes of write data the core handed over (0 for none)."""
    if data is None:
        return 0
    if isinstance(data, memoryview):
        return data.nbytes
    if isinstance(data, (bytes, bytearray)):
        return len(data)
    return sum(memoryview(p).nbytes for p in data)


def data_bytes(data: DataOut | None, limit: int | None = None) -> bytes:
    """The write data as one ``bytes`` (at most ``limit``): parameter lists, compare data."""
    if data is None:
        return b""
    if isinstance(data, (memoryview, bytes, bytearray)):
        raw = bytes(data)
    else:
        raw = b"".join(bytes(p) for p in data)
    return raw if limit is None else raw[:limit]


def parameter_list(req: ScsiRequest, length: int, minimum: int = 0) -> bytes:
    """The parameter list of ``length`` bytes announced in the CDB.

    Fewer bytes than ``minimum`` (a header) is a PARAMETER LIST LENGTH ERROR.
    """
    data = data_bytes(req.data_out, length)
    if len(data) < minimum:
        raise ScsiError(PARAMETER_LIST_LENGTH_ERROR)
    return data


def check_range(lu: LogicalUnit, lba: int, blocks: int) -> None:
    """LOGICAL BLOCK ADDRESS OUT OF RANGE unless ``[lba, lba + blocks)`` is on the medium."""
    if lba + blocks > lu.num_blocks:
        raise ScsiError(LBA_OUT_OF_RANGE)


def check_writable(lu: LogicalUnit) -> None:
    """DATA PROTECT / WRITE PROTECTED on a read-only LU."""
    if lu.read_only:
        raise ScsiError(WRITE_PROTECTED)


def read_blocks(lu: LogicalUnit, lba: int, blocks: int) -> bytearray:
    """Read ``blocks`` blocks at ``lba`` into a fresh buffer (MEDIUM ERROR on failure)."""
    bs = lu.block_size
    buf = bytearray(blocks * bs)
    try:
        lu.backend.read_into(lba * bs, memoryview(buf))
    except BackendError as exc:
        lu.log_backend_error("read", exc)
        raise ScsiError(UNRECOVERED_READ_ERROR) from exc
    return buf


def backend_write(lu: LogicalUnit, what: str, call: Callable[[], T]) -> T:
    """Run a backend write-side call, turning a failure into MEDIUM ERROR / WRITE ERROR."""
    try:
        return call()
    except BackendError as exc:
        lu.log_backend_error(what, exc)
        raise ScsiError(WRITE_ERROR) from exc
