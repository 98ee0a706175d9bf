"""The example third-party plugin (docs/examples/uds_transport) installed from its own
pyproject.toml: found through its entry points, passes the kit; its broken variant fails
the kit with a message naming the broken rule."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "uds_transport"

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix-domain sockets on this platform")


def _install_by_hand(source: Path, site: Path) -> None:
    """What an installer does for this pure-Python package: the package files plus a
    .dist-info whose entry_points.txt comes from pyproject.toml. Used only where pip
    cannot build offline (setuptools older than 70.1 without the wheel package)."""
    project = tomllib.loads((source / "pyproject.toml").read_text())["project"]
    shutil.copytree(source / "datamover_uds", site / "datamover_uds")
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    lines = []
    for group, entries in project["entry-points"].items():
        lines.append(f"[{group}]")
        lines.extend(f"{name} = {target}" for name, target in entries.items())
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Install the example into a private site directory; returns the environment that
    sees it (PYTHONPATH) with pytest plugin autoloading off (the kit plugin is named)."""
    root = tmp_path_factory.mktemp("uds-example")
    source, site = root / "src", root / "site"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--no-index", "--target", str(site), str(source)],
                         capture_output=True, text=True, timeout=120)
    if pip.returncode != 0:
        shutil.rmtree(site, ignore_errors=True)
        site.mkdir()
        _install_by_hand(source, site)
    (root / "pytest.ini").write_text("[pytest]\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH", "")]))
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env.pop("DATAMOVER_DISABLED_PLUGINS", None)
    return {"root": str(root), "tests": str(source / "tests"), **{f"env:{k}": v for k, v in env.items()}}


def _env(installed: dict[str, str]) -> dict[str, str]:
    return {k[4:]: v for k, v in installed.items() if k.startswith("env:")}


def _kit(installed: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    root = installed["root"]
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "datamover.pytest_plugin",
                           "-p", "no:cacheprovider", "-c", f"{root}/pytest.ini", "--rootdir", root, *args],
                          cwd=root, env=_env(installed), capture_output=True, text=True, timeout=300)


def test_example_is_registered_through_its_entry_points(installed: dict[str, str]) -> None:
    listing = subprocess.run([sys.executable, "-m", "datamover.cli", "plugins"], env=_env(installed),
                             capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    rows = {line.split()[0]: line for line in listing.stdout.splitlines()[1:] if line.strip()}
    assert "datamover-uds-example" in rows["uds"] and "datamover_uds.transport" in rows["uds"]
    assert "uds-broken" in rows


def test_kit_passes_for_the_example_transport(installed: dict[str, str]) -> None:
    result = _kit(installed, f"{installed['tests']}/test_conformance.py")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout


def test_kit_fails_the_broken_variant_naming_the_rule(installed: dict[str, str]) -> None:
    result = _kit(installed, f"{installed['tests']}/test_selected.py", "--datamover-transport", "uds-broken")
    assert result.returncode == 1, result.stdout[-3000:]
    assert "[data-integrity] RFC 5047 8.2 Put_Data" in result.stdout
    assert "first difference at byte 100" in result.stdout
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
    assert failed and all("transport=uds-broken" in line for line in failed)
    # what the fault does not touch still passes: login, TMF, discovery, bad input, DI trace
    assert "test_login_logout" not in "".join(failed)
    assert "test_di_trace_matches_loopback" not in "".join(failed)
