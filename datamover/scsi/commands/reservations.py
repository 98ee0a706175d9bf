"""Reservations: PERSISTENT RESERVE IN/OUT (SPC-5 5.13, 6.16, 6.17) and the older
RESERVE/RELEASE (6)/(10) (SPC-2 7.21-7.24), kept per logical unit and per I_T nexus.

State lives in a :class:`Reservations` object on ``lu.reservations``. While any
reservation exists the LU's ``reservation_gate`` is set to :func:`gate`, which fails
commands that the reservation forbids with RESERVATION CONFLICT (SPC-5 table 63 for
persistent reservations; everything but a few inquiry-type commands for RESERVE(6)); with
none, the READ/WRITE path pays a single ``is not None`` test.

Scope is always the logical unit; the "all target ports" and "specify initiator ports"
options and persistence through power loss (APTPL) are not supported and are reported so
in REPORT CAPABILITIES. REGISTER AND MOVE moves the reservation to an iSCSI initiator port
named by its TransportID (format 01b, name + ISID) on the same target port.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from datamover.scsi.cdb import alloc_truncate, check_length, check_reserved
from datamover.scsi.command import PLAN_NONE, CommandPlan, ScsiRequest, ScsiResult
from datamover.scsi.commands.common import parameter_list
from datamover.scsi.commands.table import CommandSpec
from datamover.scsi.constants import Opcode, ScsiStatus, SenseKey
from datamover.scsi.sense import (
    PARAMETER_LIST_LENGTH_ERROR,
    REGISTRATIONS_PREEMPTED,
    RESERVATIONS_PREEMPTED,
    RESERVATIONS_RELEASED,
    ScsiError,
    Sense,
    invalid_field_in_cdb,
    invalid_field_in_parameter_list,
)

if TYPE_CHECKING:
    from datamover.scsi.commands.table import CommandSpec as Spec
    from datamover.scsi.lu import LogicalUnit

__all__ = ["COMMANDS", "Reservations", "setup", "gate", "WRITE_EXCLUSIVE", "EXCLUSIVE_ACCESS"]

# PERSISTENT RESERVE OUT service actions
REGISTER, RESERVE, RELEASE, CLEAR, PREEMPT, PREEMPT_AND_ABORT, REGISTER_AND_IGNORE, REGISTER_AND_MOVE = range(8)
# PERSISTENT RESERVE IN service actions
READ_KEYS, READ_RESERVATION, REPORT_CAPABILITIES, READ_FULL_STATUS = range(4)
# reservation types
WRITE_EXCLUSIVE = 0x1
EXCLUSIVE_ACCESS = 0x3
WRITE_EXCLUSIVE_RO = 0x5
EXCLUSIVE_ACCESS_RO = 0x6
WRITE_EXCLUSIVE_AR = 0x7
EXCLUSIVE_ACCESS_AR = 0x8
_TYPES = (WRITE_EXCLUSIVE, EXCLUSIVE_ACCESS, WRITE_EXCLUSIVE_RO, EXCLUSIVE_ACCESS_RO, WRITE_EXCLUSIVE_AR,
          EXCLUSIVE_ACCESS_AR)
_ALL_REGISTRANTS = (WRITE_EXCLUSIVE_AR, EXCLUSIVE_ACCESS_AR)
_REGISTRANTS = (WRITE_EXCLUSIVE_RO, EXCLUSIVE_ACCESS_RO, WRITE_EXCLUSIVE_AR, EXCLUSIVE_ACCESS_AR)
_EXCLUSIVE = (EXCLUSIVE_ACCESS, EXCLUSIVE_ACCESS_RO, EXCLUSIVE_ACCESS_AR)

_PR_CDB = struct.Struct(">BBB2xIB")  # opcode, SA, scope/type, reserved, parameter list length, control
_PRIN_CDB = struct.Struct(">BB5xHB")  # opcode, SA, reserved, allocation length, control
_PROUT_PARAMS = struct.Struct(">QQ4xBx2x")  # key, service action key, obsolete, flags
_MOVE_PARAMS = struct.Struct(">QQxBHI")  # key, SA key, reserved, UNREG/APTPL, rel port, TID length
_PRIN_HEADER = struct.Struct(">II")  # PRgeneration, additional length
_RESERVATION = struct.Struct(">Q4xxBxx")  # key, obsolete, reserved, scope/type, obsolete
_CAPABILITIES = struct.Struct(">HBBH2x")  # length, flags, flags, type mask
_FULL_STATUS = struct.Struct(">Q4xBB4xHI")  # key, reserved, flags, scope/type, reserved, rel port, TID length

_SPEC_I_PT = 0x08
_ALL_TG_PT = 0x04
_APTPL = 0x01
_R_HOLDER = 0x01
_TID_ISCSI_PORT = 0x45  # FORMAT CODE 01b (name + ISID), PROTOCOL IDENTIFIER 5h (iSCSI)
_UNREG = 0x02

#: REPORT CAPABILITIES: CRH (compatible reservation handling); TMV with every type valid;
#: ALLOW COMMANDS 001b (TUR and the like allowed under exclusive-access types)
_CAP_FLAGS = 0x10
_CAP_FLAGS2 = 0x80 | 0x10
_TYPE_MASK = 0x80 | 0x40 | 0x20 | 0x08 | 0x02, 0x01

INVALID_RELEASE = Sense(SenseKey.ILLEGAL_REQUEST, 0x26, 0x04)  # INVALID RELEASE OF PERSISTENT RESERVATION


def _conflict() -> ScsiError:
    return ScsiError(None, ScsiStatus.RESERVATION_CONFLICT)


@dataclass(slots=True)
class Reservations:
    """The reservation state of one LU."""

    #: nexus -> registered reservation key
    keys: dict[str, int] = field(default_factory=dict)
    generation: int = 0
    #: the persistent reservation: holder nexus (None for all-registrants types) and type
    holder: str | None = None
    type: int = 0
    #: the RESERVE(6)/(10) holder
    legacy: str | None = None

    @property
    def reserved(self) -> bool:
        return self.type != 0

    def holds(self, nexus: str) -> bool:
        """Is ``nexus`` a reservation holder (every registrant, for all-registrants types)?"""
        if not self.type:
            return False
        if self.type in _ALL_REGISTRANTS:
            return nexus in self.keys
        return self.holder == nexus

    def bump(self) -> None:
        self.generation = (self.generation + 1) & 0xFFFF_FFFF


def setup(lu: LogicalUnit) -> None:
    state = Reservations()
    lu.reservations = state

    def on_reset() -> None:
        # a reset releases RESERVE(6) reservations; persistent ones survive (SPC-5 5.13.1)
        state.legacy = None
        _update_gate(lu)

    def on_nexus_loss(nexus: str) -> None:
        if state.legacy == nexus:
            state.legacy = None
            _update_gate(lu)

    lu.reset_hooks.append(on_reset)
    lu.nexus_loss_hooks.append(on_nexus_loss)


def _state(lu: LogicalUnit) -> Reservations:
    state = lu.reservations
    assert isinstance(state, Reservations)
    return state


def _update_gate(lu: LogicalUnit) -> None:
    state = _state(lu)
    lu.reservation_gate = gate if (state.type or state.legacy is not None) else None


# ---------------------------------------------------------------- conflicts
#: always allowed, whatever the reservation (SPC-5 table 63 "Allowed" in every column)
_ALWAYS = frozenset(
    (
        Opcode.INQUIRY,
        Opcode.REPORT_LUNS,
        Opcode.REQUEST_SENSE,
        Opcode.PERSISTENT_RESERVE_IN,
        Opcode.PERSISTENT_RESERVE_OUT,
        Opcode.MAINTENANCE_IN,
        Opcode.READ_CAPACITY_10,
        Opcode.LOG_SENSE,
    )
)
#: allowed under RESERVE(6) from other nexuses too (SPC-2 table 31); RELEASE is a no-op
_LEGACY_ALLOWED = frozenset(
    (Opcode.INQUIRY, Opcode.REPORT_LUNS, Opcode.REQUEST_SENSE, Opcode.RELEASE_6, Opcode.RELEASE_10,
     Opcode.MAINTENANCE_IN, Opcode.PREVENT_ALLOW_MEDIUM_REMOVAL)
)
#: commands that only read (allowed to everyone under write-exclusive types)
_READS = frozenset(
    (
        Opcode.READ_6,
        Opcode.READ_10,
        Opcode.READ_12,
        Opcode.READ_16,
        Opcode.VERIFY_10,
        Opcode.VERIFY_12,
        Opcode.VERIFY_16,
        Opcode.PRE_FETCH_10,
        Opcode.PRE_FETCH_16,
        Opcode.READ_DEFECT_DATA_10,
        Opcode.READ_DEFECT_DATA_12,
        Opcode.MODE_SENSE_6,
        Opcode.MODE_SENSE_10,
        Opcode.TEST_UNIT_READY,
        Opcode.SERVICE_ACTION_IN_16,
        Opcode.RECEIVE_COPY_RESULTS,
    )
)


def gate(lu: LogicalUnit, spec: Spec, req: ScsiRequest) -> None:
    """RESERVATION CONFLICT when the reservation on ``lu`` forbids ``spec`` from ``req.nexus``."""
    state = _state(lu)
    op = spec.opcode
    nexus = req.nexus
    if state.legacy is not None and state.legacy != nexus and op not in _LEGACY_ALLOWED:
        if op in (Opcode.PERSISTENT_RESERVE_IN, Opcode.PERSISTENT_RESERVE_OUT):
            return  # SPC-5 5.13.3: PR commands are answered, and refused only for RESERVE
        raise _conflict()
    if not state.type or op in _ALWAYS or state.holds(nexus):
        return
    if op in (Opcode.RESERVE_6, Opcode.RESERVE_10, Opcode.RELEASE_6, Opcode.RELEASE_10):
        raise _conflict()
    if op == Opcode.TEST_UNIT_READY or (op == Opcode.SERVICE_ACTION_IN_16 and spec.service_action == 0x10):
        return  # allowed in every column (ALLOW COMMANDS 001b)
    read = op in _READS
    kind = state.type
    registered = nexus in state.keys
    if kind in _REGISTRANTS and registered:
        return
    if kind in _EXCLUSIVE:
        raise _conflict()
    if not read:
        raise _conflict()


# ----------------------------------------------------------- PERSISTENT RESERVE IN
def _decode_prin(cdb: bytes | bytearray | memoryview) -> tuple[int, int]:
    check_length(cdb, 10)
    _, sa, alloc, _ = _PRIN_CDB.unpack_from(cdb)
    check_reserved(cdb, 1, 0xE0)
    for byte in range(2, 7):
        check_reserved(cdb, byte)
    if sa & 0x1F > READ_FULL_STATUS:
        raise ScsiError(invalid_field_in_cdb(1, 4))
    return sa & 0x1F, alloc


def _prepare_prin(lu: LogicalUnit, cdb: bytes) -> CommandPlan:
    _, alloc = _decode_prin(cdb)
    return CommandPlan("read", 0, alloc) if alloc else PLAN_NONE


def _transport_id(nexus: str) -> bytes:
    """iSCSI TransportID, format 01b: "NAME,i,0xISID" NUL-terminated, padded to 4 bytes."""
    port = nexus.split("|", 1)[0].encode("utf-8", "replace") + b"\0"
    port += bytes(-len(port) % 4)
    if len(port) < 20:
        port += bytes(20 - len(port))
    return bytes((_TID_ISCSI_PORT, 0)) + len(port).to_bytes(2, "big") + port


def _execute_prin(lu: LogicalUnit, req: ScsiRequest) -> ScsiResult:
    sa, alloc = _decode_prin(req.cdb)
    state = _state(lu)
    if sa == READ_KEYS:
        keys = b"".join(k.to_bytes(8, "big") for k in state.keys.values())
        data = _PRIN_HEADER.pack(state.generation, len(keys)) + keys
    elif sa == READ_RESERVATION:
        if state.type:
            key = 0 if state.type in _ALL_REGISTRANTS else state.keys.get(state.holder or "", 0)
            body = _RESERVATION.pack(key, state.type)
        else:
            body = b""
        data = _PRIN_HEADER.pack(state.generation, len(body)) + body
    elif sa == REPORT_CAPABILITIES:
        data = _CAPABILITIES.pack(_CAPABILITIES.size, _CAP_FLAGS, _CAP_FLAGS2, (_TYPE_MASK[0] << 8) | _TYPE_MASK[1])
    else:
        body = bytearray()
        for nexus, key in state.keys.items():
            holder = state.holds(nexus)
            tid = _transport_id(nexus)
            body += _FULL_STATUS.pack(key, _R_HOLDER if holder else 0, state.type if holder else 0, 1, len(tid))
            body += tid
        data = _PRIN_HEADER.pack(state.generation, len(body)) + bytes(body)
    return ScsiResult(0, None, alloc_truncate(data, alloc))


# ---------------------------------------------------------- PERSISTENT RESERVE OUT
def _decode_prout(cdb: bytes | bytearray | memoryview) -> tuple[int, int, int, int]:
    check_length(cdb, 10)
    _, sa, scope_type, length, _ = _PR_CDB.unpack_from(cdb)
    check_reserved(cdb, 1, 0xE0)
    check_reserved(cdb, 3)
    check_reserved(cdb, 4)
    sa &= 0x1F
    if sa > REGISTER_AND_MOVE:
        raise ScsiError(invalid_field_in_cdb(1, 4))
    scope, kind = scope_type >> 4, scope_type & 0x0F
    if sa in (RESERVE, RELEASE, PREEMPT, PREEMPT_AND_ABORT, REGISTER_AND_MOVE):
        if scope != 0:
            raise ScsiError(invalid_field_in_cdb(2, 7))  # LU_SCOPE only
        if kind not in _TYPES:
            raise ScsiError(invalid_field_in_cdb(2, 3))
    if sa == REGISTER_AND_MOVE:
        if length < _MOVE_PARAMS.size:
            raise ScsiError(PARAMETER_LIST_LENGTH_ERROR)
    elif length != _PROUT_PARAMS.size:
        raise ScsiError(PARAMETER_LIST_LENGTH_ERROR)
    return sa, scope, kind, length


def _prepare_prout(lu: LogicalUnit, cdb: bytes) -> CommandPlan:
    _, _, _, length = _decode_prout(cdb)
    return CommandPlan("write", length, 0)


def _notify(lu: LogicalUnit, sense: Sense, nexuses: list[str] | set[str]) -> None:
    for nexus in nexuses:
        lu.establish_ua(sense, nexus)


def _release(lu: LogicalUnit, state: Reservations, by: str) -> None:
    """Release the persistent reservation; registrants learn of it for RO/AR types."""
    kind = state.type
    state.type, state.holder = 0, None
    if kind in _REGISTRANTS:
        _notify(lu, RESERVATIONS_RELEASED, [n for n in state.keys if n != by])


def _unregister(lu: LogicalUnit, state: Reservations, nexus: str) -> None:
    state.keys.pop(nexus, None)
    if not state.type:
        return
    if state.type in _ALL_REGISTRANTS:
        if not state.keys:
            state.type, state.holder = 0, None
    elif state.holder == nexus:
        _release(lu, state, nexus)


def _execute_prout(lu: LogicalUnit, req: ScsiRequest) -> ScsiResult:
    sa, _, kind, length = _decode_prout(req.cdb)
    state = _state(lu)
    nexus = req.nexus
    data = parameter_list(req, length, length)
    if state.legacy is not None and state.legacy != nexus:
        raise _conflict()  # a RESERVE(6) holds the LU
    if sa == REGISTER_AND_MOVE:
        _register_and_move(lu, state, nexus, kind, data)
        _update_gate(lu)
        return ScsiResult()
    key, sa_key, flags = _PROUT_PARAMS.unpack_from(data)
    if flags & (_SPEC_I_PT | _ALL_TG_PT):
        raise ScsiError(invalid_field_in_parameter_list(20, 3 if flags & _SPEC_I_PT else 2))
    if flags & _APTPL:
        raise ScsiError(invalid_field_in_parameter_list(20, 0))  # no persistence through power loss
    mine = state.keys.get(nexus)
    if sa in (REGISTER, REGISTER_AND_IGNORE):
        if sa == REGISTER and (key != (mine or 0)):
            raise _conflict()
        if mine is None:
            if sa_key:
                state.keys[nexus] = sa_key
        elif sa_key:
            state.keys[nexus] = sa_key
        else:
            _unregister(lu, state, nexus)
        state.bump()
    else:
        if mine is None or key != mine:
            raise _conflict()
        if sa == RESERVE:
            if state.type:
                if not state.holds(nexus) or state.type != kind:
                    raise _conflict()
            else:
                state.type, state.holder = kind, (None if kind in _ALL_REGISTRANTS else nexus)
        elif sa == RELEASE:
            if state.type and state.holds(nexus):
                if state.type != kind:
                    raise ScsiError(INVALID_RELEASE)
                _release(lu, state, nexus)
        elif sa == CLEAR:
            others = [n for n in state.keys if n != nexus]
            state.keys.clear()
            state.type, state.holder = 0, None
            _notify(lu, RESERVATIONS_PREEMPTED, others)
            state.bump()
        else:
            _preempt(lu, state, nexus, kind, sa_key, abort=sa == PREEMPT_AND_ABORT)
            state.bump()
    _update_gate(lu)
    return ScsiResult()


def _preempt(lu: LogicalUnit, state: Reservations, nexus: str, kind: int, sa_key: int, *, abort: bool) -> None:
    def remove(victims: list[str]) -> None:
        for victim in victims:
            del state.keys[victim]
        _notify(lu, REGISTRATIONS_PREEMPTED, victims)

    if not state.type:
        if not sa_key:
            raise ScsiError(invalid_field_in_parameter_list(8))
        victims = [n for n, k in state.keys.items() if k == sa_key]
        if not victims:
            raise _conflict()
        remove(victims)
        return
    if state.type in _ALL_REGISTRANTS:
        if sa_key == 0:
            # preempt every other registrant and take the reservation with the new type
            remove([n for n in state.keys if n != nexus])
            state.type, state.holder = kind, (None if kind in _ALL_REGISTRANTS else nexus)
            return
        victims = [n for n, k in state.keys.items() if k == sa_key and n != nexus]
        if not victims:
            raise _conflict()
        remove(victims)
        return
    holder_key = state.keys.get(state.holder or "")
    if sa_key == holder_key:
        old_type = state.type
        remove([n for n, k in state.keys.items() if k == sa_key and n != nexus])
        state.type, state.holder = kind, (None if kind in _ALL_REGISTRANTS else nexus)
        if old_type != kind:
            _notify(lu, RESERVATIONS_RELEASED, [n for n in state.keys if n != nexus])
        return
    if not sa_key:
        raise ScsiError(invalid_field_in_parameter_list(8))
    victims = [n for n, k in state.keys.items() if k == sa_key]
    if not victims:
        raise _conflict()
    remove(victims)


def _register_and_move(lu: LogicalUnit, state: Reservations, nexus: str, kind: int, data: bytes) -> None:
    key, sa_key, flags, _, tid_len = _MOVE_PARAMS.unpack_from(data)
    mine = state.keys.get(nexus)
    if mine is None or key != mine:
        raise _conflict()
    if not state.type or state.type in _ALL_REGISTRANTS or state.holder != nexus:
        raise _conflict()  # only the holder of a single-holder reservation may move it
    tid = data[_MOVE_PARAMS.size : _MOVE_PARAMS.size + tid_len]
    if len(tid) < 4 or tid[0] != _TID_ISCSI_PORT or not sa_key:
        raise ScsiError(invalid_field_in_parameter_list(_MOVE_PARAMS.size))
    name = tid[4 : 4 + int.from_bytes(tid[2:4], "big")].split(b"\0", 1)[0].decode("utf-8", "replace")
    target = nexus.split("|", 1)[1] if "|" in nexus else ""
    destination = f"{name}|{target}"
    if destination == nexus:
        raise ScsiError(invalid_field_in_parameter_list(_MOVE_PARAMS.size))
    state.keys[destination] = sa_key
    state.type, state.holder = kind, destination
    if flags & _UNREG:
        state.keys.pop(nexus, None)
    state.bump()


# ----------------------------------------------------------- RESERVE / RELEASE
def _decode_legacy(cdb: bytes | bytearray | memoryview) -> None:
    if cdb[0] in (Opcode.RESERVE_6, Opcode.RELEASE_6):
        check_length(cdb, 6)
        for byte in (1, 2, 3, 4):
            check_reserved(cdb, byte)
    else:
        check_length(cdb, 10)
        check_reserved(cdb, 1, 0xFF)  # third-party reservations are not supported
        for byte in range(2, 9):
            check_reserved(cdb, byte)


def _prepare_legacy(lu: LogicalUnit, cdb: bytes) -> CommandPlan:
    _decode_legacy(cdb)
    return PLAN_NONE


def _execute_reserve(lu: LogicalUnit, req: ScsiRequest) -> ScsiResult:
    _decode_legacy(req.cdb)
    state = _state(lu)
    if state.type or (state.legacy is not None and state.legacy != req.nexus):
        raise _conflict()
    state.legacy = req.nexus
    _update_gate(lu)
    return ScsiResult()


def _execute_release(lu: LogicalUnit, req: ScsiRequest) -> ScsiResult:
    _decode_legacy(req.cdb)
    state = _state(lu)
    if state.legacy == req.nexus:
        state.legacy = None
        _update_gate(lu)
    return ScsiResult()  # releasing someone else's reservation is a no-op


COMMANDS: tuple[CommandSpec, ...] = (
    *(
        CommandSpec(Opcode.PERSISTENT_RESERVE_IN, f"PERSISTENT RESERVE IN ({name})", _prepare_prin, _execute_prin,
                    service_action=sa, ready_exempt=True,
                    usage=bytes((Opcode.PERSISTENT_RESERVE_IN, sa, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0x07)))
        for sa, name in ((READ_KEYS, "READ KEYS"), (READ_RESERVATION, "READ RESERVATION"),
                         (REPORT_CAPABILITIES, "REPORT CAPABILITIES"), (READ_FULL_STATUS, "READ FULL STATUS"))
    ),
    *(
        CommandSpec(Opcode.PERSISTENT_RESERVE_OUT, f"PERSISTENT RESERVE OUT ({name})", _prepare_prout,
                    _execute_prout, service_action=sa, ready_exempt=True,
                    usage=bytes((Opcode.PERSISTENT_RESERVE_OUT, sa, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x07)))
        for sa, name in ((REGISTER, "REGISTER"), (RESERVE, "RESERVE"), (RELEASE, "RELEASE"), (CLEAR, "CLEAR"),
                         (PREEMPT, "PREEMPT"), (PREEMPT_AND_ABORT, "PREEMPT AND ABORT"),
                         (REGISTER_AND_IGNORE, "REGISTER AND IGNORE EXISTING KEY"),
                         (REGISTER_AND_MOVE, "REGISTER AND MOVE"))
    ),
    CommandSpec(Opcode.RESERVE_6, "RESERVE(6)", _prepare_legacy, _execute_reserve),
    CommandSpec(Opcode.RELEASE_6, "RELEASE(6)", _prepare_legacy, _execute_release),
    CommandSpec(Opcode.RESERVE_10, "RESERVE(10)", _prepare_legacy, _execute_reserve),
    CommandSpec(Opcode.RELEASE_10, "RELEASE(10)", _prepare_legacy, _execute_release),
)
