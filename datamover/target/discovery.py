"""Text Request handling in full feature phase: SendTargets (RFC 7143 13.3, App. C).

Long answers are split over several Text Responses: C=1 and a target transfer tag on all
but the last; the initiator collects the rest with empty Text Requests carrying that tag.
Each response segment is bounded by the initiator's receive limit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from datamover.pdu import RESERVED_TAG, TextRequest, TextResponse
from datamover.pdu.text import decode_text, encode_text
from datamover.session.text_login import TextAssembler

if TYPE_CHECKING:
    from datamover.target.session import TargetSession

#: keys a Text Request may carry in full feature phase that we answer here
_KNOWN_FFP_KEYS = {"SendTargets"}


class TextExchange:
    """One Text Request/Response exchange (possibly several PDUs each way)."""

    def __init__(self, session: TargetSession) -> None:
        self.session = session
        self.request_text = TextAssembler()
        self.pending: bytes = b""
        self.ttt = RESERVED_TAG

    def handle(self, req: TextRequest) -> TextResponse:
        session = self.session
        if req.ttt != RESERVED_TAG:
            if req.ttt != self.ttt:
                raise ValueError(f"Text Request continues unknown TTT {req.ttt:#x}")
            return self._next_segment(req)
        try:
            self.request_text.add(req.data)
        except OverflowError as exc:
            raise ValueError(str(exc)) from None
        if req.cont:
            # the initiator has more text: ask for it with an empty response
            self.ttt = session.new_ttt()
            return session.text_response(req, data=b"", final=False, cont=False, ttt=self.ttt)
        pairs = decode_text(self.request_text.take())
        answers: list[tuple[str, str]] = []
        for key, value in pairs:
            if key == "SendTargets":
                answers.extend(self.session.server.send_targets(session, value))
            elif key.startswith("X-") or key.startswith("X#") or key not in _KNOWN_FFP_KEYS:
                answers.append((key, "NotUnderstood"))
        self.pending = encode_text(answers)
        return self._next_segment(req)

    def _next_segment(self, req: TextRequest) -> TextResponse:
        session = self.session
        limit = session.params.initiator_recv_limit
        chunk, self.pending = self.pending[:limit], self.pending[limit:]
        if self.pending:
            self.ttt = session.new_ttt()
            return session.text_response(req, data=chunk, final=False, cont=True, ttt=self.ttt)
        self.ttt = RESERVED_TAG
        return session.text_response(req, data=chunk, final=True, cont=False, ttt=RESERVED_TAG)
