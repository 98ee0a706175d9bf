"""The lab's tests: fast checks of its parts, and the marked test that boots the guest."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # lab/ lives beside the package, not in it
    sys.path.insert(0, str(REPO))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vm: boots the lab's QEMU guest (minutes; set DATAMOVER_LAB=1)")
