"""Initiator and target Negotiators talking to each other until the login settles."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from datamover.di import Role
from datamover.negotiation import ISER_KEYS, NegotiationError, Negotiator
from datamover.negotiation.keys import KeyRow, Scope

MAX_ROUNDS = 8


def run_stage(ini: Negotiator, tgt: Negotiator, stage: int) -> int:
    """Exchange PDUs for one stage; return the number of round trips."""
    request = ini.offers(stage)
    for rounds in range(1, MAX_ROUNDS + 1):
        response = tgt.handle(request, stage) + tgt.offers(stage)
        request = ini.handle(response, stage) + ini.offers(stage)
        if not request and not ini.pending(stage) and not tgt.pending(stage):
            return rounds
    raise AssertionError(f"stage {stage} did not converge in {MAX_ROUNDS} rounds")


def login(ini: Negotiator, tgt: Negotiator) -> None:
    run_stage(ini, tgt, 0)
    run_stage(ini, tgt, 1)


def test_rfc7143_6_end_to_end_login_converges() -> None:
    """RFC 7143 6.2: offers in both directions settle to the same values on both ends."""
    ini = Negotiator(Role.INITIATOR, local={
        "InitiatorName": "iqn.2024-01.org.example:host", "TargetName": "iqn.2024-01.org.example:disk",
        "AuthMethod": "None", "HeaderDigest": "CRC32C,None", "DataDigest": "None",
        "MaxRecvDataSegmentLength": "262144", "MaxBurstLength": "1048576",
        "FirstBurstLength": "262144", "InitialR2T": "No", "ImmediateData": "Yes",
        "ErrorRecoveryLevel": "2", "DefaultTime2Wait": "0",
    })
    tgt = Negotiator(Role.TARGET, local={
        "AuthMethod": "None", "TargetAlias": "disk", "TargetPortalGroupTag": "1",
        "HeaderDigest": "None,CRC32C", "MaxRecvDataSegmentLength": "65536",
        "MaxBurstLength": "524288", "FirstBurstLength": "1048576", "InitialR2T": "No",
        "ErrorRecoveryLevel": "1", "MaxOutstandingR2T": "16", "DefaultTime2Wait": "5",
        "DataSequenceInOrder": "No",
    })
    login(ini, tgt)
    a, b = ini.agreed(), tgt.agreed()
    assert a == b
    assert a["HeaderDigest"] == "CRC32C"        # initiator's preference order wins
    assert a["MaxBurstLength"] == "524288"
    assert a["FirstBurstLength"] == "262144"
    assert a["InitialR2T"] == "No"
    assert a["ErrorRecoveryLevel"] == "1"
    assert a["DefaultTime2Wait"] == "5"
    assert a["MaxOutstandingR2T"] == "1"         # initiator answered 1: nothing configured
    assert a["DataSequenceInOrder"] == "Yes"     # OR with the initiator's default Yes
    assert a["MaxRecvDataSegmentLength.initiator"] == "262144"
    assert a["MaxRecvDataSegmentLength.target"] == "65536"
    assert a["TargetPortalGroupTag"] == "1"
    assert tgt.peer_declarations["InitiatorName"] == "iqn.2024-01.org.example:host"


def test_rfc7145_end_to_end_iser_login() -> None:
    """RFC 7145 6: iSER keys contributed by the transport negotiate end to end."""
    forced = {"HeaderDigest": "None", "DataDigest": "None"}
    ini = Negotiator(Role.INITIATOR, extra_rows=ISER_KEYS, forced=forced, local={
        "RDMAExtensions": "Yes", "InitiatorRecvDataSegmentLength": "262144",
        "TargetRecvDataSegmentLength": "8192", "MaxOutstandingUnexpectedPDUs": "4",
        "HeaderDigest": "CRC32C,None"})
    tgt = Negotiator(Role.TARGET, extra_rows=ISER_KEYS, forced=forced, local={
        "RDMAExtensions": "Yes", "InitiatorRecvDataSegmentLength": "131072",
        "TargetRecvDataSegmentLength": "65536"})
    run_stage(ini, tgt, 0)
    first = dict(ini.offers(1))
    # protocol digest pitfall 4: both lengths go out with RDMAExtensions in the first PDU
    assert {"RDMAExtensions", "InitiatorRecvDataSegmentLength", "TargetRecvDataSegmentLength"} <= set(first)
    response = tgt.handle(list(first.items()), 1) + tgt.offers(1)
    assert ini.handle(response, 1) + ini.offers(1) == []
    assert not ini.pending(1) and not tgt.pending(1)
    a = ini.agreed()
    assert a == tgt.agreed()
    assert a["RDMAExtensions"] == "Yes"
    assert a["InitiatorRecvDataSegmentLength"] == "131072"
    assert a["TargetRecvDataSegmentLength"] == "8192"
    assert a["HeaderDigest"] == "None"
    assert a["MaxOutstandingUnexpectedPDUs.initiator"] == "4"
    assert a["MaxOutstandingUnexpectedPDUs.target"] == "0"


def test_rfc7143_end_to_end_discovery() -> None:
    """RFC 7143 13.21: a Discovery login settles with operational keys left at defaults."""
    ini = Negotiator(Role.INITIATOR, session_type="Discovery", local={
        "InitiatorName": "iqn.i", "MaxBurstLength": "65536", "HeaderDigest": "None"})
    tgt = Negotiator(Role.TARGET, local={"MaxBurstLength": "1048576", "MaxConnections": "4"})
    login(ini, tgt)
    assert tgt.session_type == "Discovery"
    a = ini.agreed()
    assert a == tgt.agreed()
    assert a["MaxConnections"] == "1"
    assert a["MaxBurstLength"] == "262144"


# ----------------------------------------------------------------------------- hypothesis
_NUMERIC = {
    "MaxConnections": (1, 65535), "MaxBurstLength": (512, 2**24 - 1),
    "FirstBurstLength": (512, 2**24 - 1), "DefaultTime2Wait": (0, 3600),
    "DefaultTime2Retain": (0, 3600), "MaxOutstandingR2T": (1, 65535),
    "ErrorRecoveryLevel": (0, 2), "iSCSIProtocolLevel": (0, 31),
    "MaxRecvDataSegmentLength": (512, 2**24 - 1),
}
_BOOLEAN = ("InitialR2T", "ImmediateData", "DataPDUInOrder", "DataSequenceInOrder")
_LISTS = {
    "HeaderDigest": ("CRC32C", "None"), "DataDigest": ("CRC32C", "None"),
    "TaskReporting": ("RFC3720", "ResponseFence", "FastAbort"),
}


@st.composite
def configs(draw: st.DrawFn) -> dict[str, str]:
    config: dict[str, str] = {}
    for name, (lo, hi) in _NUMERIC.items():
        if draw(st.booleans()):
            config[name] = str(draw(st.integers(lo, hi)))
    for name in _BOOLEAN:
        if draw(st.booleans()):
            config[name] = draw(st.sampled_from(("Yes", "No")))
    for name, values in _LISTS.items():
        if draw(st.booleans()):
            chosen = draw(st.lists(st.sampled_from(values), min_size=1, unique=True))
            config[name] = ",".join(chosen)
    return config


def _session_wide(agreed: dict[str, str], rows: dict[str, KeyRow]) -> dict[str, str]:
    return {k: v for k, v in agreed.items()
            if k in rows and rows[k].scope is Scope.SESSION_WIDE}


@settings(max_examples=200, deadline=None)
@given(configs(), configs(), st.sampled_from(("Normal", "Discovery")))
def test_rfc7143_6_random_configs_converge(ini_cfg: dict[str, str], tgt_cfg: dict[str, str],
                                            session_type: str) -> None:
    """RFC 7143 6.2: whatever both sides want, they end with identical agreed values."""
    ini = Negotiator(Role.INITIATOR, local=ini_cfg, session_type=session_type)
    tgt = Negotiator(Role.TARGET, local=tgt_cfg)
    try:
        login(ini, tgt)
    except NegotiationError as exc:  # pragma: no cover - a failure is the bug we look for
        raise AssertionError(f"valid configurations failed to negotiate: {exc}") from exc
    a, b = ini.agreed(), tgt.agreed()
    rows = {row.name: row for row in ini._rows.values()}
    assert _session_wide(a, rows) == _session_wide(b, rows)
    assert a == b  # connection-only keys too: one connection, one result
    assert int(a["FirstBurstLength"]) <= int(a["MaxBurstLength"])
    if session_type == "Normal":
        # Every result is the key's result function over both wishes (default if unset).
        def want(cfg: dict[str, str], name: str) -> int:
            return int(cfg.get(name, rows[name].default or "0"))

        assert int(a["MaxBurstLength"]) == min(want(ini_cfg, "MaxBurstLength"), want(tgt_cfg, "MaxBurstLength"))
        assert int(a["DefaultTime2Wait"]) == max(want(ini_cfg, "DefaultTime2Wait"),
                                                 want(tgt_cfg, "DefaultTime2Wait"))
        assert int(a["ErrorRecoveryLevel"]) == min(want(ini_cfg, "ErrorRecoveryLevel"),
                                                   want(tgt_cfg, "ErrorRecoveryLevel"))
        both_yes = ini_cfg.get("ImmediateData", "Yes") == tgt_cfg.get("ImmediateData", "Yes") == "Yes"
        assert a["ImmediateData"] == ("Yes" if both_yes else "No")
        r2t = "Yes" if "Yes" in (ini_cfg.get("InitialR2T", "Yes"), tgt_cfg.get("InitialR2T", "Yes")) else "No"
        assert a["InitialR2T"] == r2t
