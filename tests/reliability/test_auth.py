"""Authentication and authorisation against a live TCP target (issue 10): every wrong
credential, skipped stage, replayed or reflected challenge and ACL miss is refused with the
right Login status, gets no session (so no LUN), is logged, and no secret ever reaches a log
line or an error message."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import pytest

from datamover.auth import TargetChap, chap_response
from datamover.di import DatamoverConnection, Portal
from datamover.initiator import InitiatorConfig, InitiatorSession, discover
from datamover.pdu import LoginRequest, LoginResponse, LoginStatus
from datamover.pdu.text import decode_text, encode_text, format_hex, parse_binary
from datamover.plugin import create_transport
from datamover.session.errors import LoginError
from datamover.target import LunConfig, TargetConfig, TargetServer, TargetServerConfig
from datamover.target.config import ChapConfig

IQN = "iqn.2026-11.org.datamover.reliability:secure"
OPEN_IQN = "iqn.2026-11.org.datamover.reliability:open"
HOST = "iqn.2026-11.org.datamover.reliability:host"
STRANGER = "iqn.2026-11.org.datamover.reliability:stranger"
SECRET = b"Alice-Secret-0xC0FFEE"
TARGET_SECRET = b"Target-Secret-0xBEEF99"
DISCOVERY_SECRET = b"Discovery-Secret-0x5EED"
ALL_SECRETS = (SECRET, TARGET_SECRET, DISCOVERY_SECRET, b"Wrong-Secret-0xBAD0000")


@pytest.fixture(autouse=True)
def _fresh_replay_cache() -> None:
    TargetChap.recent.clear()


@contextlib.asynccontextmanager
async def secured_target(*, discovery_chap: bool = False) -> AsyncIterator[tuple[TargetServer, Portal]]:
    chap = ChapConfig("alice", SECRET, "disk", TARGET_SECRET)
    targets = [TargetConfig(IQN, [LunConfig("memory", 1 << 20)], acl=[HOST], chap=chap, power_on_ua=False),
               TargetConfig(OPEN_IQN, [LunConfig("memory", 1 << 20)], acl=[STRANGER], power_on_ua=False)]
    config = TargetServerConfig(targets=targets, portals=[Portal("127.0.0.1", 0)], transport="tcp",
                                discovery_chap=ChapConfig("finder", DISCOVERY_SECRET) if discovery_chap else None)
    server = TargetServer(config)
    portals = await server.start()
    try:
        yield server, portals[0]
    finally:
        await server.stop()


def session(portal: Portal, name: str = HOST, target: str = IQN, **chap: object) -> InitiatorSession:
    config = InitiatorConfig(name=name, login_timeout=3.0, **chap)  # type: ignore[arg-type]
    return InitiatorSession(create_transport("tcp"), portal, config, target, recover=False)


async def refused(portal: Portal, server: TargetServer, **kwargs: object) -> int:
    s = session(portal, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(LoginError) as info:
        await s.login()
    assert not server.sessions, "a refused login left a session (and so a LUN) behind"
    for secret in ALL_SECRETS:
        assert secret.decode() not in str(info.value)
    return info.value.status


# ------------------------------------------------------------------ raw login helpers
async def raw_connect(portal: Portal) -> DatamoverConnection:
    return await create_transport("tcp").connect(portal, timeout=3.0)


async def exchange(conn: DatamoverConnection, pairs: list[tuple[str, str]], *, csg: int = 0, nsg: int = 1,
                   transit: bool = False, isid: int = 0x80_0000_1234) -> tuple[LoginResponse, dict[str, str]]:
    await conn.login_send(LoginRequest(itt=1, transit=transit, csg=csg, nsg=nsg if transit else 0, isid=isid,
                                       cmd_sn=1, exp_stat_sn=0, data=encode_text(pairs)))
    rsp = await conn.login_recv(timeout=3.0)
    assert isinstance(rsp, LoginResponse)
    return rsp, dict(decode_text(rsp.data)) if rsp.data else {}


def status(rsp: LoginResponse) -> int:
    return rsp.status_class << 8 | rsp.status_detail


DECLARE = [("InitiatorName", HOST), ("SessionType", "Normal"), ("TargetName", IQN)]


async def chap_challenge(conn: DatamoverConnection) -> tuple[int, bytes]:
    rsp, keys = await exchange(conn, DECLARE + [("AuthMethod", "CHAP")])
    assert status(rsp) == 0 and keys.get("AuthMethod") == "CHAP", keys
    rsp, keys = await exchange(conn, [("CHAP_A", "5")])
    assert status(rsp) == 0, keys
    return int(keys["CHAP_I"]), parse_binary(keys["CHAP_C"])


# ------------------------------------------------------------------ the cases
async def test_good_mutual_login_gets_its_lun(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with secured_target() as (server, portal):
        s = session(portal, chap_user="alice", chap_secret=SECRET, mutual_user="disk", mutual_secret=TARGET_SECRET)
        await s.login()
        assert (await s.test_unit_ready()).good
        await s.logout()
    _no_secret_logged(caplog)


@pytest.mark.parametrize("user,secret", [("alice", b"Wrong-Secret-0xBAD0000"), ("mallory", SECRET)],
                         ids=["wrong-secret", "wrong-user"])
async def test_wrong_credentials(user: str, secret: bytes, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with secured_target() as (server, portal):
        code = await refused(portal, server, chap_user=user, chap_secret=secret)
    assert code == LoginStatus.AUTHENTICATION_FAILURE
    assert any("refused" in r.getMessage() and "0x0201" in r.getMessage() for r in caplog.records)
    _no_secret_logged(caplog)


async def test_no_credentials_when_chap_required(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with secured_target() as (server, portal):
        assert await refused(portal, server) == LoginStatus.AUTHENTICATION_FAILURE
    _no_secret_logged(caplog)


async def test_skipping_the_security_stage(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with secured_target() as (server, portal):
        conn = await raw_connect(portal)
        try:
            rsp, _ = await exchange(conn, DECLARE + [("HeaderDigest", "None")], csg=1, nsg=3, transit=True)
        finally:
            conn.connection_terminate()
        assert status(rsp) == LoginStatus.AUTHENTICATION_FAILURE and rsp.tsih == 0
        assert not server.sessions
    assert any("security stage was skipped" in r.getMessage() for r in caplog.records)


async def test_reflected_challenge_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    """Mutual CHAP with the target's own challenge sent back: answering it would let an
    attacker use the target as an oracle (RFC 7143 12.1.3)."""
    caplog.set_level(logging.DEBUG)
    async with secured_target() as (server, portal):
        conn = await raw_connect(portal)
        try:
            ident, challenge = await chap_challenge(conn)
            response = chap_response(5, ident, SECRET, challenge)
            rsp, keys = await exchange(conn, [("CHAP_N", "alice"), ("CHAP_R", format_hex(response)),
                                              ("CHAP_I", str(ident)), ("CHAP_C", format_hex(challenge))],
                                       transit=True)
        finally:
            conn.connection_terminate()
        assert status(rsp) == LoginStatus.AUTHENTICATION_FAILURE and "CHAP_R" not in keys
        assert not server.sessions
    assert any("reflects" in r.getMessage() for r in caplog.records)
    _no_secret_logged(caplog)


async def test_replayed_mutual_challenge_is_refused() -> None:
    """The same CHAP_I/CHAP_C in a second login: the target must not answer it again."""
    async with secured_target() as (server, portal):
        mine = bytes(range(16))
        answers = []
        for attempt in range(2):
            conn = await raw_connect(portal)
            try:
                ident, challenge = await chap_challenge(conn)
                response = chap_response(5, ident, SECRET, challenge)
                rsp, keys = await exchange(conn, [("CHAP_N", "alice"), ("CHAP_R", format_hex(response)),
                                                  ("CHAP_I", "77"), ("CHAP_C", format_hex(mine))],
                                           transit=True)
            finally:
                conn.connection_terminate()
            answers.append((status(rsp), keys.get("CHAP_R")))
        assert answers[0][0] == 0 and answers[0][1] == format_hex(chap_response(5, 77, TARGET_SECRET, mine))
        assert answers[1] == (LoginStatus.AUTHENTICATION_FAILURE, None)


async def test_replayed_response_to_a_new_challenge_is_refused() -> None:
    """A CHAP_R captured from one login is worthless in the next (fresh CHAP_I/CHAP_C)."""
    async with secured_target() as (server, portal):
        captured = ""
        codes = []
        for attempt in range(2):
            conn = await raw_connect(portal)
            try:
                ident, challenge = await chap_challenge(conn)
                if not captured:
                    captured = format_hex(chap_response(5, ident, SECRET, challenge))
                rsp, _ = await exchange(conn, [("CHAP_N", "alice"), ("CHAP_R", captured)], transit=True)
            finally:
                conn.connection_terminate()
            codes.append(status(rsp))
        assert codes == [0, LoginStatus.AUTHENTICATION_FAILURE]


async def test_target_that_answers_mutual_chap_wrongly(caplog: pytest.LogCaptureFixture) -> None:
    """The initiator expects another target secret: it must refuse the target's proof."""
    caplog.set_level(logging.DEBUG)
    async with secured_target() as (server, portal):
        s = session(portal, chap_user="alice", chap_secret=SECRET, mutual_user="disk",
                    mutual_secret=b"Wrong-Secret-0xBAD0000")
        with pytest.raises(LoginError) as info:
            await s.login()
        assert info.value.status == LoginStatus.AUTHENTICATION_FAILURE
        assert s.conn is None
    _no_secret_logged(caplog)


