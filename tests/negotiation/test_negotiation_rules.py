"""One test per negotiation rule; each names the RFC section it checks."""

from __future__ import annotations

import pytest

from datamover.di import Role
from datamover.negotiation import (
    ISER_KEYS,
    RFC7143_KEYS,
    STATUS_INITIATOR_ERROR,
    STATUS_MISSING_PARAMETER,
    STATUS_SESSION_TYPE_UNSUPPORTED,
    KeyRow,
    KeyType,
    NegotiationConfigError,
    NegotiationError,
    Negotiator,
    ResultFunction,
    Scope,
    Sender,
    Use,
)

I, T = Role.INITIATOR, Role.TARGET  # noqa: E741 - the RFC's own shorthand


def target(**local: str) -> Negotiator:
    return Negotiator(T, local=local)


def answer(neg: Negotiator, key: str, value: str, stage: int = 1) -> str | None:
    """The responder's answer to one offer (None if it sent none)."""
    return dict(neg.handle([(key, value)], stage)).get(key)


# ----------------------------------------------------------------------------- the table
def test_rfc7143_13_table_has_every_key() -> None:
    """RFC 7143 12.1 and 13: every login/operational key has a row with its section."""
    names = {row.name for row in RFC7143_KEYS}
    expected = {
        "HeaderDigest", "DataDigest", "MaxConnections", "SendTargets", "TargetName",
        "InitiatorName", "TargetAlias", "InitiatorAlias", "TargetAddress",
        "TargetPortalGroupTag", "InitialR2T", "ImmediateData", "MaxRecvDataSegmentLength",
        "MaxBurstLength", "FirstBurstLength", "DefaultTime2Wait", "DefaultTime2Retain",
        "MaxOutstandingR2T", "DataPDUInOrder", "DataSequenceInOrder", "ErrorRecoveryLevel",
        "SessionType", "AuthMethod", "TaskReporting", "iSCSIProtocolLevel",
        "X#NodeArchitecture", "IFMarker", "OFMarker", "IFMarkInt", "OFMarkInt",
    }
    assert expected <= names
    assert len(names) == len(RFC7143_KEYS), "duplicate rows"
    for row in RFC7143_KEYS:
        assert row.rfc.startswith("RFC 7143 1"), row


def test_rfc7145_6_iser_rows_not_in_default_table() -> None:
    """RFC 7145 6: iSER keys come from the transport, not the default table."""
    iser = {row.name for row in ISER_KEYS}
    assert {"RDMAExtensions", "InitiatorRecvDataSegmentLength", "TargetRecvDataSegmentLength",
            "MaxOutstandingUnexpectedPDUs", "MaxAHSLength", "TaggedBufferForSolicitedDataOnly",
            "iSERHelloRequired"} == iser
    assert not iser & {row.name for row in RFC7143_KEYS}


# ----------------------------------------------------------------------------- result functions
@pytest.mark.parametrize(("ours", "offer", "expected"),
                         [("Yes", "Yes", "Yes"), ("Yes", "No", "No"), ("No", "Yes", "No"), ("No", "No", "No")])
def test_rfc7143_6_2_boolean_and_immediate_data(ours: str, offer: str, expected: str) -> None:
    """RFC 7143 6.2 / 13.11: ImmediateData is the AND of both values."""
    assert answer(target(ImmediateData=ours), "ImmediateData", offer) == expected


@pytest.mark.parametrize(("ours", "offer", "expected"),
                         [("Yes", "Yes", "Yes"), ("Yes", "No", "Yes"), ("No", "Yes", "Yes"), ("No", "No", "No")])
def test_rfc7143_6_2_boolean_or_initial_r2t(ours: str, offer: str, expected: str) -> None:
    """RFC 7143 6.2 / 13.10: InitialR2T is the OR of both values."""
    assert answer(target(InitialR2T=ours), "InitialR2T", offer) == expected


def test_rfc7143_13_13_numeric_min() -> None:
    """RFC 7143 13.13: MaxBurstLength is the minimum of offer and responder value."""
    assert answer(target(MaxBurstLength="131072"), "MaxBurstLength", "1048576") == "131072"
    assert answer(target(MaxBurstLength="1048576"), "MaxBurstLength", "16384") == "16384"


