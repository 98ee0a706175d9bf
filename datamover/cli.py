"""The ``datamover`` command line.

Every failure a user can cause (bad flag, bad config, unreachable portal, refused login)
ends with one line on stderr and a non-zero exit, never a traceback. ``--debug`` shows
tracebacks for bug reports.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from datamover.config import ConfigError, FileConfig, build_target_config, check_transport, load_config, transport_options
from datamover.di import NotImplementedTransport, Portal

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    """A user-facing error: printed as one line."""


# ====================================================================== helpers
def _run(coro: Any) -> Any:
    try:
        import uvloop  # type: ignore[import-not-found]

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def _initiator_settings(args: argparse.Namespace, config: FileConfig) -> dict[str, Any]:
    section = dict(config.initiator)
    for key in ("transport", "portal", "target", "name", "chap"):
        value = getattr(args, key, None)
        if value is not None:
            section[key] = value
    section.setdefault("transport", "tcp")
    check_transport(config.source, "initiator.transport", section["transport"])
    return section


def _make_initiator(section: dict[str, Any], config: FileConfig) -> tuple[Any, Portal, Any]:
    from datamover.initiator import InitiatorConfig
    from datamover.plugin import create_transport

    if "portal" not in section:
        raise ConfigError(config.source, "initiator.portal", "required (HOST:PORT)")
    try:
        portal = Portal.parse(section["portal"])
    except ValueError as exc:
        raise ConfigError(config.source, "initiator.portal", str(exc)) from None
    init = InitiatorConfig(keys=dict(config.keys))
    if "name" in section:
        from datamover.target.config import check_iscsi_name

        try:
            init.name = check_iscsi_name(section["name"])
        except ValueError as exc:
            raise ConfigError(config.source, "initiator.name", str(exc)) from None
    if section.get("chap"):
        parts = section["chap"].split(":")
        if len(parts) not in (2, 4) or not all(parts):
            raise ConfigError(config.source, "initiator.chap", "must be USER:SECRET[:TARGETUSER:TARGETSECRET]")
        init.chap_user, init.chap_secret = parts[0], parts[1].encode()
        if len(parts) == 4:
            init.mutual_user, init.mutual_secret = parts[2], parts[3].encode()
    for key in ("login_timeout", "nop_interval", "command_timeout"):
        if key in section:
            setattr(init, key, float(section[key]))
    if "recovery_attempts" in section:
        init.recovery_attempts = int(section["recovery_attempts"])
    if "busy_poll_us" in section:
        init.busy_poll_us = int(section["busy_poll_us"])
    if "isid" in section:
        try:
            isid = int(section["isid"], 0) if isinstance(section["isid"], str) else int(section["isid"])
        except ValueError:
            isid = -1
        if not 0 <= isid < 1 << 48:
            raise ConfigError(config.source, "initiator.isid", "must be a 48-bit integer (e.g. 0x800000000001)")
        init.isid = isid
    transport = create_transport(section["transport"], transport_options(config, section["transport"]))
    return transport, portal, init


# ====================================================================== commands
def cmd_plugins(args: argparse.Namespace) -> int:
    from datamover.plugin import get_registry

    registry = get_registry()
    rows = []
    for info in registry:
        caps = info.capabilities
        rows.append((info.name, f"{info.distribution} {info.version}".strip(), info.module, " ".join(caps.summary())))
    headers = ("TRANSPORT", "DISTRIBUTION", "MODULE")
    width = [max([len(headers[i])] + [len(r[i]) for r in rows]) for i in range(3)]
    print(f"{'TRANSPORT':<{width[0]}}  {'DISTRIBUTION':<{width[1]}}  {'MODULE':<{width[2]}}  CAPABILITIES")
    for name, dist, module, caps_text in rows:
        print(f"{name:<{width[0]}}  {dist:<{width[1]}}  {module:<{width[2]}}  {caps_text}")
    return EXIT_OK


def cmd_target_serve(args: argparse.Namespace) -> int:
    from datamover.target.config import ChapConfig  # noqa: F401  (validated in build_target_config)

    config = load_config(args.config)
    overrides = {"transport": args.transport, "portals": args.portal, "iqn": args.iqn, "luns": args.lun,
                 "chap": args.chap, "acl": args.acl, "queue_depth": args.queue_depth}
    server_config = build_target_config(config, overrides)
    return _run(_serve(server_config))


async def _serve(server_config: Any) -> int:
    from datamover.target import TargetServer

    server = TargetServer(server_config)
    try:
        portals = await server.start()
    except NotImplementedTransport as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot listen: {exc.strerror or exc}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    target = server_config.targets[0]
    print(f"datamover target {target.iqn} serving {len(target.luns)} LUN(s) over "
          f"{server.transport.describe()} on {', '.join(str(p) for p in portals)}", flush=True)
    await stop.wait()
    await server.stop()
    print("datamover target stopped", flush=True)
    return EXIT_OK


def cmd_discover(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    section = _initiator_settings(args, config)
    transport, portal, init = _make_initiator(section, config)

    async def run() -> int:
        from datamover.initiator import discover

        targets = await discover(transport, portal, init)
        for name, addresses in targets.items():
            for address in addresses or ["(no address)"]:
                print(f"{address} {name}")
        if not targets:
            print("no targets found", file=sys.stderr)
        return EXIT_OK

    return _run(run())


async def _session(section: dict[str, Any], config: FileConfig) -> Any:
    from datamover.initiator import InitiatorSession

    transport, portal, init = _make_initiator(section, config)
    if not section.get("target"):
        raise ConfigError(config.source, "initiator.target", "required (the target's iSCSI name)")
    session = InitiatorSession(transport, portal, init, section["target"])
    await session.login()
    return session


#: SPC-5 table 67, the peripheral device types a login summary may meet
_DEVICE_TYPES = {0x01: "sequential-access device", 0x05: "CD/DVD device", 0x08: "medium changer",
                 0x0C: "storage array controller", 0x0D: "enclosure services device",
                 0x1F: "unknown or no device type"}


def cmd_login(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    section = _initiator_settings(args, config)

    async def run() -> int:
        session = await _session(section, config)
        try:
            luns = await session.report_luns()
            print(f"logged in to {section['target']} at {section['portal']} over {session.transport.describe()}")
            print(f"TSIH {session.tsih:#06x}, LUNs: {', '.join(map(str, luns)) or 'none'}")
            for key in sorted(session.agreed):
                print(f"  {key}={session.agreed[key]}")
            for lun in luns:
                kind = (await session.inquiry(lun, length=36))[0] & 0x1F
                if kind != 0x00:
                    # not a block device (tgtd's LUN 0 is its controller, type 0x0c): it has
                    # no capacity to read
                    print(f"  LUN {lun}: {_DEVICE_TYPES.get(kind, 'device')} (peripheral device type {kind:#04x})")
                    continue
                blocks, size = await session.read_capacity(lun)
                print(f"  LUN {lun}: {blocks} blocks of {size} bytes ({blocks * size / 2**20:.1f} MiB)")
        finally:
            await session.logout()
        return EXIT_OK

    return _run(run())


def cmd_read(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    section = _initiator_settings(args, config)

    async def run() -> int:
        session = await _session(section, config)
        try:
            _, block_size = await session.read_capacity(args.lun)
            data = await session.read_blocks(args.lun, args.lba, args.count, block_size)
            if args.output == "-":
                sys.stdout.buffer.write(bytes(data))
            else:
                with open(args.output, "wb") as handle:
                    handle.write(data)
                print(f"read {len(data)} bytes from LBA {args.lba} into {args.output}", file=sys.stderr)
        finally:
            await session.logout()
        return EXIT_OK

    return _run(run())


def cmd_write(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    section = _initiator_settings(args, config)
    try:
        with open(args.input, "rb") as handle:
            payload = handle.read()
    except OSError as exc:
        raise CliError(f"{args.input}: {exc.strerror}") from None

    async def run() -> int:
        session = await _session(section, config)
        try:
            _, block_size = await session.read_capacity(args.lun)
            if len(payload) % block_size:
                raise CliError(f"{args.input}: {len(payload)} bytes is not a multiple of the block size {block_size}")
            await session.write_blocks(args.lun, args.lba, payload, block_size, fua=args.fua)
            print(f"wrote {len(payload)} bytes at LBA {args.lba}", file=sys.stderr)
        finally:
            await session.logout()
        return EXIT_OK

    return _run(run())


def cmd_verify(args: argparse.Namespace) -> int:
    """Write random data in mixed sizes, read it back, compare; print progress."""
    config = load_config(args.config)
    section = _initiator_settings(args, config)

    async def run() -> int:
        import random

        session = await _session(section, config)
        rng = random.Random(args.seed)
        try:
            blocks, block_size = await session.read_capacity(args.lun)
            total = min(args.bytes, blocks * block_size)
            done = 0
            digest_w = hashlib.sha256()
            start = time.perf_counter()
            lba = 0
            while done < total:
                size = min(max(block_size, rng.choice((512, 4096, 65536, 1 << 20))), total - done)
                size -= size % block_size
                if size == 0:
                    break  # less than one block left
                chunk = rng.randbytes(size)
                await session.write_blocks(args.lun, lba, chunk, block_size)
                back = await session.read_blocks(args.lun, lba, size // block_size, block_size)
                if bytes(back) != chunk:
                    raise CliError(f"verify FAILED at LBA {lba} ({size} bytes)")
                digest_w.update(chunk)
                lba += size // block_size
                done += size
                if sys.stderr.isatty():
                    print(f"\rverified {done / 2**20:8.1f} / {total / 2**20:.1f} MiB", end="", file=sys.stderr)
            elapsed = time.perf_counter() - start
            print(f"\nverified {done} bytes in {elapsed:.2f} s ({done / elapsed / 2**20:.1f} MiB/s), "
                  f"sha256 {digest_w.hexdigest()[:16]}", file=sys.stderr)
        finally:
            await session.logout()
        return EXIT_OK

    return _run(run())


# ====================================================================== parser
def _size(text: str) -> int:
    from datamover.target.config import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _whole(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}")
        return value
    return parse


def _lun_number(text: str) -> int:
    """A LUN as the initiator addresses it (peripheral below 256, flat space up to MAX_LUN)."""
    from datamover.scsi.lunmap import MAX_LUN

    value = _whole(0)(text)
    if value > MAX_LUN:
        raise argparse.ArgumentTypeError(f"LUN {value} is above {MAX_LUN}")
    return value


def _add_initiator_flags(parser: argparse.ArgumentParser, needs_target: bool = True) -> None:
    parser.add_argument("-c", "--config", help="TOML config file ([initiator], [keys], [transport.NAME])")
    parser.add_argument("--transport", help="registered transport name (default tcp)")
    parser.add_argument("--portal", help="HOST:PORT of the target portal")
    if needs_target:
        parser.add_argument("--target", help="target iSCSI name (IQN)")
    parser.add_argument("--name", help="initiator iSCSI name")
    parser.add_argument("--chap", help="USER:SECRET or USER:SECRET:TARGETUSER:TARGETSECRET (mutual)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="datamover", description="iSCSI over any transport (RFC 5047 datamovers).")
    parser.add_argument("--debug", action="store_true", help="verbose logs and tracebacks")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plugins", help="list registered transports with their capabilities")
    p.set_defaults(func=cmd_plugins)

    target = sub.add_parser("target", help="run an iSCSI target").add_subparsers(dest="target_command", required=True)
    p = target.add_parser("serve", help="serve LUNs until SIGINT/SIGTERM")
    p.add_argument("-c", "--config", help="TOML config file ([target], [keys], [transport.NAME])")
    p.add_argument("--transport", help="registered transport name (default tcp)")
    p.add_argument("--portal", action="append", help="HOST:PORT[,TPGT] to listen on (repeatable)")
    p.add_argument("--iqn", help="target iSCSI name")
    p.add_argument("--lun", action="append", help="PATH[,size=N][,block=512|4096][,phys=4096][,ro][,removable][,mmap] or memory,size=N (repeatable)")
    p.add_argument("--chap", help="require CHAP: USER:SECRET[:MUTUALUSER:MUTUALSECRET]")
    p.add_argument("--acl", action="append", help="initiator name allowed to log in (repeatable; default all)")
    p.add_argument("--queue-depth", type=int, help="CmdSN window per session (default 128)")
    p.set_defaults(func=cmd_target_serve)

    p = sub.add_parser("discover", help="SendTargets discovery")
    _add_initiator_flags(p, needs_target=False)
    p.set_defaults(func=cmd_discover)

    p = sub.add_parser("login", help="log in, show negotiated keys and LUNs, log out")
    _add_initiator_flags(p)
    p.set_defaults(func=cmd_login)

    p = sub.add_parser("read", help="read blocks to a file")
    _add_initiator_flags(p)
    p.add_argument("--lun", type=_lun_number, default=0)
    p.add_argument("--lba", type=_whole(0), default=0)
    p.add_argument("--count", type=_whole(1), default=1, help="number of blocks")
    p.add_argument("-o", "--output", default="-", help="file to write (default stdout)")
    p.set_defaults(func=cmd_read)

    p = sub.add_parser("write", help="write a file's bytes at an LBA")
    _add_initiator_flags(p)
    p.add_argument("--lun", type=_lun_number, default=0)
    p.add_argument("--lba", type=_whole(0), default=0)
    p.add_argument("-i", "--input", required=True, help="file to write (a multiple of the block size)")
    p.add_argument("--fua", action="store_true", help="force unit access")
    p.set_defaults(func=cmd_write)

    p = sub.add_parser("verify", help="write random data in mixed sizes and read it back")
    _add_initiator_flags(p)
    p.add_argument("--lun", type=_lun_number, default=0)
    p.add_argument("--bytes", type=_size, default=16 << 20, help="how much to write and verify (e.g. 64M)")
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=cmd_verify)

    try:
        from datamover.compare.cli import add_compare_parser
    except ImportError:
        pass
    else:
        add_compare_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from datamover.plugin import PluginError
    from datamover.session.errors import CommandFailed, LoginError, SessionClosed

    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (CliError, ConfigError, PluginError, LoginError, CommandFailed, SessionClosed,
            NotImplementedTransport) as exc:
        if args.debug:
            raise
        print(f"datamover: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except (ConnectionError, OSError, TimeoutError, asyncio.TimeoutError) as exc:
        if args.debug:
            raise
        from datamover.scsi.backend import BackendError

        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        # a LUN's file or RAM disk that cannot be opened as asked is not a network failure
        what = "LUN" if isinstance(exc, BackendError) else "connection failed"
        print(f"datamover: {what}: {text}", file=sys.stderr)
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
