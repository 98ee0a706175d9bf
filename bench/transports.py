"""Our transports against each other, side by side, in one run.

    .venv/bin/python -m bench.transports [--seconds 5] [--rounds 3] [--json FILE]
                                         [--tcp-option KEY=VALUE ...]

For each transport (TCP, TCP with CRC32C header and data digests, iSER on the soft provider
over shared memory and over pyzmq, and loopback in-process) a target runs in its own process
(loopback: in this process) and this process drives, for ``--seconds`` each, 1 MiB
sequential writes and reads at queue depth 4 and 4 KiB random reads at queue depth 32, in
rounds. Reported per transport: median MiB/s and IOPS, payload copies per byte counted
by the datamovers on both sides (user-space copies; TCP also has the kernel's send and
receive copies, which no Python code can count), and CPU seconds per GB of each process.
Digest cost is quoted as tcp-digests / tcp at 4 KiB and 1 MiB.
``--tcp-option`` (a ``[transport.tcp]`` option, TOML value, e.g. ``congestion="cubic"``)
applies to both ends of the TCP cases.
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
import tomllib
from dataclasses import dataclass, field

from bench.host import tcp_congestion_control

IQN = "iqn.2026-11.org.datamover.bench:transports"
BLOCK = 1 << 20
QUEUE_DEPTH = 4
SMALL = 4096
SMALL_QUEUE_DEPTH = 32
LUN_SIZE = 256 << 20

_DIGESTS = {"HeaderDigest": "CRC32C", "DataDigest": "CRC32C"}

CASES: dict[str, tuple[str, dict[str, object]]] = {
    "loopback": ("loopback", {}),
    "tcp": ("tcp", {}),
    "tcp-digests": ("tcp", {}),
    "iser-shm": ("iser", {"provider": "soft", "fabric": "shm"}),
    "iser-zmq": ("iser", {"provider": "soft", "fabric": "zmq"}),
}


def _keys(name: str) -> dict[str, str]:
    """Operational keys both ends prefer for a case (digests for tcp-digests)."""
    return dict(_DIGESTS) if name == "tcp-digests" else {}


def _target_config(transport: str, options: dict[str, object], keys: dict[str, str]):  # type: ignore[no-untyped-def]
    from datamover.di import Portal
    from datamover.target import LunConfig, TargetConfig, TargetServerConfig

    host = "loopback" if transport == "loopback" else "127.0.0.1"
    return TargetServerConfig(targets=[TargetConfig(IQN, [LunConfig("memory", LUN_SIZE)], power_on_ua=False)],
                              portals=[Portal(host, 0)], transport=transport, transport_options=dict(options),
                              keys=dict(keys))


def _collect(server) -> dict[str, int]:  # type: ignore[no-untyped-def]
    totals: dict[str, int] = {}
    for stats in server.closed_stats + [s.conn.stats() for s in server.sessions.values()]:
        for key, value in stats.items():
            totals[key] = totals.get(key, 0) + int(value)
    return totals


def _target_process(transport: str, options: dict[str, object], keys: dict[str, str], pipe) -> None:  # type: ignore[no-untyped-def]
    """Child: serve until told to stop, then send back datamover stats and CPU time."""
    from datamover.target import TargetServer

    async def main() -> None:
        try:
            server = TargetServer(_target_config(transport, options, keys))
            portals = await server.start()
        except Exception as exc:  # the parent reports it as this case's error
            pipe.send(("error", f"target: {exc}"))
            return
        pipe.send((portals[0].host, portals[0].port))
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_reader(pipe.fileno(), stop.set)
        await stop.wait()
        pipe.recv()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        pipe.send((_collect(server), usage.ru_utime + usage.ru_stime))
        await server.stop()

    _run_loop(main())


def _run_loop(coro) -> None:  # type: ignore[no-untyped-def]
    """uvloop when installed (as the CLI does), else asyncio."""
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


@dataclass
class Result:
    name: str
    write_mib_s: list[float] = field(default_factory=list)
    read_mib_s: list[float] = field(default_factory=list)
    read_4k_iops: list[float] = field(default_factory=list)
    negotiated: dict[str, str] = field(default_factory=dict)
    copies_per_byte: float = 0.0
    cpu_s_per_gb_initiator: float = 0.0
    cpu_s_per_gb_target: float = 0.0
    provider: str = ""
    #: transport options both ends ran with
    options: dict[str, object] = field(default_factory=dict)
    #: the kernel's default TCP congestion control during the run (see bench/host.py)
    host_tcp_congestion: str = ""
    error: str = ""


async def _drive(session, seconds: float, write: bool, size: int = BLOCK, depth: int = QUEUE_DEPTH,
                 random_io: bool = False) -> int:  # type: ignore[no-untyped-def]
    """``size``-byte I/O at ``depth`` for ``seconds`` (sequential, or random aligned LBAs);
    returns the number of I/Os."""
    import random

    buffers = [session.alloc_buffer(size) for _ in range(depth)]
    for buf in buffers:
        buf[:] = os.urandom(64) * (size // 64)
    blocks = LUN_SIZE // size
    deadline = time.perf_counter() + seconds
    done = 0
    position = 0
    rng = random.Random(7)

    async def worker(index: int) -> None:
        nonlocal done, position
        buf = buffers[index]
        while time.perf_counter() < deadline:
            slot = rng.randrange(blocks) if random_io else position % blocks
            position += 1
            lba = slot * (size // 512)
            if write:
                await session.write_blocks(0, lba, buf)
            else:
                await session.read_blocks(0, lba, size // 512, buffer=buf)
            done += 1

    await asyncio.gather(*(worker(i) for i in range(depth)))
    return done


async def _run_case(name: str, seconds: float, rounds: int, result: Result,
                    tcp_options: dict[str, object] | None = None) -> None:
    from datamover.initiator import InitiatorConfig, InitiatorSession
    from datamover.plugin import create_transport
    from datamover.di import Portal

    transport, options = CASES[name]
    if transport == "tcp" and tcp_options:
        options = {**options, **tcp_options}
    result.options = dict(options)
    server = None
    parent = child = proc = None
    if transport == "loopback":
        from datamover.target import TargetServer

        server = TargetServer(_target_config(transport, options, _keys(name)))
        portal = (await server.start())[0]
    else:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_target_process, args=(transport, options, _keys(name), child), daemon=True)
        proc.start()
        child.close()  # the child's end is the child's: a child that dies ends parent.recv (EOFError)
        host, port = await asyncio.get_running_loop().run_in_executor(None, parent.recv)
        if host == "error":
            proc.join(10)
            raise RuntimeError(port)
        portal = Portal(host, port)
    tr = create_transport(transport, options)
    session = InitiatorSession(tr, portal, InitiatorConfig(keys=_keys(name)), IQN)
    await session.login()
    result.provider = tr.describe()
    result.negotiated = {k: v for k, v in session.agreed.items() if k in ("HeaderDigest", "DataDigest")}
    start_cpu = time.process_time()
    moved = 0
    for _ in range(rounds):
        for write in (True, False):
            started = time.perf_counter()
            n = await _drive(session, seconds, write)
            elapsed = time.perf_counter() - started
            moved += n * BLOCK
            (result.write_mib_s if write else result.read_mib_s).append(n * BLOCK / elapsed / 2**20)
        started = time.perf_counter()
        n = await _drive(session, seconds, False, SMALL, SMALL_QUEUE_DEPTH, random_io=True)
        elapsed = time.perf_counter() - started
        moved += n * SMALL
        result.read_4k_iops.append(n / elapsed)
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
    parser.add_argument("--tcp-option", action="append", default=[], metavar="KEY=VALUE",
                        help='a [transport.tcp] option for both ends of the TCP cases (TOML value), '
                             'e.g. congestion="cubic"')
    args = parser.parse_args(argv)
    tcp_options: dict[str, object] = {}
    for option in args.tcp_option:
        key, sep, value = option.partition("=")
        try:
            tcp_options[key.strip()] = tomllib.loads(f"v = {value}")["v"] if sep else None
        except tomllib.TOMLDecodeError:
            parser.error(f"--tcp-option {option!r}: the value is not TOML (a string needs quotes)")
        if not sep or not key.strip():
            parser.error(f"--tcp-option {option!r}: expected KEY=VALUE")
    if tcp_options:
        from datamover.plugin import get_registry

        known = get_registry().get("tcp").cls.option_names()
        for key in tcp_options:
            if key not in known:
                parser.error(f"--tcp-option {key}: not a [transport.tcp] option (known: {', '.join(sorted(known))})")
    seconds, rounds = (0.2, 1) if args.smoke else (args.seconds, args.rounds)
    results: list[Result] = []
    for name in args.cases.split(","):
        if name not in CASES:
            parser.error(f"unknown case {name!r} (known: {', '.join(CASES)})")
        result = Result(name, host_tcp_congestion=tcp_congestion_control())
        try:
            _run_loop(_run_case(name, seconds, rounds, result, tcp_options))
        except Exception as exc:  # report and go on with the other transports
            result.error = f"{type(exc).__name__}: {exc}"
        results.append(result)
        print(f"  {name}: done", file=sys.stderr)
    print(f"\n1 MiB sequential I/O at QD{QUEUE_DEPTH}, 4 KiB random reads at QD{SMALL_QUEUE_DEPTH}; "
          f"{rounds} round(s) x {seconds:g} s per workload, medians; "
          f"host TCP congestion control {tcp_congestion_control()}")
    if tcp_options:
        print(f"[transport.tcp] options on both ends: {', '.join(args.tcp_option)}")
    print(f"{'transport':<12} {'write MiB/s':>12} {'read MiB/s':>11} {'4K read IOPS':>13} {'copies/B':>9} "
          f"{'CPU s/GB ini':>13} {'CPU s/GB tgt':>13}")
    for r in results:
        if r.error:
            print(f"{r.name:<12} failed: {r.error}")
            continue
        print(f"{r.name:<12} {_median(r.write_mib_s):12.0f} {_median(r.read_mib_s):11.0f} "
              f"{_median(r.read_4k_iops):13.0f} {r.copies_per_byte:9.2f} "
              f"{r.cpu_s_per_gb_initiator:13.2f} {r.cpu_s_per_gb_target:13.2f}")
    by_name = {r.name: r for r in results if not r.error}
    tcp, shm, dig = by_name.get("tcp"), by_name.get("iser-shm"), by_name.get("tcp-digests")
    if tcp and shm and _median(tcp.read_mib_s) and _median(tcp.write_mib_s):
        print(f"\niser-shm / tcp: write {_median(shm.write_mib_s) / _median(tcp.write_mib_s):.2f}x, "
              f"read {_median(shm.read_mib_s) / _median(tcp.read_mib_s):.2f}x")
    if tcp and dig and _median(tcp.read_mib_s) and _median(tcp.read_4k_iops):
        print(f"tcp-digests / tcp (CRC32C header and data digests {dig.negotiated or 'not negotiated'}): "
              f"1 MiB write {_median(dig.write_mib_s) / _median(tcp.write_mib_s):.2f}x, "
              f"1 MiB read {_median(dig.read_mib_s) / _median(tcp.read_mib_s):.2f}x, "
              f"4 KiB read {_median(dig.read_4k_iops) / _median(tcp.read_4k_iops):.2f}x")
    print("copies/B: payload copies counted by the datamovers of both ends per payload byte "
          "(TCP's kernel send/receive copies are not included; loopback's CPU is both ends)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump([r.__dict__ for r in results], handle, indent=2)
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
