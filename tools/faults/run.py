"""The fault-injection run: mixed verified I/O under random faults, over TCP (through the
fault proxy) or iSER (soft provider fault hook); the initiator recovers by ERL 0 session
reinstatement each time.

    python -m tools.faults.run --transport tcp --ios 1000 --seed 1
    python -m tools.faults.run --transport iser --ios 1000 --seed 1

Prints a JSON summary; exits 1 unless every acknowledged write reads back byte-identical,
no block is corrupted, every failed write is all-or-nothing and no I/O hung.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from typing import Any

from datamover.di import Portal
from datamover.initiator import InitiatorConfig, InitiatorSession
from datamover.plugin import create_transport
from datamover.target import LunConfig, TargetConfig, TargetServer, TargetServerConfig
from tools.faults.plan import FaultPlan
from tools.faults.proxy import FaultProxy
from tools.faults.workload import VerifiedWorkload

TARGET_IQN = "iqn.2026-11.org.datamover.reliability:disk"
INITIATOR_IQN = "iqn.2026-11.org.datamover.reliability:host"
#: small limits so that writes take several R2T bursts and reads several Data-In bursts
KEYS = {"HeaderDigest": "CRC32C", "DataDigest": "CRC32C", "InitialR2T": "Yes", "ImmediateData": "Yes",
        "FirstBurstLength": "16384", "MaxBurstLength": "32768", "MaxRecvDataSegmentLength": "8192",
        "MaxOutstandingR2T": "2"}
LUN_BYTES = 8 << 20


def _target(transport: str, options: dict[str, Any] | None = None) -> TargetServer:
    host = "127.0.0.1"
    config = TargetServerConfig(
        targets=[TargetConfig(TARGET_IQN, [LunConfig("memory", LUN_BYTES)], power_on_ua=False)],
        portals=[Portal(host, 0)], transport=transport, transport_options=dict(options or {}),
        keys=dict(KEYS), login_timeout=3.0)
    return TargetServer(config)


def _initiator(transport: str, portal: Portal, options: dict[str, Any] | None = None) -> InitiatorSession:
    config = InitiatorConfig(name=INITIATOR_IQN, keys=dict(KEYS), login_timeout=3.0, nop_interval=0.5,
                             recovery_attempts=12, recovery_backoff=(0.01, 0.2))
    return InitiatorSession(create_transport(transport, dict(options or {})), portal, config, TARGET_IQN)


async def run(transport: str = "tcp", ios: int = 1000, seed: int = 1, qd: int = 8, rate: float = 0.35,
              spread: int = 60) -> dict[str, Any]:
    """One fault run; returns the summary (``clean`` says whether every check held)."""
    started = time.perf_counter()
    workload = VerifiedWorkload(0, LUN_BYTES // 512, seed=seed, io_timeout=60.0)
    server = _target(transport, {"provider": "soft"} if transport == "iser" else None)
    portals = await server.start()
    faults: dict[str, object]
    try:
        if transport == "tcp":
            plan = FaultPlan.random(seed, rate=rate, spread=spread)
            proxy = FaultProxy((portals[0].host, portals[0].port), plan)
            await proxy.start()
            session = _initiator("tcp", Portal("127.0.0.1", proxy.port))
            plan.enabled = False  # a clean first login: faults start with the workload
            await session.login()
            plan.enabled = True
            try:
                await workload.run(session, ios, qd)
                plan.enabled = False
                await workload.verify_all(session)
            finally:
                await session.logout()
                await proxy.stop()
            faults = proxy.summary()
        elif transport == "iser":
            from tools.faults.soft_hook import SoftFaultHook

            session = _initiator("iser", portals[0], {"provider": "soft"})
            await session.login()
            hook = SoftFaultHook(seed, rate=rate / 100)
            providers = [session.transport._provider().require(), server.transport._provider().require()]  # type: ignore[attr-defined]
            for provider in providers:
                provider.fault_hook = hook  # type: ignore[attr-defined]
            try:
                await workload.run(session, ios, qd)
                hook.enabled = False
                await workload.verify_all(session)
            finally:
                await session.logout()
                for provider in providers:
                    provider.fault_hook = None  # type: ignore[attr-defined]
            faults = hook.summary()
        else:
            raise ValueError(f"transport {transport!r}: tcp or iser")
    finally:
        await server.stop()
    fig = workload.figures
    return {"transport": transport, "seed": seed, "ios": ios, "qd": qd, "clean": fig.clean,
            "recoveries": session.recoveries, "faults": faults, "figures": fig.as_dict(),
            "seconds": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.faults.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", choices=("tcp", "iser"), default="tcp")
    parser.add_argument("--ios", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--qd", type=int, default=8)
    parser.add_argument("--rate", type=float, default=0.35, help="chance of a fault per connection (TCP); x100 per message on iSER")
    parser.add_argument("--spread", type=int, default=60, help="random faults fire within this many PDUs")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR)
    summary = asyncio.run(run(args.transport, args.ios, args.seed, args.qd, args.rate, args.spread))
    print(json.dumps(summary, indent=2))
    return 0 if summary["clean"] else 1


if __name__ == "__main__":
    sys.exit(main())
