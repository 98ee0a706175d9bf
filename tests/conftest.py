"""Shared fixtures: a target server and initiator sessions over any registered transport."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from datamover.di import Portal
from datamover.initiator import InitiatorConfig, InitiatorSession
from datamover.plugin import create_transport
from datamover.target import LunConfig, TargetConfig, TargetServer, TargetServerConfig
from datamover.trace import DITrace

TARGET_IQN = "iqn.2026-11.org.datamover.test:disk"
INITIATOR_IQN = "iqn.2026-11.org.datamover.test:host"


def portal_for(transport: str) -> Portal:
    return Portal("127.0.0.1", 0) if transport != "loopback" else Portal("loopback", 0)


@contextlib.asynccontextmanager
async def running_target(transport: str = "loopback", *, keys: dict[str, str] | None = None,
                         luns: list[LunConfig] | None = None, trace: DITrace | None = None,
                         transport_options: dict[str, object] | None = None,
                         **target_kwargs: object) -> AsyncIterator[tuple[TargetServer, Portal]]:
    """Start a target with one memory LUN (64 MiB by default) and yield it with its portal."""
    target = TargetConfig(TARGET_IQN, luns or [LunConfig("memory", 64 << 20)], power_on_ua=False,
                          **target_kwargs)  # type: ignore[arg-type]
    config = TargetServerConfig(targets=[target], portals=[portal_for(transport)], transport=transport,
                                transport_options=dict(transport_options or {}), keys=dict(keys or {}))
    server = TargetServer(config, trace=trace)
    portals = await server.start()
    try:
        yield server, portals[0]
    finally:
        await server.stop()


def make_session(transport: str, portal: Portal, *, keys: dict[str, str] | None = None,
                 trace: DITrace | None = None, target: str | None = TARGET_IQN,
                 transport_options: dict[str, object] | None = None,
                 **config_kwargs: object) -> InitiatorSession:
    options = dict(transport_options or {})
    if transport == "loopback":
        options.setdefault("check_codec", True)
    config = InitiatorConfig(name=INITIATOR_IQN, keys=dict(keys or {}), **config_kwargs)  # type: ignore[arg-type]
    return InitiatorSession(create_transport(transport, options), portal, config, target, trace=trace)


@pytest.fixture
def trace() -> DITrace:
    return DITrace()
