"""TOML configuration: one schema for targets, initiators and transports.

Every command-line flag has a key here and the CLI overrides the file. Errors are one line
that names the file, the key and the problem (``ConfigError``), never a traceback.

Schema (see docs/config.md for every key)::

    [target]
    transport = "tcp"                 # any registered transport
    portals = ["127.0.0.1:3260"]
    iqn = "iqn.2026-11.org.example:disk1"
    luns = ["disk.img,size=256M", "memory,size=64M"]
    acl = ["iqn.1994-05.com.redhat:client"]
    chap = "user:secret"              # or "user:secret:mutualuser:mutualsecret"
    queue_depth = 128
    login_timeout = 15.0
    nop_interval = 0.0
    discovery_chap = "user:secret"
    power_on_ua = true

    [initiator]
    transport = "tcp"
    portal = "127.0.0.1:3260"
    target = "iqn.2026-11.org.example:disk1"
    name = "iqn.2026-11.org.example:host"
    chap = "user:secret"
    login_timeout = 15.0
    nop_interval = 0.0
    busy_poll_us = 0                  # poll instead of sleeping while commands are in flight

    [keys]                            # RFC 7143 operational keys, both roles
    MaxBurstLength = 1048576

    [transport.tcp]                   # options of one transport
    nodelay = true
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datamover.di import Portal
from datamover.target.config import ChapConfig, LunConfig, TargetConfig, TargetServerConfig, check_iscsi_name


class ConfigError(ValueError):
    """A configuration problem, rendered as ``FILE: key: problem``."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        super().__init__(f"{source}: {key}: {problem}")
        self.source, self.key, self.problem = source, key, problem


_TARGET_KEYS: dict[str, type | tuple[type, ...]] = {
    "transport": str, "portals": list, "portal": str, "iqn": str, "luns": list, "lun": str, "acl": list,
    "chap": str, "queue_depth": int, "login_timeout": (int, float), "nop_interval": (int, float),
    "discovery_chap": str, "power_on_ua": bool, "alias": str, "allow_target_reset": bool,
    "max_connections": int,
}
_INITIATOR_KEYS: dict[str, type | tuple[type, ...]] = {
    "transport": str, "portal": str, "target": str, "name": str, "chap": str, "isid": (int, str),
    "login_timeout": (int, float), "nop_interval": (int, float), "command_timeout": (int, float),
    "recovery_attempts": int, "busy_poll_us": int,
}
_TOP_KEYS = {"target", "initiator", "keys", "transport", "compare"}


@dataclass(slots=True)
class FileConfig:
    """A parsed, type-checked config file (sections kept as validated dicts)."""

    source: str = "<defaults>"
    target: dict[str, Any] = field(default_factory=dict)
    initiator: dict[str, Any] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    transport: dict[str, dict[str, Any]] = field(default_factory=dict)
    compare: dict[str, Any] = field(default_factory=dict)


