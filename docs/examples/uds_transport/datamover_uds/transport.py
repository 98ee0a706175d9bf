"""iSCSI over Unix-domain sockets, reusing the TCP datamover's connection.

The TCP datamover's :class:`~datamover_tcp.connection.TcpConnection` is an asyncio
buffered protocol: it works on any stream socket. This transport only decides where
connections come from. Portals keep the ``HOST:PORT`` form every datamover tool speaks
(configs, discovery answers, ``--target NAME=HOST:PORT``); the pair names a socket file in
``socket_dir``, and port 0 picks a free name.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from datamover.capabilities import TransportCapabilities
from datamover.di import AcceptCallback, ConnectionClosed, Listener, Portal, Role, Transport
from datamover_tcp.connection import TcpConnection

_ports = itertools.count(20000 + os.getpid() % 20000)


class UdsListener(Listener):
    """A Unix-domain server whose accepted sockets become target-side connections."""

    def __init__(self, server: asyncio.AbstractServer, portal: Portal, path: Path) -> None:
        self._server = server
        self.portal = portal
        self.path = path
        self.tasks: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        self._server.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class UdsTransport(Transport):
    """The same PDUs as TCP, over a Unix-domain stream socket."""

    name = "uds"
    #: the connection class both ends use (the broken variant swaps it)
    connection_class: type[TcpConnection] = TcpConnection

    @classmethod
    def capabilities(cls) -> TransportCapabilities:
        return TransportCapabilities(
            header_digest=True, data_digest=True, phase_collapse=True, data_pdus_on_wire=True,
            cross_process=True, records_trace=True, provider="unix-socket",
        )

    @classmethod
    def option_names(cls) -> Mapping[str, type]:
        return {"socket_dir": str, "recv_buffer": int}

    # ------------------------------------------------------------------ addressing
    def socket_dir(self) -> Path:
        return Path(str(self.options.get("socket_dir") or tempfile.gettempdir()))

    def socket_path(self, portal: Portal) -> Path:
        host = portal.host.replace("/", "_").replace(":", "_")
        return self.socket_dir() / f"datamover-{host}-{portal.port}.sock"

    def _connection(self, role: Role, local: Portal) -> TcpConnection:
        recv_buffer = self.options.get("recv_buffer")
        if recv_buffer is None:
            return self.connection_class(role, local=local)
        if isinstance(recv_buffer, bool) or not isinstance(recv_buffer, int) or recv_buffer < 4096:
            raise ValueError(f"transport.{self.name} option recv_buffer must be an integer >= 4096")
        return self.connection_class(role, local=local, recv_buffer=recv_buffer)

    # ------------------------------------------------------------------ Transport
    async def listen(self, portal: Portal, on_accept: AcceptCallback) -> Listener:
        loop = asyncio.get_running_loop()
        if portal.port == 0:
            while True:  # a free name: port numbers are just name parts here
                portal = Portal(portal.host, next(_ports), portal.tpgt)
                if not self.socket_path(portal).exists():
                    break
        path = self.socket_path(portal)
        if path.exists():
            raise OSError(f"{path} exists: another target listens on {portal}")
        listener: UdsListener | None = None

        def factory() -> TcpConnection:
            conn = self._connection(Role.TARGET, portal)
            conn.peer = f"unix:{path.name}"

            async def accepted() -> None:
                await conn.connected
                await on_accept(conn)

            assert listener is not None
            task = loop.create_task(accepted())
            listener.tasks.add(task)
            task.add_done_callback(listener.tasks.discard)
            return conn

        server = await loop.create_unix_server(factory, str(path))
        listener = UdsListener(server, portal, path)
        return listener

    async def connect(self, portal: Portal, timeout: float | None = None) -> TcpConnection:
        loop = asyncio.get_running_loop()
        path = self.socket_path(portal)
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_unix_connection(lambda: self._connection(Role.INITIATOR, portal),
                                                            str(path))
        except TimeoutError:
            raise
        except OSError as exc:
            raise ConnectionClosed(f"cannot connect to {portal} ({path}): {exc.strerror or exc}") from exc
        conn.peer = f"unix:{path.name}"
        return conn

    def describe(self) -> str:
        return f"{self.name}: RFC 7143 PDUs over a Unix-domain socket in {self.socket_dir()} (datamover_tcp framing)"
