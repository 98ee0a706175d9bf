"""Runs the workload over each transport and collects results for the cross-check.

One transport at a time (so they do not compete for CPU): start its target, log in one
initiator session that records its DI trace, settle (a clean TEST UNIT READY), run every
step, log out, stop the target. A transport whose listen/connect raises
:class:`~datamover.di.NotImplementedTransport` is recorded as such and the run goes on.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from typing import Any

from datamover.compare.crosscheck import cross_check
from datamover.compare.endpoints import (
    ChildEndpoint,
    Endpoint,
    EndpointError,
    RemoteEndpoint,
    start_child,
    start_in_process,
)
from datamover.compare.progress import Progress
from datamover.compare.report import CompareReport
from datamover.compare.results import Outcome, RunStatus, StepResult, TransportRun
from datamover.compare.settings import DEFAULT_INITIATOR_IQN, DEFAULT_TARGET_IQN, CompareSettings
from datamover.compare.workload import Step, Workload
from datamover.config import ConfigError
from datamover.di import DatamoverConnection, NotImplementedTransport, Transport
from datamover.pdu.digest import crc32c
from datamover.initiator import InitiatorConfig, InitiatorSession, discover
from datamover.plugin import PluginError, TransportInfo, TransportRegistry, get_registry
from datamover.session.errors import LoginError, SessionClosed
from datamover.trace import DITrace, normalise

log = logging.getLogger("datamover.compare")

_RW16 = struct.Struct(">BBQIBB")  # READ(16) / WRITE(16) CDB
#: a read's data digest as recorded (CRC32C, big-endian)
_DIGEST = struct.Struct(">I")
READ_16, WRITE_16 = 0x88, 0x8A
SETTLE_ATTEMPTS = 5

#: keys that shape the DI calls of a write or read (who sends data when, in which bursts).
#: A transport may prefer other values (iSER prefers InitialR2T=Yes); the comparison pins
#: them to the core's defaults, or to [keys], so every transport runs the same protocol.
PINNED_KEYS = ("InitialR2T", "ImmediateData", "FirstBurstLength", "MaxBurstLength",
               "MaxRecvDataSegmentLength", "MaxOutstandingR2T")
#: transports that bound PDUs by their own receive-length keys (RFC 7145 6.4-6.5) get them
#: at the MaxRecvDataSegmentLength value, so PDU sizes match the other transports
RECV_LIMIT_KEYS = ("TargetRecvDataSegmentLength", "InitiatorRecvDataSegmentLength")


def comparable_keys(settings: CompareSettings, info: TransportInfo) -> dict[str, str]:
    """The operational keys both ends of ``info`` are configured with."""
    from datamover.session.params import DEFAULT_OPERATIONAL_KEYS

    keys = {name: DEFAULT_OPERATIONAL_KEYS[name] for name in PINNED_KEYS if name in DEFAULT_OPERATIONAL_KEYS}
    keys.update(settings.keys)
    declared = {row.name for row in info.capabilities.login_keys}
    limit = keys.get("MaxRecvDataSegmentLength")
    for name in RECV_LIMIT_KEYS:
        if name in declared and name not in keys and limit is not None:
            keys[name] = limit
    return keys


class TransportFailed(Exception):
    """The run on one transport cannot go on (one line for the report)."""


def select_transports(settings: CompareSettings, registry: TransportRegistry) -> list[TransportInfo]:
    """The transports to run, in order: loopback first (the reference), then by name."""
    names = settings.transports or registry.names()
    infos: list[TransportInfo] = []
    for name in names:
        if name not in registry:
            raise ConfigError(settings.source, "compare.transports",
                              f"unknown transport {name!r} (registered: {', '.join(registry.names())})")
        infos.append(registry.get(name))
    for name in settings.targets:
        if name not in registry:
            raise ConfigError(settings.source, "compare.targets",
                              f"unknown transport {name!r} (registered: {', '.join(registry.names())})")
    infos.sort(key=lambda info: (info.name != "loopback", names.index(info.name)))
    return infos


def transport_options(settings: CompareSettings, info: TransportInfo) -> dict[str, Any]:
    """``[transport.NAME]`` options, checked against what the plugin declares."""
    options = settings.transport_options.get(info.name, {})
    declared = info.cls.option_names()
    for key, value in options.items():
        if key not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise ConfigError(settings.source, f"transport.{info.name}.{key}", f"unknown option (known: {known})")
        expected = declared[key]
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(settings.source, f"transport.{info.name}.{key}",
                              f"expected {expected.__name__}, got {value!r}")
    return dict(options)


async def run_compare(settings: CompareSettings, *, registry: TransportRegistry | None = None,
                      progress: Progress | None = None) -> CompareReport:
    """Run every selected transport and cross-check them; never raises for a transport's
    own failure (that is recorded in the report), only for configuration errors."""
    registry = registry if registry is not None else get_registry()
    infos = select_transports(settings, registry)
    option_sets = {info.name: transport_options(settings, info) for info in infos}
    progress = progress or Progress()
    workload = Workload.build(settings)
    runs: list[TransportRun] = []
    for position, info in enumerate(infos, 1):
        label = f"[{position}/{len(infos)} {info.name}]"
        runs.append(await run_transport(info, option_sets[info.name], settings, workload, progress, label))
    progress.done()
    differences = cross_check(runs, by_duration=settings.duration > 0)
    return CompareReport(settings=settings, runs=runs, differences=differences, region=workload.region,
                         steps=[step.name for step in workload.steps])


# ----------------------------------------------------------------------- one transport
async def run_transport(info: TransportInfo, options: dict[str, Any], settings: CompareSettings,
                        workload: Workload, progress: Progress, label: str = "") -> TransportRun:
    caps = info.capabilities
    run = TransportRun(name=info.name, provider=caps.provider, capabilities=caps.summary())
    keys = comparable_keys(settings, info)
    endpoint: Endpoint | None = None
    session: InitiatorSession | None = None
    try:
        target_transport = info.cls(options)
        initiator_transport = info.cls(options)
        run.describe = initiator_transport.describe()
        progress.update(f"{label} starting the target", force=True)
        endpoint = await _start_endpoint(info, target_transport, initiator_transport, settings, options, keys)
        trace = DITrace()
        config = InitiatorConfig(name=DEFAULT_INITIATOR_IQN, keys=dict(keys),
                                 login_timeout=min(15.0, settings.io_timeout),
                                 command_timeout=settings.io_timeout)
        session = InitiatorSession(initiator_transport, endpoint.portal, config, endpoint.iqn,
                                   trace=trace, recover=False)
        try:
            await session.login()
        except (ConnectionError, OSError, asyncio.TimeoutError) as exc:
            if not isinstance(endpoint, ChildEndpoint):
                raise
            # The transport says cross_process, but this configuration of it cannot reach
            # another process (an in-process fabric, say). Compare it in-process rather than
            # not at all, and say so in the report.
            await session.close()
            await endpoint.close()
            endpoint = None
            run.note = (f"its target could not be reached in a child process ({_one_line(exc)}); "
                        "ran it in-process instead")
            initiator_transport = info.cls(options)
            endpoint = await start_in_process(info.cls(options), settings.iqn or DEFAULT_TARGET_IQN,
                                              settings.lun_size, keys, max(128, settings.queue_depth))
            session = InitiatorSession(initiator_transport, endpoint.portal, config, endpoint.iqn,
                                       trace=trace, recover=False)
            await session.login()
        run.target_mode = endpoint.mode
        run.agreed = dict(session.agreed)
        block_size = await _settle(session, settings, workload)
        trace.clear()
        run.describe = initiator_transport.describe()  # some transports know more once connected
        await _run_steps(run, session, endpoint, trace, settings, workload, block_size, progress, label)
    except NotImplementedTransport as exc:
        run.status, run.error = RunStatus.NOT_IMPLEMENTED, str(exc)
    except (TransportFailed, EndpointError, LoginError, PluginError) as exc:
        run.status, run.error = RunStatus.FAILED, str(exc)
    except (ConnectionError, OSError, asyncio.TimeoutError) as exc:
        run.status, run.error = RunStatus.FAILED, f"connection failed: {_one_line(exc)}"
    except Exception as exc:  # a plugin bug must end up in the report, not kill the comparison
        log.debug("transport %s crashed", info.name, exc_info=True)
        run.status, run.error = RunStatus.FAILED, f"{type(exc).__name__}: {exc}"
    finally:
        if session is not None:
            try:
                await asyncio.wait_for(session.logout(), 5.0)
            except Exception:  # logout after a failure: best effort
                await session.close()
        if endpoint is not None:
            await endpoint.close()
    return run


async def _start_endpoint(info: TransportInfo, target_transport: Transport, initiator_transport: Transport,
                          settings: CompareSettings, options: dict[str, Any], keys: dict[str, str]) -> Endpoint:
    caps = info.capabilities
    if info.name in settings.targets:
        portal = settings.targets[info.name]
        iqn = settings.iqn
        if iqn is None:
            found = await asyncio.wait_for(discover(initiator_transport, portal, InitiatorConfig(
                name=DEFAULT_INITIATOR_IQN, keys=dict(keys))), settings.io_timeout)
            if not found:
                raise TransportFailed(f"the target at {portal} offers no targets to discover (give --iqn)")
            iqn = sorted(found)[0]
        return RemoteEndpoint(portal, iqn)
    iqn = settings.iqn or DEFAULT_TARGET_IQN
    if caps.cross_process and not settings.in_process:
        return await start_child(target_transport, iqn, settings.lun_size, keys, options,
                                 max(128, settings.queue_depth))
    return await start_in_process(target_transport, iqn, settings.lun_size, keys, max(128, settings.queue_depth))


async def _settle(session: InitiatorSession, settings: CompareSettings, workload: Workload) -> int:
    """Clear pending unit attentions (a remote target may hold one) and check the region
    fits the LUN; returns the LUN's block size."""
    for _ in range(SETTLE_ATTEMPTS):
        if (await session.test_unit_ready(0)).good:
            break
    else:
        raise TransportFailed("LUN 0 never became ready (TEST UNIT READY kept failing)")
    blocks, block_size = await session.read_capacity(0)
    if blocks * block_size < workload.region:
        raise TransportFailed(f"LUN 0 holds {blocks * block_size} bytes; the workload needs {workload.region}")
    for size in settings.block_sizes:
        if size % block_size:
            raise TransportFailed(f"block size {size} is not a multiple of the LUN's {block_size}-byte blocks")
    return block_size