def test_rfc7143_13_15_numeric_max() -> None:
    """RFC 7143 13.15: DefaultTime2Wait is the maximum of the two values."""
    assert answer(target(DefaultTime2Wait="10"), "DefaultTime2Wait", "3") == "10"
    assert answer(target(DefaultTime2Wait="1"), "DefaultTime2Wait", "30") == "30"


def test_rfc7143_6_1_numeric_hex_accepted() -> None:
    """RFC 7143 6.1: numbers may be written in 0x hex."""
    assert answer(target(MaxBurstLength="1048576"), "MaxBurstLength", "0x10000") == "65536"


def test_rfc7143_6_2_1_list_first_acceptable_in_offer_order() -> None:
    """RFC 7143 6.2.1: the responder picks the first offered value it supports."""
    assert answer(target(HeaderDigest="None,CRC32C"), "HeaderDigest", "CRC32C,None") == "CRC32C"
    assert answer(target(HeaderDigest="None"), "HeaderDigest", "CRC32C,None") == "None"


def test_rfc7143_6_2_1_list_unknown_values_skipped() -> None:
    """RFC 7143 6.2.1: values the responder does not understand are ignored."""
    assert answer(target(HeaderDigest="CRC32C"), "HeaderDigest", "SHA512,CRC32C") == "CRC32C"


def test_rfc7143_6_2_1_list_nothing_acceptable_is_reject() -> None:
    """RFC 7143 6.2.1: no acceptable value in the list -> Reject."""
    neg = target(DataDigest="CRC32C")
    assert answer(neg, "DataDigest", "None") == "Reject"
    assert neg.agreed()["DataDigest"] == "None"
    assert neg.outcome("DataDigest") == "Reject"


def test_rfc7143_12_1_auth_method_list_in_security_stage() -> None:
    """RFC 7143 12.1: AuthMethod is a list negotiated in the security stage."""
    assert answer(target(AuthMethod="CHAP"), "AuthMethod", "None,CHAP", stage=0) == "CHAP"
    assert answer(target(), "AuthMethod", "CHAP,None", stage=0) == "None"


# ----------------------------------------------------------------------------- defaults
def test_rfc7143_13_defaults_when_nothing_negotiated() -> None:
    """RFC 7143 13.x: keys not negotiated take their defaults."""
    agreed = Negotiator(I).agreed()
    assert agreed["InitialR2T"] == "Yes"
    assert agreed["ImmediateData"] == "Yes"
    assert agreed["MaxBurstLength"] == "262144"
    assert agreed["FirstBurstLength"] == "65536"
    assert agreed["DefaultTime2Wait"] == "2"
    assert agreed["DefaultTime2Retain"] == "20"
    assert agreed["MaxOutstandingR2T"] == "1"
    assert agreed["ErrorRecoveryLevel"] == "0"
    assert agreed["HeaderDigest"] == "None"
    assert agreed["MaxConnections"] == "1"
    assert agreed["TaskReporting"] == "RFC3720"


def test_rfc7143_6_2_unconfigured_responder_uses_default() -> None:
    """RFC 7143 6.2: a responder without a configured value answers from the default."""
    assert answer(target(), "MaxBurstLength", "1048576") == "262144"
    assert answer(target(), "ErrorRecoveryLevel", "2") == "0"


def test_rfc7143_6_2_typed_accessors() -> None:
    """RFC 7143 6.2: agreed values are readable as int and bool."""
    neg = target(MaxBurstLength="1048576")
    neg.handle([("MaxBurstLength", "524288"), ("ImmediateData", "No")], 1)
    assert neg.int_value("MaxBurstLength") == 524288
    assert neg.bool_value("ImmediateData") is False
    assert neg.bool_value("InitialR2T") is True


# ----------------------------------------------------------------------------- declaratives
def test_rfc7143_13_12_max_recv_data_segment_length_both_declarations() -> None:
    """RFC 7143 13.12: each side declares its own MaxRecvDataSegmentLength, unanswered."""
    neg = target(MaxRecvDataSegmentLength="65536")
    assert neg.handle([("MaxRecvDataSegmentLength", "262144")], 1) == []
    assert neg.offers(1) == [("MaxRecvDataSegmentLength", "65536")]
    agreed = neg.agreed()
    assert agreed["MaxRecvDataSegmentLength.initiator"] == "262144"
    assert agreed["MaxRecvDataSegmentLength.target"] == "65536"


