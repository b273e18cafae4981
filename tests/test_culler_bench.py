"""The culler benchmark runs end to end at tiny N: real hubs + dev cluster, both cullers.

This is also the real-hub test of the cull pass without Kubernetes: the benchmark
fails (exit 1) if any idle learner survives or any active one is culled.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "culler.py"


def test_culler_benchmark_tiny_n():
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--users", "30"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr[-3000:]
    assert "30 anonymous users, 15 idle" in out
    rows = {m.group(1): m.groups()[1:] for m in re.finditer(
        r"^(cnbi|idle-culler)\s+([\d.]+)\s+\d+\s+(\d+)\s+(\d+)\s+(\d+)", out, re.M)}  # fmt: skip
    assert set(rows) == {"cnbi", "idle-culler"}
    for _seconds, idle_left, active_culled, _pvcs in rows.values():
        assert (idle_left, active_culled) == ("0", "0")
    assert rows["cnbi"][3] == "0"  # every idle learner's PVC deleted too
    assert rows["idle-culler"][3] == "15"  # the stock culler leaves storage alone
    assert re.search(r"ratio cnbi / idle-culler: [\d.]+x", out)
    assert out.rstrip().endswith("correct")
