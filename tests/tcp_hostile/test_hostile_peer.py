"""A hostile peer against a running TCP target process (issue: iSCSI over TCP, "Bad input").

Each bad connection gets a Reject, a login failure status, or a close; the target process
stays up, its memory stays bounded, and a concurrent healthy session finishes its verified
I/O untouched.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from datamover.di import Portal
from datamover.initiator import InitiatorConfig, InitiatorSession
from datamover.pdu import (
    IncompletePdu,
    LoginRequest,
    LoginResponse,
    NopOut,
    Reject,
    ScsiCommand,
    decode_pdu,
    encode_bytes,
    encode_lun,
)
from datamover.pdu.digest import crc32c
from datamover.pdu.text import encode_text
from datamover.plugin import create_transport

IQN = "iqn.2026-11.org.datamover.test:hostile"
INITIATOR = "iqn.2026-11.org.datamover.test:attacker"


def _serve(extra: str = "") -> Iterator[tuple[Portal, int]]:
    config = f"""
[target]
transport = "tcp"
portals = ["127.0.0.1:0"]
iqn = "{IQN}"
luns = ["memory,size=64M"]
power_on_ua = false
login_timeout = 5.0
{extra}
"""
    import tempfile

    handle_fd, path = tempfile.mkstemp(suffix=".toml", prefix="hostile-")
    with os.fdopen(handle_fd, "w") as handle:
        handle.write(config)
    proc = subprocess.Popen([sys.executable, "-m", "datamover.cli", "target", "serve", "-c", path],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r" on ([0-9.]+):(\d+)", line)
    assert match, f"target did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}"
    try:
        yield Portal(match.group(1), int(match.group(2))), proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        os.unlink(path)


@pytest.fixture(scope="module")
def target() -> Iterator[tuple[Portal, int]]:
    """A TCP target in its own process."""
    yield from _serve()


@pytest.fixture(scope="module")
def chap_target() -> Iterator[tuple[Portal, int]]:
    yield from _serve('chap = "alice:secret-of-alice-1"')


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Raw:
    """A raw TCP client that speaks PDUs through our codec."""

    def __init__(self, portal: Portal) -> None:
        self.sock = socket.create_connection((portal.host, portal.port), timeout=5)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_pdu(self, timeout: float = 5.0):  # type: ignore[no-untyped-def]
        """The next PDU, or None if the target closed the connection."""
        self.sock.settimeout(timeout)
        while True:
            try:
                pdu, used = decode_pdu(self.buf)
                self.buf = self.buf[used:]
                return pdu
            except IncompletePdu:
                pass
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return None
            if not chunk:
                return None
            self.buf += chunk

    def closed(self, timeout: float = 5.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def login(self, keys: dict[str, str] | None = None) -> LoginResponse:
        pairs = [("InitiatorName", INITIATOR), ("SessionType", "Normal"), ("TargetName", IQN),
                 ("AuthMethod", "None")]
        self.send(encode_bytes(LoginRequest(itt=1, transit=True, csg=0, nsg=1, isid=0x80000000ABCD, cmd_sn=1,
                                            data=encode_text(pairs))))
        first = self.recv_pdu()
        assert isinstance(first, LoginResponse) and first.status_class == 0, first
        ops = [("HeaderDigest", "None"), ("DataDigest", "None"), ("MaxRecvDataSegmentLength", "8192"),
               *(keys or {}).items()]
        self.send(encode_bytes(LoginRequest(itt=1, transit=True, csg=1, nsg=3, isid=0x80000000ABCD, cmd_sn=1,
                                            exp_stat_sn=(first.stat_sn + 1) & 0xFFFFFFFF, data=encode_text(ops))))
        final = self.recv_pdu()
        assert isinstance(final, LoginResponse) and final.status_class == 0 and final.nsg == 3, final
        self.exp_stat_sn = (final.stat_sn + 1) & 0xFFFFFFFF
        self.cmd_sn = final.exp_cmd_sn
        return final

    def close(self) -> None:
        self.sock.close()


def _hostile_cases(portal: Portal) -> list[str]:
    """Run every hostile case; returns a description of what each got."""
    outcomes: list[str] = []

    # 1. an unknown opcode in full feature phase -> Reject
    raw = Raw(portal)
    raw.login()
    bhs = bytearray(48)
    bhs[0] = 0x1D
    raw.send(bytes(bhs))
    reply = raw.recv_pdu()
    assert isinstance(reply, Reject) and reply.reason == 0x05, reply
    outcomes.append("unknown opcode: Reject 0x05")
    raw.close()

    # 2. a data segment beyond the negotiated MaxRecvDataSegmentLength -> Reject or close
    raw = Raw(portal)
    final = raw.login()
    nop = NopOut(itt=3, immediate=True, cmd_sn=raw.cmd_sn, exp_stat_sn=raw.exp_stat_sn, data=bytes(300_000))
    try:
        raw.send(encode_bytes(nop))
    except (BrokenPipeError, ConnectionResetError):
        pass
    reply = raw.recv_pdu()
    assert reply is None or isinstance(reply, Reject), reply
    outcomes.append(f"oversized data segment: {'close' if reply is None else 'Reject'}")
    raw.close()

    # 3. an AHS longer than anything sane (TotalAHSLength 255 words) -> Reject or close
    raw = Raw(portal)
    raw.login()
    header = bytearray(encode_bytes(ScsiCommand(itt=4, final=True, lun=encode_lun(0), cmd_sn=raw.cmd_sn,
                                                exp_stat_sn=raw.exp_stat_sn, cdb=bytes(6)))[:48])
    header[4] = 255  # TotalAHSLength: 1020 bytes of AHS follow
    try:
        raw.send(bytes(header) + bytes(1020))
    except (BrokenPipeError, ConnectionResetError):
        pass
    reply = raw.recv_pdu()
    assert reply is None or isinstance(reply, Reject), reply
    outcomes.append(f"oversized AHS: {'close' if reply is None else 'Reject'}")
    raw.close()

    # 4. a Login PDU in full feature phase -> Reject (protocol error)
    raw = Raw(portal)
    raw.login()
    raw.send(encode_bytes(LoginRequest(itt=9, transit=True, csg=1, nsg=3, isid=1, cmd_sn=raw.cmd_sn)))
    reply = raw.recv_pdu()
    assert isinstance(reply, Reject) and reply.reason == 0x04, reply
    outcomes.append("login in full feature phase: Reject 0x04")
    raw.close()

    # 5. login text with an item without '=' -> login failure class 2
    raw = Raw(portal)
    raw.send(encode_bytes(LoginRequest(itt=1, transit=True, csg=0, nsg=1, isid=0x800000000001, cmd_sn=1,
                                       data=b"InitiatorName\x00")))
    reply = raw.recv_pdu()
    assert isinstance(reply, LoginResponse) and reply.status_class == 2, reply
    outcomes.append(f"key without '=': login status {reply.status_class:#x}/{reply.status_detail:#x}")
    raw.close()

    # 6. a 64 KiB value -> login failure (or close: above the login data limit)
    raw = Raw(portal)
    big = encode_text([("InitiatorName", INITIATOR), ("X-com.example.big", "a" * 65536)])
    try:
        raw.send(encode_bytes(LoginRequest(itt=1, transit=True, csg=0, nsg=1, isid=0x800000000002, cmd_sn=1,
                                           data=big)))
    except (BrokenPipeError, ConnectionResetError):
        pass
    reply = raw.recv_pdu()
    assert reply is None or (isinstance(reply, LoginResponse) and reply.status_class == 2), reply
    outcomes.append(f"64 KiB value: {'close' if reply is None else 'login status 0x2'}")
    raw.close()

    # 7. digests that do not match: negotiate CRC32C, then send a corrupted header digest
    raw = Raw(portal)
    pairs = [("InitiatorName", INITIATOR), ("SessionType", "Normal"), ("TargetName", IQN), ("AuthMethod", "None")]
    raw.send(encode_bytes(LoginRequest(itt=1, transit=True, csg=0, nsg=1, isid=0x800000000003, cmd_sn=1,
                                       data=encode_text(pairs))))
    first = raw.recv_pdu()
    raw.send(encode_bytes(LoginRequest(itt=1, transit=True, csg=1, nsg=3, isid=0x800000000003, cmd_sn=1,
                                       exp_stat_sn=(first.stat_sn + 1) & 0xFFFFFFFF,
                                       data=encode_text([("HeaderDigest", "CRC32C"), ("DataDigest", "CRC32C")]))))
    final = raw.recv_pdu()
    assert isinstance(final, LoginResponse) and final.nsg == 3
    header = encode_bytes(NopOut(itt=5, immediate=True, cmd_sn=final.exp_cmd_sn, exp_stat_sn=final.stat_sn + 1))[:48]
    bad_digest = struct.pack("<I", crc32c(header) ^ 0xFFFFFFFF)
    raw.send(header + bad_digest)
    assert raw.closed(), "a header digest error must end the connection (ERL 0)"
    outcomes.append("bad header digest: close")
    raw.close()

    # 8. a half-sent PDU followed by a close must not disturb anything
    raw = Raw(portal)
    raw.login()
    whole = encode_bytes(NopOut(itt=6, immediate=True, cmd_sn=raw.cmd_sn, exp_stat_sn=raw.exp_stat_sn,
                                data=bytes(1000)))
    raw.send(whole[:500])
    raw.close()
    outcomes.append("half-sent PDU then close: connection dropped")

    # 9. a BHS cut short then close, during login
    raw = Raw(portal)
    raw.send(bytes(20))
    raw.close()
    outcomes.append("truncated BHS then close: connection dropped")
    return outcomes


async def _healthy_io(portal: Portal, seconds: float) -> int:
    session = InitiatorSession(create_transport("tcp"), portal, InitiatorConfig(name="iqn.2026-11.org.datamover.test:good"), IQN)
    await session.login()
    rng = random.Random(8)
    done = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        data = rng.randbytes(rng.choice((512, 4096, 65536)))
        lba = rng.randrange(0, 60000)
        await session.write_blocks(0, lba, data)
        assert bytes(await session.read_blocks(0, lba, len(data) // 512)) == data
        done += 1
    await session.logout()
    return done


def test_hostile_peer_gets_rfc_answers_and_healthy_session_is_untouched(target: tuple[Portal, int]) -> None:
    portal, pid = target
    before = rss_kib(pid)

    async def main() -> tuple[int, list[str]]:
        healthy = asyncio.create_task(_healthy_io(portal, 4.0))
        outcomes = await asyncio.get_running_loop().run_in_executor(None, _hostile_cases, portal)
        # and once more, to see that nothing accumulates
        outcomes += await asyncio.get_running_loop().run_in_executor(None, _hostile_cases, portal)
        return await healthy, outcomes

    verified, outcomes = asyncio.run(main())
    assert verified > 0
    assert os.path.exists(f"/proc/{pid}"), "the target process died"
    after = rss_kib(pid)
    assert after - before < 64 * 1024, f"target RSS grew from {before} to {after} KiB"
    assert len(outcomes) == 18


@pytest.mark.parametrize("response", ["0x" + "ab" * 3, "0x" + "ab" * 40, "0b" + "q" * 8, "zz"])
def test_chap_response_of_the_wrong_size_fails_login(chap_target: tuple[Portal, int], response: str) -> None:
    """RFC 7143 12.1.3: a CHAP_R that is not the algorithm's digest size -> 0x0201 or 0x0200."""
    portal, pid = chap_target
    raw = Raw(portal)
    isid = 0x800000000099
    pairs = [("InitiatorName", INITIATOR), ("SessionType", "Normal"), ("TargetName", IQN), ("AuthMethod", "CHAP")]
    raw.send(encode_bytes(LoginRequest(itt=1, csg=0, nsg=0, isid=isid, cmd_sn=1, data=encode_text(pairs))))
    first = raw.recv_pdu()
    assert isinstance(first, LoginResponse) and first.status_class == 0
    raw.send(encode_bytes(LoginRequest(itt=1, csg=0, nsg=0, isid=isid, cmd_sn=1, exp_stat_sn=first.stat_sn + 1,
                                       data=encode_text([("CHAP_A", "5")]))))
    challenge = raw.recv_pdu()
    assert isinstance(challenge, LoginResponse) and challenge.status_class == 0
    raw.send(encode_bytes(LoginRequest(itt=1, transit=True, csg=0, nsg=1, isid=isid, cmd_sn=1,
                                       exp_stat_sn=challenge.stat_sn + 1,
                                       data=encode_text([("CHAP_N", "alice"), ("CHAP_R", response)]))))
    reply = raw.recv_pdu()
    assert isinstance(reply, LoginResponse) and reply.status_class == 2, reply
    assert raw.closed()
    raw.close()
    assert os.path.exists(f"/proc/{pid}")
