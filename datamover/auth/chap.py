"""CHAP for iSCSI login (RFC 7143 12.1.3, RFC 1994), one-way and mutual.

Exchange in the security stage (the login layer routes every ``CHAP_*`` key here)::

    I->T  CHAP_A=<A1,A2,...>                       InitiatorChap.first()
    T->I  CHAP_A=<A> CHAP_I=<I> CHAP_C=<C>         TargetChap.step()
    I->T  CHAP_N=<N> CHAP_R=<R> [CHAP_I CHAP_C]    InitiatorChap.step()
    T->I  [CHAP_N=<N> CHAP_R=<R>]                  TargetChap.step()   (mutual only)
                                                   InitiatorChap.step() verifies

``R = H(I || secret || C)`` with H chosen by CHAP_A: 5 MD5 (mandatory), 6 SHA-1,
7 SHA-256, 8 SHA3-256 (IANA PPP authentication algorithm registry). Challenges are random,
max(16, digest size) bytes long, sent as ``0x`` hex; ``0x`` and ``0b`` (base64) are read.

Secrets never appear in exception messages or logs.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets as _secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from datamover.pdu.text import format_hex, parse_binary

__all__ = [
    "ALGORITHMS",
    "DIGEST_SIZES",
    "MIN_SECRET_LENGTH",
    "MAX_BINARY_LENGTH",
    "AuthenticationError",
    "ChapPolicyError",
    "ChapSecret",
    "InitiatorChap",
    "TargetChap",
    "chap_response",
    "validate_secret",
]

log = logging.getLogger(__name__)

STATUS_INITIATOR_ERROR = 0x0200
STATUS_AUTH_FAILURE = 0x0201

#: CHAP_A value -> hashlib name.
ALGORITHMS: dict[int, str] = {5: "md5", 6: "sha1", 7: "sha256", 8: "sha3_256"}
#: CHAP_A value -> digest size in bytes.
DIGEST_SIZES: dict[int, int] = {a: hashlib.new(n).digest_size for a, n in ALGORITHMS.items()}
#: RFC 7143 12.1.3: CHAP_C and CHAP_R are at most 1024 bytes.
MAX_BINARY_LENGTH = 1024
#: RFC 7143 12.1.3 asks for secrets of at least 12 bytes (96 bits).
MIN_SECRET_LENGTH = 12
#: How many recent challenges the target remembers to refuse replays and reflections.
RECENT_CHALLENGES = 4096
_DEFAULT_ORDER = (8, 7, 6, 5)
_CHAP_KEYS = frozenset({"CHAP_A", "CHAP_I", "CHAP_C", "CHAP_N", "CHAP_R"})


class AuthenticationError(Exception):
    """CHAP failed; the login must end with ``status``.

    ``status`` is 0x0201 (authentication failure) or 0x0200 (initiator error, for
    malformed or missing keys). ``reply`` holds pairs the target may still send before
    failing (``CHAP_A=Reject`` when no algorithm is acceptable).
    """

    def __init__(self, message: str, status: int = STATUS_AUTH_FAILURE,
                 reply: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status: int = status
        self.reply: list[tuple[str, str]] = list(reply or [])


class ChapPolicyError(ValueError):
    """A CHAP credential breaks the configured policy (secret too short, same secret in
    both directions, unknown algorithm)."""


@dataclass(slots=True)
class ChapSecret:
    """A CHAP name and its secret. The secret is kept out of ``repr``."""

    user: str
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.secret, str):
            self.secret = self.secret.encode("utf-8")
        if not isinstance(self.user, str) or not self.user:
            raise ChapPolicyError("a CHAP user name must be a non-empty string")
        if not self.secret:
            raise ChapPolicyError(f"the CHAP secret of {self.user!r} is empty")

    def validate_secret(self, minimum: int = MIN_SECRET_LENGTH) -> None:
        """Raise :class:`ChapPolicyError` if the secret is shorter than ``minimum`` bytes.

        Short secrets are accepted by default (old deployments use them); a configuration
        option that enforces RFC 7143's 12-byte minimum calls this.
        """
        validate_secret(self.secret, minimum, self.user)


def validate_secret(secret: bytes, minimum: int = MIN_SECRET_LENGTH, user: str = "") -> None:
    """Raise :class:`ChapPolicyError` if ``secret`` is shorter than ``minimum`` bytes."""
    if len(secret) < minimum:
        who = f" of {user!r}" if user else ""
        raise ChapPolicyError(f"the CHAP secret{who} is {len(secret)} bytes; the policy asks "
                              f"for at least {minimum} (RFC 7143 12.1.3)")


def chap_response(algorithm: int, identifier: int, secret: bytes, challenge: bytes) -> bytes:
    """RFC 1994 4.1: H(identifier || secret || challenge)."""
    digest = hashlib.new(ALGORITHMS[algorithm])
    digest.update(bytes((identifier,)))
    digest.update(secret)
    digest.update(challenge)
    return digest.digest()


class _Random(Protocol):
    """What CHAP needs from a random source (the :mod:`secrets` module fits)."""

    def token_bytes(self, nbytes: int) -> bytes: ...
    def randbelow(self, exclusive_upper_bound: int) -> int: ...


def _challenge_length(algorithm: int) -> int:
    return max(16, DIGEST_SIZES[algorithm])


def _check_algorithms(algorithms: Sequence[int]) -> tuple[int, ...]:
    out: list[int] = []
    for algorithm in algorithms:
        if algorithm not in ALGORITHMS:
            raise ChapPolicyError(f"CHAP_A {algorithm} is not supported (supported: 5, 6, 7, 8)")
        if algorithm not in out:
            out.append(algorithm)
    if not out:
        raise ChapPolicyError("no CHAP algorithm configured")
    return tuple(out)


def _check_known_keys(received: Mapping[str, str]) -> dict[str, str]:
    """The CHAP_* pairs of ``received``; unknown CHAP_ keys are an initiator error."""
    chap = {k: v for k, v in received.items() if k.startswith("CHAP_")}
    unknown = sorted(set(chap) - _CHAP_KEYS)
    if unknown:
        raise AuthenticationError(f"unknown CHAP key(s) {', '.join(unknown)}", STATUS_INITIATOR_ERROR)
    return chap


def _parse_identifier(text: str) -> int:
    """CHAP_I: a number 0..255 (decimal or 0x hex)."""
    try:
        if text[:2].lower() == "0x":
            value = int(text[2:], 16) if text[2:] and all(c in "0123456789abcdefABCDEF" for c in text[2:]) else -1
        else:
            value = int(text) if text.isascii() and text.isdigit() else -1
    except ValueError:
        value = -1
    if not 0 <= value <= 255:
        raise AuthenticationError(f"CHAP_I={text[:20]!r} is not a number in 0..255", STATUS_INITIATOR_ERROR)
    return value


def _parse_blob(name: str, text: str) -> bytes:
    """CHAP_C / CHAP_R: 0x hex or 0b base64, at most 1024 bytes."""
    if len(text) > 2 + 2 * MAX_BINARY_LENGTH + 8:
        raise AuthenticationError(f"{name} is longer than {MAX_BINARY_LENGTH} bytes", STATUS_INITIATOR_ERROR)
    try:
        blob = parse_binary(text)
    except ValueError:
        raise AuthenticationError(f"{name} is not a 0x hex or 0b base64 value", STATUS_INITIATOR_ERROR) from None
    if len(blob) > MAX_BINARY_LENGTH:
        raise AuthenticationError(f"{name} is longer than {MAX_BINARY_LENGTH} bytes", STATUS_INITIATOR_ERROR)
    if not blob:
        raise AuthenticationError(f"{name} is empty", STATUS_INITIATOR_ERROR)
    return blob


def _require(chap: Mapping[str, str], *names: str) -> None:
    missing = [n for n in names if n not in chap]
    if missing:
        raise AuthenticationError(f"missing CHAP key(s) {', '.join(missing)}", STATUS_INITIATOR_ERROR)


class _RecentChallenges:
    """A bounded, thread-safe set of challenges seen in this process (replay defence)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def add_if_new(self, challenge: bytes) -> bool:
        """Remember ``challenge``; False if it was already there."""
        with self._lock:
            if challenge in self._seen:
                self._seen.move_to_end(challenge)
                return False
            self._seen[challenge] = None
            if len(self._seen) > self._capacity:
                self._seen.popitem(last=False)
            return True

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()


