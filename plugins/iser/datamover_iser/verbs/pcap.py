"""Write what the soft provider carries as RoCEv2 frames in a pcap, with a correct ICRC.

Each message becomes what a RoCEv2 NIC would put on the wire: Ethernet / IPv4 / UDP 4791 /
BTH [/ RETH | AETH | IETH | ImmDt] / payload / ICRC, split into FIRST/MIDDLE/LAST packets at
the path MTU; each connection starts with the IB CM REQ / REP / RTU MADs (UD SEND_ONLY to
QP 1 with a DETH) and ends with DREQ / DREP, so Wireshark/tshark can tie the QPs to the
rdma_cm service (and decode iSER when the port is an iSER port, 3260 by default). Run tshark
with ``--disable-heuristic rpcrdma_infiniband`` (rdma-without-hardware.md §5).

tshark does not check the ICRC; ``icrc`` here is the project's own implementation (CRC32
over the masked IP/UDP/BTH + payload, rxe's algorithm) and ``check_icrc`` verifies a frame.
Addresses that are not IPv4 (the shm fabric's names) are mapped onto 192.0.2.0/24.
"""

from __future__ import annotations

import ipaddress
import itertools
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from .soft.wire import CM_KINDS, CmBody, Kind, Msg, Nak

if TYPE_CHECKING:
    from .soft.link import Link

ROCE_PORT = 4791
MTU = 4096
GSI_QKEY = 0x80010000

PCAP_GLOBAL = struct.Struct("<IHHiIII")
PCAP_RECORD = struct.Struct("<IIII")
ETH = struct.Struct("!6s6sH")
IPV4 = struct.Struct("!BBHHHBBH4s4s")
UDP = struct.Struct("!HHHH")
BTH = struct.Struct("!BBHII")  # opcode, SE|M|pad|tver, pkey, rsvd8|destqp, A|rsvd7|psn
RETH = struct.Struct("!QII")
AETH = struct.Struct("!I")
IETH = struct.Struct("!I")
DETH = struct.Struct("!II")
MAD_HDR = struct.Struct("!BBBBHHQHHI")

# RC opcodes (IBA table 38)
SEND_FIRST, SEND_MIDDLE, SEND_LAST, SEND_LAST_IMM, SEND_ONLY, SEND_ONLY_IMM = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05
WRITE_FIRST, WRITE_MIDDLE, WRITE_LAST, WRITE_ONLY = 0x06, 0x07, 0x08, 0x0A
READ_REQUEST, READ_RESP_FIRST, READ_RESP_MIDDLE, READ_RESP_LAST, READ_RESP_ONLY = 0x0C, 0x0D, 0x0E, 0x0F, 0x10
ACKNOWLEDGE = 0x11
SEND_LAST_INV, SEND_ONLY_INV = 0x16, 0x17
UD_SEND_ONLY = 0x64

CM_ATTR = {Kind.CM_REQ: 0x0010, Kind.CM_REJ: 0x0012, Kind.CM_REP: 0x0013, Kind.CM_RTU: 0x0014,
           Kind.CM_DREQ: 0x0015, Kind.CM_DREP: 0x0016}
NAK_SYNDROME = {Nak.INV_REQ: 0x61, Nak.ACCESS: 0x62, Nak.OP: 0x63}


def icrc(ip_to_payload: bytes | bytearray | memoryview) -> bytes:
    """RoCEv2/IPv4 ICRC of a packet given from its IP header to the end of the payload."""
    b = bytearray(ip_to_payload)
    ihl = (b[0] & 0x0F) * 4
    b[1] = 0xFF  # TOS
    b[8] = 0xFF  # TTL
    b[10:12] = b"\xff\xff"  # IP header checksum
    b[ihl + 6:ihl + 8] = b"\xff\xff"  # UDP checksum
    b[ihl + 8 + 4] = 0xFF  # BTH resv8a
    return struct.pack("<I", zlib.crc32(b"\xff" * 8 + bytes(b)) & 0xFFFFFFFF)


def check_icrc(frame: bytes) -> bool:
    """Does this Ethernet frame's trailing ICRC match its contents?"""
    ip = frame[ETH.size:]
    return icrc(ip[:-4]) == ip[-4:]


def _ip_checksum(header: bytes) -> int:
    s = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _gid(ip: str) -> bytes:
    return ipaddress.IPv6Address("::ffff:" + ip).packed


