"""CHAP (RFC 7143 12.1.3, RFC 1994): round trips, a known answer, and every failure."""

from __future__ import annotations

import base64
import hashlib

import pytest

from datamover.auth import (
    AuthenticationError,
    ChapPolicyError,
    ChapSecret,
    InitiatorChap,
    TargetChap,
    validate_secret,
)

ALGS = {5: "md5", 6: "sha1", 7: "sha256", 8: "sha3_256"}
INI = ChapSecret("iqn.2024-01.org.example:host", b"initiator-secret-16")
TGT = ChapSecret("iqn.2024-01.org.example:disk", b"target-secret-of-16")
USERS = {INI.user: INI.secret}
AUTH_FAILURE, INITIATOR_ERROR = 0x0201, 0x0200


@pytest.fixture(autouse=True)
def _fresh_replay_cache() -> None:
    """The replay cache is process-wide; start each test with it empty."""
    TargetChap.recent.clear()


def make_target(**kwargs: object) -> TargetChap:
    kwargs.setdefault("mutual", TGT)
    return TargetChap(USERS.get, **kwargs)  # type: ignore[arg-type]


def handshake(ini: InitiatorChap, tgt: TargetChap) -> dict[str, str]:
    """Run a complete exchange; return the initiator's response PDU keys."""
    challenge = dict(tgt.step(dict(ini.first())))
    response = dict(ini.step(challenge))
    final = dict(tgt.step(response))
    assert ini.step(final) == []
    return response


def first_challenge(tgt: TargetChap, offer: str = "8,7,6,5") -> dict[str, str]:
    return dict(tgt.step({"CHAP_A": offer}))


def expected_r(alg: int, ident: int, secret: bytes, challenge: bytes) -> str:
    return "0x" + hashlib.new(ALGS[alg], bytes([ident]) + secret + challenge).hexdigest()


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("alg", [5, 6, 7, 8])
def test_one_way_round_trip(alg: int) -> None:
    """RFC 7143 12.1.3: one-way CHAP with each CHAP_A value."""
    ini = InitiatorChap(INI, algorithms=(alg,))
    tgt = make_target(mutual=None)
    handshake(ini, tgt)
    assert ini.done and tgt.done
    assert tgt.algorithm == alg and ini.algorithm == alg
    assert tgt.peer_user == INI.user


@pytest.mark.parametrize("alg", [5, 6, 7, 8])
def test_mutual_round_trip(alg: int) -> None:
    """RFC 7143 12.1.3: mutual CHAP with each CHAP_A value."""
    ini = InitiatorChap(INI, mutual=TGT, algorithms=(alg,))
    tgt = make_target()
    response = handshake(ini, tgt)
    assert {"CHAP_I", "CHAP_C"} <= set(response)
    assert ini.done and tgt.done


def test_strongest_common_algorithm_in_initiator_order() -> None:
    """RFC 7143 6.2.1: the target picks the first CHAP_A of the initiator's list it accepts."""
    tgt = make_target(algorithms=(5, 7))
    assert first_challenge(tgt)["CHAP_A"] == "7"


def test_md5_always_offered_last() -> None:
    """RFC 7143 12.1.3: the initiator MUST offer 5 (MD5)."""
    assert InitiatorChap(INI, algorithms=(8, 7)).first() == [("CHAP_A", "8,7,5")]
    assert InitiatorChap(INI).first() == [("CHAP_A", "8,7,6,5")]


@pytest.mark.parametrize("alg", [5, 6, 7, 8])
def test_challenge_length_and_hex_encoding(alg: int) -> None:
    """Challenges are max(16, digest size) random bytes written in 0x hex."""
    challenge = first_challenge(make_target(algorithms=(alg,)), str(alg))["CHAP_C"]
    assert challenge.startswith("0x")
    assert len(bytes.fromhex(challenge[2:])) == max(16, hashlib.new(ALGS[alg]).digest_size)


# ----------------------------------------------------------------------------- known answer
@pytest.mark.parametrize("alg", [5, 6, 7, 8])
def test_known_answer_rfc1994(alg: int) -> None:
    """RFC 1994 4.1: R = H(I || secret || C), computed here independently with hashlib."""
    ini = InitiatorChap(INI, algorithms=(alg,))
    ini.first()
    challenge = bytes(range(32))
    out = dict(ini.step({"CHAP_A": str(alg), "CHAP_I": "77", "CHAP_C": "0x" + challenge.hex()}))
    assert out == {"CHAP_N": INI.user, "CHAP_R": expected_r(alg, 77, INI.secret, challenge)}


