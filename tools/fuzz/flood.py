"""The live-target PDU flood: generated hostile PDUs against a target *process*, while a
well-behaved session does verified I/O beside them.

    python -m tools.fuzz.flood --pdus 1000000

Hostile connections log in properly, then write generated PDUs straight onto the socket:
random headers with random opcodes and fields, real PDUs with bytes flipped, commands with
random CDBs, out-of-window sequence numbers, and now and then one that breaks framing (the
target drops that connection; the flooder reconnects). Checks: the target process never
dies, the healthy session's I/O all verify and none takes longer than ``--max-latency``, and
the target's RSS stays under ``--max-rss-mib``. Prints a JSON summary; exits 1 on any miss.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import json
import random
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from datamover.di import DatamoverConnection, Portal
from datamover.initiator import InitiatorConfig, InitiatorSession
from datamover.initiator.login import initiator_login
from datamover.pdu import (DataOut, LogoutRequest, NopOut, Pdu, ScsiCommand, SnackRequest, TextRequest,
                           TmfRequest, encode_bytes, encode_lun)
from datamover.plugin import create_transport

IQN = "iqn.2026-11.org.datamover.reliability:flood"
LUN_BYTES = 16 << 20


class _Sink:
    """Up-calls of a hostile connection: count what comes back, note the end."""

    def __init__(self) -> None:
        self.received = 0
        self.ended = asyncio.Event()

    def control_notify(self, conn: DatamoverConnection, pdu: Pdu) -> None:
        self.received += 1

    def connection_terminate_notify(self, conn: DatamoverConnection) -> None:
        self.ended.set()

    def data_completion_notify(self, conn: DatamoverConnection, itt: int, sn: int) -> None: ...
    def data_ack_notify(self, conn: DatamoverConnection, itt: int, data_sn: int) -> None: ...
    def sn_update(self, conn: DatamoverConnection, *args: object) -> None: ...
    def protocol_error_notify(self, conn: DatamoverConnection, error: Exception, header: bytes = b"") -> None:
        self.received += 1


class Generator:
    """Seeded hostile PDUs as wire bytes (no digests)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.cmd_sn = 1

    def next(self) -> tuple[bytes, bool]:
        """(bytes, breaks_framing)."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.0005:
            bhs = bytearray(rng.randbytes(48))
            bhs[4] = 0
            bhs[5:8] = (0xFFFFFF).to_bytes(3, "big")  # far above any receive limit
            return bytes(bhs), True
        if roll < 0.35:
            return self._random_header(), False
        pdu = self._real_pdu()
        raw = bytearray(encode_bytes(pdu))
        if roll < 0.7:
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(len(raw))
                if 4 <= i < 8:
                    continue  # keep the lengths: framing survives, the content does not
                raw[i] = rng.randrange(256)
        return bytes(raw), False

    def _random_header(self) -> bytes:
        rng = self.rng
        bhs = bytearray(rng.randbytes(48))
        bhs[0] = rng.choice([0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x10, 0x1C, 0x21, 0x3F, 0x07]) | (bhs[0] & 0x40)
        bhs[4] = rng.choice([0, 0, 0, 0, 1, 3])
        dsl = rng.choice([0, 0, 1, 7, 48, 512])
        bhs[5:8] = dsl.to_bytes(3, "big")
        if rng.random() < 0.5:
            bhs[24:28] = self._sn()
        return bytes(bhs) + rng.randbytes(bhs[4] * 4 + dsl) + bytes(-dsl % 4)

    def _sn(self) -> bytes:
        self.cmd_sn = (self.cmd_sn + 1) & 0xFFFFFFFF
        return self.cmd_sn.to_bytes(4, "big")

    def _real_pdu(self) -> Pdu:
        rng = self.rng
        itt = rng.randrange(1, 1 << 32)
        sn = int.from_bytes(self._sn(), "big") if rng.random() < 0.8 else rng.randrange(1 << 32)
        kind = rng.randrange(8)
        if kind <= 2:
            cdb = bytes([rng.choice([0x00, 0x12, 0x25, 0x28, 0x2A, 0x88, 0x8A, 0x35, 0xA0, 0x9E, 0x1A, 0x5A,
                                     rng.randrange(256)])]) + rng.randbytes(15)
            read, write = rng.random() < 0.5, rng.random() < 0.3
            edtl = rng.choice([0, 512, 4096, 65536, rng.randrange(1 << 32)])
            data = rng.randbytes(rng.choice([0, 0, 512])) if write else b""
            return ScsiCommand(itt=itt, final=rng.random() < 0.9, read=read, write=write, attr=rng.randrange(8),
                               lun=encode_lun(rng.choice([0, 0, 1, 300])), expected_data_transfer_length=edtl,
                               cmd_sn=sn, exp_stat_sn=0, cdb=cdb, data=data)
        if kind == 3:
            return NopOut(itt=itt, immediate=rng.random() < 0.5, cmd_sn=sn, data=rng.randbytes(rng.choice([0, 16])))
        if kind == 4:
            return DataOut(itt=itt, final=rng.random() < 0.5, ttt=rng.choice([0xFFFFFFFF, rng.randrange(1 << 32)]),
                           data_sn=rng.randrange(4), buffer_offset=rng.choice([0, 512, rng.randrange(1 << 32)]),
                           data=rng.randbytes(rng.choice([0, 512])))
        if kind == 5:
            return TmfRequest(itt=itt, immediate=True, function=rng.choice([1, 2, 3, 4, 5, 8, 14, rng.randrange(128)]),
                              lun=encode_lun(rng.choice([0, 5])), referenced_task_tag=rng.randrange(1 << 32),
                              cmd_sn=sn, ref_cmd_sn=rng.randrange(1 << 32))
        if kind == 6:
            text = rng.choice([b"SendTargets=All\0", b"X=" + rng.randbytes(20) + b"\0", rng.randbytes(30)])
            return TextRequest(itt=itt, final=rng.random() < 0.8, cont=rng.random() < 0.2,
                               ttt=rng.choice([0xFFFFFFFF, rng.randrange(1 << 32)]), cmd_sn=sn, data=text)
        if rng.random() < 0.05:
            return LogoutRequest(itt=itt, reason=rng.randrange(4), cid=rng.randrange(3), cmd_sn=sn)
        return SnackRequest(itt=itt, type=rng.randrange(4), ttt=rng.randrange(1 << 32),
                            beg_run=rng.randrange(8), run_length=rng.randrange(8))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _start_target(port: int) -> subprocess.Popen[bytes]:
    # The flooding initiators are not trusted with resets of the whole target (a TARGET
    # WARM/COLD RESET aborts or logs out every other initiator by definition): they get
    # "authorization failed". LUN resets stay allowed: they hit the LUNs the flooders
    # address (0, 1, 5); the healthy session works on LUN 2, which only it uses, as a
    # tenant of a shared target would.
    import tempfile

    fd, config = tempfile.mkstemp(suffix=".toml", prefix="flood-target-")
    with os.fdopen(fd, "w") as handle:
        handle.write(f'[target]\ntransport = "tcp"\nportals = ["127.0.0.1:{port}"]\niqn = "{IQN}"\n'
                     f'luns = ["memory,size={LUN_BYTES}", "memory,size=1M", "memory,size={LUN_BYTES}"]\n'
                     f'allow_target_reset = false\n')
    proc = subprocess.Popen([sys.executable, "-m", "datamover.cli", "target", "serve", "-c", config],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(400):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("target exited at start")
            await asyncio.sleep(0.05)
    raise RuntimeError("target did not start")


#: the LUN of the healthy session: no flooder addresses it
HEALTHY_LUN = 2


async def run(pdus: int = 20_000, seed: int = 1, connections: int = 4, max_latency: float = 5.0,
              max_rss_mib: float = 512.0) -> dict[str, Any]:
    port = _free_port()
    proc = await _start_target(port)
    portal = Portal("127.0.0.1", port)
    transport = create_transport("tcp")
    sent = 0
    reconnects = 0
    answers = 0
    started = time.perf_counter()
    rss: list[float] = [_rss_mib(proc.pid)]
    health = {"ios": 0, "failures": 0, "max_latency": 0.0}
    stop = asyncio.Event()
    stalls = [0]

    async def hostile(index: int) -> None:
        nonlocal sent, reconnects, answers
        gen = Generator(seed * 1000 + index)
        while not stop.is_set():
            conn = await transport.connect(portal, timeout=5.0)
            config = InitiatorConfig(name=f"iqn.2026-11.org.datamover.reliability:flood{index}")
            login = await initiator_login(conn, config, transport.capabilities(), target_name=IQN, cmd_sn=1, itt=1)
            conn.notice_key_values(login.agreed)
            sink = _Sink()
            await conn.enable_datamover(sink)  # type: ignore[arg-type]
            gen.cmd_sn = login.exp_cmd_sn
            wire = conn._transport  # type: ignore[attr-defined]  # raw bytes: the point of a flood
            while not stop.is_set() and not sink.ended.is_set() and not wire.is_closing():
                batch = []
                for _ in range(64):
                    raw, breaks = gen.next()
                    batch.append(raw)
                    sent += 1
                    if breaks:
                        break
                wire.write(b"".join(batch))
                if sent >= pdus:
                    stop.set()
                waited = 0.0
                while wire.get_write_buffer_size() > 256 * 1024 and not wire.is_closing() and not stop.is_set():
                    await asyncio.sleep(0.005)
                    waited += 0.005
                    if waited > 10.0:
                        # the target stopped reading this connection: note it, start afresh
                        stalls[0] += 1
                        wire.abort()
                        break
                await asyncio.sleep(0)
                if breaks:
                    try:
                        await asyncio.wait_for(sink.ended.wait(), 10)
                    except asyncio.TimeoutError:
                        stalls[0] += 1  # a framing breaker the target did not drop in 10 s
            answers += sink.received
            conn.connection_terminate()
            reconnects += 1

    async def healthy() -> None:
        rng = random.Random(seed)
        session = InitiatorSession(transport, portal, InitiatorConfig(name="iqn.2026-11.org.datamover.reliability:good"),
                                   IQN, recover=False)
        await session.login()
        lba = 0
        while not stop.is_set():
            data = rng.randbytes(4096)
            t0 = time.perf_counter()
            try:
                await asyncio.wait_for(session.write_blocks(HEALTHY_LUN, lba, data), 30)
                got = await asyncio.wait_for(session.read_blocks(HEALTHY_LUN, lba, 8), 30)
                if bytes(got) != data:
                    health["failures"] += 1
            except Exception as exc:
                health["failures"] += 1
                health.setdefault("first_failure", repr(exc)[:200])  # type: ignore[arg-type]
            health["max_latency"] = max(health["max_latency"], time.perf_counter() - t0)
            health["ios"] += 2
            lba = (lba + 8) % (LUN_BYTES // 512 - 8)
            await asyncio.sleep(0.02)
        await session.logout()

    async def monitor() -> None:
        while not stop.is_set():
            await asyncio.sleep(1.0)
            if proc.poll() is not None:
                stop.set()
                return
            rss.append(_rss_mib(proc.pid))

    async def guarded(index: int) -> None:
        # a worker that dies must end the run (and be reported), not leave the others
        # waiting for a stop that never comes
        try:
            await hostile(index)
        finally:
            stop.set()

    try:
        results = await asyncio.gather(monitor(), healthy(), *(guarded(i) for i in range(connections)),
                                       return_exceptions=True)
    finally:
        alive = proc.poll() is None
        if alive:
            rss.append(_rss_mib(proc.pid))
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    errors = [repr(r)[:200] for r in results if isinstance(r, BaseException)]
    seconds = time.perf_counter() - started
    clean = (alive and not errors and health["failures"] == 0 and health["max_latency"] <= max_latency
             and max(rss) <= max_rss_mib)
    return {"pdus": sent, "seconds": round(seconds, 1), "pdus_per_second": round(sent / seconds),
            "connections": connections, "reconnects": reconnects, "stalled_connections": stalls[0], "answers": answers, "target_alive": alive,
            "rss_mib": {"start": round(rss[0], 1), "peak": round(max(rss), 1), "end": round(rss[-1], 1)},
            "healthy_session": {k: round(v, 3) if isinstance(v, float) else v for k, v in health.items()},
            "errors": errors, "clean": clean}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.fuzz.flood", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pdus", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--max-latency", type=float, default=5.0)
    parser.add_argument("--max-rss-mib", type=float, default=512.0)
    args = parser.parse_args(argv)
    summary = asyncio.run(run(args.pdus, args.seed, args.connections, args.max_latency, args.max_rss_mib))
    print(json.dumps(summary, indent=2))
    return 0 if summary["clean"] else 1


if __name__ == "__main__":
    sys.exit(main())