class TargetChap:
    """The target's side of CHAP: challenge the initiator, verify it, answer a mutual
    challenge. One instance per login."""

    #: Challenges issued and received by every TargetChap of this process: an initiator's
    #: mutual challenge found here is a replay or a (possibly cross-connection) reflection.
    recent: _RecentChallenges = _RecentChallenges(RECENT_CHALLENGES)

    def __init__(
        self,
        lookup: Callable[[str], bytes | None],
        *,
        mutual: ChapSecret | None = None,
        algorithms: Sequence[int] = _DEFAULT_ORDER,
        rng: _Random = _secrets,
    ) -> None:
        """
        Args:
            lookup: the initiator's CHAP name -> its secret, or None if unknown.
            mutual: the target's own name and secret, to answer a mutual challenge.
            algorithms: the CHAP_A values this target accepts.
            rng: the random source (tests pass a deterministic one).
        """
        self._lookup = lookup
        self._mutual = mutual
        self._algorithms = _check_algorithms(algorithms)
        self._rng = rng
        self._state = "algorithm"
        self._algorithm: int | None = None
        self._identifier = 0
        self._challenge = b""
        #: the initiator's CHAP name once verified
        self.peer_user: str | None = None

    @property
    def done(self) -> bool:
        """True once the initiator is verified (and the mutual answer computed)."""
        return self._state == "done"

    @property
    def algorithm(self) -> int | None:
        """The CHAP_A value chosen, once chosen."""
        return self._algorithm

    def step(self, received: Mapping[str, str]) -> list[tuple[str, str]]:
        """Consume the initiator's CHAP keys of one PDU; return the CHAP keys to send.

        Raises:
            AuthenticationError: on any failure; the login ends with its ``status``.
        """
        chap = _check_known_keys(received)
        if self._state == "algorithm":
            return self._choose(chap)
        if self._state == "response":
            return self._verify(chap)
        if self._state == "failed":
            raise AuthenticationError("CHAP already failed on this login")
        if chap:
            raise AuthenticationError(f"unexpected {', '.join(sorted(chap))} after CHAP completed",
                                      STATUS_INITIATOR_ERROR)
        return []

    def _choose(self, chap: dict[str, str]) -> list[tuple[str, str]]:
        _require(chap, "CHAP_A")
        extra = sorted(set(chap) - {"CHAP_A"})
        if extra:
            raise AuthenticationError(f"unexpected {', '.join(extra)} with CHAP_A", STATUS_INITIATOR_ERROR)
        offered: list[int] = []
        for item in chap["CHAP_A"].split(","):
            # RFC 7143 6.2.1: values we do not understand are skipped.
            if item.isascii() and item.isdigit() and len(item) < 6:
                offered.append(int(item))
        chosen = next((a for a in offered if a in self._algorithms), None)
        if chosen is None:
            self._state = "failed"
            raise AuthenticationError(
                f"no acceptable CHAP_A in {chap['CHAP_A'][:60]!r} (accepted: "
                f"{','.join(map(str, self._algorithms))})",
                STATUS_AUTH_FAILURE, reply=[("CHAP_A", "Reject")])
        self._algorithm = chosen
        self._identifier = self._rng.randbelow(256)
        self._challenge = self._fresh_challenge(chosen)
        self._state = "response"
        log.debug("CHAP: chose algorithm %d", chosen)
        return [("CHAP_A", str(chosen)), ("CHAP_I", str(self._identifier)),
                ("CHAP_C", format_hex(self._challenge))]

    def _fresh_challenge(self, algorithm: int) -> bytes:
        while True:
            challenge = self._rng.token_bytes(_challenge_length(algorithm))
            if self.recent.add_if_new(challenge):
                return challenge

    def _verify(self, chap: dict[str, str]) -> list[tuple[str, str]]:
        assert self._algorithm is not None
        self._state = "failed"  # until proven otherwise
        _require(chap, "CHAP_N", "CHAP_R")
        extra = sorted(set(chap) - {"CHAP_N", "CHAP_R", "CHAP_I", "CHAP_C"})
        if extra:
            raise AuthenticationError(f"unexpected {', '.join(extra)} with CHAP_R", STATUS_INITIATOR_ERROR)
        if ("CHAP_I" in chap) != ("CHAP_C" in chap):
            raise AuthenticationError("mutual CHAP needs both CHAP_I and CHAP_C", STATUS_INITIATOR_ERROR)
        response = _parse_blob("CHAP_R", chap["CHAP_R"])
        size = DIGEST_SIZES[self._algorithm]
        if len(response) != size:
            raise AuthenticationError(f"CHAP_R is {len(response)} bytes; algorithm {self._algorithm} "
                                      f"gives {size}")
        user = chap["CHAP_N"]
        secret = self._lookup(user)
        if secret is None:
            log.info("CHAP: unknown user %r", user[:80])
            raise AuthenticationError(f"CHAP user {user[:80]!r} is not known")
        expected = chap_response(self._algorithm, self._identifier, secret, self._challenge)
        if not hmac.compare_digest(expected, response):
            log.info("CHAP: wrong response from user %r", user[:80])
            raise AuthenticationError(f"CHAP response of user {user[:80]!r} is wrong")
        self.peer_user = user
        if "CHAP_I" not in chap:
            self._state = "done"
            return []
        return self._answer_mutual(chap, secret)

    def _answer_mutual(self, chap: dict[str, str], initiator_secret: bytes) -> list[tuple[str, str]]:
        assert self._algorithm is not None
        if self._mutual is None:
            raise AuthenticationError("the initiator asked for mutual CHAP, which this target "
                                      "has no credentials for")
        if hmac.compare_digest(self._mutual.secret, initiator_secret):
            # RFC 7143 12.1.3: one secret for both directions invites reflection attacks.
            raise AuthenticationError("mutual CHAP refused: the target secret equals the initiator's")
        identifier = _parse_identifier(chap["CHAP_I"])
        challenge = _parse_blob("CHAP_C", chap["CHAP_C"])
        size = DIGEST_SIZES[self._algorithm]
        if len(challenge) < size:
            raise AuthenticationError(f"mutual CHAP_C is {len(challenge)} bytes, shorter than the "
                                      f"{size}-byte digest")
        if challenge == self._challenge:
            raise AuthenticationError("mutual CHAP_C reflects the target's own challenge")
        if not self.recent.add_if_new(challenge):
            raise AuthenticationError("mutual CHAP_C was seen before (replay or reflection)")
        response = chap_response(self._algorithm, identifier, self._mutual.secret, challenge)
        self._state = "done"
        return [("CHAP_N", self._mutual.user), ("CHAP_R", format_hex(response))]


