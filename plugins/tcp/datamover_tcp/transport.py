"""The TCP transport factory: listening and connecting (RFC 7143 over asyncio sockets)."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import Mapping

from datamover.capabilities import TransportCapabilities
from datamover.di import AcceptCallback, ConnectionClosed, Listener, Portal, Role, Transport

from datamover_tcp.connection import DEFAULT_RECV_BUFFER, TcpConnection

log = logging.getLogger(__name__)

#: Linux's limit on a congestion control algorithm's name (TCP_CA_NAME_MAX, NUL included)
_CA_NAME_MAX = 16
_AVAILABLE_CA = "/proc/sys/net/ipv4/tcp_available_congestion_control"
_SYSTEM_CA = "/proc/sys/net/ipv4/tcp_congestion_control"


def _sysctl(path: str) -> str | None:
    """A sysctl's value from /proc (stripped), or None where it cannot be read."""
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return None


def system_congestion() -> str | None:
    """The kernel's default congestion control for new TCP sockets, if it says."""
    return _sysctl(_SYSTEM_CA) or None


def check_congestion(name: object) -> str:
    """The ``congestion`` option, refused with a one-line ValueError unless this kernel
    takes it on a TCP socket now (tried on a throwaway socket, so a typo or a module that
    is not loaded fails at start-up, not on the first connection)."""
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9_]+", name) or len(name) >= _CA_NAME_MAX:
        raise ValueError(f"transport.tcp option congestion must be the name of a TCP congestion control "
                         f"algorithm (e.g. \"cubic\"), not {name!r}")
    if not hasattr(socket, "TCP_CONGESTION"):
        raise ValueError("transport.tcp option congestion: this platform cannot choose a socket's TCP "
                         "congestion control (Linux can)")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, name.encode("ascii"))
        except OSError as exc:
            raise ValueError(f"transport.tcp option congestion={name!r}: the kernel refused it ({exc.strerror}); "
                             f"available here: {_sysctl(_AVAILABLE_CA) or 'unknown'}") from None
    return name

_CAPABILITIES = TransportCapabilities(
    header_digest=True,
    data_digest=True,
    phase_collapse=True,
    error_recovery_levels=frozenset({0}),
    data_pdus_on_wire=True,
    zero_copy=False,  # a read is copied once from the receive buffer into the caller's
    multi_connection=False,
    cross_process=True,
    records_trace=True,
    provider="asyncio-tcp",
)


class TcpListener(Listener):
    """An asyncio server whose accepted sockets become target-side TcpConnections."""

    def __init__(self, server: asyncio.AbstractServer, portal: Portal) -> None:
        self._server = server
        self.portal = portal
        self._tasks: set[asyncio.Task[None]] = set()

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("accept callback for %s failed", self.portal, exc_info=task.exception())

    async def close(self) -> None:
        """Stop accepting. Connections already handed to ``on_accept`` stay open."""
        self._server.close()


class TcpTransport(Transport):
    """iSCSI over TCP: Data-In, R2T and Data-Out PDUs on the byte stream, CRC32C digests."""

    name = "tcp"

    def __init__(self, options: Mapping[str, object] | None = None) -> None:
        super().__init__(options)
        # checked now, so that a bad value is refused when the transport is made (a one-line
        # PluginError from create_transport), not from the first listen or connect
        self._checked_options = self._connection_options()

    @classmethod
    def capabilities(cls) -> TransportCapabilities:
        return _CAPABILITIES

    @classmethod
    def option_names(cls) -> Mapping[str, type]:
        return {"nodelay": bool, "use_uvloop": bool, "recv_buffer": int, "phase_collapse": bool, "sendfile": bool,
                "congestion": str}

    def _connection_options(self) -> dict[str, object]:
        nodelay = self.options.get("nodelay", True)
        recv_buffer = self.options.get("recv_buffer", DEFAULT_RECV_BUFFER)
        if not isinstance(nodelay, bool):
            raise ValueError(f"transport.tcp option nodelay must be a boolean, not {nodelay!r}")
        if isinstance(recv_buffer, bool) or not isinstance(recv_buffer, int) or recv_buffer < 4096:
            raise ValueError(f"transport.tcp option recv_buffer must be an integer >= 4096, not {recv_buffer!r}")
        phase_collapse = self.options.get("phase_collapse", True)
        if not isinstance(phase_collapse, bool):
            raise ValueError(f"transport.tcp option phase_collapse must be a boolean, not {phase_collapse!r}")
        sendfile = self.options.get("sendfile", False)
        if not isinstance(sendfile, bool):
            raise ValueError(f"transport.tcp option sendfile must be a boolean, not {sendfile!r}")
        congestion = self.options.get("congestion")
        if congestion is not None:
            congestion = check_congestion(congestion)
        return {"nodelay": nodelay, "recv_buffer": recv_buffer, "phase_collapse": phase_collapse,
                "sendfile": sendfile, "congestion": congestion}

    async def listen(self, portal: Portal, on_accept: AcceptCallback) -> Listener:
        options = self._checked_options
        loop = asyncio.get_running_loop()
        listener: TcpListener | None = None

        def factory() -> TcpConnection:
            conn = TcpConnection(Role.TARGET, local=bound, **options)  # type: ignore[arg-type]

            async def accepted() -> None:
                await conn.connected
                await on_accept(conn)

            assert listener is not None
            listener._track(loop.create_task(accepted()))
            return conn

        bound = portal
        server = await loop.create_server(factory, portal.host, portal.port)
        sockets = server.sockets or ()
        if sockets:
            bound = Portal(portal.host, sockets[0].getsockname()[1], portal.tpgt)
        listener = TcpListener(server, bound)
        return listener

    async def connect(self, portal: Portal, timeout: float | None = None) -> TcpConnection:
        options = self._checked_options
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _transport, conn = await loop.create_connection(
                    lambda: TcpConnection(Role.INITIATOR, local=portal, **options),  # type: ignore[arg-type]
                    portal.host, portal.port)
        except TimeoutError:  # an OSError subclass, but the DI's timeout signal: keep it
            raise
        except OSError as exc:  # refused, unreachable
            raise ConnectionClosed(f"cannot connect to {portal}: {exc}") from exc
        return conn

    def describe(self) -> str:
        congestion = self._checked_options["congestion"]
        if congestion is None:
            system = system_congestion()
            congestion = f"{system}, the system's" if system else None
        # the congestion control is named: on loopback here, cubic instead of BBR made 1 MiB
        # reads 1.5x as fast (docs/performance.md)
        tail = f"; congestion control {congestion}" if congestion else ""
        return f"tcp: RFC 7143 byte stream over asyncio (gather writes, one receive buffer{tail})"
