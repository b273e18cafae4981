"""B0 first click: one learner, a real Chromium, the process runtime: link -> notebook open.

    .venv/bin/python benchmarks/first_click.py              # 10 launches per contender
    .venv/bin/python benchmarks/first_click.py --runs 3     # a smoke run

Three stacks run side by side (each: a dev cluster with the process runtime, so pods are
real ``jupyterhub-singleuser`` + JupyterLab serving the demo courses, a real hub + proxy):

- ``pooled``: the production config (``tests/e2e/e2e_stack.py``) with a warm pool of one
  ready server for the course (``CNBI_POOL_TARGETS``); the link is claimed at /tmplogin;
- ``unpooled``: the same stack without a pool: every click spawns;
- ``stock``: jupyterhub-tmpauthenticator + stock KubeSpawner with the course image fixed,
  link ``/tmplogin?next=/hub/spawn?next=/hub/user-redirect/lab/tree/<notebook>``;
- ``floor``: the notebook URL of a server that is already running, opened in a fresh
  browser context that holds only the hub's login cookie (what a learner's second tab
  costs: OAuth with the hub, the Lab page, JupyterLab's own frontend load).

One launch = a fresh browser context (empty cache and cookies; one Chromium process for all)
goes to the link and waits until the notebook's cells are visible
(``.jp-NotebookPanel .jp-Cell``). Contenders alternate launch by launch (pooled, unpooled,
stock, floor, pooled, …); before a pooled launch the pool is given time to refill (not
timed). Each learner's user is deleted after its launch, so the machine carries the same
load throughout.

Then the server side alone: ``link -> Lab page 200`` over plain HTTP (aiohttp, following
the redirects and the OAuth dance, no browser), pooled and unpooled, alternating.

Prints per contender: runs, failures, p50, min-max and the ratios pooled / floor and
pooled / unpooled; every failed launch with its reason. Exit status 1 if a launch failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from urllib.parse import quote

import aiohttp
import yarl
from common import ROOT, pct, print_table, ratio, stock_config, stock_link

sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from e2e_stack import MITOL_LINK, NS, Stack, start_stack, wait_for  # noqa: E402
from harness import BROWSER_NAVIGATION, HubProcess, launch_chromium  # noqa: E402

from cnbi_devcluster import DevCluster  # noqa: E402
from cnbi_devcluster.demo import demo_image_map, seed_imagestreams  # noqa: E402

COURSE = "uai_source-uai.intro"
NOTEBOOK = "lectures/lecture1/mod5_lec1.ipynb"
CELLS = ".jp-NotebookPanel .jp-Cell"
LAUNCH_TIMEOUT = 180.0


class StockStack:
    """Dev cluster (process runtime, demo images) + a stock TmpAuthenticator hub."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.cluster = DevCluster(workdir / "cluster", runtime="process", images=demo_image_map())
        self.hub: HubProcess | None = None

    async def start(self) -> StockStack:
        await self.cluster.start()
        await seed_imagestreams(self.cluster.kubeconfig, NS)
        self.hub = HubProcess(
            stock_config(), workdir=self.workdir / "hub", kubeconfig=self.cluster.kubeconfig
        )
        await self.hub.start(timeout=120)
        return self

    @property
    def url(self) -> str:
        return self.hub.url

    async def stop(self) -> None:
        try:
            if self.hub is not None:
                await self.hub.stop()
        finally:
            await self.cluster.stop()


