"""The comparative runner (issue 8): loopback-only runs, forced disagreements, duration
mode, and the pieces it is built from (workload determinism, serving-line parsing)."""

from __future__ import annotations

import os

import pytest

from datamover.compare import CompareSettings, run_compare
from datamover.compare.crosscheck import trace_prefix
from datamover.compare.endpoints import parse_serving_line, proc_cpu_seconds
from datamover.compare.progress import Progress
from datamover.compare.results import percentile
from datamover.compare.workload import Workload
from tests.compare.compare_fakes import registry_with_fakes

SMALL = {"bytes": 1 << 20, "block_sizes": [4096, 65536]}


def _settings(transports: list[str], **kwargs: object) -> CompareSettings:
    values = dict(SMALL)
    values.update(kwargs)
    return CompareSettings(transports=transports, **values)  # type: ignore[arg-type]


async def test_identical_transports_agree_and_every_io_is_recorded() -> None:
    report = await run_compare(_settings(["loopback", "twin"]), registry=registry_with_fakes())
    assert report.ok, [str(d) for d in report.differences]
    loop, twin = report.runs
    assert loop.agrees and twin.agrees
    # fill + 2 block sizes x 2 patterns x 3 ops
    assert [s.name for s in loop.steps][:3] == ["fill", "seq-write-4096", "seq-read-4096"]
    assert len(loop.steps) == 13
    for step in loop.steps:
        assert step.ios == len(step.outcomes) == len(step.digests) == (1 << 20) // step.block_size
        assert all(outcome == (0, "") for outcome in step.outcomes)
        assert step.trace, "no DI calls recorded"
    reads = [s for s in loop.steps if s.op == "read"]
    assert all(d is not None for s in reads for d in s.digests)
    assert sum(s.bytes_read for s in reads) == 4 * (1 << 20)


async def test_trace_divergence_names_the_first_diverging_call() -> None:
    """A datamover with ImmediateData forced off moves the same bytes with other DI calls."""
    report = await run_compare(_settings(["loopback", "noimmediate"]), registry=registry_with_fakes())
    assert not report.ok
    kinds = {d.kind for d in report.differences}
    assert kinds == {"trace"}, [str(d) for d in report.differences]
    first = report.differences[0]
    assert first.transport == "noimmediate" and first.reference == "loopback"
    assert first.step == "fill" and first.index is not None
    assert "send_control(pdu=ScsiCommand" in first.detail
    assert "imm=0" in first.detail and "imm=65536" in first.detail
    assert report.runs[1].agrees is False


async def test_damaged_read_data_is_a_data_and_verification_difference() -> None:
    report = await run_compare(_settings(["loopback", "corruptread"]), registry=registry_with_fakes())
    assert not report.ok
    by_kind = {d.kind: d for d in report.differences}
    assert set(by_kind) == {"verify", "data"}
    assert by_kind["data"].step == "seq-read-4096" and by_kind["data"].index is not None
    assert "expected" in by_kind["verify"].detail


async def test_not_implemented_transport_is_reported_and_does_not_fail() -> None:
    report = await run_compare(_settings(["loopback", "notyet"]), registry=registry_with_fakes())
    assert report.ok
    assert report.not_implemented == ["notyet"]
    assert report.compared == ["loopback"]


