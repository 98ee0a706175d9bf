"""CRC32C known answers (RFC 3720 B.4), fallback agreement, and digest checking."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datamover.pdu import (
    DataOut,
    DigestError,
    NopOut,
    RejectReason,
    crc32c,
    decode_pdu,
    digest,
    encode_bytes,
)

# the package re-exports the function digest(), which shadows the submodule's attribute name
digest_module = importlib.import_module("datamover.pdu.digest")

RFC3720_VECTORS = [
    ("32 zero bytes", bytes(32), 0x8A9136AA),
    ("32 0xff bytes", b"\xff" * 32, 0x62A8AB43),
    ("incrementing 0..31", bytes(range(32)), 0x46DD794E),
    ("decrementing 31..0", bytes(range(31, -1, -1)), 0x113FDB5C),
    (
        "iSCSI read command",
        bytes.fromhex(
            "01c000000000000000000000000000001400000000000400000000140000001828000000000000000200000000000000"
        ),
        0xD9963A56,
    ),
]


@pytest.mark.parametrize(("name", "data", "crc"), RFC3720_VECTORS, ids=[v[0] for v in RFC3720_VECTORS])
def test_rfc3720_vectors(name: str, data: bytes, crc: int) -> None:
    assert crc32c(data) == crc
    assert digest_module.crc32c_python(data) == crc
    assert digest([data]) == crc.to_bytes(4, "little")


def test_zero_vector_wire_bytes() -> None:
    assert digest([bytes(32)]) == b"\xaa\x36\x91\x8a"


def test_native_package_in_use() -> None:
    if not digest_module.NATIVE:
        pytest.skip("PyPI crc32c package not installed; the pure-Python fallback is in use")
    assert digest_module.crc32c is not digest_module.crc32c_python


@settings(max_examples=60, deadline=None)
@given(chunks=st.lists(st.binary(max_size=300), max_size=5))
def test_fallback_agrees_with_package_incrementally(chunks: list[bytes]) -> None:
    whole = b"".join(chunks)
    value = 0
    for chunk in chunks:
        value = digest_module.crc32c_python(chunk, value)
    assert value == crc32c(whole)
    assert digest(chunks) == digest([whole]) == value.to_bytes(4, "little")


def _load_digest_without_package(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setitem(sys.modules, "crc32c", None)  # makes "import crc32c" fail
    spec = importlib.util.find_spec("datamover.pdu.digest")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fallback_used_when_package_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    module = _load_digest_without_package(monkeypatch)
    assert module.NATIVE is False
    assert module.crc32c is module.crc32c_python
    assert module.digest([bytes(16), bytes(16)]) == b"\xaa\x36\x91\x8a"


def _pdu_with_data() -> DataOut:
    return DataOut(itt=1, ttt=2, data_sn=3, buffer_offset=0, data=b"hello world")  # 11 bytes: 1 pad byte


@pytest.mark.parametrize("offset", [0, 20, 47])
def test_header_digest_mismatch(offset: int) -> None:
    wire = bytearray(encode_bytes(_pdu_with_data(), header_digest=True, data_digest=True))
    wire[offset] ^= 0x01
    with pytest.raises(DigestError) as info:
        decode_pdu(wire, header_digest=True, data_digest=True)
    assert info.value.which == "header"
    assert len(info.value.header) == 48


@pytest.mark.parametrize("where", ["data", "pad", "digest"])
def test_data_digest_mismatch(where: str) -> None:
    wire = bytearray(encode_bytes(_pdu_with_data(), header_digest=True, data_digest=True))
    index = {"data": 52, "pad": 52 + 11, "digest": len(wire) - 1}[where]
    wire[index] ^= 0x80
    with pytest.raises(DigestError) as info:
        decode_pdu(wire, header_digest=True, data_digest=True)
    assert info.value.which == "data"
    assert info.value.reject_reason == RejectReason.DATA_DIGEST_ERROR
    assert bytes(info.value.header) == bytes(wire[:48])


def test_header_digest_checked_before_data_arrives() -> None:
    wire = bytearray(encode_bytes(_pdu_with_data(), header_digest=True))
    wire[30] ^= 0xFF
    with pytest.raises(DigestError):
        decode_pdu(wire[:52], header_digest=True)  # header + digest only


def test_no_data_digest_without_data() -> None:
    wire = encode_bytes(NopOut(itt=1), header_digest=False, data_digest=True)
    assert len(wire) == 48
    assert decode_pdu(wire, data_digest=True) == (NopOut(itt=1), 48)

def test_segment_tail_is_the_same_over_pieces_as_over_the_joined_segment() -> None:
    """codec.segment_tail: padding, plus the DataDigest when negotiated, computed over the
    pieces in place (the TCP plugin's gather lists) exactly as over one buffer."""
    from datamover.pdu.codec import segment_tail
    from datamover.pdu.digest import crc32c

    data = bytes(range(251)) * 3  # 753 bytes: 3 bytes of padding
    pieces = [memoryview(data)[:100], memoryview(data)[100:101], memoryview(data)[101:]]
    assert segment_tail(pieces, len(data), False) == b"\0\0\0"
    tail = segment_tail(pieces, len(data), True)
    assert tail == segment_tail([data], len(data), True)
    assert tail[:3] == b"\0\0\0" and int.from_bytes(tail[3:], "little") == crc32c(data + b"\0\0\0")
    assert segment_tail([], 0, True) == b""
    assert segment_tail([data[:8]], 8, False) == b""
    assert segment_tail([data[:8]], 8, True) == digest([data[:8]])  # no padding: the digest alone
    long = bytes(range(256)) * (digest_module.ISAL_MIN // 256 + 1)  # a long piece among short ones
    assert segment_tail([long[:5], long[5:], b"xyz"], len(long) + 3, True) == b"\0" + digest([long + b"xyz\0"])


@settings(max_examples=60, deadline=None)
@given(data=st.binary(min_size=0, max_size=300), flip=st.integers(0, 303 * 8 - 1))
def test_data_followed_by_its_digest_has_the_fixed_residue(data: bytes, flip: int) -> None:
    """What the TCP receive path compares with: CRC32C over bytes and their wire digest."""
    framed = bytearray(data + digest([data]))
    assert crc32c(bytes(framed)) == digest_module.CRC32C_RESIDUE
    bit = flip % (len(framed) * 8)
    framed[bit // 8] ^= 1 << (bit % 8)
    assert crc32c(bytes(framed)) != digest_module.CRC32C_RESIDUE


# ------------------------------------------------------------------ ISA-L for long buffers
needs_isal = pytest.mark.skipif(not digest_module.ISAL,
                                reason="libisal.so.2 (Debian libisal2) not installed: the crc32c package "
                                       "serves every length, which the tests above cover")


@needs_isal
@settings(max_examples=40, deadline=None)
@given(data=st.binary(min_size=0, max_size=4096), start=st.integers(0, 64), value=st.integers(0, 0xFFFFFFFF))
def test_isal_agrees_with_package(data: bytes, start: int, value: int) -> None:
    import crc32c as package

    view = memoryview(data)[min(start, len(data)):]  # read-only and offset: any buffer lends its address
    assert digest_module.crc32c_isal(view, value) == package.crc32c(view, value)
    assert digest_module.crc32c_isal(bytearray(data)) == package.crc32c(data)


@needs_isal
@pytest.mark.parametrize("size", [digest_module.ISAL_MIN - 1, digest_module.ISAL_MIN, (1 << 20) + 3])
def test_long_buffers_go_to_isal_with_the_same_result(size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import crc32c as package

    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    calls: list[int] = []
    real = digest_module.crc32c_isal
    monkeypatch.setattr(digest_module, "crc32c_isal", lambda d, v=0: calls.append(len(d)) or real(d, v))
    assert crc32c is digest_module.crc32c  # the package re-exports the dispatching function
    assert digest_module.crc32c(data) == package.crc32c(data)
    half = size // 2
    assert digest_module.crc32c(data[half:], digest_module.crc32c(data[:half])) == package.crc32c(data)
    assert bool(calls) == (size >= digest_module.ISAL_MIN)


@needs_isal
def test_isal_splits_lengths_beyond_its_int(monkeypatch: pytest.MonkeyPatch) -> None:
    import crc32c as package

    monkeypatch.setattr(digest_module, "_ISAL_PIECE", 1000)  # as if 1000 bytes were INT_MAX
    data = bytes(range(251)) * 20
    assert digest_module.crc32c_isal(data) == package.crc32c(data)
    assert digest_module.crc32c_isal(b"") == 0


def test_isal_absent_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(digest_module, "_isal_crc32_iscsi", None)
    with pytest.raises(RuntimeError, match="ISA-L"):
        digest_module.crc32c_isal(b"abc")


def test_short_variant_is_the_package_without_dispatch() -> None:
    """Header digests skip the length test: crc32c_short is the package's own function
    (or the fallback), and agrees with crc32c on a header."""
    if digest_module.NATIVE:
        import crc32c as package

        assert digest_module.crc32c_short is package.crc32c
    header = bytes(range(48))
    assert digest_module.crc32c_short(header) == crc32c(header) == digest_module.crc32c_python(header)


def test_without_libisal_the_package_serves_every_length(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without libisal2: the module still imports, ISAL is False and crc32c is
    the package's function for long buffers too."""
    import ctypes

    def no_library(name: str, *args: object, **kwargs: object) -> object:
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", no_library)
    spec = importlib.util.find_spec("datamover.pdu.digest")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.ISAL is False
    if module.NATIVE:
        import crc32c as package

        assert module.crc32c is package.crc32c
    data = bytes(range(256)) * 1024
    assert module.crc32c(data) == crc32c(data)
