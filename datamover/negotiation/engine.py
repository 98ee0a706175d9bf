"""The table-driven text negotiation engine of RFC 7143 section 6.

One :class:`Negotiator` serves one connection's login (and, for Text requests in full
feature phase, the keys that may be renegotiated there). It is symmetric: the same object
answers the peer's offers (responder) and checks the peer's answers to its own offers
(originator), for the initiator and the target alike, and either side may offer a key in
any PDU.

The login layer drives it like this, per stage::

    send(neg.offers(stage))                       # initiator, first PDU of the stage
    while True:
        reply = neg.handle(received_pairs, stage) # answers to the peer's offers
        reply += neg.offers(stage)                # our own new offers
        ...                                       # transit when not neg.pending(stage)

``CHAP_*`` keys are never handled here: the login layer routes them to
:mod:`datamover.auth`.

Policy choices the RFC leaves open (documented here because peers see them):

* A key this node has no configured value for is answered as if this node wanted the
  key's default (as Linux LIO and tgt do with their built-in defaults).
* Offers whose outcome is already fixed (AND with No, OR with Yes) are always answered,
  though RFC 7143 6.2 lets a responder omit the answer; such offers of ours never leave
  :meth:`Negotiator.pending` true.
* An answer of Reject, Irrelevant or NotUnderstood leaves the key at its default.
* A leading-only key offered on a non-leading connection is answered Irrelevant.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from datamover.di import Role
from datamover.negotiation.keys import (
    MAX_KEY_NAME_LENGTH,
    RFC7143_KEYS,
    KeyRow,
    KeyType,
    ResultFunction,
    Use,
    rows_by_name,
)

__all__ = [
    "Negotiator",
    "NegotiationError",
    "NegotiationConfigError",
    "check_key_value",
    "STATUS_INITIATOR_ERROR",
    "STATUS_AUTH_FAILURE",
    "STATUS_MISSING_PARAMETER",
    "STATUS_SESSION_TYPE_UNSUPPORTED",
    "STATUS_TARGET_ERROR",
    "parse_numeric",
]

log = logging.getLogger(__name__)

#: Login status codes (class << 8 | detail), RFC 7143 11.13.5.
STATUS_INITIATOR_ERROR = 0x0200
STATUS_AUTH_FAILURE = 0x0201
STATUS_MISSING_PARAMETER = 0x0207
STATUS_SESSION_TYPE_UNSUPPORTED = 0x0209
STATUS_TARGET_ERROR = 0x0300

#: The reserved answer constants of RFC 7143 6.2 (besides "None", which is a value).
_ANSWER_CONSTANTS = frozenset({"NotUnderstood", "Irrelevant", "Reject"})
#: Keys that RFC 7143 6.2 lets a sender repeat (SendTargets responses, redirection).
_REPEATABLE = frozenset({"TargetAddress"})
#: Longest value accepted for a key we do not know before answering NotUnderstood.
_UNKNOWN_VALUE_LIMIT = 8192

# Outcome labels returned by Negotiator.outcome().
NEGOTIATED = "negotiated"
DECLARED = "declared"
DEFAULT = "default"


class NegotiationError(Exception):
    """The peer broke a negotiation rule; the login must end.

    ``status`` is the 16-bit login status (class << 8 | detail) a target sends, e.g.
    0x0200 initiator error or 0x0207 missing parameter. On the initiator side, where the
    connection is simply dropped, the status is 0x0300 (target error) for rule breaks by
    the target, for logs. ``key`` names the offending key when there is one.
    """

    def __init__(self, message: str, status: int = STATUS_INITIATOR_ERROR,
                 key: str | None = None) -> None:
        super().__init__(message)
        self.status: int = status
        self.key: str | None = key


class NegotiationConfigError(ValueError):
    """This node's own configuration (``local`` or ``forced``) holds an invalid key or value."""


def _in_range(row: KeyRow, number: int) -> bool:
    if number == 0 and row.zero_means_unlimited:
        return True
    if row.minimum is not None and number < row.minimum:
        return False
    return row.maximum is None or number <= row.maximum


