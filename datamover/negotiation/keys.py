"""The login/text key table: one row per key, everything the engine needs to know about it.

The negotiation engine (:mod:`datamover.negotiation.engine`) holds no per-key code; every
rule it applies comes from a :class:`KeyRow`. A transport that owns extra keys (iSER) or
changes a key's meaning contributes rows through
:attr:`datamover.capabilities.TransportCapabilities.login_keys`; a contributed row replaces
a table row of the same name.

Sources: RFC 7143 sections 12.1 and 13 (iSCSI), RFC 7145 section 6 (iSER). Where the RFC
says a key is "Irrelevant when SessionType=Discovery" the row's ``irrelevant_when`` says so.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = [
    "KeyType",
    "ResultFunction",
    "Scope",
    "Use",
    "Sender",
    "KeyRow",
    "RFC7143_KEYS",
    "ISER_KEYS",
    "MAX_KEY_NAME_LENGTH",
    "DEFAULT_MAX_VALUE_LENGTH",
    "rows_by_name",
    "is_discovery",
]

#: RFC 7143 6.1: standard key names are at most 63 bytes.
MAX_KEY_NAME_LENGTH = 63
#: RFC 7143 6.1: values are at most 255 bytes unless a key says otherwise.
DEFAULT_MAX_VALUE_LENGTH = 255

_MAX_24 = 2**24 - 1
_MAX_32 = 2**32 - 1


class KeyType(enum.Enum):
    """How a key's value is written (RFC 7143 6.1)."""

    BOOLEAN = "boolean"
    NUMERIC = "numeric"
    LIST = "list"
    STRING = "string"


class ResultFunction(enum.Enum):
    """How the responder combines the offer with its own value (RFC 7143 6.2)."""

    AND = "and"
    OR = "or"
    MIN = "min"
    MAX = "max"
    #: first value of the originator's list that the responder accepts (RFC 7143 6.2.1)
    LIST = "list"
    #: no answer: each side states its own value (RFC 7143 6.2 "declarative")
    DECLARATIVE = "declarative"


class Scope(enum.Enum):
    """Whether the result binds the whole session or only the connection (RFC 7143 13)."""

    SESSION_WIDE = "SW"
    CONNECTION_ONLY = "CO"


class Use(enum.Enum):
    """When a key may be sent (RFC 7143 13 "Use")."""

    #: initialize only: during login, on any connection
    IO = "IO"
    #: leading connection only: during the login of the session's first connection
    LO = "LO"
    #: login and full-feature Text negotiation
    ALL = "ALL"
    #: full feature phase only (SendTargets)
    FFPO = "FFPO"
    #: the security negotiation stage only (AuthMethod)
    SECURITY = "SECURITY"


class Sender(enum.Enum):
    """Who may send a key."""

    INITIATOR = "initiator"
    TARGET = "target"
    BOTH = "both"


def is_discovery(state: Mapping[str, str]) -> bool:
    """``irrelevant_when`` predicate: the session is a Discovery session."""
    return state.get("SessionType") == "Discovery"


def _first_burst_irrelevant(state: Mapping[str, str]) -> bool:
    """RFC 7143 13.14: FirstBurstLength is irrelevant when no unsolicited data can flow
    (InitialR2T=Yes and ImmediateData=No), and in Discovery sessions."""
    if is_discovery(state):
        return True
    return state.get("InitialR2T") == "Yes" and state.get("ImmediateData") == "No"


def _iser_not_enabled(state: Mapping[str, str]) -> bool:
    """RFC 7145 6.4/6.5: the iSER receive lengths mean nothing without RDMAExtensions=Yes."""
    return is_discovery(state) or state.get("RDMAExtensions", "No") != "Yes"


