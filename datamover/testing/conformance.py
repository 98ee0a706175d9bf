"""Abstract conformance tests a transport plugin inherits (the fsspec abstract-test pattern).

In the plugin's test suite::

    from datamover.testing import TransportConformance

    class TestMyTransport(TransportConformance):
        @pytest.fixture
        def transport_name(self) -> str:
            return "mine"            # a registered transport name

or, for a transport that is not registered (or needs options)::

        @pytest.fixture
        def transport_factory(self):
            return lambda: MyTransport({"option": 1})

With the ``datamover`` pytest plugin loaded, a subclass that overrides neither is run for
every transport named by ``--datamover-transport`` (default loopback).

Every failure message starts with the rule it checks, in brackets (``[data-integrity]``,
``[tmf]``, ...), followed by the RFC section, so a plugin author knows what broke without
reading the kit. Tests needing a capability are marked with :func:`requires` and skipped,
naming it, for transports that lack it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from datamover.capabilities import TransportCapabilities
from datamover.di import NotImplementedTransport, Portal
from datamover.initiator import discover
from datamover.initiator.session import RejectedError
from datamover.pdu import LoginRequest, NopOut, Reject, RejectReason, UnknownPdu
from datamover.plugin import PluginError, create_transport
from datamover.session.errors import CommandFailed, LoginError, TaskAborted
from datamover.testing.harness import TARGET_IQN, KitHarness, TransportFactory, gather_limited, wait_until
from datamover.testing.requirements import missing, needed_by, requires
from datamover.trace import DITrace, first_difference, normalise

#: mixed I/O sizes of the data-integrity matrix (bytes; multiples of the 512-byte block)
INTEGRITY_SIZES = (512, 1024, 4096, 8192, 65536, 131072, 262144, 1 << 20)
INTEGRITY_TOTAL = 4 << 20
#: burst settings that make every data path (immediate, unsolicited, solicited) carry data
BURST_KEYS = {"FirstBurstLength": "65536", "MaxBurstLength": "262144", "MaxRecvDataSegmentLength": "16384",
              "MaxOutstandingR2T": "1"}

T = TypeVar("T")



#: iSER-style receive limits (RFC 7145 6.4-6.5), set to the same 16 KiB as above where a
#: transport declares them, so every transport bounds its PDUs alike
RECV_LIMIT_KEYS = {"TargetRecvDataSegmentLength": "16384", "InitiatorRecvDataSegmentLength": "16384"}

#: what a scenario may fail with when the transport misbehaves (turned into a rule failure)
_SCENARIO_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError, TimeoutError, asyncio.TimeoutError, LoginError, CommandFailed, TaskAborted, RejectedError)


def _rule(name: str, text: str) -> str:
    return f"[{name}] {text}"


def equal_limit_keys(capabilities: TransportCapabilities, keys: dict[str, str]) -> dict[str, str]:
    """``keys`` plus the transport's own receive-limit keys at the same value."""
    own = {row.name for row in capabilities.login_keys}
    return {**keys, **{k: v for k, v in RECV_LIMIT_KEYS.items() if k in own}}


