"""Our initiator as a load generator: the Python twin of ``bench/iscsi_load.c``.

    .venv/bin/python -m bench.ourload [-w] [-r] [-b BLOCKS] [-m QD] [-t SECONDS] [-V]
                                      [--transport tcp] [--digests] [--busy-poll-us US] URL

Same options, same workloads and the same last line as iscsi-load, so bench/anchors.py can
put our initiator beside libiscsi against the same target:

    RESULT ios=N bytes=N seconds=F iops=F mib_s=F lat_us=F errors=N verify_errors=N cpu_s=F

(cpu_s: this process's CPU time over the timed part only, without start-up and login.)

Each of the QD slots owns one buffer from ``session.alloc_buffer`` and issues READ(16) or
WRITE(16) back to back until the time is up, the way iscsi-load drives libiscsi's async API:
``session.submit`` returns each command's future and its done-callback issues the slot's next
command, so no coroutine runs per command. A command the device did not run (a unit
attention) is sent again. uvloop is used when it is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import struct
import sys
import time
from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

if TYPE_CHECKING:
    from datamover.initiator import ScsiOutcome

_STAMP = struct.Struct("<QQ")
#: READ (16) / WRITE (16): opcode, flags, LBA, blocks, group, control
_CDB16 = struct.Struct(">BBQIBB")


def parse_url(url: str) -> tuple[str, int, str, int]:
    """``iscsi://HOST[:PORT]/IQN/LUN`` -> (host, port, iqn, lun)."""
    parts = urlparse(url)
    if parts.scheme != "iscsi" or not parts.hostname:
        raise ValueError(f"{url!r} is not an iscsi://HOST[:PORT]/IQN/LUN URL")
    path = [unquote(p) for p in parts.path.split("/") if p]
    if len(path) != 2 or not path[1].isdigit():
        raise ValueError(f"{url!r}: the path must be /IQN/LUN")
    return parts.hostname, parts.port or 3260, path[0], int(path[1])


