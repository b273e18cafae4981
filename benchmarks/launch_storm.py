"""B1 launch storm: a lecture hall of anonymous learners opening one course link at once.

    .venv/bin/python benchmarks/launch_storm.py                  # 200 learners over 60 s
    .venv/bin/python benchmarks/launch_storm.py --n 1000         # the headline run
    .venv/bin/python benchmarks/launch_storm.py --quick          # 100 learners over 20 s
    .venv/bin/python benchmarks/launch_storm.py --n 1000 --pool 1000 --runs 3   # medians

For each contender, in the same invocation and with the same load, a fresh dev cluster
(``cnbi-devcluster serve --runtime stub``, own process) and a fresh real ``jupyterhub`` +
configurable-http-proxy (``tests/harness.py``):

- ``cnbi``: ``TmpLoginAuthenticator`` + ``CNBiSpawner``; link
  ``/tmplogin?course=…&notebook=…``;
- ``stock``: jupyterhub-tmpauthenticator's ``TmpAuthenticator`` + stock ``KubeSpawner`` with a
  fixed image; link ``/tmplogin?next=/hub/spawn?next=/hub/user-redirect/lab/tree/…``;
- ``pooled`` (with ``--pool N``): ``cnbi`` plus the ``cnbi`` service keeping a warm pool of N
  ready servers for the course (``PoolSettings.targets``); the storm starts once the pool is
  full (the time to warm it is reported), and the service refills it during the storm.

N learners arrive evenly spread over T seconds; each is a browser with its own cookie jar
and client address (``X-Forwarded-For`` from an ingress). It follows redirects; on cnbi's
waiting room (``/hub/tmplogin`` answering the waiting page) it polls and reloads the link
when admitted, as the page's JavaScript does (a stock hub has no waiting room: its 429 is
an error page); on the spawn-pending page it reads the progress event stream (as the
page's JavaScript does), then reloads; finally it opens the notebook URL
(``/user/<name>/lab/tree/<notebook>``) and needs a 200 through the proxy. The stub pods do
not redirect to ``default_url`` like JupyterLab would, so the learner opens the notebook URL
itself when it lands on ``/user/<name>/``.

Reported per contender: success %, login->ready p50/p95/p99 (successful learners),
launches/s (successes / time from the first arrival to the last ready), hub CPU (seconds,
% of one core over the run) and peak RSS of the hub process; learners who waited in the
room; failures by reason. Then the
ratios cnbi / stock. With ``--runs K`` the contenders take turns K times (the order
reversed every other round), each round's table is printed, then the medians with their
min-max spread and the machine's load average before and after every run. Exit status 1
if any cnbi learner failed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import aiohttp
import yarl
from common import (
    COURSE,
    IMAGE_REPO,
    NOTEBOOK,
    ROOT,
    STATIC_IMAGES,
    DevClusterProcess,
    ProcSampler,
    api_timeout_config,
    learner,
    medians,
    ours_config,
    ours_link,
    pct,
    print_table,
    proxy_pid,
    ratio,
    start_hub,
    start_profiler,
    stock_config,
    stock_link,
    stop_profiler,
)
from harness import free_port, service_command

sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from test_databases import postgres_cluster  # noqa: E402 (the e2e tests' throw-away PostgreSQL)

NOTEBOOK_SUFFIX = "/lab/tree/" + quote(NOTEBOOK)
SQLITE_WAL = "\nfrom cnbi_spawner.hub_database import use_sqlite_wal\nuse_sqlite_wal()\n"


def pool_config(work: Path, kubeconfig: Path, target: int, max_starts: int) -> str:
    """The hub config lines that add the cnbi service with a warm pool of ``target``."""
    service_config = work / "pool_service_config.py"
    service_config.write_text(
        "c.ImageRegistry.watch_imagestreams = False\n"
        f"c.ImageRegistry.static_images = {STATIC_IMAGES!r}\n"
        f"c.PoolSettings.targets = {{{COURSE!r}: {target}}}\n"
        f"c.PoolSettings.max_concurrent_starts = {max_starts}\n"
    )
    cmd = service_command(
        f"--config={service_config}",
        "--cull-every=0",
        "--namespace=default",
        f"--kubeconfig={kubeconfig}",
        f"--concurrency={max_starts + 5}",
    )
    return f"""
