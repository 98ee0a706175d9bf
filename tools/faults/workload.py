"""A verified mixed workload and its oracle: what each block may hold after faults.

Every written 512-byte block is stamped (magic, LBA, write id, CRC-32 of the payload), so a
read tells which write a block came from and whether it is intact. The oracle keeps, per
block, the last *acknowledged* write and the writes that were *reported failed* since; a
block may hold only one of those (or zeros before any write). At the end each failed write
must be all-or-nothing over the blocks no later write replaced ("torn" otherwise).

I/Os on overlapping ranges are serialised by per-extent locks, so the oracle never has to
guess an order between two writes in flight on the same block.
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Protocol

BLOCK = 512
EXTENT = 128  # blocks per lock extent (64 KiB)
_STAMP = struct.Struct(">4sQQI")  # magic, LBA, write id, CRC-32 of the rest
MAGIC = b"DMRB"
ZERO_BLOCK = bytes(BLOCK)
#: I/O sizes in blocks: single blocks up to 256 KiB (several R2T bursts with small limits)
SIZES = (1, 1, 2, 8, 8, 16, 64, 128, 256, 512)


class Initiator(Protocol):
    async def write_blocks(self, lun: int, lba: int, data: bytes, block_size: int = ..., fua: bool = ...) -> object: ...
    async def read_blocks(self, lun: int, lba: int, count: int, block_size: int = ...) -> memoryview: ...


def stamp(lba: int, write_id: int, count: int, rng: random.Random) -> bytes:
    """``count`` stamped blocks for write ``write_id`` starting at ``lba``."""
    payload = rng.randbytes(count * BLOCK)
    out = bytearray(payload)
    for i in range(count):
        base = i * BLOCK
        body = out[base + _STAMP.size:base + BLOCK]
        _STAMP.pack_into(out, base, MAGIC, lba + i, write_id, zlib.crc32(body))
    return bytes(out)


def parse(block: bytes | memoryview, lba: int) -> int | None:
    """The write id a block holds (0 = never written); None if it is corrupted."""
    if block == ZERO_BLOCK:
        return 0
    magic, where, write_id, crc = _STAMP.unpack_from(block, 0)
    if magic != MAGIC or where != lba or zlib.crc32(block[_STAMP.size:]) != crc:
        return None
    return write_id


@dataclass(slots=True)
class Figures:
    """What a run did and what the oracle found; every *bad* count must be 0."""

    ios: int = 0
    writes_acked: int = 0
    writes_failed: int = 0
    fua_writes: int = 0
    reads_verified: int = 0
    reads_failed: int = 0
    blocks_verified: int = 0
    failed_writes_applied: int = 0
    failed_writes_absent: int = 0
    # bad outcomes
    corrupted_blocks: int = 0
    lost_acked_blocks: int = 0
    torn_writes: int = 0
    hung_ios: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.corrupted_blocks or self.lost_acked_blocks or self.torn_writes or self.hung_ios)

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["errors"] = self.errors[:10]
        return out


class Oracle:
    """Per-block knowledge of acceptable contents over ``count`` blocks from ``base``."""

    def __init__(self, base: int, count: int) -> None:
        self.base = base
        self.count = count
        self.committed = [0] * count
        self.possible: dict[int, set[int]] = {}
        self.failed: dict[int, tuple[int, int]] = {}  # write id -> (lba, count)
        self._locks = [asyncio.Lock() for _ in range((count + EXTENT - 1) // EXTENT)]

    def locks(self, lba: int, count: int) -> list[asyncio.Lock]:
        first = (lba - self.base) // EXTENT
        last = (lba - self.base + count - 1) // EXTENT
        return self._locks[first:last + 1]

    def acked(self, write_id: int, lba: int, count: int) -> None:
        for b in range(lba - self.base, lba - self.base + count):
            self.committed[b] = write_id
            self.possible.pop(b, None)

    def failed_write(self, write_id: int, lba: int, count: int) -> None:
        self.failed[write_id] = (lba, count)
        for b in range(lba - self.base, lba - self.base + count):
            self.possible.setdefault(b, set()).add(write_id)

    def check(self, lba: int, data: memoryview | bytes, figures: Figures) -> list[int | None]:
        """Check a read of ``len(data)//BLOCK`` blocks at ``lba``; returns the ids seen."""
        seen: list[int | None] = []
        for i in range(len(data) // BLOCK):
            b = lba - self.base + i
            got = parse(data[i * BLOCK:(i + 1) * BLOCK], lba + i)
            seen.append(got)
            figures.blocks_verified += 1
            if got is None:
                figures.corrupted_blocks += 1
                figures.errors.append(f"LBA {lba + i}: corrupted block")
                continue
            allowed = {self.committed[b]} | self.possible.get(b, set())
            if got not in allowed:
                figures.lost_acked_blocks += 1
                figures.errors.append(f"LBA {lba + i}: holds write {got}, expected one of {sorted(allowed)}")
                continue
            if got != self.committed[b]:
                # a failed write is visible: it was applied; nothing older may come back
                self.committed[b] = got
                self.possible[b] = {w for w in self.possible.get(b, set()) if w > got}
        return seen

    def torn(self, seen: list[int | None], figures: Figures) -> None:
        """After a full read (``seen`` per block): every failed write all or nothing."""
        for write_id, (lba, count) in self.failed.items():
            ids = [seen[b] for b in range(lba - self.base, lba - self.base + count)]
            applied = sum(1 for x in ids if x == write_id)
            older = sum(1 for x in ids if x is not None and x < write_id)
            if applied and older:
                figures.torn_writes += 1
                figures.errors.append(f"write {write_id} at LBA {lba}: {applied} of {count} blocks applied")
            elif applied:
                figures.failed_writes_applied += 1
            else:
                figures.failed_writes_absent += 1


class VerifiedWorkload:
    """Random mixed reads and writes with verification over ``[base, base+count)``."""

    _ids = 0

    def __init__(self, base: int, count: int, *, seed: int, write_ratio: float = 0.6,
                 fua_ratio: float = 0.1, io_timeout: float = 60.0, max_blocks: int = 512,
                 lun: int = 0) -> None:
        self.oracle = Oracle(base, count)
        self.rng = random.Random(seed)
        self.write_ratio = write_ratio
        self.fua_ratio = fua_ratio
        self.io_timeout = io_timeout
        self.max_blocks = min(max_blocks, count)
        self.lun = lun
        self.figures = Figures()
        self.latencies: list[float] = []

    @classmethod
    def _next_id(cls) -> int:
        cls._ids += 1
        return cls._ids

    async def one(self, session: Initiator, rng: random.Random | None = None) -> None:
        """One random I/O, verified (a failure to the caller is recorded, not raised)."""
        rng = rng or self.rng
        oracle, fig = self.oracle, self.figures
        count = min(rng.choice(SIZES), self.max_blocks)
        lba = oracle.base + rng.randrange(0, oracle.count - count + 1)
        write = rng.random() < self.write_ratio
        locks = oracle.locks(lba, count)
        for lock in locks:
            await lock.acquire()
        start = time.perf_counter()
        try:
            fig.ios += 1
            if write:
                write_id = self._next_id()
                fua = rng.random() < self.fua_ratio
                data = stamp(lba, write_id, count, rng)
                ok = await self._guard(session.write_blocks(self.lun, lba, data, fua=fua))
                if ok is not None:
                    fig.writes_acked += 1
                    fig.fua_writes += fua
                    oracle.acked(write_id, lba, count)
                else:
                    fig.writes_failed += 1
                    oracle.failed_write(write_id, lba, count)
            else:
                got = await self._guard(session.read_blocks(self.lun, lba, count))
                if got is None:
                    fig.reads_failed += 1
                else:
                    fig.reads_verified += 1
                    oracle.check(lba, got, fig)  # type: ignore[arg-type]
        finally:
            self.latencies.append(time.perf_counter() - start)
            for lock in locks:
                lock.release()

    async def _guard(self, call: Awaitable[object]) -> object | None:
        try:
            return await asyncio.wait_for(call, self.io_timeout)
        except asyncio.TimeoutError:
            self.figures.hung_ios += 1
            self.figures.errors.append(f"I/O hung for {self.io_timeout} s")
            return None
        except Exception as exc:  # reported failed to the caller: that is allowed
            if len(self.figures.errors) < 1000:
                self.figures.errors.append(f"reported failed: {type(exc).__name__}: {exc}"[:200])
            return None

    async def run(self, session: Initiator, ios: int, qd: int,
                  on_io: Callable[[int], Awaitable[None] | None] | None = None) -> Figures:
        """``ios`` random I/Os, ``qd`` at a time."""
        left = ios
        streams = [random.Random(self.rng.random()) for _ in range(qd)]

        async def worker(rng: random.Random) -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await self.one(session, rng)
                if on_io is not None:
                    result = on_io(self.figures.ios)
                    if result is not None:
                        await result

        await asyncio.gather(*(worker(r) for r in streams))
        return self.figures

    async def run_for(self, session: Initiator, seconds: float, qd: int) -> Figures:
        """Random I/O, ``qd`` at a time, for ``seconds``."""
        deadline = time.monotonic() + seconds
        streams = [random.Random(self.rng.random()) for _ in range(qd)]

        async def worker(rng: random.Random) -> None:
            while time.monotonic() < deadline:
                await self.one(session, rng)

        await asyncio.gather(*(worker(r) for r in streams))
        return self.figures

    async def verify_all(self, session: Initiator, chunk: int = 512) -> Figures:
        """Read every block back (faults off), check it, then check all-or-nothing."""
        oracle, fig = self.oracle, self.figures
        seen: list[int | None] = []
        for lba in range(oracle.base, oracle.base + oracle.count, chunk):
            n = min(chunk, oracle.base + oracle.count - lba)
            data = await asyncio.wait_for(session.read_blocks(self.lun, lba, n), self.io_timeout)
            seen += oracle.check(lba, data, fig)
        oracle.torn(seen, fig)
        return fig