@dataclass
class _Conn:
    """What the capture knows about one connection (both directions)."""

    ini_ip: str
    tgt_ip: str
    port: int
    comm_ids: tuple[int, int]
    tid: int
    qpn: dict[str, int] = field(default_factory=lambda: {"active": 0, "passive": 0})
    next_psn: dict[str, int] = field(default_factory=lambda: {"active": 0, "passive": 0})
    msg_psns: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)
    msn: dict[str, int] = field(default_factory=lambda: {"active": 0, "passive": 0})


class PcapWriter:
    """A capture tap for ``SoftProvider(capture=...)``; also usable for hand-made frames."""

    def __init__(self, path_or_file: str | IO[bytes], mtu: int = MTU) -> None:
        self._own = isinstance(path_or_file, str)
        self._f: IO[bytes] = open(path_or_file, "wb") if isinstance(path_or_file, str) else path_or_file
        self._f.write(PCAP_GLOBAL.pack(0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        self.mtu = mtu
        self.frames = 0
        self._conns: dict[tuple[Any, Any], _Conn] = {}
        self._hosts: dict[str, str] = {}
        self._host_pool = itertools.count(10)
        self._comm = itertools.count(0x1000)
        self._ip_id = itertools.count(1)

    # ------------------------------------------------------------------ addressing
    def _ip(self, host: str, fallback_index: int | None = None) -> str:
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            if host not in self._hosts:
                self._hosts[host] = f"192.0.2.{next(self._host_pool) % 250 + 1}"
            return self._hosts[host]

    def _conn(self, link: "Link") -> tuple[_Conn, str]:
        active, passive = (link.local, link.remote) if link.side == "active" else (link.remote, link.local)
        key = (active, passive)
        conn = self._conns.get(key)
        if conn is None:
            tgt = self._ip(passive[0])
            ini = self._ip(f"{active[0]}:{active[1]}")  # a distinct address per client endpoint
            a, b = next(self._comm), next(self._comm)
            conn = _Conn(ini, tgt, passive[1], (a, b), (a << 16) | b)
            self._conns[key] = conn
        return conn, link.side

    @staticmethod
    def _mac(ip: str) -> bytes:
        return b"\x02\x00" + ipaddress.IPv4Address(ip).packed

    # ------------------------------------------------------------------ frames
    def frame(self, src_ip: str, dst_ip: str, bth_and_rest: bytes, sport: int, corrupt: bool = False) -> bytes:
        """Ethernet/IPv4/UDP around a BTH+headers+payload, with the ICRC appended."""
        udp_len = UDP.size + len(bth_and_rest) + 4
        total = 20 + udp_len
        iph = bytearray(IPV4.pack(0x45, 0, total, next(self._ip_id) & 0xFFFF, 0x4000, 64, 17, 0,
                                  ipaddress.IPv4Address(src_ip).packed, ipaddress.IPv4Address(dst_ip).packed))
        iph[10:12] = struct.pack("!H", _ip_checksum(bytes(iph)))
        body = bytes(iph) + UDP.pack(sport, ROCE_PORT, udp_len, 0) + bth_and_rest
        crc = icrc(body)
        if corrupt:
            crc = bytes(x ^ 0xFF for x in crc)
        return ETH.pack(self._mac(dst_ip), self._mac(src_ip), 0x0800) + body + crc

    def write_frame(self, frame: bytes, ts: float | None = None) -> None:
        ts = time.time() if ts is None else ts
        sec = int(ts)
        self._f.write(PCAP_RECORD.pack(sec, int((ts - sec) * 1e6), len(frame), len(frame)))
        self._f.write(frame)
        self.frames += 1

    @staticmethod
    def bth(opcode: int, dqpn: int, psn: int, ackreq: bool = False, se: bool = False, pad: int = 0) -> bytes:
        flags = (0x80 if se else 0) | (pad & 3) << 4
        return BTH.pack(opcode, flags, 0xFFFF, dqpn & 0xFFFFFF, (0x80000000 if ackreq else 0) | (psn & 0xFFFFFF))

    # ------------------------------------------------------------------ the tap
    def record(self, link: "Link", msg: Msg, corrupt: bool = False) -> None:
        conn, side = self._conn(link)
        if msg.kind in CM_KINDS:
            self._record_cm(conn, side, msg, corrupt)
            return
        if msg.kind not in _DATA_KINDS:
            return  # fabric-internal messages and the iWARP TERMINATE have no RoCE form
        peer = "passive" if side == "active" else "active"
        src = conn.ini_ip if side == "active" else conn.tgt_ip
        dst = conn.tgt_ip if side == "active" else conn.ini_ip
        dqpn = conn.qpn[peer]
        sport = 0xC000 | (conn.qpn[side] & 0x3FFF)
        for pkt in self._packets(conn, side, peer, msg, dqpn):
            self.write_frame(self.frame(src, dst, pkt, sport, corrupt))

    def _payload(self, msg: Msg) -> bytes:
        if msg.chunks:
            return b"".join(bytes(c.view) for c in msg.chunks)
        if msg.capture:
            return b"".join(bytes(v) for v in msg.capture)
        return b""

    def _packets(self, conn: _Conn, side: str, peer: str, msg: Msg, dqpn: int) -> list[bytes]:
        kind = msg.kind
        if kind in (Kind.ACK, Kind.NAK, Kind.READ_RESP):
            first, last = conn.msg_psns.get((peer, msg.psn), (msg.psn, msg.psn))
            conn.msn[side] += 1
            msn = conn.msn[side]
            if kind == Kind.ACK:
                return [self.bth(ACKNOWLEDGE, dqpn, last) + AETH.pack((0x1F << 24) | msn)]
            if kind == Kind.NAK:
                code = Nak(msg.a)
                syn = (0x20 | (msg.b & 0x1F)) if code == Nak.RNR else NAK_SYNDROME[code]
                return [self.bth(ACKNOWLEDGE, dqpn, first) + AETH.pack((syn << 24) | msn)]
            data = self._payload(msg)
            segs = self._split(data)
            out = []
            for i, seg in enumerate(segs):
                pad = -len(seg) % 4
                if len(segs) == 1:
                    op, hdr = READ_RESP_ONLY, AETH.pack((0x1F << 24) | msn)
                elif i == 0:
                    op, hdr = READ_RESP_FIRST, AETH.pack((0x1F << 24) | msn)
                elif i == len(segs) - 1:
                    op, hdr = READ_RESP_LAST, AETH.pack((0x1F << 24) | msn)
                else:
                    op, hdr = READ_RESP_MIDDLE, b""
                out.append(self.bth(op, dqpn, first + i, pad=pad) + hdr + seg + bytes(pad))
            return out
        # requests
        key = (side, msg.psn)
        data = self._payload(msg)
        if kind == Kind.RDMA_READ:
            n = max(1, -(-msg.c // self.mtu))
            first = conn.msg_psns.get(key, (conn.next_psn[side], 0))[0]
            if key not in conn.msg_psns:
                conn.msg_psns[key] = (first, first + n - 1)
                conn.next_psn[side] += n
            return [self.bth(READ_REQUEST, dqpn, first, ackreq=True) + RETH.pack(msg.a, msg.b, msg.c)]
        segs = self._split(data)
        if key in conn.msg_psns:
            first = conn.msg_psns[key][0]  # a retransmission reuses its PSNs
        else:
            first = conn.next_psn[side]
            conn.msg_psns[key] = (first, first + len(segs) - 1)
            conn.next_psn[side] += len(segs)
        out = []
        for i, seg in enumerate(segs):
            only, is_first, is_last = len(segs) == 1, i == 0, i == len(segs) - 1
            pad = -len(seg) % 4
            hdr = b""
            if kind == Kind.RDMA_WRITE:
                op = WRITE_ONLY if only else WRITE_FIRST if is_first else WRITE_LAST if is_last else WRITE_MIDDLE
                if is_first:
                    hdr = RETH.pack(msg.a, msg.b, msg.c)
            elif kind == Kind.SEND_INV:
                op = SEND_ONLY_INV if only else SEND_FIRST if is_first else SEND_LAST_INV if is_last else SEND_MIDDLE
                if is_last:
                    hdr = IETH.pack(msg.b)
            elif kind == Kind.SEND_IMM:
                op = SEND_ONLY_IMM if only else SEND_FIRST if is_first else SEND_LAST_IMM if is_last else SEND_MIDDLE
                if is_last:
                    hdr = struct.pack("!I", msg.a)
            else:
                op = SEND_ONLY if only else SEND_FIRST if is_first else SEND_LAST if is_last else SEND_MIDDLE
            out.append(self.bth(op, dqpn, first + i, ackreq=is_last, pad=pad) + hdr + seg + bytes(pad))
        return out

    def _split(self, data: bytes) -> list[bytes]:
        if not data:
            return [b""]
        return [data[i:i + self.mtu] for i in range(0, len(data), self.mtu)]

    # ------------------------------------------------------------------ CM MADs
    def _record_cm(self, conn: _Conn, side: str, msg: Msg, corrupt: bool) -> None:
        body = CmBody.decode(msg.cm) if msg.cm else CmBody()
        mine, theirs = conn.comm_ids if side == "active" else conn.comm_ids[::-1]
        src = conn.ini_ip if side == "active" else conn.tgt_ip
        dst = conn.tgt_ip if side == "active" else conn.ini_ip
        kind = msg.kind
        if kind == Kind.CM_REQ:
            conn.qpn["active"] = body.qpn
            data = self._cm_req(conn, mine, body)
        elif kind == Kind.CM_REP:
            conn.qpn["passive"] = body.qpn
            data = (struct.pack("!III", mine, theirs, 0) + struct.pack("!I", body.qpn << 8) + struct.pack("!I", 0)
                    + struct.pack("!I", 0) + bytes([body.responder_resources & 0xFF, body.initiator_depth & 0xFF,
                                                      (15 << 3), (body.rnr_retry & 7) << 5])
                    + struct.pack("!Q", 0x0200000000000002))
            data += body.private_data.ljust(196, b"\x00")[:196]
        elif kind == Kind.CM_RTU:
            data = struct.pack("!II", mine, theirs) + bytes(224)
        elif kind == Kind.CM_REJ:
            data = struct.pack("!IIBBH", mine, theirs, 0, 0, body.reason or 28) + bytes(72)
            data += body.private_data.ljust(148, b"\x00")[:148]
        elif kind == Kind.CM_DREQ:
            data = struct.pack("!III", mine, theirs, conn.qpn["passive" if side == "active" else "active"] << 8) + bytes(220)
        else:  # DREP
            data = struct.pack("!II", mine, theirs) + bytes(224)
        mad = MAD_HDR.pack(1, 0x07, 2, 0x03, 0, 0, conn.tid, CM_ATTR[kind], 0, 0) + data.ljust(232, b"\x00")[:232]
        pkt = self.bth(UD_SEND_ONLY, 1, next(self._comm) & 0xFFFFFF) + DETH.pack(GSI_QKEY, 1) + mad
        self.write_frame(self.frame(src, dst, pkt, 0xC000 | 1, corrupt))

    def _cm_req(self, conn: _Conn, comm_id: int, body: CmBody) -> bytes:
        service_id = 0x0000000001060000 | (conn.port & 0xFFFF)
        d = struct.pack("!II", comm_id, 0) + struct.pack("!Q", service_id)
        d += struct.pack("!Q", 0x0200000000000001)
        d += struct.pack("!II", 0, 0)
        d += struct.pack("!I", (body.qpn << 8) | (body.responder_resources & 0xFF))
        d += struct.pack("!I", body.initiator_depth & 0xFF)
        d += struct.pack("!I", 20 << 3)
        d += struct.pack("!I", (body.psn << 8) | (20 << 3) | (body.retry_count & 7))
        d += struct.pack("!H", 0xFFFF)
        d += bytes([(5 << 4) | (body.rnr_retry & 7)])  # path MTU 4096
        d += bytes([15 << 4])
        d += struct.pack("!HH", 0xFFFF, 0xFFFF)
        d += _gid(conn.ini_ip) + _gid(conn.tgt_ip)
        d += struct.pack("!I", 0)
        d += bytes([0, 64, 0, 18 << 3])
        d += bytes(44)
        # rdma_cm's IP private-data header, then the consumer's (e.g. iSER) private data
        v4 = lambda ip: bytes(12) + ipaddress.IPv4Address(ip).packed  # noqa: E731
        priv = struct.pack("!BBH", 0, 0x40, 0xC000) + v4(conn.ini_ip) + v4(conn.tgt_ip) + body.private_data
        return d + priv.ljust(92, b"\x00")[:92]

    def close(self) -> None:
        self._f.flush()
        if self._own:
            self._f.close()

    def __enter__(self) -> "PcapWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_DATA_KINDS = frozenset({Kind.SEND, Kind.SEND_INV, Kind.SEND_IMM, Kind.RDMA_WRITE, Kind.RDMA_READ,
                         Kind.ACK, Kind.NAK, Kind.READ_RESP})
