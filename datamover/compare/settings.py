"""What ``datamover compare`` runs: the ``[compare]`` TOML section merged with flags.

Every key of ``[compare]`` has a flag and the flag wins. Problems are one line that names
the source, the key and what is wrong (:class:`~datamover.config.ConfigError`), so a typo
in a config file never turns into a traceback halfway through a run.

``[compare]`` keys::

    transports = ["loopback", "tcp"]     # default: every registered transport
    bytes = "8M"                         # per workload step (int or size string)
    duration = 0.0                       # seconds per step; > 0 runs by time instead
    block_sizes = [4096, 65536, "1M"]
    queue_depth = 8
    patterns = ["seq", "rand"]
    ops = ["write", "read", "mixed"]
    mix_read = 0.7                       # share of reads in "mixed" steps
    seed = 1
    verify = true
    lun_size = "16M"                     # the memory LUN of targets the runner starts
    io_timeout = 30.0                    # seconds one I/O may take
    iqn = "iqn.2026-11.org.example:disk" # of an already-running target
    targets = { tcp = "10.0.0.5:3260" }  # already-running targets, per transport
    in_process = false                   # run cross-process transports' targets in-process
    json = "report.json"
    plot = "plots/"
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from datamover.config import ConfigError, FileConfig
from datamover.di import Portal
from datamover.target.config import check_iscsi_name, parse_size

PATTERNS = ("seq", "rand")
OPS = ("write", "read", "mixed")
DEFAULT_TARGET_IQN = "iqn.2026-11.org.datamover:compare"
DEFAULT_INITIATOR_IQN = "iqn.2026-11.org.datamover:compare-host"


@dataclass(slots=True)
class CompareSettings:
    """A validated comparative run.

    ``bytes`` is the size of the region every step covers (and the byte budget of a step
    when ``duration`` is 0); with ``duration`` > 0 a step repeats whole passes over its
    region until the time is up, and cross-checks look at the I/Os every transport
    completed.
    """

    transports: list[str] = field(default_factory=list)  # empty: every registered one
    bytes: int = 8 << 20
    duration: float = 0.0
    block_sizes: list[int] = field(default_factory=lambda: [4096, 65536, 1 << 20])
    queue_depth: int = 8
    patterns: list[str] = field(default_factory=lambda: list(PATTERNS))
    ops: list[str] = field(default_factory=lambda: list(OPS))
    mix_read: float = 0.7
    seed: int = 1
    verify: bool = True
    lun_size: int = 16 << 20
    io_timeout: float = 30.0
    iqn: str | None = None
    targets: dict[str, Portal] = field(default_factory=dict)
    in_process: bool = False
    json: str | None = None
    plot: str | None = None
    #: operational keys for both ends ([keys] of the config file)
    keys: dict[str, str] = field(default_factory=dict)
    #: [transport.NAME] options, checked against the plugin when the run starts
    transport_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = "<defaults>"

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain JSON-able values (for the report)."""
        return {
            "transports": list(self.transports), "bytes": self.bytes, "duration": self.duration,
            "block_sizes": list(self.block_sizes), "queue_depth": self.queue_depth,
            "patterns": list(self.patterns), "ops": list(self.ops), "mix_read": self.mix_read,
            "seed": self.seed, "verify": self.verify, "lun_size": self.lun_size,
            "io_timeout": self.io_timeout, "iqn": self.iqn,
            "targets": {name: str(portal) for name, portal in self.targets.items()},
            "in_process": self.in_process, "keys": dict(self.keys),
        }


