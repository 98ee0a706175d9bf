"""The lab's host-side parts, without booting: plan selection, report, initramfs, QEMU line."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from lab import image, report, vm
from lab.host import Kernel
from lab.plan import BY_NUMBER, CI_SET, SCENARIOS, Plan, PlanError, parse_selection


def test_every_scenario_has_its_module() -> None:
    here = Path(__file__).resolve().parents[2] / "lab" / "scenarios"
    assert [s.number for s in SCENARIOS] == list(range(1, 8))
    for s in SCENARIOS:
        assert (here / s.module).is_file(), s.module


@pytest.mark.parametrize("text,numbers", [
    ("all", list(range(1, 8))), ("ci", list(CI_SET)), ("1-3,6", [1, 2, 3, 6]), (" 7, 2 ,2", [2, 7]),
])
def test_selection(text: str, numbers: list[int]) -> None:
    assert [s.number for s in parse_selection(text)] == numbers


@pytest.mark.parametrize("text", ["", "8", "0-2", "x", "1-", ","])
def test_bad_selection_is_a_plan_error(text: str) -> None:
    with pytest.raises(PlanError):
        parse_selection(text)


def test_plan_round_trip(tmp_path: Path) -> None:
    plan = Plan("/repo", str(tmp_path), [BY_NUMBER[1], BY_NUMBER[3]], pytest_args=["-k", "x"])
    plan.write(tmp_path / "plan.json")
    assert Plan.read(tmp_path / "plan.json") == plan


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="4">
<testcase classname="lab.scenarios.t" name="test_ok" time="1.5"/>
<testcase classname="lab.scenarios.t" name="test_bad" time="2.0"><failure message="AssertionError: boom&#10;second line">tb</failure></testcase>
<testcase classname="lab.scenarios.t" name="test_skip" time="0"><skipped message="no peer"/></testcase>
<testcase classname="lab.scenarios.t" name="test_err" time="0"><error message="fixture broke"/></testcase>
</testsuite></testsuites>"""


def _scenario_run(tmp_path: Path, number: int, rc: int | None, junit: str | None) -> None:
    sc = BY_NUMBER[number]
    d = tmp_path / "scenarios" / f"s{number}-{sc.slug}"
    d.mkdir(parents=True)
    if junit is not None:
        (d / "junit.xml").write_text(junit)
    path = tmp_path / "guest-results.json"
    old = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps(old + [{"number": number, "slug": sc.slug, "rc": rc, "seconds": 12.0}]))


def test_report_statuses(tmp_path: Path) -> None:
    ok = JUNIT.replace('<failure message="AssertionError: boom&#10;second line">tb</failure>', "")
    ok = ok.replace('<error message="fixture broke"/>', "").replace('<skipped message="no peer"/>', "")
    skipped = '<testsuites><testsuite><testcase classname="c" name="n"><skipped message="why"/></testcase></testsuite></testsuites>'
    _scenario_run(tmp_path, 1, 0, ok)
    _scenario_run(tmp_path, 2, 1, JUNIT)
    _scenario_run(tmp_path, 3, 0, skipped)
    _scenario_run(tmp_path, 4, None, None)
    _scenario_run(tmp_path, 5, 1, "<not xml")
    chosen = [BY_NUMBER[n] for n in (1, 2, 3, 4, 5, 6)]
    results = report.collect(tmp_path, chosen)
    assert [r.status for r in results] == ["passed", "failed", "skipped", "timeout", "failed", "not run"]
    bad = results[1]
    assert [c.outcome for c in bad.cases] == ["passed", "failed", "skipped", "error"]
    assert bad.cases[1].message == "AssertionError: boom | second line"
    js, md = report.write(tmp_path, results, {"kernel": "k"})
    data = json.loads(js.read_text())
    assert [s["status"] for s in data["scenarios"]][:2] == ["passed", "failed"]
    text = md.read_text()
    assert "| 2 |" in text and "**failed**" in text and "boom" in text and "not run" in text


def _kernel_cache() -> Kernel | None:
    out = Path(__file__).resolve().parents[2] / "out" / "lab" / "cache"
    roots = sorted(out.glob("kroot-*/boot/vmlinuz-*")) if out.exists() else []
    if not roots:
        return None
    vmlinuz = roots[-1]
    return Kernel(vmlinuz.name.removeprefix("vmlinuz-"), vmlinuz.parents[1])


def test_initramfs_holds_init_busybox_and_9p(tmp_path: Path) -> None:
    kernel = _kernel_cache()
    if kernel is None:
        pytest.skip("no unpacked guest kernel in out/lab/cache (run `python -m lab` once)")
    if shutil.which("busybox") is None or shutil.which("modinfo") is None:
        pytest.skip("busybox-static / kmod not installed")
    img = image.build_initramfs(kernel, tmp_path)
    listing = subprocess.run(["busybox", "cpio", "-t"], input=gzip.decompress(img.read_bytes()),
                             capture_output=True, check=True).stdout.decode()
    names = set(listing.split())
    assert {"init", "bin/busybox"} <= names
    assert any(n.endswith("/9p.ko") for n in names) and any(n.endswith("/overlay.ko") for n in names)
    assert f"lib/modules/{kernel.version}/modules.dep" in names
    assert image.build_initramfs(kernel, tmp_path) == img  # cached


def test_qemu_line_has_no_kvm_and_no_nic(tmp_path: Path) -> None:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 not installed (Debian qemu-system-x86)")
    k = Kernel("6.1.0-0-amd64", tmp_path / "kroot")
    argv = vm.qemu_argv(k, tmp_path / "i.cpio.gz", tmp_path / "run", Path("/repo"), vm.VmConfig())
    line = " ".join(argv)
    assert argv[argv.index("-accel") + 1].startswith("tcg") and "-enable-kvm" not in argv
    assert argv[argv.index("-nic") + 1] == "none"
    assert f"lab.run={tmp_path / 'run'}" in line and "readonly=on" in line
