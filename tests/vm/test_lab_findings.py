"""Reproducers, outside the guest, of what the lab's peers exposed (docs/interop.md,
"Findings" 1, 4, 5 and 11). Each was xfail(strict) while its bug stood; the fixes are in, so they
are regression tests now: each fails if the behaviour the Linux peers tripped over returns."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from datamover.negotiation import Negotiator

REPO = Path(__file__).resolve().parents[2]
IQN = "iqn.2026-11.org.datamover.lab:finding"
SERVING = re.compile(r"serving .* on (?P<host>[0-9.]+):(?P<port>\d+)")


def _cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "datamover.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def tcp_target(tmp_path: Path) -> Iterator[str]:
    """``datamover target serve`` over TCP with a 64 MiB memory LUN; yields HOST:PORT."""
    log = (tmp_path / "target.log").open("w+")
    proc = subprocess.Popen([sys.executable, "-m", "datamover.cli", "target", "serve", "--transport", "tcp",
                             "--portal", "127.0.0.1:0", "--iqn", IQN, "--lun", "memory,size=64M"],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(200):
            log.seek(0)
            m = SERVING.search(log.read())
            if m:
                break
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"target exited: {log.read()[-2000:]}")
            time.sleep(0.05)
        else:
            pytest.fail("target did not start")
        yield f"{m['host']}:{m['port']}"
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_cli_write_and_read_larger_than_max_transfer_length(tcp_target: str, tmp_path: Path) -> None:
    """16 MiB through ``datamover write``/``read`` to a LU whose 0xB0 page says 8 MiB."""
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    data = os.urandom(16 << 20)
    src.write_bytes(data)
    common = ["--transport", "tcp", "--portal", tcp_target, "--target", IQN]
    w = _cli("write", *common, "-i", str(src))
    assert w.returncode == 0, w.stderr
    r = _cli("read", *common, "--count", str(len(data) // 512), "-o", str(dst))
    assert r.returncode == 0, r.stderr
    assert dst.read_bytes() == data


#: what open-iscsi 2.1.8 (iface ``iser``, ib_iser) offers in the operational stage, as the
#: kernel initiator sends it (RFC 5046-era key set: no RFC 7145-only keys)
OPEN_ISCSI_ISER_OFFER = [
    ("HeaderDigest", "None"), ("DataDigest", "None"), ("MaxConnections", "1"), ("InitialR2T", "Yes"),
    ("ImmediateData", "Yes"), ("MaxRecvDataSegmentLength", "262144"), ("MaxBurstLength", "16776192"),
    ("FirstBurstLength", "262144"), ("DefaultTime2Wait", "2"), ("DefaultTime2Retain", "0"),
    ("MaxOutstandingR2T", "1"), ("DataPDUInOrder", "Yes"), ("DataSequenceInOrder", "Yes"),
    ("ErrorRecoveryLevel", "0"), ("RDMAExtensions", "Yes"),
]


def _our_iser_target_negotiator() -> "Negotiator":
    """The operational negotiator our target builds for an iSER connection (as target/login.py)."""
    from datamover.di import Role
    from datamover.negotiation import Negotiator
    from datamover.session.params import DEFAULT_OPERATIONAL_KEYS, keys_for_transport
    from datamover_iser.transport import IserTransport

    caps = IserTransport.capabilities()
    local = dict(DEFAULT_OPERATIONAL_KEYS)
    local.update(dict(caps.preferred_keys))
    local = keys_for_transport(local, caps)
    local["AuthMethod"] = "None"
    local.update(dict(caps.forced_keys))
    return Negotiator(Role.TARGET, extra_rows=caps.login_keys, local=local, session_type="Normal",
                      leading=True, forced=dict(caps.forced_keys))


def test_iser_target_sends_no_rfc7145_only_key_the_initiator_did_not_offer() -> None:
    neg = _our_iser_target_negotiator()
    neg.handle([("InitiatorName", "iqn.2026-11.org.datamover.lab:kernel"), ("SessionType", "Normal"),
                ("TargetName", "iqn.2026-11.org.datamover.lab:disk"), ("AuthMethod", "None")], 0)
    sent = neg.handle(list(OPEN_ISCSI_ISER_OFFER), 1) + neg.offers(1)
    offered = {k for k, _ in OPEN_ISCSI_ISER_OFFER}
    volunteered = {k for k, _ in sent if k not in offered}
    rfc7145_only = {"MaxOutstandingUnexpectedPDUs", "iSERHelloRequired", "TaggedBufferForSolicitedDataOnly",
                    "InitiatorRecvDataSegmentLength", "TargetRecvDataSegmentLength", "MaxAHSLength"}
    assert not volunteered & rfc7145_only, f"target volunteered {sorted(volunteered & rfc7145_only)}: {sent}"


async def test_iser_target_rep_announces_the_send_with_invalidate_it_uses() -> None:
    import asyncio

    from datamover.di import Portal
    from datamover_iser.transport import IserTransport
    from datamover_iser.verbs.wr import ConnParam

    transport = IserTransport({"provider": "soft", "fabric": "inproc"})
    accepted: asyncio.Future[object] = asyncio.get_running_loop().create_future()

    async def on_accept(conn: object) -> None:
        accepted.set_result(conn)

    listener = await transport.listen(Portal("192.0.2.2", 0), on_accept)
    try:
        provider = transport._provider().require()
        cid = await provider.resolve("192.0.2.2", listener.portal.port)
        cq = cid.context.create_cq(16)
        qp = cid.create_qp(cq, cq, None)
        # like ib_iser on a device with remote invalidation: 0x80 only (ZBVA not supported)
        reply = await cid.connect(qp, ConnParam(private_data=bytes([0x80, 0, 0, 0])))
        conn = await asyncio.wait_for(accepted, 5)
        target_will_invalidate = bool(getattr(conn, "peer_allows_send_inv"))
        rep_says_no_inv = bool(reply[0] & 0x40)
        assert not (target_will_invalidate and rep_says_no_inv), (
            f"REP private data {reply[:4].hex()} says no Send-with-Invalidate, but the target will use it")
    finally:
        await listener.close()


def _answer_logins_like_tgtd(monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 11: make our target's successful Login Responses say what tgt 1.0.85's iSER
    login says, ExpCmdSN = CmdSN + 1 and MaxCmdSN = CmdSN, while its session still expects
    CmdSN."""
    from datamover.session.serial import sn_add
    from datamover.target.login import TargetLogin

    real = TargetLogin._response

    def tgtd_like(self: TargetLogin, req: object, **kw: object) -> object:
        rsp = real(self, req, **kw)  # type: ignore[arg-type]
        if rsp.status_class == 0:  # type: ignore[attr-defined]
            rsp.exp_cmd_sn = sn_add(self.exp_cmd_sn, 1)  # type: ignore[attr-defined]
            rsp.max_cmd_sn = self.exp_cmd_sn  # type: ignore[attr-defined]
        return rsp

    monkeypatch.setattr(TargetLogin, "_response", tgtd_like)


