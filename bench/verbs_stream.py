#!/usr/bin/env python3
"""RDMA WRITE/READ streams between two processes on the soft provider, next to their baselines.

Measured in one run, on this machine:

* single-thread memcpy bandwidth (memoryview slice assignment between two buffers of the
  same size as the MRs), against RDMA WRITE and RDMA READ streams over the **shm** fabric
  (the responder process copies straight between the two shared-memory MRs);
* a plain Python TCP socket stream (``sendall`` / ``recv_into``) between two processes,
  against RDMA WRITE and READ streams over the **zmq** fabric (``tcp://``) on the same
  loopback;
* a plain Python Unix-socket stream, and RDMA WRITE and READ streams over the **zmq-ipc**
  fabric (zmq's ``ipc://``, Unix-domain sockets), each against both plain streams.

Every stream's data is checked (a digest of what landed against what was sent).

    .venv/bin/python bench/verbs_stream.py            # 1 GiB per stream
    .venv/bin/python bench/verbs_stream.py --smoke    # a few MiB, for the test suite
    .venv/bin/python bench/verbs_stream.py --json out.json
    .venv/bin/python bench/verbs_stream.py --only zmq   # tcp:// and ipc:// with baselines
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import socket
import struct
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass

from datamover_iser.verbs import Access, ConnParam, QPCap, SendWR, WROpcode, sge_of
from datamover_iser.verbs.soft import SoftProvider
from datamover_iser.verbs.soft.link import Fabric
from datamover_iser.verbs.soft.shm import ShmFabric
from datamover_iser.verbs.soft.zmq import ZmqFabric

RW = Access.LOCAL_WRITE | Access.REMOTE_WRITE | Access.REMOTE_READ
MR_INFO = struct.Struct("<QII")  # addr, rkey, length: the server's MR, in the REP private data
GB = 1e9


@dataclass
class Result:
    name: str
    bytes: int
    seconds: float
    provider: str = ""
    ok: bool = True

    @property
    def gbps(self) -> float:
        return self.bytes / self.seconds / GB


def pattern(view: memoryview, seed: int) -> None:
    """Fill with a cheap non-constant pattern (so a misplaced chunk shows in the digest)."""
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB
    n = view.nbytes
    for off in range(0, n, len(block)):
        k = min(len(block), n - off)
        view[off:off + k] = block[:k]


def memcpy_bench(buf_size: int, total: int) -> Result:
    src = bytearray(buf_size)
    dst = bytearray(buf_size)
    pattern(memoryview(src), 1)
    s, d = memoryview(src), memoryview(dst)
    d[:] = s  # fault the pages in before timing, as the MRs are
    rounds = max(1, total // buf_size)
    t0 = time.perf_counter()
    for _ in range(rounds):
        d[:] = s
    dt = time.perf_counter() - t0
    return Result("memcpy (1 thread)", rounds * buf_size, dt, "cpu")


ZMQ_LABEL = {"zmq": "zmq tcp://", "zmq-ipc": "zmq ipc://"}
#: ZmqFabric keyword options of both processes (from --zmq-sndbuf and friends)
ZMQ_OPTS: dict[str, object] = {}


def make_fabric(fabric_name: str, ns: str) -> tuple[Fabric, str]:
    """The fabric both processes use, and the host its listener is named by."""
    if fabric_name == "shm":
        return ShmFabric(ns), "bench"
    if fabric_name == "zmq":
        return ZmqFabric(transport="tcp", **ZMQ_OPTS), "127.0.0.1"  # type: ignore[arg-type]
    if fabric_name == "zmq-ipc":
        return ZmqFabric(transport="ipc", namespace=ns, **ZMQ_OPTS), "bench"  # type: ignore[arg-type]
    raise ValueError(f"unknown fabric {fabric_name!r}")


# --------------------------------------------------------------------------- server side
async def serve(fabric_name: str, ns: str, buf_size: int) -> None:
    fabric, host = make_fabric(fabric_name, ns)
    prov = SoftProvider(fabric)
    lis = await prov.listen(host, 0)
    print(f"LISTENING {lis.port}", flush=True)
    cid = await lis.get_request(timeout=30)
    cq = cid.context.create_cq(64)
    qp = cid.create_qp(cq, cq, QPCap(max_send_wr=4, max_recv_wr=4))
    mem = cid.pd.alloc_buffer(buf_size)
    mr = cid.pd.reg_mr(mem, RW)
    await cid.accept(qp, ConnParam(private_data=MR_INFO.pack(mr.addr, mr.rkey, mr.length)))
    await cid.get_event(timeout=None)  # DISCONNECTED when the client is done
    await prov.close()


def plain_serve(family: str, total: int, buf_size: int) -> None:
    """Receive ``total`` bytes into one reused buffer, then answer one byte."""
    if family == "tcp":
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        port = lsock.getsockname()[1]
    else:  # an abstract-namespace Unix socket: nothing in the file system
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        port = uuid.uuid4().int % 10**9
        lsock.bind(f"\0datamover-bench/{port}")
    lsock.listen(1)
    print(f"LISTENING {port}", flush=True)
    conn, _ = lsock.accept()
    buf = bytearray(buf_size)
    view = memoryview(buf)
    got = 0
    while got < total:
        n = conn.recv_into(view[: min(buf_size, total - got)])
        if n == 0:
            break
        got += n
    conn.sendall(b"K")
    conn.close()
    lsock.close()


# --------------------------------------------------------------------------- client side
def zmq_argv() -> list[str]:
    """ZMQ_OPTS as command-line options, for the server process."""
    out = []
    for key in ("sndbuf", "rcvbuf"):
        if ZMQ_OPTS.get(key) is not None:
            out += [f"--zmq-{key}", str(ZMQ_OPTS[key])]
    if ZMQ_OPTS.get("tune_malloc") is False:
        out.append("--no-tune-malloc")
    return out


def spawn(args: list[str]) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("LISTENING"):
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return proc, int(line.split()[1])


async def rdma_streams(fabric_name: str, buf_size: int, total: int, wr_size: int, depth: int) -> list[Result]:
    ns = uuid.uuid4().hex
    proc, port = spawn(["--serve", fabric_name, ns, str(buf_size), *zmq_argv()])
    try:
        fabric, host = make_fabric(fabric_name, ns)
        prov = SoftProvider(fabric)
        cid = await prov.resolve(host, port)
        cq = cid.context.create_cq(256)
        qp = cid.create_qp(cq, cq, QPCap(max_send_wr=depth, max_recv_wr=4))
        src = cid.pd.alloc_buffer(buf_size)
        sink = cid.pd.alloc_buffer(buf_size)
        pattern(src, 7)
        smr = cid.pd.reg_mr(src, RW)
        kmr = cid.pd.reg_mr(sink, RW)
        raddr, rkey, rlen = MR_INFO.unpack((await cid.connect(qp, ConnParam()))[: MR_INFO.size])
        assert rlen == buf_size
        chunks = buf_size // wr_size
        n_wrs = max(chunks, total // wr_size)
        results = []
        for name, opcode, mr in (("RDMA WRITE", WROpcode.RDMA_WRITE, smr), ("RDMA READ", WROpcode.RDMA_READ, kmr)):
            posted = done = 0
            t0 = time.perf_counter()
            while done < n_wrs:
                while posted < n_wrs and posted - done < depth:
                    off = (posted % chunks) * wr_size
                    qp.post_send(SendWR(posted, opcode, [sge_of(mr, off, wr_size)], remote_addr=raddr + off, rkey=rkey))
                    posted += 1
                for wc in await cq.next(depth):
                    if not wc.ok:
                        raise RuntimeError(f"{name}: {wc}")
                    done += 1
            dt = time.perf_counter() - t0
            label = ZMQ_LABEL.get(fabric_name, fabric_name)
            results.append(Result(f"{name} over {label}", n_wrs * wr_size, dt, prov.describe()))
        # After the WRITE stream the server's MR holds src; the READ stream brought it back.
        ok = hashlib.sha256(sink).digest() == hashlib.sha256(src).digest()
        for r in results:
            r.ok = ok
        await cid.disconnect()
        await prov.close()
        return results
    finally:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def plain_stream(family: str, buf_size: int, total: int) -> Result:
    """A plain socket stream (``sendall`` of one reused buffer) to another process."""
    proc, port = spawn(["--plain-serve", family, str(total), str(buf_size)])
    try:
        if family == "tcp":
            sock = socket.create_connection(("127.0.0.1", port))
        else:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(f"\0datamover-bench/{port}")
        src = bytearray(buf_size)
        pattern(memoryview(src), 3)
        view = memoryview(src)
        t0 = time.perf_counter()
        sent = 0
        while sent < total:
            k = min(buf_size, total - sent)
            sock.sendall(view[:k])
            sent += k
        ok = sock.recv(1) == b"K"
        dt = time.perf_counter() - t0
        sock.close()
        if family == "tcp":
            return Result("plain TCP socket stream", total, dt, "kernel TCP (loopback)", ok)
        return Result("plain Unix socket stream", total, dt, "kernel Unix-domain stream socket", ok)
    finally:
        proc.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="a few MiB per stream (for tests)")
    ap.add_argument("--total", type=int, default=1 << 30, help="bytes per stream (default 1 GiB)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--zmq-wr-size", type=int, default=4 << 20, help="bytes per WR on zmq")
    ap.add_argument("--zmq-depth", type=int, default=8, help="WRs in flight on zmq")
    ap.add_argument("--zmq-sndbuf", type=int, help="ZMQ_SNDBUF of both ends (default: the kernel's)")
    ap.add_argument("--zmq-rcvbuf", type=int, help="ZMQ_RCVBUF of both ends (default: the kernel's)")
    ap.add_argument("--no-tune-malloc", action="store_true", help="leave glibc's malloc thresholds alone")
    ap.add_argument("--repeat", type=int, default=3, help="measure each stream N times, keep the best")
    ap.add_argument("--only", choices=["shm", "zmq", "zmq-tcp", "zmq-ipc"],
                    help="run these streams only (zmq: tcp:// and ipc://)")
    ap.add_argument("--serve", nargs=3, metavar=("FABRIC", "NS", "SIZE"), help=argparse.SUPPRESS)
    ap.add_argument("--plain-serve", nargs=3, metavar=("FAMILY", "TOTAL", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    ZMQ_OPTS.update(sndbuf=args.zmq_sndbuf, rcvbuf=args.zmq_rcvbuf, tune_malloc=not args.no_tune_malloc)
    if args.serve:
        asyncio.run(serve(args.serve[0], args.serve[1], int(args.serve[2])))
        return 0
    if args.plain_serve:
        plain_serve(args.plain_serve[0], int(args.plain_serve[1]), int(args.plain_serve[2]))
        return 0
    if args.smoke:
        args.repeat = 1
        total, buf, shm_wr, zmq_wr = 8 << 20, 4 << 20, 1 << 20, 256 << 10
    else:
        total, buf, shm_wr, zmq_wr = args.total, 64 << 20, 16 << 20, args.zmq_wr_size
    res: list[Result] = []
    ratios: dict[str, float] = {}
    best = lambda rs: max(rs, key=lambda r: r.gbps)  # noqa: E731
    ok = True
    # Each pair is measured alternately ``--repeat`` times and the best of each is kept, so
    # a burst of load from elsewhere on the machine hits both sides of a ratio alike.
    if args.only in (None, "shm"):
        m, w, r = [], [], []
        for _ in range(args.repeat):
            m.append(memcpy_bench(buf, total))
            sw, sr = asyncio.run(rdma_streams("shm", buf, total, shm_wr, depth=4))
            w.append(sw)
            r.append(sr)
        ok &= all(x.ok for x in w + r)
        memcpy, shm_w, shm_r = best(m), best(w), best(r)
        res += [memcpy, shm_w, shm_r]
        ratios["shm_write_vs_memcpy"] = shm_w.gbps / memcpy.gbps
        ratios["shm_read_vs_memcpy"] = shm_r.gbps / memcpy.gbps
    tcp_on = args.only in (None, "zmq", "zmq-tcp")
    ipc_on = args.only in (None, "zmq", "zmq-ipc")
    if tcp_on or ipc_on:
        # Both plain streams are measured in every case: ipc:// answers to both.
        runs: dict[str, list[Result]] = {k: [] for k in ("tcp", "unix", "zw", "zr", "iw", "ir")}
        for _ in range(args.repeat):
            runs["tcp"].append(plain_stream("tcp", min(buf, 1 << 20), total))
            if tcp_on:
                zw, zr = asyncio.run(rdma_streams("zmq", buf, total, zmq_wr, depth=args.zmq_depth))
                runs["zw"].append(zw)
                runs["zr"].append(zr)
            runs["unix"].append(plain_stream("unix", min(buf, 1 << 20), total))
            if ipc_on:
                iw, ir = asyncio.run(rdma_streams("zmq-ipc", buf, total, zmq_wr, depth=args.zmq_depth))
                runs["iw"].append(iw)
                runs["ir"].append(ir)
        ok &= all(x.ok for rs in runs.values() for x in rs)
        b = {k: best(rs) for k, rs in runs.items() if rs}
        res += [b[k] for k in ("tcp", "zw", "zr", "unix", "iw", "ir") if k in b]
        if tcp_on:
            ratios["zmq_write_vs_tcp"] = b["zw"].gbps / b["tcp"].gbps
            ratios["zmq_read_vs_tcp"] = b["zr"].gbps / b["tcp"].gbps
        if ipc_on:
            ratios["zmq_ipc_write_vs_tcp"] = b["iw"].gbps / b["tcp"].gbps
            ratios["zmq_ipc_read_vs_tcp"] = b["ir"].gbps / b["tcp"].gbps
            ratios["zmq_ipc_write_vs_unix"] = b["iw"].gbps / b["unix"].gbps
            ratios["zmq_ipc_read_vs_unix"] = b["ir"].gbps / b["unix"].gbps
        ratios["unix_vs_tcp"] = b["unix"].gbps / b["tcp"].gbps
    print(f"{'stream':34} {'GiB':>6} {'s':>7} {'GB/s':>7}  data  moved by")
    for r in res:
        print(f"{r.name:34} {r.bytes / 2**30:6.2f} {r.seconds:7.3f} {r.gbps:7.2f}  {'ok' if r.ok else 'BAD':4}  {r.provider}")
    verdict = ratios
    for k, v in verdict.items():
        print(f"{k:24} {v:6.2f}")
    all_ok = ok
    print("integrity:", "ok" if all_ok else "FAILED")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": [asdict(r) | {"gbps": r.gbps} for r in res], "ratios": verdict}, f, indent=2)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
