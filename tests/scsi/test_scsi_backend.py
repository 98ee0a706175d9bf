from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datamover.scsi import Backend, BackendError, FileBackend, MemoryBackend

SIZE = 64 * 1024


def test_memory_read_write() -> None:
    b = MemoryBackend(SIZE)
    b.write_from(100, memoryview(b"hello"))
    out = bytearray(7)
    b.read_into(99, memoryview(out))
    assert out == b"\0hello\0"


def test_scatter_gather_write() -> None:
    for b in (MemoryBackend(SIZE),):
        b.write_from(10, [memoryview(b"ab"), memoryview(b"cde"), b"f"])
        out = bytearray(6)
        b.read_into(10, memoryview(out))
        assert out == b"abcdef"


@pytest.mark.parametrize("size", [0, -512, 1000])
def test_memory_bad_sizes(size: int) -> None:
    with pytest.raises(BackendError):
        MemoryBackend(size)


def test_out_of_range_access(tmp_path: Path) -> None:
    for b in (MemoryBackend(SIZE), FileBackend(tmp_path / "f", SIZE)):
        with b:
            with pytest.raises(BackendError):
                b.read_into(SIZE - 2, memoryview(bytearray(4)))
            with pytest.raises(BackendError):
                b.write_from(-1, b"x")
            with pytest.raises(BackendError):
                b.write_from(SIZE - 1, [b"a", b"b"])


def test_file_created_sparse(tmp_path: Path) -> None:
    path = tmp_path / "lun.img"
    size = 256 << 20
    with FileBackend(path, size) as b:
        assert b.size == size
        st_ = os.stat(path)
        assert st_.st_size == size
        # sparse: far fewer 512-byte blocks allocated than the size implies
        assert st_.st_blocks * 512 < 1 << 20


def test_file_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "lun.img"
    with FileBackend(path, SIZE) as b:
        b.write_from(4096, [memoryview(b"persist"), memoryview(b"ent")])
        b.flush()
    with FileBackend(path) as b:  # no size: use the file's
        assert b.size == SIZE
        out = bytearray(10)
        b.read_into(4096, memoryview(out))
        assert out == b"persistent"


def test_file_grows_sparse_but_never_shrinks(tmp_path: Path) -> None:
    path = tmp_path / "lun.img"
    FileBackend(path, SIZE).close()
    with FileBackend(path, 2 * SIZE) as b:
        assert b.size == 2 * SIZE
    assert path.stat().st_size == 2 * SIZE
    with pytest.raises(BackendError, match="refusing to shrink"):
        FileBackend(path, SIZE)
    assert path.stat().st_size == 2 * SIZE


def test_file_open_errors(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="no size"):
        FileBackend(tmp_path / "missing")
    with pytest.raises(BackendError, match="read-only"):
        FileBackend(tmp_path / "missing", SIZE, read_only=True)
    with pytest.raises(BackendError):
        FileBackend(tmp_path / "zero", 0)
    assert not (tmp_path / "zero").exists()  # a refused create leaves nothing behind
    with pytest.raises(BackendError, match="multiple"):
        FileBackend(tmp_path / "odd", 1000)
    with pytest.raises(BackendError):
        FileBackend(tmp_path, SIZE)  # a directory
    with pytest.raises(BackendError, match="cannot open"):
        FileBackend(tmp_path / "no" / "such" / "dir", SIZE)
    (tmp_path / "empty").touch()
    with pytest.raises(BackendError):
        FileBackend(tmp_path / "empty")
    (tmp_path / "ragged").write_bytes(b"x" * 1000)
    with pytest.raises(BackendError, match="multiple"):
        FileBackend(tmp_path / "ragged")


