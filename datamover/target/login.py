"""The target side of the login phase (RFC 7143 6, 11.12-11.13).

Runs over the datamover's login channel, before Enable_Datamover. Every failure ends in a
Login Response with the status RFC 7143 11.13.5 prescribes, then the connection closes; no
exception escapes to the listener.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from datamover.auth import AuthenticationError, TargetChap
from datamover.di import ConnectionClosed, DatamoverConnection, Role
from datamover.negotiation import NegotiationError, Negotiator
from datamover.pdu import LoginRequest, LoginResponse, LoginStatus, PduFormatError
from datamover.pdu.text import TextFormatError, decode_text, encode_text
from datamover.session.errors import LoginError
from datamover.session.params import DEFAULT_OPERATIONAL_KEYS, keys_for_transport
from datamover.session.serial import sn_add
from datamover.session.text_login import TextAssembler, split_auth
from datamover.target.config import check_iscsi_name

if TYPE_CHECKING:
    from datamover.capabilities import TransportCapabilities
    from datamover.target.config import TargetConfig
    from datamover.target.server import TargetServer

log = logging.getLogger("datamover.target.login")

SECURITY, OPERATIONAL, FULL_FEATURE = 0, 1, 3
#: login PDUs one connection may send (continuations included) before it is refused
MAX_LOGIN_EXCHANGES = 256


@dataclass(slots=True)
class LoginOutcome:
    """What a successful login settled."""

    initiator_name: str
    target: TargetConfig | None  # None for a Discovery session
    isid: int
    tsih: int
    cid: int
    agreed: dict[str, str]
    exp_cmd_sn: int
    stat_sn: int  # the StatSN the next response will carry
    final_response: LoginResponse
    authenticated_user: str | None


def target_negotiator(configured: Mapping[str, str], caps: TransportCapabilities, session_type: str = "Normal",
                      auth_required: bool = False) -> Negotiator:
    """The Negotiator of one target login: RFC 7143's defaults, digests wherever the
    transport carries them, its preferred keys, the configured ``[keys]``, then what it
    forces. NegotiationConfigError for a configured value no row takes (TargetServer
    makes one at start-up, so that such a value is refused there, not at every login)."""
    local = dict(DEFAULT_OPERATIONAL_KEYS)
    # a target accepts digests whenever its transport can carry them; the initiator's
    # order of preference decides (RFC 7143 13.1)
    if caps.header_digest:
        local["HeaderDigest"] = "CRC32C,None"
    if caps.data_digest:
        local["DataDigest"] = "CRC32C,None"
    local.update(dict(caps.preferred_keys))
    local.update(configured)
    local = keys_for_transport(local, caps)
    local["AuthMethod"] = "CHAP" if auth_required else "None"
    local.update(dict(caps.forced_keys))
    return Negotiator(Role.TARGET, extra_rows=caps.login_keys, local=local, session_type=session_type,
                      leading=True, forced=dict(caps.forced_keys))


class TargetLogin:
    """One connection's login, driven PDU by PDU."""

    def __init__(self, server: TargetServer, conn: DatamoverConnection, portal_tpgt: int) -> None:
        self.server = server
        self.conn = conn
        self.tpgt = portal_tpgt
        self.stage = SECURITY
        self.first: LoginRequest | None = None
        self.initiator_name = ""
        self.target: TargetConfig | None = None
        self.session_type = "Normal"
        self.negotiator: Negotiator | None = None
        self.chap: TargetChap | None = None
        self.auth_required = False
        self.auth_done = False
        self.authenticated_user: str | None = None
        self.stat_sn = secrets.randbits(32)
        self.exp_cmd_sn = 0
        self.text = TextAssembler()
        self.tpgt_sent = False

    # ------------------------------------------------------------------ helpers
    def _response(self, req: LoginRequest, *, status: int = 0, transit: bool = False,
                  nsg: int = 0, data: bytes = b"", tsih: int = 0) -> LoginResponse:
        rsp = LoginResponse(
            itt=req.itt, transit=transit, cont=False, csg=req.csg if status == 0 else self.stage,
            nsg=nsg if transit else 0, version_max=0, version_active=0, isid=req.isid,
            tsih=tsih, stat_sn=self.stat_sn, exp_cmd_sn=self.exp_cmd_sn,
            max_cmd_sn=sn_add(self.exp_cmd_sn, self.server.config.queue_depth - 1) if status == 0 else self.exp_cmd_sn,
            status_class=status >> 8, status_detail=status & 0xFF, data=data,
        )
        self.stat_sn = sn_add(self.stat_sn, 1)
        return rsp

    async def _fail(self, req: LoginRequest | None, status: int, why: str) -> None:
        log.warning("login from %s (%s) refused: %s (status %#06x)", self.conn.peer,
                    self.initiator_name or "?", why, status)
        if req is not None:
            try:
                await self.conn.login_send(self._response(req, status=status))
            except (ConnectionError, OSError):
                pass
        raise LoginError(status, why)

    # ------------------------------------------------------------------ main loop
    async def run(self) -> LoginOutcome:
        """Drive the login to full feature phase or raise LoginError (response sent)."""
        # the whole login has one deadline: a peer trickling PDUs cannot hold it open
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.server.config.login_timeout
        exchanges = 0
        while True:
            exchanges += 1
            if exchanges > MAX_LOGIN_EXCHANGES:
                raise LoginError(LoginStatus.INITIATOR_ERROR, "too many login PDUs")
            timeout = max(0.0, deadline - loop.time())
            try:
                pdu = await self.conn.login_recv(timeout=timeout)
            except TimeoutError:
                raise LoginError(LoginStatus.INITIATOR_ERROR, "login timed out") from None
            except ConnectionClosed:
                raise LoginError(LoginStatus.INITIATOR_ERROR, "peer closed during login") from None
            except PduFormatError as exc:
                raise LoginError(LoginStatus.INITIATOR_ERROR, f"malformed login PDU: {exc}") from None
            if not isinstance(pdu, LoginRequest):
                # RFC 7143 6.1: only Login Requests are valid before full feature phase
                await self._fail(None, LoginStatus.INITIATOR_ERROR,
                                 f"{type(pdu).__name__} received during login")
            outcome = await self._handle(pdu)
            if outcome is not None:
                return outcome

    async def _handle(self, req: LoginRequest) -> LoginOutcome | None:
        if self.first is None:
            await self._check_first(req)
        elif (req.isid, req.tsih, req.cid) != (self.first.isid, self.first.tsih, self.first.cid):
            await self._fail(req, LoginStatus.INITIATOR_ERROR, "ISID/TSIH/CID changed during login")
        if req.csg not in (SECURITY, OPERATIONAL) or (req.transit and req.nsg not in (OPERATIONAL, FULL_FEATURE)):
            await self._fail(req, LoginStatus.INITIATOR_ERROR, f"invalid stage CSG={req.csg} NSG={req.nsg}")
        if req.transit and req.cont:
            await self._fail(req, LoginStatus.INITIATOR_ERROR, "T and C both set")
        if req.csg < self.stage:
            await self._fail(req, LoginStatus.INITIATOR_ERROR, "login stage went backwards")
        if req.csg == OPERATIONAL and self.stage == SECURITY:
            if self.auth_required and not self.auth_done:
                await self._fail(req, LoginStatus.AUTHENTICATION_FAILURE,
                                 "authentication required but the security stage was skipped")
            self.stage = OPERATIONAL
        try:
            self.text.add(req.data)
        except OverflowError:
            await self._fail(req, LoginStatus.INITIATOR_ERROR, "login text too long")
        if req.cont:
            # collect the continuation: answer with an empty response in the same stage
            await self.conn.login_send(self._response(req))
            return None
        try:
            pairs = decode_text(self.text.take())
        except TextFormatError as exc:
            await self._fail(req, LoginStatus.INITIATOR_ERROR, f"bad login text: {exc}")
        if self.negotiator is None:
            await self._declaratives(req, pairs)
        if req.csg == OPERATIONAL and self.auth_required and not self.auth_done:
            # checked again here: on a login that *starts* in the operational stage,
            # auth_required is only known once the declaratives above named the target
            await self._fail(req, LoginStatus.AUTHENTICATION_FAILURE,
                             "authentication required but the security stage was skipped")
        assert self.negotiator is not None
        negotiation_pairs, auth_keys = split_auth(pairs)
        answers: list[tuple[str, str]] = []
        try:
            answers += self.negotiator.handle(negotiation_pairs, req.csg)
        except NegotiationError as exc:
            await self._fail(req, exc.status, str(exc))
        if req.csg == SECURITY:
            answers += await self._security(req, auth_keys)
        elif auth_keys:
            await self._fail(req, LoginStatus.INITIATOR_ERROR, "CHAP keys outside the security stage")
        answers += self.negotiator.offers(req.csg)
        if not self.tpgt_sent and self.session_type == "Normal":
            answers.append(("TargetPortalGroupTag", str(self.tpgt)))
            self.tpgt_sent = True
        return await self._answer(req, answers)

    async def _check_first(self, req: LoginRequest) -> None:
        self.first = req
        self.exp_cmd_sn = req.cmd_sn
        if req.version_min > 0:
            await self._fail(req, LoginStatus.UNSUPPORTED_VERSION, f"version {req.version_min} unsupported")

    async def _declaratives(self, req: LoginRequest, pairs: list[tuple[str, str]]) -> None:
        keys = dict(pairs)
        name = keys.get("InitiatorName")
        if not name:
            await self._fail(req, LoginStatus.MISSING_PARAMETER, "InitiatorName missing")
        assert name is not None
        try:
            self.initiator_name = check_iscsi_name(name)
        except ValueError as exc:
            await self._fail(req, LoginStatus.INITIATOR_ERROR, str(exc))
        self.session_type = keys.get("SessionType", "Normal")
        if self.session_type not in ("Normal", "Discovery"):
            await self._fail(req, LoginStatus.SESSION_TYPE_NOT_SUPPORTED, f"SessionType {self.session_type!r}")
        server = self.server
        if self.session_type == "Normal":
            target_name = keys.get("TargetName")
            if not target_name:
                await self._fail(req, LoginStatus.MISSING_PARAMETER, "TargetName missing in a Normal session")
            assert target_name is not None
            target = server.find_target(target_name)
            if target is None:
                await self._fail(req, LoginStatus.NOT_FOUND, f"no target named {target_name!r}")
            assert target is not None
            if target.acl and self.initiator_name not in {check_iscsi_name(n) for n in target.acl}:
                await self._fail(req, LoginStatus.AUTHORIZATION_FAILURE,
                                 f"{self.initiator_name} is not in the ACL of {target.iqn}")
            self.target = target
            chap = target.chap
        else:
            chap = server.config.discovery_chap
        if req.tsih != 0 and not server.session_exists(req.tsih):
            await self._fail(req, LoginStatus.SESSION_DOES_NOT_EXIST, f"TSIH {req.tsih} unknown")
        if req.tsih != 0:
            # one connection per session (MaxConnections=1): no connection may be added
            await self._fail(req, LoginStatus.TOO_MANY_CONNECTIONS, "sessions have one connection")
        if server.session_count() >= server.config.max_sessions:
            await self._fail(req, LoginStatus.OUT_OF_RESOURCES, "session limit reached")
        self.auth_required = chap is not None
        if chap is not None:
            mutual = None
            if chap.mutual_user and chap.mutual_secret is not None:
                from datamover.auth import ChapSecret

                mutual = ChapSecret(chap.mutual_user, chap.mutual_secret)
            expected_user, expected_secret = chap.user, chap.secret
            self.chap = TargetChap(lambda user: expected_secret if user == expected_user else None, mutual=mutual)
        self.negotiator = target_negotiator(server.config.keys, server.transport_capabilities,
                                            self.session_type, self.auth_required)

    async def _security(self, req: LoginRequest, auth_keys: dict[str, str]) -> list[tuple[str, str]]:
        assert self.negotiator is not None
        agreed_method = self.negotiator.agreed().get("AuthMethod", "None")
        if not self.auth_required:
            if auth_keys:
                await self._fail(req, LoginStatus.INITIATOR_ERROR, "CHAP keys but AuthMethod=None")
            self.auth_done = True
            return []
        if agreed_method != "CHAP":
            if req.transit or auth_keys:
                await self._fail(req, LoginStatus.AUTHENTICATION_FAILURE, "CHAP required by this target")
            return []
        if not auth_keys:
            return []
        assert self.chap is not None
        try:
            out = self.chap.step(auth_keys)
        except AuthenticationError as exc:
            await self._fail(req, exc.status, f"CHAP: {exc}")
            raise  # unreachable: _fail raises
        if self.chap.done:
            self.auth_done = True
            self.authenticated_user = auth_keys.get("CHAP_N")
        return out

    async def _answer(self, req: LoginRequest, answers: list[tuple[str, str]]) -> LoginOutcome | None:
        assert self.negotiator is not None
        transit = False
        nsg = 0
        if req.transit:
            if req.csg == SECURITY:
                # RFC 7143 6.2: the target stays in the security stage until authenticated
                transit = self.auth_done or not self.auth_required
            else:
                transit = not self.negotiator.pending(OPERATIONAL)
            nsg = req.nsg if transit else 0
        data = encode_text(answers)
        if transit and nsg == FULL_FEATURE:
            return await self._finish(req, data)
        if transit:
            self.stage = nsg
        await self.conn.login_send(self._response(req, transit=transit, nsg=nsg, data=data))
        return None

    async def _finish(self, req: LoginRequest, data: bytes) -> LoginOutcome:
        assert self.negotiator is not None
        agreed = self.negotiator.agreed()
        tsih = self.server.allocate_tsih()
        final = self._response(req, transit=True, nsg=FULL_FEATURE, data=data, tsih=tsih)
        return LoginOutcome(
            initiator_name=self.initiator_name, target=self.target, isid=req.isid, tsih=tsih,
            cid=req.cid, agreed=agreed, exp_cmd_sn=self.exp_cmd_sn, stat_sn=self.stat_sn,
            final_response=final, authenticated_user=self.authenticated_user,
        )

    async def out_of_resources(self, req: LoginResponse) -> None:
        """Allocate_Connection_Resources failed: answer class 3 detail 2 (RFC 5047 11.1)."""
        req.status_class, req.status_detail = 0x03, 0x02
        req.transit, req.nsg, req.tsih = False, 0, 0
        try:
            await self.conn.login_send(req)
        except (ConnectionError, OSError):
            pass