def _stats_of(conns: list[DatamoverConnection]) -> dict[str, int]:
    total: dict[str, int] = {}
    for conn in conns:
        try:
            stats = conn.stats()
        except Exception:  # counters are a report nicety, never a reason to fail
            continue
        for key, value in stats.items():
            if isinstance(value, int) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value
    return total


async def _run_steps(run: TransportRun, session: InitiatorSession, endpoint: Endpoint, trace: DITrace,
                     settings: CompareSettings, workload: Workload, block_size: int, progress: Progress,
                     label: str) -> None:
    assert session.conn is not None
    initiator_conns = [session.conn]
    target_conns = endpoint.target_connections()
    shadow = bytearray(workload.region)
    stats_before = _stats_of(initiator_conns)
    target_stats_before = _stats_of(target_conns)
    target_cpu_before = endpoint.target_cpu()
    cpu_before = time.process_time()
    for number, step in enumerate(workload.steps, 1):
        text = f"{label} step {number}/{len(workload.steps)} {step.name}"
        result = await _run_step(session, step, workload, settings, block_size, shadow, progress, text)
        result.trace = normalise(trace.events)
        result.trace_dropped = trace.dropped
        trace.clear()
        run.steps.append(result)
        if not session.is_up:
            raise TransportFailed(f"the session ended during step {step.name}"
                                  + (f": {session.last_error}" if session.last_error else ""))
    run.initiator_cpu = time.process_time() - cpu_before
    target_cpu_after = endpoint.target_cpu()
    if target_cpu_before is not None and target_cpu_after is not None:
        run.target_cpu = target_cpu_after - target_cpu_before
    run.cpu_shared = endpoint.mode == "in-process"
    run.stats = _delta(stats_before, _stats_of(initiator_conns))
    if target_conns:
        run.target_stats = _delta(target_stats_before, _stats_of(target_conns))


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before.get(key, 0) for key in after}


