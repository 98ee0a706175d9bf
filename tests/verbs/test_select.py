"""Provider selection and the pyverbs adapter's import-time behaviour."""

from __future__ import annotations

import importlib
import importlib.util

import pytest

from datamover_iser.verbs import ProviderUnavailable
from datamover_iser.verbs.select import open_provider, probe_pyverbs


def test_pyverbs_backend_imports_without_a_device() -> None:
    mod = importlib.import_module("datamover_iser.verbs.pyverbs_backend")
    assert hasattr(mod, "PyverbsProvider")


async def test_auto_falls_back_to_soft_with_the_reason() -> None:
    probe = probe_pyverbs()
    sel = open_provider("auto")
    if probe.ok:
        assert sel.name == "pyverbs" and sel.ok
        return
    assert sel.name == "soft" and sel.ok
    assert probe.reason in sel.reason
    if importlib.util.find_spec("pyverbs") is not None:
        assert "no RDMA device" in sel.reason or "rdma_cm" in sel.reason
    assert "soft provider" in sel.summary and "requested auto" in sel.summary
    await sel.require().close()


async def test_explicit_pyverbs_is_usable_or_says_why_not() -> None:
    """With a device (the interop lab's rxe0) ``pyverbs`` opens it; without one it is
    unavailable with a reason, and ``require`` raises instead of returning nothing."""
    sel = open_provider("pyverbs")
    if sel.ok:
        assert sel.name == "pyverbs" and sel.provider is not None and sel.summary
        await sel.require().close()
        return
    assert sel.provider is None and sel.reason
    with pytest.raises(ProviderUnavailable):
        sel.require()


async def test_explicit_soft_and_bad_names() -> None:
    sel = open_provider("soft", fabric="inproc", personality="iwarp")
    assert sel.ok and sel.name == "soft" and "iwarp" in sel.summary
    await sel.require().close()
    with pytest.raises(ValueError):
        open_provider("infiniband-please")
