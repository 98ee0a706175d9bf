"""SANITIZE (SBC-4 5.30): OVERWRITE, BLOCK ERASE, CRYPTOGRAPHIC ERASE, EXIT FAILURE MODE.

* OVERWRITE writes the initiator's pattern (at most one block, repeated; inverted between
  passes when INVERT=1) over every block, OWCOUNT times, and makes it durable.
* BLOCK ERASE and CRYPTOGRAPHIC ERASE deallocate the whole medium (a hole punch on a file
  LUN; there is no key to destroy, so both leave blocks that read as zeros).
* EXIT FAILURE MODE clears the "sanitize failed" condition a failed operation leaves.

A sanitize is a long operation (SBC-4 4.11): once the CDB and parameter list are checked
it runs in a worker thread (:class:`SanitizeOperation`), and until it ends every command
but INQUIRY, REPORT LUNS and REQUEST SENSE fails with NOT READY / SANITIZE IN PROGRESS,
whose sense-key-specific field carries the progress (REQUEST SENSE shows it too). With
IMMED=0 the command's status comes when the operation ends (the result's ``pending``
future); with IMMED=1 at once. Aborting the command, ABORT TASK SET, LOGICAL UNIT RESET,
target resets and the loss of the nexus do not stop it; only closing the LU does.

OVERWRITE is paced at :attr:`LogicalUnit.sanitize_rate` bytes per second per pass
(:data:`DEFAULT_SANITIZE_RATE`, 20 MiB/s: a 256 MiB LUN takes about 13 s), a medium of
bounded speed, so that a sanitize is observable in progress as on a real disk without
holding a test run for minutes; 0 writes as fast as the backend goes. The erases are a
deallocation and take as long as the backend needs.

A failure leaves the LU reporting MEDIUM ERROR / SANITIZE COMMAND FAILED to media-access
commands until a new SANITIZE completes or EXIT FAILURE MODE is sent.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING

from datamover.scsi.backend import BackendError
from datamover.scsi.cdb import check_length, check_reserved
from datamover.scsi.command import PLAN_NONE, CommandPlan, ScsiRequest, ScsiResult
from datamover.scsi.commands.common import check_writable, parameter_list
from datamover.scsi.commands.table import CommandSpec
from datamover.scsi.constants import Opcode, ScsiStatus
from datamover.scsi.sense import (
    SANITIZE_FAILED,
    SANITIZE_IN_PROGRESS,
    ScsiError,
    Sense,
    invalid_field_in_cdb,
    invalid_field_in_parameter_list,
)

if TYPE_CHECKING:
    from datamover.scsi.lu import LogicalUnit

__all__ = [
    "COMMANDS",
    "OVERWRITE",
    "BLOCK_ERASE",
    "CRYPTOGRAPHIC_ERASE",
    "EXIT_FAILURE_MODE",
    "DEFAULT_SANITIZE_RATE",
    "SanitizeOperation",
    "progress_sense",
]

log = logging.getLogger(__name__)

#: OVERWRITE pace in bytes per second per pass (see the module docstring)
DEFAULT_SANITIZE_RATE = 20 << 20

OVERWRITE = 0x01
BLOCK_ERASE = 0x02
CRYPTOGRAPHIC_ERASE = 0x03
EXIT_FAILURE_MODE = 0x1F

_CDB = struct.Struct(">BB5xHB")  # opcode, IMMED/AUSE/SA, reserved, parameter list length, control
_OVERWRITE_HEADER = struct.Struct(">BxH")  # INVERT/TEST/OWCOUNT, pattern length
_INVERT = 0x80
_TEST = 0x60
_OWCOUNT = 0x1F
_IMMED = 0x80
_CHUNK = 1 << 20
_SKSV = 0x80


def _decode(cdb: bytes | bytearray | memoryview) -> tuple[int, int]:
    check_length(cdb, 10)
    _, flags, length, _ = _CDB.unpack_from(cdb)
    check_reserved(cdb, 1, 0x40)
    for byte in range(2, 7):
        check_reserved(cdb, byte)
    action = flags & 0x1F
    if action not in (OVERWRITE, BLOCK_ERASE, CRYPTOGRAPHIC_ERASE, EXIT_FAILURE_MODE):
        raise ScsiError(invalid_field_in_cdb(1, 4))
    if action == OVERWRITE:
        # a header and a pattern of at least one byte, the pattern at most one block
        if length < _OVERWRITE_HEADER.size + 1:
            raise ScsiError(invalid_field_in_cdb(7))
    elif length:
        raise ScsiError(invalid_field_in_cdb(7))  # the other actions take no parameters
    return action, length


def _check_ready(lu: LogicalUnit) -> None:
    """A new sanitize may start in sanitize failure mode (that is how one leaves it), but
    not while the medium is absent (the LU refuses a second one while one runs)."""
    not_ready = lu.not_ready
    if not_ready is not None and not_ready is not SANITIZE_FAILED:
        raise ScsiError(not_ready)


def _prepare(lu: LogicalUnit, cdb: bytes) -> CommandPlan:
    action, length = _decode(cdb)
    if action != EXIT_FAILURE_MODE:
        _check_ready(lu)
        check_writable(lu)
    return CommandPlan("write", length, 0) if length else PLAN_NONE


def _overwrite_pattern(lu: LogicalUnit, data: bytes, length: int) -> tuple[bytes, int, bool]:
    flags, pattern_length = _OVERWRITE_HEADER.unpack_from(data)
    if length > lu.block_size + _OVERWRITE_HEADER.size:
        raise ScsiError(invalid_field_in_cdb(7))
    if flags & _TEST:
        raise ScsiError(invalid_field_in_parameter_list(0, 6))
    count = flags & _OWCOUNT
    if not count:
        raise ScsiError(invalid_field_in_parameter_list(0, 4))
    if not pattern_length or pattern_length > lu.block_size or _OVERWRITE_HEADER.size + pattern_length != length:
        raise ScsiError(invalid_field_in_parameter_list(2))
    pattern = data[_OVERWRITE_HEADER.size : _OVERWRITE_HEADER.size + pattern_length]
    return pattern, count, bool(flags & _INVERT)


def progress_sense(done: int, total: int) -> Sense:
    """NOT READY / SANITIZE IN PROGRESS with the progress indication (SPC-5 4.4.2.4.4):
    the fraction done, in 65536ths, in the sense-key-specific field."""
    value = min(0xFFFF, done * 0x10000 // total) if total > 0 else 0
    return Sense(SANITIZE_IN_PROGRESS.key, SANITIZE_IN_PROGRESS.asc, SANITIZE_IN_PROGRESS.ascq,
                 sks=bytes((_SKSV, value >> 8, value & 0xFF)))


class SanitizeOperation:
    """One sanitize running in the background on one LU.

    While it runs it owns ``lu.not_ready`` (the progress sense, refreshed after every
    chunk) and ``lu.sanitizing`` points at it; both are plain attribute stores, so the
    thread that runs commands sees a consistent value without a lock. Nothing else touches
    the backend meanwhile: every media-access command is refused.
    """

    __slots__ = ("lu", "action", "pattern", "count", "invert", "rate", "total", "done",
                 "future", "_stop", "_thread")

    def __init__(self, lu: LogicalUnit, action: int, pattern: bytes = b"", count: int = 0,
                 invert: bool = False, rate: int = DEFAULT_SANITIZE_RATE) -> None:
        self.lu = lu
        self.action = action
        self.pattern = pattern
        self.count = count
        self.invert = invert
        self.rate = rate
        size = lu.num_blocks * lu.block_size
        self.total = size * count if action == OVERWRITE else size
        #: bytes written (or deallocated) so far, over all passes
        self.done = 0
        #: resolves to the command's outcome when the operation ends
        self.future: Future[ScsiResult] = Future()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Put the LU in the sanitize-in-progress state and start the worker."""
        lu = self.lu
        lu.not_ready = progress_sense(0, self.total)
        lu.sanitizing = self
        self._thread = threading.Thread(target=self._run, name=f"sanitize-{lu.serial}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Interrupt the operation (the LU is closing); the medium is left part-sanitized."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def wait(self, timeout: float | None = None) -> ScsiResult:
        """Block until the operation ends (tests, synchronous callers)."""
        return self.future.result(timeout)

    # ------------------------------------------------------------------ worker
    def _run(self) -> None:
        lu = self.lu
        result: ScsiResult
        try:
            if self.action == OVERWRITE:
                for index in range(self.count):
                    # with INVERT the pattern alternates with its complement, ending as given
                    flip = self.invert and (self.count - 1 - index) % 2 == 1
                    self._fill(bytes(b ^ 0xFF for b in self.pattern) if flip else self.pattern)
            else:
                lu.backend.deallocate(0, self.total)
                self.done = self.total
            if self._stop.is_set():
                raise _Interrupted
            lu.backend.flush()
        except (BackendError, _Interrupted) as exc:
            if isinstance(exc, BackendError):
                lu.log_backend_error("sanitize", exc)
            else:
                log.warning("LU %s: sanitize interrupted at %d of %d bytes", lu.serial, self.done, self.total)
            result = self._end(failed=True)
        except Exception:  # a bug must not leave the LU sanitizing forever
            log.exception("LU %s: sanitize failed", lu.serial)
            result = self._end(failed=True)
        else:
            result = self._end(failed=False)
        self.future.set_result(result)

    def _fill(self, pattern: bytes) -> None:
        lu = self.lu
        block = (pattern * (-(-lu.block_size // len(pattern))))[: lu.block_size]
        # at most 1 MiB a write, and at most 1/20 s of the pace, so progress moves smoothly
        step = min(_CHUNK, self.rate // 20) if self.rate > 0 else _CHUNK
        chunk = memoryview(block * max(1, step // lu.block_size))
        size = lu.num_blocks * lu.block_size
        started, base = time.monotonic(), self.done
        offset = 0
        while offset < size:
            if self._stop.is_set():
                raise _Interrupted
            n = min(chunk.nbytes, size - offset)
            lu.backend.write_from(offset, chunk[:n])
            offset += n
            self.done += n
            lu.not_ready = progress_sense(self.done, self.total)
            if self.rate > 0:
                ahead = (self.done - base) / self.rate - (time.monotonic() - started)
                if ahead > 0:
                    self._stop.wait(ahead)

    def _end(self, *, failed: bool) -> ScsiResult:
        lu = self.lu
        lu.sanitize_failed = failed
        lu.not_ready = SANITIZE_FAILED if failed else None
        lu.sanitizing = None
        if failed:
            return ScsiResult(ScsiStatus.CHECK_CONDITION, SANITIZE_FAILED.as_descriptor(lu.d_sense))
        return ScsiResult()


class _Interrupted(Exception):
    """The LU is closing: the worker stops between two chunks."""


def _execute(lu: LogicalUnit, req: ScsiRequest) -> ScsiResult:
    action, length = _decode(req.cdb)
    if action == EXIT_FAILURE_MODE:
        if lu.not_ready is SANITIZE_FAILED:
            lu.not_ready = None
        lu.sanitize_failed = False
        return ScsiResult()
    _check_ready(lu)
    check_writable(lu)
    pattern = b""
    count, invert = 0, False
    if action == OVERWRITE:
        data = parameter_list(req, length, _OVERWRITE_HEADER.size)
        pattern, count, invert = _overwrite_pattern(lu, data, length)
    operation = SanitizeOperation(lu, action, pattern, count, invert, lu.sanitize_rate)
    operation.start()
    if req.cdb[1] & _IMMED:
        return ScsiResult()  # the CDB and parameters are good; the operation goes on
    return ScsiResult(pending=operation.future)


def _usage() -> bytes:
    return bytes((Opcode.SANITIZE, 0xBF, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0x07))


COMMANDS: tuple[CommandSpec, ...] = tuple(
    CommandSpec(Opcode.SANITIZE, name, _prepare, _execute, service_action=action, ready_exempt=True,
                usage=_usage()[:1] + bytes((0xA0 | action,)) + _usage()[2:], timeout=600)
    for action, name in (
        (OVERWRITE, "SANITIZE OVERWRITE"),
        (BLOCK_ERASE, "SANITIZE BLOCK ERASE"),
        (CRYPTOGRAPHIC_ERASE, "SANITIZE CRYPTOGRAPHIC ERASE"),
        (EXIT_FAILURE_MODE, "SANITIZE EXIT FAILURE MODE"),
    )
)
