"""Storage behind a logical unit: a byte-addressed medium with scatter-gather I/O.

The LU speaks blocks; a backend speaks bytes, so one backend type serves any block size.
Backends never copy in Python: reads land in the caller's memoryview
(``os.preadv``), writes go from the caller's memoryviews (``os.pwritev``).

Backends are not thread-safe by themselves; calls from several threads need a lock in the
caller, except that ``read_into``/``write_from`` on a :class:`FileBackend` map to
positional syscalls and may overlap safely.

A :class:`FileBackend` opened with ``mmap=True`` also maps the file read-only and reads by
copying out of the mapping instead of ``preadv``: the same one copy, at the same moment,
without a system call (writes still go through ``pwritev``, which the mapping sees at
once). The price, as with tgt's ``mmap`` backing store: a read that fails in the kernel (a
media error, or the file truncated by someone else) kills the process with SIGBUS instead
of answering MEDIUM ERROR. It is off unless asked for.
"""

from __future__ import annotations

import abc
import ctypes
import ctypes.util
import errno
import logging
import mmap
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from datamover.buffers import FileSlice

__all__ = ["Backend", "BackendError", "MemoryBackend", "FileBackend", "Buffers", "Extent"]

log = logging.getLogger("datamover.scsi")

#: one provisioning extent as :meth:`Backend.extents` reports it: (offset, length, mapped)
Extent = tuple[int, int, bool]

#: what ``write_from`` accepts: one buffer or a scatter-gather list of them
Buffers = memoryview | bytes | bytearray | Sequence[memoryview | bytes | bytearray]

#: Linux caps one read/write syscall at 0x7ffff000 bytes; longer requests come back short.
_ZERO_CHUNK = 1 << 20
#: allocation granularity a RAM disk pretends to have (GET LBA STATUS)
_MEM_CHUNK = 4096
#: the RAM disk's extents are looked for a window at a time (MemoryBackend.extents)
_MEM_WINDOW = 1 << 20
#: the most one MemoryBackend.extents call reads (GET LBA STATUS on a RAM disk)
MEMORY_EXTENT_SCAN = 256 << 20


class BackendError(OSError):
    """A backend could not be opened, or an access failed or fell outside the medium."""


def _as_list(buf: Buffers) -> list[memoryview]:
    if isinstance(buf, (memoryview, bytes, bytearray)):
        return [memoryview(buf)]
    return [memoryview(b) for b in buf]


def _check_size(size: int, block_size: int, what: str) -> None:
    if block_size <= 0:
        raise BackendError(f"block size {block_size} must be positive")
    if size <= 0:
        raise BackendError(f"{what}: size {size} bytes; a LUN needs at least one block")
    if size % block_size:
        raise BackendError(f"{what}: size {size} is not a multiple of the block size {block_size}")


