"""Guest-local fixes the lab found for the iSER plugin, for ``lab/run.sh --before``.

Run inside the guest before the scenarios: the guest's root is a tmpfs overlay, so these edits
never reach the host's tree. They show what each finding's fix does to the scenarios until the
plugin's owners make the real change (docs/interop.md, "Findings"). Each edit asserts the text
it replaces, so it fails loudly once the code has moved on (then drop that edit).

    lab/run.sh --scenarios 1-7 --before '.venv/bin/python lab/patches/iser_interop.py'
"""

import pathlib
F = pathlib.Path("plugins/iser/datamover_iser/verbs/pyverbs_backend.py")
s = F.read_text()
s = s.replace('node = ctx.query_device().node_type', 'node = getattr(ctx.query_device(), "node_type", None)')
old = '''        self.cmid = CMID(creator=self.channel.ch, port_space=ce.RDMA_PS_TCP)
        try:
            self.cmid.bind_addr(AddrInfo(src=host, src_service=str(port), port_space=ce.RDMA_PS_TCP,
                                         flags=ce.RAI_PASSIVE))
            self.cmid.listen(backlog)
        except Exception as exc:
            raise _err(exc, "rdma_listen") from None'''
new = '''        import random
        self.cmid = CMID(creator=self.channel.ch, port_space=ce.RDMA_PS_TCP)
        tries = [port] if port else [random.randint(20000, 60000) for _ in range(20)]
        for i, p in enumerate(tries):
            try:
                self.cmid.bind_addr(AddrInfo(src=host, src_service=str(p), port_space=ce.RDMA_PS_TCP,
                                             flags=ce.RAI_PASSIVE))
                self.port = p
                break
            except Exception as exc:
                if i == len(tries) - 1:
                    raise _err(exc, "rdma_bind_addr") from None
        try:
            self.cmid.listen(backlog)
        except Exception as exc:
            raise _err(exc, "rdma_listen") from None'''
assert old in s, "listener block changed"
s = s.replace(old, new)
old3 = "                wr.rkey = pw.rkey  # the key to advertise (not mw.rkey)"
assert old3 in s
s = s.replace(old3, old3 + "\n                b.mw.rkey = pw.rkey  # the window's key is now the bound one (LOCAL_INV, SEND_WITH_INV match it)")
old4 = "                pw.set_bind_wr(b.mw.mw, MWBindInfo(b.mr.mr, b.addr, b.length, int(b.access)))"
assert old4 in s
new4 = """                if getattr(b.mw, "bound_once", False):
                    # rxe takes the MW's current key from userspace ibv_mw.rkey, which a type-2 bind
                    # never updates (pyverbs cannot set it): a second bind of the same MW fails
                    # MW_BIND_ERR. Rebinding therefore means a fresh MW.
                    from pyverbs.mr import MW as _MW
                    e_, _ = _enums()
                    pd_ = b.mw.mw.pd if hasattr(b.mw.mw, "pd") else None
                    old_mw = b.mw.mw
                    b.mw.mw = _MW(b.mw.pd_obj.pd, e_.IBV_MW_TYPE_2)
                    old_mw.close()
                b.mw.bound_once = True
""" + old4
s = s.replace(old4, new4)
s = s.replace("        self.mw = _MW(pd.pd, e.IBV_MW_TYPE_2)\n        self.rkey = self.mw.rkey",
              "        self.pd_obj = pd\n        self.mw = _MW(pd.pd, e.IBV_MW_TYPE_2)\n        self.rkey = self.mw.rkey")
assert "self.pd_obj = pd" in s
F.write_text(s)
print("patched", F)
# LIO isert agrees to TargetRecvDataSegmentLength=65536 but its receive buffers hold 8 KiB:
# propose the RFC 7145 default instead (guest-local experiment)
T = pathlib.Path("plugins/iser/datamover_iser/transport.py")
t = T.read_text()
assert '("TargetRecvDataSegmentLength", "65536")' in t
T.write_text(t.replace('("TargetRecvDataSegmentLength", "65536")', '("TargetRecvDataSegmentLength", "8192")'))
print("patched", T)
# open-iscsi fails the login on the unknown key MaxOutstandingUnexpectedPDUs (guest-local experiment)
t = T.read_text()
t = t.replace(',\n                            ("MaxOutstandingUnexpectedPDUs", "8"))', ')')
assert '("MaxOutstandingUnexpectedPDUs", "8")' not in t, "preferred_keys layout changed"
T.write_text(t)
print("patched", T, "(no MaxOutstandingUnexpectedPDUs proposal)")
# our target's REP says "no Send-with-Invalidate" (0x40) and then uses it; ib_iser terminates:
# "iser_check_remote_inv: unexpected remote invalidation" (guest-local experiment)
t = T.read_text()
old = "param = ConnParam(private_data=cm_private_data(send_with_invalidate=False),"
assert old in t
T.write_text(t.replace(old, "param = ConnParam(private_data=cm_private_data(send_with_invalidate=conn.peer_allows_send_inv),"))
print("patched", T, "(REP announces the Send-with-Invalidate the target will use)")
# Write Base Offset as Linux uses it (ib_iser and isert): it points at the first solicited byte
# (buffer + unsolicited length); the target reads at base + (BufferOffset - unsolicited)
C = pathlib.Path("plugins/iser/datamover_iser/connection.py")
c = C.read_text()
o1 = "header_kwargs.update(write_stag=stag, write_base=base, wsv=True)"
o2 = "self._ttasks[pdu.itt] = _TargetTask(iser.read_stag, iser.read_base, iser.write_stag, iser.write_base)"
assert o1 in c and o2 in c
c = c.replace(o1, "header_kwargs.update(write_stag=stag, write_base=base + unsolicited, wsv=True)")
c = c.replace(o2, "self._ttasks[pdu.itt] = _TargetTask(iser.read_stag, iser.read_base, iser.write_stag,\n                                                 iser.write_base - len(pdu.data))")
C.write_text(c)
print("patched", C, "(Linux Write Base Offset convention)")
