"""Where the target of a comparative run lives: in this process, in a child, or remote.

* in-process: a :class:`~datamover.target.TargetServer` on this event loop (loopback, or
  any transport with ``--in-process``); CPU is shared with the initiator.
* child process: ``python -m datamover.cli target serve`` on 127.0.0.1 port 0 with a
  memory LUN; the bound port is read from the "... on HOST:PORT" line the command prints,
  and the child's CPU from /proc/PID/stat.
* remote: an already-running target named by ``--target NAME=HOST:PORT``; nothing about
  its CPU is known.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from datamover.di import DatamoverConnection, NotImplementedTransport, Portal, Transport
from datamover.target import LunConfig, TargetConfig, TargetServer, TargetServerConfig

#: how long a child target may take to print its portal
CHILD_START_TIMEOUT = 20.0


class EndpointError(RuntimeError):
    """The target could not be started or reached (one line for the report)."""


class Endpoint(abc.ABC):
    """A started target: its portal and name, a CPU probe, and how to stop it."""

    portal: Portal
    iqn: str
    mode: str

    def target_cpu(self) -> float | None:
        """CPU seconds the target used so far (None if unknown or shared)."""
        return None

    def target_connections(self) -> list[DatamoverConnection]:
        """Target-side connections whose counters can be read (in-process only)."""
        return []

    @abc.abstractmethod
    async def close(self) -> None: ...


class InProcessEndpoint(Endpoint):
    def __init__(self, server: TargetServer, portal: Portal, iqn: str) -> None:
        self.server, self.portal, self.iqn = server, portal, iqn
        self.mode = "in-process"

    def target_connections(self) -> list[DatamoverConnection]:
        return [session.conn for session in self.server.sessions.values()]

    async def close(self) -> None:
        await self.server.stop()


class RemoteEndpoint(Endpoint):
    def __init__(self, portal: Portal, iqn: str) -> None:
        self.portal, self.iqn = portal, iqn
        self.mode = f"remote {portal}"

    async def close(self) -> None:
        return None


def proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process from /proc/PID/stat (None where /proc is absent)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces: fields count from after its ')'
    fields = text[text.rindex(")") + 2:].split()
    try:
        ticks = int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)
    except (IndexError, ValueError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


class ChildEndpoint(Endpoint):
    def __init__(self, process: asyncio.subprocess.Process, portal: Portal, iqn: str,
                 workdir: tempfile.TemporaryDirectory[str]) -> None:
        self.process, self.portal, self.iqn = process, portal, iqn
        self._workdir = workdir
        self.mode = f"child process (pid {process.pid})"
        self.drain: asyncio.Task[None] | None = None

    def target_cpu(self) -> float | None:
        return proc_cpu_seconds(self.process.pid)

    async def close(self) -> None:
        process = self.process
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 5.0)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self.drain is not None:
            await asyncio.wait([self.drain], timeout=1.0)
            self.drain.cancel()
        self._workdir.cleanup()


# ------------------------------------------------------------------------ starting
def _toml_value(value: object) -> str:
    """A TOML literal for the simple values a target config holds (JSON strings are
    valid TOML basic strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def child_config_text(transport: str, iqn: str, lun_size: int, keys: dict[str, str],
                      options: dict[str, Any], queue_depth: int) -> str:
    """The config file a child target is started with (power-on UA off: a clean start)."""
    lines = ["[target]", f"transport = {_toml_value(transport)}", 'portals = ["127.0.0.1:0"]',
             f"iqn = {_toml_value(iqn)}", f"luns = [{_toml_value(f'memory,size={lun_size}')}]",
             "power_on_ua = false", f"queue_depth = {queue_depth}"]
    if keys:
        lines.append("[keys]")
        lines.extend(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in keys.items())
    if options:
        lines.append(f"[transport.{json.dumps(transport)}]")
        lines.extend(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in options.items())
    return "\n".join(lines) + "\n"


def parse_serving_line(line: str) -> Portal:
    """The portal from ``datamover target serve``'s "... on HOST:PORT[, HOST:PORT]" line."""
    marker = " on "
    if "serving" not in line or marker not in line:
        raise ValueError(f"not a serving line: {line.strip()!r}")
    first = line.rsplit(marker, 1)[1].split(",")[0].strip()
    return Portal.parse(first)


async def probe_implemented(transport: Transport) -> None:
    """Raise NotImplementedTransport now, in this process, rather than in a child whose
    one-line error could not be told apart from any other failure."""

    async def refuse(conn: DatamoverConnection) -> None:
        conn.connection_terminate()

    listener = await transport.listen(Portal("127.0.0.1", 0), refuse)
    await listener.close()


async def start_in_process(transport: Transport, iqn: str, lun_size: int, keys: dict[str, str],
                           queue_depth: int) -> InProcessEndpoint:
    host = "loopback" if not transport.capabilities().cross_process else "127.0.0.1"
    target = TargetConfig(iqn, [LunConfig("memory", lun_size)], power_on_ua=False)
    config = TargetServerConfig(targets=[target], portals=[Portal(host, 0)], transport=transport.name,
                                transport_options=dict(transport.options), keys=dict(keys),
                                queue_depth=queue_depth)
    server = TargetServer(config, transport=transport)
    portals = await server.start()  # NotImplementedTransport propagates
    return InProcessEndpoint(server, portals[0], iqn)


async def start_child(transport: Transport, iqn: str, lun_size: int, keys: dict[str, str],
                      options: dict[str, Any], queue_depth: int) -> ChildEndpoint:
    """Spawn ``python -m datamover.cli target serve -c CONFIG`` and wait for its portal."""
    await probe_implemented(transport)
    workdir = tempfile.TemporaryDirectory(prefix="datamover-compare-")
    config_path = Path(workdir.name) / "target.toml"
    config_path.write_text(child_config_text(transport.name, iqn, lun_size, keys, options, queue_depth))
    stderr_path = Path(workdir.name) / "stderr.log"
    with open(stderr_path, "wb") as stderr:
        # stderr goes to a file: a chatty child must never block on a full pipe
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "datamover.cli", "target", "serve", "-c", str(config_path),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=stderr)
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), CHILD_START_TIMEOUT)
        portal = parse_serving_line(line.decode(errors="replace"))
    except (asyncio.TimeoutError, ValueError) as exc:
        if process.returncode is None:
            process.kill()
        await process.wait()
        errors = stderr_path.read_text(errors="replace").strip().splitlines()
        workdir.cleanup()
        why = errors[-1] if errors else (str(exc) or "no portal printed in time")
        raise EndpointError(f"the {transport.name} target process did not start: {why}") from None
    endpoint = ChildEndpoint(process, portal, iqn, workdir)
    # keep draining stdout so the child never blocks on it
    endpoint.drain = asyncio.get_running_loop().create_task(_drain(process.stdout))
    return endpoint


async def _drain(stream: asyncio.StreamReader) -> None:
    with contextlib.suppress(Exception):
        while await stream.read(65536):
            pass


__all__ = ["ChildEndpoint", "Endpoint", "EndpointError", "InProcessEndpoint", "NotImplementedTransport",
           "RemoteEndpoint", "child_config_text", "parse_serving_line", "proc_cpu_seconds",
           "start_child", "start_in_process"]