def test_rfc7143_13_12_max_recv_data_segment_length_default_8192() -> None:
    """RFC 7143 13.12: an undeclared MaxRecvDataSegmentLength is 8192."""
    agreed = target().agreed()
    assert agreed["MaxRecvDataSegmentLength.initiator"] == "8192"
    assert agreed["MaxRecvDataSegmentLength.target"] == "8192"


def test_rfc7143_13_12_declaration_out_of_range_is_error() -> None:
    """RFC 7143 13.12: a declaration outside 512..2^24-1 ends the login."""
    with pytest.raises(NegotiationError) as info:
        target().handle([("MaxRecvDataSegmentLength", "100")], 1)
    assert info.value.status == STATUS_INITIATOR_ERROR


def test_rfc7143_13_21_session_type_declared_by_initiator() -> None:
    """RFC 7143 13.21: SessionType is declared, not answered; the target learns it."""
    neg = target()
    assert neg.handle([("InitiatorName", "iqn.x"), ("SessionType", "Discovery")], 0) == []
    assert neg.session_type == "Discovery"
    assert neg.peer_declarations["InitiatorName"] == "iqn.x"


def test_rfc7143_13_21_unknown_session_type() -> None:
    """RFC 7143 13.21 / 11.13.5: an unknown SessionType -> 0x0209."""
    with pytest.raises(NegotiationError) as info:
        target().handle([("SessionType", "Management")], 0)
    assert info.value.status == STATUS_SESSION_TYPE_UNSUPPORTED


# ----------------------------------------------------------------------------- NotUnderstood etc.
def test_rfc7143_6_2_unknown_key_not_understood() -> None:
    """RFC 7143 6.2: a key the responder does not know is answered NotUnderstood."""
    assert answer(target(), "FancyNewKey", "42") == "NotUnderstood"


def test_rfc7143_13_22_private_x_key_not_understood() -> None:
    """RFC 7143 13.22: unknown X- (and X#) extension keys are answered NotUnderstood."""
    neg = target()
    out = dict(neg.handle([("X-com.example.Tuning", "fast"), ("X#Foo", "1")], 1))
    assert out == {"X-com.example.Tuning": "NotUnderstood", "X#Foo": "NotUnderstood"}


def test_rfc7143_6_2_not_understood_answer_keeps_default() -> None:
    """RFC 7143 6.2: our offer answered NotUnderstood leaves the default in force."""
    neg = Negotiator(I, local={"MaxBurstLength": "1048576"})
    neg.offers(1)
    assert neg.pending(1)
    neg.handle([("MaxBurstLength", "NotUnderstood")], 1)
    assert not neg.pending(1)
    assert neg.agreed()["MaxBurstLength"] == "262144"


def test_rfc7143_13_discovery_makes_operational_keys_irrelevant() -> None:
    """RFC 7143 13.x "Irrelevant when SessionType=Discovery"."""
    neg = target(MaxBurstLength="1048576")
    neg.handle([("SessionType", "Discovery")], 0)
    out = dict(neg.handle([("MaxBurstLength", "65536"), ("InitialR2T", "No"),
                           ("HeaderDigest", "None"), ("DefaultTime2Wait", "2")], 1))
    assert out["MaxBurstLength"] == "Irrelevant"
    assert out["InitialR2T"] == "Irrelevant"
    assert out["HeaderDigest"] == "None"      # still relevant in Discovery
    assert out["DefaultTime2Wait"] == "2"


def test_rfc7143_13_discovery_same_pdu_session_type_first() -> None:
    """RFC 7143 13.21: SessionType=Discovery applies to keys of the same PDU."""
    out = dict(target().handle([("MaxConnections", "4"), ("SessionType", "Discovery")], 1))
    assert out == {"MaxConnections": "Irrelevant"}


def test_rfc7143_13_2_discovery_max_connections_one() -> None:
    """RFC 7143 13.2/13.21: a Discovery session has one connection."""
    neg = Negotiator(I, session_type="Discovery", local={"MaxConnections": "8"})
    assert ("SessionType", "Discovery") in neg.offers(0)
    assert neg.offers(1) == []          # MaxConnections is irrelevant: not offered
    assert neg.agreed()["MaxConnections"] == "1"


