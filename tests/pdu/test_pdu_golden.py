"""Golden byte vectors, written out by hand from the RFC 7143 §11 layouts."""

from __future__ import annotations

import pytest

from datamover.pdu import (
    R2T,
    AsyncMessage,
    DataIn,
    DataOut,
    LoginRequest,
    LoginResponse,
    LoginStatus,
    LogoutRequest,
    LogoutResponse,
    NopIn,
    NopOut,
    Reject,
    RejectReason,
    ScsiCommand,
    ScsiResponse,
    SnackRequest,
    Stage,
    TextRequest,
    TextResponse,
    TmfFunction,
    TmfRequest,
    TmfResponse,
    decode,
    decode_pdu,
    encode_bytes,
    encode_lun,
)


def hx(text: str) -> bytes:
    return bytes.fromhex(text.replace("|", ""))


ZERO16 = "00" * 16

#: RFC 3720 B.4: "iSCSI - SCSI Read (10) Command PDU" (its ITT bytes are 14 00 00 00)
READ10_BHS = hx(
    "01c00000 00000000 00000000 00000000"
    "14000000 00000400 00000014 00000018"
    "28000000 00000000 02000000 00000000"
)
READ10_CDB = hx("28000000 00000000 0200")


def test_login_request_byte_layout() -> None:
    text = b"SessionType=Discovery\0"  # 22 bytes, so 2 pad bytes
    pdu = LoginRequest(
        transit=True, csg=Stage.OPERATIONAL, nsg=Stage.FULL_FEATURE, isid=0x400001370000, itt=1, cid=2,
        cmd_sn=5, exp_stat_sn=7, data=text,
    )  # fmt: skip
    expected = hx(
        "43870000 00000016 40000137 00000000"  # I|0x03, T|CSG=1|NSG=3, vmax, vmin; DSL=22; ISID; TSIH
        "00000001 00020000 00000005 00000007"  # ITT, CID, CmdSN, ExpStatSN
        + ZERO16
    ) + text + b"\0\0"
    wire = encode_bytes(pdu)
    assert wire[0] == 0x43
    assert wire == expected
    assert decode_pdu(expected)[0] == pdu


def test_scsi_read10_matches_rfc3720_vector() -> None:
    pdu = ScsiCommand(itt=0x14000000, final=True, read=True, attr=0, expected_data_transfer_length=0x400,
                      cmd_sn=0x14, exp_stat_sn=0x18, cdb=READ10_CDB)  # fmt: skip
    assert encode_bytes(pdu) == READ10_BHS
    back = decode(READ10_BHS)
    assert isinstance(back, ScsiCommand)
    assert back.read and back.final and not back.write
    assert back.cdb == READ10_CDB + bytes(6)  # a short CDB comes back padded to 16
    # RFC 3720 B.4 gives CRC 0xd9963a56 for this PDU, sent as 56 3a 96 d9
    assert encode_bytes(pdu, header_digest=True)[48:] == hx("563a96d9")


def test_extended_cdb_goes_into_ahs_type_1() -> None:
    cdb = bytes([0x7F]) + bytes(range(1, 32))  # a 32-byte variable-length CDB
    pdu = ScsiCommand(itt=2, write=True, attr=1, cdb=cdb)
    expected = hx(
        "01a10000 05000000 00000000 00000000"  # F|W|SIMPLE; TotalAHSLength = 5 words
        "00000002 00000000 00000000 00000000"
    ) + cdb[:16] + hx("00110100") + cdb[16:]  # AHSLength 17 = 32 - 15, type 1, reserved
    assert encode_bytes(pdu) == expected
    assert decode(expected) == pdu


def test_bidi_read_length_ahs_type_2() -> None:
    pdu = ScsiCommand(itt=3, read=True, write=True, cdb=bytes(16), bidi_read_length=0x1000)
    wire = encode_bytes(pdu)
    assert wire[4] == 2  # one 8-byte AHS
    assert wire[48:] == hx("00050200 00001000")
    assert decode(wire) == pdu


def test_data_in_with_status() -> None:
    pdu = DataIn(final=True, status_present=True, underflow=True, status=0, lun=encode_lun(1), itt=0x10,
                 stat_sn=0x21, exp_cmd_sn=0x22, max_cmd_sn=0x41, data_sn=0, buffer_offset=0x200, residual=0x1F8,
                 data=b"ABCDEFGH")  # fmt: skip
    expected = hx(
        "25830000 00000008 00010000 00000000"
        "00000010 ffffffff 00000021 00000022"
        "00000041 00000000 00000200 000001f8"
    ) + b"ABCDEFGH"
    assert encode_bytes(pdu) == expected
    assert decode_pdu(expected)[0] == pdu


