"""The iSER transport (RFC 7145): connection set-up through the verbs connection manager.

The provider is chosen by the ``provider`` option (``auto`` | ``pyverbs`` | ``soft``; auto
takes real verbs when a device with an active port exists) and reported by
:meth:`IserTransport.describe`, so every report says who moved the bytes.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping

from datamover.capabilities import TransportCapabilities
from datamover.di import AcceptCallback, DatamoverConnection, Listener, Portal, Role, Transport
from datamover.negotiation.keys import ISER_KEYS
from datamover_iser.connection import IserConnection
from datamover_iser.header import cm_private_data, peer_allows_send_with_invalidate
from datamover_iser.connection import MISC_RECEIVES, RECV_QUEUE_DEPTH, IserConnection
from datamover_iser.verbs.select import PROVIDERS, Selection, open_provider
from datamover_iser.verbs.wr import ConnParam

log = logging.getLogger("datamover.iser")

#: the target posts one login receive before accept; every later login receive is posted
#: just before the PDU that makes the peer send (IserConnection.login_send)
TARGET_LOGIN_RECEIVES = 1


_captures: dict[str, object] = {}


def capture_writer(path: str) -> object:
    """One pcap writer per path and process: a target and an initiator in one process
    that name the same file write both directions of each connection into it."""
    from datamover_iser.verbs.pcap import PcapWriter

    writer = _captures.get(path)
    if writer is None:
        # a large MTU keeps each iSER Send in one frame: tshark does not reassemble
        # SEND_FIRST..SEND_LAST, and the iSER dissector needs the whole PDU
        writer = _captures[path] = PcapWriter(path, mtu=60000)
    return writer


def close_captures() -> None:
    """Flush and close every capture file (call before reading them)."""
    for writer in _captures.values():
        writer.close()  # type: ignore[attr-defined]
    _captures.clear()


class IserListener(Listener):
    def __init__(self, portal: Portal, verbs_listener: object, task: asyncio.Task[None]) -> None:
        self.portal = portal
        self._verbs = verbs_listener
        self._task = task

    async def close(self) -> None:
        self._task.cancel()
        try:
            self._verbs.close()  # type: ignore[attr-defined]
        except Exception:
            pass


#: the STag kinds an end may use
STAG_KINDS = ("mw", "mr", "none")
#: the receive ring's bounds: one buffer at least, and room for the initiator's extra ones
#: in the receive queue
RING_MAX = RECV_QUEUE_DEPTH - MISC_RECEIVES


def _check_options(options: Mapping[str, object]) -> None:
    """Refuse, with a one-line ValueError, option values the transport cannot use (checked
    when it is made, so that a typo is not found by the first listen or connect)."""
    from datamover_iser.verbs.enums import Personality
    from datamover_iser.verbs.soft.provider import FABRIC_NAMES

    choices: dict[str, tuple[str, ...]] = {"provider": PROVIDERS, "fabric": FABRIC_NAMES, "stags": STAG_KINDS,
                                           "personality": tuple(p.value for p in Personality)}
    for name, allowed in choices.items():
        value = options.get(name)
        if value is not None and value not in allowed:
            raise ValueError(f"transport.iser option {name} must be one of {', '.join(allowed)}, not {value!r}")
    ring = options.get("ring")
    if ring is not None and (isinstance(ring, bool) or not isinstance(ring, int) or not 1 <= ring <= RING_MAX):
        raise ValueError(f"transport.iser option ring must be an integer from 1 to {RING_MAX}, not {ring!r}")
    capture = options.get("capture")
    if capture:
        folder = os.path.dirname(os.path.abspath(str(capture)))
        if not os.path.isdir(folder):
            raise ValueError(f"transport.iser option capture: folder {folder} does not exist")


class IserTransport(Transport):
    """iSCSI Extensions for RDMA over the verbs interface (pyverbs or the soft provider)."""

    name = "iser"

    def __init__(self, options: Mapping[str, object] | None = None) -> None:
        super().__init__(options)
        self._selection: Selection | None = None
        _check_options(self.options)
        # 0 (the default): no limit beyond the LU's Block Limits. tgtd's iSER driver needs
        # 524288 (its RDMA buffer; larger commands drop the connection), which is also what
        # Linux's ib_iser sends at most by default (max_sectors = 1024).
        limit = int(self.options.get("max_command_bytes", 0) or 0)  # type: ignore[call-overload]
        if limit < 0:
            raise ValueError(f"max_command_bytes must be 0 (no limit) or a positive byte count, not {limit}")
        self._max_command_bytes = limit or None

    @classmethod
    def capabilities(cls) -> TransportCapabilities:
        return TransportCapabilities(
            header_digest=False, data_digest=False, phase_collapse=False,
            error_recovery_levels=frozenset({0}), login_keys=tuple(ISER_KEYS),
            # RFC 7145 6.1: digests are off on iSER; RDMAExtensions=Yes is why we are here
            forced_keys=(("HeaderDigest", "None"), ("DataDigest", "None"), ("RDMAExtensions", "Yes")),
            # both receive lengths are always offered explicitly (protocol-digest 4.4);
            # solicited data by RDMA Read is cheap, so R2T-free unsolicited bursts buy little
            preferred_keys=(("InitiatorRecvDataSegmentLength", "8192"),
                            ("TargetRecvDataSegmentLength", "8192"),
                            ("InitialR2T", "Yes"), ("MaxOutstandingR2T", "4")),
            ignored_keys=frozenset({"MaxRecvDataSegmentLength"}),
            recv_limit_key_initiator="InitiatorRecvDataSegmentLength",
            recv_limit_key_target="TargetRecvDataSegmentLength",
            data_pdus_on_wire=False, zero_copy=True, cross_process=True, records_trace=True,
            provider="auto|pyverbs|soft",
        )

    @classmethod
    def option_names(cls) -> Mapping[str, type]:
        return {"provider": str, "fabric": str, "personality": str, "stags": str, "ring": int,
                "capture": str, "max_command_bytes": int}

    def max_command_bytes(self) -> int | None:
        return self._max_command_bytes

    # ------------------------------------------------------------------ provider
    def _provider(self) -> Selection:
        if self._selection is None:
            provider = str(self.options.get("provider", "auto"))
            # shm works in one process and between processes of one host; inproc is
            # faster in one process, zmq reaches other hosts
            fabric = str(self.options.get("fabric", "shm"))
            personality = str(self.options.get("personality", "roce-v2"))
            soft: dict[str, object] = {}
            capture = self.options.get("capture")
            if capture:
                soft["capture"] = capture_writer(str(capture))
            from datamover_iser.verbs.enums import Personality

            self._selection = open_provider(provider, fabric=fabric, personality=Personality(personality), **soft)
            self._selection.require()
        return self._selection

    def describe(self) -> str:
        if self._selection is None:
            return f"iser (provider {self.options.get('provider', 'auto')}, not opened yet)"
        return f"iser over {self._selection.summary}"

    # ------------------------------------------------------------------ target
    async def listen(self, portal: Portal, on_accept: AcceptCallback) -> Listener:
        provider = self._provider().require()
        verbs_listener = await provider.listen(portal.host, portal.port)
        bound = Portal(portal.host, verbs_listener.port, portal.tpgt)

        async def accept_loop() -> None:
            while True:
                cid = await verbs_listener.get_request(timeout=None)
                asyncio.get_running_loop().create_task(self._accept(cid, bound, on_accept))

        task = asyncio.get_running_loop().create_task(accept_loop())
        return IserListener(bound, verbs_listener, task)

    async def _accept(self, cid: object, portal: Portal, on_accept: AcceptCallback) -> None:
        provider = self._provider().require()
        conn: IserConnection | None = None
        try:
            conn = IserConnection(Role.TARGET, provider, cid, local=portal,  # type: ignore[arg-type]
                                  peer=f"iser:{getattr(cid, 'remote', '?')}", options=self.options)
            request = cid.param  # type: ignore[attr-defined]
            conn.peer_allows_send_inv = (self.options.get("stags", "mw") != "none"
                                         and peer_allows_send_with_invalidate(cid.private_data))  # type: ignore[attr-defined]
            # our ORD: what the initiator can absorb (its responder resources), capped
            conn.ord = max(1, min(getattr(request, "responder_resources", 4) or 4, 16))
            conn.start(TARGET_LOGIN_RECEIVES)  # the login buffer goes up before accept
            param = ConnParam(private_data=cm_private_data(send_with_invalidate=conn.peer_allows_send_inv),
                              responder_resources=0, initiator_depth=conn.ord, rnr_retry=7)
            await cid.accept(conn.qp, param)  # type: ignore[attr-defined]
            conn.watch_cm()
        except Exception as exc:
            log.warning("iSER accept failed: %s", exc)
            if conn is not None:
                conn.connection_terminate()
            return
        await on_accept(conn)

    # ------------------------------------------------------------------ initiator
    async def connect(self, portal: Portal, timeout: float | None = None) -> DatamoverConnection:
        provider = self._provider().require()
        cid = await provider.resolve(portal.host, portal.port)
        conn = IserConnection(Role.INITIATOR, provider, cid, local=portal, peer=f"iser:{portal}",
                              options=self.options)
        conn.start(0)  # login_send posts a response buffer before each Login Request
        # our STags are memory windows unless told otherwise: the target may invalidate them
        stags = str(self.options.get("stags", "mw"))
        param = ConnParam(private_data=cm_private_data(send_with_invalidate=stags == "mw"),
                          responder_resources=16, initiator_depth=1, rnr_retry=7)
        try:
            await cid.connect(conn.qp, param, timeout=timeout or 10.0)
        except Exception as exc:
            conn.connection_terminate()
            raise ConnectionRefusedError(f"iSER connect to {portal} failed: {exc}") from exc
        conn.watch_cm()
        return conn