def test_rfc7143_13_14_first_burst_irrelevant_without_unsolicited_data() -> None:
    """RFC 7143 13.14: FirstBurstLength is Irrelevant when InitialR2T=Yes, ImmediateData=No."""
    neg = target(ImmediateData="No")
    out = dict(neg.handle([("FirstBurstLength", "16384"), ("InitialR2T", "Yes"), ("ImmediateData", "No")], 1))
    assert out["FirstBurstLength"] == "Irrelevant"
    assert list(out) == ["FirstBurstLength", "InitialR2T", "ImmediateData"]  # reply keeps order


def test_rfc7143_13_14_first_burst_relevant_with_immediate_data() -> None:
    """RFC 7143 13.14: with ImmediateData=Yes, FirstBurstLength is negotiated (MIN)."""
    out = dict(target(FirstBurstLength="32768").handle([("FirstBurstLength", "16384")], 1))
    assert out["FirstBurstLength"] == "16384"


def test_rfc7143_6_2_non_leading_connection_lo_key_irrelevant() -> None:
    """RFC 7143 13 "LO": leading-only keys on another connection are answered Irrelevant."""
    neg = Negotiator(T, leading=False)
    assert answer(neg, "MaxBurstLength", "65536") == "Irrelevant"
    assert answer(neg, "HeaderDigest", "None") == "None"  # IO keys are per connection


# ----------------------------------------------------------------------------- Reject
@pytest.mark.parametrize(("key", "value"), [
    ("MaxBurstLength", "100"), ("MaxBurstLength", str(2**24)), ("ErrorRecoveryLevel", "3"),
    ("DefaultTime2Wait", "3601"), ("MaxConnections", "0"), ("MaxBurstLength", "lots"),
    ("InitialR2T", "Maybe"),
])
def test_rfc7143_6_2_2_out_of_range_or_malformed_is_reject(key: str, value: str) -> None:
    """RFC 7143 6.2.2: an inadmissible value is answered Reject; the default stays."""
    neg = target()
    assert answer(neg, key, value) == "Reject"
    assert neg.agreed()[key] == next(r.default for r in RFC7143_KEYS if r.name == key)


def test_rfc7143_6_2_reject_answer_keeps_default() -> None:
    """RFC 7143 6.2: an offer answered Reject leaves the key at its default."""
    neg = Negotiator(I, local={"HeaderDigest": "CRC32C"})
    neg.offers(1)
    neg.handle([("HeaderDigest", "Reject")], 1)
    assert neg.agreed()["HeaderDigest"] == "None"
    assert neg.outcome("HeaderDigest") == "Reject"


# ----------------------------------------------------------------------------- obsolete keys
@pytest.mark.parametrize(("key", "value", "expected"), [
    ("IFMarker", "No", "No"), ("OFMarker", "Yes", "No"),
    ("IFMarkInt", "2048~8192", "Reject"), ("OFMarkInt", "2048", "Reject"),
])
def test_rfc7143_13_25_obsolete_markers_never_not_understood(key: str, value: str, expected: str) -> None:
    """RFC 7143 13.25: obsolete marker keys get Reject (No for the booleans)."""
    assert answer(target(), key, value) == expected


def test_rfc7143_13_25_obsolete_markers_never_offered() -> None:
    """RFC 7143 13.25: a 7143 node does not offer the marker keys."""
    assert all(not row.obsolete or row.name not in dict(Negotiator(I).offers(1)) for row in RFC7143_KEYS)


# ----------------------------------------------------------------------------- errors
def test_rfc7143_6_2_duplicate_key_in_one_pdu() -> None:
    """RFC 7143 6.2: a key sent twice in one negotiation -> initiator error (0x0200)."""
    with pytest.raises(NegotiationError) as info:
        target().handle([("MaxBurstLength", "65536"), ("MaxBurstLength", "65536")], 1)
    assert info.value.status == STATUS_INITIATOR_ERROR
    assert info.value.key == "MaxBurstLength"


def test_rfc7143_6_2_duplicate_key_across_pdus() -> None:
    """RFC 7143 6.2: renegotiating a key in a later PDU of the login is an error."""
    neg = target()
    neg.handle([("ImmediateData", "No")], 1)
    with pytest.raises(NegotiationError, match="more than once"):
        neg.handle([("ImmediateData", "Yes")], 1)


def test_rfc7143_6_2_target_address_may_repeat() -> None:
    """RFC 7143 6.2: TargetAddress is explicitly allowed to repeat."""
    neg = Negotiator(I)
    neg.handle([("TargetAddress", "10.0.0.1:3260,1"), ("TargetAddress", "10.0.0.2:3260,1")], 3)