async def run(args: argparse.Namespace) -> int:
    from datamover.di import Portal
    from datamover.initiator import InitiatorConfig, InitiatorSession
    from datamover.plugin import create_transport

    host, port, iqn, lun = parse_url(args.url)
    keys = {"HeaderDigest": "CRC32C", "DataDigest": "CRC32C"} if args.digests else {}
    config = InitiatorConfig(name="iqn.2026-11.org.datamover.bench:ourload", keys=keys,
                             busy_poll_us=args.busy_poll_us)
    session = InitiatorSession(create_transport(args.transport, {}), Portal(host, port), config, iqn)
    await session.login()
    try:
        await session.test_unit_ready(lun)  # takes a pending unit attention, if any
    except Exception:
        pass
    last_lba, block_size = await session.read_capacity(lun)
    num_blocks = last_lba + 1
    blocks = args.blocks
    length = blocks * block_size
    slots = num_blocks // blocks
    if slots < args.queue_depth:
        print(f"LUN of {num_blocks} blocks is too small for QD {args.queue_depth} x {blocks}", file=sys.stderr)
        return 2
    rng = random.Random(0x5EED)
    position = 0
    ios = errors = verify_errors = 0
    latency = 0.0
    tag = args.tag

    random_io = args.random
    randrange = rng.randrange

    def next_lba() -> int:
        nonlocal position
        if random_io:
            return randrange(slots) * blocks
        lba = position
        position = position + blocks if position + 2 * blocks <= num_blocks else 0
        return lba

    def stamp(buf: memoryview, lba: int) -> None:
        for i in range(blocks):
            _STAMP.pack_into(buf, i * block_size, lba + i, tag)

    def check(buf: memoryview, lba: int) -> int:
        bad = 0
        for i in range(blocks):
            if _STAMP.unpack_from(buf, i * block_size) != (lba + i, tag):
                bad += 1
        return bad

    write, verify, seconds = args.write, args.verify, args.seconds
    slots_left = args.queue_depth
    finished = asyncio.get_running_loop().create_future()

    def issue(buf: memoryview, started: float) -> None:
        """The slot's next command; its done-callback comes back here until time is up."""
        lba = next_lba()
        if write and verify:
            stamp(buf, lba)
        send(buf, lba, started, 0)

    def send(buf: memoryview, lba: int, started: float, retries: int) -> None:
        cdb = _CDB16.pack(0x8A if write else 0x88, 0, lba, blocks, 0, 0)
        future = session.submit(lun, cdb, data_out=buf) if write else session.submit(lun, cdb, read_buffer=buf)
        future.add_done_callback(partial(done, buf, lba, started, retries))

    def done(buf: memoryview, lba: int, started: float, retries: int, future: asyncio.Future[ScsiOutcome]) -> None:
        nonlocal ios, errors, verify_errors, latency, slots_left
        try:
            outcome = future.result()
            if outcome.not_run and retries < 3:  # a unit attention: the device did not run it
                send(buf, lba, started, retries + 1)
                return
            outcome.check()
        except BaseException as exc:  # (a cancelled future too: the slot ends either way)
            errors += 1
            print(f"LBA {lba} failed: {exc!r}", file=sys.stderr)
        else:
            if verify and not write:
                verify_errors += check(buf, lba)
            now = time.perf_counter()
            latency += now - started
            ios += 1
            if now < deadline and not errors:
                try:
                    issue(buf, now)
                    return
                except Exception as exc:  # (a callback must not raise: the slot would never end)
                    errors += 1
                    print(f"issuing after LBA {lba} failed: {exc!r}", file=sys.stderr)
        slots_left -= 1
        if not slots_left and not finished.done():
            finished.set_result(None)

    buffers = []
    for index in range(args.queue_depth):
        buf = session.alloc_buffer(length)
        buf[:] = bytes([0xA5 ^ index]) * length
        buffers.append(buf)
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    cpu_started = time.process_time()
    for buf in buffers:
        issue(buf, time.perf_counter())
    await finished
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    await session.logout()
    moved = ios * length
    print(f"RESULT ios={ios} bytes={moved} seconds={elapsed:.6f} iops={ios / elapsed:.1f} "
          f"mib_s={moved / elapsed / 2**20:.2f} lat_us={latency / ios * 1e6 if ios else 0.0:.2f} "
          f"errors={errors} verify_errors={verify_errors} cpu_s={cpu:.4f}", flush=True)
    return 1 if errors or verify_errors else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-w", dest="write", action="store_true", help="WRITE(16) (default READ(16))")
    parser.add_argument("-r", dest="random", action="store_true", help="random LBAs")
    parser.add_argument("-b", dest="blocks", type=int, default=8, help="blocks per I/O")
    parser.add_argument("-m", dest="queue_depth", type=int, default=32, help="commands in flight")
    parser.add_argument("-t", dest="seconds", type=float, default=5.0, help="run time")
    parser.add_argument("-V", dest="verify", action="store_true", help="stamp writes / check reads")
    parser.add_argument("-T", dest="tag", type=lambda s: int(s, 0), default=0x5EED, help="stamp tag")
    parser.add_argument("--transport", default="tcp")
    parser.add_argument("--digests", action="store_true", help="ask for CRC32C header and data digests")
    parser.add_argument("--busy-poll-us", type=int, default=0, metavar="US",
                        help="poll for answers this long after each send instead of sleeping (0: off)")
    parser.add_argument("url")
    args = parser.parse_args(argv)
    if args.blocks <= 0 or args.queue_depth <= 0:
        parser.error("-b and -m must be positive")
    if args.busy_poll_us < 0:
        parser.error("--busy-poll-us must be >= 0")
    try:
        import uvloop  # type: ignore[import-not-found]

        return uvloop.run(run(args))
    except ImportError:
        return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