def run_rule(kit: KitHarness, rule: str, scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a scenario; a session or connection failure fails the test naming ``rule``."""
    try:
        return kit.run(scenario)
    except _SCENARIO_ERRORS as exc:
        raise AssertionError(_rule(rule, f"{kit.name}: the scenario failed with {type(exc).__name__}: {exc}")) from exc


def _mixed_workload(seed: int, total: int) -> list[tuple[int, int]]:
    """(byte offset, size) pairs covering ``total`` bytes in mixed sizes."""
    rng = random.Random(seed)
    out, offset = [], 0
    while offset < total:
        size = min(rng.choice(INTEGRITY_SIZES), total - offset)
        out.append((offset, size))
        offset += size
    return out


def _first_byte_difference(a: bytes | bytearray, b: bytes | bytearray) -> int:
    for index, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return index
    return min(len(a), len(b))


class TransportConformance:
    """What every datamover must do; subclass it and provide the transport (see module doc)."""

    #: seconds one kit scenario may take before it counts as hung
    scenario_timeout: float = 60.0

    # ------------------------------------------------------------------ fixtures
    @pytest.fixture
    def transport_name(self) -> str:
        raise NotImplementedError(
            f"{type(self).__name__} must override the 'transport_name' fixture (a registered transport "
            "name) or the 'transport_factory' fixture (a callable returning a Transport), or be run "
            "with the datamover pytest plugin's --datamover-transport option")

    @pytest.fixture
    def transport_factory(self, transport_name: str) -> TransportFactory:
        try:
            create_transport(transport_name)
        except PluginError as exc:
            raise NotImplementedError(f"transport_name {transport_name!r}: {exc}") from None
        return lambda: create_transport(transport_name)

    @pytest.fixture
    def target_portal(self) -> Portal | None:
        """Where the kit's target listens; None: 127.0.0.1 port 0 (an in-process name for
        transports that are not cross_process). Override for unusual addressing."""
        return None

    @pytest.fixture
    def kit(self, request: pytest.FixtureRequest, transport_factory: TransportFactory,
            target_portal: Portal | None) -> KitHarness:
        harness = KitHarness(transport_factory, target_portal, timeout=self.scenario_timeout)
        lacking = missing(harness.capabilities, needed_by(request.node))
        if lacking:
            pytest.skip(f"transport {harness.name!r} lacks capability {', '.join(repr(c) for c in lacking)}")
        try:
            harness.run(harness.check_implemented)
        except NotImplementedTransport as exc:
            pytest.skip(f"transport {harness.name!r} is not implemented yet: {exc}")
        return harness

    # ------------------------------------------------------------------ login
    def test_login_logout(self, kit: KitHarness) -> None:
        """RFC 7143 6 / RFC 5047 8.4-8.6: a login reaches full feature phase, a command
        works, and a logout ends the session on both sides."""

        async def scenario() -> None:
            async with kit.target() as (server, portal):
                session = kit.session(portal, keys={"MaxBurstLength": "65536"})
                await session.login()
                assert session.tsih != 0, _rule("login", "the final Login Response carried TSIH 0")
                assert session.agreed.get("MaxBurstLength") == "65536", _rule(
                    "login", f"MaxBurstLength negotiated to {session.agreed.get('MaxBurstLength')!r}, not 65536")
                outcome = await session.test_unit_ready()
                assert outcome.good, _rule("login", f"TEST UNIT READY after login ended with status {outcome.status:#x}")
                assert len(server.sessions) == 1, _rule("login", "the target does not hold exactly one session")
                await session.logout()
                assert not session.is_up
                assert await wait_until(lambda: not server.sessions), _rule(
                    "logout", "RFC 7143 11.14: the target kept the session after Logout")

        run_rule(kit, "login", scenario)

    # ------------------------------------------------------------------ data
    @pytest.mark.parametrize("initial_r2t", ["Yes", "No"])
    @pytest.mark.parametrize("immediate_data", ["Yes", "No"])
    def test_data_integrity(self, kit: KitHarness, initial_r2t: str, immediate_data: str) -> None:
        """RFC 5047 8.1-8.3: bytes written in mixed sizes (512 B .. 1 MiB, 8 in flight)
        read back identical, under each InitialR2T x ImmediateData combination."""
        keys = equal_limit_keys(kit.capabilities,
                                {"InitialR2T": initial_r2t, "ImmediateData": immediate_data, **BURST_KEYS})
        payload = random.Random(7).randbytes(INTEGRITY_TOTAL)
        work = _mixed_workload(11, INTEGRITY_TOTAL)
        back = bytearray(INTEGRITY_TOTAL)

        async def scenario() -> None:
            async with kit.target(keys=keys) as (_, portal):
                session = kit.session(portal, keys=keys)
                await session.login()
                view, back_view = memoryview(payload), memoryview(back)

                def writer(offset: int, size: int) -> Any:
                    return lambda: session.write_blocks(0, offset // 512, view[offset:offset + size])

                def reader(offset: int, size: int) -> Any:
                    return lambda: session.read_blocks(0, offset // 512, size // 512,
                                                       buffer=back_view[offset:offset + size])

                await gather_limited([writer(o, s) for o, s in work], 8)
                await gather_limited([reader(o, s) for o, s in work], 8)
                await session.logout()

        run_rule(kit, "data-integrity", scenario)
        if back != payload:
            at = _first_byte_difference(back, payload)
            size = next(s for o, s in work if o <= at < o + s)
            raise AssertionError(_rule(
                "data-integrity",
                f"RFC 5047 8.2 Put_Data / 8.3 Get_Data: data read back differs from what was written "
                f"(InitialR2T={initial_r2t}, ImmediateData={immediate_data}): first difference at byte "
                f"{at} (in an I/O of {size} bytes): read {back[at]:#04x}, wrote {payload[at]:#04x}"))

    # ------------------------------------------------------------------ TMF
    def test_task_management_answers(self, kit: KitHarness) -> None:
        """RFC 7143 11.5-11.6: LOGICAL UNIT RESET completes, ABORT TASK of an unknown task
        answers 0 or 1, a TMF for a LUN that does not exist answers 2."""

        async def scenario() -> None:
            async with kit.target() as (_, portal):
                session = kit.session(portal)
                await session.login()
                assert (response := await session.lun_reset(0)) == 0, _rule(
                    "tmf", f"RFC 7143 11.6.1: LOGICAL UNIT RESET answered {response}, expected 0 (function complete)")
                assert (response := await session.abort_task(0x12345, 0)) in (0, 1), _rule(
                    "tmf", f"RFC 7143 11.6.1: ABORT TASK of an unknown task answered {response}, expected 0 or 1")
                assert (response := await session.task_management(5, lun=7)) == 2, _rule(
                    "tmf", f"RFC 7143 11.6.1: a TMF for LUN 7 (absent) answered {response}, expected 2")
                assert (await session.test_unit_ready()).good, _rule("tmf", "the session is unusable after TMFs")
                await session.logout()

        run_rule(kit, "tmf", scenario)

    # ------------------------------------------------------------------ discovery
    def test_discovery_send_targets(self, kit: KitHarness) -> None:
        """RFC 7143 App. C: SendTargets=All in a Discovery session names the target and an
        address."""

        async def scenario() -> dict[str, list[str]]:
            async with kit.target() as (_, portal):
                return await discover(kit.factory(), portal)

        found = run_rule(kit, "discovery", scenario)
        assert TARGET_IQN in found, _rule("discovery", f"RFC 7143 App. C: SendTargets did not name {TARGET_IQN}: {found}")
        assert found[TARGET_IQN], _rule("discovery", "RFC 7143 App. C: SendTargets gave no TargetAddress")

    # ------------------------------------------------------------------ bad input
    def test_unknown_opcode_is_rejected(self, kit: KitHarness) -> None:
        """RFC 7143 11.17.1: an opcode the target does not know -> Reject, reason 0x05."""

        async def scenario() -> Any:
            async with kit.target() as (_, portal):
                client = await kit.raw_client(portal)
                raw = bytearray(48)
                raw[0] = 0x1C
                client.send(UnknownPdu(opcode_value=0x1C, raw_bhs=bytes(raw), itt=0x21))
                reply = await client.next()
                client.close()
                return reply

        reply = run_rule(kit, "bad-input", scenario)
        assert isinstance(reply, Reject) and reply.reason == RejectReason.COMMAND_NOT_SUPPORTED, _rule(
            "bad-input", f"RFC 7143 11.17.1: unknown opcode answered with {reply!r}, expected Reject reason 0x05")

    def test_login_in_full_feature_phase_is_rejected(self, kit: KitHarness) -> None:
        """RFC 7143 6.1 / RFC 5047 10.3.10: a Login PDU in full feature phase -> Reject."""

        async def scenario() -> Any:
            async with kit.target() as (_, portal):
                client = await kit.raw_client(portal)
                client.send(LoginRequest(itt=3, transit=True, csg=1, nsg=3, isid=1, cmd_sn=1,
                                         exp_stat_sn=client.exp_stat_sn))
                reply = await client.next()
                client.close()
                return reply

        reply = run_rule(kit, "bad-input", scenario)
        assert isinstance(reply, Reject) and reply.reason == RejectReason.PROTOCOL_ERROR, _rule(
            "bad-input", f"RFC 7143 6.1: Login in full feature phase answered with {reply!r}, expected Reject 0x04")

    def test_cmdsn_outside_window_is_ignored(self, kit: KitHarness) -> None:
        """RFC 7143 4.2.2.1: a non-immediate PDU with CmdSN outside [ExpCmdSN, MaxCmdSN]
        is silently discarded; the next in-window PDU is answered."""

        async def scenario() -> tuple[bool, Any]:
            async with kit.target() as (_, portal):
                client = await kit.raw_client(portal)
                assert client.login is not None
                far = (client.login.max_cmd_sn + 10) & 0xFFFFFFFF
                client.send(NopOut(itt=7, cmd_sn=far, exp_stat_sn=client.exp_stat_sn))
                client.send(NopOut(itt=8, cmd_sn=(client.login.exp_cmd_sn - 5) & 0xFFFFFFFF,
                                   exp_stat_sn=client.exp_stat_sn))
                quiet = await client.quiet()
                client.send(NopOut(itt=9, cmd_sn=client.login.exp_cmd_sn, exp_stat_sn=client.exp_stat_sn))
                reply = await client.next()
                client.close()
                return quiet, reply

        quiet, reply = run_rule(kit, "cmdsn-window", scenario)
        assert quiet, _rule("cmdsn-window", "RFC 7143 4.2.2.1: the target answered a PDU outside the CmdSN window")
        assert reply.itt == 9, _rule("cmdsn-window", f"the in-window NOP-Out got {reply!r}")

    # ------------------------------------------------------------------ digests
    def _digest_session(self, kit: KitHarness, key: str) -> None:
        keys = equal_limit_keys(kit.capabilities, {key: "CRC32C", **BURST_KEYS})
        payload = random.Random(3).randbytes(1 << 20)

        async def scenario() -> tuple[str | None, bytes]:
            async with kit.target(keys=keys) as (_, portal):
                session = kit.session(portal, keys=keys)
                await session.login()
                agreed = session.agreed.get(key)
                await session.write_blocks(0, 0, payload)
                back = bytes(await session.read_blocks(0, 0, len(payload) // 512))
                await session.logout()
                return agreed, back

        agreed, back = run_rule(kit, "digest", scenario)
        assert agreed == "CRC32C", _rule("digest", f"RFC 7143 13.1: {key}=CRC32C offered by both ends negotiated to {agreed!r}")
        assert back == payload, _rule("digest", f"data read back differs in a {key}=CRC32C session")

    @requires("header_digest")
    def test_header_digest_session(self, kit: KitHarness) -> None:
        """RFC 7143 13.1: a HeaderDigest=CRC32C session moves data intact."""
        self._digest_session(kit, "HeaderDigest")

    @requires("data_digest")
    def test_data_digest_session(self, kit: KitHarness) -> None:
        """RFC 7143 13.1: a DataDigest=CRC32C session moves data intact."""
        self._digest_session(kit, "DataDigest")

    # ------------------------------------------------------------------ DI trace
    @requires("records_trace")
    def test_di_trace_matches_loopback(self, kit: KitHarness) -> None:
        """RFC 5047 8-9: the same workload makes the same normalised DI calls, on both
        roles, as over loopback (the reference datamover)."""
        try:
            reference = KitHarness(lambda: create_transport("loopback"), timeout=self.scenario_timeout)
        except PluginError as exc:
            pytest.skip(f"the loopback reference transport is not available: {exc}")
        base = {"InitialR2T": "No", "ImmediateData": "Yes", **BURST_KEYS}
        sizes = [512, 4096, 65536, 262144, 1 << 20, 8192]
        payload = random.Random(5).randbytes(sum(sizes))

        def traced(harness: KitHarness) -> list[str]:
            keys = equal_limit_keys(harness.capabilities, base)
            trace = DITrace()
            workload_calls: list[Any] = []

            async def scenario() -> None:
                async with harness.target(keys=keys, trace=trace) as (_, portal):
                    session = harness.session(portal, keys=keys, trace=trace)
                    await session.login()
                    trace.clear()  # login calls depend on the transport's own keys
                    offset = 0
                    for size in sizes:
                        await session.write_blocks(0, offset // 512, payload[offset:offset + size])
                        offset += size
                    offset = 0
                    for size in sizes:
                        await session.read_blocks(0, offset // 512, size // 512)
                        offset += size
                    # the target may record its last calls a moment after the response
                    await asyncio.sleep(0.05)
                    workload_calls.extend(trace.events)
                    await session.logout()

            run_rule(harness, "di-trace", scenario)
            return normalise(workload_calls)

        expected, actual = traced(reference), traced(kit)
        diff = first_difference(expected, actual)
        if diff is not None:
            index, want, got = diff
            raise AssertionError(_rule(
                "di-trace", f"RFC 5047 8-9: DI call #{index} differs from loopback: {kit.name} made "
                            f"{got or '(no call)'}, loopback made {want or '(no call)'}"))