def test_file_unreadable(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions")
    path = tmp_path / "locked"
    path.write_bytes(bytes(SIZE))
    path.chmod(0)
    with pytest.raises(BackendError, match="cannot open"):
        FileBackend(path)


def test_file_read_only(tmp_path: Path) -> None:
    path = tmp_path / "ro.img"
    FileBackend(path, SIZE).close()
    with FileBackend(path, read_only=True) as b:
        assert b.read_only
        b.read_into(0, memoryview(bytearray(512)))
        with pytest.raises(BackendError):
            b.write_from(0, b"x" * 512)
        b.flush()  # nothing to flush, no error
        with pytest.raises(BackendError):
            FileBackend(path, 2 * SIZE, read_only=True)


def test_write_zeroes(tmp_path: Path) -> None:
    for b in (MemoryBackend(SIZE), FileBackend(tmp_path / "z", SIZE)):
        with b:
            b.write_from(0, b"\xff" * SIZE)
            b.write_zeroes(512, 1024)
            out = bytearray(2048)
            b.read_into(0, memoryview(out))
            assert out == b"\xff" * 512 + bytes(1024) + b"\xff" * 512


_ops = st.lists(
    st.tuples(
        st.booleans(),
        st.integers(0, SIZE - 1),
        st.integers(1, 3000),
        st.integers(0, 255),
        st.integers(1, 3),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_ops)
def test_memory_file_parity(tmp_path: Path, ops: list[tuple[bool, int, int, int, int]]) -> None:
    """Random write/read sequences give identical results on both backends."""
    path = tmp_path / f"parity-{os.urandom(4).hex()}"
    backends: list[Backend] = [MemoryBackend(SIZE), FileBackend(path, SIZE)]
    try:
        for is_write, offset, length, fill, pieces in ops:
            length = min(length, SIZE - offset)
            if is_write:
                data = bytes((fill + i) & 0xFF for i in range(length))
                step = max(1, length // pieces)
                parts = [memoryview(data)[i : i + step] for i in range(0, length, step)]
                for b in backends:
                    b.write_from(offset, parts)
            else:
                outs = []
                for b in backends:
                    out = bytearray(length)
                    b.read_into(offset, memoryview(out))
                    outs.append(out)
                assert outs[0] == outs[1]
        whole = []
        for b in backends:
            out = bytearray(SIZE)
            b.read_into(0, memoryview(out))
            whole.append(out)
        assert whole[0] == whole[1]
    finally:
        for b in backends:
            b.close()
        path.unlink()


def test_read_returns_the_bytes_of_read_into_and_checks_the_range(tmp_path: Path) -> None:
    """Backend.read (the fast path's small READs) against read_into, file and memory."""
    payload = os.urandom(1 << 16)
    path = tmp_path / "lun.img"
    path.write_bytes(payload)
    for backend in (FileBackend(path), MemoryBackend(1 << 16)):
        backend.write_from(0, memoryview(payload))
        for offset, length in ((0, 512), (4096, 4096), (65536 - 16384, 16384), (100, 1)):
            got = backend.read(offset, length)
            assert isinstance(got, bytes) and got == payload[offset:offset + length]
        for offset, length in ((65536 - 512, 1024), (-512, 512)):
            with pytest.raises(BackendError):
                backend.read(offset, length)
        backend.close()


# ------------------------------------------------------------------ mapped file LUNs (mmap)
def _no_pread(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("a mapped LUN read with a system call")

    monkeypatch.setattr(os, "pread", refuse)
    monkeypatch.setattr(os, "preadv", refuse)


def test_a_mapped_lun_reads_by_copying_from_the_mapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FileBackend(tmp_path / "m", SIZE, mmap=True) as b:
        b.write_from(4096, b"before" * 10)
        _no_pread(monkeypatch)
        first = b.read(4096, 60)
        assert first == b"before" * 10
        b.write_from(4096, b"AFTER!")  # pwritev and the mapping share the page cache
        assert first == b"before" * 10  # a read is a copy taken when it ran
        assert b.read(4096, 12) == b"AFTER!before"
        into = bytearray(12)
        b.read_into(4096, memoryview(into))
        assert into == b"AFTER!before"
        words = memoryview(bytearray(12)).cast("I")  # any view: read_into casts it to bytes
        b.read_into(4096, words)
        assert words.tobytes() == b"AFTER!before"
        with pytest.raises(BackendError):
            b.read(SIZE - 10, 11)
        assert b.read(SIZE - 4, 4) == bytes(4)


def test_mapping_is_off_unless_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, off: calls.append(n) or real(fd, n, off))
    with FileBackend(tmp_path / "p", SIZE) as b:
        assert b.read(0, 512) == bytes(512) and calls == [512]


def test_a_read_only_file_maps_too(tmp_path: Path) -> None:
    path = tmp_path / "ro"
    path.write_bytes(b"x" * SIZE)
    os.chmod(path, 0o444)
    with FileBackend(path, read_only=True, mmap=True) as b:
        assert b.read(0, 3) == b"xxx"


def test_mapped_lun_reads_zeros_after_deallocate(tmp_path: Path) -> None:
    """UNMAP / WRITE SAME(UNMAP) punch holes; the mapping reads them back as zeros."""
    with FileBackend(tmp_path / "h", 1 << 20, mmap=True) as b:
        b.write_from(0, b"\xab" * (1 << 20))
        b.deallocate(64 * 1024, 128 * 1024)
        assert b.read(64 * 1024, 128 * 1024) == bytes(128 * 1024)
        assert b.read(0, 64 * 1024) == b"\xab" * (64 * 1024) and b.read((1 << 20) - 1, 1) == b"\xab"


def test_close_with_a_slice_of_the_mapping_still_held(tmp_path: Path) -> None:
    b = FileBackend(tmp_path / "c", SIZE, mmap=True)
    held = b._mapping[:10]  # type: ignore[index]  # (what a caller of the internals could do)
    b.close()  # no BufferError: the mapping goes when the slice does
    assert held.tobytes() == bytes(10)
    del held


def test_lun_option_mmap() -> None:
    from datamover.target.config import LunConfig

    assert LunConfig.parse("disk.img,size=1M,mmap").mmap
    assert LunConfig.parse("disk.img,mmap=yes").mmap and not LunConfig.parse("disk.img,mmap=no").mmap
    assert not LunConfig.parse("disk.img").mmap
    with pytest.raises(ValueError, match="file LUNs"):
        LunConfig.parse("memory,size=1M,mmap")
    # an on/off value it does not know is refused, not taken as off (ro and removable too)
    for option in ("mmap=maybe", "ro=2", "removable=sure"):
        with pytest.raises(ValueError, match="expected yes or no"):
            LunConfig.parse(f"disk.img,{option}")
    assert LunConfig.parse("disk.img,ro=off,removable=on").removable



def _extents_chunk_by_chunk(backend: MemoryBackend, offset: int, length: int) -> list[tuple[int, int, bool]]:
    """The RAM disk's extents as first written: every 4 KiB chunk (or part) compared alone."""
    out: list[tuple[int, int, bool]] = []
    pos, end = offset, offset + length
    while pos < end:
        stop = min(end, (pos // 4096 + 1) * 4096)
        mapped = backend.read(pos, stop - pos) != bytes(stop - pos)
        if out and out[-1][2] == mapped:
            out[-1] = (out[-1][0], stop - out[-1][0], mapped)
        else:
            out.append((pos, stop - pos, mapped))
        pos = stop
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(writes=st.lists(st.tuples(st.integers(0, (3 << 20) - 1), st.integers(1, 70000)), max_size=12),
       span=st.tuples(st.integers(0, 3 << 20), st.integers(0, 3 << 20)))
def test_memory_extents_match_a_chunk_by_chunk_scan(writes: list[tuple[int, int]], span: tuple[int, int]) -> None:
    """Windows of zeros found in one compare give the extents a 4 KiB-at-a-time scan gives,
    for any writes (across chunk and window edges) and any range, aligned or not."""
    backend = MemoryBackend(3 << 20)
    for offset, length in writes:
        backend.write_from(offset, b"\x5a" * min(length, (3 << 20) - offset))
    offset = min(span)
    length = max(span) - offset
    assert backend.extents(offset, length) == _extents_chunk_by_chunk(backend, offset, length)


def test_memory_extents_read_at_most_the_scan_bound() -> None:
    """One call reads at most MEMORY_EXTENT_SCAN bytes of a RAM disk (it used to read the
    whole rest of it, 4 s of event loop for 4 GiB); the extents cover exactly that much."""
    from datamover.scsi.backend import MEMORY_EXTENT_SCAN

    backend = MemoryBackend(MEMORY_EXTENT_SCAN + (8 << 20))  # zero pages: not touched until written
    backend.write_from(MEMORY_EXTENT_SCAN - 4096, b"\x01" * 8192)  # straddles the bound
    got = backend.extents(4096, backend.size - 4096)
    assert got == [(4096, MEMORY_EXTENT_SCAN - 8192, False), (MEMORY_EXTENT_SCAN - 4096, 8192, True)]
    assert got[-1][0] + got[-1][1] == 4096 + MEMORY_EXTENT_SCAN
    assert backend.extents(MEMORY_EXTENT_SCAN, 8 << 20) == [(MEMORY_EXTENT_SCAN, 4096, True),
                                                           (MEMORY_EXTENT_SCAN + 4096, (8 << 20) - 4096, False)]


def test_extents_stop_at_max_extents(tmp_path: Path) -> None:
    """Backends may stop at max_extents (GET LBA STATUS asks for little more than fits its
    allocation length): what they return is the start of the full map, each extent whole."""
    memory = MemoryBackend(4 << 20)
    for chunk in range(0, 64, 2):  # 32 mapped 4 KiB chunks with holes between
        memory.write_from(chunk * 4096, b"\x01" * 4096)
    full = memory.extents(0, memory.size)
    assert len(full) == 64
    assert memory.extents(0, memory.size, 5) == full[:5]
    path = tmp_path / "holes.img"
    with FileBackend(path, size=4 << 20) as backend:
        for chunk in range(0, 64, 2):
            backend.write_from(chunk * 65536, b"\x01" * 65536)
        whole = backend.extents(0, backend.size)
        if len(whole) < 8:
            pytest.skip("this file system reports no holes (no SEEK_DATA granularity to test)")
        limited = backend.extents(0, backend.size, 4)
        assert 4 <= len(limited) <= 5 and limited == whole[:len(limited)]
