"""``benchmarks/lab_floor.py`` runs end to end at one load per variant (real hub, dev cluster
with the process runtime, real JupyterLab, real Chromium), so B0's floor benchmark does not rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def test_lab_floor_one_load_per_variant():
    proc = subprocess.run(
        [sys.executable, str(BENCH / "lab_floor.py"), "--runs", "1"],
        capture_output=True,
        text=True,
        timeout=400,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr[-3000:]
    for variant in ("shipped", "no admin plugins", "notebook only", "cached"):
        assert re.search(rf"^{variant}\s+1\s+0\s+[\d.]+\s", out, re.M), out  # 1 load, 0 failed
    busy = re.search(r"main thread busy ([\d.]+) s, idle .* ([\d.]+) s", out)
    assert busy and float(busy[1]) > 0, out  # the CPU profile sampled the page's scripts
