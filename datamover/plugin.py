"""The plugin-author API: ``hookimpl``, the registry, and the plugin manager.

A transport plugin is a module with::

    from datamover.plugin import hookimpl

    @hookimpl
    def datamover_register_transports(registry):
        registry.add_transport(MyTransport)

listed in its distribution's ``pyproject.toml`` as::

    [project.entry-points."datamover.transports"]
    mine = "my_package.plugin"

Setting ``DATAMOVER_DISABLED_PLUGINS=name,name`` blocks entry points by name.
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pluggy

from datamover import hookspecs

if TYPE_CHECKING:
    from datamover.capabilities import TransportCapabilities
    from datamover.di import Transport

ENTRY_POINT_GROUP = "datamover.transports"
DISABLE_ENV = "DATAMOVER_DISABLED_PLUGINS"

hookimpl = pluggy.HookimplMarker(hookspecs.PROJECT_NAME)


class PluginError(RuntimeError):
    """A plugin could not be loaded or registered, or a transport name is unknown."""


@dataclass(frozen=True, slots=True)
class TransportInfo:
    """A registered transport with where it came from."""

    name: str
    cls: type[Transport]
    distribution: str
    version: str
    module: str

    @property
    def capabilities(self) -> TransportCapabilities:
        return self.cls.capabilities()


class TransportRegistry:
    """The object passed to ``datamover_register_transports``."""

    def __init__(self) -> None:
        self._transports: dict[str, TransportInfo] = {}
        self._current_dist: tuple[str, str] = ("", "")

    def add_transport(self, cls: type[Transport]) -> None:
        """Register a :class:`~datamover.di.Transport` subclass under ``cls.name``."""
        from datamover.di import Transport

        if not (isinstance(cls, type) and issubclass(cls, Transport)):
            raise PluginError(f"{cls!r} is not a datamover.di.Transport subclass")
        name = cls.name
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise PluginError(f"transport class {cls.__qualname__} has an invalid name {name!r}")
        dist, version = self._current_dist
        if name in self._transports:
            other = self._transports[name]
            raise PluginError(
                f"transport {name!r} registered twice: by {other.distribution} ({other.module}) "
                f"and by {dist or '?'} ({cls.__module__})"
            )
        self._transports[name] = TransportInfo(name, cls, dist, version, cls.__module__)

    def get(self, name: str) -> TransportInfo:
        try:
            return self._transports[name]
        except KeyError:
            known = ", ".join(sorted(self._transports)) or "none"
            raise PluginError(f"unknown transport {name!r} (registered: {known})") from None

    def names(self) -> list[str]:
        return sorted(self._transports)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(sorted(self._transports.values(), key=lambda info: info.name))

    def __contains__(self, name: object) -> bool:
        return name in self._transports


def _dist_of(plugin: object, distinfo: list[tuple[object, importlib.metadata.Distribution]]) -> tuple[str, str]:
    for loaded, dist in distinfo:
        if loaded is plugin:
            return dist.metadata["name"], dist.version
    return ("", "")


def build_registry(extra_plugins: tuple[object, ...] = ()) -> TransportRegistry:
    """Load every ``datamover.transports`` entry point with pluggy and collect transports.

    ``extra_plugins`` are plugin objects registered directly (tests, embedding).
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for name in filter(None, (n.strip() for n in os.environ.get(DISABLE_ENV, "").split(","))):
        pm.set_blocked(name)
    try:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    except Exception as exc:  # a broken third-party plugin must not look like a core bug
        raise PluginError(f"loading {ENTRY_POINT_GROUP} entry points failed: {exc}") from exc
    for plugin in extra_plugins:
        pm.register(plugin)
    pm.check_pending()
    registry = TransportRegistry()
    distinfo = pm.list_plugin_distinfo()
    # Call each plugin's hook separately so every registration knows its distribution.
    for impl in pm.hook.datamover_register_transports.get_hookimpls():
        registry._current_dist = _dist_of(impl.plugin, distinfo) or ("", "")
        if registry._current_dist == ("", ""):
            registry._current_dist = (getattr(impl.plugin, "__name__", impl.plugin_name), "")
        impl.function(registry=registry)
    registry._current_dist = ("", "")
    return registry


_registry: TransportRegistry | None = None


def get_registry() -> TransportRegistry:
    """The process-wide registry, built on first use."""
    global _registry
    if _registry is None:
        _registry = build_registry()
    return _registry


def create_transport(name: str, options: dict[str, object] | None = None) -> Transport:
    """Instantiate the registered transport ``name`` with its options. A transport refuses an
    option value it cannot use with ValueError; that becomes a PluginError naming it."""
    info = get_registry().get(name)
    try:
        return info.cls(options or {})
    except ValueError as exc:
        raise PluginError(f"transport {name!r}: {exc}") from None