class Backend(abc.ABC):
    """A fixed-size medium. ``size`` is in bytes and stays constant while open."""

    size: int

    @abc.abstractmethod
    def read_into(self, offset: int, buf: memoryview) -> None:
        """Fill all of ``buf`` from ``offset``; raise :class:`BackendError` on failure."""

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset``, as a new object (for small reads, where a
        buffer of its own costs less than borrowing and returning a pooled one)."""
        buf = bytearray(length)
        self.read_into(offset, memoryview(buf))
        return bytes(buf)

    @abc.abstractmethod
    def write_from(self, offset: int, buf: Buffers) -> None:
        """Write ``buf`` (or the buffers of a list, back to back) at ``offset``."""

    def flush(self) -> None:
        """Make every completed write durable (SYNCHRONIZE CACHE, FUA)."""

    def file_slice(self, offset: int, length: int) -> FileSlice | None:
        """Where ``length`` bytes at ``offset`` lie in an open file, for a datamover that
        sends from files (``os.sendfile``); None when the medium is not a plain file."""
        return None

    def close(self) -> None:
        """Release the medium; later calls may fail."""

    def write_zeroes(self, offset: int, length: int) -> None:
        """Zero a range (WRITE SAME, UNMAP later); backends may override with a hole punch."""
        self._check_range(offset, length)
        zero = memoryview(bytes(min(length, _ZERO_CHUNK)))
        while length:
            n = min(length, len(zero))
            self.write_from(offset, zero[:n])
            offset += n
            length -= n

    def deallocate(self, offset: int, length: int) -> None:
        """Unmap a range (UNMAP, WRITE SAME with UNMAP): afterwards it reads back zeros.

        The default writes zeros; backends that can free space override it.
        """
        self.write_zeroes(offset, length)

    def extents(self, offset: int, length: int, max_extents: int | None = None) -> list[Extent]:
        """Mapped/deallocated extents from ``offset``, in order, covering ``[offset, offset +
        length)`` or a first part of it (GET LBA STATUS: the initiator asks again from where
        they end). ``max_extents``: the caller uses no more than that many, so a backend may
        stop there.

        The default reports everything mapped (a fully provisioned medium).
        """
        self._check_range(offset, length)
        return [(offset, length, True)]

    def _check_range(self, offset: int, length: int) -> None:
        # The LU checks LBA ranges before calling; this guards direct callers and bugs.
        if offset < 0 or length < 0 or offset + length > self.size:
            raise BackendError(f"access [{offset}, {offset + length}) outside medium of {self.size} bytes")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class MemoryBackend(Backend):
    """A RAM disk: one ``bytearray``. Reads and writes are slice assignments (memcpy)."""

    def __init__(self, size: int, *, block_size: int = 512) -> None:
        _check_size(size, block_size, "memory backend")
        self.size = size
        self._data = bytearray(size)
        self._view = memoryview(self._data)

    def read_into(self, offset: int, buf: memoryview) -> None:
        n = len(buf)
        if offset < 0 or offset + n > self.size:
            self._check_range(offset, n)
        buf[:] = self._view[offset : offset + n]

    def read(self, offset: int, length: int) -> bytes:
        # one copy straight out of the RAM disk (the base class fills a buffer, then copies it)
        if offset < 0 or length < 0 or offset + length > self.size:
            self._check_range(offset, length)
        return self._view[offset : offset + length].tobytes()

    def write_from(self, offset: int, buf: Buffers) -> None:
        view = self._view
        if isinstance(buf, (memoryview, bytes, bytearray)):
            n = len(buf) if not isinstance(buf, memoryview) else buf.nbytes
            if offset < 0 or offset + n > self.size:
                self._check_range(offset, n)
            view[offset : offset + n] = buf
            return
        parts = _as_list(buf)
        self._check_range(offset, sum(p.nbytes for p in parts))
        for part in parts:
            view[offset : offset + part.nbytes] = part
            offset += part.nbytes

    def extents(self, offset: int, length: int, max_extents: int | None = None) -> list[Extent]:
        """A RAM disk has no allocation map: a 4 KiB chunk that holds only zeros counts as
        deallocated (so UNMAP followed by GET LBA STATUS behaves as on a sparse file).

        Finding them means reading memory, on the event loop: one call covers at most
        ``MEMORY_EXTENT_SCAN`` bytes from ``offset`` (GET LBA STATUS then describes that
        much, and the initiator asks again from where its descriptors end), and a 1 MiB
        window of zeros is one compare rather than 256 (a 4 GiB RAM disk took 4 s a call).
        """
        self._check_range(offset, length)
        end = offset + min(length, MEMORY_EXTENT_SCAN)
        view = self._view
        zero_chunk = bytes(_MEM_CHUNK)
        out: list[Extent] = []

        def add(start: int, stop: int, mapped: bool) -> None:
            if out and out[-1][2] == mapped:
                out[-1] = (out[-1][0], stop - out[-1][0], mapped)
            else:
                out.append((start, stop - start, mapped))

        pos = offset
        while pos < end:
            if max_extents is not None and len(out) > max_extents:
                return out[:max_extents]  # the last one may not have ended yet: the caller asks again
            window_end = min(end, (pos // _MEM_WINDOW + 1) * _MEM_WINDOW)
            # bytes, not memoryviews: bytes == bytes is a memcmp, memoryview == anything
            # compares item by item
            window_start, window = pos, view[pos:window_end].tobytes()
            if window == bytes(len(window)):
                add(pos, window_end, False)
                pos = window_end
                continue
            while pos < window_end:
                stop = min(window_end, (pos // _MEM_CHUNK + 1) * _MEM_CHUNK)
                piece = window[pos - window_start:stop - window_start]
                add(pos, stop, piece != (zero_chunk if len(piece) == _MEM_CHUNK else bytes(len(piece))))
                pos = stop
        return out

    def close(self) -> None:
        # Keep the data: a closed RAM disk has nothing to give back but memory, and tests
        # often inspect it afterwards.
        pass

    @property
    def view(self) -> memoryview:
        """The whole medium, for tests and zero-copy readers."""
        return self._view


class FileBackend(Backend):
    """A LUN stored in a file or block device, accessed with ``preadv``/``pwritev``.

    Opening rules (chosen to never lose data silently):

    * missing file: created with ``size`` bytes as a sparse file (``ftruncate``);
      ``size`` is required then, and ``read_only`` forbids creating;
    * existing file, ``size`` None or equal: used at its current size;
    * existing file, ``size`` larger: grown sparse to ``size`` (not when read-only);
    * existing file, ``size`` smaller: :class:`BackendError` (we never shrink a LUN);
    * a block device is used at its size and never resized.

    The size must be a positive multiple of ``block_size``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        size: int | None = None,
        *,
        read_only: bool = False,
        block_size: int = 512,
        mmap: bool = False,
    ) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._fd = -1
        #: the read-only mapping reads copy from (mmap=True), None otherwise
        self._mapping: memoryview | None = None
        flags = (os.O_RDONLY if read_only else os.O_RDWR) | getattr(os, "O_CLOEXEC", 0)
        created = False
        try:
            try:
                fd = os.open(self.path, flags)
            except FileNotFoundError:
                if read_only:
                    raise BackendError(f"{self.path}: no such file (read-only LUNs are never created)") from None
                if size is None:
                    raise BackendError(f"{self.path}: no such file, and no size given to create it") from None
                _check_size(size, block_size, str(self.path))
                fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o644)
                created = True
        except BackendError:
            raise
        except OSError as exc:
            raise BackendError(exc.errno, f"{self.path}: cannot open: {exc.strerror}") from exc
        self._fd = fd
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise BackendError(f"{self.path}: is a directory")
            regular = stat.S_ISREG(st.st_mode)
            # lseek(SEEK_END) gives the size of regular files and block devices alike
            current = os.lseek(fd, 0, os.SEEK_END)
            if created or (size is not None and regular and size > current):
                if read_only:
                    raise BackendError(f"{self.path}: {current} bytes, cannot grow to {size} read-only")
                assert size is not None
                _check_size(size, block_size, str(self.path))
                os.ftruncate(fd, size)  # sparse: no blocks are allocated
                current = size
            elif size is not None and size != current:
                raise BackendError(
                    f"{self.path}: holds {current} bytes but {size} were asked; refusing to shrink or resize"
                )
            _check_size(current, block_size, str(self.path))
            self.size = current
            if mmap:
                self._mapping = _map_read_only(fd, current, self.path)
        except BaseException:
            os.close(fd)
            self._fd = -1
            if created:
                os.unlink(self.path)
            raise

    @property
    def fd(self) -> int:
        """The open file descriptor (for sendfile/splice-style transports)."""
        return self._fd

    def read_into(self, offset: int, buf: memoryview) -> None:
        n = buf.nbytes
        if offset < 0 or offset + n > self.size:
            self._check_range(offset, n)
        mapping = self._mapping
        if mapping is not None:
            if buf.format != "B" or buf.ndim != 1:
                buf = buf.cast("B")
            buf[:] = mapping[offset:offset + n]  # (mmap: the copy without the system call)
            return
        try:
            got = os.preadv(self._fd, [buf], offset)
            while got < n:  # short read: huge request, or the file shrank under us
                more = os.preadv(self._fd, [buf[got:]], offset + got)
                if more == 0:
                    raise BackendError(f"{self.path}: end of file at {offset + got}, medium is {self.size} bytes")
                got += more
        except BackendError:
            raise
        except OSError as exc:
            raise BackendError(exc.errno, f"{self.path}: read at {offset}: {exc.strerror}") from exc

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or offset + length > self.size:
            self._check_range(offset, length)
        mapping = self._mapping
        if mapping is not None:
            return mapping[offset:offset + length].tobytes()
        try:
            data = os.pread(self._fd, length, offset)
        except OSError as exc:
            raise BackendError(exc.errno, f"{self.path}: read at {offset}: {exc.strerror}") from exc
        if len(data) != length:  # huge request, or the file shrank under us
            buf = bytearray(length)
            self.read_into(offset, memoryview(buf))
            return bytes(buf)
        return data

    def write_from(self, offset: int, buf: Buffers) -> None:
        if type(buf) is memoryview:
            parts = [buf]  # (one view, every fast-path write: no list building, no generator)
            n = buf.nbytes
        else:
            parts = _as_list(buf)
            n = sum(p.nbytes for p in parts)
        if offset < 0 or offset + n > self.size:
            self._check_range(offset, n)
        try:
            done = os.pwritev(self._fd, parts, offset)
            while done < n:  # short write: advance through the list and retry
                skip = done
                rest: list[memoryview] = []
                for p in parts:
                    if skip >= p.nbytes:
                        skip -= p.nbytes
                        continue
                    rest.append(p[skip:])
                    skip = 0
                more = os.pwritev(self._fd, rest, offset + done)
                if more == 0:
                    raise BackendError(f"{self.path}: write at {offset + done} made no progress")
                done += more
        except BackendError:
            raise
        except OSError as exc:
            raise BackendError(exc.errno, f"{self.path}: write at {offset}: {exc.strerror}") from exc

    def deallocate(self, offset: int, length: int) -> None:
        """Free the range with ``fallocate(PUNCH_HOLE)``; zeros where the file system cannot."""
        self._check_range(offset, length)
        if not length:
            return
        if _punch_hole(self._fd, offset, length):
            return
        self.write_zeroes(offset, length)

    def extents(self, offset: int, length: int, max_extents: int | None = None) -> list[Extent]:
        """Holes and data from ``lseek(SEEK_DATA/SEEK_HOLE)`` (file-system block granularity),
        two system calls an extent: a file punched full of holes has many, so the walk stops
        at ``max_extents``."""
        self._check_range(offset, length)
        end = offset + length
        out: list[Extent] = []
        pos = offset
        try:
            while pos < end and (max_extents is None or len(out) < max_extents):
                try:
                    data = os.lseek(self._fd, pos, os.SEEK_DATA)
                except OSError as exc:
                    if exc.errno != errno.ENXIO:  # ENXIO: nothing but a hole up to EOF
                        raise
                    data = end
                if data > pos:
                    out.append((pos, min(data, end) - pos, False))
                    pos = min(data, end)
                    if pos >= end:
                        break
                hole = min(os.lseek(self._fd, pos, os.SEEK_HOLE), end)
                out.append((pos, hole - pos, True))
                pos = hole
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):  # no SEEK_DATA here: all mapped
                return [(offset, length, True)]
            raise BackendError(exc.errno, f"{self.path}: extent map at {pos}: {exc.strerror}") from exc
        return out

    def file_slice(self, offset: int, length: int) -> FileSlice | None:
        if self._fd < 0 or offset < 0 or offset + length > self.size:
            return None
        return FileSlice(self._fd, offset, length)

    def flush(self) -> None:
        if self.read_only:
            return
        try:
            os.fdatasync(self._fd)
        except OSError as exc:
            raise BackendError(exc.errno, f"{self.path}: flush: {exc.strerror}") from exc

    def close(self) -> None:
        mapping, self._mapping = self._mapping, None
        if mapping is not None:
            source = mapping.obj
            mapping.release()
            try:
                source.close()  # type: ignore[union-attr]
            except BufferError:
                # a caller still holds a slice of it: unmapped when that goes
                log.debug("%s: mapping still in use at close; unmapped when released", self.path)
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __del__(self) -> None:
        # Last resort against fd leaks; close() is the real API.
        if getattr(self, "_fd", -1) >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass


def _map_read_only(fd: int, size: int, path: Path) -> memoryview:
    """The whole medium mapped shared and read-only (a write through it would fault)."""
    try:
        return memoryview(mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ))
    except (OSError, ValueError, OverflowError) as exc:
        raise BackendError(getattr(exc, "errno", None) or errno.EINVAL, f"{path}: cannot map: {exc}") from exc


# --------------------------------------------------------------------- hole punching
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_fallocate: object | None = None


def _punch_hole(fd: int, offset: int, length: int) -> bool:
    """``fallocate(fd, PUNCH_HOLE|KEEP_SIZE, offset, length)``; False when unsupported.

    Python has no binding for the Linux-only flags, so libc is called through ctypes
    (looked up once).
    """
    global _fallocate
    if _fallocate is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            func = libc.fallocate
            func.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
            func.restype = ctypes.c_int
            _fallocate = func
        except (OSError, AttributeError):
            _fallocate = False
    if not _fallocate:
        return False
    rc = _fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length)  # type: ignore[operator]
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        return False
    raise BackendError(err, f"fallocate(PUNCH_HOLE) at {offset}: {os.strerror(err)}")