def test_known_answer_md5_fixed_vector() -> None:
    """RFC 1994: a fixed MD5 vector (id 1, secret "secret", challenge 00..0f)."""
    ini = InitiatorChap(ChapSecret("u", b"secret"), algorithms=(5,))
    ini.first()
    out = dict(ini.step({"CHAP_A": "5", "CHAP_I": "1", "CHAP_C": "0x000102030405060708090a0b0c0d0e0f"}))
    digest = hashlib.md5(b"\x01" + b"secret" + bytes(range(16))).hexdigest()
    assert out["CHAP_R"] == "0x" + digest


def test_base64_challenge_and_response_accepted() -> None:
    """RFC 7143 6.1: binary values may come as 0b base64."""
    challenge = bytes(range(100, 132))
    ini = InitiatorChap(INI, algorithms=(7,))
    ini.first()
    out = dict(ini.step({"CHAP_A": "7", "CHAP_I": "0x10",
                         "CHAP_C": "0b" + base64.b64encode(challenge).decode()}))
    assert out["CHAP_R"] == expected_r(7, 16, INI.secret, challenge)

    tgt = make_target(mutual=None)
    chal = first_challenge(tgt, "7")
    r = bytes.fromhex(expected_r(7, int(chal["CHAP_I"]), INI.secret, bytes.fromhex(chal["CHAP_C"][2:]))[2:])
    assert tgt.step({"CHAP_N": INI.user, "CHAP_R": "0b" + base64.b64encode(r).decode()}) == []
    assert tgt.done


# ----------------------------------------------------------------------------- target failures
def test_no_acceptable_algorithm_rejects() -> None:
    """RFC 7143 6.2.1: nothing acceptable in CHAP_A -> CHAP_A=Reject, then failure."""
    tgt = make_target(algorithms=(8,))
    with pytest.raises(AuthenticationError) as info:
        tgt.step({"CHAP_A": "5,6"})
    assert info.value.status == AUTH_FAILURE
    assert info.value.reply == [("CHAP_A", "Reject")]
    with pytest.raises(AuthenticationError):
        tgt.step({"CHAP_N": "x", "CHAP_R": "0x00"})


def _respond(tgt: TargetChap, *, user: str = INI.user, secret: bytes = INI.secret,
             alg: int = 8, **extra: str) -> list[tuple[str, str]]:
    chal = first_challenge(tgt, str(alg))
    r = expected_r(alg, int(chal["CHAP_I"]), secret, bytes.fromhex(chal["CHAP_C"][2:]))
    return tgt.step({"CHAP_N": user, "CHAP_R": r, **extra})


def test_wrong_user() -> None:
    """RFC 7143 12.1.3: an unknown CHAP_N fails with 0x0201."""
    with pytest.raises(AuthenticationError) as info:
        _respond(make_target(), user="iqn.intruder")
    assert info.value.status == AUTH_FAILURE


def test_wrong_response() -> None:
    """RFC 1994: a response made with the wrong secret fails with 0x0201."""
    with pytest.raises(AuthenticationError) as info:
        _respond(make_target(), secret=b"not-the-secret!!")
    assert info.value.status == AUTH_FAILURE


def test_secret_not_in_error_message() -> None:
    """Secrets never appear in exception messages."""
    with pytest.raises(AuthenticationError) as info:
        _respond(make_target(), secret=b"not-the-secret!!")
    assert INI.secret.decode() not in str(info.value)
    assert INI.secret.decode() not in repr(INI) and TGT.secret.decode() not in repr(TGT)


def test_response_of_wrong_size() -> None:
    """RFC 1994: a response whose length is not the digest size fails."""
    tgt = make_target()
    first_challenge(tgt, "8")
    with pytest.raises(AuthenticationError, match="16 bytes") as info:
        tgt.step({"CHAP_N": INI.user, "CHAP_R": "0x" + "00" * 16})
    assert info.value.status == AUTH_FAILURE


@pytest.mark.parametrize("keys", [{"CHAP_N": INI.user}, {"CHAP_R": "0x00"}, {}])
def test_missing_keys(keys: dict[str, str]) -> None:
    """RFC 7143 12.1.3: CHAP_N and CHAP_R are both required."""
    tgt = make_target()
    first_challenge(tgt)
    with pytest.raises(AuthenticationError, match="missing") as info:
        tgt.step(keys)
    assert info.value.status == INITIATOR_ERROR


