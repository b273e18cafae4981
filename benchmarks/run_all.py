"""Run all four benchmarks in one invocation; each prints its table and its ratios.

    .venv/bin/python benchmarks/run_all.py --quick    # what `make bench` runs (a few minutes)
    .venv/bin/python benchmarks/run_all.py            # full sizes (B1 200 learners / 60 s,
                                                      # B2 1000 logins, B3 10 000 streams,
                                                      # B4 10 000 users): much longer
    .venv/bin/python benchmarks/run_all.py --only b1 b2

B1 launch_storm.py, B2 tmplogin_throughput.py, B3 registry_scale.py, B4 culler.py run one
after the other, each in its own Python process (so one's memory does not count against
the next), with ``--quick`` passed through. Their output is streamed as it comes; a summary
of exit statuses closes the run. Exit status 1 if any benchmark failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

BENCHMARKS = {
    "b1": ("B1 launch storm", "launch_storm.py"),
    "b2": ("B2 tmplogin throughput", "tmplogin_throughput.py"),
    "b3": ("B3 registry scale", "registry_scale.py"),
    "b4": ("B4 culler", "culler.py"),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="quick sizes (make bench)")
    p.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these")
    args = p.parse_args(argv)
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, str(ROOT / "node_modules/.bin"), env["PATH"]])
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.setdefault("NO_PROXY", "127.0.0.1,localhost")
    env.setdefault("no_proxy", "127.0.0.1,localhost")
    summary = []
    for key in args.only or list(BENCHMARKS):
        title, script = BENCHMARKS[key]
        cmd = [sys.executable, str(HERE / script)] + (["--quick"] if args.quick else [])
        print(f"\n===== {title}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.monotonic()
        code = subprocess.call(cmd, cwd=ROOT, env=env)
        summary.append((title, code, time.monotonic() - t0))
    print("\n===== summary")
    for title, code, seconds in summary:
        print(f"{title:26} {'ok' if code == 0 else f'FAILED ({code})':>12} {seconds:7.0f} s")
    return 0 if all(code == 0 for _, code, _ in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
