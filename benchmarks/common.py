"""Shared helpers for the hub benchmarks (B1 launch storm, B2 tmplogin throughput).

- ``DevClusterProcess``: ``cnbi-devcluster serve --runtime stub`` in its own process, so the
  API server's (and the stub pods') CPU is not counted against the hub or the load client.
- ``start_hub(...)``: a real ``jupyterhub`` + configurable-http-proxy, via
  ``tests/harness.py``'s ``HubProcess`` (the same one the integration tests use).
- ``HUB_CONFIG``: the hub config both contenders share; ``ours_config`` / ``stock_config``
  add the authenticator + spawner of each stack (the stock one: jupyterhub-tmpauthenticator
  + stock KubeSpawner with a fixed image).
- ``ProcSampler``: CPU seconds and peak RSS of one process (psutil if installed, else /proc).
- ``Learner``: one browser (own cookie jar, own client address via ``X-Forwarded-For``).
- ``pct``, ``print_table``: percentiles and the fixed-width tables every benchmark prints.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote, urlencode

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from harness import BROWSER_NAVIGATION, HubProcess  # noqa: E402

COURSE = "uai_source-uai.intro"
NOTEBOOK = "lectures/lecture1/mod5_lec1.ipynb"
IMAGE_REPO = "registry.example/courses/uai-intro"
IMAGE = IMAGE_REPO + ":1"
STATIC_IMAGES = [{"name": COURSE, "image": IMAGE, "notebooks": [NOTEBOOK]}]
NS = "default"


def pct(values: Sequence[float], p: float) -> float:
    """The p-quantile (0..1) by nearest rank; nan when empty."""
    values = sorted(values)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, int(round(len(values) * p + 0.5)) - 1))]


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a fixed-width table: first column left-aligned, the rest right-aligned."""

    def cell(v: object) -> str:
        if isinstance(v, float):
            return "nan" if v != v else f"{v:.2f}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    cells = [[cell(v) for v in r] for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    print(f"\n{title}")

    def fmt(r: Sequence[str]) -> str:
        pairs = enumerate(zip(r, widths, strict=True))
        return "  ".join((c.ljust(w) if i == 0 else c.rjust(w)) for i, (c, w) in pairs)

    print(fmt([str(h) for h in header]))
    for r in cells:
        print(fmt(r))


def medians(runs: Sequence[dict], keys: Sequence[str]) -> dict:
    """One row from a contender's runs: the median of each figure in ``keys`` (its min-max
    kept as ``<key>_spread``), failure counters summed, the rest from the first run."""
    out = dict(runs[0])
    for key in keys:
        values = [r[key] for r in runs]
        out[key] = statistics.median(values)
        out[key + "_spread"] = (min(values), max(values))
    out["failures"] = sum((r["failures"] for r in runs), collections.Counter())
    return out


def ratio(ours: float, stock: float) -> str:
    return f"{ours / stock:.2f}x" if stock else "n/a"


# --- processes -----------------------------------------------------------------------------


class DevClusterProcess:
    """``cnbi-devcluster serve`` (stub runtime, no builds) in its own process group."""

    def __init__(self, workdir: Path, images: dict[str, Path] | None = None) -> None:
        self.workdir = Path(workdir)
        self.kubeconfig = self.workdir / "kubeconfig.yaml"
        self.images = images or {}
        self.proc: subprocess.Popen | None = None

    async def __aenter__(self) -> DevClusterProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "cnbi_devcluster.cli", "serve", "--runtime", "stub"]
        cmd += ["--state-dir", str(self.workdir), "--kubeconfig", str(self.kubeconfig)]
        cmd += ["--no-builds", "--log-level", "WARNING"]
        for repo, folder in self.images.items():
            cmd += ["--image", f"{repo}={folder}"]
        self._log = open(self.workdir.parent / f"{self.workdir.name}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 60
        while not self.kubeconfig.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                await self.__aexit__()
                raise RuntimeError(f"dev cluster did not start; see {self._log.name}")
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.2)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()


HUB_CONFIG = f"""
c.JupyterHub.log_level = "INFO"
c.KubeSpawner.namespace = {NS!r}
c.KubeSpawner.start_timeout = 120
c.KubeSpawner.http_timeout = 120
c.JupyterHub.concurrent_spawn_limit = SPAWN_LIMIT
"""

OURS = f"""
c.JupyterHub.authenticator_class = "tmplogin"
c.JupyterHub.spawner_class = "cnbi"
c.ImageRegistry.watch_imagestreams = False
c.ImageRegistry.static_images = {STATIC_IMAGES!r}
# learners arrive through one more proxy (an ingress) that appends their address
c.TmpLoginAuthenticator.trusted_proxy_count = 2
c.TmpLoginAuthenticator.global_rate = GLOBAL_RATE
"""

STOCK = f"""
c.JupyterHub.authenticator_class = "tmpauthenticator.TmpAuthenticator"
c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
c.KubeSpawner.image = {IMAGE!r}
c.Authenticator.allow_all = True  # what a tmpauthenticator deployment sets on JupyterHub 5+
"""


