"""Short versions of the long reliability runs (issue 10), each the same code as its
documented command with a smaller count:

* crash consistency: ``python -m tools.faults.crash --kills 50``
* live-target PDU flood: ``python -m tools.fuzz.flood --pdus 1000000``
* load and soak: ``python -m tools.faults.soak --seconds 600``
"""

from __future__ import annotations

import pytest

from tools.faults import crash, soak
from tools.fuzz import flood


async def test_sigkill_keeps_fua_and_synced_writes(tmp_path: object) -> None:
    summary = await crash.run(kills=3, seed=5)
    figures = summary["figures"]
    assert figures["kills"] == 3 and figures["acked_writes"] > 30 and figures["syncs"] >= 1, figures
    assert figures["fua_writes"] > 0 and figures["durable_blocks_tracked"] > 0
    assert figures["corrupted_blocks"] == 0 and figures["lost_durable_blocks"] == 0, figures
    assert summary["clean"]


async def test_pdu_flood_against_a_live_target() -> None:
    summary = await flood.run(pdus=20_000, seed=3, connections=3, max_latency=5.0, max_rss_mib=512.0)
    assert summary["target_alive"], summary
    assert not summary["errors"], summary["errors"]
    assert summary["healthy_session"]["failures"] == 0 and summary["healthy_session"]["ios"] > 0, summary
    assert summary["answers"] > 0 and summary["pdus"] >= 20_000
    assert summary["clean"], summary


@pytest.mark.timeout(150)
def test_soak_30_seconds_tcp_and_iser() -> None:
    """32 sessions x QD32 for 30 s (the default-suite version of the 10-minute soak). It runs
    in a process of its own, as the long soak does, so its RSS is the soak's alone and not
    that of a test process that has run hundreds of other tests."""
    import json
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "tools.faults.soak", "--seconds", "30", "--sessions", "32",
                          "--qd", "32", "--seed", "1"], capture_output=True, text=True, timeout=140)
    assert run.stdout.strip(), run.stderr[-2000:]
    summary = json.loads(run.stdout)
    assert summary["ios"] > 500, summary
    assert summary["injected"]["aborts"] > 0 and summary["injected"]["lun_resets"] > 0
    assert not summary["leaks"] and summary["pending_left"] == 0, summary
    assert not summary["errors"], summary["errors"]
    assert summary["totals"]["hung_ios"] == 0 and summary["totals"]["corrupted_blocks"] == 0
    assert summary["clean"], {key: summary[key] for key in ("anon_mib", "rss_mib", "leaks", "pending_left", "errors")}
