"""Fault plans: *what* to break, *where* and *when*, chosen explicitly or from a seed.

A plan hands one :class:`Fault` (or none) to every new connection the proxy carries. A
fault names an action, a point in the iSCSI exchange and the byte offset inside the PDU at
that point, so a run can aim at the places recovery is hardest: mid-PDU, mid-R2T burst,
between a command and its response, during login. Every fault that fires is recorded in
:attr:`FaultPlan.fired` for the report.
"""

from __future__ import annotations

import enum
import random
from collections import Counter
from dataclasses import dataclass, field


class Action(enum.Enum):
    """What the proxy does at the fault point."""

    DELAY = "delay"  # hold this PDU (and everything behind it) for ``seconds``
    TRUNCATE = "truncate"  # forward ``offset`` bytes of the PDU, then close both sides (FIN)
    CORRUPT = "corrupt"  # flip one bit at ``offset`` and carry on
    DROP = "drop"  # from ``offset`` on, swallow this direction: the link goes silent
    RESET = "reset"  # forward ``offset`` bytes, then abort both sides (RST)


class Where(enum.Enum):
    """Which PDU of the stream the fault is aimed at.

    Random plans never *corrupt* a login PDU: login runs without digests (RFC 7143 6.1), so
    a flipped bit there is indistinguishable from a hostile initiator; the target refuses
    it with a class 2 status, which ends ERL 0 recovery by design (tests/reliability/
    test_fault_injection.py checks that refusal separately)."""

    LOGIN = "login"  # a Login Request / Response
    MID_PDU = "mid_pdu"  # any full-feature PDU, at a byte inside it
    R2T_BURST = "r2t_burst"  # a solicited Data-Out (initiator to target), inside the burst
    BEFORE_RESPONSE = "before_response"  # the SCSI Response of a command already executed


#: the direction each point lives in: i2t = initiator to target
_DIRECTION = {Where.LOGIN: None, Where.MID_PDU: None, Where.R2T_BURST: "i2t", Where.BEFORE_RESPONSE: "t2i"}


@dataclass(slots=True, frozen=True)
class Fault:
    """One fault: at the ``nth`` PDU matching ``where`` in ``direction``, do ``action`` at
    ``offset_fraction`` of the PDU's length."""

    action: Action
    where: Where
    direction: str = "t2i"
    nth: int = 1
    offset_fraction: float = 0.5
    seconds: float = 0.0

    def matches(self, direction: str, opcode: int, ttt: int, login: bool) -> bool:
        if direction != self.direction:
            return False
        if self.where is Where.LOGIN:
            return login
        if login:
            return False
        if self.where is Where.R2T_BURST:
            return opcode == 0x05 and ttt != 0xFFFFFFFF
        if self.where is Where.BEFORE_RESPONSE:
            return opcode == 0x21
        return True

    def offset(self, length: int) -> int:
        """The byte offset inside a PDU of ``length`` bytes (0 for BEFORE_RESPONSE)."""
        if self.where is Where.BEFORE_RESPONSE:
            return 0
        return max(0, min(length - 1, int(length * self.offset_fraction)))

    def describe(self) -> str:
        return f"{self.action.value}@{self.where.value}/{self.direction}#{self.nth}"


@dataclass(slots=True)
class FaultPlan:
    """Hands faults to connections: the scripted ones first, then random ones."""

    scripted: list[Fault | None] = field(default_factory=list)
    seed: int | None = None
    #: chance that a connection (after the scripted ones) gets a random fault
    rate: float = 0.0
    #: random faults fire at a PDU drawn from 1..spread of their kind
    spread: int = 40
    actions: tuple[Action, ...] = tuple(Action)
    wheres: tuple[Where, ...] = tuple(Where)
    #: longest random delay in seconds
    max_delay: float = 0.3
    enabled: bool = True
    fired: list[dict[str, object]] = field(default_factory=list)
    _rng: random.Random = field(init=False, repr=False)
    _connections: int = field(default=0, init=False)
    _scripted_all: list[Fault] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._scripted_all = [f for f in self.scripted if f is not None]

    @classmethod
    def random(cls, seed: int, rate: float = 0.5, **kwargs: object) -> FaultPlan:
        return cls(seed=seed, rate=rate, **kwargs)  # type: ignore[arg-type]

    def for_connection(self) -> Fault | None:
        """The first fault for a new connection (None: carry it faithfully for now)."""
        self._connections += 1
        if not self.enabled:
            return None
        return self.draw(login=True)

    def draw(self, login: bool = False) -> Fault | None:
        """A random fault (None with probability ``1 - rate``); a connection that survived
        its last fault, or drew none, draws again ``spread`` PDUs later."""
        if not self.enabled:
            return None
        if self.scripted:
            # scripted faults go out in order; a login fault waits for a new connection
            if login or self.scripted[0] is None or self.scripted[0].where is not Where.LOGIN:
                return self.scripted.pop(0)
            return None
        rng = self._rng
        if rng.random() >= self.rate:
            return None
        wheres = [w for w in self.wheres if login or w is not Where.LOGIN]
        where = rng.choice(wheres)
        direction = _DIRECTION[where] or rng.choice(("i2t", "t2i"))
        nth = 1 if where is Where.LOGIN else rng.randint(1, self.spread)
        actions = [a for a in self.actions if where is not Where.LOGIN or a is not Action.CORRUPT]
        return Fault(action=rng.choice(actions), where=where, direction=direction, nth=nth,
                     offset_fraction=rng.random(), seconds=rng.uniform(0.01, self.max_delay))

    def unfired(self, fault: Fault) -> None:
        """A scripted fault whose connection ended first goes back to the front."""
        if self.enabled and any(fault is f for f in self._scripted_all):
            self.scripted.insert(0, fault)

    def record(self, conn: int, fault: Fault, opcode: int, offset: int, length: int) -> None:
        self.fired.append({"conn": conn, "fault": fault.describe(), "action": fault.action.value,
                           "where": fault.where.value, "opcode": opcode, "offset": offset,
                           "length": length})

    def summary(self) -> dict[str, object]:
        """Counts for reports: connections seen, faults fired by action and by point."""
        return {"connections": self._connections, "faults": len(self.fired),
                "by_action": dict(Counter(str(f["action"]) for f in self.fired)),
                "by_point": dict(Counter(str(f["where"]) for f in self.fired))}
