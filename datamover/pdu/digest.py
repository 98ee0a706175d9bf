"""CRC32C header and data digests (RFC 7143 §13.1; test vectors in RFC 3720 B.4).

The PyPI ``crc32c`` package (hardware-accelerated where the CPU allows) does the work. Where
Intel's ISA-L is installed (Debian package ``libisal2``; ``scripts/setup.sh`` installs it),
buffers of ``ISAL_MIN`` bytes and more go to its ``crc32_iscsi`` instead: its folding
implementation (PCLMULQDQ, AVX-512 where present) runs at about twice the package's rate on
large buffers (measured here: 17 against 33 us per MiB), which is most of what data digests
cost at 1 MiB. Below ``ISAL_MIN`` the ctypes call (0.5 us for writable memory, 1.6 for
read-only buffers, which lend their address through ``PyObject_GetBuffer``) costs more than
it saves.
The table-driven pure-Python version below exists only so that the codec still imports where
the package is missing; it is far too slow for data digests at any real rate.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable, Iterable

Buffer = bytes | bytearray | memoryview

#: Castagnoli polynomial, reflected form (RFC 7143 §13.1 gives 0x11EDC6F41).
_POLY_REFLECTED = 0x82F63B78

#: ``crc32c(data + digest(data))`` for any ``data``: a received digest is checked by one CRC
#: over the bytes and their digest together, compared with this constant.
CRC32C_RESIDUE = 0x48674BC7

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

#: buffers of at least this many bytes go to ISA-L when it is loaded (see the module docstring)
ISAL_MIN = 64 * 1024
#: ISA-L's ``crc32_iscsi`` takes an ``int`` length: longer buffers go in pieces of this size
_ISAL_PIECE = 1 << 30


class _PyBuffer(ctypes.Structure):
    """CPython's ``Py_buffer`` (stable since 3.3): how any buffer object lends its address."""

    _fields_ = [("buf", ctypes.c_void_p), ("obj", ctypes.py_object), ("len", ctypes.c_ssize_t),
                ("itemsize", ctypes.c_ssize_t), ("readonly", ctypes.c_int), ("ndim", ctypes.c_int),
                ("format", ctypes.c_char_p), ("shape", ctypes.c_void_p), ("strides", ctypes.c_void_p),
                ("suboffsets", ctypes.c_void_p), ("internal", ctypes.c_void_p)]


def _load_isal() -> Callable[[int, int, int], int] | None:
    """ISA-L's ``crc32_iscsi(buffer, length, seed)``, or None where the library is absent."""
    # By soname only: ctypes.util.find_library would spawn ldconfig at every import.
    try:
        function = ctypes.CDLL("libisal.so.2").crc32_iscsi
    except (OSError, AttributeError):
        return None
    function.restype = ctypes.c_uint32
    function.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    return function  # type: ignore[no-any-return]


_isal_crc32_iscsi = _load_isal()
# Private prototypes (ctypes.pythonapi's function objects are shared by every importer).
_get_buffer = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int)(
    ("PyObject_GetBuffer", ctypes.pythonapi))
_release_buffer = ctypes.PYFUNCTYPE(None, ctypes.POINTER(_PyBuffer))(("PyBuffer_Release", ctypes.pythonapi))
#: PyBUF_SIMPLE: a contiguous buffer, as bytes (what the crc32c package asks for too)
_BUF_SIMPLE = 0
_c_char_from_buffer = ctypes.c_char.from_buffer
_byref = ctypes.byref


def crc32c_isal(data: Buffer, value: int = 0) -> int:
    """CRC32C of ``data`` by ISA-L, continuing from ``value`` (same contract as ``crc32c``).

    Raises RuntimeError where ISA-L is not loaded; BufferError for a non-contiguous buffer.
    """
    function = _isal_crc32_iscsi
    if function is None:
        raise RuntimeError("ISA-L (libisal.so.2) is not loaded")
    # ISA-L's seed is the running register (the complement of the CRC so far)
    crc = value ^ 0xFFFFFFFF
    kind = type(data)
    if kind is bytearray or (kind is memoryview and not data.readonly and data.c_contiguous):  # type: ignore[union-attr]
        # Writable memory (every receive and pool buffer) lends its address through
        # c_char.from_buffer: 0.5 us a call, against 1.6 through PyObject_GetBuffer below.
        length = len(data) if kind is bytearray else data.nbytes  # type: ignore[union-attr]
        if not length:
            return value
        first = _c_char_from_buffer(data)
        offset = 0
        while offset < length:
            piece = min(length - offset, _ISAL_PIECE)
            crc = function(_byref(first, offset), piece, crc)
            offset += piece
        return crc ^ 0xFFFFFFFF
    view = _PyBuffer()  # one per call: data digests may be computed on several threads
    if _get_buffer(data, ctypes.byref(view), _BUF_SIMPLE) != 0:  # pragma: no cover - ctypes raises
        raise BufferError("object does not lend a contiguous buffer")
    try:
        address, left = view.buf or 0, view.len
        while left:
            piece = min(left, _ISAL_PIECE)
            crc = function(address, piece, crc)
            address += piece
            left -= piece
        return crc ^ 0xFFFFFFFF
    finally:
        _release_buffer(ctypes.byref(view))


def _crc32c_dispatch(data: Buffer, value: int = 0) -> int:
    """The package for short buffers, ISA-L for long ones (the module docstring says why)."""
    if len(data) < ISAL_MIN:
        return _crc32c_native(data, value)  # type: ignore[misc]
    return crc32c_isal(data, value)


#: True when ISA-L serves the long buffers.
ISAL: bool = _isal_crc32_iscsi is not None and _crc32c_native is not None

#: ``crc32c(data, value=0) -> int``: CRC32C of ``data``, continuing from ``value`` (the
#: result for the bytes before it; 0 to start).
crc32c: Callable[..., int] = (_crc32c_dispatch if ISAL else
                              _crc32c_native if _crc32c_native is not None else crc32c_python)

#: ``crc32c`` for buffers known to be short (headers, padding): the package's function itself,
#: without the length test (a Python call of its own, a few per PDU) that sends long buffers
#: to ISA-L
crc32c_short: Callable[..., int] = _crc32c_native if _crc32c_native is not None else crc32c_python


def digest(buffers: Iterable[Buffer]) -> bytes:
    """The 4-byte wire digest of the concatenation of ``buffers`` (little-endian CRC32C)."""
    value = 0
    for buf in buffers:
        value = crc32c(buf, value)
    return _LE32.pack(value)
