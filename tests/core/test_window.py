"""CmdSN window behaviour: the initiator never exceeds MaxCmdSN and refreshes a stalled window."""

from __future__ import annotations

import asyncio

from tests.conftest import make_session, running_target


async def test_queue_depth_bounds_commands_in_flight() -> None:
    async with running_target("loopback") as (server, portal):
        server.config.queue_depth = 4
        session = make_session("loopback", portal)
        await session.login()
        results = await asyncio.gather(*(session.write_blocks(0, i * 8, bytes(4096)) for i in range(64)))
        assert all(r.good for r in results)
        target_session = next(iter(server.sessions.values()))
        assert target_session.counters["commands"] == 64
        await session.logout()


async def test_stalled_window_is_refreshed_with_nop_out() -> None:
    """If MaxCmdSN updates are lost, a NOP-Out brings the window back (RFC 7145 7.3.5)."""
    async with running_target("loopback") as (server, portal):
        session = make_session("loopback", portal)
        await session.login()
        # pretend the window closed and the update that reopened it was lost
        session.max_cmd_sn = (session.exp_cmd_sn - 1) & 0xFFFFFFFF
        session.cmd_sn = session.exp_cmd_sn
        outcome = await asyncio.wait_for(session.test_unit_ready(), 5)
        assert outcome.good
        await session.logout()
