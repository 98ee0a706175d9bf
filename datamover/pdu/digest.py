"""CRC32C header and data digests (RFC 7143 §13.1; test vectors in RFC 3720 B.4).

The PyPI ``crc32c`` package (hardware-accelerated where the CPU allows) does the work. The
table-driven pure-Python version below exists only so that the codec still imports where
the package is missing; it is far too slow for data digests at any real rate.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable

Buffer = bytes | bytearray | memoryview

#: Castagnoli polynomial, reflected form (RFC 7143 §13.1 gives 0x11EDC6F41).
_POLY_REFLECTED = 0x82F63B78

#: The digest goes on the wire least significant byte first (Linux ``put_le32``).
_LE32 = struct.Struct("<I")


def _make_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _POLY_REFLECTED if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _make_table()


def crc32c_python(data: Buffer, value: int = 0) -> int:
    """CRC32C of ``data``, continuing from ``value`` (the result for earlier bytes).

    Same contract as ``crc32c.crc32c``: initial value all ones, final complement, so
    ``crc32c_python(b, crc32c_python(a)) == crc32c_python(a + b)``.
    """
    table = _TABLE
    crc = value ^ 0xFFFFFFFF
    for byte in memoryview(data).cast("B"):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


try:
    from crc32c import crc32c as _crc32c_native
except ImportError:  # pragma: no cover - exercised only where the package is absent
    _crc32c_native = None

#: True when the fast PyPI implementation is in use.
NATIVE: bool = _crc32c_native is not None

#: ``crc32c(data, value=0) -> int``: CRC32C of ``data``, continuing from ``value`` (the
#: result for the bytes before it; 0 to start).
crc32c: Callable[..., int] = _crc32c_native if _crc32c_native is not None else crc32c_python


def digest(buffers: Iterable[Buffer]) -> bytes:
    """The 4-byte wire digest of the concatenation of ``buffers`` (little-endian CRC32C)."""
    value = 0
    for buf in buffers:
        value = crc32c(buf, value)
    return _LE32.pack(value)