def test_rfc7143_6_3_operational_key_in_security_stage() -> None:
    """RFC 7143 6.3: operational keys are negotiated in the operational stage."""
    with pytest.raises(NegotiationError, match="stage 0") as info:
        target().handle([("MaxBurstLength", "65536")], 0)
    assert info.value.status == STATUS_INITIATOR_ERROR


def test_rfc7143_12_1_auth_method_outside_security_stage() -> None:
    """RFC 7143 12.1: AuthMethod belongs to the security stage only."""
    with pytest.raises(NegotiationError, match="AuthMethod"):
        target().handle([("AuthMethod", "None")], 1)


def test_rfc7143_13_3_send_targets_in_login() -> None:
    """RFC 7143 13.3: SendTargets is full-feature only."""
    with pytest.raises(NegotiationError, match="SendTargets"):
        target().handle([("SendTargets", "All")], 1)


def test_rfc7143_13_9_wrong_sender() -> None:
    """RFC 7143 13.9/13.5: TargetPortalGroupTag comes from the target, InitiatorName from the initiator."""
    with pytest.raises(NegotiationError, match="only the target"):
        target().handle([("TargetPortalGroupTag", "1")], 0)
    with pytest.raises(NegotiationError, match="only the initiator"):
        Negotiator(I).handle([("InitiatorName", "iqn.x")], 0)


def test_rfc7143_6_1_value_too_long() -> None:
    """RFC 7143 6.1: values are at most 255 bytes."""
    with pytest.raises(NegotiationError, match="255"):
        target().handle([("InitiatorAlias", "a" * 256)], 0)


def test_rfc7143_6_1_key_name_too_long() -> None:
    """RFC 7143 6.1: key names are at most 63 bytes."""
    with pytest.raises(NegotiationError, match="malformed key"):
        target().handle([("X-" + "k" * 62, "1")], 1)


def test_rfc7143_6_2_answer_to_key_never_offered() -> None:
    """RFC 7143 6.2: Reject/Irrelevant/NotUnderstood are answers, not offers."""
    with pytest.raises(NegotiationError, match="never offered"):
        target().handle([("MaxBurstLength", "Irrelevant")], 1)


def test_rfc7143_6_2_2_answer_above_min_offer_is_error() -> None:
    """RFC 7143 6.2.2: a MIN answer greater than our offer breaks the selection rule."""
    neg = Negotiator(I, local={"MaxBurstLength": "65536"})
    neg.offers(1)
    with pytest.raises(NegotiationError, match="does not allow"):
        neg.handle([("MaxBurstLength", "131072")], 1)


def test_rfc7143_6_2_2_answer_below_max_offer_is_error() -> None:
    """RFC 7143 6.2.2: a MAX answer below our offer breaks the selection rule."""
    neg = Negotiator(I, local={"DefaultTime2Wait": "10"})
    neg.offers(1)
    with pytest.raises(NegotiationError):
        neg.handle([("DefaultTime2Wait", "5")], 1)


def test_rfc7143_6_2_1_list_answer_not_offered_is_error() -> None:
    """RFC 7143 6.2.1: choosing a value that was not offered is a protocol error."""
    neg = Negotiator(I, local={"HeaderDigest": "None"})
    neg.offers(1)
    with pytest.raises(NegotiationError):
        neg.handle([("HeaderDigest", "CRC32C")], 1)


def test_rfc7143_6_2_boolean_and_no_cannot_become_yes() -> None:
    """RFC 7143 6.2: ImmediateData=No (AND) cannot be answered Yes; no answer is needed."""
    neg = Negotiator(I, local={"ImmediateData": "No"})
    assert neg.offers(1) == [("ImmediateData", "No")]
    assert not neg.pending(1)  # outcome fixed: the answer is optional
    assert neg.agreed()["ImmediateData"] == "No"
    with pytest.raises(NegotiationError):
        neg.handle([("ImmediateData", "Yes")], 1)


def test_rfc7143_6_3_missing_parameter() -> None:
    """RFC 7143 6.3: the first request must carry InitiatorName -> 0x0207 if absent."""
    neg = target()
    neg.handle([("TargetName", "iqn.t")], 0)
    with pytest.raises(NegotiationError) as info:
        neg.require("InitiatorName", "TargetName")
    assert info.value.status == STATUS_MISSING_PARAMETER


