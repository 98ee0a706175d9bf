"""Drive real iSCSI peers we did not write (libiscsi, tgt, tshark) against datamover.

Fixtures-as-functions, usable from pytest (tests/interop) and from the command line
(``python -m tools.interop.conformance``):

- :func:`start_our_target` / :func:`start_tgtd` start a target and return a handle
  (context manager) that stops it;
- :mod:`tools.interop.libiscsi` runs iscsi-ls / iscsi-inq / iscsi-readcapacity16 / iscsi-perf;
- :mod:`tools.interop.testcu` runs ``iscsi-test-cu`` and parses its CUnit output;
- :mod:`tools.interop.compare` compares two iscsi-test-cu runs;
- :mod:`tools.interop.capture` captures loopback traffic with tshark and checks the decode.

Nothing here imports pytest: a missing peer raises :class:`PeerMissing`, which tests
turn into a skip with its message.
"""

from tools.interop.peers import PeerMissing, find_binary, require
from tools.interop.ours import OurTarget, start_our_target
from tools.interop.tgtd import Tgtd, start_tgtd

__all__ = ["OurTarget", "PeerMissing", "Tgtd", "find_binary", "require", "start_our_target", "start_tgtd"]