def test_r2t_with_flat_lun() -> None:
    pdu = R2T(lun=encode_lun(300), itt=7, ttt=0x1234, stat_sn=9, exp_cmd_sn=10, max_cmd_sn=20, r2t_sn=1,
              buffer_offset=0x10000, desired_data_transfer_length=0x40000)  # fmt: skip
    expected = hx(
        "31800000 00000000 412c0000 00000000"
        "00000007 00001234 00000009 0000000a"
        "00000014 00000001 00010000 00040000"
    )
    assert encode_bytes(pdu) == expected
    assert decode(expected) == pdu


def test_reject_quotes_a_header() -> None:
    pdu = Reject(reason=RejectReason.INVALID_PDU_FIELD, stat_sn=4, exp_cmd_sn=5, max_cmd_sn=6, data=READ10_BHS)
    expected = hx(
        "3f800900 00000030 00000000 00000000"
        "ffffffff 00000000 00000004 00000005"
        "00000006 00000000 00000000 00000000"
    ) + READ10_BHS
    assert encode_bytes(pdu) == expected
    assert decode_pdu(expected)[0] == pdu


def test_tmf_lun_reset_and_nop_in_ping() -> None:
    tmf = TmfRequest(immediate=True, function=TmfFunction.LOGICAL_UNIT_RESET, lun=encode_lun(2), itt=9, cmd_sn=3,
                     exp_stat_sn=4, ref_cmd_sn=0, exp_data_sn=0)  # fmt: skip
    assert encode_bytes(tmf) == hx(
        "42850000 00000000 00020000 00000000"
        "00000009 ffffffff 00000003 00000004"
        + ZERO16
    )
    ping = NopIn(ttt=0xABCD, stat_sn=1, exp_cmd_sn=2, max_cmd_sn=3)
    assert encode_bytes(ping) == hx(
        "20800000 00000000 00000000 00000000"
        "ffffffff 0000abcd 00000001 00000002"
        "00000003 00000000 00000000 00000000"
    )


def test_login_response_failure_status_and_logout_times() -> None:
    status = LoginStatus.AUTHENTICATION_FAILURE
    rsp = LoginResponse(isid=0x800000000001, tsih=0, itt=1, stat_sn=0, exp_cmd_sn=1, max_cmd_sn=1,
                        status_class=status.status_class, status_detail=status.status_detail)  # fmt: skip
    wire = encode_bytes(rsp)
    assert wire[:4] == hx("23000000")
    assert wire[36:38] == hx("0201")
    assert decode(wire).status == LoginStatus.AUTHENTICATION_FAILURE  # type: ignore[attr-defined]
    logout = LogoutResponse(itt=5, stat_sn=1, exp_cmd_sn=2, max_cmd_sn=3, time2wait=2, time2retain=20)
    assert encode_bytes(logout)[40:44] == hx("00020014")


@pytest.mark.parametrize(
    ("status", "klass", "detail"), [(LoginStatus.SUCCESS, 0, 0), (LoginStatus.NOT_FOUND, 2, 3), (LoginStatus.OUT_OF_RESOURCES, 3, 2)]
)
def test_login_status_split(status: LoginStatus, klass: int, detail: int) -> None:
    assert (status.status_class, status.status_detail) == (klass, detail)


