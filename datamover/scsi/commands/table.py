"""The command table: which handler serves which operation code (and service action).

A command family is a module that exposes ``COMMANDS``, a tuple of :class:`CommandSpec`.
Adding a family (thin provisioning, COMPARE AND WRITE, PERSISTENT RESERVE, ...) means
writing that module and listing it in :data:`datamover.scsi.commands.FAMILIES`, or
registering its specs on one LU's table at run time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from datamover.scsi.cdb import cdb_length
from datamover.scsi.sense import INVALID_OPCODE, ScsiError, invalid_field_in_cdb

if TYPE_CHECKING:
    from datamover.scsi.command import CommandPlan, ScsiRequest, ScsiResult
    from datamover.scsi.lu import LogicalUnit

__all__ = ["CommandSpec", "CommandTable", "PrepareFn", "ExecuteFn", "service_action_of"]

#: decode a CDB without touching data; raise ScsiError for a bad CDB
PrepareFn = Callable[["LogicalUnit", bytes], "CommandPlan"]
#: run the command; raise ScsiError to end it with CHECK CONDITION
ExecuteFn = Callable[["LogicalUnit", "ScsiRequest"], "ScsiResult"]

_VARIABLE_LENGTH = 0x7F


def service_action_of(cdb: bytes | bytearray | memoryview) -> int:
    """The service action field: bytes 8-9 of a variable-length CDB, else byte 1 bits 4-0."""
    if cdb[0] == _VARIABLE_LENGTH:
        return int.from_bytes(cdb[8:10], "big")
    return cdb[1] & 0x1F


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One command as the LU knows it.

    ``ua_exempt`` marks the commands a pending unit attention does not fail (INQUIRY,
    REPORT LUNS, REQUEST SENSE). ``cdb_length`` defaults to the opcode group's length;
    the LU checks the CONTROL byte (NACA, LINK) at its end before calling ``execute``.
    """

    opcode: int
    name: str
    prepare: PrepareFn
    execute: ExecuteFn
    service_action: int | None = None
    ua_exempt: bool = False
    cdb_length: int = 0
    #: runs while the LU is not ready (no medium): START STOP UNIT, PREVENT ALLOW, ...
    ready_exempt: bool = False
    #: CDB USAGE DATA for REPORT SUPPORTED OPERATION CODES (SPC-5 6.35.3): the bits the
    #: command looks at, opcode first; empty means "every bit of every byte but the
    #: reserved CONTROL bits" (see :meth:`usage_data`)
    usage: bytes = b""
    #: nominal and recommended command timeouts in seconds (timeouts descriptor)
    timeout: int = 30

    @property
    def length(self) -> int:
        return self.cdb_length or cdb_length(self.opcode)

    def usage_data(self) -> bytes:
        """The CDB usage bitmap: ``usage`` as declared, or a permissive default."""
        if self.usage:
            return self.usage
        n = self.length or 16
        data = bytearray(b"\xff" * n)
        data[0] = self.opcode
        if self.service_action is not None:
            data[1] = 0xE0 | self.service_action
        data[n - 1] = 0x07  # CONTROL: NACA, (obsolete) FLAG/LINK as SPC-5 reports them
        return bytes(data)


class CommandTable:
    """Opcode -> spec, or opcode -> {service action -> spec} for service-action opcodes."""

    __slots__ = ("_by_opcode",)

    def __init__(self, specs: tuple[CommandSpec, ...] | list[CommandSpec] = ()) -> None:
        self._by_opcode: dict[int, CommandSpec | dict[int, CommandSpec]] = {}
        for spec in specs:
            self.register(spec)

    def register(self, spec: CommandSpec, *, replace: bool = False) -> None:
        """Add ``spec``; refuse to shadow an existing one unless ``replace``."""
        entry = self._by_opcode.get(spec.opcode)
        if spec.service_action is None:
            if entry is not None and not replace:
                raise ValueError(f"opcode {spec.opcode:#04x} is already registered")
            self._by_opcode[spec.opcode] = spec
            return
        if isinstance(entry, CommandSpec):
            if not replace:
                raise ValueError(f"opcode {spec.opcode:#04x} has no service actions")
            entry = None
        if entry is None:
            entry = self._by_opcode[spec.opcode] = {}
        if spec.service_action in entry and not replace:
            raise ValueError(f"{spec.opcode:#04x}/{spec.service_action:#04x} is already registered")
        entry[spec.service_action] = spec

    def entry(self, opcode: int) -> CommandSpec | dict[int, CommandSpec] | None:
        """What ``opcode`` maps to: its spec, its service actions' specs, or None."""
        return self._by_opcode.get(opcode)

    def unregister(self, opcode: int, service_action: int | None = None) -> None:
        entry = self._by_opcode.get(opcode)
        if isinstance(entry, dict) and service_action is not None:
            entry.pop(service_action, None)
            if not entry:
                del self._by_opcode[opcode]
        else:
            self._by_opcode.pop(opcode, None)

    def lookup(self, cdb: bytes | bytearray | memoryview) -> CommandSpec:
        """The spec for ``cdb``; ScsiError INVALID OPCODE (or INVALID FIELD on the service action)."""
        entry = self._by_opcode.get(cdb[0])
        if entry is None:
            raise ScsiError(INVALID_OPCODE)
        if isinstance(entry, CommandSpec):
            return entry
        if len(cdb) < 2:
            raise ScsiError(invalid_field_in_cdb(len(cdb)))
        spec = entry.get(service_action_of(cdb))
        if spec is None:
            raise ScsiError(invalid_field_in_cdb(8 if cdb[0] == _VARIABLE_LENGTH else 1, 4))
        return spec

    def find(self, opcode: int, service_action: int | None = None) -> CommandSpec | None:
        entry = self._by_opcode.get(opcode)
        if isinstance(entry, dict):
            return entry.get(service_action) if service_action is not None else None
        return entry if service_action is None else None

    def __iter__(self) -> Iterator[CommandSpec]:
        for opcode in sorted(self._by_opcode):
            entry = self._by_opcode[opcode]
            if isinstance(entry, dict):
                for sa in sorted(entry):
                    yield entry[sa]
            else:
                yield entry

    def __contains__(self, opcode: object) -> bool:
        return opcode in self._by_opcode

    def copy(self) -> CommandTable:
        return CommandTable(list(self))