async def test_initiator_outside_the_acl(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with secured_target() as (server, portal):
        code = await refused(portal, server, name=STRANGER, chap_user="alice", chap_secret=SECRET)
        assert code == LoginStatus.AUTHORIZATION_FAILURE
        code = await refused(portal, server, name=HOST, target=OPEN_IQN)
        assert code == LoginStatus.AUTHORIZATION_FAILURE
    assert sum("ACL" in r.getMessage() for r in caplog.records) >= 2


async def test_discovery_without_discovery_auth_lists_only_permitted_targets() -> None:
    async with secured_target() as (server, portal):
        found = await discover(create_transport("tcp"), portal, InitiatorConfig(name=HOST))
        assert list(found) == [IQN]  # the open target's ACL names someone else


async def test_discovery_with_discovery_auth(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with secured_target(discovery_chap=True) as (server, portal):
        with pytest.raises(LoginError) as info:
            await discover(create_transport("tcp"), portal, InitiatorConfig(name=HOST))
        assert info.value.status == LoginStatus.AUTHENTICATION_FAILURE
        with pytest.raises(LoginError) as info:
            await discover(create_transport("tcp"), portal, InitiatorConfig(
                name=HOST, chap_user="finder", chap_secret=b"Wrong-Secret-0xBAD0000"))
        assert info.value.status == LoginStatus.AUTHENTICATION_FAILURE
        found = await discover(create_transport("tcp"), portal, InitiatorConfig(
            name=HOST, chap_user="finder", chap_secret=DISCOVERY_SECRET))
        assert list(found) == [IQN]
    _no_secret_logged(caplog)


def _no_secret_logged(caplog: pytest.LogCaptureFixture) -> None:
    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records) + caplog.text
    for secret in ALL_SECRETS:
        for form in (secret.decode(), secret.hex(), format_hex(secret)):
            assert form not in text, "a secret reached the logs"