def _check_section(source: str, section: str, data: object, schema: dict[str, type | tuple[type, ...]]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(source, section, "must be a table")
    for key, value in data.items():
        if key not in schema:
            raise ConfigError(source, f"{section}.{key}", f"unknown key (known: {', '.join(sorted(schema))})")
        expected = schema[key]
        if isinstance(value, bool) and expected in (int, (int, float)):
            raise ConfigError(source, f"{section}.{key}", f"expected a number, got {value!r}")
        if not isinstance(value, expected):
            names = expected.__name__ if isinstance(expected, type) else " or ".join(t.__name__ for t in expected)
            raise ConfigError(source, f"{section}.{key}", f"expected {names}, got {type(value).__name__} {value!r}")
        if key in _SECONDS and value < 0:
            raise ConfigError(source, f"{section}.{key}", f"expected seconds >= 0, got {value!r}")
        if key == "busy_poll_us" and value < 0:
            raise ConfigError(source, f"{section}.{key}", f"expected microseconds >= 0, got {value!r}")
    return dict(data)


#: durations in seconds (0: the check is off, where the key allows it); never negative
_SECONDS = frozenset({"login_timeout", "nop_interval", "command_timeout"})


def load_config(path: str | Path | None) -> FileConfig:
    """Read and type-check a TOML config file (None -> empty config)."""
    if path is None:
        return FileConfig()
    source = str(path)
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(source, "-", "file not found") from None
    except OSError as exc:
        raise ConfigError(source, "-", f"cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "-", f"invalid TOML: {exc}") from None
    for key in raw:
        if key not in _TOP_KEYS:
            raise ConfigError(source, key, f"unknown section (known: {', '.join(sorted(_TOP_KEYS))})")
    config = FileConfig(source=source)
    if "target" in raw:
        config.target = _check_section(source, "target", raw["target"], _TARGET_KEYS)
    if "initiator" in raw:
        config.initiator = _check_section(source, "initiator", raw["initiator"], _INITIATOR_KEYS)
    if "keys" in raw:
        keys = raw["keys"]
        if not isinstance(keys, dict):
            raise ConfigError(source, "keys", "must be a table")
        for key, value in keys.items():
            if isinstance(value, bool):
                value = "Yes" if value else "No"
            if not isinstance(value, (str, int)):
                raise ConfigError(source, f"keys.{key}", f"expected a string or integer, got {value!r}")
            config.keys[key] = str(value)
    if "transport" in raw:
        transports = raw["transport"]
        if not isinstance(transports, dict) or not all(isinstance(v, dict) for v in transports.values()):
            raise ConfigError(source, "transport", "must be tables like [transport.tcp]")
        config.transport = {name: dict(options) for name, options in transports.items()}
        for name in config.transport:
            check_transport(source, f"transport.{name}", name)
            transport_options(config, name)  # every section is checked, used or not
    _check_keys(config)
    if "compare" in raw:
        if not isinstance(raw["compare"], dict):
            raise ConfigError(source, "compare", "must be a table")
        config.compare = dict(raw["compare"])
    return config


#: keys the login sends or answers itself (names, session type, authentication, addresses)
_LOGIN_SETS = frozenset({"AuthMethod", "SessionType", "TargetName", "InitiatorName", "TargetAlias",
                         "InitiatorAlias", "TargetAddress", "TargetPortalGroupTag", "SendTargets"})


def _check_keys(config: FileConfig) -> None:
    """[keys] names must be iSCSI keys some registered transport negotiates (RFC 7143's
    table plus every transport's own rows), or X- extension keys; values must be what the
    key's row takes (type, range, allowed values), checked now rather than at each login."""
    from datamover.negotiation.engine import NegotiationConfigError, check_key_value
    from datamover.negotiation.keys import RFC7143_KEYS
    from datamover.plugin import PluginError, get_registry

    rows = {row.name: row for row in RFC7143_KEYS}
    try:
        for info in get_registry():
            for row in info.capabilities.login_keys:
                rows.setdefault(row.name, row)
    except PluginError:
        pass
    for name, value in config.keys.items():
        if name.startswith("CHAP_") or name in _LOGIN_SETS:
            raise ConfigError(config.source, f"keys.{name}", "set by the login itself, not by [keys] "
                              "(CHAP: the target's chap / the initiator's chap settings)")
        row = rows.get(name)
        if row is None:
            if name.startswith(("X-", "X#")):
                continue
            raise ConfigError(config.source, f"keys.{name}", "not an iSCSI key any registered transport negotiates")
        try:
            check_key_value(row, value)
        except NegotiationConfigError as exc:
            raise ConfigError(config.source, f"keys.{name}", str(exc)) from None


def check_transport(source: str, key: str, name: str) -> str:
    """Fail with a config error unless ``name`` is a registered transport."""
    from datamover.plugin import PluginError, get_registry

    try:
        registry = get_registry()
    except PluginError as exc:
        raise ConfigError(source, key, str(exc)) from None
    if name not in registry:
        raise ConfigError(source, key, f"unknown transport {name!r} (registered: {', '.join(registry.names())})")
    return name


def transport_options(config: FileConfig, name: str) -> dict[str, Any]:
    """Options of ``[transport.NAME]``, checked against what the plugin declares."""
    from datamover.plugin import get_registry

    options = config.transport.get(name, {})
    declared = get_registry().get(name).cls.option_names()
    for key, value in options.items():
        if key not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise ConfigError(config.source, f"transport.{name}.{key}", f"unknown option (known: {known})")
        expected = declared[key]
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(config.source, f"transport.{name}.{key}",
                              f"expected {expected.__name__}, got {value!r}")
    return dict(options)


def build_target_config(config: FileConfig, overrides: dict[str, Any]) -> TargetServerConfig:
    """Merge the [target] section with CLI overrides into a TargetServerConfig."""
    merged = dict(config.target)
    merged.update({k: v for k, v in overrides.items() if v is not None and v != []})
    source = config.source if not overrides else f"{config.source} + command line"

    def problem(key: str, text: str) -> ConfigError:
        return ConfigError(source, f"target.{key}", text)

    transport = check_transport(source, "target.transport", merged.get("transport", "tcp"))
    portals_text = merged.get("portals") or ([merged["portal"]] if "portal" in merged else ["127.0.0.1:3260"])
    portals: list[Portal] = []
    for index, text in enumerate(portals_text):
        try:
            portal = Portal.parse(str(text))
            portals.append(Portal(portal.host, portal.port, portal.tpgt if "," in str(text) else index + 1))
        except ValueError as exc:
            raise problem("portals", str(exc)) from None
    iqn = merged.get("iqn")
    if not iqn:
        raise problem("iqn", "required (the target's iSCSI name)")
    try:
        iqn = check_iscsi_name(iqn)
    except ValueError as exc:
        raise problem("iqn", str(exc)) from None
    lun_texts = merged.get("luns") or ([merged["lun"]] if "lun" in merged else [])
    if not lun_texts:
        raise problem("luns", "at least one LUN is required (PATH[,size=N] or memory,size=N)")
    luns: list[LunConfig] = []
    for text in lun_texts:
        try:
            lun = LunConfig.parse(str(text))
        except ValueError as exc:
            raise problem("luns", str(exc)) from None
        if lun.path != "memory":
            path = Path(lun.path)
            if path.exists() and not path.is_file():
                raise problem("luns", f"{lun.path}: not a regular file")
            if not path.exists() and lun.size is None:
                raise problem("luns", f"{lun.path}: does not exist and no size=N was given to create it")
            if not path.parent.exists():
                raise problem("luns", f"{lun.path}: directory {path.parent} does not exist")
            if path.exists():
                try:
                    with open(path, "rb"):
                        pass
                except OSError as exc:
                    raise problem("luns", f"{lun.path}: unreadable ({exc.strerror})") from None
        luns.append(lun)
    chap = None
    if merged.get("chap"):
        try:
            chap = ChapConfig.parse(merged["chap"])
        except ValueError as exc:
            raise problem("chap", str(exc)) from None
    discovery_chap = None
    if merged.get("discovery_chap"):
        try:
            discovery_chap = ChapConfig.parse(merged["discovery_chap"])
        except ValueError as exc:
            raise problem("discovery_chap", str(exc)) from None
    acl = []
    for name in merged.get("acl", []):
        try:
            acl.append(check_iscsi_name(str(name)))
        except ValueError as exc:
            raise problem("acl", str(exc)) from None
    target = TargetConfig(iqn=iqn, luns=luns, acl=acl, chap=chap, alias=merged.get("alias"),
                          power_on_ua=bool(merged.get("power_on_ua", True)),
                          allow_target_reset=bool(merged.get("allow_target_reset", True)))
    queue_depth = int(merged.get("queue_depth", 128))
    if not 1 <= queue_depth <= 4096:
        raise problem("queue_depth", "must be between 1 and 4096")
    return TargetServerConfig(
        targets=[target], portals=portals, transport=transport,
        transport_options=transport_options(config, transport), keys=dict(config.keys),
        queue_depth=queue_depth, login_timeout=float(merged.get("login_timeout", 15.0)),
        nop_interval=float(merged.get("nop_interval", 0.0)), discovery_chap=discovery_chap,
        max_connections=int(merged.get("max_connections", 256)),
    )