def check_key_value(row: KeyRow, value: str, where: str = "") -> str:
    """``value`` checked against its key's row (type, range, allowed values, length) and
    normalised; NegotiationConfigError names the key, what it takes and the RFC section.
    Used for configured keys before any login (config files) and by the Negotiator."""
    name = row.name
    where = f"{where} " if where else ""  # "local ", "forced ", or nothing (a config file's own words)
    if len(value.encode()) > row.max_value_length:
        raise NegotiationConfigError(f"{where}value of {name} is longer than {row.max_value_length} bytes")
    if row.type is KeyType.BOOLEAN:
        if value not in ("Yes", "No"):
            raise NegotiationConfigError(f"{where}{name}={value!r}: expected Yes or No ({row.rfc})")
    elif row.type is KeyType.NUMERIC:
        number = parse_numeric(value)
        if number is None or not _in_range(row, number):
            raise NegotiationConfigError(
                f"{where}{name}={value!r}: expected a number in {row.minimum}..{row.maximum} ({row.rfc})")
        return str(number)
    elif row.type is KeyType.LIST and row.values:
        items = value.split(",")
        bad = [item for item in items if item not in row.values]
        if bad or not value:
            raise NegotiationConfigError(
                f"{where}{name}={value!r}: allowed values are {', '.join(row.values)} ({row.rfc})")
    return value


def parse_numeric(text: str) -> int | None:
    """Parse an RFC 7143 6.1 numerical value (decimal or ``0x`` hex); None if malformed."""
    if not text or len(text) > 64:
        return None
    if text[:2] in ("0x", "0X"):
        digits = text[2:]
        if not digits or any(c not in "0123456789abcdefABCDEF" for c in digits):
            return None
        return int(digits, 16)
    if not text.isascii() or not text.isdigit():
        return None
    return int(text)


@dataclass(slots=True)
class _Offer:
    """One offer of ours that awaits (or may receive) an answer."""

    value: str
    stage: int
    #: the result is already fixed (AND with No / OR with Yes): an answer is optional
    optional: bool