async def _run_step(session: InitiatorSession, step: Step, workload: Workload, settings: CompareSettings,
                    block_size: int, shadow: bytearray, progress: Progress, text: str) -> StepResult:
    """Issue the step's I/Os with ``queue_depth`` in flight; record everything per I/O."""
    result = StepResult(step.name, step.pattern, step.op, step.block_size, step.measured)
    by_duration = settings.duration > 0
    limit = step.pass_length
    outcomes: dict[int, Outcome] = {}
    digests: dict[int, bytes | None] = {}
    latencies: dict[int, float] = {}
    done: dict[int, asyncio.Event] = {}
    pool = memoryview(workload.pool)
    shadow_view = memoryview(shadow)
    next_index = 0
    fatal: list[BaseException] = []
    start = time.perf_counter()
    deadline = start + settings.duration

    async def worker() -> None:
        nonlocal next_index
        buffer = memoryview(bytearray(step.block_size))
        while not fatal:
            index = next_index
            if by_duration:
                # time is checked at pass boundaries only: a step ends on a whole pass
                if index % limit == 0 and index and time.perf_counter() >= deadline:
                    return
            elif index >= limit:
                return
            next_index += 1
            done[index] = asyncio.Event()
            # a wrapped-around I/O waits for the one a pass earlier on the same slot
            earlier = done.get(index - step.pass_length)
            if earlier is not None:
                await earlier.wait()
            io = step.io(index)
            lba = io.offset // block_size
            count = io.length // block_size
            began = time.perf_counter()
            try:
                if io.write:
                    payload = pool[io.pool_offset:io.pool_offset + io.length]
                    outcome = await session.execute(0, _RW16.pack(WRITE_16, 0, lba, count, 0, 0),
                                                    data_out=payload, timeout=settings.io_timeout)
                else:
                    outcome = await session.execute(0, _RW16.pack(READ_16, 0, lba, count, 0, 0),
                                                    read_buffer=buffer[:io.length], timeout=settings.io_timeout)
            except (asyncio.TimeoutError, SessionClosed, ConnectionError) as exc:
                outcomes[index] = ("error", type(exc).__name__)
                fatal.append(exc)
                done[index].set()
                return
            except Exception as exc:  # Reject, TaskAborted, ...: recorded, compared, reported
                outcomes[index] = ("error", type(exc).__name__)
                digests[index] = None
                latencies[index] = time.perf_counter() - began
                done[index].set()
                continue
            latencies[index] = time.perf_counter() - began
            outcomes[index] = (outcome.status, outcome.sense.hex())
            if io.write:
                digests[index] = None
                if outcome.good:
                    shadow_view[io.offset:io.offset + io.length] = payload
                    result.bytes_written += io.length
            else:
                data = outcome.data
                # CRC32C, not a cryptographic hash: it only has to tell transports' reads
                # apart, and verification compares every byte anyway; blake2b (0.7 ms per
                # MiB) made every read step of the run measure the hash, not the transport
                digests[index] = _DIGEST.pack(crc32c(data))
                if outcome.good:
                    result.bytes_read += io.length
                    # shadow[...] is a bytearray slice: its == takes any buffer and is a
                    # memcmp (about 70 us per MiB with the copy); memoryview == memoryview
                    # compares item by item (750 us per MiB) and made read steps measure it
                    if settings.verify and shadow[io.offset:io.offset + len(data)] != data:
                        result.verify_errors += 1
                        if result.first_verify_error is None:
                            result.first_verify_error = _first_mismatch(
                                data, shadow_view[io.offset:io.offset + len(data)], io.offset, index)
            done[index].set()
            # drop events no later I/O can wait for (bounded memory in long runs)
            done.pop(index - 2 * step.pass_length, None)
            if by_duration:
                progress.update(f"{text} {min(1.0, (time.perf_counter() - start) / settings.duration):4.0%}")
            else:
                progress.update(f"{text} {len(outcomes) / limit:4.0%}")

    workers = min(settings.queue_depth, step.pass_length) if not by_duration else min(
        settings.queue_depth, max(1, step.pass_length // 2))
    await asyncio.gather(*(worker() for _ in range(workers)))
    result.seconds = time.perf_counter() - start
    count = max(outcomes) + 1 if outcomes else 0
    result.ios = count
    result.outcomes = [outcomes.get(i, ("error", "not completed")) for i in range(count)]
    result.digests = [digests.get(i) for i in range(count)]
    result.latencies = [latencies[i] for i in range(count) if i in latencies]
    if fatal:
        raise TransportFailed(f"step {step.name}: I/O failed: {type(fatal[0]).__name__}: {fatal[0]}")
    return result


def _one_line(exc: BaseException) -> str:
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return (text or type(exc).__name__).splitlines()[0]


def _first_mismatch(data: memoryview, expected: memoryview, region_offset: int, index: int) -> str:
    for position in range(len(data)):
        if data[position] != expected[position]:
            return (f"I/O #{index}: byte {region_offset + position} of the region reads "
                    f"{data[position]:#04x}, expected {expected[position]:#04x}")
    return f"I/O #{index}: length differs"
