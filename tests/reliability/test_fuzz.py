"""Hypothesis fuzzers in the default suite (a bounded number of examples each) for the PDU
codec, the text/key codec, the target's login state machine and the iSER header. The same
targets run coverage-guided under atheris: ``python -m tools.fuzz.atheris_run TARGET``."""

from __future__ import annotations

import logging
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datamover.pdu import LoginRequest
from datamover.pdu.text import encode_text
from tools.fuzz.targets import FUZZ_TARGET, fuzz_iser_header, fuzz_pdu, fuzz_text, run_login

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OPCODES = [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x10, 0x1C, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26,
           0x31, 0x32, 0x3C, 0x3F, 0x07, 0x1E]


@pytest.fixture(autouse=True)
def _quiet() -> None:
    logging.getLogger("datamover").setLevel(logging.ERROR)


@st.composite
def wire_pdus(draw: st.DrawFn) -> bytes:
    """Mostly well-framed PDUs with random fields (so decoding goes past the framing)."""
    bhs = bytearray(draw(st.binary(min_size=48, max_size=48)))
    bhs[0] = (bhs[0] & 0x40) | draw(st.sampled_from(OPCODES))
    ahs = draw(st.sampled_from([0, 0, 0, 1, 2, 5]))
    data = draw(st.binary(max_size=300))
    bhs[4] = ahs
    bhs[5:8] = len(data).to_bytes(3, "big")
    body = draw(st.binary(min_size=ahs * 4, max_size=ahs * 4)) + data + bytes(-len(data) % 4)
    tail = draw(st.binary(max_size=8))
    return bytes(bhs) + body + tail


@FUZZ
@given(st.one_of(st.binary(max_size=400), wire_pdus()))
def test_pdu_codec(data: bytes) -> None:
    fuzz_pdu(data)


KEYS = ["HeaderDigest", "DataDigest", "MaxRecvDataSegmentLength", "MaxBurstLength", "FirstBurstLength",
        "InitialR2T", "ImmediateData", "MaxOutstandingR2T", "ErrorRecoveryLevel", "AuthMethod", "CHAP_A",
        "CHAP_N", "CHAP_R", "CHAP_I", "CHAP_C", "SessionType", "TargetName", "InitiatorName",
        "MaxConnections", "DefaultTime2Wait", "X-Vendor", "SendTargets", "TargetPortalGroupTag"]
VALUES = st.one_of(st.sampled_from(["None", "CRC32C", "Yes", "No", "CHAP", "5", "0", "8192", "Reject",
                                    "Irrelevant", "NotUnderstood", "0x00", "0b", "", "4294967296",
                                    "None,CRC32C", "-1", FUZZ_TARGET, "Discovery", "Normal"]),
                   st.text(max_size=20))
PAIRS = st.lists(st.tuples(st.one_of(st.sampled_from(KEYS), st.text(max_size=10)), VALUES), max_size=8)


@FUZZ
@given(st.one_of(st.binary(max_size=300), PAIRS.map(lambda p: _safe_encode(p))))
def test_text_codec(data: bytes) -> None:
    fuzz_text(data)


def _safe_encode(pairs: list[tuple[str, str]]) -> bytes:
    return b"".join(f"{k}={v}".encode("utf-8", "surrogatepass") + b"\0" for k, v in pairs)


@st.composite
def login_scripts(draw: st.DrawFn) -> list[LoginRequest]:
    count = draw(st.integers(1, 6))
    pdus = []
    for i in range(count):
        pairs = draw(PAIRS)
        if i == 0 and draw(st.booleans()):
            pairs = [("InitiatorName", "iqn.2026-11.org.datamover.fuzz:host"), ("TargetName", FUZZ_TARGET)] + pairs
        try:
            text = encode_text(pairs)
        except ValueError:
            text = _safe_encode(pairs)
        pdus.append(LoginRequest(itt=1, transit=draw(st.booleans()), cont=draw(st.booleans()),
                                 csg=draw(st.integers(0, 3)), nsg=draw(st.integers(0, 3)),
                                 isid=0x80_0000_0001, tsih=draw(st.sampled_from([0, 0, 0, 7])),
                                 cmd_sn=1, version_min=draw(st.sampled_from([0, 0, 1])), data=text))
    return pdus


@FUZZ
@given(login_scripts(), st.booleans())
def test_login_state_machine(pdus: list[LoginRequest], chap: bool) -> None:
    """Any PDU sequence ends in full feature phase or a refusal with a Login Response;
    never an unexpected exception, never full feature phase without the required CHAP."""
    outcome, sent = run_login(pdus, chap)
    if outcome == "refused" and sent:
        last = sent[-1]
        assert getattr(last, "status_class", 0) in (0, 1, 2, 3)


@FUZZ
@given(st.one_of(st.binary(max_size=64),
                 st.tuples(st.sampled_from([0x10, 0x18, 0x14, 0x20, 0x30, 0x11, 0x00, 0xF0]),
                           st.binary(min_size=27, max_size=40)).map(lambda t: bytes([t[0]]) + t[1])))
def test_iser_header(data: bytes) -> None:
    fuzz_iser_header(data)


def test_a_real_login_passes_through_the_fuzz_harness() -> None:
    """The login harness can reach full feature phase (so the fuzzer explores past it)."""
    pdus = [LoginRequest(itt=1, transit=True, csg=0, nsg=1, isid=0x80_0000_0001, cmd_sn=1, data=encode_text(
        [("InitiatorName", "iqn.2026-11.org.datamover.fuzz:host"), ("TargetName", FUZZ_TARGET),
         ("SessionType", "Normal"), ("AuthMethod", "None")])),
            LoginRequest(itt=1, transit=True, csg=1, nsg=3, isid=0x80_0000_0001, cmd_sn=1, data=b"")]
    outcome, _ = run_login(pdus, chap=False)
    assert outcome == "ok"
    outcome, _ = run_login(pdus, chap=True)
    assert outcome == "refused"
    assert struct.calcsize(">I") == 4