def _transport_options(transport: str) -> dict[str, object] | None:
    return {"provider": "soft"} if transport == "iser" else None


@pytest.mark.parametrize("transport", ["loopback", "iser"])
async def test_initiator_is_not_stalled_by_a_login_expcmdsn_one_ahead(transport: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 11: after such a login our initiator used ExpCmdSN as the window's lower edge
    and waited for ever (every command against tgtd over iSER timed out). With our target
    answering as tgtd does, the initiator must still run commands and log out."""
    import asyncio

    from tests.conftest import make_session, running_target

    _answer_logins_like_tgtd(monkeypatch)
    options = _transport_options(transport)
    async with running_target(transport, transport_options=options) as (_server, portal):
        session = make_session(transport, portal, transport_options=options)
        await asyncio.wait_for(session.login(), 10)
        inquiry = await asyncio.wait_for(session.execute(0, bytes([0x12, 0, 0, 0, 96, 0]), read_length=96), 10)
        assert inquiry.good and len(inquiry.data) >= 36
        data = bytes(range(256)) * 16
        await asyncio.wait_for(session.write_blocks(0, 8, data), 10)
        assert bytes(await asyncio.wait_for(session.read_blocks(0, 8, len(data) // 512), 10)) == data
        await asyncio.wait_for(session.logout(), 10)


@pytest.mark.parametrize("transport", ["loopback", "iser"])
async def test_discovery_logs_out_when_the_target_never_reopens_the_window(
        transport: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 11, discovery: tgtd's iSER discovery session keeps MaxCmdSN at the login's
    CmdSN, so after SendTargets no further non-immediate command fits; a Logout sent in
    order waited for ever (our `datamover discover` against tgtd timed out). The Logout is
    immediate now, as Linux and libiscsi send it. Our target is made to behave like tgtd."""
    import asyncio

    from datamover.di import Portal
    from datamover.initiator.session import discover
    from datamover.plugin import create_transport
    from datamover.target.session import TargetSession
    from tests.conftest import running_target

    first_sn: dict[int, int] = {}

    def frozen_window(self: TargetSession) -> int:  # MaxCmdSN never passes the first CmdSN
        return first_sn.setdefault(id(self), self.exp_cmd_sn)

    _answer_logins_like_tgtd(monkeypatch)
    monkeypatch.setattr(TargetSession, "max_cmd_sn", property(frozen_window))
    options = _transport_options(transport)
    async with running_target(transport, transport_options=options) as (_server, portal):
        found = await asyncio.wait_for(
            discover(create_transport(transport, options), Portal(portal.host, portal.port)), 15)
    assert found, found
