"""Registered memory for the iSER datamover: a pooled allocator and a registration cache.

RDMA can only move registered memory, and registering per I/O is what makes naive RDMA
code slow. Two mechanisms keep the hot path free of registrations:

* :class:`BufferPool` hands out slices of large registered slabs (power-of-two size
  classes, free lists), the buffers the core asks for through ``alloc_buffer``;
* :class:`RegistrationCache` registers a caller's buffer once (the whole underlying object,
  so every later slice of it hits) and keeps a bounded number of registrations.

Both answer "which MR covers this memoryview, at which address" through :class:`MrIndex`.
"""

from __future__ import annotations

import bisect
import ctypes
from collections import OrderedDict
from dataclasses import dataclass

from datamover_iser.verbs.api import MR, PD
from datamover_iser.verbs.enums import Access

MIN_CLASS = 4096


def address_of(view: memoryview) -> int | None:
    """Virtual address of a writable contiguous view's first byte (None if not possible)."""
    if view.readonly or not view.c_contiguous or view.nbytes == 0:
        return None
    try:
        pin = (ctypes.c_char * view.nbytes).from_buffer(view)
    except (TypeError, ValueError, BufferError):
        return None
    return ctypes.addressof(pin)


@dataclass(slots=True)
class Region:
    addr: int
    length: int
    mr: MR


class MrIndex:
    """Registered regions sorted by address, for "which MR holds this buffer" lookups."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._regions: list[Region] = []

    def add(self, region: Region) -> None:
        index = bisect.bisect_left(self._starts, region.addr)
        self._starts.insert(index, region.addr)
        self._regions.insert(index, region)

    def remove(self, region: Region) -> None:
        index = bisect.bisect_left(self._starts, region.addr)
        while index < len(self._regions):
            if self._regions[index] is region:
                del self._starts[index]
                del self._regions[index]
                return
            index += 1

    def find(self, addr: int, length: int) -> Region | None:
        index = bisect.bisect_right(self._starts, addr) - 1
        if index < 0:
            return None
        region = self._regions[index]
        if addr + length <= region.addr + region.length:
            return region
        return None


class BufferPool:
    """Registered buffers in power-of-two size classes, carved from slabs.

    Bounded by ``max_bytes`` of slabs; beyond it, ``alloc`` returns unregistered memory and
    the datamover falls back to the registration cache or a bounce copy (counted).
    """

    def __init__(self, pd: PD, access: Access, index: MrIndex, *, slab_bytes: int = 8 << 20,
                 max_bytes: int = 512 << 20) -> None:
        self.pd = pd
        self.access = access
        self.index = index
        self.slab_bytes = slab_bytes
        self.max_bytes = max_bytes
        self.allocated_bytes = 0
        self._free: dict[int, list[memoryview]] = {}
        self._mrs: list[MR] = []
        self._owner: dict[int, int] = {}  # address -> size class, to validate releases

    @staticmethod
    def size_class(size: int) -> int:
        cls = MIN_CLASS
        while cls < size:
            cls <<= 1
        return cls

    def alloc(self, size: int) -> memoryview:
        cls = self.size_class(size)
        free = self._free.setdefault(cls, [])
        if not free and not self._grow(cls):
            return memoryview(bytearray(size))  # unregistered: handled by the caller
        buf = free.pop()
        return buf[:size]

    def _grow(self, cls: int) -> bool:
        slab_size = max(self.slab_bytes, cls)
        if self.allocated_bytes + slab_size > self.max_bytes:
            return False
        slab = self.pd.alloc_buffer(slab_size)
        mr = self.pd.reg_mr(slab, self.access)
        self._mrs.append(mr)
        self.index.add(Region(mr.addr, mr.length, mr))
        self.allocated_bytes += slab_size
        free = self._free.setdefault(cls, [])
        for offset in range(0, slab_size - cls + 1, cls):
            piece = slab[offset:offset + cls]
            self._owner[mr.addr + offset] = cls
            free.append(piece)
        return True

    def release(self, buf: memoryview) -> None:
        addr = address_of(buf)
        if addr is None:
            return
        cls = self._owner.get(addr)
        if cls is None:
            return  # not ours (an unregistered fallback buffer): the GC takes it
        region = self.index.find(addr, cls)
        if region is None:
            return
        offset = addr - region.addr
        self._free.setdefault(cls, []).append(region.mr.buf[offset:offset + cls])

    def close(self) -> None:
        for mr in self._mrs:
            try:
                mr.close()
            except Exception:
                pass
        self._mrs.clear()
        self._free.clear()
        self._owner.clear()


class RegistrationCache:
    """Registers callers' buffers once, whole; bounded LRU of registrations."""

    def __init__(self, pd: PD, access: Access, index: MrIndex, *, max_regions: int = 256,
                 max_bytes: int = 4 << 30) -> None:
        self.pd = pd
        self.access = access
        self.index = index
        self.max_regions = max_regions
        self.max_bytes = max_bytes
        self.bytes = 0
        self.registrations = 0
        self._lru: OrderedDict[int, Region] = OrderedDict()

    def lookup(self, view: memoryview) -> tuple[MR, int] | None:
        """(MR, address) covering ``view``, registering its whole buffer on a miss.

        None for memory that cannot be registered (read-only bytes): bounce-copy it."""
        addr = address_of(view)
        if addr is None:
            return None
        region = self.index.find(addr, view.nbytes)
        if region is not None:
            if region.addr in self._lru:
                self._lru.move_to_end(region.addr)
            return region.mr, addr
        whole = view
        owner = getattr(view, "obj", None)
        if owner is not None:
            try:
                candidate = memoryview(owner).cast("B")
                base = address_of(candidate)
                if base is not None and base <= addr and addr + view.nbytes <= base + candidate.nbytes:
                    whole = candidate
            except (TypeError, ValueError):
                pass
        try:
            mr = self.pd.reg_mr(whole, self.access)
        except Exception:
            return None
        self.registrations += 1
        region = Region(mr.addr, mr.length, mr)
        self.index.add(region)
        self._lru[region.addr] = region
        self.bytes += region.length
        while len(self._lru) > self.max_regions or self.bytes > self.max_bytes:
            _, old = self._lru.popitem(last=False)
            if old is region:
                break
            self.index.remove(old)
            self.bytes -= old.length
            try:
                old.mr.close()
            except Exception:
                pass
        return mr, addr

    def close(self) -> None:
        for region in self._lru.values():
            self.index.remove(region)
            try:
                region.mr.close()
            except Exception:
                pass
        self._lru.clear()
        self.bytes = 0
