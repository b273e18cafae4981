"""B1 over capacity: more learners than the hub has room for, and the waiting room.

    .venv/bin/python benchmarks/waiting_room.py             # 1000 arrivals in 60 s, room for 200
    .venv/bin/python benchmarks/waiting_room.py --runs 3    # contenders alternated; medians
    .venv/bin/python benchmarks/waiting_room.py --quick     # 150 arrivals in 15 s, room for 30
    .venv/bin/python benchmarks/waiting_room.py --stamp     # ingress stamps: click order

Contenders, each on a fresh dev cluster (``stub`` runtime, own process) and a fresh real
``jupyterhub`` + configurable-http-proxy (``tests/harness.py``), same hub settings
(``common.HUB_CONFIG``):

- ``cnbi``: ``TmpLoginAuthenticator`` with ``max_anonymous_users`` = ``--capacity`` and the
  waiting room on (its defaults), ``CNBiSpawner``;
- ``stock``: jupyterhub-tmpauthenticator + stock ``KubeSpawner`` with
  ``c.JupyterHub.active_server_limit`` = ``--capacity`` (the stock hub's way to cap servers:
  over it, ``/hub/spawn`` answers 429).

Both get the real culler (``cnbi_spawner.service.culler.Culler``, run in this process with
the ``cnbi`` service role's token), shortened for the run: anonymous servers idle for
``--idle`` seconds are stopped and their users deleted, a pass every ``--cull-every`` s.
That is what frees capacity: a learner who reached the notebook simply leaves it idle.

Each learner is a browser (own cookie jar, own address in ``X-Forwarded-For``). It opens
the link; on the waiting page it polls ``/hub/waiting-room`` as the page's script does, at
the interval the hub says, and reloads the link once admitted (or when its place is gone);
then it launches as in ``launch_storm.py`` up to the notebook URL (200 through the proxy).
A learner "sees an error page" when any response on its way is >= 400, or its launch does
not reach the notebook within ``--timeout``; it does not retry.

Reported per contender (medians over ``--runs``, alternating): learners who reached the
notebook, learners who saw an error page (by reason), learners who waited, link -> notebook
p50/p99 and the longest, hub CPU and peak RSS. For cnbi, from the hub's own log: places
joined, admitted, expired, whether places were admitted in exactly the order they joined
(FIFO; with ``--stamp``: in the order the learners clicked, which the ingress's
``X-Request-Start`` stamps tell the hub), how many joins came out of arrival order
(arrivals a few ms apart whose requests overtook each other on the way in), how many
admissions out of click order, the arrival lag (click to the hub reading the request, from
the ``lag=`` of the hub's join lines) and how many joins the hub read only after a later
click had been admitted (what ``WaitingRoomSettings.arrival_settle`` is for; ``--settle``
sets it). Exit status 1 if a cnbi learner saw an error page or
the admissions were not in that order; the logs of such a run are kept (its directory is
printed, with ``failed-learners.txt``: index, reason, seconds of each failed learner).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from common import (
    IMAGE_REPO,
    NOTEBOOK,
    DevClusterProcess,
    ProcSampler,
    api_timeout_config,
    learner,
    medians,
    ours_config,
    ours_link,
    pct,
    print_table,
    start_hub,
    stock_config,
    stock_link,
)
from launch_storm import reach_notebook, wait_in_line

from cnbi_spawner.service.cull_policy import CullPolicy, Thresholds
from cnbi_spawner.service.culler import Culler
from cnbi_spawner.service.hubapi import HubClient

TOKEN = "cnbi-bench-" + uuid.uuid4().hex
SERVICE = f"""
from cnbi_spawner.service.app import service_role
c.JupyterHub.services = [{{"name": "cnbi", "api_token": {TOKEN!r}}}]
c.JupyterHub.load_roles = [service_role("cnbi")]
"""
JOINED = re.compile(
    r"tmplogin waiting place=(\S+) .*client=10\.(\d+)\.(\d+)\.(\d+)(?: lag=([\d.]+)s)?"
)
ADMITTED = re.compile(r"waiting-room admitted place=(\S+)")
ABANDONED = re.compile(r"waiting-room expired place=(\S+)")
LAPSED = re.compile(r"waiting-room lapsed place=(\S+)")


@dataclass
class Outcome:
    ok: bool
    seconds: float
    reason: str = ""
    waited: bool = False
    polls: int = 0


async def one_learner(
    i: int, link: str, base: str, start_at: float, timeout: float, stamp: bool
) -> Outcome:
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    t0 = time.monotonic()
    marks: dict[str, float] = {}
    waited, polls = False, 0
    try:
        async with learner(i, timeout, stamp) as s:
            status, url, waited, polls = await wait_in_line(s, base, link, marks)
            left = timeout - (time.monotonic() - t0)
            failed = await reach_notebook(s, base, status, url, marks, left)
            if failed:
                return Outcome(False, time.monotonic() - t0, failed, waited, polls)
    except TimeoutError:
        return Outcome(False, time.monotonic() - t0, "timeout", waited, polls)
    except Exception as e:  # noqa: BLE001 - counted and reported by kind
        return Outcome(False, time.monotonic() - t0, type(e).__name__, waited, polls)
    return Outcome(True, time.monotonic() - t0, "", waited, polls)


def inversions(order: list[int]) -> int:
    """Adjacent pairs out of order."""
    return sum(1 for a, b in zip(order, order[1:], strict=False) if b < a)


def queue_order(log: str, stamped: bool) -> dict:
    """What the hub's log says about the queue: joins, admissions, FIFO. A learner's index
    (its client address) is its click order. ``fifo``: every place admitted in join order,
    or, with ingress stamps (``stamped``), in click order."""
    joins, clicked, lags = [], {}, []
    late, last_admitted = 0, -1  # late: read after a later click had been admitted
    events = sorted([*JOINED.finditer(log), *ADMITTED.finditer(log)], key=lambda m: m.start())
    for m in events:
        if m.re is ADMITTED:
            last_admitted = max(last_admitted, clicked.get(m.group(1), -1))
            continue
        joins.append(m.group(1))
        index = (int(m.group(2)) << 16) | (int(m.group(3)) << 8) | int(m.group(4))
        clicked[m.group(1)] = index
        late += index < last_admitted
        if m.group(5):
            lags.append(float(m.group(5)))
    admitted = ADMITTED.findall(log)
    abandoned = set(ABANDONED.findall(log))
    in_join_order = [p for p in joins if p not in abandoned]
    out_of_click = inversions([clicked[p] for p in admitted if p in clicked])
    return {
        "joined": len(joins),
        "admitted": len(admitted),
        "expired": len(abandoned) + len(LAPSED.findall(log)),
        "fifo": out_of_click == 0 if stamped else admitted == in_join_order[: len(admitted)],
        "out_of_arrival": inversions([clicked[p] for p in joins]),
        "out_of_click": out_of_click,
        "late_reads": late,
        "lag_p50": pct(lags, 0.50),
        "lag_p99": pct(lags, 0.99),
        "lag_max": max(lags, default=float("nan")),
    }


async def run_contender(name: str, args: argparse.Namespace, work: Path) -> dict:
    content = work / "content"
    (content / Path(NOTEBOOK).parent).mkdir(parents=True, exist_ok=True)
    (content / NOTEBOOK).write_text('{"cells": [], "metadata": {}, "nbformat": 4}')
    shared = SERVICE + api_timeout_config(args.api_timeout)
    if name == "cnbi":
        extra = f"c.TmpLoginAuthenticator.max_anonymous_users = {args.capacity}\n"
        if args.stamp:
            extra += 'c.WaitingRoomSettings.arrival_header = "X-Request-Start"\n'
        if args.settle is not None:
            extra += f"c.WaitingRoomSettings.arrival_settle = {args.settle}\n"
        config, link_of = ours_config(args.spawn_limit, extra=shared + extra), ours_link
    else:
        extra = f"c.JupyterHub.active_server_limit = {args.capacity}\n"
        config, link_of = stock_config(args.spawn_limit, extra=shared + extra), stock_link
    run_dir = work / f"{name}-{time.monotonic_ns()}"
    async with DevClusterProcess(run_dir / "cluster", {IMAGE_REPO: content}) as cluster:
        hub = await start_hub(config, run_dir / "hub", cluster.kubeconfig)
        client = HubClient(hub.api_url, TOKEN, concurrency=10)
        policy = CullPolicy(
            anonymous=Thresholds(idle_timeout=args.idle, max_age=0, cull_users=True),
            abandoned_grace=args.idle,
        )
        culler = Culler(client, policy, concurrency=10, logger=logging.getLogger("bench.cull"))
        stop = asyncio.Event()
        culling = asyncio.create_task(culler.run_forever(args.cull_every, stop))
        try:
            sampler = ProcSampler(hub.proc.pid)
            sampler.start()
            link = link_of(hub.url)
            t_start = time.monotonic() + 0.5
            outcomes = await asyncio.gather(
                *(
                    one_learner(
                        i,
                        link,
                        hub.url,
                        t_start + i * args.spread / args.n,
                        args.timeout,
                        args.stamp,
                    )  # fmt: skip
                    for i in range(args.n)
                )
            )
            await sampler.stop()
        finally:
            stop.set()
            await culling
            client.close()
            await hub.stop()
        log = hub.log_text()
    ok = [o for o in outcomes if o.ok]
    if args.keep or (name == "cnbi" and len(ok) < len(outcomes)):
        failed = [(i, o.reason, round(o.seconds, 1)) for i, o in enumerate(outcomes) if not o.ok]
        (run_dir / "failed-learners.txt").write_text("\n".join(map(str, failed)) + "\n")
        print(f"  {name} logs kept in {run_dir} (failed learners: failed-learners.txt)")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
    row = {
        "name": name,
        "reached": len(ok),
        "errors": sum(1 for o in outcomes if not o.ok),
        "waited": sum(1 for o in outcomes if o.waited),
        "p50": pct([o.seconds for o in ok], 0.50),
        "p99": pct([o.seconds for o in ok], 0.99),
        "max": max((o.seconds for o in ok), default=float("nan")),
        "polls": sum(o.polls for o in outcomes),
        "cpu_s": sampler.cpu_s,
        "cpu_pct": sampler.cpu_pct,
        "rss_mb": sampler.rss_peak_mb,
        "failures": collections.Counter(o.reason for o in outcomes if not o.ok),
    }
    if name == "cnbi":
        row.update(queue_order(log, args.stamp))
    return row


def median_row(rows: list[dict]) -> dict:
    """Median of each figure over the runs (min-max spread kept for the table)."""
    figures = ("reached", "errors", "waited", "p50", "p99", "max", "polls", "cpu_s", "cpu_pct")
    out = medians(rows, (*figures, "rss_mb"))
    queue = ("joined", "admitted", "expired", "out_of_arrival", "out_of_click", "late_reads")
    for key in (*queue, "lag_p50", "lag_p99", "lag_max"):
        if key in rows[0]:
            out[key] = statistics.median(r[key] for r in rows)
    if "fifo" in rows[0]:
        out["fifo"] = all(r["fifo"] for r in rows)
    return out


def report(by: dict[str, list[dict]], args: argparse.Namespace) -> None:
    header = ["stack", "reached", "error pages", "waited", "p50 s", "p99 s", "max s"]
    header += ["polls", "hub CPU s", "hub CPU %", "hub RSS MB"]
    rows = []
    for name, runs in by.items():
        m = median_row(runs)
        rows.append(
            [name, m["reached"], m["errors"], m["waited"], m["p50"], m["p99"], m["max"]]
            + [m["polls"], m["cpu_s"], m["cpu_pct"], m["rss_mb"]]
        )
        by[name] = [m]
    print_table(
        f"B1 over capacity: {args.n} learners over {args.spread:.0f} s, room for "
        f"{args.capacity}, idle cull after {args.idle:.0f} s (stub runtime; medians of "
        f"{args.runs})",
        header,
        rows,
    )
    print("p50/p99/max: link -> notebook URL 200, learners who reached it")
    for name, (m,) in by.items():
        spread = ", ".join(
            f"{k} {m[k + '_spread'][0]:.1f}-{m[k + '_spread'][1]:.1f}"
            for k in ("reached", "errors", "p99", "cpu_s")
        )
        print(f"  {name} spread over runs: {spread}")
        if m["failures"]:
            print(f"  {name} failures (all runs): {dict(m['failures'])}")
    if "cnbi" in by:
        (m,) = by["cnbi"]
        order = "click order (ingress stamps)" if args.stamp else "join order"
        print(
            f"cnbi queue (hub log, medians): {m['joined']:.0f} joined, {m['admitted']:.0f} "
            f"admitted, {m['expired']:.0f} expired; admitted in {order}: "
            f"{'yes' if m['fifo'] else 'NO'} (every run); joins out of arrival order: "
            f"{m['out_of_arrival']:.0f}; admissions out of click order: {m['out_of_click']:.0f}"
        )
        print(
            f"cnbi arrival lag (click -> the hub reads it; medians of p50/p99/max): "
            f"{m['lag_p50']:.2f}/{m['lag_p99']:.2f}/{m['lag_max']:.2f} s; joins read after a "
            f"later click was admitted: {m['late_reads']:.0f}"
        )
        verdict = "ok" if m["errors"] == 0 and m["fifo"] else "MISS"
        print(f"target (cnbi): 0 error pages, all admitted in arrival order: {verdict}")


async def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=None, help="learners (default 1000; quick 150)")
    p.add_argument("--spread", type=float, default=None, help="arrival window s (60; quick 15)")
    p.add_argument("--capacity", type=int, default=None, help="room for (200; quick 30)")
    p.add_argument("--quick", action="store_true", help="150 learners over 15 s, room for 30")
    p.add_argument("--runs", type=int, default=1, help="alternating runs per contender")
    p.add_argument("--only", choices=["cnbi", "stock"], help="run one contender")
    p.add_argument("--idle", type=float, default=20.0, help="cull servers idle this long (s)")
    p.add_argument("--cull-every", type=float, default=2.0, help="seconds between cull passes")
    p.add_argument("--spawn-limit", type=int, default=100, help="concurrent_spawn_limit")
    p.add_argument(
        "--api-timeout", type=float, default=30, help="KubeSpawner k8s_api_request_timeout (s)"
    )
    p.add_argument(
        "--timeout", type=float, default=1800, help="per learner (waiting included), seconds"
    )
    p.add_argument("--keep", action="store_true", help="keep each run's directory (logs)")
    p.add_argument(
        "--stamp",
        action="store_true",
        help="learners' requests carry X-Request-Start (as an ingress stamps them) and cnbi "
        "orders its queue by it (WaitingRoomSettings.arrival_header)",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=None,
        help="with --stamp: WaitingRoomSettings.arrival_settle (s; default: the product's)",
    )
    args = p.parse_args(argv)
    args.n = args.n or (150 if args.quick else 1000)
    args.spread = args.spread if args.spread is not None else (15.0 if args.quick else 60.0)
    args.capacity = args.capacity or (30 if args.quick else 200)
    names = [args.only] if args.only else ["cnbi", "stock"]
    work = Path(tempfile.mkdtemp(prefix="cnbi-bench-waiting-"))
    by: dict[str, list[dict]] = {n: [] for n in names}
    try:
        for run in range(args.runs):
            for name in names if run % 2 == 0 else reversed(names):
                load0 = os.getloadavg()[0]
                r = await run_contender(name, args, work)
                r["load"] = (load0, os.getloadavg()[0])
                by[name].append(r)
                print(
                    f"run {run + 1} {name}: {r['reached']}/{args.n} reached, "
                    f"{r['errors']} error pages, {r['waited']} waited, max {r['max']:.1f} s, "
                    f"load average {r['load'][0]:.1f} -> {r['load'][1]:.1f}"
                    + (f", FIFO {r['fifo']}" if "fifo" in r else "")
                    + (f"; failures {dict(r['failures'])}" if r["failures"] else ""),
                    flush=True,
                )
    finally:
        if not args.keep and not any(work.glob("*/failed-learners.txt")):
            shutil.rmtree(work, ignore_errors=True)
    fifo_ok = all(r.get("fifo", True) for r in by.get("cnbi", []))
    cnbi_errors = sum(r["errors"] for r in by.get("cnbi", []))
    report(by, args)
    return 0 if cnbi_errors == 0 and fifo_ok else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    sys.exit(asyncio.run(main()))
