"""B0's floor: where JupyterLab's own load goes in a fresh browser, and what lowers it.

    .venv/bin/python benchmarks/lab_floor.py              # 10 loads per variant
    .venv/bin/python benchmarks/lab_floor.py --runs 3     # a smoke run

B0 (``first_click.py``) measures the floor: the notebook URL of a server that already
runs, opened in a fresh browser context that holds only the hub's login cookie. A pooled
launch is as fast as that floor, so a faster launch needs a faster JupyterLab load. This
script takes one learner server (the production config on the dev cluster's process
runtime: real ``jupyterhub-singleuser`` + JupyterLab 4 + the learner-lab extension), and
loads that notebook URL in a real Chromium, link -> the notebook's cells visible, for each
variant in turn (alternating, ``--runs`` loads each):

- ``shipped``: the server as a learner gets it;
- ``no admin plugins``: JupyterLab's page config ``disabledExtensions`` (written to the
  server's ``~/.jupyter/labconfig/page_config.json``, read on every page load) switching off
  what a throw-away learner never uses: the extension manager, the plugin manager, the
  news/update announcements and the workspaces UI;
- ``notebook only``: the ceiling of this lever, with many features learners do use switched
  off as well (terminal, debugger, table of contents, console, property inspector, …);
- ``cached``: ``shipped`` opened a second time in the same browser context (JupyterLab's
  versioned static files from the HTTP cache): a learner whose browser has loaded
  JupyterLab from this hub before.

Then one load of ``shipped`` under Chromium's CPU profiler (Chrome DevTools Protocol): how
much of the load the page's main thread spends running JavaScript (by bundle), and how much
it is idle, waiting for the server. Prints per variant runs, failures, p50, min-max and the
ratio to ``shipped``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from common import ROOT, pct, print_table, ratio
from first_click import CELLS, LAUNCH_TIMEOUT, NOTEBOOK, browser_launch

sys.path.insert(0, str(ROOT / "tests" / "e2e"))

from e2e_stack import MITOL_LINK, start_stack  # noqa: E402
from harness import launch_chromium  # noqa: E402

ADMIN = [
    "@jupyterlab/extensionmanager-extension",
    "@jupyterlab/pluginmanager-extension",
    "@jupyterlab/apputils-extension:announcements",
    "@jupyterlab/workspaces-extension",
]
NOTEBOOK_ONLY = ADMIN + [
    f"@jupyterlab/{name}-extension"
    for name in (
        "debugger terminal toc celltags metadataform running settingeditor logconsole "
        "mermaid console csvviewer inspector theme-dark theme-dark-high-contrast help "
        "cell-toolbar documentsearch video audio lsp"
    ).split()
]
VARIANTS = {"shipped": [], "no admin plugins": ADMIN, "notebook only": NOTEBOOK_ONLY}


def page_config_file(stack, workdir: Path) -> Path:
    """The learner server's user-level page config (``$HOME/.jupyter/labconfig``): the home
    of the one learner pod, in the dev cluster's pod folders (``pods/<ns>/<name>-<uid>``)."""
    (pod,) = stack.pods()
    meta = pod["metadata"]
    (home,) = workdir.rglob(f"pods/{meta['namespace']}/{meta['name']}-{meta['uid'][:8]}/home")
    return home / ".jupyter" / "labconfig" / "page_config.json"