# --------------------------------------------------------------------- value checks
def _size(source: str, key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ConfigError(source, key, f"expected a byte count like 4096 or \"4M\", got {value!r}")
    try:
        size = parse_size(value) if isinstance(value, str) else int(value)
    except ValueError:
        raise ConfigError(source, key, f"{value!r} is not a size (4096, 64K, 4M, 1G)") from None
    if size <= 0:
        raise ConfigError(source, key, f"must be positive, got {value!r}")
    return size


def _int(source: str, key: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        else:
            raise ConfigError(source, key, f"expected an integer, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(source, key, f"must be between {low} and {high}, got {value}")
    return value


def _float(source: str, key: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool):
        raise ConfigError(source, key, f"expected a number, got {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(source, key, f"expected a number, got {value!r}") from None
    if math.isnan(number) or not low <= number <= high:
        raise ConfigError(source, key, f"must be between {low:g} and {high:g}, got {value!r}")
    return number


def _bool(source: str, key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(source, key, f"expected true or false, got {value!r}")
    return value


def _str(source: str, key: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(source, key, f"expected a non-empty string, got {value!r}")
    return value


def _list(source: str, key: str, value: object) -> list[object]:
    """A TOML array, or a comma-separated string (what flags give)."""
    if isinstance(value, str):
        items: list[object] = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, list):
        items = list(value)
    else:
        raise ConfigError(source, key, f"expected a list, got {value!r}")
    if not items:
        raise ConfigError(source, key, "must not be empty")
    return items


def _choices(source: str, key: str, value: object, allowed: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for item in _list(source, key, value):
        if item not in allowed:
            raise ConfigError(source, key, f"unknown value {item!r} (known: {', '.join(allowed)})")
        if item not in out:
            out.append(str(item))
    return out


def _targets(source: str, key: str, value: object) -> dict[str, Portal]:
    """``{name = "HOST:PORT"}`` from TOML, or ``["name=HOST:PORT", ...]`` from flags."""
    pairs: list[tuple[str, str]] = []
    if isinstance(value, dict):
        for name, address in value.items():
            pairs.append((str(name), _str(source, f"{key}.{name}", address)))
    elif isinstance(value, list):
        for item in value:
            text = _str(source, key, item)
            name, sep, address = text.partition("=")
            if not sep or not name or not address:
                raise ConfigError(source, key, f"expected NAME=HOST:PORT, got {text!r}")
            pairs.append((name, address))
    else:
        raise ConfigError(source, key, f"expected a table of NAME = \"HOST:PORT\", got {value!r}")
    out: dict[str, Portal] = {}
    for name, address in pairs:
        try:
            out[name] = Portal.parse(address)
        except ValueError as exc:
            raise ConfigError(source, f"{key}.{name}", f"bad portal {address!r}: {exc}") from None
    return out


_Checker = Any  # (source, key, value) -> checked value

_KEYS: dict[str, _Checker] = {
    "transports": lambda s, k, v: [str(x) for x in _list(s, k, v)],
    "bytes": _size,
    "duration": lambda s, k, v: _float(s, k, v, 0.0, 3600.0),
    "block_sizes": lambda s, k, v: [_size(s, k, x) for x in _list(s, k, v)],
    "queue_depth": lambda s, k, v: _int(s, k, v, 1, 1024),
    "patterns": lambda s, k, v: _choices(s, k, v, PATTERNS),
    "ops": lambda s, k, v: _choices(s, k, v, OPS),
    "mix_read": lambda s, k, v: _float(s, k, v, 0.0, 1.0),
    "seed": lambda s, k, v: _int(s, k, v, 0, 2**63 - 1),
    "verify": _bool,
    "lun_size": _size,
    "io_timeout": lambda s, k, v: _float(s, k, v, 0.1, 3600.0),
    "iqn": _str,
    "targets": _targets,
    "in_process": _bool,
    "json": _str,
    "plot": _str,
}


def settings_from_config(config: FileConfig, overrides: dict[str, Any] | None = None) -> CompareSettings:
    """Validate ``[compare]`` of ``config`` and apply flag ``overrides`` (None = unset).

    Raises :class:`ConfigError` naming ``FILE: compare.KEY`` (or ``command line: --flag``).
    """
    settings = CompareSettings(keys=dict(config.keys), transport_options=dict(config.transport),
                               source=config.source)
    sources: list[tuple[str, str, dict[str, Any]]] = [(config.source, "compare.", dict(config.compare))]
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    sources.append(("command line", "--", flags))
    for source, prefix, values in sources:
        for key, value in values.items():
            label = prefix + (key.replace("_", "-") if prefix == "--" else key)
            checker = _KEYS.get(key)
            if checker is None:
                known = ", ".join(sorted(_KEYS))
                raise ConfigError(source, label, f"unknown key (known: {known})")
            setattr(settings, key, checker(source, label, value))
    _check_consistency(settings, f"{config.source} + command line" if flags else config.source)
    return settings


def _check_consistency(settings: CompareSettings, source: str) -> None:
    """Rules that span keys: every block fits the region, the region fits the LUN."""
    if settings.iqn is not None:
        try:
            settings.iqn = check_iscsi_name(settings.iqn)
        except ValueError as exc:
            raise ConfigError(source, "compare.iqn", str(exc)) from None
    for size in settings.block_sizes:
        if size % 512:
            raise ConfigError(source, "compare.block_sizes", f"{size} is not a multiple of 512")
        if size > settings.bytes:
            raise ConfigError(source, "compare.block_sizes",
                              f"block size {size} is larger than bytes={settings.bytes}")
        if size > 16 << 20:
            raise ConfigError(source, "compare.block_sizes", f"block size {size} is above 16 MiB")
    if settings.bytes > settings.lun_size:
        raise ConfigError(source, "compare.bytes",
                          f"{settings.bytes} bytes do not fit the {settings.lun_size}-byte LUN (raise lun_size)")
    if settings.lun_size > 4 << 30:
        raise ConfigError(source, "compare.lun_size", "memory LUNs above 4 GiB are not offered")
    if len(settings.block_sizes) != len(set(settings.block_sizes)):
        settings.block_sizes = sorted(set(settings.block_sizes), key=settings.block_sizes.index)