#: KubeSpawner gives a Kubernetes request 3 s (retrying for 30 s); a dev cluster on a busy
#: 2-core machine, creating a hundred pods at once, answers slower: the create times out,
#: the retry finds the pod, deletes it and tries again until the spawn fails. Both stacks
#: get the same, longer budget (``--api-timeout`` of ``waiting_room.py`` and
#: ``launch_storm.py``).
_API_TIMEOUT = """
c.KubeSpawner.k8s_api_request_timeout = {timeout}
c.KubeSpawner.k8s_api_request_retry_timeout = {retry}
"""


def api_timeout_config(timeout: float | None) -> str:
    """KubeSpawner's Kubernetes request budget for both stacks: ``timeout`` s a request,
    retried for 4x that; None keeps KubeSpawner's defaults (3 s, retried for 30 s)."""
    if timeout is None:
        return ""
    return _API_TIMEOUT.format(timeout=timeout, retry=4 * timeout)


def ours_config(spawn_limit: int = 100, global_rate: float = 1200.0, extra: str = "") -> str:
    hub = HUB_CONFIG.replace("SPAWN_LIMIT", str(spawn_limit))
    return hub + OURS.replace("GLOBAL_RATE", repr(global_rate)) + extra


def stock_config(spawn_limit: int = 100, extra: str = "") -> str:
    return HUB_CONFIG.replace("SPAWN_LIMIT", str(spawn_limit)) + STOCK + extra


def ours_link(base: str) -> str:
    """The course link an LMS hands out for our stack."""
    return f"{base}/tmplogin?" + urlencode(
        {"course": COURSE, "notebook": NOTEBOOK}, quote_via=quote
    )


def stock_link(base: str) -> str:
    """The same launch with stock parts: log in, spawn, then user-redirect to the notebook."""
    target = "/hub/user-redirect/lab/tree/" + quote(NOTEBOOK)
    spawn = "/hub/spawn?" + urlencode({"next": target})
    return f"{base}/tmplogin?" + urlencode({"next": spawn})


async def start_hub(config: str, workdir: Path, kubeconfig: Path | None) -> HubProcess:
    hub = HubProcess(config, workdir=workdir, kubeconfig=kubeconfig)
    return await hub.start(timeout=120)


def proxy_pid(hub: HubProcess) -> int:
    return int(hub.proxy_pid_file.read_text().strip())


class ProcSampler:
    """Samples one process's CPU time and RSS every ``interval`` s while running."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid, self.interval = pid, interval
        self.rss_peak_mb = 0.0
        self._task: asyncio.Task | None = None
        self._cpu0 = self._t0 = 0.0
        self.cpu_s = self.wall_s = 0.0
        try:
            import psutil

            self._ps = psutil.Process(pid)
        except ImportError:
            self._ps = None

    def _cpu(self) -> float:
        if self._ps is not None:
            t = self._ps.cpu_times()
            return t.user + t.system
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _rss_mb(self) -> float:
        if self._ps is not None:
            return self._ps.memory_info().rss / 2**20
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                self.rss_peak_mb = max(self.rss_peak_mb, self._rss_mb())
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._cpu0, self._t0 = self._cpu(), time.monotonic()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self.cpu_s, self.wall_s = self._cpu() - self._cpu0, time.monotonic() - self._t0
        self.rss_peak_mb = max(self.rss_peak_mb, self._rss_mb())
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def cpu_pct(self) -> float:
        return 100 * self.cpu_s / self.wall_s if self.wall_s else float("nan")


def start_profiler(pid: int, out: Path) -> subprocess.Popen:
    """``py-spy record`` the process into ``out`` (folded stacks, idle frames included; a
    ``.json`` ``out``: speedscope, which keeps the samples in time order)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        spy,
        "record",
        "--pid",
        str(pid),
        "--format",
        "speedscope" if out.suffix == ".json" else "raw",
        "--rate",
        "50",
        "--idle",
        "-o",
        str(out),
    ]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def stop_profiler(spy: subprocess.Popen | None) -> None:
    if spy is None:
        return
    spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    try:
        await asyncio.to_thread(spy.wait, 30)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()


def learner(index: int, timeout: float, stamp: bool = False) -> aiohttp.ClientSession:
    """One browser: its own cookie jar, its own client address (10.x.y.z) as seen by an
    ingress in front of the proxy (``X-Forwarded-For``), and a person's navigation headers.
    ``stamp``: its requests carry the time it clicked (now) in ``X-Request-Start``, as an
    ingress stamps a request when it receives it."""
    addr = f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}"
    # microseconds: learners 60 ms apart can wake in one turn of a busy load client, and
    # equal millisecond stamps would leave their order to the order the hub read them
    ingress = {"X-Request-Start": f"t={time.time_ns() // 1000}"} if stamp else {}
    return aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True),
        timeout=aiohttp.ClientTimeout(total=timeout),
        headers={"X-Forwarded-For": addr, "Accept": "text/html", **BROWSER_NAVIGATION, **ingress},
        connector=aiohttp.TCPConnector(limit=4, force_close=False),
    )