def test_missing_chap_a() -> None:
    """RFC 7143 12.1.3: the exchange starts with CHAP_A."""
    with pytest.raises(AuthenticationError, match="CHAP_A"):
        make_target().step({"CHAP_N": INI.user})


@pytest.mark.parametrize("value", ["0xZZ", "1234", "0b!!!!", "0x"])
def test_malformed_response_encoding(value: str) -> None:
    """RFC 7143 6.1: binary values are 0x hex or 0b base64."""
    tgt = make_target()
    first_challenge(tgt)
    with pytest.raises(AuthenticationError) as info:
        tgt.step({"CHAP_N": INI.user, "CHAP_R": value})
    assert info.value.status == INITIATOR_ERROR


@pytest.mark.parametrize("ident", ["256", "-1", "abc", "0x100", ""])
def test_mutual_identifier_out_of_range(ident: str) -> None:
    """RFC 1994: CHAP_I is one octet (0..255)."""
    with pytest.raises(AuthenticationError, match="CHAP_I") as info:
        _respond(make_target(), CHAP_I=ident, CHAP_C="0x" + "ab" * 32)
    assert info.value.status == INITIATOR_ERROR


def test_mutual_challenge_shorter_than_hash() -> None:
    """A mutual challenge shorter than the digest is refused."""
    with pytest.raises(AuthenticationError, match="shorter") as info:
        _respond(make_target(), CHAP_I="1", CHAP_C="0x" + "ab" * 31)
    assert info.value.status == AUTH_FAILURE


def test_mutual_challenge_longer_than_1024() -> None:
    """RFC 7143 12.1.3: CHAP_C is at most 1024 bytes."""
    with pytest.raises(AuthenticationError, match="1024"):
        _respond(make_target(), CHAP_I="1", CHAP_C="0x" + "ab" * 1025)


def test_mutual_challenge_reflection() -> None:
    """RFC 7143 12.1.3: a mutual challenge equal to ours is a reflection attack."""
    tgt = make_target()
    chal = first_challenge(tgt, "8")
    r = expected_r(8, int(chal["CHAP_I"]), INI.secret, bytes.fromhex(chal["CHAP_C"][2:]))
    with pytest.raises(AuthenticationError, match="reflect") as info:
        tgt.step({"CHAP_N": INI.user, "CHAP_R": r, "CHAP_I": "3", "CHAP_C": chal["CHAP_C"]})
    assert info.value.status == AUTH_FAILURE


def test_mutual_challenge_from_another_login_is_refused() -> None:
    """Reflection across connections: a challenge another TargetChap issued is refused."""
    other = first_challenge(make_target(), "8")["CHAP_C"]
    with pytest.raises(AuthenticationError, match="seen before"):
        _respond(make_target(), CHAP_I="3", CHAP_C=other)


def test_mutual_challenge_replay() -> None:
    """A mutual challenge seen in an earlier login is a replay."""
    challenge = "0x" + "5a" * 32
    assert _respond(make_target(), CHAP_I="9", CHAP_C=challenge)
    with pytest.raises(AuthenticationError, match="seen before"):
        _respond(make_target(), CHAP_I="9", CHAP_C=challenge)


def test_mutual_requested_without_target_credentials() -> None:
    """Mutual CHAP cannot succeed when the target has no credentials of its own."""
    with pytest.raises(AuthenticationError, match="mutual"):
        _respond(make_target(mutual=None), CHAP_I="1", CHAP_C="0x" + "cd" * 32)


def test_mutual_needs_both_identifier_and_challenge() -> None:
    """RFC 7143 12.1.3: mutual CHAP sends CHAP_I and CHAP_C together."""
    with pytest.raises(AuthenticationError, match="both") as info:
        _respond(make_target(), CHAP_I="1")
    assert info.value.status == INITIATOR_ERROR


def test_same_secret_both_directions_refused_by_target() -> None:
    """RFC 7143 12.1.3: the target refuses to answer with the initiator's own secret."""
    same = ChapSecret(TGT.user, INI.secret)
    with pytest.raises(AuthenticationError, match="equals"):
        _respond(make_target(mutual=same), CHAP_I="1", CHAP_C="0x" + "ef" * 32)


def test_unknown_chap_key() -> None:
    """Unknown CHAP_ keys are an initiator error."""
    with pytest.raises(AuthenticationError, match="CHAP_X") as info:
        make_target().step({"CHAP_A": "5", "CHAP_X": "1"})
    assert info.value.status == INITIATOR_ERROR


