"""Login, authentication and discovery over loopback (RFC 7143 6, 11.12-11.13, 12.1.3, App. C)."""

from __future__ import annotations

import re

import pytest

from datamover.target.config import ChapConfig
from datamover.session.errors import LoginError
from tests.conftest import TARGET_IQN, make_session, running_target


async def test_login_reports_negotiated_keys_and_logout_closes() -> None:
    async with running_target() as (server, portal):
        session = make_session("loopback", portal, keys={"MaxBurstLength": "65536"})
        await session.login()
        assert session.agreed["MaxBurstLength"] == "65536"
        assert session.tsih != 0
        assert len(server.sessions) == 1
        await session.logout()
        assert not session.is_up
        assert len(server.sessions) == 0


@pytest.mark.parametrize("algorithms", [(5,), (6,), (7,), (8,), (8, 7, 6, 5)])
async def test_one_way_chap(algorithms: tuple[int, ...]) -> None:
    """RFC 7143 12.1.3: CHAP with each CHAP_A value the project supports."""
    chap = ChapConfig("alice", b"secret-of-alice-1")
    async with running_target(chap=chap) as (server, portal):
        session = make_session("loopback", portal, chap_user="alice", chap_secret=b"secret-of-alice-1",
                               chap_algorithms=algorithms)
        await session.login()
        assert (await session.test_unit_ready()).good
        await session.logout()


async def test_mutual_chap() -> None:
    chap = ChapConfig("alice", b"secret-of-alice-1", "target1", b"secret-of-target1")
    async with running_target(chap=chap) as (server, portal):
        session = make_session("loopback", portal, chap_user="alice", chap_secret=b"secret-of-alice-1",
                               mutual_user="target1", mutual_secret=b"secret-of-target1")
        await session.login()
        await session.logout()


async def test_mutual_chap_target_answers_wrongly_fails() -> None:
    chap = ChapConfig("alice", b"secret-of-alice-1", "target1", b"the-wrong-secret!")
    async with running_target(chap=chap) as (server, portal):
        session = make_session("loopback", portal, chap_user="alice", chap_secret=b"secret-of-alice-1",
                               mutual_user="target1", mutual_secret=b"secret-of-target1")
        with pytest.raises(LoginError):
            await session.login()


@pytest.mark.parametrize("user,secret", [("alice", b"wrong-secret-123"), ("mallory", b"secret-of-alice-1")])
async def test_chap_wrong_credentials_fail_with_authentication_failure(user: str, secret: bytes) -> None:
    chap = ChapConfig("alice", b"secret-of-alice-1")
    async with running_target(chap=chap) as (server, portal):
        session = make_session("loopback", portal, chap_user=user, chap_secret=secret)
        with pytest.raises(LoginError) as info:
            await session.login()
        assert info.value.status == 0x0201
        assert b"secret" not in str(info.value).encode()


async def test_skipping_security_when_chap_required_fails() -> None:
    """RFC 7143 6.2: a target that requires authentication refuses an initiator without it."""
    async with running_target(chap=ChapConfig("alice", b"secret-of-alice-1")) as (server, portal):
        session = make_session("loopback", portal)
        with pytest.raises(LoginError) as info:
            await session.login()
        assert info.value.status == 0x0201


async def test_discovery_send_targets_all() -> None:
    from datamover.initiator import InitiatorConfig, discover
    from datamover.plugin import create_transport

    async with running_target() as (server, portal):
        found = await discover(create_transport("loopback"), portal, InitiatorConfig())
        assert list(found) == [TARGET_IQN]
        assert found[TARGET_IQN] == [f"{portal},{portal.tpgt}"]


async def test_discovery_long_answer_uses_text_continuation() -> None:
    """RFC 7143 App. C / 11.10: an answer longer than MaxRecvDataSegmentLength spans several
    Text Responses (C=1 + TTT), collected with empty Text Requests."""
    from datamover.initiator import InitiatorConfig, discover
    from datamover.plugin import create_transport
    from datamover.target.config import LunConfig, TargetConfig

    async with running_target(keys={}) as (server, portal):
        for index in range(200):  # about 20 KiB of SendTargets text
            iqn = f"iqn.2026-11.org.datamover.test:extra-target-number-{index:04d}"
            server.targets[iqn] = TargetConfig(iqn, [LunConfig("memory", 1 << 20)])
        config = InitiatorConfig(keys={"MaxRecvDataSegmentLength": "512"})
        found = await discover(create_transport("loopback"), portal, config)
        assert len(found) == 201


async def test_discovery_session_refuses_scsi_commands() -> None:
    from datamover.initiator import InitiatorConfig, InitiatorSession
    from datamover.initiator.session import RejectedError
    from datamover.plugin import create_transport

    async with running_target() as (server, portal):
        session = InitiatorSession(create_transport("loopback"), portal, InitiatorConfig(), None,
                                   session_type="Discovery")
        await session.login()
        with pytest.raises(RejectedError):
            await session.test_unit_ready()
        await session.logout()


async def test_session_reinstatement_replaces_old_session() -> None:
    """RFC 7143 6.3.5: same initiator name + ISID + target with TSIH 0 replaces the session."""
    async with running_target() as (server, portal):
        first = make_session("loopback", portal)
        await first.login()
        second = make_session("loopback", portal, isid=first.config.isid)
        await second.login()
        assert len(server.sessions) == 1
        assert (await second.test_unit_ready()).good
        await second.logout()


@pytest.mark.parametrize("keys,message", [
    ({"MaxBurstLength": "abc"}, "MaxBurstLength='abc': expected a number in 512..16777215"),
    ({"DataDigest": "MD5"}, "DataDigest='MD5': allowed values are CRC32C, None"),
    ({"SessionType": "Discovery"}, "contradicts session_type=Normal"),
])
def test_a_target_refuses_key_values_no_login_could_use_when_it_is_made(keys: dict[str, str], message: str) -> None:
    """A configured [keys] value no row takes is a NegotiationConfigError from TargetServer's
    constructor (before, the server started and every login failed with that error in its
    log while the initiator saw the connection close)."""
    from datamover.di import Portal
    from datamover.negotiation import NegotiationConfigError
    from datamover.target import LunConfig, TargetConfig, TargetServer, TargetServerConfig

    config = TargetServerConfig(targets=[TargetConfig(TARGET_IQN, [LunConfig("memory", 1 << 20)])],
                                portals=[Portal("127.0.0.1", 0)], transport="loopback", keys=keys)
    with pytest.raises(NegotiationConfigError, match=re.escape(message)):
        TargetServer(config)
    TargetServer(TargetServerConfig(targets=config.targets, portals=config.portals, transport="loopback",
                                    keys={"MaxBurstLength": "65536", "DataDigest": "None"}))  # good ones start
