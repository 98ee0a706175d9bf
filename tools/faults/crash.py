"""Crash consistency: SIGKILL the target process at random points of a write workload with
FUA and SYNCHRONIZE CACHE, restart it on the same file LUN, and check that every write
acknowledged with FUA, or acknowledged before an acknowledged SYNCHRONIZE CACHE was
issued, is there byte for byte.

    python -m tools.faults.crash --kills 50 --seed 1

Writes that were acknowledged without FUA and never covered by a sync may be lost; blocks
may not be corrupted either way (each holds a stamped write or zeros).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from datamover.di import Portal
from datamover.initiator import InitiatorConfig, InitiatorSession
from datamover.plugin import create_transport
from tools.faults.workload import BLOCK, parse, stamp

IQN = "iqn.2026-11.org.datamover.reliability:crash"
LUN_BLOCKS = 4096  # 2 MiB


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _start_target(path: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "datamover.cli", "target", "serve", "--transport", "tcp",
         "--portal", f"127.0.0.1:{port}", "--iqn", IQN, "--lun", f"{path},size={LUN_BLOCKS * BLOCK}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("the target process exited at start")
            await asyncio.sleep(0.05)
    proc.kill()
    raise RuntimeError("the target did not start listening")


def _session(port: int) -> InitiatorSession:
    config = InitiatorConfig(name="iqn.2026-11.org.datamover.reliability:host", login_timeout=5.0)
    return InitiatorSession(create_transport("tcp"), Portal("127.0.0.1", port), config, IQN, recover=False)


async def _round(path: Path, rng: random.Random, durable: dict[int, int], next_id: list[int],
                 figures: dict[str, int]) -> None:
    """One life of the target: write until killed at a random moment."""
    port = _free_port()
    proc = await _start_target(path, port)
    session = _session(port)
    await session.login()
    since_sync: dict[int, int] = {}  # block -> id, acknowledged but not yet durable
    kill_after = rng.uniform(0.05, 0.6)

    async def writer() -> None:
        while True:
            count = rng.choice((1, 1, 4, 16, 64))
            lba = rng.randrange(0, LUN_BLOCKS - count)
            write_id = next_id[0] = next_id[0] + 1
            fua = rng.random() < 0.3
            await session.write_blocks(0, lba, stamp(lba, write_id, count, rng), fua=fua)
            figures["acked_writes"] += 1
            for b in range(lba, lba + count):
                if fua:
                    durable[b] = write_id
                    since_sync.pop(b, None)
                else:
                    since_sync[b] = write_id
            figures["fua_writes"] += fua
            if rng.random() < 0.1:
                covered = dict(since_sync)  # acknowledged before the sync was issued
                await session.synchronize_cache(0)
                figures["syncs"] += 1
                for b, wid in covered.items():
                    if since_sync.get(b) == wid:
                        del since_sync[b]
                    if durable.get(b, 0) < wid:
                        durable[b] = wid

    task = asyncio.create_task(writer())
    await asyncio.sleep(kill_after)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    figures["kills"] += 1
    try:
        await asyncio.wait_for(task, 10)
    except Exception:
        pass  # the write in flight at the kill fails: it was never acknowledged
    await session.close()


async def _check(path: Path, durable: dict[int, int], figures: dict[str, int]) -> None:
    port = _free_port()
    proc = await _start_target(path, port)
    try:
        session = _session(port)
        await session.login()
        for lba in range(0, LUN_BLOCKS, 256):
            data = await session.read_blocks(0, lba, 256)
            for i in range(256):
                got = parse(data[i * BLOCK:(i + 1) * BLOCK], lba + i)
                if got is None:
                    figures["corrupted_blocks"] += 1
                elif got < durable.get(lba + i, 0):
                    figures["lost_durable_blocks"] += 1
                figures["blocks_checked"] += 1
        await session.logout()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


async def run(kills: int = 5, seed: int = 1, workdir: str | None = None) -> dict[str, Any]:
    rng = random.Random(seed)
    figures = {"kills": 0, "acked_writes": 0, "fua_writes": 0, "syncs": 0, "blocks_checked": 0,
               "corrupted_blocks": 0, "lost_durable_blocks": 0}
    durable: dict[int, int] = {}
    next_id = [0]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = Path(tmp) / "lun.img"
        for _ in range(kills):
            await _round(path, rng, durable, next_id, figures)
            await _check(path, durable, figures)
    figures["durable_blocks_tracked"] = len(durable)
    return {"seed": seed, "clean": not (figures["corrupted_blocks"] or figures["lost_durable_blocks"]),
            "figures": figures, "seconds": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.faults.crash", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    summary = asyncio.run(run(args.kills, args.seed))
    print(json.dumps(summary, indent=2))
    return 0 if summary["clean"] else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