class InitiatorChap:
    """The initiator's side of CHAP: answer the target's challenge and, for mutual CHAP,
    challenge and verify the target. One instance per login attempt."""

    def __init__(
        self,
        creds: ChapSecret,
        *,
        mutual: ChapSecret | None = None,
        algorithms: Sequence[int] = _DEFAULT_ORDER,
        rng: _Random = _secrets,
    ) -> None:
        """
        Args:
            creds: the initiator's CHAP name and secret.
            mutual: the name and secret the target must prove (mutual CHAP), or None.
            algorithms: CHAP_A values to offer, strongest first; 5 (MD5) is always
                offered, last if not listed (RFC 7143 12.1.3).
            rng: the random source.

        Raises:
            ChapPolicyError: unknown algorithm, or the same secret in both directions.
        """
        order = list(_check_algorithms(algorithms))
        if 5 not in order:
            order.append(5)
        if mutual is not None and hmac.compare_digest(mutual.secret, creds.secret):
            raise ChapPolicyError("the mutual CHAP secret must differ from the initiator's "
                                  "(RFC 7143 12.1.3)")
        self._creds = creds
        self._mutual = mutual
        self._algorithms = tuple(order)
        self._rng = rng
        self._state = "start"
        self._algorithm: int | None = None
        self._target_challenge = b""
        self._identifier = 0
        self._challenge = b""

    @property
    def algorithms(self) -> tuple[int, ...]:
        """The CHAP_A values offered, in order."""
        return self._algorithms

    @property
    def algorithm(self) -> int | None:
        """The CHAP_A value the target chose."""
        return self._algorithm

    @property
    def done(self) -> bool:
        """True once our response is sent (one-way) or the target is verified (mutual)."""
        return self._state == "done"

    def first(self) -> list[tuple[str, str]]:
        """The CHAP_A offer, sent with (or after) AuthMethod=CHAP was agreed."""
        if self._state != "start":
            raise AuthenticationError("CHAP_A was already offered", STATUS_INITIATOR_ERROR)
        self._state = "challenge"
        return [("CHAP_A", ",".join(str(a) for a in self._algorithms))]

    def fallback_md5_only(self) -> InitiatorChap:
        """A fresh exchange offering only CHAP_A=5, for the retry after a target refused
        the list (LIO before 3.15, Synology: protocol digest pitfall 11)."""
        return InitiatorChap(self._creds, mutual=self._mutual, algorithms=(5,), rng=self._rng)

    def step(self, received: Mapping[str, str]) -> list[tuple[str, str]]:
        """Consume the target's CHAP keys of one login response; return ours to send.

        Raises:
            AuthenticationError: the target refused every algorithm, sent malformed keys,
                or (mutual) failed to prove its identity.
        """
        chap = _check_known_keys(received)
        if self._state == "challenge":
            return self._answer(chap)
        if self._state == "verify":
            return self._verify(chap)
        if self._state == "start":
            raise AuthenticationError("CHAP keys received before CHAP_A was offered", STATUS_INITIATOR_ERROR)
        if chap:
            raise AuthenticationError(f"unexpected {', '.join(sorted(chap))} after CHAP completed",
                                      STATUS_INITIATOR_ERROR)
        return []

    def _answer(self, chap: dict[str, str]) -> list[tuple[str, str]]:
        if chap.get("CHAP_A") == "Reject":
            self._state = "failed"
            raise AuthenticationError("the target rejected CHAP_A=" + ",".join(map(str, self._algorithms))
                                      + "; retry with fallback_md5_only()")
        _require(chap, "CHAP_A", "CHAP_I", "CHAP_C")
        text = chap["CHAP_A"]
        algorithm = int(text) if text.isascii() and text.isdigit() and len(text) < 6 else None
        if algorithm not in self._algorithms:
            raise AuthenticationError(f"the target chose CHAP_A={text[:20]!r}, which was not offered",
                                      STATUS_INITIATOR_ERROR)
        assert algorithm is not None
        identifier = _parse_identifier(chap["CHAP_I"])
        challenge = _parse_blob("CHAP_C", chap["CHAP_C"])
        self._algorithm = algorithm
        self._target_challenge = challenge
        response = chap_response(algorithm, identifier, self._creds.secret, challenge)
        out = [("CHAP_N", self._creds.user), ("CHAP_R", format_hex(response))]
        if self._mutual is None:
            self._state = "done"
            return out
        self._identifier = self._rng.randbelow(256)
        while True:
            self._challenge = self._rng.token_bytes(_challenge_length(algorithm))
            if self._challenge != challenge:
                break
        self._state = "verify"
        out += [("CHAP_I", str(self._identifier)), ("CHAP_C", format_hex(self._challenge))]
        return out

    def _verify(self, chap: dict[str, str]) -> list[tuple[str, str]]:
        assert self._algorithm is not None and self._mutual is not None
        self._state = "failed"
        _require(chap, "CHAP_N", "CHAP_R")
        response = _parse_blob("CHAP_R", chap["CHAP_R"])
        if chap["CHAP_N"] != self._mutual.user:
            raise AuthenticationError(f"the target named itself {chap['CHAP_N'][:80]!r}, "
                                      f"not {self._mutual.user!r}")
        size = DIGEST_SIZES[self._algorithm]
        if len(response) != size:
            raise AuthenticationError(f"the target's CHAP_R is {len(response)} bytes, not {size}")
        expected = chap_response(self._algorithm, self._identifier, self._mutual.secret, self._challenge)
        if not hmac.compare_digest(expected, response):
            raise AuthenticationError("the target's CHAP response is wrong (mutual CHAP failed)")
        self._state = "done"
        return []
