"""The target process: listens on portals, runs logins, owns sessions and logical units."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterable

from datamover.di import DatamoverConnection, Listener, Portal, Transport
from datamover.plugin import create_transport
from datamover.scsi.backend import Backend, FileBackend, MemoryBackend
from datamover.scsi.lu import LogicalUnit
from datamover.scsi.lunmap import LunMap
from datamover.session.errors import LoginError
from datamover.session.params import SessionParams
from datamover.target.config import LunConfig, TargetConfig, TargetServerConfig, check_iscsi_name
from datamover.target.login import TargetLogin, target_negotiator
from datamover.target.session import TargetSession
from datamover.trace import DITrace

log = logging.getLogger("datamover.target")


def open_backend(lun: LunConfig) -> Backend:
    """The storage behind a LUN: memory, or a file created sparse at ``size`` if missing."""
    if lun.path == "memory":
        assert lun.size is not None
        return MemoryBackend(lun.size, block_size=lun.block_size)
    return FileBackend(lun.path, lun.size, read_only=lun.read_only, block_size=lun.block_size, mmap=lun.mmap)


def build_lunmap(target: TargetConfig) -> LunMap:
    units: dict[int, LogicalUnit] = {}
    for index, lun in enumerate(target.luns):
        number = lun.lun if lun.lun is not None else index
        if number in units:
            raise ValueError(f"target {target.iqn}: LUN {number} configured twice")
        backend = open_backend(lun)
        serial = f"{abs(hash((target.iqn, number))) & 0xFFFFFFFF:08x}{number:04x}"
        units[number] = LogicalUnit(backend, block_size=lun.block_size, read_only=lun.read_only,
                                    serial=serial, power_on_ua=target.power_on_ua, removable=lun.removable,
                                    physical_block_size=lun.physical_block_size)
    return LunMap(units)


class TargetServer:
    """Serves the configured targets on every portal through one transport."""

    def __init__(self, config: TargetServerConfig, *, transport: Transport | None = None,
                 trace: DITrace | None = None) -> None:
        self.config = config
        for target in config.targets:
            target.iqn = check_iscsi_name(target.iqn)
        self.transport = transport or create_transport(config.transport, dict(config.transport_options))
        self.transport_capabilities = self.transport.capabilities()
        # a configured key value no login could use is refused now (NegotiationConfigError,
        # a ValueError), not found by every initiator that logs in
        target_negotiator(config.keys, self.transport_capabilities)
        self.trace = trace
        self.targets: dict[str, TargetConfig] = {t.iqn: t for t in config.targets}
        self.lunmaps: dict[str, LunMap] = {t.iqn: build_lunmap(t) for t in config.targets}
        self.sessions: dict[int, TargetSession] = {}
        self.listeners: list[Listener] = []
        self._login_tasks: set[asyncio.Task[None]] = set()
        self._keepalive_task: asyncio.Task[None] | None = None
        #: datamover counters of sessions that ended (reports, benchmarks)
        self.closed_stats: list[dict[str, int]] = []
        self._next_tsih = secrets.randbelow(0xFFF0) + 1

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> list[Portal]:
        """Listen on every portal; returns the portals actually bound (port 0 resolved)."""
        for portal in self.config.portals:
            listener = await self.transport.listen(portal, self._on_accept)
            self.listeners.append(listener)
            log.info("listening on %s (%s)", listener.portal, self.transport.describe())
        if self.config.nop_interval > 0:
            self._keepalive_task = asyncio.get_running_loop().create_task(self._keepalive())
        return [listener.portal for listener in self.listeners]

    async def _keepalive(self) -> None:
        """NOP-In keepalive (RFC 7143 11.19): ping idle initiators, drop silent ones."""
        interval = self.config.nop_interval
        while True:
            await asyncio.sleep(min(interval, 1.0))
            for session in list(self.sessions.values()):
                session.keepalive(interval, self.config.nop_timeout)

    async def stop(self) -> None:
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
            self._keepalive_task = None
        for listener in self.listeners:
            await listener.close()
        self.listeners.clear()
        for task in list(self._login_tasks):
            task.cancel()
        for session in list(self.sessions.values()):
            session.close()
        self.sessions.clear()
        for lunmap in self.lunmaps.values():
            for _, unit in lunmap.items():
                unit.close()

    async def __aenter__(self) -> TargetServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---------------------------------------------------------------- lookups
    def find_target(self, name: str) -> TargetConfig | None:
        try:
            return self.targets.get(check_iscsi_name(name))
        except ValueError:
            return None

    def session_exists(self, tsih: int) -> bool:
        return tsih in self.sessions

    def session_count(self) -> int:
        return len(self.sessions)

    def allocate_tsih(self) -> int:
        while True:
            tsih = self._next_tsih
            self._next_tsih = (self._next_tsih % 0xFFFF) + 1  # TSIH 0 is reserved
            if tsih not in self.sessions:
                return tsih

    def send_targets(self, session: TargetSession, value: str) -> list[tuple[str, str]]:
        """SendTargets answer (RFC 7143 App. C): targets this initiator may see."""
        if session.params.discovery:
            if value != "All":
                wanted = self.find_target(value) if value else None
                candidates: Iterable[TargetConfig] = [wanted] if wanted else []
            else:
                candidates = self.targets.values()
        else:
            # Normal session: only the session's target ("" or its own name)
            own = session.target
            candidates = [own] if own is not None and value in ("", own.iqn) else []
        answers: list[tuple[str, str]] = []
        for target in candidates:
            if target.acl and session.initiator_name not in {check_iscsi_name(n) for n in target.acl}:
                continue  # not accessible to this initiator: left out
            answers.append(("TargetName", target.iqn))
            for listener in self.listeners:
                answers.append(("TargetAddress", f"{listener.portal},{listener.portal.tpgt}"))
        return answers

    # ---------------------------------------------------------------- resets
    def lu_reset(self, requester: TargetSession, raw_lun: int) -> None:
        """LOGICAL UNIT RESET: abort the LU's tasks in every session, then reset the LU."""
        assert requester.target is not None
        from datamover.pdu import decode_lun

        number = decode_lun(raw_lun)
        for session in self.sessions.values():
            if session.target is requester.target:
                session.abort_all(raw_lun, by_other_nexus=session is not requester)
        self.lunmaps[requester.target.iqn].lu_reset(number)

    def target_reset(self, requester: TargetSession, *, cold: bool) -> None:
        assert requester.target is not None
        lunmap = self.lunmaps[requester.target.iqn]
        for session in list(self.sessions.values()):
            if session.target is requester.target:
                session.abort_all(by_other_nexus=session is not requester)
                if session is not requester and cold:
                    session.close()
        lunmap.target_reset(cold)

    # ---------------------------------------------------------------- logins
    async def _on_accept(self, conn: DatamoverConnection) -> None:
        if len(self._login_tasks) + len(self.sessions) >= self.config.max_connections:
            # bounded: a flood of sockets that never log in cannot pile up login tasks
            log.warning("refusing %s: %d connections already (max_connections)", conn.peer,
                        len(self._login_tasks) + len(self.sessions))
            conn.connection_terminate()
            return
        task = asyncio.current_task()
        if task is not None:
            self._login_tasks.add(task)
        try:
            await self._login(conn)
        except asyncio.CancelledError:
            conn.connection_terminate()
            raise
        except Exception:
            log.exception("login handling failed for %s", conn.peer)
            conn.connection_terminate()
        finally:
            if task is not None:
                self._login_tasks.discard(task)

    async def _login(self, conn: DatamoverConnection) -> None:
        tpgt = conn.local_portal.tpgt if conn.local_portal is not None else 1
        login = TargetLogin(self, conn, tpgt)
        allocated = False
        try:
            outcome = await login.run()
        except LoginError as exc:
            log.info("login from %s failed: %s", conn.peer, exc.reason)
            conn.connection_terminate()
            return
        caps = self.transport_capabilities
        params = SessionParams.from_agreed(outcome.agreed, caps)
        if self.trace is not None:
            self.trace.record("target", "notice_key_values")
        conn.notice_key_values(outcome.agreed)
        try:
            allocated = await conn.allocate_connection_resources()
        except Exception:
            log.exception("allocate_connection_resources failed")
            allocated = False
        if not allocated:
            await login.out_of_resources(outcome.final_response)
            conn.deallocate_connection_resources()
            conn.connection_terminate()
            return
        target = outcome.target
        self._reinstate(outcome.initiator_name, outcome.isid, target)
        session = TargetSession(
            self, conn, initiator_name=outcome.initiator_name, target=target, isid=outcome.isid,
            tsih=outcome.tsih, cid=outcome.cid, params=params, exp_cmd_sn=outcome.exp_cmd_sn,
            stat_sn=outcome.stat_sn, lunmap=self.lunmaps[target.iqn] if target else None,
            trace=self.trace,
        )
        session.on_close = self._session_closed
        self.sessions[outcome.tsih] = session
        # the final response carries the window as the session will see it
        outcome.final_response.max_cmd_sn = session.max_cmd_sn
        if self.trace is not None:
            self.trace.record("target", "enable_datamover")
        try:
            await conn.enable_datamover(session, outcome.final_response)
        except (ConnectionError, OSError) as exc:
            log.info("connection lost while enabling the datamover: %s", exc)
            session.close()
            return
        log.info("session %#x: %s -> %s (%s)", outcome.tsih, outcome.initiator_name,
                 target.iqn if target else "discovery", conn.peer)

    def _reinstate(self, initiator: str, isid: int, target: TargetConfig | None) -> None:
        """Session reinstatement (RFC 7143 6.3.5): a login with the same initiator name,
        ISID and target and TSIH 0 implicitly logs out the old session."""
        for session in list(self.sessions.values()):
            if session.initiator_name == initiator and session.isid == isid and session.target is target:
                log.info("session %#x reinstated by a new login from %s", session.tsih, initiator)
                session.close()

    def _session_closed(self, session: TargetSession) -> None:
        if self.sessions.get(session.tsih) is session:
            del self.sessions[session.tsih]
        if session.target is not None:
            # the I_T nexus is gone: its RESERVE(6), PREVENT and the like end (SPC-5 5.13)
            lunmap = self.lunmaps.get(session.target.iqn)
            if lunmap is not None:
                lunmap.nexus_lost(session.nexus)
        try:
            self.closed_stats.append(session.conn.stats())  # for reports after logout
        except Exception:
            pass
        del self.closed_stats[:-1024]  # bounded: a long-running target keeps the recent ones