@dataclass(frozen=True, slots=True)
class KeyRow:
    """Everything the engine knows about one key.

    Attributes:
        name: the key, case-sensitive.
        type: value syntax.
        result: result function; DECLARATIVE keys are never answered.
        default: the value in force when the key is not negotiated (None: no default,
            e.g. names that must be declared).
        scope: session-wide or connection-only.
        use: when the key may be sent.
        sender: who may send it.
        rfc: where it is defined, for messages and tests.
        minimum / maximum: numeric range (inclusive).
        values: the allowed values of LIST and BOOLEAN keys (empty: any value).
        zero_means_unlimited: 0 is allowed besides ``minimum..maximum`` and means
            "no limit" (iSER declaratives).
        obsolete: the key is obsolete (RFC 7143 13.25); offers are answered with
            ``obsolete_answer`` and never with NotUnderstood.
        obsolete_answer: what an obsolete key is answered with ("Reject", or "No" for the
            IFMarker/OFMarker booleans).
        irrelevant_when: predicate over the currently known values (defaults, results
            so far, SessionType); True means an offer is answered "Irrelevant".
        max_value_length: the longest value accepted, in bytes.
        per_side: a declarative that each side declares for itself (its own receive
            limit); the agreed result exposes ``name.initiator`` and ``name.target``.
        depends_on: keys that ``irrelevant_when`` reads besides SessionType; the engine
            settles those first when they arrive in the same PDU.
    """

    name: str
    type: KeyType
    result: ResultFunction
    default: str | None
    scope: Scope
    use: Use
    sender: Sender
    rfc: str
    minimum: int | None = None
    maximum: int | None = None
    values: tuple[str, ...] = ()
    zero_means_unlimited: bool = False
    obsolete: bool = False
    obsolete_answer: str = "Reject"
    irrelevant_when: Callable[[Mapping[str, str]], bool] | None = None
    max_value_length: int = DEFAULT_MAX_VALUE_LENGTH
    per_side: bool = False
    depends_on: tuple[str, ...] = ()

    @property
    def declarative(self) -> bool:
        """True for keys that each side states without an answer."""
        return self.result is ResultFunction.DECLARATIVE

    def allowed_stages(self) -> frozenset[int]:
        """Login stages (0 security, 1 operational) and 3 (full-feature Text) in which the
        key may appear.

        Security keys live in stage 0 only and SendTargets in full feature phase only.
        Declarations (names, SessionType, aliases, receive limits) may come in any login
        stage, since the first Login Request must carry them whatever its stage.
        Negotiated operational keys belong to the operational stage (RFC 7143 6.3; Linux
        LIO refers them from the security stage the same way), and ALL keys may also be
        renegotiated by Text requests in full feature phase.
        """
        if self.use is Use.SECURITY:
            return frozenset({0})
        if self.use is Use.FFPO:
            return frozenset({3})
        if self.declarative:
            return frozenset({0, 1, 3}) if self.use is Use.ALL else frozenset({0, 1})
        return frozenset({1, 3}) if self.use is Use.ALL else frozenset({1})

    def may_be_sent_by(self, initiator: bool) -> bool:
        """True if the initiator (or the target, for ``initiator=False``) may send it."""
        if self.sender is Sender.BOTH:
            return True
        return (self.sender is Sender.INITIATOR) == initiator


def _bool(name: str, result: ResultFunction, default: str, rfc: str, *,
          use: Use = Use.LO, sender: Sender = Sender.BOTH, scope: Scope = Scope.SESSION_WIDE,
          irrelevant_when: Callable[[Mapping[str, str]], bool] | None = is_discovery) -> KeyRow:
    return KeyRow(name, KeyType.BOOLEAN, result, default, scope, use, sender, rfc,
                  values=("Yes", "No"), irrelevant_when=irrelevant_when)


def _num(name: str, result: ResultFunction, default: str | None, rfc: str, lo: int, hi: int, *,
         use: Use = Use.LO, sender: Sender = Sender.BOTH, scope: Scope = Scope.SESSION_WIDE,
         irrelevant_when: Callable[[Mapping[str, str]], bool] | None = is_discovery,
         zero_means_unlimited: bool = False, per_side: bool = False,
         depends_on: tuple[str, ...] = ()) -> KeyRow:
    return KeyRow(name, KeyType.NUMERIC, result, default, scope, use, sender, rfc,
                  minimum=lo, maximum=hi, irrelevant_when=irrelevant_when,
                  zero_means_unlimited=zero_means_unlimited, per_side=per_side,
                  depends_on=depends_on)