from cnbi_spawner.service.app import service_role
from cnbi_spawner.service.pool import pool_role
c.JupyterHub.services = [{{
    "name": "cnbi",
    "url": "http://127.0.0.1:{free_port()}",
    "command": {cmd!r},
    "environment": {{"KUBECONFIG": {str(kubeconfig)!r}}},
}}]
c.JupyterHub.load_roles = [service_role("cnbi"), pool_role("cnbi")]
"""


async def ready_pool(hub) -> int:
    """Unclaimed, ready pool servers, as the cnbi service counts them (its
    ``cnbi_service_pool_ready`` gauge: one cheap request, no user listing in the hub, so
    watching the pool fill does not slow the hub down)."""
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{hub.url}/services/cnbi/metrics") as r:
            text = await r.text() if r.status == 200 else ""
    found = re.findall(r"^cnbi_service_pool_ready\{[^}]*\} (\S+)$", text, re.M)
    return int(sum(float(v) for v in found))


async def claimed_count(hub) -> int:
    """Launches the hub answered with a pool server (its ``cnbi_tmplogin_total``)."""
    headers = {"Authorization": f"token {hub.api_token}"}
    async with aiohttp.ClientSession(headers=headers) as s:
        async with s.get(f"{hub.url}/hub/metrics") as r:
            text = await r.text()
    found = re.search(r'^cnbi_tmplogin_total\{result="claimed"\} (\S+)$', text, re.M)
    return int(float(found.group(1))) if found else 0


async def warm_pool(hub, target: int, timeout: float) -> None:
    """Return once ``target`` pool servers are ready."""
    t0 = time.monotonic()
    while await ready_pool(hub) < target:
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"pool not warm after {timeout:.0f} s")
        await asyncio.sleep(2)


@dataclass
class Outcome:
    ok: bool
    seconds: float
    reason: str = ""
    ready_at: float = 0.0
    login: float = 0.0  # link -> the browser asks for /hub/spawn
    waited: bool = False  # shown the waiting room first


async def wait_progress(s: aiohttp.ClientSession, base: str, name: str, timeout: float) -> None:
    """Read the spawn's progress event stream until ready/failed (what spawn-pending's JS does)."""
    xsrf = next((c.value for c in s.cookie_jar if c.key == "_xsrf"), "")
    url = f"{base}/hub/api/users/{quote(name)}/server/progress?_xsrf={quote(xsrf)}"
    headers = {"Accept": "text/event-stream", "X-XSRFToken": xsrf}
    async with s.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
        if r.status != 200:
            raise RuntimeError(f"progress {r.status}")
        async for line in r.content:
            if line.startswith(b"data:"):
                event = json.loads(line[5:])
                if event.get("failed"):
                    raise RuntimeError("spawn failed")
                if event.get("ready"):
                    return


async def get(s: aiohttp.ClientSession, url, marks: dict) -> tuple[int, yarl.URL]:
    """GET following redirects one by one (like a browser); notes when /hub/spawn is reached."""
    for _ in range(10):
        if yarl.URL(str(url)).path.startswith("/hub/spawn") and "login" not in marks:
            marks["login"] = time.monotonic()  # logged in: the browser asks for the spawn
        async with s.get(url, allow_redirects=False) as r:
            status = r.status
            await r.read()
            location = r.headers.get("Location")
        if status not in (301, 302, 303, 307) or not location:
            return status, r.url
        url = r.url.join(yarl.URL(location))
    return 310, r.url


async def reach_notebook(
    s: aiohttp.ClientSession, base: str, status: int, url: yarl.URL, marks: dict, left: float
) -> str:
    """From where the link led (``status``, ``url``) on to the notebook URL, within ``left``
    seconds: "" once it answers 200, else why not."""
    if status == 200 and url.path.startswith("/hub/spawn-pending/"):
        name = url.path.rstrip("/").rsplit("/", 1)[-1]
        await wait_progress(s, base, name, left)
        status, url = await get(s, url, marks)
    if status != 200 or not url.path.startswith("/user/"):
        return f"{status} {url.path[:20]}"
    if not url.path.endswith(NOTEBOOK_SUFFIX):  # a stub pod ignores default_url
        name = url.path.split("/")[2]
        status, url = await get(s, f"{base}/user/{name}{NOTEBOOK_SUFFIX}", marks)
        if status != 200:
            return f"notebook {status}"
    return ""


async def wait_in_line(s: aiohttp.ClientSession, base: str, link: str, marks: dict):
    """Open the link; while it answers the waiting page, poll like the page does and reload
    the link when told. Returns (status, url, waited, polls)."""
    status, url = await get(s, link, marks)
    waited, polls, pause = False, 0, 1.0
    while status == 200 and url.path == "/hub/tmplogin":
        waited = True
        await asyncio.sleep(pause)
        async with s.get(f"{base}/hub/waiting-room", headers={"Accept": "application/json"}) as r:
            polls += 1
            if r.status not in (200, 404):
                return r.status, r.url, waited, polls
            state = await r.json()
        if state["state"] == "waiting":
            pause = float(state["poll_seconds"])
            continue
        status, url = await get(s, link, marks)  # admitted (or the place is gone): reload
    return status, url, waited, polls


async def one_learner(i: int, link: str, base: str, start_at: float, timeout: float) -> Outcome:
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    t0 = time.monotonic()
    marks: dict[str, float] = {}
    waited = False
    try:
        async with learner(i, timeout) as s:
            status, url, waited, _ = await wait_in_line(s, base, link, marks)
            left = timeout - (time.monotonic() - t0)
            failed = await reach_notebook(s, base, status, url, marks, left)
            if failed:
                return Outcome(False, time.monotonic() - t0, failed, waited=waited)
    except TimeoutError:
        return Outcome(False, time.monotonic() - t0, "timeout", waited=waited)
    except Exception as e:  # noqa: BLE001 - counted and reported by kind
        return Outcome(False, time.monotonic() - t0, type(e).__name__, waited=waited)
    t1 = time.monotonic()
    login = marks.get("login", t1) - t0
    return Outcome(True, t1 - t0, ready_at=t1, login=login, waited=waited)


async def run_contender(
    name: str,
    config: str,
    link_of,
    n: int,
    spread: float,
    timeout: float,
    work: Path,
    profile: Path | None = None,
    pool: tuple[int, int] | None = None,
    timeline: bool = False,
) -> dict:
    content = work / "content"
    (content / Path(NOTEBOOK).parent).mkdir(parents=True, exist_ok=True)
    (content / NOTEBOOK).write_text('{"cells": [], "metadata": {}, "nbformat": 4}')
    async with DevClusterProcess(work / f"{name}-cluster", {IMAGE_REPO: content}) as cluster:
        if pool is not None:
            config += pool_config(work, cluster.kubeconfig, *pool)
        t_hub = time.monotonic()
        hub = await start_hub(config, work / f"{name}-hub", cluster.kubeconfig)
        try:
            warm_s = float("nan")
            if pool is not None:
                folded = profile / f"{name}-warm-hub.folded" if profile else None
                warm_spy = start_profiler(hub.proc.pid, folded) if folded else None
                try:
                    await warm_pool(hub, pool[0], timeout * 5)
                finally:
                    await stop_profiler(warm_spy)
                warm_s = time.monotonic() - t_hub
                print(f"{name}: pool of {pool[0]} warm in {warm_s:.1f} s", flush=True)
            link = link_of(hub.url)
            sampler = ProcSampler(hub.proc.pid)
            others = {
                "cluster": ProcSampler(cluster.proc.pid),
                "proxy": ProcSampler(proxy_pid(hub)),
            }
            for sm in (sampler, *others.values()):
                sm.start()
            storm_file = f"{name}-hub.speedscope.json" if timeline else f"{name}-hub.folded"
            spy = start_profiler(hub.proc.pid, profile / storm_file) if profile else None
            t_start = time.monotonic() + 0.5
            outcomes = await asyncio.gather(
                *(
                    one_learner(i, link, hub.url, t_start + i * spread / n, timeout)
                    for i in range(n)
                )
            )
            for sm in (sampler, *others.values()):
                await sm.stop()
            await stop_profiler(spy)
            claimed = await claimed_count(hub) if pool is not None else 0
        finally:
            await hub.stop()
    ok = [o for o in outcomes if o.ok]
    span = max((o.ready_at for o in ok), default=t_start) - t_start
    return {
        "name": name,
        "n": n,
        "success": 100 * len(ok) / n,
        "p50": pct([o.seconds for o in ok], 0.50),
        "p95": pct([o.seconds for o in ok], 0.95),
        "p99": pct([o.seconds for o in ok], 0.99),
        "login_p50": pct([o.login for o in ok], 0.50),
        "login_p99": pct([o.login for o in ok], 0.99),
        "cluster_cpu_s": others["cluster"].cpu_s,
        "proxy_cpu_s": others["proxy"].cpu_s,
        "rate": len(ok) / span if span > 0 else float("nan"),
        "cpu_s": sampler.cpu_s,
        "cpu_pct": sampler.cpu_pct,
        "rss_mb": sampler.rss_peak_mb,
        "waited": sum(o.waited for o in outcomes),
        "failures": collections.Counter(o.reason for o in outcomes if not o.ok),
        "warm_s": warm_s,
        "claimed": claimed,
    }


#: the figures of a row that ``--runs`` reports as medians
FIGURES = ("success", "p50", "p95", "p99", "rate", "cpu_s", "cpu_pct", "rss_mb")
FIGURES += ("login_p50", "login_p99", "cluster_cpu_s", "proxy_cpu_s", "warm_s", "claimed")
FIGURES += ("waited",)


def report(rows: list[dict], n: int, spread: float, db: str = "sqlite", what: str = "") -> None:
    header = ["stack", "success %", "waited", "p50 s", "p95 s", "p99 s", "launches/s"]
    header += ["hub CPU s", "hub CPU %", "hub RSS MB", "login p50", "login p99"]
    header += ["cluster CPU s", "proxy CPU s"]
    note = "login = link -> the browser requests /hub/spawn; CPU s over the whole run; "
    note += "waited = learners shown the waiting room before they went on"
    print_table(
        f"B1 launch storm: {n} learners over {spread:.0f} s (stub runtime, {db}){what}",
        header,
        [
            [r["name"], r["success"], r["waited"], r["p50"], r["p95"], r["p99"], r["rate"]]
            + [r["cpu_s"], r["cpu_pct"], r["rss_mb"], r["login_p50"], r["login_p99"]]
            + [r["cluster_cpu_s"], r["proxy_cpu_s"]]
            for r in rows
        ],
    )
    print(note)
    for r in rows:
        if r["warm_s"] == r["warm_s"]:  # not nan: a pooled run
            print(
                f"  {r['name']}: pool warm {r['warm_s']:.1f} s after the hub's start; "
                f"{r['claimed']:.0f} of {r['n']} learners got a pool server (the rest spawned)"
            )
        if r["failures"]:
            print(f"  {r['name']} failures: {dict(r['failures'])}")
        if "p99_spread" in r:
            spread_of = ", ".join(
                f"{k} {r[k + '_spread'][0]:.2f}-{r[k + '_spread'][1]:.2f}"
                for k in ("success", "p50", "p99", "rate", "warm_s")
                if r[k] == r[k]  # not nan (warm_s of an unpooled contender)
            )
            loads = " ".join(f"{a:.1f}->{b:.1f}" for a, b in r["loads"])
            print(f"  {r['name']} spread over runs: {spread_of}; load average {loads}")
    by = {r["name"]: r for r in rows}
    if {"cnbi", "stock"} <= by.keys():
        a, b = by["cnbi"], by["stock"]
        print(
            f"ratio cnbi/stock: launches/s {ratio(a['rate'], b['rate'])} (target >= 0.95x), "
            f"p99 {ratio(a['p99'], b['p99'])}, hub CPU {ratio(a['cpu_s'], b['cpu_s'])}, "
            f"RSS {ratio(a['rss_mb'], b['rss_mb'])}"
        )
    if "cnbi" in by:
        a = by["cnbi"]
        verdict = "ok" if a["success"] == 100 and a["p99"] <= 10 else "MISS"
        print(f"targets (cnbi): 100 % success, p99 <= 10 s: {verdict}")
    if "pooled" in by:
        a = by["pooled"]
        verdict = "ok" if a["success"] == 100 and a["p99"] <= 2 else "MISS"
        print(f"targets (pooled): 100 % success, p99 <= 2 s: {verdict}")


async def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=None, help="learners (default 200; quick 100)")
    p.add_argument("--spread", type=float, default=None, help="arrival window s (60; quick 20)")
    p.add_argument("--quick", action="store_true", help="100 learners over 20 s")
    p.add_argument("--only", choices=["cnbi", "stock", "pooled"], help="run one contender")
    p.add_argument("--pool", type=int, default=0, help="add the pooled contender: pool size")
    p.add_argument("--pool-starts", type=int, default=50, help="pool starts in flight")
    p.add_argument(
        "--db",
        choices=["sqlite", "sqlite-wal", "postgresql"],
        default="sqlite",
        help="hub DB (sqlite-wal: cnbi_spawner.hub_database.use_sqlite_wal, every contender)",
    )
    p.add_argument("--timeout", type=float, default=180, help="per learner, seconds")
    p.add_argument("--spawn-limit", type=int, default=100, help="concurrent_spawn_limit")
    p.add_argument(
        "--api-timeout",
        type=float,
        help="KubeSpawner k8s_api_request_timeout (s) for every contender (default: KubeSpawner's)",
    )
    p.add_argument("--global-rate", type=float, default=1200, help="tmplogin logins/min")
    p.add_argument(
        "--profile", type=Path, help="py-spy the hub (warm-up, storm): folded stacks in this dir"
    )
    p.add_argument(
        "--timeline",
        action="store_true",
        help="with --profile: the storm's profile as speedscope JSON (samples in time order, "
        "to find what stalls the hub's event loop)",
    )
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    p.add_argument("--runs", type=int, default=1, help="alternating rounds; medians reported")
    args = p.parse_args(argv)
    n = args.n or (100 if args.quick else 200)
    spread = args.spread if args.spread is not None else (20.0 if args.quick else 60.0)
    api = api_timeout_config(args.api_timeout)
    contenders = {
        "cnbi": (ours_config(args.spawn_limit, args.global_rate, api), ours_link),
        "stock": (stock_config(args.spawn_limit, api), stock_link),
    }
    if args.pool:
        contenders["pooled"] = contenders["cnbi"]
    if args.only:
        contenders = {args.only: contenders[args.only]}
    work = Path(tempfile.mkdtemp(prefix="cnbi-bench-storm-"))
    runs: dict[str, list[dict]] = {name: [] for name in contenders}
    try:
        for run in range(args.runs):
            order = list(contenders) if run % 2 == 0 else list(reversed(contenders))
            for name in order:
                config, link_of = contenders[name]
                pool = (args.pool, args.pool_starts) if name == "pooled" else None
                load0 = os.getloadavg()[0]
                with contextlib.ExitStack() as databases:
                    if args.db == "postgresql":  # a fresh throw-away PostgreSQL per contender
                        url = databases.enter_context(postgres_cluster())
                        config += f"\nc.JupyterHub.db_url = {url!r}\n"
                    elif args.db == "sqlite-wal":  # the same hub setting for every contender
                        config += SQLITE_WAL
                    r = await run_contender(
                        name, config, link_of, n, spread, args.timeout, work / f"run{run + 1}",
                        args.profile and args.profile / f"run{run + 1}", pool, args.timeline,
                    )  # fmt: skip
                r["load"] = (load0, os.getloadavg()[0])
                runs[name].append(r)
                print(
                    f"run {run + 1} {name}: {r['success']:.1f} % ready, p99 {r['p99']:.2f} s, "
                    f"load average {r['load'][0]:.1f} -> {r['load'][1]:.1f}",
                    flush=True,
                )
            if args.runs > 1:
                report([runs[name][-1] for name in contenders], n, spread, args.db,
                       f", run {run + 1} of {args.runs}")  # fmt: skip
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    rows = [median_of(runs[name]) for name in contenders]
    what = f", medians of {args.runs} alternating runs" if args.runs > 1 else ""
    report(rows, n, spread, args.db, what)
    every = [r for name, rs in runs.items() if name != "stock" for r in rs]
    return 0 if all(r["success"] == 100 for r in every) else 1


def median_of(rows: list[dict]) -> dict:
    """A contender's row: itself for one run, else the medians over its runs."""
    if len(rows) == 1:
        return rows[0]
    row = medians(rows, FIGURES)
    row["loads"] = [r["load"] for r in rows]
    return row


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