class Negotiator:
    """Negotiates the login and operational keys of one connection (RFC 7143 6)."""

    def __init__(
        self,
        role: Role,
        *,
        rows: Iterable[KeyRow] = RFC7143_KEYS,
        extra_rows: Iterable[KeyRow] = (),
        local: Mapping[str, str] | None = None,
        session_type: str = "Normal",
        leading: bool = True,
        forced: Mapping[str, str] | None = None,
    ) -> None:
        """
        Args:
            role: which end this node is.
            rows: the key table (default RFC 7143's).
            extra_rows: rows contributed by the transport; they replace table rows of the
                same name.
            local: this node's wishes and limits, e.g. ``{"MaxBurstLength": "1048576",
                "HeaderDigest": "CRC32C,None"}``; list keys hold the acceptable values in
                order of preference. ``X-`` keys are offered verbatim.
            session_type: "Normal" or "Discovery". The target learns the real type from
                the initiator's SessionType declaration.
            leading: this is the session's first connection (LO keys allowed).
            forced: keys forced to a value whatever ``local`` or the peer says (iSER:
                HeaderDigest=None, DataDigest=None).

        Raises:
            NegotiationConfigError: an unknown key or an invalid value in ``local``/``forced``.
        """
        self.role: Role = role
        self._initiator: bool = role is Role.INITIATOR
        self._rows: dict[str, KeyRow] = rows_by_name(tuple(rows), tuple(extra_rows))
        if session_type not in ("Normal", "Discovery"):
            raise NegotiationConfigError(f"session type {session_type!r} is not Normal or Discovery")
        self.session_type: str = session_type
        self.leading: bool = leading
        self._forced: dict[str, str] = {}
        for name, value in (forced or {}).items():
            self._forced[name] = self._check_config(name, value, "forced")
        self._local: dict[str, str] = {}
        for name, value in (local or {}).items():
            self._local[name] = self._check_config(name, value, "local")
        if "SessionType" in self._local and self._local["SessionType"] != session_type:
            raise NegotiationConfigError(
                f"local SessionType={self._local['SessionType']} contradicts session_type={session_type}")
        if self._initiator and session_type != "Normal":
            # RFC 7143 6.3: a Discovery login must say so in its first request.
            self._local.setdefault("SessionType", session_type)

        self._offered: dict[str, _Offer] = {}        # our offers still open
        self._sent: set[str] = set()                 # every key we ever sent
        self._received: set[str] = set()             # every key the peer ever sent
        self._results: dict[str, str] = {}           # settled values of negotiated keys
        self._outcomes: dict[str, str] = {}          # how each key ended
        self._declared_local: dict[str, str] = {}    # our declarations, as sent
        self._declared_peer: dict[str, str] = {}     # the peer's declarations
        self._private: dict[str, str] = {}           # answers to our X- offers

    # ------------------------------------------------------------------ config checks
    def _check_config(self, name: str, value: str, where: str) -> str:
        """Validate one configured key and return its normalised value."""
        if not isinstance(value, str):
            raise NegotiationConfigError(f"{where} value of {name} must be a string, not {type(value).__name__}")
        if name.startswith("CHAP_"):
            raise NegotiationConfigError(f"{where} key {name} belongs to datamover.auth, not negotiation")
        row = self._rows.get(name)
        if row is None:
            if name.startswith(("X-", "X#")) and 0 < len(name) <= MAX_KEY_NAME_LENGTH:
                return value
            raise NegotiationConfigError(f"{where} key {name!r} is not a known iSCSI key")
        return check_key_value(row, value, where)

    # ------------------------------------------------------------------ state helpers
    def _state(self) -> dict[str, str]:
        """Best-known values now: defaults, then declarations and results so far."""
        state: dict[str, str] = {}
        for row in self._rows.values():
            if row.default is not None:
                state[row.name] = self._forced.get(row.name, row.default)
        state.update(self._results)
        state["SessionType"] = self.session_type
        return state

    def _irrelevant(self, row: KeyRow, state: Mapping[str, str] | None = None) -> bool:
        if row.irrelevant_when is None:
            return False
        return row.irrelevant_when(self._state() if state is None else state)

    def _offer_state(self) -> dict[str, str]:
        """The state an offer is judged in: our own unsettled wishes count as granted.

        So an iSER initiator offers InitiatorRecvDataSegmentLength in the same PDU as
        RDMAExtensions=Yes (protocol digest pitfall 4), before the answer is known.
        """
        state = self._state()
        for name, value in self._local.items():
            if name not in self._results and name not in self._outcomes:
                state[name] = self._forced.get(name, value)
        return state

    def _our_value(self, row: KeyRow) -> str | None:
        """What this node wants for ``row``: forced, configured, or the default."""
        if row.name in self._forced:
            return self._forced[row.name]
        if row.name in self._local:
            return self._local[row.name]
        return row.default

    def _peer_fault(self) -> int:
        """The status for a rule broken by the peer (see NegotiationError)."""
        return STATUS_INITIATOR_ERROR if not self._initiator else STATUS_TARGET_ERROR

    def _error(self, message: str, key: str | None = None, status: int | None = None) -> NegotiationError:
        peer = "initiator" if not self._initiator else "target"
        return NegotiationError(f"{peer} {message}", self._peer_fault() if status is None else status, key)

    # ------------------------------------------------------------------ originator
    def offers(self, stage: int) -> list[tuple[str, str]]:
        """Our new offers and declarations for ``stage`` (0 security, 1 operational, 3 Text).

        The initiator offers everything configured that belongs to the stage; the target
        offers only values that differ from the default, plus its declarations. A key is
        never offered twice, nor offered after the peer offered it.
        """
        out: list[tuple[str, str]] = []
        for name, configured in self._local.items():
            row = self._rows.get(name)
            # Each side declares its own per-side limit, whatever the peer declared.
            if name in self._sent or (name in self._received and not (row and row.per_side)):
                continue
            value = self._forced.get(name, configured)
            if row is None:
                # Private X- keys: Normal sessions only, never in the security stage.
                if stage in (1, 3) and self.session_type == "Normal":
                    out.append((name, value))
                    self._sent.add(name)
                    self._offered[name] = _Offer(value, stage, optional=False)
                continue
            if not self._may_offer(row, stage):
                continue
            if row.declarative:
                out.append((name, value))
                self._sent.add(name)
                self._declared_local[name] = value
                self._outcomes[name] = DECLARED
                continue
            if not self._initiator and not _restricts(row, value):
                # a target originates only what tightens the default: anything looser
                # could not win anyway (the result functions favour the default side), and
                # every extra offer costs the initiator a round trip (LIO behaves alike)
                continue
            out.append((name, value))
            self._sent.add(name)
            fixed = (row.result is ResultFunction.AND and value == "No") or (
                row.result is ResultFunction.OR and value == "Yes")
            if fixed:
                self._results[name] = value
                self._outcomes[name] = NEGOTIATED
            self._offered[name] = _Offer(value, stage, optional=fixed)
        return out

    def _may_offer(self, row: KeyRow, stage: int) -> bool:
        if stage not in row.allowed_stages() or row.obsolete:
            return False
        if row.per_side and stage == 0:
            # Receive limits are operational: LIO refuses them in the security stage.
            return False
        if not row.may_be_sent_by(self._initiator):
            return False
        if row.use is Use.SECURITY and not self._initiator:
            return False  # the target answers AuthMethod, it never proposes it
        if row.use is Use.LO and not self.leading:
            return False
        return not self._irrelevant(row, self._offer_state())

    def pending(self, stage: int) -> bool:
        """True while an offer we made in ``stage`` still awaits its answer."""
        return any(not offer.optional and offer.stage == stage for offer in self._offered.values())

    # ------------------------------------------------------------------ responder
    def handle(self, received: list[tuple[str, str]], stage: int) -> list[tuple[str, str]]:
        """Process every pair the peer sent in one (reassembled) PDU.

        Answers to our offers are checked; the peer's own offers are answered. Returns the
        pairs to put in our next PDU, in the order the peer's keys came.

        Raises:
            NegotiationError: a duplicate key, a key in the wrong stage or from the wrong
                sender, an overlong value, an answer we cannot accept, a bad declaration.
        """
        pairs = [(name, value) for name, value in received if not name.startswith("CHAP_")]
        in_pdu: set[str] = set()
        for name, _value in pairs:
            if not name or len(name) > MAX_KEY_NAME_LENGTH or not name.isascii() or not name.isprintable():
                raise self._error(f"sent a malformed key name {name[:80]!r} (RFC 7143 6.1)", name)
            repeatable = name in _REPEATABLE or (stage == 3 and name == "TargetName")
            if (name in in_pdu or name in self._received) and not repeatable:
                raise self._error(f"sent {name} more than once in one negotiation (RFC 7143 6.2)", name)
            in_pdu.add(name)

        # Settle what others depend on first: SessionType decides Discovery irrelevance,
        # InitialR2T/ImmediateData decide FirstBurstLength's, RDMAExtensions the iSER ones.
        def order(item: tuple[int, tuple[str, str]]) -> tuple[int, int]:
            index, (name, _) = item
            row = self._rows.get(name)
            if name == "SessionType":
                rank = 0
            elif row is None:
                rank = 3
            elif row.depends_on:
                rank = 2
            else:
                rank = 1
            return rank, index

        answers: dict[int, tuple[str, str]] = {}
        for index, (name, value) in sorted(enumerate(pairs), key=order):
            self._received.add(name)
            if name in self._offered:
                self._take_answer(name, value)
                continue
            if name in self._declared_local:
                self._peer_on_our_declaration(name, value)
                continue
            answer = self._respond(name, value, stage)
            if answer is not None:
                self._sent.add(name)
                answers[index] = (name, answer)
        return [answers[index] for index in sorted(answers)]

    def _respond(self, name: str, value: str, stage: int) -> str | None:
        """Our answer to the peer's offer or declaration (None: no answer is due)."""
        row = self._rows.get(name)
        if row is None:
            if value in _ANSWER_CONSTANTS:
                raise self._error(f"answered {name}={value}, a key we never offered (RFC 7143 6.2)", name)
            if len(value.encode()) > _UNKNOWN_VALUE_LIMIT:
                raise self._error(f"sent an overlong value for unknown key {name}", name)
            # RFC 7143 6.2 / 13.22: unknown keys, private X- keys included.
            self._outcomes[name] = "NotUnderstood"
            return "NotUnderstood"
        if row.obsolete:
            # RFC 7143 13.25: obsolete keys are answered (in any stage, by anyone), never
            # NotUnderstood; old initiators still send IFMarker=No/OFMarker=No.
            if len(value.encode()) > row.max_value_length:
                raise self._error(f"sent an overlong {name} value", name)
            self._outcomes[name] = row.obsolete_answer
            return row.obsolete_answer
        if stage not in row.allowed_stages():
            raise self._error(f"sent {name} in stage {stage}; allowed in stage(s) "
                              f"{sorted(row.allowed_stages())} ({row.rfc})", name)
        if not row.may_be_sent_by(not self._initiator):
            raise self._error(f"may not send {name}: only the {row.sender.value} sends it ({row.rfc})", name)
        if len(value.encode()) > row.max_value_length:
            raise self._error(f"sent a {name} value longer than {row.max_value_length} bytes ({row.rfc})", name)
        if value in _ANSWER_CONSTANTS:
            raise self._error(f"answered {name}={value}, a key we never offered (RFC 7143 6.2)", name)
        if row.declarative:
            self._take_declaration(row, value)
            return None
        if (row.use is Use.LO and not self.leading) or self._irrelevant(row):
            self._outcomes[name] = "Irrelevant"
            return "Irrelevant"
        result = self._select(row, value)
        if result is None:
            self._outcomes[name] = "Reject"
            log.debug("rejecting %s=%s", name, value)
            return "Reject"
        self._results[name] = result
        self._outcomes[name] = NEGOTIATED
        return result

    def _take_declaration(self, row: KeyRow, value: str) -> None:
        """Record a declaration of the peer after checking its value."""
        if row.use is Use.LO and not self.leading:
            return
        if self._irrelevant(row):
            return
        problem = self._value_problem(row, value)
        if problem is not None:
            status = STATUS_SESSION_TYPE_UNSUPPORTED if row.name == "SessionType" and not self._initiator else None
            raise self._error(f"declared {row.name}={value[:80]!r}: {problem} ({row.rfc})", row.name, status)
        if row.type is KeyType.NUMERIC:
            value = str(parse_numeric(value))
        self._declared_peer[row.name] = value
        self._outcomes.setdefault(row.name, DECLARED)
        if row.name == "SessionType":
            self.session_type = value

    def _peer_on_our_declaration(self, name: str, value: str) -> None:
        """The peer sent a key we declared: its own declaration, or a courtesy answer.

        tgt treats MaxOutstandingUnexpectedPDUs as negotiated and sends a value back
        (protocol digest, pitfall 14); per-side declarations are taken as the peer's own.
        """
        row = self._rows[name]
        if value in _ANSWER_CONSTANTS:
            return
        if row.per_side and row.may_be_sent_by(not self._initiator):
            self._take_declaration(row, value)

    def _value_problem(self, row: KeyRow, value: str) -> str | None:
        """Why ``value`` is not a valid value of ``row``, or None."""
        if row.type is KeyType.BOOLEAN:
            return None if value in ("Yes", "No") else "expected Yes or No"
        if row.type is KeyType.NUMERIC:
            number = parse_numeric(value)
            if number is None:
                return "not a number"
            if not _in_range(row, number):
                extra = " or 0" if row.zero_means_unlimited else ""
                return f"outside {row.minimum}..{row.maximum}{extra}"
            return None
        if row.type is KeyType.LIST and row.values and row.declarative:
            return None if value in row.values else f"expected one of {', '.join(row.values)}"
        return None

    def _select(self, row: KeyRow, offered: str) -> str | None:
        """Apply the row's result function to the peer's offer; None means Reject."""
        ours = self._our_value(row)
        if ours is None:
            return None
        if row.type is KeyType.BOOLEAN:
            if offered not in ("Yes", "No"):
                return None
            if row.result is ResultFunction.AND:
                return "Yes" if offered == "Yes" and ours == "Yes" else "No"
            if row.result is ResultFunction.OR:
                return "Yes" if offered == "Yes" or ours == "Yes" else "No"
            return None
        if row.type is KeyType.NUMERIC:
            theirs = parse_numeric(offered)
            mine = parse_numeric(ours)
            if theirs is None or mine is None or not _in_range(row, theirs):
                return None
            if row.result is ResultFunction.MIN:
                return str(self._minimum(row, theirs, mine))
            if row.result is ResultFunction.MAX:
                return str(max(theirs, mine))
            return None
        if row.result is ResultFunction.LIST:
            acceptable = set(ours.split(","))
            for candidate in offered.split(","):
                # RFC 7143 6.2.1: values we do not understand are skipped.
                if candidate and candidate in acceptable and (not row.values or candidate in row.values):
                    return candidate
            return None
        return None

    @staticmethod
    def _minimum(row: KeyRow, a: int, b: int) -> int:
        if row.zero_means_unlimited:
            if a == 0:
                return b
            if b == 0:
                return a
        return min(a, b)

    def _take_answer(self, name: str, value: str) -> None:
        """Check the peer's answer to our offer and settle the key."""
        offer = self._offered.pop(name)
        row = self._rows.get(name)
        if value in _ANSWER_CONSTANTS:
            # RFC 7143 6.2: the key keeps its default (an X- key simply stays unused).
            self._results.pop(name, None)
            self._outcomes[name] = value
            if value == "Reject" and offer.optional and row is not None:
                # our fixed AND=No / OR=Yes still stands: rejecting it changes nothing
                self._results[name] = offer.value
            return
        if row is None:
            if len(value.encode()) > _UNKNOWN_VALUE_LIMIT:
                raise self._error(f"answered {name} with an overlong value", name)
            self._private[name] = value
            self._outcomes[name] = NEGOTIATED
            return
        if len(value.encode()) > row.max_value_length:
            raise self._error(f"answered {name} with a value longer than {row.max_value_length} bytes", name)
        result = self._check_answer(row, offer.value, value)
        if result is None:
            raise self._error(f"answered {name}={value[:80]!r}, which our offer {name}={offer.value} "
                              f"does not allow ({row.rfc})", name)
        self._results[name] = result
        self._outcomes[name] = NEGOTIATED

    def _check_answer(self, row: KeyRow, offered: str, answer: str) -> str | None:
        """The settled value if ``answer`` is a legal answer to ``offered``, else None."""
        if row.type is KeyType.BOOLEAN:
            if answer not in ("Yes", "No"):
                return None
            if row.result is ResultFunction.AND and offered == "No" and answer != "No":
                return None
            if row.result is ResultFunction.OR and offered == "Yes" and answer != "Yes":
                return None
            return answer
        if row.type is KeyType.NUMERIC:
            number = parse_numeric(answer)
            mine = parse_numeric(offered)
            if number is None or mine is None or not _in_range(row, number):
                return None
            if row.result is ResultFunction.MIN and number != self._minimum(row, number, mine):
                return None
            if row.result is ResultFunction.MAX and number < mine:
                return None
            return str(number)
        if row.result is ResultFunction.LIST:
            return answer if answer in offered.split(",") else None
        return None

    # ------------------------------------------------------------------ results
    def outcome(self, name: str) -> str:
        """How ``name`` ended: "negotiated", "declared", "Reject", "Irrelevant",
        "NotUnderstood", or "default" (never exchanged)."""
        return self._outcomes.get(name, DEFAULT)

    @property
    def peer_declarations(self) -> dict[str, str]:
        """What the peer declared (InitiatorName, TargetName, SessionType, ...)."""
        return dict(self._declared_peer)

    def require(self, *names: str) -> None:
        """Raise 0x0207 (missing parameter) unless the peer has sent every key in ``names``."""
        missing = [name for name in names if name not in self._received]
        if missing:
            raise NegotiationError(f"missing parameter(s): {', '.join(missing)} (RFC 7143 6.3)",
                                   STATUS_MISSING_PARAMETER, missing[0])

    def agreed(self) -> dict[str, str]:
        """Every key's value for this connection: results, declarations, then defaults.

        Per-side declaratives appear only as ``NAME.initiator`` and ``NAME.target`` (each
        side's declaration or the default), so that both ends agree on every entry.
        Cross-key rules are applied: FirstBurstLength is clamped to MaxBurstLength
        (RFC 7143 13.14), MaxOutstandingR2T is 1 when ErrorRecoveryLevel > 0
        and DataSequenceInOrder=Yes (RFC 7143 13.19), and a Discovery session has
        MaxConnections=1 (RFC 7143 13.2).
        """
        out: dict[str, str] = {}
        for row in self._rows.values():
            if row.obsolete or row.use is Use.FFPO:
                continue
            if row.per_side:
                own = self._declared_local.get(row.name, row.default)
                peer = self._declared_peer.get(row.name, row.default)
                mine, theirs = ("initiator", "target") if self._initiator else ("target", "initiator")
                if own is not None:
                    out[f"{row.name}.{mine}"] = own
                if peer is not None:
                    out[f"{row.name}.{theirs}"] = peer
                continue
            if row.declarative:
                value = self._declared_peer.get(row.name, self._declared_local.get(row.name, row.default))
                if row.name == "SessionType":
                    value = self.session_type
            elif row.name in self._results:
                value = self._results[row.name]
            else:
                value = self._forced.get(row.name, row.default)
            if value is not None:
                out[row.name] = value
        out.update(self._private)
        self._apply_cross_rules(out)
        return out

    @staticmethod
    def _apply_cross_rules(out: dict[str, str]) -> None:
        if out.get("SessionType") == "Discovery" and "MaxConnections" in out:
            out["MaxConnections"] = "1"
        if "FirstBurstLength" in out and "MaxBurstLength" in out:
            if int(out["FirstBurstLength"]) > int(out["MaxBurstLength"]):
                out["FirstBurstLength"] = out["MaxBurstLength"]
        if (int(out.get("ErrorRecoveryLevel", "0")) > 0 and out.get("DataSequenceInOrder") == "Yes"
                and "MaxOutstandingR2T" in out):
            out["MaxOutstandingR2T"] = "1"

    def int_value(self, name: str) -> int:
        """The agreed value of numeric key ``name`` (KeyError if it has none)."""
        value = self.agreed()[name]
        number = parse_numeric(value)
        if number is None:
            raise ValueError(f"{name}={value!r} is not numeric")
        return number

    def bool_value(self, name: str) -> bool:
        """The agreed value of boolean key ``name`` (KeyError if it has none)."""
        value = self.agreed()[name]
        if value not in ("Yes", "No"):
            raise ValueError(f"{name}={value!r} is not boolean")
        return value == "Yes"


def _restricts(row: KeyRow, value: str) -> bool:
    """True if ``value`` is stricter than the key's default under its result function."""
    default = row.default
    if default is None or value == default:
        return False
    if row.result in (ResultFunction.MIN, ResultFunction.MAX):
        mine, theirs = parse_numeric(value), parse_numeric(default)
        if mine is None or theirs is None:
            return True  # let the normal validation report it
        return mine < theirs if row.result is ResultFunction.MIN else mine > theirs
    if row.result is ResultFunction.AND:
        return value == "No"
    if row.result is ResultFunction.OR:
        return value == "Yes"
    return False  # list keys: the initiator proposes, the target chooses