def _decl(name: str, rfc: str, *, use: Use, sender: Sender, default: str | None = None,
          values: tuple[str, ...] = (), key_type: KeyType = KeyType.STRING) -> KeyRow:
    return KeyRow(name, key_type, ResultFunction.DECLARATIVE, default, Scope.SESSION_WIDE, use,
                  sender, rfc, values=values)


_SW, _CO = Scope.SESSION_WIDE, Scope.CONNECTION_ONLY
_AND, _OR, _MIN, _MAX = ResultFunction.AND, ResultFunction.OR, ResultFunction.MIN, ResultFunction.MAX

#: Every login and operational key of RFC 7143 (sections 12.1 and 13).
RFC7143_KEYS: tuple[KeyRow, ...] = (
    KeyRow("AuthMethod", KeyType.LIST, ResultFunction.LIST, "None", _CO, Use.SECURITY,
           Sender.BOTH, "RFC 7143 12.1", values=("KRB5", "SRP", "CHAP", "None")),
    KeyRow("HeaderDigest", KeyType.LIST, ResultFunction.LIST, "None", _CO, Use.IO,
           Sender.BOTH, "RFC 7143 13.1", values=("CRC32C", "None")),
    KeyRow("DataDigest", KeyType.LIST, ResultFunction.LIST, "None", _CO, Use.IO,
           Sender.BOTH, "RFC 7143 13.1", values=("CRC32C", "None")),
    _num("MaxConnections", _MIN, "1", "RFC 7143 13.2", 1, 65535),
    KeyRow("SendTargets", KeyType.STRING, ResultFunction.DECLARATIVE, None, _SW, Use.FFPO,
           Sender.INITIATOR, "RFC 7143 13.3"),
    _decl("TargetName", "RFC 7143 13.4", use=Use.IO, sender=Sender.BOTH),
    _decl("InitiatorName", "RFC 7143 13.5", use=Use.IO, sender=Sender.INITIATOR),
    _decl("TargetAlias", "RFC 7143 13.6", use=Use.ALL, sender=Sender.TARGET),
    _decl("InitiatorAlias", "RFC 7143 13.7", use=Use.ALL, sender=Sender.INITIATOR),
    _decl("TargetAddress", "RFC 7143 13.8", use=Use.ALL, sender=Sender.TARGET),
    KeyRow("TargetPortalGroupTag", KeyType.NUMERIC, ResultFunction.DECLARATIVE, None, _SW,
           Use.IO, Sender.TARGET, "RFC 7143 13.9", minimum=0, maximum=65535),
    _bool("InitialR2T", _OR, "Yes", "RFC 7143 13.10"),
    _bool("ImmediateData", _AND, "Yes", "RFC 7143 13.11"),
    _num("MaxRecvDataSegmentLength", ResultFunction.DECLARATIVE, "8192", "RFC 7143 13.12",
         512, _MAX_24, use=Use.ALL, scope=_CO, irrelevant_when=None, per_side=True),
    _num("MaxBurstLength", _MIN, "262144", "RFC 7143 13.13", 512, _MAX_24),
    _num("FirstBurstLength", _MIN, "65536", "RFC 7143 13.14", 512, _MAX_24,
         irrelevant_when=_first_burst_irrelevant, depends_on=("InitialR2T", "ImmediateData")),
    _num("DefaultTime2Wait", _MAX, "2", "RFC 7143 13.15", 0, 3600, irrelevant_when=None),
    _num("DefaultTime2Retain", _MIN, "20", "RFC 7143 13.16", 0, 3600, irrelevant_when=None),
    _num("MaxOutstandingR2T", _MIN, "1", "RFC 7143 13.17", 1, 65535),
    _bool("DataPDUInOrder", _OR, "Yes", "RFC 7143 13.18"),
    _bool("DataSequenceInOrder", _OR, "Yes", "RFC 7143 13.19"),
    _num("ErrorRecoveryLevel", _MIN, "0", "RFC 7143 13.20", 0, 2, irrelevant_when=None),
    _decl("SessionType", "RFC 7143 13.21", use=Use.LO, sender=Sender.INITIATOR,
          default="Normal", values=("Discovery", "Normal"), key_type=KeyType.LIST),
    KeyRow("TaskReporting", KeyType.LIST, ResultFunction.LIST, "RFC3720", _SW, Use.LO,
           Sender.BOTH, "RFC 7143 13.23", values=("RFC3720", "ResponseFence", "FastAbort"),
           irrelevant_when=is_discovery),
    # RFC 7143 13.24 (defined with RFC 7144): RFC 7143 itself is level 1.
    _num("iSCSIProtocolLevel", _MIN, "1", "RFC 7143 13.24", 0, 31),
    KeyRow("X#NodeArchitecture", KeyType.LIST, ResultFunction.DECLARATIVE, None, _SW, Use.LO,
           Sender.BOTH, "RFC 7143 13.26"),
    # RFC 7143 13.25: obsolete; a 7143 node still answers them, never NotUnderstood.
    KeyRow("OFMarker", KeyType.BOOLEAN, _AND, "No", _CO, Use.IO, Sender.BOTH,
           "RFC 7143 13.25", values=("Yes", "No"), obsolete=True, obsolete_answer="No"),
    KeyRow("IFMarker", KeyType.BOOLEAN, _AND, "No", _CO, Use.IO, Sender.BOTH,
           "RFC 7143 13.25", values=("Yes", "No"), obsolete=True, obsolete_answer="No"),
    KeyRow("OFMarkInt", KeyType.STRING, _MIN, None, _CO, Use.IO, Sender.BOTH,
           "RFC 7143 13.25", obsolete=True),
    KeyRow("IFMarkInt", KeyType.STRING, _MIN, None, _CO, Use.IO, Sender.BOTH,
           "RFC 7143 13.25", obsolete=True),
)

