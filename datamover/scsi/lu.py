"""A SCSI logical unit (a direct-access block device, SBC-4) over a :class:`Backend`.

The iSCSI core talks to it through two calls:

* :meth:`LogicalUnit.prepare` decodes a CDB without side effects and says which way data
  flows and how much, so the core knows how much write data to solicit;
* :meth:`LogicalUnit.execute` runs the command synchronously and returns status, sense
  and read data; a command that goes on in the background (SANITIZE with IMMED=0)
  returns a result whose ``pending`` future gives the outcome later.

Commands come from a :class:`~datamover.scsi.commands.CommandTable` (one module per
command family); the LU itself only does what is common to all commands: unit
attentions per I_T nexus, readiness, the CONTROL byte, and turning errors into CHECK
CONDITION. Nothing here knows about iSCSI.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from datamover.scsi.backend import Backend, BackendError
from datamover.scsi.cdb import check_control
from datamover.scsi.command import CommandPlan, ScsiRequest, ScsiResult
from datamover.scsi.commands import CommandSpec, CommandTable, default_table, setup_families
from datamover.scsi.commands.block_io import FAST_FUA, FAST_GROUP_RESERVED, FAST_PROTECT, FAST_RW, RW10
from datamover.scsi.commands.inquiry import DEFAULT_VPD_PAGES, BlockLimits, VpdBuilder
from datamover.scsi.commands.mode import DEFAULT_MODE_PAGES, ModePage
from datamover.scsi.commands.sanitize import DEFAULT_SANITIZE_RATE, SanitizeOperation
from datamover.scsi.constants import PeripheralDeviceType, ScsiStatus
from datamover.scsi.sense import (
    BUS_DEVICE_RESET,
    I_T_NEXUS_LOSS,
    INTERNAL_TARGET_FAILURE,
    INVALID_OPCODE,
    POWER_ON_OCCURRED,
    ScsiError,
    Sense,
    invalid_field_in_cdb,
)
from datamover.scsi.ua import UnitAttentions

if TYPE_CHECKING:
    from datamover.scsi.lunmap import LunMap

__all__ = ["LogicalUnit", "LunConfigError"]

log = logging.getLogger(__name__)

_CONTROL_CHECKED = 0x05  # NACA | LINK


class LunConfigError(ValueError):
    """A logical unit was configured with values SCSI cannot express."""


def _ascii_field(name: str, value: str, width: int) -> bytes:
    """Left-aligned, space-padded printable ASCII (SPC-5 4.3.1)."""
    if len(value) > width or not all(0x20 <= ord(c) < 0x7F for c in value):
        raise LunConfigError(f"{name} {value!r} must be at most {width} printable ASCII characters")
    return value.encode("ascii").ljust(width, b" ")


class LogicalUnit:
    """One LU: a backend plus identity, settings and per-nexus state.

    ``max_transfer_bytes`` bounds one READ/WRITE (reported in the block limits page;
    longer transfers fail with INVALID FIELD IN CDB). ``power_on_ua`` gives each new I_T
    nexus a POWER ON, RESET OR BUS DEVICE RESET OCCURRED unit attention on its first
    command (turn it off for tests that want a clean start). ``descriptor_sense`` makes
    the LU report descriptor-format sense (the control page's D_SENSE bit).
    ``naa_oui`` is the IEEE OUI put in the default NAA 5 designator; set your own.

    Not thread-safe: the core runs one LU's commands from one thread (or serialises them).
    """

    _shared_table: ClassVar[CommandTable | None] = None

    def __init__(
        self,
        backend: Backend,
        *,
        block_size: int = 512,
        read_only: bool = False,
        vendor: str = "DATAMOVR",
        product: str = "datamover LUN",
        revision: str = "0001",
        serial: str | None = None,
        device_id: bytes | None = None,
        power_on_ua: bool = True,
        descriptor_sense: bool = False,
        write_cache: bool = True,
        max_transfer_bytes: int = 8 << 20,
        optimal_transfer_bytes: int = 1 << 20,
        physical_block_size: int | None = None,
        naa_oui: int = 0x000000,
        commands: CommandTable | None = None,
        removable: bool = False,
        thin: bool = True,
        sanitize_rate: int | None = None,
    ) -> None:
        if block_size < 512 or block_size & (block_size - 1) or block_size > 1 << 16:
            raise LunConfigError(f"block size {block_size} must be a power of two in 512..65536")
        if backend.size <= 0 or backend.size % block_size:
            raise LunConfigError(f"backend size {backend.size} is not a positive multiple of {block_size}")
        # physical = logical by default. (libiscsi 1.19's GetLBAStatus.UnmapSingle only
        # passes with one logical block per physical block; the file system's 4 KiB
        # allocation unit is reported as the optimal unmap granularity instead.)
        phys = physical_block_size or block_size
        if phys < block_size or phys & (phys - 1):
            raise LunConfigError(f"physical block size {phys} must be a power of two >= {block_size}")
        if max_transfer_bytes < block_size:
            raise LunConfigError(f"max transfer {max_transfer_bytes} bytes is less than one block")
        if not 0 <= naa_oui < 1 << 24:
            raise LunConfigError(f"OUI {naa_oui:#x} is not 24 bits")

        self.backend = backend
        self.block_size = block_size
        self.num_blocks = backend.size // block_size
        #: read-only as configured (or as the backend was opened); ``read_only`` adds the
        #: control page's SWP on top, and is what commands check
        self.configured_read_only = read_only or bool(getattr(backend, "read_only", False))
        self.read_only = self.configured_read_only
        #: SWP of the control mode page (MODE SELECT): write-protects the medium
        self.software_write_protect = False
        self.vendor = _ascii_field("vendor", vendor, 8)
        self.product = _ascii_field("product", product, 16)
        self.revision = _ascii_field("revision", revision, 4)
        if serial is None:
            serial = self._default_serial(backend)
        if not serial or len(serial) > 64 or not all(0x20 < ord(c) < 0x7F for c in serial):
            raise LunConfigError(f"serial {serial!r} must be 1..64 printable ASCII characters without spaces")
        self.serial = serial
        if device_id is None:
            digest = int.from_bytes(hashlib.sha256(serial.encode()).digest()[:5], "big") & ((1 << 36) - 1)
            device_id = ((0x5 << 60) | (naa_oui << 36) | digest).to_bytes(8, "big")
        else:
            naa = device_id[0] >> 4 if device_id else 0
            # NAA 2/3/5 designators are 8 bytes and NAA 6 is 16; anything else is taken
            # as an EUI-64 based designator (8, 12 or 16 bytes)
            wanted = {2: (8,), 3: (8,), 5: (8,), 6: (16,)}.get(naa, (8, 12, 16))
            if len(device_id) not in wanted:
                raise LunConfigError(f"device id {device_id.hex()!r} is not a valid NAA or EUI-64 designator")
        self.device_id = bytes(device_id)

        #: byte 0 of INQUIRY data: qualifier 000b, direct-access block device
        self.peripheral = PeripheralDeviceType.DIRECT_ACCESS
        #: INQUIRY byte 5 (TPGS, 3PC, PROTECT); families that add ALUA or EXTENDED COPY set bits
        self.inquiry_byte5 = 0
        self.physical_block_exponent = (phys // block_size).bit_length() - 1
        #: logical block provisioning (READ CAPACITY(16)); the thin-provisioning family sets these
        self.lbpme = False
        self.lbprz = False
        self.write_cache = write_cache
        self.d_sense = descriptor_sense
        #: when set, every command but INQUIRY/REPORT LUNS/REQUEST SENSE fails with it
        #: (e.g. MEDIUM_NOT_PRESENT while a backend is swapped)
        self.not_ready: Sense | None = None
        #: extra VPD 83h designators (target port, port group), supplied by the target
        self.extra_designators: list[bytes] = []
        self.max_transfer_blocks = max_transfer_bytes // block_size
        granularity = max(1, phys // block_size, 4096 // block_size)
        self.block_limits = BlockLimits(
            max_transfer_length=self.max_transfer_blocks,
            optimal_transfer_length=max(1, min(optimal_transfer_bytes, max_transfer_bytes) // block_size),
            optimal_granularity=granularity,
        )
        self.vpd_pages: dict[int, VpdBuilder] = dict(DEFAULT_VPD_PAGES)
        self.mode_pages: dict[tuple[int, int], ModePage] = dict(DEFAULT_MODE_PAGES)
        self.unit_attentions = UnitAttentions(power_on_ua)
        self._ua_pending = self.unit_attentions.pending  # hot-path alias
        #: called by :meth:`lu_reset` after the reset UA is set (reservations, mode pages)
        self.reset_hooks: list[Callable[[], None]] = []
        #: called by :meth:`nexus_lost` with the nexus (RESERVE(6) release, PREVENT)
        self.nexus_loss_hooks: list[Callable[[str], None]] = []
        #: the map this LU is in (set by :meth:`LunMap.add`): EXTENDED COPY between LUs
        self.lunmap: LunMap | None = None
        #: RMB in INQUIRY; START STOP UNIT may then eject/load, PREVENT blocks ejecting
        self.removable = removable
        #: nexuses that hold a PREVENT MEDIUM REMOVAL (SBC-4 5.15)
        self.prevent: set[str] = set()
        #: power condition / medium state for START STOP UNIT
        self.stopped = False
        #: reservation state (RESERVE(6)/(10) or persistent), owned by the reservations
        #: family; ``reservation_gate`` is non-None only while some reservation exists, so
        #: the hot path pays one attribute test
        self.reservations: object | None = None
        self.reservation_gate: Callable[[LogicalUnit, CommandSpec, ScsiRequest], None] | None = None
        #: SANITIZE that ended in failure (exit-failure-mode clears it)
        self.sanitize_failed = False
        #: the sanitize running in the background, if any (it owns ``not_ready`` meanwhile)
        self.sanitizing: SanitizeOperation | None = None
        #: SANITIZE OVERWRITE pace, bytes per second per pass (0: as fast as the backend goes)
        self.sanitize_rate = DEFAULT_SANITIZE_RATE if sanitize_rate is None else max(0, sanitize_rate)
        if commands is None:
            # one shared table for every LU with the default command set; register()
            # gives this LU a private copy before changing it
            if LogicalUnit._shared_table is None:
                LogicalUnit._shared_table = default_table()
            commands = LogicalUnit._shared_table
            self._private_table = False
        else:
            self._private_table = True
        self.commands = commands
        #: thin provisioning (LBPME): UNMAP / WRITE SAME UNMAP free space, GET LBA STATUS
        self.thin = thin
        # families with per-LU state (VPD/mode pages, reservation state) set it up now
        setup_families(self)

    @staticmethod
    def _default_serial(backend: Backend) -> str:
        # stable for a file LUN (same path, same serial across restarts), random for RAM
        path = getattr(backend, "path", None)
        if path is not None:
            return hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
        return uuid.uuid4().hex[:16]

    # ---------------------------------------------------------------- extension
    def register(self, spec: CommandSpec, *, replace: bool = False) -> None:
        """Add a command to this LU only (the shared default table is left alone)."""
        if not self._private_table:
            self.commands = self.commands.copy()
            self._private_table = True
        self.commands.register(spec, replace=replace)

    # ---------------------------------------------------------------- the two calls
    def prepare(self, cdb: bytes) -> CommandPlan:
        """Decode ``cdb`` (no data, no state change): direction, lengths, or the error.

        Unit attentions are not considered here (they depend on the nexus and are
        reported by :meth:`execute`).
        """
        try:
            spec = self.commands.lookup(cdb) if cdb else None
            if spec is None:
                raise ScsiError(INVALID_OPCODE)
            self._check_common(spec, cdb)
            return spec.prepare(self, cdb)
        except ScsiError as exc:
            return CommandPlan("none", 0, 0, self._format(exc.sense), exc.status)
        except Exception:  # a handler bug must not take the session down
            log.exception("LU %s: prepare failed for CDB %s", self.serial, bytes(cdb).hex())
            return CommandPlan("none", 0, 0, self._format(INTERNAL_TARGET_FAILURE))

    def execute(self, request: ScsiRequest) -> ScsiResult:
        """Run one command and return its status, sense and read data."""
        cdb = request.cdb
        queue = self._ua_pending.get(request.nexus)
        if queue is None:
            queue = self.unit_attentions.register(request.nexus)
        try:
            try:
                if not cdb:
                    raise ScsiError(INVALID_OPCODE)
                spec = self.commands.lookup(cdb)
            except ScsiError:
                if queue:  # a unit attention outranks even an unknown opcode
                    return self._check(queue.pop(0))
                raise
            if queue and not spec.ua_exempt:
                return self._check(queue.pop(0))
            self._check_common(spec, cdb)
            gate = self.reservation_gate
            if gate is not None:
                gate(self, spec, request)  # raises RESERVATION CONFLICT
            return spec.execute(self, request)
        except ScsiError as exc:
            return ScsiResult(exc.status, self._format(exc.sense))
        except BackendError as exc:
            self.log_backend_error("command", exc)
            return self._check(INTERNAL_TARGET_FAILURE)
        except Exception:  # a handler bug must not take the session down
            log.exception("LU %s: command failed for CDB %s", self.serial, bytes(cdb).hex())
            return self._check(INTERNAL_TARGET_FAILURE)

    def fast_rw(self, cdb: bytes, nexus: str) -> tuple[int, int, bool, bool] | None:
        """``(byte offset, byte count, is a write, flush after writing)`` of a READ or
        WRITE (10)/(16) that :meth:`prepare` and :meth:`execute` would run with no check
        failing and no effect but the transfer itself; None for anything else.

        The core's fast path (one call instead of prepare + execute) moves the data
        itself with ``backend.read_into`` / ``write_from`` (and ``flush`` when asked).
        None is never an error: the caller then takes the general path, which gives the
        answer (unit attention, NOT READY, RESERVATION CONFLICT, LBA OUT OF RANGE,
        INVALID FIELD IN CDB, zero-length transfers, or a command table that replaced
        the built-in READ/WRITE).
        """
        fast = FAST_RW.get(cdb[0])
        if fast is None or self.not_ready is not None or self.reservation_gate is not None:
            return None
        queue = self._ua_pending.get(nexus)
        if not queue and queue is not None:  # the nexus is known and has no unit attention
            spec, layout, write = fast
            if self.commands.entry(cdb[0]) is not spec or len(cdb) < layout.size:
                return None
            if layout is RW10:
                _, flags, lba, group, n, control = layout.unpack_from(cdb)
            else:
                _, flags, lba, n, group, control = layout.unpack_from(cdb)
            if (flags & FAST_PROTECT or group & FAST_GROUP_RESERVED or control & _CONTROL_CHECKED or not n
                    or n > self.max_transfer_blocks or lba + n > self.num_blocks or write and self.read_only):
                return None
            bs = self.block_size
            return lba * bs, n * bs, write, write and (flags & FAST_FUA != 0 or not self.write_cache)
        return None

    def _check_common(self, spec: CommandSpec, cdb: bytes | bytearray | memoryview) -> None:
        length = spec.length
        if length:
            if len(cdb) < length:
                raise ScsiError(invalid_field_in_cdb(len(cdb)))
            if cdb[length - 1] & _CONTROL_CHECKED:
                check_control(cdb, length)
        not_ready = self.not_ready  # one read: a sanitize worker may change it
        if not_ready is not None and not spec.ua_exempt and (not spec.ready_exempt or self.sanitizing is not None):
            # while a sanitize runs only INQUIRY, REPORT LUNS and REQUEST SENSE go through
            # (SBC-4 4.11.2), not even the commands that work without a medium
            raise ScsiError(not_ready)

    def _format(self, sense: Sense | None) -> Sense | None:
        return None if sense is None else sense.as_descriptor(self.d_sense)

    def _check(self, sense: Sense) -> ScsiResult:
        return ScsiResult(ScsiStatus.CHECK_CONDITION, sense.as_descriptor(self.d_sense))

    # ------------------------------------------------------ task management hooks
    def lu_reset(self) -> None:
        """LOGICAL UNIT RESET: every known nexus gets BUS DEVICE RESET FUNCTION OCCURRED.

        Commands run synchronously, so there is no task to abort here; the core aborts
        its own queued tasks for this LU. A sanitize in progress goes on (SBC-4 4.11.2).
        """
        self.unit_attentions.establish(BUS_DEVICE_RESET)
        self.prevent.clear()
        for hook in self.reset_hooks:
            hook()

    def target_reset(self, cold: bool = False) -> None:
        """TARGET WARM RESET / TARGET COLD RESET (SAM-5 7.12/7.13): as a LU reset, with
        POWER ON OCCURRED instead of BUS DEVICE RESET after a cold reset (a power cycle)."""
        self.lu_reset()
        if cold:
            self.unit_attentions.establish(POWER_ON_OCCURRED)
            self.stopped = False

    def abort_task_set(self, nexus: str) -> None:
        """ABORT TASK SET from ``nexus``. With TST=000b and TAS=0 nothing is reported to
        anyone and no command is in flight inside the LU; kept as the seam for ACA and
        reservations."""

    def clear_task_set(self, nexus: str) -> None:
        """CLEAR TASK SET from ``nexus``: as :meth:`abort_task_set` while commands are
        synchronous (no other nexus had a task to lose, so no 2Fh/00h attention)."""

    def nexus_lost(self, nexus: str) -> None:
        """An I_T nexus ended (session gone): it gets I_T NEXUS LOSS OCCURRED if it returns."""
        if nexus in self._ua_pending:
            self.unit_attentions.establish(I_T_NEXUS_LOSS, nexus)
        self.prevent.discard(nexus)
        for hook in self.nexus_loss_hooks:
            hook(nexus)

    def establish_ua(self, sense: Sense, nexus: str | None = None, *, exclude: str | None = None) -> None:
        """Queue a unit attention for one nexus or all (e.g. CAPACITY DATA HAS CHANGED)."""
        self.unit_attentions.establish(sense, nexus, exclude=exclude)

    # ------------------------------------------------------------------- helpers
    def current_condition(self) -> Sense | None:
        """The condition REQUEST SENSE reports when no unit attention is pending."""
        return self.not_ready

    def log_backend_error(self, what: str, exc: BaseException) -> None:
        log.warning("LU %s: backend %s error: %s", self.serial, what, exc)

    def close(self) -> None:
        """Stop a sanitize in progress (leaving the medium part-sanitized), then flush and
        close the backend."""
        operation = self.sanitizing
        if operation is not None:
            operation.stop()
        try:
            self.backend.flush()
        finally:
            self.backend.close()

    def __repr__(self) -> str:
        return (
            f"LogicalUnit(serial={self.serial!r}, blocks={self.num_blocks}, block_size={self.block_size}, "
            f"read_only={self.read_only})"
        )
