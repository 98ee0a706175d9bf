"""Our transports against each other, side by side, in one run.

    .venv/bin/python -m bench.transports [--seconds 5] [--rounds 3] [--json FILE]

For each transport (TCP, iSER on the soft provider over shared memory and over pyzmq, and
loopback in-process) a target runs in its own process (loopback: in this process) and this
process drives 1 MiB sequential writes and reads at queue depth 4 for ``--seconds`` each,
in interleaved rounds. Reported per transport: median MiB/s, payload copies per byte counted
by the datamovers on both sides (user-space copies; TCP also has the kernel's send and
receive copies, which no Python code can count), and CPU seconds per GB of each process.
Data buffers come from the session's ``alloc_buffer`` (registered memory on iSER), as an
application that cares about copies would use them.

A benchmark reports numbers; it asserts nothing. ``--smoke`` runs a fraction of a second per
case so that the default test suite keeps this harness from rotting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field

IQN = "iqn.2026-11.org.datamover.bench:transports"
BLOCK = 1 << 20
QUEUE_DEPTH = 4
LUN_SIZE = 256 << 20

CASES: dict[str, tuple[str, dict[str, object]]] = {
    "loopback": ("loopback", {}),
    "tcp": ("tcp", {}),
    "iser-shm": ("iser", {"provider": "soft", "fabric": "shm"}),
    "iser-zmq": ("iser", {"provider": "soft", "fabric": "zmq"}),
}


def _target_config(transport: str, options: dict[str, object]):  # type: ignore[no-untyped-def]
    from datamover.di import Portal
    from datamover.target import LunConfig, TargetConfig, TargetServerConfig

    host = "loopback" if transport == "loopback" else "127.0.0.1"
    return TargetServerConfig(targets=[TargetConfig(IQN, [LunConfig("memory", LUN_SIZE)], power_on_ua=False)],
                              portals=[Portal(host, 0)], transport=transport, transport_options=dict(options))


def _collect(server) -> dict[str, int]:  # type: ignore[no-untyped-def]
    totals: dict[str, int] = {}
    for stats in server.closed_stats + [s.conn.stats() for s in server.sessions.values()]:
        for key, value in stats.items():
            totals[key] = totals.get(key, 0) + int(value)
    return totals


def _target_process(transport: str, options: dict[str, object], pipe) -> None:  # type: ignore[no-untyped-def]
    """Child: serve until told to stop, then send back datamover stats and CPU time."""
    from datamover.target import TargetServer

    async def main() -> None:
        server = TargetServer(_target_config(transport, options))
        portals = await server.start()
        pipe.send((portals[0].host, portals[0].port))
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_reader(pipe.fileno(), stop.set)
        await stop.wait()
        pipe.recv()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        pipe.send((_collect(server), usage.ru_utime + usage.ru_stime))
        await server.stop()

    asyncio.run(main())


@dataclass
class Result:
    name: str
    write_mib_s: list[float] = field(default_factory=list)
    read_mib_s: list[float] = field(default_factory=list)
    copies_per_byte: float = 0.0
    cpu_s_per_gb_initiator: float = 0.0
    cpu_s_per_gb_target: float = 0.0
    provider: str = ""
    error: str = ""


async def _drive(session, seconds: float, write: bool) -> int:  # type: ignore[no-untyped-def]
    """Sequential 1 MiB I/O at QUEUE_DEPTH for ``seconds``; returns bytes moved."""
    buffers = [session.alloc_buffer(BLOCK) for _ in range(QUEUE_DEPTH)]
    for buf in buffers:
        buf[:] = os.urandom(64) * (BLOCK // 64)
    blocks = LUN_SIZE // BLOCK
    deadline = time.perf_counter() + seconds
    moved = 0
    position = 0

    async def worker(index: int) -> None:
        nonlocal moved, position
        buf = buffers[index]
        while time.perf_counter() < deadline:
            lba = (position % blocks) * (BLOCK // 512)
            position += 1
            if write:
                await session.write_blocks(0, lba, buf)
            else:
                await session.read_blocks(0, lba, BLOCK // 512, buffer=buf)
            moved += BLOCK

    await asyncio.gather(*(worker(i) for i in range(QUEUE_DEPTH)))
    return moved


async def _run_case(name: str, seconds: float, rounds: int, result: Result) -> None:
    from datamover.initiator import InitiatorConfig, InitiatorSession
    from datamover.plugin import create_transport
    from datamover.di import Portal

    transport, options = CASES[name]
    server = None
    parent = child = proc = None
    if transport == "loopback":
        from datamover.target import TargetServer

        server = TargetServer(_target_config(transport, options))
        portal = (await server.start())[0]
    else:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_target_process, args=(transport, options, child), daemon=True)
        proc.start()
        host, port = await asyncio.get_running_loop().run_in_executor(None, parent.recv)
        portal = Portal(host, port)
    tr = create_transport(transport, options)
    session = InitiatorSession(tr, portal, InitiatorConfig(), IQN)
    await session.login()
    result.provider = tr.describe()
    start_cpu = time.process_time()
    moved = 0
    for _ in range(rounds):
        for write in (True, False):
            started = time.perf_counter()
            n = await _drive(session, seconds, write)
            elapsed = time.perf_counter() - started
            moved += n
            (result.write_mib_s if write else result.read_mib_s).append(n / elapsed / 2**20)
    initiator_stats = session.conn.stats() if session.conn is not None else {}
    cpu_initiator = time.process_time() - start_cpu
    await session.logout()
    if server is not None:
        target_stats = _collect(server)
        cpu_target = 0.0  # same process: included in the initiator figure
        await server.stop()
    else:
        assert parent is not None and proc is not None
        parent.send("stop")
        target_stats, cpu_target = await asyncio.get_running_loop().run_in_executor(None, parent.recv)
        proc.join(10)
    copies = initiator_stats.get("payload_copies", 0) + target_stats.get("payload_copies", 0)
    gigabytes = moved / 1e9
    result.copies_per_byte = copies / moved if moved else 0.0
    result.cpu_s_per_gb_initiator = cpu_initiator / gigabytes if gigabytes else 0.0
    result.cpu_s_per_gb_target = cpu_target / gigabytes if gigabytes else 0.0


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per workload and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--smoke", action="store_true", help="a fraction of a second per case")
    args = parser.parse_args(argv)
    seconds, rounds = (0.2, 1) if args.smoke else (args.seconds, args.rounds)
    results: list[Result] = []
    for name in args.cases.split(","):
        if name not in CASES:
            parser.error(f"unknown case {name!r} (known: {', '.join(CASES)})")
        result = Result(name)
        try:
            asyncio.run(_run_case(name, seconds, rounds, result))
        except Exception as exc:  # report and go on with the other transports
            result.error = f"{type(exc).__name__}: {exc}"
        results.append(result)
        print(f"  {name}: done", file=sys.stderr)
    print(f"\n1 MiB sequential I/O, QD{QUEUE_DEPTH}, {rounds} round(s) x {seconds:g} s, medians")
    print(f"{'transport':<10} {'write MiB/s':>12} {'read MiB/s':>11} {'copies/B':>9} {'CPU s/GB ini':>13} {'CPU s/GB tgt':>13}")
    for r in results:
        if r.error:
            print(f"{r.name:<10} failed: {r.error}")
            continue
        print(f"{r.name:<10} {_median(r.write_mib_s):12.0f} {_median(r.read_mib_s):11.0f} {r.copies_per_byte:9.2f} "
              f"{r.cpu_s_per_gb_initiator:13.2f} {r.cpu_s_per_gb_target:13.2f}")
    tcp = next((r for r in results if r.name == "tcp" and not r.error), None)
    shm = next((r for r in results if r.name == "iser-shm" and not r.error), None)
    if tcp and shm and _median(tcp.read_mib_s) and _median(tcp.write_mib_s):
        print(f"\niser-shm / tcp: write {_median(shm.write_mib_s) / _median(tcp.write_mib_s):.2f}x, "
              f"read {_median(shm.read_mib_s) / _median(tcp.read_mib_s):.2f}x")
    print("copies/B: payload copies counted by the datamovers of both ends per payload byte "
          "(TCP's kernel send/receive copies are not included; loopback's CPU is both ends)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump([r.__dict__ for r in results], handle, indent=2)
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
