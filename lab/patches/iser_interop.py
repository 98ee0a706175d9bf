"""Guest-local fixes the lab found for the iSER plugin, for ``lab/run.sh --before``.

Run inside the guest before the scenarios: the guest's root is a tmpfs overlay, so these edits
never reach the host's tree. They show what a finding's fix does to the scenarios until the
plugin's owners make the real change (docs/interop.md, "Findings"). An edit whose original
text is no longer in the file is skipped and reported (fixed upstream, or the code moved).

    lab/run.sh --scenarios 1-7 --before '.venv/bin/python lab/patches/iser_interop.py'

All the edits below (findings 3a-c, 4, 5, 6, 7) were taken into the tree on 2026-11-24; the
file stays as the pattern for the next finding.
"""

from __future__ import annotations

import pathlib
import sys

BACKEND = pathlib.Path("plugins/iser/datamover_iser/verbs/pyverbs_backend.py")
TRANSPORT = pathlib.Path("plugins/iser/datamover_iser/transport.py")
CONNECTION = pathlib.Path("plugins/iser/datamover_iser/connection.py")

#: (finding, file, original text, replacement)
EDITS: list[tuple[str, pathlib.Path, str, str]] = [
    ("3a DeviceAttr has no node_type", BACKEND,
     "node = ctx.query_device().node_type",
     'node = getattr(ctx.query_device(), "node_type", None)'),
    ("3c the MW's key after a bind", BACKEND,
     "                wr.rkey = pw.rkey  # the key to advertise (not mw.rkey)",
     "                wr.rkey = pw.rkey  # the key to advertise (not mw.rkey)\n"
     "                b.mw.rkey = pw.rkey  # LOCAL_INV and SEND_WITH_INV name the bound key"),
    ("4 no MaxOutstandingUnexpectedPDUs proposal", TRANSPORT,
     ',\n                            ("MaxOutstandingUnexpectedPDUs", "8"))', ")"),
    ("5 the REP announces Send-with-Invalidate", TRANSPORT,
     "param = ConnParam(private_data=cm_private_data(send_with_invalidate=False),",
     "param = ConnParam(private_data=cm_private_data(send_with_invalidate=conn.peer_allows_send_inv),"),
    ("6 TargetRecvDataSegmentLength 8192", TRANSPORT,
     '("TargetRecvDataSegmentLength", "65536")', '("TargetRecvDataSegmentLength", "8192")'),
    ("7 Write Base Offset at the first solicited byte (initiator)", CONNECTION,
     "header_kwargs.update(write_stag=stag, write_base=base, wsv=True)",
     "header_kwargs.update(write_stag=stag, write_base=base + unsolicited, wsv=True)"),
]


def main() -> int:
    for finding, path, old, new in EDITS:
        text = path.read_text()
        if old not in text:
            print(f"skip  {finding}: not found in {path} (fixed in the tree, or the code moved)")
            continue
        path.write_text(text.replace(old, new, 1))
        print(f"apply {finding}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
