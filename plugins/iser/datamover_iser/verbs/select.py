"""Choosing the verbs provider: ``auto`` | ``pyverbs`` | ``soft``, always with the reason.

``auto`` takes pyverbs when a device with an ACTIVE port exists and rdma_cm is usable, else
the soft provider. The probe follows rdma-without-hardware.md §2, cheapest first: pyverbs
importable, /sys/class/infiniband present, ``get_device_list()`` non-empty, a port ACTIVE,
``CMEventChannel()`` creatable. The resulting ``Selection.summary`` is meant to be printed in
every report and log line that says who moved the bytes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from .api import Provider
from .enums import Personality
from .errors import ProviderUnavailable

log = logging.getLogger(__name__)

PROVIDERS = ("auto", "pyverbs", "soft")
PORT_ACTIVE = 4  # IBV_PORT_ACTIVE


@dataclass(slots=True)
class Probe:
    ok: bool
    reason: str
    device: str = ""
    port: int = 0


@dataclass(slots=True)
class Selection:
    """The outcome of a selection: ``provider`` is None when ``ok`` is False."""

    requested: str
    name: str
    reason: str
    provider: Provider | None

    @property
    def ok(self) -> bool:
        return self.provider is not None

    @property
    def summary(self) -> str:
        what = self.provider.describe() if self.provider is not None else f"{self.name} (unavailable)"
        return f"verbs provider: {what} [requested {self.requested}: {self.reason}]"

    def require(self) -> Provider:
        if self.provider is None:
            raise ProviderUnavailable(f"{self.name}: {self.reason}")
        return self.provider


def probe_pyverbs() -> Probe:
    """Is there a usable RDMA device for pyverbs? Never raises; the reason says why not."""
    try:
        import pyverbs.device as pd_mod  # noqa: F401
    except ImportError as exc:
        return Probe(False, f"pyverbs not installed ({exc}); see scripts/install-pyverbs.sh")
    if not os.path.isdir("/sys/class/infiniband"):
        return Probe(False, "no RDMA device: /sys/class/infiniband is absent (kernel without RDMA)")
    try:
        from pyverbs.device import Context, get_device_list
        from pyverbs.pyverbs_error import PyverbsError

        devices = get_device_list()
    except Exception as exc:  # PyverbsRDMAError: errno is lost by pyverbs (ENOSYS underneath)
        return Probe(False, f"no RDMA device: get_device_list() failed ({exc})")
    if not devices:
        return Probe(False, "no RDMA device: kernel RDMA present but no device")
    found: tuple[str, int] | None = None
    for dev in devices:
        name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        try:
            with Context(name=name) as ctx:
                nports = ctx.query_device().phys_port_cnt
                for port in range(1, nports + 1):
                    if ctx.query_port(port).state == PORT_ACTIVE:
                        found = (name, port)
                        break
        except PyverbsError as exc:
            log.debug("pyverbs probe: %s: %s", name, exc)
        if found:
            break
    if found is None:
        return Probe(False, "no RDMA device with an ACTIVE port")
    try:
        from pyverbs.cmid import CMEventChannel

        CMEventChannel().close()
    except Exception as exc:
        return Probe(False, f"rdma_cm unusable ({exc}); is rdma_ucm loaded?")
    return Probe(True, f"device {found[0]} port {found[1]} ACTIVE", found[0], found[1])


def open_provider(
    provider: str = "auto",
    *,
    fabric: Any = "inproc",
    personality: Personality | str = Personality.ROCE_V2,
    **soft_options: Any,
) -> Selection:
    """Select and instantiate a provider. ``fabric``/``personality``/``soft_options`` configure
    the soft provider (``fault_hook``, ``capture``); pyverbs takes its personality from the
    device."""
    if provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {PROVIDERS}, got {provider!r}")
    sel: Selection
    if provider in ("auto", "pyverbs"):
        probe = probe_pyverbs()
        if probe.ok:
            from .pyverbs_backend import PyverbsProvider

            sel = Selection(provider, "pyverbs", probe.reason, PyverbsProvider(probe.device, probe.port))
        elif provider == "pyverbs":
            sel = Selection(provider, "pyverbs", probe.reason, None)
        else:
            from .soft import SoftProvider

            sel = Selection(
                provider, "soft", f"{probe.reason}; using the soft provider",
                SoftProvider(fabric, personality, **soft_options),
            )
    else:
        from .soft import SoftProvider

        sel = Selection(provider, "soft", "requested explicitly", SoftProvider(fabric, personality, **soft_options))
    log.info("%s", sel.summary)
    return sel