def test_chap_keys_are_skipped() -> None:
    """RFC 7143 12.1.3: CHAP_* keys belong to the auth layer and are left alone."""
    assert target().handle([("CHAP_A", "5"), ("CHAP_A", "5")], 0) == []


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize("local", [
    {"MaxBurstLength": "1"}, {"HeaderDigest": "MD5"}, {"InitialR2T": "maybe"}, {"Bogus": "1"},
    {"CHAP_A": "5"},
])
def test_invalid_local_config_is_typed_error(local: dict[str, str]) -> None:
    """A bad configuration fails at construction with NegotiationConfigError."""
    with pytest.raises(NegotiationConfigError):
        Negotiator(I, local=local)


# ----------------------------------------------------------------------------- originator
def test_offers_never_repeat_and_target_only_sends_what_tightens_the_default() -> None:
    """RFC 7143 6.2: the target originates only values stricter than the default (a looser
    one could not win: Minimum/AND/OR favour the default), and each once."""
    neg = target(MaxBurstLength="65536", MaxOutstandingR2T="8", FirstBurstLength="65536",
                 ImmediateData="No", InitialR2T="No", TargetAlias="disk")
    assert neg.offers(0) == [("TargetAlias", "disk")]
    assert neg.offers(1) == [("MaxBurstLength", "65536"), ("ImmediateData", "No")]
    assert neg.offers(1) == []


def test_initiator_offers_everything_configured() -> None:
    """RFC 7143 6.2: the initiator states all its configured operational keys."""
    neg = Negotiator(I, local={"InitiatorName": "iqn.i", "MaxBurstLength": "262144", "InitialR2T": "Yes"})
    assert neg.offers(0) == [("InitiatorName", "iqn.i")]
    assert neg.offers(1) == [("MaxBurstLength", "262144"), ("InitialR2T", "Yes")]
    assert neg.pending(1)  # MaxBurstLength awaits its answer (InitialR2T=Yes is fixed)


def test_no_offer_of_key_the_peer_already_offered() -> None:
    """RFC 7143 6.2: a key is negotiated once: what the peer offered we only answer."""
    neg = target(MaxOutstandingR2T="8")
    neg.handle([("MaxOutstandingR2T", "4")], 1)
    assert neg.offers(1) == []


# ----------------------------------------------------------------------------- cross-key rules
def test_rfc7143_13_14_first_burst_clamped_to_max_burst() -> None:
    """RFC 7143 13.14: FirstBurstLength MUST NOT exceed MaxBurstLength."""
    neg = target(MaxBurstLength="65536", FirstBurstLength="262144")
    neg.handle([("MaxBurstLength", "1048576"), ("FirstBurstLength", "1048576")], 1)
    agreed = neg.agreed()
    assert agreed["MaxBurstLength"] == "65536"
    assert agreed["FirstBurstLength"] == "65536"


def test_rfc7143_13_19_data_sequence_in_order_with_erl_forces_one_r2t() -> None:
    """RFC 7143 13.19: ERL>0 with DataSequenceInOrder=Yes -> MaxOutstandingR2T=1."""
    neg = target(ErrorRecoveryLevel="1", MaxOutstandingR2T="8")
    neg.handle([("ErrorRecoveryLevel", "1"), ("MaxOutstandingR2T", "8")], 1)
    assert neg.agreed()["MaxOutstandingR2T"] == "1"
    other = target(ErrorRecoveryLevel="1", MaxOutstandingR2T="8", DataSequenceInOrder="No")
    other.handle([("ErrorRecoveryLevel", "1"), ("MaxOutstandingR2T", "8"), ("DataSequenceInOrder", "No")], 1)
    assert other.agreed()["MaxOutstandingR2T"] == "8"


def test_rfc7143_13_20_erl_default_zero() -> None:
    """RFC 7143 13.20: ErrorRecoveryLevel defaults to 0."""
    assert Negotiator(I).int_value("ErrorRecoveryLevel") == 0


