"""B1, B1 over capacity and B2 still run end to end at tiny N (real hubs, proxies, stub clusters).

Both stacks (cnbi and stock) are exercised, so a broken stock config fails here too.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def run(script: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    return proc.stdout


def test_launch_storm_tiny():
    out = run("launch_storm.py", "--n", "4", "--spread", "1", "--timeout", "90")
    rows = dict(re.findall(r"^(cnbi|stock)\s+([\d.]+)\s", out, re.M))
    assert rows == {"cnbi": "100.00", "stock": "100.00"}, out  # every learner reached 200
    assert re.search(r"ratio cnbi/stock: launches/s [\d.]+x", out)
    assert "targets (cnbi)" in out


def test_launch_storm_learners_wait_in_the_room_at_the_spawn_limit():
    out = run(
        "launch_storm.py", "--only", "cnbi", "--n", "4", "--spread", "0.5", "--spawn-limit", "1",
        "--api-timeout", "30", "--timeout", "120",
    )  # fmt: skip
    row = re.search(r"^cnbi\s+([\d.]+)\s+([\d.]+)\s", out, re.M)
    assert row, out
    success, waited = float(row[1]), float(row[2])
    assert success == 100, out  # the ones told to wait went on to their notebook
    assert waited >= 1, out  # one spawn at a time: the others were shown the waiting room


def test_launch_storm_pooled_tiny():
    out = run(
        "launch_storm.py", "--only", "pooled", "--pool", "4", "--n", "4", "--spread", "1",
        "--runs", "2",
    )  # fmt: skip
    assert re.search(r"^pooled\s+100\.00\s", out, re.M), out  # every learner got a server
    assert re.search(r"pooled: pool warm [\d.]+ s .*; 4 of 4 learners got a pool server", out), out
    assert "targets (pooled)" in out
    # two rounds, then their medians with the spread and the load of each run
    assert out.count("run 1 of 2") == 1 and out.count("run 2 of 2") == 1, out
    assert "medians of 2 alternating runs" in out, out
    assert re.search(r"pooled spread over runs: success 100\.00-100\.00, .*load average", out)


def test_tmplogin_throughput_tiny():
    out = run("tmplogin_throughput.py", "--n", "20", "--rounds", "2", "--warmup", "2")
    rows = re.findall(
        r"^(cnbi|stock)\s+([\d.]+)\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+(\d+)", out, re.M
    )
    assert {name for name, _, _ in rows} == {"cnbi", "stock"}, out
    for _name, rate, failed in rows:
        assert float(rate) > 0 and failed == "0"
    assert re.search(r"ratio cnbi/stock: logins/s [\d.]+x", out)


def test_waiting_room_over_capacity_tiny():
    out = run(
        "waiting_room.py", "--n", "6", "--spread", "1", "--capacity", "2", "--idle", "3",
        "--cull-every", "1", "--timeout", "120", "--stamp",
    )  # fmt: skip
    rows = dict(re.findall(r"^(cnbi|stock)\s+(\d+(?:\.\d+)?)\s+(?:\d+(?:\.\d+)?)\s", out, re.M))
    assert rows.get("cnbi") in ("6", "6.0"), out  # every learner reached the notebook
    assert "stock" in rows, out
    assert "admitted in click order (ingress stamps): yes" in out, out
    assert re.search(r"admissions out of click order: 0$", out, re.M), out
    lag = r"arrival lag .*: [\d.]+/[\d.]+/[\d.]+ s; joins read after a later click was admitted: 0$"
    assert re.search(lag, out, re.M), out
    assert "target (cnbi): 0 error pages, all admitted in arrival order: ok" in out