# One PDU per layout with a distinct value in every field, so that a field packed at the
# wrong offset cannot hide behind a round trip (encoder and decoder share the layout).
FIELD_VECTORS = [
    (
        NopOut(immediate=True, lun=encode_lun(3), itt=0x11, cmd_sn=0x21, exp_stat_sn=0x31, data=b"ping"),
        "40800000 00000004 00030000 00000000 | 00000011 ffffffff 00000021 00000031 |" + ZERO16 + "70696e67",
    ),
    (
        ScsiCommand(write=True, attr=2, lun=encode_lun(1), itt=0x11, expected_data_transfer_length=0x22, cmd_sn=0x33,
                    exp_stat_sn=0x44, cdb=b"\x2a" + bytes(15)),  # fmt: skip
        "01a20000 00000000 00010000 00000000 | 00000011 00000022 00000033 00000044 | 2a000000" + "00" * 12,
    ),
    (
        ScsiResponse(underflow=True, bidi_overflow=True, response=1, status=2, itt=0x11, snack_tag=0x22, stat_sn=0x33,
                     exp_cmd_sn=0x44, max_cmd_sn=0x55, exp_data_sn=0x66, bidi_read_residual=0x77, residual=0x88),  # fmt: skip
        "21920102 00000000 00000000 00000000 | 00000011 00000022 00000033 00000044 |"
        "00000055 00000066 00000077 00000088",
    ),
    (
        TmfRequest(function=1, itt=0x11, referenced_task_tag=0x22, cmd_sn=0x33, exp_stat_sn=0x44, ref_cmd_sn=0x55,
                   exp_data_sn=0x66),  # fmt: skip
        "02810000 00000000 00000000 00000000 | 00000011 00000022 00000033 00000044 |"
        "00000055 00000066 00000000 00000000",
    ),
    (
        TmfResponse(response=1, itt=0x11, stat_sn=0x33, exp_cmd_sn=0x44, max_cmd_sn=0x55),
        "22800100 00000000 00000000 00000000 | 00000011 00000000 00000033 00000044 |"
        "00000055 00000000 00000000 00000000",
    ),
    (
        LoginResponse(transit=True, csg=1, nsg=3, version_max=1, version_active=2, isid=0x400001370000, tsih=0x1234,
                      itt=1, stat_sn=0x10, exp_cmd_sn=0x20, max_cmd_sn=0x30, status_class=2, status_detail=7),  # fmt: skip
        "23870102 00000000 40000137 00001234 | 00000001 00000000 00000010 00000020 |"
        "00000030 02070000 00000000 00000000",
    ),
    (
        TextRequest(final=False, cont=True, itt=0x11, ttt=0x22, cmd_sn=0x33, exp_stat_sn=0x44),
        "04400000 00000000 00000000 00000000 | 00000011 00000022 00000033 00000044 |" + ZERO16,
    ),
    (
        TextResponse(itt=0x11, stat_sn=0x33, exp_cmd_sn=0x44, max_cmd_sn=0x55, data=b"A=1\0B"),
        "24800000 00000005 00000000 00000000 | 00000011 ffffffff 00000033 00000044 |"
        "00000055 00000000 00000000 00000000 | 413d3100 42000000",
    ),
    (
        DataOut(lun=encode_lun(1), itt=0x11, ttt=0x22, exp_stat_sn=0x44, data_sn=0x66, buffer_offset=0x77),
        "05800000 00000000 00010000 00000000 | 00000011 00000022 00000000 00000044 |"
        "00000000 00000066 00000077 00000000",
    ),
    (
        LogoutRequest(immediate=True, reason=1, itt=0x11, cid=0x2233, cmd_sn=0x44, exp_stat_sn=0x55),
        "46810000 00000000 00000000 00000000 | 00000011 22330000 00000044 00000055 |" + ZERO16,
    ),
    (
        LogoutResponse(response=2, itt=0x11, stat_sn=0x33, exp_cmd_sn=0x44, max_cmd_sn=0x55, time2wait=0x66,
                       time2retain=0x77),  # fmt: skip
        "26800200 00000000 00000000 00000000 | 00000011 00000000 00000033 00000044 |"
        "00000055 00000000 00660077 00000000",
    ),
    (
        AsyncMessage(lun=encode_lun(2), stat_sn=0x33, exp_cmd_sn=0x44, max_cmd_sn=0x55, async_event=1,
                     async_vcode=0x66, parameter1=0x0102, parameter2=0x0304, parameter3=0x0506),  # fmt: skip
        "32800000 00000000 00020000 00000000 | ffffffff 00000000 00000033 00000044 |"
        "00000055 01660102 03040506 00000000",
    ),
    (
        Reject(reason=4, stat_sn=0x33, exp_cmd_sn=0x44, max_cmd_sn=0x55, data_sn=0x66),
        "3f800400 00000000 00000000 00000000 | ffffffff 00000000 00000033 00000044 |"
        "00000055 00000066 00000000 00000000",
    ),
    (
        SnackRequest(type=1, itt=0x11, ttt=0x22, exp_stat_sn=0x44, beg_run=0x77, run_length=0x88),
        "10810000 00000000 00000000 00000000 | 00000011 00000022 00000000 00000044 |"
        "00000000 00000000 00000077 00000088",
    ),
]


@pytest.mark.parametrize(("pdu", "wire"), FIELD_VECTORS, ids=[type(p).__name__ for p, _ in FIELD_VECTORS])
def test_every_field_at_its_offset(pdu: object, wire: str) -> None:
    expected = hx(wire.replace(" ", ""))
    assert encode_bytes(pdu) == expected  # type: ignore[arg-type]
    assert decode_pdu(expected)[0] == pdu
