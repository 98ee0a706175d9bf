"""Load the datamover pytest plugin for the kit tests when its pytest11 entry point is not
installed (a checkout whose editable install predates it)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    manager = config.pluginmanager
    if not (manager.has_plugin("datamover") or manager.has_plugin("datamover.pytest_plugin")):
        manager.import_plugin("datamover.pytest_plugin")
