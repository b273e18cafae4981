"""B-idle: does an idle learner's open JupyterLab tab keep the server "active" for the culler?

What it measures: one guest opens a course notebook in Chromium (real hub, proxy, dev
cluster with real ``jupyterhub-singleuser`` pods, the production config) and then leaves
the tab alone. Every ``--sample`` seconds for ``--watch`` seconds it reads the hub's
``last_activity`` of that server, which is what the culler judges idleness by, and counts
how often it moved. The hub collects the proxy's activity and the server reports its own
every ``--interval`` seconds (stock: 300 s both; shortened so a short run shows the effect).

Contenders, alternated over ``--runs`` rounds:

- ``stock``: the hub takes the proxy's per-request activity (``CNBI_PROXY_ACTIVITY=true``)
  and the server reports jupyter_server's own activity, which counts every API request
  (``c.LearnerLab.learner_activity = False``): JupyterHub's and jupyter_server's behaviour;
- ``cnbi``: the defaults, ``LearnerActivityProxy`` and the learner's own activity only.

A contender whose ``last_activity`` keeps moving would never be culled with the tab open.

    flock /work/brief/bench.lock .venv/bin/python benchmarks/idle_tab.py --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, print_table

sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from e2e_stack import start_stack  # noqa: E402
from harness import launch_chromium  # noqa: E402

LINK = "/tmplogin?course=python-basics&notebook=intro%2F01-hello.ipynb"
CONTENDERS = {
    "stock": ({"CNBI_PROXY_ACTIVITY": "true"}, "c.LearnerLab.learner_activity = False"),
    "cnbi": ({}, ""),
}


async def one_run(name: str, args: argparse.Namespace, workdir: Path) -> tuple[int, float]:
    """(how often the hub's last_activity moved, seconds since it last moved at the end)."""
    from playwright.async_api import async_playwright

    env, extra = CONTENDERS[name]
    stack = await start_stack(
        workdir,
        env={"CNBI_CULL_EVERY": "0", **env},
        extra_config=f"c.JupyterHub.last_activity_interval = {args.interval}\n"
        f"c.LearnerLab.activity_interval = {args.interval}\n{extra}",
    )
    try:
        async with async_playwright() as p:
            browser = await launch_chromium(p)
            page = await browser.new_page()
            await page.goto(stack.url + LINK)
            await page.wait_for_url("**/lab/**", timeout=180_000)
            user = page.url.split("/user/", 1)[1].split("/", 1)[0]
            await page.wait_for_selector(".jp-LabShell", timeout=180_000)
            await page.wait_for_timeout(2 * args.interval * 1000)  # the kernel settles
            seen, moves, moved_at = None, 0, time.monotonic()
            end = time.monotonic() + args.watch
            while time.monotonic() < end:
                _, model = await stack.api("GET", f"/users/{user}")
                last = ((model or {}).get("servers") or {}).get("", {}).get("last_activity")
                if seen is not None and last != seen:
                    moves, moved_at = moves + 1, time.monotonic()
                seen = last
                await asyncio.sleep(args.sample)
            await browser.close()
        return moves, time.monotonic() - moved_at
    finally:
        await stack.stop()


async def main(args: argparse.Namespace) -> None:
    results: dict[str, list[tuple[int, float]]] = {name: [] for name in CONTENDERS}
    for run in range(args.runs):
        for name in CONTENDERS if run % 2 == 0 else reversed(list(CONTENDERS)):
            with tempfile.TemporaryDirectory(prefix=f"idle-tab-{name}-") as tmp:
                results[name].append(await one_run(name, args, Path(tmp)))
                print(f"run {run + 1} {name}: {results[name][-1]}", flush=True)
    rows = []
    for name, runs in results.items():
        moves = sorted(m for m, _ in runs)
        quiet = sorted(q for _, q in runs)
        rows.append(
            [
                name,
                len(runs),
                moves[len(moves) // 2],
                f"{moves[0]}-{moves[-1]}",
                f"{quiet[len(quiet) // 2]:.0f}",
            ]
        )
    print_table(
        f"Idle open JupyterLab tab, {args.watch:.0f} s watched, activity every {args.interval} s",
        ["contender", "runs", "moves (median)", "moves (range)", "s since last move (median)"],
        rows,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--watch", type=float, default=60, help="seconds the idle tab is watched")
    parser.add_argument("--interval", type=int, default=5, help="activity intervals (s)")
    parser.add_argument("--sample", type=float, default=2, help="seconds between hub reads")
    asyncio.run(main(parser.parse_args()))