async def test_duration_mode_compares_the_common_prefix() -> None:
    report = await run_compare(_settings(["loopback", "twin"], duration=0.02, ops=["write", "read"],
                                         patterns=["rand"]), registry=registry_with_fakes())
    assert report.ok, [str(d) for d in report.differences]
    for run in report.runs:
        for step in run.steps:
            assert step.ios % ((1 << 20) // step.block_size) == 0, "a timed step ends on a whole pass"


def test_workload_is_deterministic_and_a_pass_never_touches_a_block_twice() -> None:
    settings = CompareSettings(bytes=1 << 20, block_sizes=[4096, 65536], seed=5)
    one, two = Workload.build(settings), Workload.build(settings)
    assert one.pool == two.pool
    for a, b in zip(one.steps, two.steps):
        ios = [a.io(i) for i in range(a.pass_length)]
        assert ios == [b.io(i) for i in range(b.pass_length)]
        offsets = [io.offset for io in ios]
        assert len(set(offsets)) == len(offsets)
        assert a.io(a.pass_length + 3).offset == a.io(3).offset  # passes repeat
    mixed = [s for s in one.steps if s.op == "mixed"][0]
    writes = sum(mixed.io(i).write for i in range(mixed.pass_length))
    assert 0 < writes < mixed.pass_length
    other = Workload.build(CompareSettings(bytes=1 << 20, block_sizes=[4096, 65536], seed=6))
    assert other.pool != one.pool


def test_serving_line_is_parsed() -> None:
    line = ("datamover target iqn.2026-11.org.x:d serving 1 LUN(s) over tcp: RFC 7143 byte stream "
            "over asyncio (gather writes, one receive buffer) on 127.0.0.1:33537, 127.0.0.1:40000\n")
    portal = parse_serving_line(line)
    assert (portal.host, portal.port) == ("127.0.0.1", 33537)
    with pytest.raises(ValueError):
        parse_serving_line("datamover: cannot listen: address in use")


def test_helpers() -> None:
    assert percentile([], 0.5) is None
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0 and percentile(values, 0.99) == 99.0
    assert percentile(values, 0.999) == 100.0
    lines = ["i:a(itt=#1)", "i:b(itt=#2)", "i:c(x=1)", "i:d(itt=#3)"]
    assert trace_prefix(lines, 2) == lines[:3]
    if os.path.exists(f"/proc/{os.getpid()}/stat"):
        assert proc_cpu_seconds(os.getpid()) is not None
    assert proc_cpu_seconds(2**30) is None


def test_progress_writes_only_when_enabled() -> None:
    import io

    quiet = io.StringIO()
    Progress(quiet, enabled=False).update("x", force=True)
    assert quiet.getvalue() == ""
    loud = io.StringIO()
    progress = Progress(loud, enabled=True)
    progress.update("step 1", force=True)
    progress.done()
    assert loud.getvalue().startswith("\rstep 1")


async def test_unreachable_child_target_falls_back_to_in_process_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    """A transport that says cross_process but cannot reach another process in its current
    configuration is compared in-process, and the report says why."""
    import asyncio
    import sys
    import tempfile

    from datamover.compare import runner
    from datamover.compare.endpoints import ChildEndpoint
    from datamover.di import Portal

    started: list[ChildEndpoint] = []

    async def fake_start_child(transport, iqn, lun_size, keys, options, queue_depth):  # type: ignore[no-untyped-def]
        process = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(30)")
        endpoint = ChildEndpoint(process, Portal("nowhere", 1), iqn, tempfile.TemporaryDirectory())
        started.append(endpoint)
        return endpoint

    monkeypatch.setattr(runner, "start_child", fake_start_child)
    report = await run_compare(_settings(["loopback", "crossloop"]), registry=registry_with_fakes())
    assert report.ok, [str(d) for d in report.differences] + report.failed
    cross = report.runs[1]
    assert cross.target_mode == "in-process"
    assert cross.note is not None and "could not be reached in a child process" in cross.note
    assert started and started[0].process.returncode is not None, "the child was not stopped"


def test_the_data_pool_is_drawn_in_chunks_with_the_same_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """One randbytes call for the pool failed above 256 MiB (OverflowError from
    getrandbits: --bytes 256M was a traceback); drawn in chunks, the bytes for a seed are
    the ones a single call gives, whatever the chunk size."""
    import random

    from datamover.compare import workload as workload_module

    for chunk in (4, 64, 1 << 20):
        monkeypatch.setattr(workload_module, "_POOL_CHUNK", chunk)
        for size in (0, 3, 4096 + 5, 3 * 64 + 1):
            assert bytes(workload_module._random_pool(9, size)) == random.Random(9).randbytes(size), (chunk, size)