def test_keys_after_completion() -> None:
    """Nothing is expected once CHAP completed."""
    tgt = make_target(mutual=None)
    _respond(tgt)
    assert tgt.done
    with pytest.raises(AuthenticationError, match="after"):
        tgt.step({"CHAP_A": "5"})
    assert tgt.step({}) == []


# ----------------------------------------------------------------------------- initiator failures
def test_initiator_detects_wrong_mutual_response() -> None:
    """RFC 7143 12.1.3: the initiator verifies the target's CHAP_R (mutual)."""
    impostor = ChapSecret(TGT.user, b"impostor-secret!!")
    ini = InitiatorChap(INI, mutual=TGT)
    tgt = make_target(mutual=impostor)
    final = dict(tgt.step(dict(ini.step(dict(tgt.step(dict(ini.first())))))))
    with pytest.raises(AuthenticationError, match="wrong") as info:
        ini.step(final)
    assert info.value.status == AUTH_FAILURE
    assert not ini.done


def test_initiator_detects_wrong_target_name() -> None:
    """RFC 7143 12.1.3: the target must name itself as configured."""
    ini = InitiatorChap(INI, mutual=TGT)
    tgt = make_target(mutual=ChapSecret("iqn.other", TGT.secret))
    final = dict(tgt.step(dict(ini.step(dict(tgt.step(dict(ini.first())))))))
    with pytest.raises(AuthenticationError, match="named itself"):
        ini.step(final)


def test_initiator_missing_mutual_response() -> None:
    """Mutual CHAP: a final response without CHAP_N/CHAP_R fails."""
    ini = InitiatorChap(INI, mutual=TGT)
    tgt = make_target()
    ini.step(dict(tgt.step(dict(ini.first()))))
    with pytest.raises(AuthenticationError, match="missing"):
        ini.step({})


def test_initiator_refuses_algorithm_not_offered() -> None:
    """RFC 7143 6.2.1: the target must choose from the offered list."""
    ini = InitiatorChap(INI, algorithms=(5,))
    ini.first()
    with pytest.raises(AuthenticationError, match="not offered"):
        ini.step({"CHAP_A": "7", "CHAP_I": "1", "CHAP_C": "0x" + "00" * 32})


def test_initiator_same_secret_both_directions() -> None:
    """RFC 7143 12.1.3: one secret for both directions is refused at configuration."""
    with pytest.raises(ChapPolicyError):
        InitiatorChap(INI, mutual=ChapSecret(TGT.user, INI.secret))


def test_unsupported_algorithm_configured() -> None:
    """Only CHAP_A 5..8 are implemented."""
    with pytest.raises(ChapPolicyError):
        InitiatorChap(INI, algorithms=(9,))
    with pytest.raises(ChapPolicyError):
        TargetChap(USERS.get, algorithms=())


# ----------------------------------------------------------------------------- MD5 fallback
def test_md5_fallback_after_reject() -> None:
    """Protocol digest pitfall 11: after CHAP_A=Reject, retry offering only 5."""
    ini = InitiatorChap(INI, mutual=TGT)
    old_target = make_target(algorithms=(5,))
    # an old target that refuses any list holding more than MD5
    ini.first()
    with pytest.raises(AuthenticationError, match="fallback_md5_only") as info:
        ini.step({"CHAP_A": "Reject"})
    assert info.value.status == AUTH_FAILURE
    retry = ini.fallback_md5_only()
    assert retry.first() == [("CHAP_A", "5")]
    response = dict(retry.step(dict(old_target.step({"CHAP_A": "5"}))))
    assert retry.step(dict(old_target.step(response))) == []
    assert retry.done and old_target.done and retry.algorithm == 5


# ----------------------------------------------------------------------------- secret policy
def test_secret_policy() -> None:
    """RFC 7143 12.1.3: secrets should be at least 12 bytes; enforced only on request."""
    short = ChapSecret("u", b"short")
    with pytest.raises(ChapPolicyError, match="12"):
        short.validate_secret()
    INI.validate_secret()
    with pytest.raises(ChapPolicyError):
        validate_secret(b"x" * 15, minimum=16)
    with pytest.raises(ChapPolicyError):
        ChapSecret("u", b"")
    assert ChapSecret("u", "text-secret").secret == b"text-secret"  # type: ignore[arg-type]
