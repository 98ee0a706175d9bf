"""Soft provider memory: buffer addresses, shared-memory segments, MRs, MWs and the key table.

Keys and addresses behave as on a NIC: an MR gets the real virtual address of the caller's
buffer (so ``SGE.addr`` and an advertised remote VA mean what they mean with pyverbs) and an
lkey equal to its rkey; a key's low byte is a generation that changes when a window is
re-bound, so a stale key fails.

Shared-memory segments (``ShmSegment``) back ``PD.alloc_buffer`` when the fabric is the shm
fabric: a memfd mapped MAP_SHARED, whose fd is handed to the peer process over the doorbell
socket (SCM_RIGHTS), so the peer maps the same pages and an RDMA WRITE/READ is one memcpy
from MR to MR. Nothing is ever named in /dev/shm, so nothing can leak there.
"""

from __future__ import annotations

import bisect
import ctypes
import errno
import itertools
import mmap
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..api import MR, MW
from ..enums import Access, WCStatus
from ..errors import VerbsError

if TYPE_CHECKING:
    from .device import SoftPD

_seg_ids = itertools.count(1)


def writable_view(buf: Any) -> memoryview:
    """A flat byte view of a writable, C-contiguous buffer, or a typed error."""
    try:
        mv = memoryview(buf)
    except TypeError as exc:
        raise VerbsError(errno.EINVAL, f"cannot register {type(buf).__name__}: not a buffer") from exc
    if mv.readonly:
        raise VerbsError(errno.EACCES, "cannot register a read-only buffer")
    if not mv.c_contiguous:
        raise VerbsError(errno.EINVAL, "cannot register a non-contiguous buffer")
    return mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv


def address_of(mv: memoryview) -> tuple[int, Any]:
    """Virtual address of ``mv``'s first byte, and the ctypes object that pins the export."""
    if mv.nbytes == 0:
        raise VerbsError(errno.EINVAL, "cannot register an empty buffer")
    pin = (ctypes.c_char * mv.nbytes).from_buffer(mv)
    return ctypes.addressof(pin), pin


@dataclass(slots=True, eq=False)
class ShmSegment:
    """A memfd-backed shared mapping; ``seg_id`` names it on the wire."""

    seg_id: int
    size: int
    fd: int
    map: mmap.mmap
    view: memoryview
    addr: int
    _pin: Any = field(repr=False)

    @classmethod
    def create(cls, size: int) -> "ShmSegment":
        if size <= 0:
            raise VerbsError(errno.EINVAL, f"buffer size must be positive, got {size}")
        fd = os.memfd_create("datamover-soft-mr", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
            m = mmap.mmap(fd, size, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError:
            os.close(fd)
            raise
        view = memoryview(m)
        addr, pin = address_of(view)
        # Globally unique across processes: the pid keeps two processes' ids apart.
        return cls((os.getpid() << 32) | next(_seg_ids), size, fd, m, view, addr, pin)

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


def map_peer_segment(fd: int, size: int) -> memoryview:
    """Map a segment whose fd arrived from the peer; the fd is closed (the mapping stays)."""
    try:
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        m = mmap.mmap(fd, size, flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)
    return memoryview(m)


class SoftMR(MR):
    """A registration of (a slice of) a caller's buffer."""

    __slots__ = ("pd", "addr", "length", "lkey", "rkey", "access", "_view", "_pin", "valid",
                 "seg", "seg_offset")

    def __init__(self, pd: "SoftPD", view: memoryview, access: Access, key: int) -> None:
        self.pd = pd
        self._view = view
        self.addr, self._pin = address_of(view)
        self.length = view.nbytes
        self.lkey = self.rkey = key
        self.access = Access(access)
        self.valid = True
        self.seg, self.seg_offset = pd.context.segment_of(self.addr, self.length)

    @property
    def buf(self) -> memoryview:
        return self._view

    def close(self) -> None:
        if self.valid or self.lkey in self.pd.context.keys:
            self.valid = False
            self.pd.context.keys.pop(self.lkey, None)

    def __repr__(self) -> str:
        return f"SoftMR(addr={self.addr:#x}, length={self.length}, key={self.lkey:#x}, access={self.access!r})"


class SoftMW(MW):
    """A type-2 memory window: unusable until bound; each bind gives a new rkey."""

    __slots__ = ("pd", "rkey", "mr", "addr", "length", "access", "valid")

    def __init__(self, pd: "SoftPD", key: int) -> None:
        self.pd = pd
        self.rkey = key
        self.mr: SoftMR | None = None
        self.addr = 0
        self.length = 0
        self.access = Access.NONE
        self.valid = False

    def close(self) -> None:
        self.valid = False
        self.pd.context.keys.pop(self.rkey, None)


class KeyTable:
    """Key -> MR/MW of one soft context; the key's low byte is a generation."""

    def __init__(self) -> None:
        self._by_key: dict[int, SoftMR | SoftMW] = {}
        self._next_index = itertools.count(1)

    def new_key(self) -> int:
        return (next(self._next_index) << 8) | 0x5A

    def add(self, key: int, obj: SoftMR | SoftMW) -> None:
        self._by_key[key] = obj

    def pop(self, key: int, default: Any = None) -> Any:
        return self._by_key.pop(key, default)

    def get(self, key: int) -> SoftMR | SoftMW | None:
        return self._by_key.get(key)

    def __contains__(self, key: int) -> bool:
        return key in self._by_key


class SegmentTable:
    """Address-ordered shm segments of one process, to find the segment under an MR."""

    def __init__(self) -> None:
        self._bases: list[int] = []
        self._segs: list[ShmSegment] = []

    def add(self, seg: ShmSegment) -> None:
        i = bisect.bisect(self._bases, seg.addr)
        self._bases.insert(i, seg.addr)
        self._segs.insert(i, seg)

    def find(self, addr: int, length: int) -> tuple[ShmSegment | None, int]:
        i = bisect.bisect(self._bases, addr) - 1
        if i >= 0:
            seg = self._segs[i]
            if addr + length <= seg.addr + seg.size:
                return seg, addr - seg.addr
        return None, 0

    def close(self) -> None:
        for seg in self._segs:
            seg.close()


def check_local(
    keys: KeyTable, pd: "SoftPD", lkey: int, addr: int, length: int, need: Access
) -> tuple[SoftMR, int] | None:
    """(MR, offset) for a local SGE, or None for a local protection error."""
    mr = keys.get(lkey)
    if not isinstance(mr, SoftMR) or not mr.valid or mr.pd is not pd:
        return None
    off = addr - mr.addr
    if off < 0 or off + length > mr.length or int.__and__(mr.access, need) != need:  # (int &: no enum object per check)
        return None
    return mr, off


def check_remote(
    keys: KeyTable, pd: "SoftPD", rkey: int, addr: int, length: int, need: Access
) -> tuple[SoftMR, int] | WCStatus:
    """(MR, offset) for a remote access through an MR or a bound MW, or REM_ACCESS_ERR."""
    obj = keys.get(rkey)
    if obj is None or not obj.valid or obj.pd is not pd or int.__and__(obj.access, need) != need:
        return WCStatus.REM_ACCESS_ERR
    if isinstance(obj, SoftMW):
        if not (obj.addr <= addr and addr + length <= obj.addr + obj.length):
            return WCStatus.REM_ACCESS_ERR
        mr = obj.mr
        assert mr is not None
        if not mr.valid:
            return WCStatus.REM_ACCESS_ERR
    else:
        mr = obj
    off = addr - mr.addr
    if off < 0 or off + length > mr.length:
        return WCStatus.REM_ACCESS_ERR
    return mr, off
