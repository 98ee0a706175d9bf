"""Scenarios run only inside the lab guest (``python -m lab``); elsewhere they skip and say so."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # lab/ and tools/ live beside the package, not in it
    sys.path.insert(0, str(REPO))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("DATAMOVER_LAB_GUEST") == "1":
        return
    skip = pytest.mark.skip(reason="lab scenario: runs only inside the lab guest; use `python -m lab` (lab/run.sh)")
    here = Path(__file__).resolve().parent
    for item in items:  # the hook sees the whole session: mark only this directory's tests
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(skip)
