"""The registry benchmark still runs end to end (tiny N, against a dev cluster it starts)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "registry_scale.py"


def test_registry_benchmark_quick_runs():
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--n", "20", "--changes", "5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "20 streams x 3 tags = 60 images" in out
    for metric in ("initial sync", "resolve p99", "watch propagation p99", "RSS after sync"):
        assert metric in out
    assert "inf" not in out  # every watch update was seen
