"""The deterministic workload every transport runs: steps of I/Os over one LBA region.

Determinism is what makes transports comparable: the n-th I/O of a step has the same
direction, LBA, length and (for writes) payload on every transport, derived from the seed
alone. Within one pass of a step no two I/Os touch the same blocks, so concurrent I/Os
(queue depth > 1) cannot race, and what a read returns is fully defined by the writes of
earlier steps. A step that runs by duration wraps around its region; the runner then waits
for the I/O one pass earlier on the same slot before issuing the next one, and always
ends on a whole pass.

Write payloads are slices of one seeded random pool, so generating data costs no CPU
inside the measured window.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from datamover.compare.settings import CompareSettings

_MASK64 = (1 << 64) - 1
POOL_ALIGN = 512


def mix64(*values: int) -> int:
    """A splitmix64-style hash of some integers: cheap, stable across runs and platforms."""
    x = 0x9E3779B97F4A7C15
    for value in values:
        x = (x ^ (value & _MASK64)) & _MASK64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
        x ^= x >> 31
    return x


@dataclass(frozen=True, slots=True)
class Io:
    """One I/O of a step: direction, where, how long, and where its write payload is."""

    index: int
    write: bool
    offset: int  # byte offset within the region (block-aligned)
    length: int
    pool_offset: int  # writes: payload = pool[pool_offset:pool_offset + length]


@dataclass(frozen=True, slots=True)
class Step:
    """One measured unit: a pattern, an operation mix and a block size over the region."""

    number: int
    name: str
    pattern: str  # "seq" / "rand"
    op: str  # "write" / "read" / "mixed"
    block_size: int
    slots: tuple[int, ...]  # slot order of one pass (slot = offset // block_size)
    mix_read: float
    seed: int
    pool_blocks: int
    measured: bool = True

    @property
    def pass_length(self) -> int:
        """I/Os in one pass over the region (the whole step when running by bytes)."""
        return len(self.slots)

    def io(self, index: int) -> Io:
        """The ``index``-th I/O of this step.

        Indices past one pass repeat the pass exactly (same direction, slot and payload),
        so the LUN holds the same bytes after any number of whole passes: transports that
        completed different numbers of passes in a timed step still read the same data.
        """
        within = index % len(self.slots)
        slot = self.slots[within]
        if self.op == "write":
            write = True
        elif self.op == "read":
            write = False
        else:
            write = (mix64(self.seed, self.number, within, 1) % 10_000) >= int(self.mix_read * 10_000)
        pool_offset = 0
        if write:
            span = self.pool_blocks - self.block_size // POOL_ALIGN + 1
            pool_offset = (mix64(self.seed, self.number, within, 2) % span) * POOL_ALIGN
        return Io(index, write, slot * self.block_size, self.block_size, pool_offset)


#: bytes drawn per randbytes call: one call for the whole pool fails above 256 MiB
#: (getrandbits takes a C int of bits); chunks of a multiple of 4 bytes draw the same bytes
_POOL_CHUNK = 1 << 20


def _random_pool(seed: int, size: int) -> bytearray:
    """``size`` pseudo-random bytes from ``seed``, the same as ``Random(seed).randbytes(size)``."""
    rng = random.Random(seed)
    pool = bytearray(size)
    for start in range(0, size, _POOL_CHUNK):
        end = min(size, start + _POOL_CHUNK)
        pool[start:end] = rng.randbytes(end - start)
    return pool


@dataclass(slots=True)
class Workload:
    """The steps of a run plus the data pool their writes draw from."""

    region: int
    steps: list[Step]
    pool: bytes | bytearray

    @classmethod
    def build(cls, settings: CompareSettings) -> Workload:
        """Steps in a fixed order: a fill pass (so every later read has defined content),
        then for each block size, each pattern, each operation."""
        largest = max(settings.block_sizes)
        region = settings.bytes - settings.bytes % largest
        if region == 0:
            region = settings.bytes - settings.bytes % min(settings.block_sizes)
        pool = _random_pool(settings.seed, region + largest)
        pool_blocks = len(pool) // POOL_ALIGN
        steps: list[Step] = []

        def add(pattern: str, op: str, block_size: int, measured: bool = True, name: str = "") -> None:
            number = len(steps)
            count = region // block_size
            order = list(range(count))
            if pattern == "rand":
                random.Random(mix64(settings.seed, number, 3)).shuffle(order)
            steps.append(Step(number, name or f"{pattern}-{op}-{block_size}", pattern, op, block_size,
                              tuple(order), settings.mix_read, settings.seed, pool_blocks, measured))

        fill_size = max(size for size in settings.block_sizes if region % size == 0)
        add("seq", "write", fill_size, measured=False, name="fill")
        for block_size in settings.block_sizes:
            if region < block_size:
                continue
            for pattern in settings.patterns:
                for op in settings.ops:
                    add(pattern, op, block_size)
        return cls(region, steps, pool)

    @property
    def total_ios(self) -> int:
        return sum(step.pass_length for step in self.steps)
