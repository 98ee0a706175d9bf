"""``datamover compare`` from the command line: exit codes, table, JSON, one-line config
errors, the TCP child-process target and an already-running (remote) target."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

import datamover.plugin as plugin_module
from datamover.cli import main
from datamover.di import NotImplementedTransport, Portal
from datamover.plugin import get_registry
from tests.compare.compare_fakes import registry_with_fakes

SMALL = ["--bytes", "1M", "--block-sizes", "4096,65536"]


def test_loopback_only_exit_0_table_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugin_module, "_registry", registry_with_fakes())
    report_path = tmp_path / "out" / "report.json"
    rc = main(["compare", "--transports", "loopback,notyet", "--json", str(report_path), *SMALL])
    out, err = capsys.readouterr()
    assert rc == 0, out + err
    assert "TRANSPORT" in out and "MiB/s" in out and "p99.9 us" in out
    assert "not implemented yet: notyet" in out
    assert "OK: loopback verified" in out
    assert err == "", "progress must stay quiet when stderr is not a terminal"
    report = json.loads(report_path.read_text())
    assert report["ok"] is True and report["reference"] == "loopback"
    assert report["not_implemented"] == ["notyet"] and report["failed"] == []
    loop = next(t for t in report["transports"] if t["name"] == "loopback")
    assert loop["status"] == "ok" and loop["target"] == "in-process"
    assert "loopback" in loop["describe"]
    totals = loop["totals"]
    assert totals["mib_s"] > 0 and totals["iops"] > 0
    assert totals["latency_us"]["p50"] <= totals["latency_us"]["p99"] <= totals["latency_us"]["p999"]
    assert totals["copies_per_byte"] is not None and totals["ops_per_io"] is not None
    assert len(loop["steps"]) == 13
    assert all(step["verify_errors"] == 0 and step["ios"] > 0 for step in loop["steps"])
    assert report["settings"]["block_sizes"] == [4096, 65536]


def test_forced_disagreement_exits_1_and_names_the_first_diverging_call(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(plugin_module, "_registry", registry_with_fakes())
    rc = main(["compare", "--transports", "loopback,noimmediate", *SMALL])
    out, _ = capsys.readouterr()
    assert rc == 1
    line = next(l for l in out.splitlines() if l.startswith("DIFFERENCE"))
    assert "noimmediate vs loopback: trace differs in step fill at call #" in line
    assert "send_control(pdu=ScsiCommand" in line and "imm=0" in line


@pytest.mark.parametrize("toml,expected", [
    ("[compare]\nnope = 1\n", "compare.nope: unknown key"),
    ("[compare]\nblock_sizes = [3000]\n", "compare.block_sizes: 3000 is not a multiple of 512"),
    ("[compare]\nqueue_depth = 0\n", "compare.queue_depth: must be between 1 and 1024"),
    ("[compare]\npatterns = [\"zigzag\"]\n", "compare.patterns: unknown value 'zigzag'"),
    ("[compare]\nbytes = \"lots\"\n", "compare.bytes: 'lots' is not a size"),
    ("[compare]\nbytes = \"64M\"\nlun_size = \"16M\"\n", "compare.bytes: 67108864 bytes do not fit"),
    ("[compare]\ntargets = { tcp = \"host:notaport\" }\n", "compare.targets.tcp: bad portal"),
    ("[compare]\ntransports = [\"carrier-pigeon\"]\n", "compare.transports: unknown transport 'carrier-pigeon'"),
    ("[compare]\nverify = \"yes\"\n", "compare.verify: expected true or false"),
    ("[compare]\niqn = \"not a name\"\n", "compare.iqn: 'not a name' is not a valid iSCSI name"),
    ("compare = 3\n", "compare: must be a table"),
])
def test_config_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str,
                                    expected: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    rc = main(["compare", "-c", str(path)])
    out, err = capsys.readouterr()
    assert rc == 1
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"datamover: {path}") and expected in lines[0], lines[0]


def test_flag_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["compare", "--queue-depth", "many"])
    _, err = capsys.readouterr()
    assert rc == 1 and err.strip() == "datamover: command line: --queue-depth: expected an integer, got 'many'"


def test_config_file_settings_are_used_and_flags_win(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.toml"
    report_path = tmp_path / "r.json"
    path.write_text(f'[compare]\ntransports = ["loopback"]\nbytes = "512K"\nblock_sizes = [4096]\n'
                    f'ops = ["write", "read"]\npatterns = ["seq"]\nqueue_depth = 2\njson = "{report_path}"\n'
                    f'[keys]\nMaxBurstLength = 65536\n')
    rc = main(["compare", "-c", str(path), "--queue-depth", "4"])
    capsys.readouterr()
    assert rc == 0
    report = json.loads(report_path.read_text())
    assert report["settings"]["queue_depth"] == 4
    assert report["settings"]["bytes"] == 512 << 10
    assert report["settings"]["keys"] == {"MaxBurstLength": "65536"}
    assert [s["name"] for s in report["transports"][0]["steps"]] == ["fill", "seq-write-4096", "seq-read-4096"]


def test_plots_are_written_or_skipped_with_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    plots = tmp_path / "plots"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        has_matplotlib = False
    else:
        has_matplotlib = True
    if has_matplotlib:
        rc = main(["compare", "--transports", "loopback", "--plot", str(plots), *SMALL])
        capsys.readouterr()
        assert rc == 0
        pngs = sorted(p.name for p in plots.glob("*.png"))
        assert "throughput_mib_s.png" in pngs and "latency_p99_us.png" in pngs and len(pngs) == 9
        assert all((plots / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now raises ImportError
    rc = main(["compare", "--transports", "loopback", "--plot", str(tmp_path / "none"), *SMALL])
    out, _ = capsys.readouterr()
    assert rc == 0
    assert "plots skipped: matplotlib is not installed" in out


def _tcp_usable() -> str | None:
    """None if the tcp transport is registered and implemented, else why not."""
    registry = get_registry()
    if "tcp" not in registry:
        return "tcp transport not registered"

    async def probe() -> None:
        transport = registry.get("tcp").cls({})

        async def refuse(conn: object) -> None:
            conn.connection_terminate()  # type: ignore[attr-defined]

        listener = await transport.listen(Portal("127.0.0.1", 0), refuse)
        await listener.close()

    try:
        asyncio.run(probe())
    except NotImplementedTransport as exc:
        return f"tcp not implemented yet: {exc}"
    return None


def test_tcp_target_in_a_child_process_agrees_with_loopback(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    why = _tcp_usable()
    if why:
        pytest.skip(why)
    report_path = tmp_path / "r.json"
    rc = main(["compare", "--transports", "loopback,tcp", "--json", str(report_path), *SMALL])
    out, err = capsys.readouterr()
    assert rc == 0, out + err
    report = json.loads(report_path.read_text())
    tcp = next(t for t in report["transports"] if t["name"] == "tcp")
    assert tcp["status"] == "ok" and tcp["agrees"] is True
    assert tcp["target"].startswith("child process (pid ")
    assert tcp["target_cpu_s"] is not None and tcp["target_cpu_s"] >= 0
    assert tcp["stats"]["pdus_sent"] > 0


def test_already_running_target_is_used_and_discovered(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    why = _tcp_usable()
    if why:
        pytest.skip(why)
    config = tmp_path / "t.toml"
    config.write_text('[target]\ntransport = "tcp"\nportals = ["127.0.0.1:0"]\n'
                      'iqn = "iqn.2026-11.org.example:remote"\nluns = ["memory,size=4M"]\n')
    child = subprocess.Popen([sys.executable, "-m", "datamover.cli", "target", "serve", "-c", str(config)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        address = line.rsplit(" on ", 1)[1].strip()
        report_path = tmp_path / "r.json"
        # the target was started with a power-on unit attention: the runner must settle it
        rc = main(["compare", "--transports", "tcp", "--target", f"tcp={address}", "--json",
                   str(report_path), *SMALL])
        out, err = capsys.readouterr()
        assert rc == 0, out + err
        report = json.loads(report_path.read_text())
        tcp = report["transports"][0]
        assert tcp["target"] == f"remote {address}"
        assert tcp["target_cpu_s"] is None
        assert "n/a" in out  # target CPU unknown for a remote target
    finally:
        child.terminate()
        child.wait(10)


def test_remote_iser_target_over_the_zmq_fabric(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Across hosts: `compare --target iser=HOST:PORT` drives an iSER target started with
    `datamover target serve`, the soft provider's pyzmq fabric carrying iSER between the two
    processes (tested here on one host), and agrees with TCP to the same kind of target."""
    # a remote target negotiates with its own preferences: give it the values compare pins
    # for the locally started targets, so the DI traces are comparable (docs/user-guide.md)
    shared = ('[transport.iser]\nprovider = "soft"\nfabric = "zmq"\n'
              '[keys]\nInitialR2T = "No"\nMaxOutstandingR2T = 1\n'
              'TargetRecvDataSegmentLength = 262144\nInitiatorRecvDataSegmentLength = 262144\n')
    config = tmp_path / "iser.toml"
    config.write_text('[target]\ntransport = "iser"\nportals = ["127.0.0.1:0"]\n'
                      'iqn = "iqn.2026-11.org.example:remote-iser"\nluns = ["memory,size=16M"]\n' + shared)
    child = subprocess.Popen([sys.executable, "-m", "datamover.cli", "target", "serve", "-c", str(config)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert "zmq fabric" in line, line
        address = line.rsplit(" on ", 1)[1].strip()
        initiator_config = tmp_path / "ini.toml"
        initiator_config.write_text(shared)
        report_path = tmp_path / "r.json"
        rc = main(["compare", "-c", str(initiator_config), "--transports", "loopback,iser",
                   "--target", f"iser={address}", "--json", str(report_path), *SMALL])
        out, err = capsys.readouterr()
        assert rc == 0, out + err
        report = json.loads(report_path.read_text())
        iser = next(t for t in report["transports"] if t["name"] == "iser")
        assert iser["target"] == f"remote {address}"
        assert "zmq fabric" in iser["describe"]
    finally:
        child.terminate()
        child.wait(10)
