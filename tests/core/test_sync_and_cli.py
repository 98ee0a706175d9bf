"""The sync facade, the plugin registry and the CLI (one-line errors, never tracebacks)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import asyncio
from pathlib import Path

import pytest

from datamover.plugin import PluginError, TransportRegistry, build_registry, get_registry
from datamover.session.serial import sn_add, sn_gt, sn_in_window, sn_lt
from tests.conftest import TARGET_IQN, running_target

DATAMOVER = [sys.executable, "-m", "datamover.cli"]


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DATAMOVER, *args], capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------ serial arithmetic
def test_serial_arithmetic_wraps() -> None:
    """RFC 1982 / RFC 7143 4.2.2.1: comparisons survive the 2**32 wrap."""
    assert sn_lt(0xFFFFFFFF, 0)
    assert sn_gt(0, 0xFFFFFFFF)
    assert sn_add(0xFFFFFFFF, 2) == 1
    assert sn_in_window(1, 0xFFFFFFF0, 5)
    assert not sn_in_window(6, 0xFFFFFFF0, 5)
    assert not sn_lt(5, 5)


# ------------------------------------------------------------------ registry
def test_builtin_transports_register_through_entry_points() -> None:
    registry = build_registry()
    assert {"loopback", "tcp", "iser"} <= set(registry.names())
    for name in ("loopback", "tcp", "iser"):
        info = registry.get(name)
        assert info.distribution == "datamover"
        assert info.version
        assert info.module.startswith(f"datamover_{name}.")


def test_core_imports_no_plugin_module() -> None:
    """The core never imports a plugin (architecture rule): checked in a fresh interpreter."""
    code = ("import sys, datamover.target, datamover.initiator, datamover.cli, datamover.config;"
            "bad=[m for m in sys.modules if m.startswith(('datamover_tcp','datamover_iser','datamover_loopback'))];"
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_unknown_transport_names_the_registered_ones() -> None:
    with pytest.raises(PluginError, match="registered: .*loopback"):
        get_registry().get("carrier-pigeon")


def test_duplicate_registration_is_an_error() -> None:
    from datamover_loopback.transport import LoopbackTransport

    registry = TransportRegistry()
    registry.add_transport(LoopbackTransport)
    with pytest.raises(PluginError, match="registered twice"):
        registry.add_transport(LoopbackTransport)


def test_disabled_plugin_env_blocks_an_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAMOVER_DISABLED_PLUGINS", "iser")
    assert "iser" not in build_registry().names()


# ------------------------------------------------------------------ sync facade
def test_sync_facade_round_trip() -> None:
    from datamover.initiator.sync import SyncInitiator

    ready = threading.Event()
    done = threading.Event()
    holder: dict[str, object] = {}

    def serve() -> None:
        async def main() -> None:
            async with running_target("loopback") as (server, portal):
                holder["portal"] = portal
                holder["loop"] = asyncio.get_running_loop()
                ready.set()
                while not done.is_set():
                    await asyncio.sleep(0.01)
        asyncio.run(main())

    # loopback is in-process: the facade must share the target's loop, so serve it there
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    loop = holder["loop"]
    assert isinstance(loop, asyncio.AbstractEventLoop)
    from datamover.initiator import InitiatorSession
    from datamover.plugin import create_transport

    facade = SyncInitiator.__new__(SyncInitiator)
    facade._loop = loop
    facade._thread = thread
    facade.timeout = 30

    async def make() -> InitiatorSession:
        return InitiatorSession(create_transport("loopback"), holder["portal"], None, TARGET_IQN)  # type: ignore[arg-type]

    facade.session = facade._call(make())
    facade.login()
    facade.write_blocks(0, 8, b"x" * 4096)
    assert facade.read_blocks(0, 8, 8) == b"x" * 4096
    assert facade.report_luns() == [0]
    facade.logout()
    done.set()
    thread.join(10)


# ------------------------------------------------------------------ CLI
def test_cli_plugins_lists_transports_with_capabilities() -> None:
    result = run_cli("plugins")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["TRANSPORT", "DISTRIBUTION", "MODULE"]
    names = {line.split()[0] for line in lines[1:]}
    assert {"loopback", "tcp", "iser"} <= names
    assert any("erl=0" in line for line in lines[1:])


@pytest.mark.parametrize("args,expected", [
    (["target", "serve", "--transport", "nope", "--iqn", "iqn.2026-11.org.x:y", "--lun", "memory,size=1M"],
     "unknown transport 'nope'"),
    (["target", "serve", "--iqn", "not-an-iqn", "--lun", "memory,size=1M"], "not a valid iSCSI name"),
    (["target", "serve", "--iqn", "iqn.2026-11.org.x:y"], "at least one LUN"),
    (["target", "serve", "--iqn", "iqn.2026-11.org.x:y", "--lun", "/nonexistent-dir/x.img,size=1M"], "does not exist"),
    (["target", "serve", "--iqn", "iqn.2026-11.org.x:y", "--lun", "memory"], "needs size"),
    (["discover", "--portal", "127.0.0.1:{free}"], "connection failed"),
    (["target", "serve", "--iqn", "iqn.2026-11.org.x:y", "--lun", "memory,size=100", "--portal", "127.0.0.1:0"],
     "datamover: LUN: memory backend: size 100 is not a multiple of the block size 512"),
    (["target", "serve", "--iqn", "iqn.2026-11.org.x:y", "--lun", "memory,size=1Q"],
     "size '1q' is not a byte count (a whole number, optionally with K, M, G or T)"),
])
def test_cli_errors_are_one_line(args: list[str], expected: str) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    result = run_cli(*[a.format(free=free) for a in args])
    assert result.returncode != 0
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("content,expected", [
    ("[target]\nbogus = 1\n", "target.bogus: unknown key"),
    ("[target]\nqueue_depth = 'deep'\n", "target.queue_depth: expected int"),
    ("[target]\ntransport = 'nope'\niqn='iqn.2026-11.org.x:y'\nluns=['memory,size=1M']\n", "unknown transport"),
    ("not toml [", "invalid TOML"),
    ("[wat]\n", "wat: unknown section"),
    ("[target]\nnop_interval = -1\n", "target.nop_interval: expected seconds >= 0, got -1"),
    ("[initiator]\ncommand_timeout = -0.5\n", "initiator.command_timeout: expected seconds >= 0"),
    ("[initiator]\nbusy_poll_us = -5\n", "initiator.busy_poll_us: expected microseconds >= 0, got -5"),
    ("[initiator]\nbusy_poll_us = 2.5\n", "initiator.busy_poll_us: expected int"),
    ("[keys]\nMaxBurstLength = 'abc'\n",
     "keys.MaxBurstLength: MaxBurstLength='abc': expected a number in 512..16777215 (RFC 7143 13.13)"),
    ("[keys]\nMaxConnections = 0\n", "keys.MaxConnections: MaxConnections='0': expected a number in 1..65535"),
    ("[keys]\nHeaderDigest = 'MD5'\n", "keys.HeaderDigest: HeaderDigest='MD5': allowed values are CRC32C, None"),
    ("[keys]\nInitialR2T = 'maybe'\n", "keys.InitialR2T: InitialR2T='maybe': expected Yes or No (RFC 7143 13.10)"),
    ("[keys]\nSessionType = 'Discovery'\n", "keys.SessionType: set by the login itself"),
    ("[keys]\nCHAP_A = 5\n", "keys.CHAP_A: set by the login itself"),
    ("[transport.loopback]\nfrobnicate = true\n[target]\ntransport='loopback'\niqn='iqn.2026-11.org.x:y'\nluns=['memory,size=1M']\n",
     "transport.loopback.frobnicate: unknown option"),
])
def test_config_errors_name_file_key_and_problem(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    result = run_cli("target", "serve", "-c", str(path))
    assert result.returncode != 0
    assert str(path) in result.stderr and expected in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [["target", "serve"], ["discover", "--portal", "127.0.0.1:1"]])
@pytest.mark.parametrize("option,expected", [
    ("recv_buffer = 100", "recv_buffer must be an integer >= 4096, not 100"),
    ("congestion = 'nosuchcc0'", "congestion='nosuchcc0'"),
    ("congestion = 'Cubic!'", "congestion must be the name of a TCP congestion control algorithm"),
])
def test_transport_option_values_the_plugin_refuses_are_one_line(tmp_path: Path, command: list[str], option: str,
                                                                   expected: str) -> None:
    """Values of the right TOML type that the transport cannot use are refused when the
    transport is made, before any socket, as one line naming the transport (not a traceback
    from the first listen or connect)."""
    path = tmp_path / "bad.toml"
    path.write_text(f"[target]\niqn = 'iqn.2026-11.org.x:y'\nluns = ['memory,size=1M']\n[transport.tcp]\n{option}\n")
    result = run_cli(*command, "-c", str(path))
    assert result.returncode != 0
    assert "transport 'tcp'" in result.stderr and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("args,expected", [
    (["read", "--lba", "-5"], "argument --lba: -5 is below 0"),
    (["read", "--count", "0"], "argument --count: 0 is below 1"),
    (["read", "--lba", "ten"], "argument --lba: 'ten' is not a whole number"),
    (["write", "--lun", "99999", "-i", "x"], "argument --lun: LUN 99999 is above 16383"),
])
def test_cli_block_addresses_are_checked_before_connecting(args: list[str], expected: str) -> None:
    """A negative LBA, an empty count or a LUN no SAM address holds is a usage error (exit 2,
    argparse's usage and one error line), found before any connection is tried."""
    result = run_cli(*args, "--portal", "127.0.0.1:1", "--target", "iqn.2026-11.org.x:y")
    assert result.returncode == 2
    assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert "connection failed" not in result.stderr


def test_cli_lun_file_larger_than_asked_is_a_lun_error(tmp_path: Path) -> None:
    """A LUN file that holds more than size= asks for is refused as a LUN problem (it was
    reported as "connection failed"), and the file is left as it was."""
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(1 << 20))
    result = run_cli("target", "serve", "--iqn", "iqn.2026-11.org.x:y", "--portal", "127.0.0.1:0",
                     "--lun", f"{image},size=512K")
    assert result.returncode == 1
    assert result.stderr.strip() == (f"datamover: LUN: {image}: holds 1048576 bytes but 524288 were asked; "
                                     "refusing to shrink or resize"), result.stderr
    assert image.stat().st_size == 1 << 20


def test_cli_lun_path_that_is_not_a_file(tmp_path: Path) -> None:
    result = run_cli("target", "serve", "--iqn", "iqn.2026-11.org.x:y", "--lun", f"{tmp_path},size=1M")
    assert result.returncode != 0 and "not a regular file" in result.stderr


@pytest.mark.parametrize("content,expected", [
    ("[keys]\nMaxBurstLenght = 65536\n", "keys.MaxBurstLenght: not an iSCSI key"),
    ("[transport.nope]\nx = 1\n", "transport.nope: unknown transport"),
    ("[transport.tcp]\nnodelay = 'yes'\n", "transport.tcp.nodelay: expected bool"),
    ("[initiator]\nisid = 'zz'\ntransport='loopback'\nportal='loopback:1'\n", "initiator.isid"),
])
def test_config_checks_every_section(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    result = run_cli("discover", "-c", str(path))
    assert result.returncode != 0 and expected in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