async def api(hub: HubProcess, method: str, path: str):
    headers = {"Authorization": f"token {hub.api_token}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        async with s.request(method, hub.api_url + path, headers=headers) as r:
            text = await r.text()
            return r.status, (json.loads(text) if text and r.status < 300 else text)


async def delete_user(hub: HubProcess, name: str) -> None:
    """Remove a learner after its launch (the hub stops its server first)."""
    for _ in range(60):
        status, _ = await api(hub, "DELETE", f"/users/{name}")
        if status in (204, 404):
            return
        await asyncio.sleep(1)  # 400: a stop still pending


async def pool_ready(hub: HubProcess) -> bool:
    status, group = await api(hub, "GET", "/groups/cnbi-pool")
    if status != 200:
        return False
    for name in group.get("users", []):
        status, user = await api(hub, "GET", f"/users/{name}")
        if status == 200 and ((user.get("servers") or {}).get("") or {}).get("ready"):
            return True
    return False


def user_of(url: str) -> str | None:
    parts = yarl.URL(url).path.split("/")
    return parts[2] if len(parts) > 2 and parts[1] == "user" else None


async def browser_launch(browser, url: str, cookies: list | None = None) -> tuple[float, str, list]:
    """Open ``url`` in a fresh context; seconds until the notebook's cells show, its user,
    and the context's hub cookies (for the floor)."""
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        if cookies:
            await context.add_cookies(cookies)
        page = await context.new_page()
        t0 = time.monotonic()
        await page.goto(url, timeout=LAUNCH_TIMEOUT * 1000)
        await page.wait_for_selector(CELLS, state="visible", timeout=LAUNCH_TIMEOUT * 1000)
        seconds = time.monotonic() - t0
        hub_cookies = [c for c in await context.cookies() if c["path"].startswith("/hub")]
        return seconds, user_of(page.url) or "", hub_cookies
    finally:
        await context.close()


async def http_launch(url: str) -> tuple[float, str]:
    """``link -> Lab page 200`` without a browser: redirects and OAuth followed by aiohttp."""
    jar = aiohttp.CookieJar(unsafe=True)
    timeout = aiohttp.ClientTimeout(total=LAUNCH_TIMEOUT)
    async with aiohttp.ClientSession(
        cookie_jar=jar, timeout=timeout, headers=BROWSER_NAVIGATION
    ) as s:
        t0 = time.monotonic()
        async with s.get(url, headers={"Accept": "text/html"}) as r:
            await r.read()
            final = str(r.url)
            status = r.status
        if "/spawn-pending/" in final:  # unpooled: wait as the progress page would, then go
            name = yarl.URL(final).path.rstrip("/").rsplit("/", 1)[-1]
            base = str(yarl.URL(final).origin())
            while True:
                async with s.get(f"{base}/hub/api/users/{name}/server/progress",
                                 headers={"Accept": "text/event-stream"}) as r:  # fmt: skip
                    done = False
                    async for line in r.content:
                        if line.startswith(b"data:") and json.loads(line[5:]).get("ready"):
                            done = True
                            break
                if done:
                    break
            async with s.get(final, headers={"Accept": "text/html"}) as r:
                await r.read()
                final, status = str(r.url), r.status
        seconds = time.monotonic() - t0
        if status != 200 or "/lab" not in final:
            raise RuntimeError(f"ended at {status} {yarl.URL(final).path[:60]}")
        return seconds, user_of(final) or ""


async def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=10, help="launches per contender")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    p.add_argument("--skip-stock", action="store_true", help="no stock contender")
    args = p.parse_args(argv)
    from playwright.async_api import async_playwright

    work = Path(tempfile.mkdtemp(prefix="cnbi-bench-b0-"))
    stacks: dict[str, Stack | StockStack] = {}
    times: dict[str, list[float]] = {k: [] for k in ("pooled", "unpooled", "stock", "floor")}
    http: dict[str, list[float]] = {"pooled": [], "unpooled": []}
    failures: list[str] = []
    warm_s = float("nan")
    try:
        t0 = time.monotonic()
        pool_env = {"CNBI_POOL_TARGETS": json.dumps({COURSE: 1})}
        stacks["pooled"] = await start_stack(work / "pooled", env=pool_env)
        await wait_for(partial(pool_ready, stacks["pooled"].hub), "the warm pool", 240, 0.5)
        warm_s = time.monotonic() - t0
        stacks["unpooled"] = await start_stack(work / "unpooled")
        if not args.skip_stock:
            stacks["stock"] = await StockStack(work / "stock").start()
        links = {
            "pooled": stacks["pooled"].url + MITOL_LINK,
            "unpooled": stacks["unpooled"].url + MITOL_LINK,
        }
        if "stock" in stacks:
            links["stock"] = stock_link(stacks["stock"].url)
        async with async_playwright() as pw:
            browser = await launch_chromium(pw)
            try:
                for i in range(args.runs):
                    for name in ("pooled", "unpooled", "stock"):
                        if name not in links:
                            continue
                        hub = stacks[name].hub
                        if name == "pooled":
                            await wait_for(partial(pool_ready, hub), "the pool refilled", 240, 0.5)
                        try:
                            seconds, user, cookies = await browser_launch(browser, links[name])
                        except Exception as e:  # noqa: BLE001 - reported, run continues
                            failures.append(f"{name} #{i}: {type(e).__name__}: {str(e)[:200]}")
                            continue
                        times[name].append(seconds)
                        if name == "unpooled" and user:  # floor: that server, a fresh tab
                            lab = f"{links[name].split('/tmplogin')[0]}/user/{user}/lab/tree/"
                            try:
                                floor, _, _ = await browser_launch(
                                    browser, lab + quote(NOTEBOOK), cookies
                                )
                                times["floor"].append(floor)
                            except Exception as e:  # noqa: BLE001
                                failures.append(f"floor #{i}: {type(e).__name__}: {str(e)[:200]}")
                        if user:
                            await delete_user(hub, user)
                    last = ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items() if v)
                    print(f"round {i + 1}/{args.runs}: {last}", flush=True)
            finally:
                await browser.close()
        for i in range(args.runs):  # server side only: link -> Lab page 200, no browser
            for name in ("pooled", "unpooled"):
                hub = stacks[name].hub
                if name == "pooled":
                    await wait_for(partial(pool_ready, hub), "the pool refilled", 240, 0.5)
                try:
                    seconds, user = await http_launch(links[name])
                except Exception as e:  # noqa: BLE001
                    failures.append(f"http {name} #{i}: {type(e).__name__}: {str(e)[:200]}")
                    continue
                http[name].append(seconds)
                if user:
                    await delete_user(hub, user)
    finally:
        for stack in stacks.values():
            await stack.stop()
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    def row(name: str, values: list[float], runs: int) -> list:
        spread = f"{min(values):.2f}-{max(values):.2f}" if values else "-"
        return [name, len(values), runs - len(values), pct(values, 0.5), spread]

    header = ["contender", "runs", "failed", "p50 s", "min-max s"]
    print_table(
        f"B0 first click, real Chromium, process runtime: link -> notebook cells visible "
        f"({args.runs} launches each, alternating)",
        header,
        [row(k, v, args.runs) for k, v in times.items() if k in links or k == "floor"],
    )
    print(f"pool warm (stack start -> 1 ready pool server): {warm_s:.1f} s")
    f, pooled, unpooled = (pct(times[k], 0.5) for k in ("floor", "pooled", "unpooled"))
    print(
        f"ratio pooled/floor {ratio(pooled, f)} (target <= 1.3x), pooled/unpooled "
        f"{ratio(pooled, unpooled)}; pooled p50 <= 3 s: {'ok' if pooled <= 3 else 'MISS'}"
    )
    print_table(
        "B0 server side: link -> Lab page 200 over HTTP (redirects + OAuth, no browser)",
        header,
        [row(k, v, args.runs) for k, v in http.items()],
    )
    hp = pct(http["pooled"], 0.5)
    print(f"pooled server side p50 <= 0.3 s: {'ok' if hp <= 0.3 else 'MISS'}")
    for line in failures:
        print("  failed:", line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