async def load(browser, url: str, cookies: list, *, cached: bool = False, cdp: bool = False):
    """Seconds from ``goto`` to the cells visible in a fresh context (``cached``: after one
    untimed load in the same context); with ``cdp`` also the CPU profile of that load."""
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        await context.add_cookies(cookies)
        page = await context.new_page()
        if cached:
            await page.goto(url, timeout=LAUNCH_TIMEOUT * 1000)
            await page.wait_for_selector(CELLS, state="visible", timeout=LAUNCH_TIMEOUT * 1000)
            await page.close()  # one JupyterLab tab at a time (the cache stays with the context)
            page = await context.new_page()
        session = None
        if cdp:
            session = await context.new_cdp_session(page)
            await session.send("Profiler.enable")
            await session.send("Profiler.setSamplingInterval", {"interval": 1000})
            await session.send("Profiler.start")
        t0 = time.monotonic()
        await page.goto(url, timeout=LAUNCH_TIMEOUT * 1000)
        await page.wait_for_selector(CELLS, state="visible", timeout=LAUNCH_TIMEOUT * 1000)
        seconds = time.monotonic() - t0
        profile = (await session.send("Profiler.stop"))["profile"] if session else None
        return seconds, profile
    finally:
        await context.close()


def main_thread(profile: dict) -> collections.Counter:
    """Seconds of the sampled main thread per script file ("(idle)": waiting)."""
    frames = {n["id"]: n["callFrame"] for n in profile["nodes"]}
    spent: collections.Counter = collections.Counter()
    for sample, delta in zip(profile["samples"], profile["timeDeltas"], strict=True):
        frame = frames[sample]
        name = frame["url"].rsplit("/", 1)[-1].split("?")[0] or frame["functionName"]
        spent[name or "(native)"] += delta / 1e6
    return spent


async def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=10, help="loads per variant")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = p.parse_args(argv)
    from playwright.async_api import async_playwright

    work = Path(tempfile.mkdtemp(prefix="cnbi-bench-floor-"))
    times: dict[str, list[float]] = {k: [] for k in (*VARIANTS, "cached")}
    failures: list[str] = []
    stack = await start_stack(work / "stack")
    try:
        async with async_playwright() as pw:
            browser = await launch_chromium(pw)
            try:
                _, user, cookies = await browser_launch(browser, stack.url + MITOL_LINK)
                url = f"{stack.url}/user/{user}/lab/tree/{quote(NOTEBOOK)}"
                config = page_config_file(stack, work)
                config.parent.mkdir(parents=True, exist_ok=True)
                for i in range(args.runs):
                    for name in times:
                        disabled = dict.fromkeys(VARIANTS.get(name, []), True)
                        config.write_text(json.dumps({"disabledExtensions": disabled}))
                        try:
                            seconds, _ = await load(browser, url, cookies, cached=name == "cached")
                        except Exception as e:  # noqa: BLE001 - reported, run continues
                            failures.append(f"{name} #{i}: {type(e).__name__}: {str(e)[:200]}")
                            continue
                        times[name].append(seconds)
                    last = ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items() if v)
                    print(f"round {i + 1}/{args.runs}: {last}", flush=True)
                config.write_text(json.dumps({"disabledExtensions": {}}))
                profiled, profile = await load(browser, url, cookies, cdp=True)
            finally:
                await browser.close()
    finally:
        await stack.stop()
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    shipped = pct(times["shipped"], 0.5)
    rows = []
    for name, values in times.items():
        spread = f"{min(values):.2f}-{max(values):.2f}" if values else "-"
        p50 = pct(values, 0.5)
        rows.append([name, len(values), args.runs - len(values), p50, spread, ratio(p50, shipped)])
    print_table(
        f"B0 floor: a running server's notebook URL in a fresh Chromium context, -> cells "
        f"visible ({args.runs} loads each, alternating)",
        ["variant", "runs", "failed", "p50 s", "min-max s", "vs shipped"],
        rows,
    )
    spent = main_thread(profile)
    idle = spent.pop("(idle)", 0.0)
    busy = sum(spent.values())
    print(
        f"profiled load of 'shipped' ({profiled:.2f} s): main thread busy {busy:.2f} s, "
        f"idle (waiting for the server or the network) {idle:.2f} s"
    )
    for name, seconds in spent.most_common(6):
        print(f"  {seconds:6.2f} s  {name}")
    for line in failures:
        print("  failed:", line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