# ----------------------------------------------------------------------------- transports
def test_rfc7145_6_iser_rows_as_extra_rows() -> None:
    """RFC 7145 6.3-6.5: iSER rows contributed as extra_rows are negotiated."""
    neg = Negotiator(T, extra_rows=ISER_KEYS, local={"RDMAExtensions": "Yes",
                                                      "TargetRecvDataSegmentLength": "262144"})
    out = dict(neg.handle([("RDMAExtensions", "Yes"), ("TargetRecvDataSegmentLength", "8192"),
                           ("InitiatorRecvDataSegmentLength", "262144")], 1))
    assert out == {"RDMAExtensions": "Yes", "TargetRecvDataSegmentLength": "8192",
                   "InitiatorRecvDataSegmentLength": "8192"}
    assert neg.agreed()["InitiatorRecvDataSegmentLength"] == "8192"


def test_rfc7145_6_iser_keys_unknown_without_extra_rows() -> None:
    """RFC 7145 6: without the transport's rows RDMAExtensions is NotUnderstood."""
    assert answer(target(), "RDMAExtensions", "Yes") == "NotUnderstood"


def test_rfc7145_6_4_recv_lengths_irrelevant_without_rdma_extensions() -> None:
    """RFC 7145 6.4/6.5: the iSER lengths mean nothing unless RDMAExtensions=Yes."""
    neg = Negotiator(T, extra_rows=ISER_KEYS)  # RDMAExtensions default No
    out = dict(neg.handle([("RDMAExtensions", "Yes"), ("TargetRecvDataSegmentLength", "8192")], 1))
    assert out == {"RDMAExtensions": "No", "TargetRecvDataSegmentLength": "Irrelevant"}


def test_rfc7145_6_7_max_outstanding_unexpected_pdus_declarative() -> None:
    """RFC 7145 6.7: MaxOutstandingUnexpectedPDUs is declared (0 = no limit) per side."""
    neg = Negotiator(T, extra_rows=ISER_KEYS, local={"MaxOutstandingUnexpectedPDUs": "16"})
    assert neg.handle([("MaxOutstandingUnexpectedPDUs", "0")], 1) == []
    assert ("MaxOutstandingUnexpectedPDUs", "16") in neg.offers(1)
    agreed = neg.agreed()
    assert agreed["MaxOutstandingUnexpectedPDUs.initiator"] == "0"
    assert agreed["MaxOutstandingUnexpectedPDUs.target"] == "16"
    with pytest.raises(NegotiationError):
        Negotiator(T, extra_rows=ISER_KEYS).handle([("MaxOutstandingUnexpectedPDUs", "1")], 1)


def test_rfc7145_6_7_tgt_echo_of_declaration_accepted() -> None:
    """RFC 7145 6.7 vs tgt: a value sent back for our declaration is the peer's own."""
    neg = Negotiator(I, extra_rows=ISER_KEYS, local={"MaxOutstandingUnexpectedPDUs": "8"})
    neg.offers(1)
    neg.handle([("MaxOutstandingUnexpectedPDUs", "8")], 1)
    assert neg.agreed()["MaxOutstandingUnexpectedPDUs.target"] == "8"


def test_rfc7145_6_1_forced_digests() -> None:
    """RFC 7145 6.1: a transport may force HeaderDigest/DataDigest to None."""
    neg = Negotiator(T, forced={"HeaderDigest": "None", "DataDigest": "None"},
                     local={"HeaderDigest": "CRC32C"})
    out = dict(neg.handle([("HeaderDigest", "CRC32C,None"), ("DataDigest", "CRC32C")], 1))
    assert out == {"HeaderDigest": "None", "DataDigest": "Reject"}
    assert neg.agreed()["HeaderDigest"] == "None"


def test_extra_row_replaces_table_row() -> None:
    """A transport row of the same name replaces the RFC 7143 row."""
    row = KeyRow("MaxBurstLength", KeyType.NUMERIC, ResultFunction.MIN, "4096", Scope.SESSION_WIDE,
                 Use.LO, Sender.BOTH, "test", minimum=512, maximum=8192)
    neg = Negotiator(T, extra_rows=[row])
    assert answer(neg, "MaxBurstLength", "65536") == "Reject"
    assert neg.agreed()["MaxBurstLength"] == "4096"


def test_private_x_key_offered_and_answered() -> None:
    """RFC 7143 13.22: our private X- keys are offered in Normal sessions and the answer kept."""
    neg = Negotiator(I, local={"X-com.example.Mode": "fast"})
    assert neg.offers(1) == [("X-com.example.Mode", "fast")]
    neg.handle([("X-com.example.Mode", "NotUnderstood")], 1)
    assert "X-com.example.Mode" not in neg.agreed()
