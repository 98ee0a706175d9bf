"""The initiator side of the login phase (RFC 7143 6, 11.12-11.13)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from datamover.auth import AuthenticationError, ChapSecret, InitiatorChap
from datamover.capabilities import TransportCapabilities
from datamover.di import ConnectionClosed, DatamoverConnection, Role
from datamover.initiator.config import InitiatorConfig
from datamover.negotiation import NegotiationError, Negotiator
from datamover.pdu import LoginRequest, LoginResponse, LoginStatus, PduFormatError
from datamover.pdu.text import TextFormatError, decode_text, encode_text
from datamover.session.errors import LoginError
from datamover.session.params import DEFAULT_OPERATIONAL_KEYS, keys_for_transport
from datamover.session.serial import sn_add
from datamover.session.text_login import TextAssembler, split_auth

log = logging.getLogger("datamover.initiator.login")

SECURITY, OPERATIONAL, FULL_FEATURE = 0, 1, 3
#: a login that needs more round trips than this is a peer in a loop
MAX_LOGIN_EXCHANGES = 64


@dataclass(slots=True)
class LoginResult:
    agreed: dict[str, str]
    tsih: int
    stat_sn: int  # StatSN of the final login response
    exp_cmd_sn: int
    max_cmd_sn: int
    final_response: LoginResponse
    target_portal_group_tag: int | None


async def initiator_login(
    conn: DatamoverConnection,
    config: InitiatorConfig,
    caps: TransportCapabilities,
    *,
    target_name: str | None,
    session_type: str = "Normal",
    tsih: int = 0,
    cid: int = 0,
    cmd_sn: int = 1,
    itt: int = 0,
    chap_algorithms: tuple[int, ...] | None = None,
) -> LoginResult:
    """Log in over ``conn``'s login channel. Raises LoginError on any refusal.

    Follows RFC 5047 11.1: Allocate_Connection_Resources happens before the Login Request
    that asks for full feature phase; the caller then calls Notice_Key_Values and
    Enable_Datamover, or Deallocate_Connection_Resources if the login failed after it.
    """
    use_chap = config.chap_user is not None and config.chap_secret is not None
    chap: InitiatorChap | None = None
    if use_chap:
        mutual = None
        if config.mutual_user and config.mutual_secret is not None:
            mutual = ChapSecret(config.mutual_user, config.mutual_secret)
        assert config.chap_user is not None and config.chap_secret is not None
        chap = InitiatorChap(ChapSecret(config.chap_user, config.chap_secret), mutual=mutual,
                             algorithms=chap_algorithms or config.chap_algorithms)
    local = dict(DEFAULT_OPERATIONAL_KEYS)
    local.update(dict(caps.preferred_keys))
    local.update(config.keys)
    local.update(dict(caps.forced_keys))
    local = keys_for_transport(local, caps)
    local["AuthMethod"] = "CHAP,None" if use_chap else "None"
    negotiator = Negotiator(Role.INITIATOR, extra_rows=caps.login_keys, local=local,
                            session_type=session_type, leading=tsih == 0, forced=dict(caps.forced_keys))

    declaratives: list[tuple[str, str]] = [("InitiatorName", config.name)]
    if config.alias:
        declaratives.append(("InitiatorAlias", config.alias))
    if session_type == "Discovery":
        pass  # the negotiator declares SessionType=Discovery itself in its first offers
    else:
        if not target_name:
            raise LoginError(LoginStatus.MISSING_PARAMETER, "a Normal session needs a target name")
        declaratives.append(("SessionType", "Normal"))
        declaratives.append(("TargetName", target_name))

    stage = SECURITY
    exp_stat_sn = 0
    first = True
    chap_started = False
    chap_finished = not use_chap
    sent_chap_response = False
    allocated = False
    tpgt: int | None = None
    outgoing: list[tuple[str, str]] = []
    assembler = TextAssembler()

    async def exchange(pairs: list[tuple[str, str]], transit: bool, nsg: int) -> tuple[LoginResponse, list[tuple[str, str]]]:
        nonlocal exp_stat_sn
        data = encode_text(pairs)
        # RFC 7143 6.1: text longer than the peer accepts in one PDU is sent with C=1
        limit = 8192
        chunks = [data[i:i + limit] for i in range(0, len(data), limit)] or [b""]
        response: LoginResponse | None = None
        for index, chunk in enumerate(chunks):
            more = index < len(chunks) - 1
            req = LoginRequest(
                itt=itt, transit=transit and not more, cont=more, csg=stage, nsg=nsg if transit and not more else 0,
                version_max=0, version_min=0, isid=config.isid, tsih=tsih, cid=cid,
                cmd_sn=cmd_sn, exp_stat_sn=exp_stat_sn, data=chunk,
            )
            await conn.login_send(req)
            response = await _receive(conn, config.login_timeout)
            exp_stat_sn = sn_add(response.stat_sn, 1)
            _check_status(response)
        assert response is not None
        # collect a continued response: answer each C=1 with an empty request
        while response.cont:
            assembler.add(response.data)
            req = LoginRequest(itt=itt, transit=False, cont=False, csg=stage, nsg=0, version_max=0,
                               version_min=0, isid=config.isid, tsih=tsih, cid=cid,
                               cmd_sn=cmd_sn, exp_stat_sn=exp_stat_sn)
            await conn.login_send(req)
            response = await _receive(conn, config.login_timeout)
            exp_stat_sn = sn_add(response.stat_sn, 1)
            _check_status(response)
        assembler.add(response.data)
        try:
            pairs_in = decode_text(assembler.take())
        except TextFormatError as exc:
            raise LoginError(LoginStatus.INITIATOR_ERROR, f"target sent bad login text: {exc}") from None
        return response, pairs_in

    try:
        for _ in range(MAX_LOGIN_EXCHANGES):
            pairs = list(declaratives) if first else []
            first = False
            pairs += outgoing
            outgoing = []
            pairs += negotiator.offers(stage)
            if stage == SECURITY and chap is not None and chap_started is False and negotiator.agreed().get("AuthMethod") == "CHAP":
                pairs += chap.first()
                chap_started = True
            if stage == SECURITY:
                # T=1 goes with the PDU that carries our CHAP response (RFC 7143 12.1.3)
                sending_response = any(key == "CHAP_R" for key, _ in pairs)
                sent_chap_response = sent_chap_response or sending_response
                transit = chap_finished or sending_response
                nsg = OPERATIONAL
            else:
                transit = not negotiator.pending(OPERATIONAL)
                nsg = FULL_FEATURE
            if transit and nsg == FULL_FEATURE and not allocated:
                # early allocation (RFC 5047 11.1 step 4); the keys settled so far tell the
                # datamover how to size its resources (RFC 7145 5.1 calls Notice first)
                conn.notice_key_values(negotiator.agreed())
                if not await conn.allocate_connection_resources():
                    raise LoginError(LoginStatus.OUT_OF_RESOURCES, "allocate_connection_resources failed")
                allocated = True
            response, received = await exchange(pairs, transit, nsg)
            if response.csg != stage:
                raise LoginError(LoginStatus.INITIATOR_ERROR, f"target answered in stage {response.csg}, not {stage}")
            negotiation_pairs, auth_keys = split_auth(received)
            for key, value in negotiation_pairs:
                if key == "TargetPortalGroupTag":
                    try:
                        tpgt = int(value)
                    except ValueError:
                        raise LoginError(LoginStatus.INITIATOR_ERROR, f"bad TargetPortalGroupTag {value!r}") from None
            try:
                outgoing = negotiator.handle(
                    [(k, v) for k, v in negotiation_pairs if k != "TargetPortalGroupTag"], stage)
            except NegotiationError as exc:
                raise LoginError(exc.status, f"negotiation failed: {exc}") from None
            if stage == SECURITY:
                method = negotiator.agreed().get("AuthMethod", "None")
                if use_chap and method == "None" and response.transit:
                    # the target accepted no authentication: acceptable, CHAP was optional
                    chap_finished = True
                if auth_keys:
                    if chap is None:
                        raise LoginError(LoginStatus.INITIATOR_ERROR, "target sent CHAP keys we did not ask for")
                    try:
                        outgoing += chap.step(auth_keys)
                    except AuthenticationError as exc:
                        raise LoginError(exc.status, f"CHAP: {exc}") from None
                    if chap.done:
                        chap_finished = True
                if use_chap and method == "CHAP" and not chap_started:
                    continue
            if response.transit:
                if response.nsg == FULL_FEATURE:
                    if stage == SECURITY and not chap_finished:
                        raise LoginError(LoginStatus.AUTHENTICATION_FAILURE, "target skipped authentication")
                    agreed = negotiator.agreed()
                    return LoginResult(agreed=agreed, tsih=response.tsih, stat_sn=response.stat_sn,
                                       exp_cmd_sn=response.exp_cmd_sn, max_cmd_sn=response.max_cmd_sn,
                                       final_response=response, target_portal_group_tag=tpgt)
                if response.nsg == OPERATIONAL and stage == SECURITY:
                    if use_chap and negotiator.agreed().get("AuthMethod") == "CHAP":
                        mutual_pending = config.mutual_user is not None and not (chap is not None and chap.done)
                        if not sent_chap_response or mutual_pending:
                            raise LoginError(LoginStatus.AUTHENTICATION_FAILURE,
                                             "target left the security stage before CHAP completed")
                        chap_finished = True
                    stage = OPERATIONAL
                    continue
                raise LoginError(LoginStatus.INITIATOR_ERROR, f"target chose invalid NSG {response.nsg}")
        raise LoginError(LoginStatus.INITIATOR_ERROR, "login did not converge")
    except BaseException:
        if allocated:
            conn.deallocate_connection_resources()
        raise


async def _receive(conn: DatamoverConnection, timeout: float) -> LoginResponse:
    try:
        pdu = await conn.login_recv(timeout=timeout)
    except TimeoutError:
        raise LoginError(LoginStatus.TARGET_ERROR, "no login response within the timeout") from None
    except ConnectionClosed:
        raise LoginError(LoginStatus.TARGET_ERROR, "target closed the connection during login") from None
    except PduFormatError as exc:
        raise LoginError(LoginStatus.TARGET_ERROR, f"malformed login response: {exc}") from None
    if not isinstance(pdu, LoginResponse):
        raise LoginError(LoginStatus.TARGET_ERROR, f"{type(pdu).__name__} received during login")
    return pdu


def _check_status(response: LoginResponse) -> None:
    status = (response.status_class << 8) | response.status_detail
    if status == 0:
        return
    redirect = None
    if response.status_class == 1:
        try:
            redirect = dict(decode_text(response.data)).get("TargetAddress")
        except TextFormatError:
            redirect = None
    try:
        name = LoginStatus(status).name.lower().replace("_", " ")
    except ValueError:
        name = "unknown status"
    raise LoginError(status, name, redirect)
