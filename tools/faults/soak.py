"""Load and soak: many sessions of mixed verified I/O across TCP and iSER (soft provider)
with NOP keepalives both ways, TMF aborts and LUN resets injected; then no I/O may have
failed verification or hung, no task or buffer may be left at the target, and the RSS must
be flat after warm-up.

    python -m tools.faults.soak --seconds 600 --sessions 32 --qd 32

Half the sessions use TCP, half iSER. Aborted or reset commands are reported failed to the
caller (TaskAborted); the oracle then accepts either outcome for those writes only.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

from datamover.di import Portal
from datamover.initiator import InitiatorConfig, InitiatorSession
from datamover.plugin import create_transport
from datamover.target import LunConfig, TargetConfig, TargetServer, TargetServerConfig
from tools.faults.workload import VerifiedWorkload

IQN = "iqn.2026-11.org.datamover.reliability:soak"
REGION = 4096  # blocks (2 MiB) per session


def _memory_mib() -> dict[str, float]:
    """VmRSS and its parts: RssAnon (private memory, where a leak shows) and RssShmem (the
    shm fabric's MRs, resident as their pages are first touched: bounded by the MR sizes)."""
    out = {"VmRSS": 0.0, "RssAnon": 0.0, "RssShmem": 0.0}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in out:
            out[key] = int(line.split()[1]) / 1024
    return out


async def run(seconds: float = 30.0, sessions: int = 32, qd: int = 32, seed: int = 1,
              io_timeout: float = 30.0) -> dict[str, Any]:
    rng = random.Random(seed)
    transports = ["tcp", "iser"]
    per = {t: [i for i in range(sessions) if transports[i % 2] == t] for t in transports}
    servers: dict[str, TargetServer] = {}
    portals: dict[str, Portal] = {}
    for name in transports:
        options = {"provider": "soft"} if name == "iser" else {}
        config = TargetServerConfig(
            targets=[TargetConfig(IQN, [LunConfig("memory", REGION * 512 * max(1, len(per[name])))], power_on_ua=False)],
            portals=[Portal("127.0.0.1", 0)], transport=name, transport_options=options,
            nop_interval=1.0, nop_timeout=10.0, queue_depth=64)
        servers[name] = TargetServer(config)
        portals[name] = (await servers[name].start())[0]
    clients: list[tuple[str, InitiatorSession, VerifiedWorkload]] = []
    for i in range(sessions):
        name = transports[i % 2]
        options = {"provider": "soft"} if name == "iser" else {}
        config = InitiatorConfig(name=f"iqn.2026-11.org.datamover.reliability:soak{i:02d}", nop_interval=1.0,
                                 recovery_backoff=(0.01, 0.5))
        session = InitiatorSession(create_transport(name, options), portals[name], config, IQN)
        await session.login()
        slot = per[name].index(i)
        clients.append((name, session, VerifiedWorkload(slot * REGION, REGION, seed=seed * 100 + i,
                                                        io_timeout=io_timeout, max_blocks=128)))
    injected = {"aborts": 0, "abort_hits": 0, "lun_resets": 0}
    rss: list[tuple[float, float]] = []  # (seconds, VmRSS MiB)
    anon: list[tuple[float, float]] = []  # (seconds, RssAnon MiB): the leak criterion
    shmem: list[float] = []
    started = time.monotonic()
    deadline = started + seconds

    async def inject() -> None:
        next_reset = started + seconds * 0.2
        while time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            name, session, _ = rng.choice(clients)
            victims = [itt for itt, p in session._pending.items() if p.kind == "scsi"]
            if victims:
                injected["aborts"] += 1
                try:
                    if await session.abort_task(rng.choice(victims), 0) == 0:
                        injected["abort_hits"] += 1
                except Exception:
                    pass
            if time.monotonic() >= next_reset:
                next_reset += max(2.0, seconds / 10)
                injected["lun_resets"] += 1
                try:
                    await session.lun_reset(0)
                except Exception:
                    pass

    async def sample() -> None:
        while time.monotonic() < deadline:
            gc.collect()
            mem, now = _memory_mib(), time.monotonic() - started
            rss.append((now, mem["VmRSS"]))
            anon.append((now, mem["RssAnon"]))
            shmem.append(mem["RssShmem"])
            await asyncio.sleep(max(1.0, seconds / 60))

    await asyncio.gather(inject(), sample(), *(w.run_for(s, seconds, qd) for _, s, w in clients))
    # quiesced: every task should be gone at the targets
    await asyncio.sleep(0.5)
    leaks = {name: {hex(s.tsih): {"tasks": len(s.tasks), "held": len(s._held), "read_buffers": len(s._read_buffers)}
                    for s in server.sessions.values() if s.tasks or s._held or s._read_buffers}
             for name, server in servers.items()}
    leaks = {k: v for k, v in leaks.items() if v}
    pending_left = sum(len(s._pending) for _, s, _ in clients)
    for _, session, workload in clients:
        await workload.verify_all(session, chunk=256)
    for _, session, _ in clients:
        await session.logout()
    for server in servers.values():
        await server.stop()
    totals: dict[str, int] = {}
    per_transport: dict[str, dict[str, int]] = {t: {} for t in transports}
    for name, session, workload in clients:
        fig = workload.figures.as_dict()
        for key, value in fig.items():
            if isinstance(value, int):
                totals[key] = totals.get(key, 0) + value
                per_transport[name][key] = per_transport[name].get(key, 0) + value
        totals["recoveries"] = totals.get("recoveries", 0) + session.recoveries
    errors = [e for _, _, w in clients for e in w.figures.errors if not e.startswith("reported failed")][:10]
    failures = sorted({e.split(":")[1].strip() for _, _, w in clients for e in w.figures.errors
                       if e.startswith("reported failed")})
    # warm-up: the first 30 % of a long run; a short (CI) run spends longer reaching its
    # steady pool sizes at 32 x QD32 on a shared 2-core machine, so it skips its first half
    warm_fraction = 0.3 if seconds >= 120 else 0.5
    # private memory only: VmRSS also counts the shm fabric's MR pages as they are first
    # touched (gigabytes at 32 x QD32), which is not a leak and made short runs flaky
    warm = [m for t, m in anon if t >= seconds * warm_fraction]
    growth = (max(warm) - warm[0]) if len(warm) >= 2 else 0.0
    warm_rss = [m for t, m in rss if t >= seconds * warm_fraction]
    clean = (not errors and not leaks and pending_left == 0 and totals.get("corrupted_blocks", 0) == 0
             and totals.get("lost_acked_blocks", 0) == 0 and totals.get("torn_writes", 0) == 0
             and totals.get("hung_ios", 0) == 0 and growth < max(32.0, 0.1 * (warm[0] if warm else 0)))
    return {"seconds": seconds, "sessions": sessions, "qd": qd, "clean": clean, "ios": totals.get("ios", 0),
            "ios_per_second": round(totals.get("ios", 0) / seconds), "totals": totals,
            "per_transport": per_transport, "injected": injected, "failure_kinds": failures,
            "leaks": leaks, "pending_left": pending_left,
            "rss_mib": {"first": round(rss[0][1], 1) if rss else 0,
                        "after_warmup": round(warm_rss[0], 1) if warm_rss else 0,
                        "max_after_warmup": round(max(warm_rss), 1) if warm_rss else 0,
                        "end": round(rss[-1][1], 1) if rss else 0,
                        "shmem_end": round(shmem[-1], 1) if shmem else 0},
            "anon_mib": {"first": round(anon[0][1], 1) if anon else 0,
                         "after_warmup": round(warm[0], 1) if warm else 0,
                         "max_after_warmup": round(max(warm), 1) if warm else 0,
                         "end": round(anon[-1][1], 1) if anon else 0, "growth_after_warmup": round(growth, 1)},
            "errors": errors}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.faults.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--sessions", type=int, default=32)
    parser.add_argument("--qd", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)
    summary = asyncio.run(run(args.seconds, args.sessions, args.qd, args.seed))
    print(json.dumps(summary, indent=2))
    return 0 if summary["clean"] else 1


if __name__ == "__main__":
    sys.exit(main())
