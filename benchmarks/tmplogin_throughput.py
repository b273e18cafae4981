"""B2 /hub/tmplogin throughput: anonymous logins per second, no spawn.

    .venv/bin/python benchmarks/tmplogin_throughput.py           # 1000 logins, 10 in flight
    .venv/bin/python benchmarks/tmplogin_throughput.py --quick   # 300 logins

Each login is a new browser (empty cookie jar, its own client address via
``X-Forwarded-For``) sending ``GET /hub/tmplogin?…`` through the proxy and stopping at the
302 to ``/hub/spawn…``: the hub has created the user (and, for cnbi, validated the launch
plan, checked the rate limits and capacity and put the user in the ``anonymous`` group)
and set its cookie, but the spawner is never reached.

- ``cnbi``: ``TmpLoginAuthenticator``; ``/hub/tmplogin?course=…&notebook=…``; its global
  rate limit is off (``global_rate = 0``) so that it measures the hub, not the limiter
  (the per-client limiter stays on; every browser has its own address);
- ``stock``: jupyterhub-tmpauthenticator; ``/hub/tmplogin?next=/hub/spawn?next=…``.

Both hubs have KubeSpawner config and a stub dev cluster (as in B1), fresh per contender.
Both stacks stay up for the whole run. After ``--warmup`` logins on each, ``--n`` logins
with ``--concurrency`` in flight are timed in ``--rounds`` rounds that alternate between the
stacks (ABBA...), because other work on a shared machine makes the load drift by 2-3x over
a minute. Reports the median logins/s and hub CPU ms per login over the rounds, latency
p50/p99 over all timed logins, and the ratio cnbi / stock (target >= 0.9x).
Exit status 1 if any login did not get its 302.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import (
    DevClusterProcess,
    ProcSampler,
    learner,
    ours_config,
    ours_link,
    pct,
    print_table,
    ratio,
    start_hub,
    start_profiler,
    stock_config,
    stock_link,
    stop_profiler,
)

TARGET = 0.9


async def login(i: int, link: str) -> tuple[bool, float]:
    t0 = time.perf_counter()
    try:
        async with learner(i, 60) as s, s.get(link, allow_redirects=False) as r:
            await r.read()
            ok = r.status == 302 and r.headers.get("Location", "").startswith("/hub/spawn")
    except Exception:  # noqa: BLE001 - counted as a failed login
        ok = False
    return ok, time.perf_counter() - t0


async def storm(link: str, first: int, n: int, concurrency: int) -> list[tuple[bool, float]]:
    queue = iter(range(first, first + n))
    out: list[tuple[bool, float]] = []

    async def worker() -> None:
        for i in queue:
            out.append(await login(i, link))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


class Contender:
    """One stack (dev cluster + hub) kept up across the rounds."""

    def __init__(self, name: str, config: str, link_of, work: Path) -> None:
        self.name, self.config, self.link_of, self.work = name, config, link_of, work
        self.rounds: list[dict] = []
        self.failed = 0
        self.next_index = 0

    async def __aenter__(self) -> Contender:
        self.cluster = DevClusterProcess(self.work / f"{self.name}-cluster")
        await self.cluster.__aenter__()
        try:
            self.hub = await start_hub(
                self.config, self.work / f"{self.name}-hub", self.cluster.kubeconfig
            )
        except BaseException:
            await self.cluster.__aexit__()
            raise
        url = self.hub.url
        self.link = self.link_of(url).replace(f"{url}/tmplogin", f"{url}/hub/tmplogin")
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.hub.stop()
        finally:
            await self.cluster.__aexit__()

    async def round(self, n: int, concurrency: int, profile: Path | None, timed: bool) -> None:
        sampler = ProcSampler(self.hub.proc.pid)
        sampler.start()
        spy = None
        if profile:
            out = profile / f"{self.name}-tmplogin-{len(self.rounds)}.folded"
            spy = start_profiler(self.hub.proc.pid, out)
        t0 = time.perf_counter()
        results = await storm(self.link, self.next_index, n, concurrency)
        elapsed = time.perf_counter() - t0
        await sampler.stop()
        await stop_profiler(spy)
        self.next_index += n
        ok = [t for good, t in results if good]
        self.failed += len(results) - len(ok)
        if timed:
            self.rounds.append(
                {
                    "rate": len(ok) / elapsed,
                    "latencies": ok,
                    "cpu_ms": 1000 * sampler.cpu_s / max(1, len(ok)),
                    "rss_mb": sampler.rss_peak_mb,
                }
            )

    def row(self) -> dict:
        latencies = [t for r in self.rounds for t in r["latencies"]]
        return {
            "name": self.name,
            "failed": self.failed,
            "rate": statistics.median(r["rate"] for r in self.rounds),
            "rates": [r["rate"] for r in self.rounds],
            "p50": pct(latencies, 0.5) * 1000,
            "p99": pct(latencies, 0.99) * 1000,
            "cpu_ms": statistics.median(r["cpu_ms"] for r in self.rounds),
            "rss_mb": max(r["rss_mb"] for r in self.rounds),
        }


async def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=None, help="timed logins (default 1000; quick 300)")
    p.add_argument("--quick", action="store_true", help="300 logins")
    p.add_argument("--concurrency", type=int, default=10, help="logins in flight")
    p.add_argument("--warmup", type=int, default=20, help="untimed logins first")
    p.add_argument("--rounds", type=int, default=None, help="alternating rounds (5; quick 3)")
    p.add_argument("--only", choices=["cnbi", "stock"], help="run one contender")
    p.add_argument("--profile", type=Path, help="py-spy the hub; folded stacks into this dir")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = p.parse_args(argv)
    args.n = args.n or (300 if args.quick else 1000)
    args.rounds = args.rounds or (3 if args.quick else 5)
    contenders = {
        "cnbi": (ours_config(global_rate=0), ours_link),
        "stock": (stock_config(), stock_link),
    }
    if args.only:
        contenders = {args.only: contenders[args.only]}
    work = Path(tempfile.mkdtemp(prefix="cnbi-bench-tmplogin-"))
    per_round = max(1, args.n // args.rounds)
    try:
        async with contextlib.AsyncExitStack() as stack:
            stacks = [
                await stack.enter_async_context(Contender(name, config, link_of, work))
                for name, (config, link_of) in contenders.items()
            ]
            for c in stacks:
                await c.round(args.warmup, args.concurrency, None, timed=False)
            for k in range(args.rounds):  # alternate: the machine's load drifts
                for c in stacks if k % 2 == 0 else stacks[::-1]:
                    await c.round(per_round, args.concurrency, args.profile, timed=True)
                    print(
                        f"round {k + 1} {c.name}: {c.rounds[-1]['rate']:.1f} logins/s", flush=True
                    )
            rows = [c.row() for c in stacks]
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print_table(
        f"B2 tmplogin throughput: {args.rounds} alternating rounds of {per_round} logins, "
        f"{args.concurrency} in flight, no spawn (medians over rounds)",
        ["stack", "logins/s", "p50 ms", "p99 ms", "hub CPU ms/login", "RSS MB", "failed", "rounds"],
        [
            [r["name"], r["rate"], r["p50"], r["p99"], r["cpu_ms"], r["rss_mb"], r["failed"]]
            + [" ".join(f"{x:.0f}" for x in r["rates"])]
            for r in rows
        ],
    )
    by = {r["name"]: r for r in rows}
    if {"cnbi", "stock"} <= by.keys():
        a, b = by["cnbi"], by["stock"]
        verdict = "ok" if a["rate"] >= TARGET * b["rate"] else "MISS"
        print(
            f"ratio cnbi/stock: logins/s {ratio(a['rate'], b['rate'])} (target >= {TARGET}x: "
            f"{verdict}), CPU per login {ratio(a['cpu_ms'], b['cpu_ms'])}"
        )
    return 0 if all(r["failed"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
