"""A thin synchronous facade over :class:`InitiatorSession` (libiscsi's sync.c idea).

The async session runs on an event loop in a background thread; each method blocks on
the corresponding coroutine. Use it from scripts and REPLs::

    with SyncInitiator("tcp", "127.0.0.1:3260", "iqn.2026-11.org.example:disk1") as s:
        s.write_blocks(0, 0, b"\\0" * 4096)
        data = s.read_blocks(0, 0, 8)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from datamover.di import Portal
from datamover.initiator.config import InitiatorConfig
from datamover.initiator.session import InitiatorSession, ScsiOutcome
from datamover.plugin import create_transport

T = TypeVar("T")


class SyncInitiator:
    """Blocking initiator; every call waits for its result (or raises its error)."""

    def __init__(self, transport: str, portal: str | Portal, target: str | None,
                 config: InitiatorConfig | None = None, transport_options: dict[str, object] | None = None,
                 timeout: float | None = 120.0) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="datamover-initiator", daemon=True)
        self._thread.start()
        self.timeout = timeout
        portal = Portal.parse(portal) if isinstance(portal, str) else portal

        async def make() -> InitiatorSession:
            return InitiatorSession(create_transport(transport, transport_options), portal, config, target)

        self.session: InitiatorSession = self._call(make())

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self.timeout)

    def login(self) -> None:
        self._call(self.session.login())

    def logout(self) -> None:
        self._call(self.session.logout())

    def close(self) -> None:
        try:
            self._call(self.session.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop.close()

    def __enter__(self) -> SyncInitiator:
        self.login()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.session.is_up:
                self.logout()
        finally:
            self.close()

    def execute(self, lun: int, cdb: bytes, **kwargs: Any) -> ScsiOutcome:
        return self._call(self.session.execute(lun, cdb, **kwargs))

    def test_unit_ready(self, lun: int = 0) -> ScsiOutcome:
        return self._call(self.session.test_unit_ready(lun))

    def inquiry(self, lun: int = 0, page: int | None = None) -> bytes:
        return self._call(self.session.inquiry(lun, page=page))

    def read_capacity(self, lun: int = 0) -> tuple[int, int]:
        return self._call(self.session.read_capacity(lun))

    def report_luns(self) -> list[int]:
        return self._call(self.session.report_luns())

    def read_blocks(self, lun: int, lba: int, count: int, block_size: int = 512) -> bytes:
        return bytes(self._call(self.session.read_blocks(lun, lba, count, block_size)))

    def write_blocks(self, lun: int, lba: int, data: bytes, block_size: int = 512, fua: bool = False) -> ScsiOutcome:
        return self._call(self.session.write_blocks(lun, lba, data, block_size, fua))

    def send_targets(self, value: str = "All") -> dict[str, list[str]]:
        return self._call(self.session.send_targets(value))

    def lun_reset(self, lun: int = 0) -> int:
        return self._call(self.session.lun_reset(lun))

    def nop(self, data: bytes = b"") -> float:
        return self._call(self.session.nop(data))
