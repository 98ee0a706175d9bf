"""The iSER header (RFC 7145 9.1-9.4): 28 bytes in front of every iSCSI PDU in a Send.

Byte 0's high nibble is the iSER opcode: 1 iSCSI control-type PDU, 2 Hello, 3 HelloReply.
For opcode 1, WSV (0x08) and RSV (0x04) say whether the write / read STag and base offset
fields are valid; base offsets are absolute virtual addresses (ZBVA is never used). The
12-byte RFC 5046 header interoperates with nothing and is not supported.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

ISER_HEADER_LENGTH = 28
OPCODE_CONTROL = 0x1
OPCODE_HELLO = 0x2
OPCODE_HELLO_REPLY = 0x3
WSV = 0x08
RSV = 0x04
HELLO_REJECT = 0x01
#: RFC 7145 9.3-9.4: both version nibbles are 10 (Appendix B's 1 is an erratum)
ISER_VERSION = 10

_CONTROL = struct.Struct(">B3xIQIQ")
_HELLO = struct.Struct(">BBH24x")

#: CM private data flags (IBTA Annex A12, as Linux defines them)
CM_ZBVA_NOT_SUPPORTED = 0x80
CM_SEND_W_INV_NOT_SUPPORTED = 0x40


class IserFormatError(ValueError):
    """An iSER header that is not well formed: terminate the connection (RFC 7145 10.1.3)."""


@dataclass(frozen=True, slots=True)
class IserHeader:
    """The control-type header: STags and base offsets of the task's buffers."""

    write_stag: int = 0
    write_base: int = 0
    read_stag: int = 0
    read_base: int = 0
    wsv: bool = False
    rsv: bool = False

    def encode(self) -> bytes:
        flags = (OPCODE_CONTROL << 4) | (WSV if self.wsv else 0) | (RSV if self.rsv else 0)
        return _CONTROL.pack(flags, self.write_stag if self.wsv else 0, self.write_base if self.wsv else 0,
                             self.read_stag if self.rsv else 0, self.read_base if self.rsv else 0)

    def pack_into(self, buf: bytearray | memoryview, offset: int = 0) -> None:
        flags = (OPCODE_CONTROL << 4) | (WSV if self.wsv else 0) | (RSV if self.rsv else 0)
        _CONTROL.pack_into(buf, offset, flags, self.write_stag if self.wsv else 0,
                           self.write_base if self.wsv else 0, self.read_stag if self.rsv else 0,
                           self.read_base if self.rsv else 0)


@dataclass(frozen=True, slots=True)
class Hello:
    """Hello (initiator -> target) with the initiator's iSER-IRD."""

    ird: int
    max_version: int = ISER_VERSION
    min_version: int = ISER_VERSION

    def encode(self) -> bytes:
        return _HELLO.pack(OPCODE_HELLO << 4, (self.max_version << 4) | self.min_version, self.ird)


@dataclass(frozen=True, slots=True)
class HelloReply:
    """HelloReply (target -> initiator) with the target's iSER-ORD; REJ refuses."""

    ord: int
    reject: bool = False
    max_version: int = ISER_VERSION
    current_version: int = ISER_VERSION

    def encode(self) -> bytes:
        return _HELLO.pack((OPCODE_HELLO_REPLY << 4) | (HELLO_REJECT if self.reject else 0),
                           (self.max_version << 4) | self.current_version, self.ord)


def decode_header(message: bytes | bytearray | memoryview) -> IserHeader | Hello | HelloReply:
    """Parse the iSER header at the start of a received Send."""
    if len(message) < ISER_HEADER_LENGTH:
        raise IserFormatError(f"iSER message of {len(message)} bytes is shorter than the 28-byte header")
    first = message[0]
    opcode = first >> 4
    if opcode == OPCODE_CONTROL:
        if first & 0x03:
            raise IserFormatError(f"reserved flag bits set in {first:#04x}")
        flags, wstag, wbase, rstag, rbase = _CONTROL.unpack_from(message)
        wsv, rsv = bool(flags & WSV), bool(flags & RSV)
        return IserHeader(wstag if wsv else 0, wbase if wsv else 0, rstag if rsv else 0, rbase if rsv else 0,
                          wsv, rsv)
    if opcode in (OPCODE_HELLO, OPCODE_HELLO_REPLY):
        if len(message) != ISER_HEADER_LENGTH:
            raise IserFormatError(f"{'Hello' if opcode == OPCODE_HELLO else 'HelloReply'} must be exactly 28 bytes")
        flags, versions, value = _HELLO.unpack_from(message)
        high, low = versions >> 4, versions & 0x0F
        if opcode == OPCODE_HELLO:
            if flags & 0x0F:
                raise IserFormatError("reserved bits set in Hello")
            return Hello(value, high, low)
        return HelloReply(value, bool(flags & HELLO_REJECT), high, low)
    raise IserFormatError(f"unassigned iSER opcode {opcode:#x}")


def cm_private_data(*, send_with_invalidate: bool) -> bytes:
    """The 4-byte iSER CM REQ/REP private data: ZBVA never, Send-with-Invalidate if allowed."""
    flags = CM_ZBVA_NOT_SUPPORTED | (0 if send_with_invalidate else CM_SEND_W_INV_NOT_SUPPORTED)
    return bytes((flags, 0, 0, 0))


def peer_allows_send_with_invalidate(private_data: bytes | None) -> bool:
    """Read only byte 0: the receiver may see zero-padded private data (protocol-digest 2.6)."""
    if not private_data:
        return False  # no private data: be conservative, invalidate locally
    return not private_data[0] & CM_SEND_W_INV_NOT_SUPPORTED
