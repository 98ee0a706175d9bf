"""Hypothesis strategies for every PDU class, shared by the PDU codec tests."""

from __future__ import annotations

import dataclasses
import random

from hypothesis import strategies as st

from datamover.pdu import PDU_CLASSES, Ahs, Opcode, Pdu, ScsiCommand, UnknownPdu

#: wire width in bits of each integer field (32 unless listed)
WIDTHS: dict[str, int] = {
    "lun": 64,
    "isid": 48,
    "tsih": 16,
    "cid": 16,
    "time2wait": 16,
    "time2retain": 16,
    "parameter1": 16,
    "parameter2": 16,
    "parameter3": 16,
    "response": 8,
    "status": 8,
    "version_max": 8,
    "version_min": 8,
    "version_active": 8,
    "status_class": 8,
    "status_detail": 8,
    "async_event": 8,
    "async_vcode": 8,
    "reason": 8,
    "attr": 3,
    "function": 7,
    "type": 4,
    "csg": 2,
    "nsg": 2,
}
#: per-class overrides of WIDTHS
CLASS_WIDTHS: dict[tuple[str, str], int] = {("LogoutRequest", "reason"): 7}

UNASSIGNED_OPCODES = sorted(set(range(64)) - {int(op) for op in Opcode})


def uint(bits: int) -> st.SearchStrategy[int]:
    # bias towards the edges, where packing bugs live
    top = (1 << bits) - 1
    return st.one_of(st.sampled_from([0, 1, top]), st.integers(0, top))


def _random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


#: payloads of 0..9000 bytes without spending hypothesis' entropy on every byte
payload_bytes = st.one_of(
    st.binary(max_size=16),
    st.builds(_random_bytes, st.integers(0, 9000), st.integers(0, 2**32)),
)


def _as_kind(data: bytes, kind: str) -> bytes | bytearray | memoryview:
    if kind == "bytearray":
        return bytearray(data)
    if kind == "memoryview":
        return memoryview(data)
    return data


payloads = st.builds(_as_kind, payload_bytes, st.sampled_from(["bytes", "bytearray", "memoryview"]))


def ahs_chains(exclude_types: frozenset[int] = frozenset()) -> st.SearchStrategy[list[Ahs]]:
    types = st.integers(0, 255).filter(lambda t: t not in exclude_types)
    return st.lists(st.builds(Ahs, types, st.binary(max_size=40)), max_size=3)


def pdus(cls: type[Pdu]) -> st.SearchStrategy[Pdu]:
    """Any valid instance of ``cls`` (UnknownPdu excluded: see unknown_pdus)."""
    kwargs: dict[str, st.SearchStrategy[object]] = {}
    for f in dataclasses.fields(cls):
        name, kind = f.name, str(f.type)
        if name == "data":
            kwargs[name] = payloads
        elif name == "ahs":
            kwargs[name] = ahs_chains(frozenset({1, 2}) if cls is ScsiCommand else frozenset())
        elif name == "cdb":
            kwargs[name] = st.one_of(st.binary(min_size=16, max_size=16), st.binary(min_size=17, max_size=260))
        elif name == "bidi_read_length":
            kwargs[name] = st.none() | uint(32)
        elif kind == "bool":
            kwargs[name] = st.booleans()
        elif kind == "int":
            kwargs[name] = uint(CLASS_WIDTHS.get((cls.__name__, name), WIDTHS.get(name, 32)))
        else:
            raise AssertionError(f"no strategy for {cls.__name__}.{name}: {kind}")
    return st.builds(cls, **kwargs)


unknown_pdus = st.builds(
    UnknownPdu,
    immediate=st.booleans(),
    itt=uint(32),
    data=payloads,
    ahs=ahs_chains(),
    opcode_value=st.sampled_from(UNASSIGNED_OPCODES),
    raw_bhs=st.binary(min_size=48, max_size=48),
)

any_modelled_pdu = st.one_of([pdus(cls) for cls in PDU_CLASSES.values()])
