"""The ``datamover`` pytest plugin: runs the conformance kit against chosen transports.

Registered through the ``pytest11`` entry point (``datamover = "datamover.pytest_plugin"``),
it adds::

    --datamover-transport NAME[,NAME...]   transports to run the kit against (default loopback)

and parametrizes every :class:`~datamover.testing.TransportConformance` subclass that
provides neither ``transport_name`` nor ``transport_factory`` itself over those names. It
also registers the ``datamover_requires`` marker used by :func:`datamover.testing.requires`.
"""

from __future__ import annotations

import os

import pytest

OPTION = "--datamover-transport"
ENV = "DATAMOVER_KIT_TRANSPORTS"
DEFAULT = "loopback"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("datamover", "datamover transport conformance kit")
    group.addoption(OPTION, action="store", dest="datamover_transport", default=None, metavar="NAME[,NAME...]",
                    help=f"transports to run the datamover conformance kit against (default: ${ENV} or {DEFAULT})")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "datamover_requires(*capabilities): the kit test needs these transport capabilities; "
                   "skipped, naming the capability, for transports that lack one")


def selected_transports(config: pytest.Config) -> list[str]:
    """The transport names from the option, the environment, or the default."""
    text = config.getoption("datamover_transport", default=None) or os.environ.get(ENV) or DEFAULT
    names = [name.strip() for name in str(text).split(",") if name.strip()]
    if not names:
        raise pytest.UsageError(f"{OPTION}: no transport named")
    from datamover.plugin import PluginError, get_registry

    try:
        registry = get_registry()
    except PluginError as exc:
        raise pytest.UsageError(f"{OPTION}: {exc}") from None
    unknown = [name for name in names if name not in registry]
    if unknown:
        raise pytest.UsageError(f"{OPTION}: unknown transport {', '.join(map(repr, unknown))} "
                                f"(registered: {', '.join(registry.names())})")
    return names


def _provides_its_own_transport(cls: type) -> bool:
    from datamover.testing.conformance import TransportConformance

    def owner(name: str) -> type | None:
        # the class whose body defines the fixture (attribute access may wrap it anew)
        return next((klass for klass in cls.__mro__ if name in vars(klass)), None)

    return any(owner(name) is not TransportConformance for name in ("transport_name", "transport_factory"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    from datamover.testing.conformance import TransportConformance

    cls = metafunc.cls
    if cls is None or not issubclass(cls, TransportConformance) or _provides_its_own_transport(cls):
        return
    if "transport_name" not in metafunc.fixturenames:
        return
    names = selected_transports(metafunc.config)
    metafunc.parametrize("transport_name", names, ids=[f"transport={name}" for name in names])
