"""Busy polling (InitiatorConfig.busy_poll_us): the initiator keeps its event loop polling
while commands are in flight, for at most the budget after each send, and never when idle."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from datamover.initiator import InitiatorConfig
from datamover.initiator.session import InitiatorSession
from tests.conftest import make_session, running_target


def _count_polls(session: InitiatorSession) -> list[int]:
    """Wrap the session's poller; the list's one element counts its runs."""
    runs = [0]
    original = session._poll

    def counted() -> None:
        runs[0] += 1
        original()

    session._poll = counted  # type: ignore[method-assign]
    return runs


async def test_polls_while_an_answer_is_outstanding_then_stops() -> None:
    async with running_target() as (server, portal):
        session = make_session("loopback", portal, busy_poll_us=20_000)  # 20 ms
        await session.login()
        data = bytes(range(256)) * 16
        await session.write_blocks(0, 8, data)
        runs = _count_polls(session)
        # the target takes 300 ms to look at the next command: a slow target
        target_session = next(iter(server.sessions.values()))
        original_notify = target_session.control_notify
        loop = asyncio.get_running_loop()
        target_session.control_notify = (  # type: ignore[method-assign]
            lambda conn, pdu: loop.call_later(0.3, original_notify, conn, pdu))
        read = asyncio.ensure_future(session.read_blocks(0, 8, 8))
        await asyncio.sleep(0.005)
        assert session._polling and runs[0] > 1  # the loop kept polling instead of sleeping
        await asyncio.sleep(0.15)
        # the budget (20 ms after the send) is spent: back to sleeping, the read still open
        assert not read.done() and not session._polling
        stopped_at = runs[0]
        await asyncio.sleep(0.05)
        assert runs[0] == stopped_at
        assert bytes(await read) == data
        target_session.control_notify = original_notify  # type: ignore[method-assign]
        # answered promptly: polling ends with the last answer, and an idle session never polls
        assert bytes(await session.read_blocks(0, 8, 8)) == data
        await asyncio.sleep(0.01)
        assert not session._polling
        idle_at = runs[0]
        await asyncio.sleep(0.05)
        assert runs[0] == idle_at
        await session.logout()


async def test_off_by_default_never_polls() -> None:
    assert InitiatorConfig().busy_poll_us == 0
    async with running_target() as (server, portal):
        session = make_session("loopback", portal)
        await session.login()
        runs = _count_polls(session)
        await asyncio.gather(*(session.write_blocks(0, i * 8, bytes(4096)) for i in range(16)))
        assert runs[0] == 0 and not session._polling
        await session.logout()


def test_negative_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="busy_poll_us"):
        InitiatorConfig(busy_poll_us=-1)


def test_config_file_sets_the_budget(tmp_path: Path) -> None:
    from datamover.cli import _make_initiator
    from datamover.config import load_config

    path = tmp_path / "ini.toml"
    path.write_text("[initiator]\ntransport = 'loopback'\nportal = 'loopback:1'\nbusy_poll_us = 75\n")
    config = load_config(path)
    _transport, _portal, init = _make_initiator(dict(config.initiator), config)
    assert init.busy_poll_us == 75