#: The iSER keys of RFC 7145 section 6. Not in the default table: the iSER transport
#: contributes them through ``TransportCapabilities.login_keys``.
ISER_KEYS: tuple[KeyRow, ...] = (
    _bool("RDMAExtensions", _AND, "No", "RFC 7145 6.3"),
    # Declared by both sides, yet the result is the minimum (RFC 7145 6.4/6.5).
    _num("TargetRecvDataSegmentLength", _MIN, "8192", "RFC 7145 6.4", 512, _MAX_24,
         use=Use.IO, scope=_CO, irrelevant_when=_iser_not_enabled,
         depends_on=("RDMAExtensions",)),
    _num("InitiatorRecvDataSegmentLength", _MIN, "8192", "RFC 7145 6.5", 512, _MAX_24,
         use=Use.IO, scope=_CO, irrelevant_when=_iser_not_enabled,
         depends_on=("RDMAExtensions",)),
    _num("MaxOutstandingUnexpectedPDUs", ResultFunction.DECLARATIVE, "0", "RFC 7145 6.7",
         2, _MAX_32, zero_means_unlimited=True, per_side=True),
    _num("MaxAHSLength", ResultFunction.DECLARATIVE, "256", "RFC 7145 6.8", 2, _MAX_32,
         zero_means_unlimited=True, per_side=True),
    KeyRow("TaggedBufferForSolicitedDataOnly", KeyType.BOOLEAN, ResultFunction.DECLARATIVE,
           "No", _SW, Use.LO, Sender.INITIATOR, "RFC 7145 6.9", values=("Yes", "No"),
           irrelevant_when=is_discovery),
    KeyRow("iSERHelloRequired", KeyType.BOOLEAN, ResultFunction.DECLARATIVE, "No", _SW,
           Use.LO, Sender.INITIATOR, "RFC 7145 6.10", values=("Yes", "No"),
           irrelevant_when=is_discovery),
)


def rows_by_name(*tables: tuple[KeyRow, ...] | list[KeyRow]) -> dict[str, KeyRow]:
    """Merge tables into a name -> row map; a later table's row replaces an earlier one."""
    merged: dict[str, KeyRow] = {}
    for table in tables:
        for row in table:
            merged[row.name] = row
    return merged
