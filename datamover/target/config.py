"""Target configuration as typed, validated dataclasses (TOML and CLI both build these)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from datamover.di import Portal

#: iqn.yyyy-mm.reverse.domain[:identifier], eui.16hex, naa.16 or 32 hex (RFC 7143 4.2.7)
_NAME_RE = re.compile(r"^(iqn\.\d{4}-\d{2}\.[a-z0-9][a-z0-9.\-]*(:.*)?|eui\.[0-9a-f]{16}|naa\.([0-9a-f]{16}|[0-9a-f]{32}))$")


def check_iscsi_name(name: str) -> str:
    """Validate an iSCSI name; returns it lower-cased as RFC 7143 4.2.7.1 normalises."""
    lowered = name.lower()
    if not _NAME_RE.match(lowered) or len(lowered.encode()) > 223:
        raise ValueError(f"{name!r} is not a valid iSCSI name (iqn.YYYY-MM.domain[:id], eui.HEX16, naa.HEX)")
    return lowered


@dataclass(frozen=True, slots=True)
class ChapConfig:
    """CHAP credentials: what the initiator must present (and, if set, the target's own
    credentials for mutual CHAP). Secrets are bytes and never printed."""

    user: str
    secret: bytes
    mutual_user: str | None = None
    mutual_secret: bytes | None = None

    def __repr__(self) -> str:
        return f"ChapConfig(user={self.user!r}, secret=<hidden>, mutual={'yes' if self.mutual_user else 'no'})"

    @classmethod
    def parse(cls, text: str) -> ChapConfig:
        """``USER:SECRET`` or ``USER:SECRET:MUTUALUSER:MUTUALSECRET``."""
        parts = text.split(":")
        if len(parts) == 2 and all(parts):
            return cls(parts[0], parts[1].encode())
        if len(parts) == 4 and all(parts):
            return cls(parts[0], parts[1].encode(), parts[2], parts[3].encode())
        raise ValueError("CHAP credentials must be USER:SECRET or USER:SECRET:MUTUAL_USER:MUTUAL_SECRET")


@dataclass(frozen=True, slots=True)
class LunConfig:
    """One logical unit: a file path (created sparse at ``size`` if missing) or ``memory``."""

    path: str
    size: int | None = None
    block_size: int = 512
    read_only: bool = False
    lun: int | None = None
    #: removable medium (INQUIRY RMB=1): START STOP UNIT can eject and load it
    removable: bool = False
    #: physical block size in bytes (READ CAPACITY(16) LBPPBE); None = the logical block size
    physical_block_size: int | None = None
    #: map the file read-only and read by copying out of the mapping instead of pread
    #: (backend.py says what a media error costs then); file LUNs only
    mmap: bool = False

    @classmethod
    def parse(cls, text: str) -> LunConfig:
        """``PATH[,size=N[K|M|G]][,block=512|4096][,phys=4096][,ro][,removable][,mmap]`` or ``memory,size=N``."""
        path, *opts = text.split(",")
        size: int | None = None
        block = 512
        read_only = False
        removable = False
        physical: int | None = None
        mapped = False
        for opt in opts:
            name, _, value = opt.partition("=")
            if name == "size":
                size = parse_size(value)
            elif name in ("block", "block_size"):
                block = int(value)
            elif name in ("ro", "read_only"):
                read_only = _flag(name, value, text)
            elif name in ("phys", "physical_block"):
                physical = int(value)
            elif name in ("removable", "rmb"):
                removable = _flag(name, value, text)
            elif name == "mmap":
                mapped = _flag(name, value, text)
            else:
                raise ValueError(f"unknown LUN option {name!r} in {text!r}")
        if path == "memory" and size is None:
            raise ValueError("a memory LUN needs size=N")
        if path == "memory" and mapped:
            raise ValueError(f"mmap applies to file LUNs; a memory LUN is in memory already ({text!r})")
        if block not in (512, 1024, 2048, 4096):
            raise ValueError(f"block size {block} in {text!r} must be 512, 1024, 2048 or 4096")
        if physical is not None and (physical < block or physical & (physical - 1)):
            raise ValueError(f"physical block size {physical} in {text!r} must be a power of two >= {block}")
        return cls(path, size, block, read_only, removable=removable, physical_block_size=physical, mmap=mapped)


def _flag(name: str, value: str, text: str) -> bool:
    """A LUN option's on/off value: bare (on), 1/yes/true or 0/no/false; anything else is
    refused rather than read as off."""
    lowered = value.lower()
    if lowered in ("", "1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off"):
        return False
    raise ValueError(f"LUN option {name}={value!r} in {text!r}: expected yes or no")


def parse_size(text: str) -> int:
    """``4096``, ``64K``, ``256M``, ``1G`` (powers of 1024)."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    scale = units.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in units else text
    try:
        value = int(number) * scale
    except ValueError:
        raise ValueError(f"size {text!r} is not a byte count (a whole number, optionally with K, M, G or T)") from None
    if value <= 0:
        raise ValueError(f"size {text!r} must be positive")
    return value


@dataclass(slots=True)
class TargetConfig:
    """One iSCSI target node."""

    iqn: str
    luns: list[LunConfig] = field(default_factory=list)
    #: initiator names allowed to log in; empty = everyone
    acl: list[str] = field(default_factory=list)
    chap: ChapConfig | None = None
    alias: str | None = None
    #: unit attention "power on occurred" on each new I_T nexus (SPC); off for clean starts
    power_on_ua: bool = True
    #: honour TARGET WARM/COLD RESET (they abort every initiator's tasks; a cold reset also
    #: logs the others out); when False they are refused with "authorization failed"
    allow_target_reset: bool = True


@dataclass(slots=True)
class TargetServerConfig:
    """A target process: transports, portals, targets and session-wide defaults."""

    targets: list[TargetConfig] = field(default_factory=list)
    portals: list[Portal] = field(default_factory=lambda: [Portal("127.0.0.1", 3260)])
    transport: str = "loopback"
    transport_options: dict[str, object] = field(default_factory=dict)
    #: operational keys this target prefers (RFC 7143 names), over DEFAULT_OPERATIONAL_KEYS
    keys: dict[str, str] = field(default_factory=dict)
    #: the CmdSN window offered to each session (MaxCmdSN - ExpCmdSN + 1)
    queue_depth: int = 128
    login_timeout: float = 15.0
    #: NOP-In keepalive interval in seconds on idle connections (0 = off)
    nop_interval: float = 0.0
    nop_timeout: float = 10.0
    discovery_chap: ChapConfig | None = None
    max_sessions: int = 1024
    #: connections at once, logging in or logged in, across the portals; more are closed
    #: as soon as they are accepted (a flood of idle sockets cannot pile up logins)
    max_connections: int = 256
    max_tasks_per_session: int = 1024
