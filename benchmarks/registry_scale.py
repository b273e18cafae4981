"""Known-image registry at scale: N ImageStreams x T tags on the dev cluster.

    .venv/bin/python benchmarks/registry_scale.py            # 10,000 streams x 3 tags
    .venv/bin/python benchmarks/registry_scale.py --quick    # 200 streams, a few seconds
    .venv/bin/python benchmarks/registry_scale.py --kubeconfig PATH   # an existing cluster

Starts ``cnbi-devcluster serve --runtime stub`` in a child process (so the API server's
CPU and memory are not counted against the registry), seeds the streams through the
real kubernetes_asyncio client, then measures in this process:

- initial sync: ``ImageRegistry.start()`` -> ``wait_synced()``;
- ``resolve`` p50/p99 over keys, tag names, stream names and aliases;
- watch propagation p99: annotate a stream (PATCH) -> the registry's change hook fired;
- RSS of this process after the sync.

Stock comparisons, in the same run: the ODH-spawner style "list every ImageStream on each
launch, then scan linearly" (one un-paged LIST + parse + scan, per launch), a linear scan
over already-parsed images, and rebuilding the whole index per watch event instead of
replacing one stream's entries. Prints a table; exit status 0. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import gc
import json
import logging
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cnbi_spawner.images.imagestreams import parse_imagestream  # noqa: E402
from cnbi_spawner.images.index import ImageIndex  # noqa: E402
from cnbi_spawner.images.registry import GROUP, PLURAL, VERSION, ImageRegistry  # noqa: E402
from cnbi_spawner.kube import make_api_client  # noqa: E402

NS = "courses"
TARGETS = {"sync_s": 5.0, "resolve_p99_us": 50.0, "propagation_p99_s": 1.0, "rss_mb": 200.0}
TEMPLATE = ROOT / "tests" / "fixtures" / "imagestreams" / "jupyter-datascience-notebook.yaml"


def quiet_logger() -> logging.Logger:
    log = logging.getLogger("registry_scale.registry")
    log.propagate = False
    log.addHandler(logging.NullHandler())
    return log


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


def make_stream(i: int, tags: int, template: dict) -> dict:
    """Stream ``course-<i>`` with ``tags`` imported tags; per-stream versions and digests."""
    obj = copy.deepcopy(template)
    meta = obj["metadata"]
    for key in ("uid", "resourceVersion", "generation", "creationTimestamp"):
        meta.pop(key, None)
    name = f"course-{i:05d}"
    meta["name"], meta["namespace"] = name, NS
    meta["annotations"]["opendatahub.io/notebook-image-name"] = f"Course {i}"
    meta["annotations"]["cnbi.meteor.zone/course-aliases"] = f"alias-{i}"
    spec_tag, status_tag = obj["spec"]["tags"][0], obj["status"]["tags"][1]
    obj["spec"]["tags"], obj["status"]["tags"] = [], []
    for t in range(tags):
        tag = f"202{t}.{i % 7}"
        digest = f"sha256:{(i * 31 + t):064x}"
        st = copy.deepcopy(spec_tag)
        st["name"] = tag
        st["annotations"]["opendatahub.io/workbench-image-recommended"] = str(t == tags - 1).lower()
        deps = [{"name": "JupyterLab", "version": f"4.{t}"}, {"name": "course", "version": str(i)}]
        st["annotations"]["opendatahub.io/notebook-python-dependencies"] = json.dumps(deps)
        st["from"]["name"] = f"registry.example/courses/c{i}@{digest}"
        obj["spec"]["tags"].append(st)
        item = copy.deepcopy(status_tag["items"][0])
        item["dockerImageReference"] = f"registry.example/courses/c{i}@{digest}"
        item["image"] = digest
        item["created"] = f"2025-0{t + 1}-01T00:00:00Z"
        obj["status"]["tags"].append({"tag": tag, "items": [item]})
    return obj


class Cluster:
    """``cnbi-devcluster serve`` in a child process (stub runtime), or an existing one."""

    def __init__(self, kubeconfig: str | None):
        self.kubeconfig = kubeconfig
        self.proc: subprocess.Popen | None = None
        self.tmp: str | None = None

    async def __aenter__(self) -> Cluster:
        if self.kubeconfig:
            return self
        self.tmp = tempfile.mkdtemp(prefix="registry-bench-")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.kubeconfig = os.path.join(self.tmp, "kubeconfig")
        cmd = [sys.executable, "-m", "cnbi_devcluster.cli", "serve", "--port", str(port)]
        cmd += ["--kubeconfig", self.kubeconfig, "--runtime", "stub", "--state-dir", self.tmp]
        self.log = open(os.path.join(self.tmp, "devcluster.log"), "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"devcluster exited; see {self.log.name}")
            if os.path.exists(self.kubeconfig):
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        return self
                except OSError:
                    pass
            await asyncio.sleep(0.1)
        raise RuntimeError("devcluster did not start within 60 s")

    async def __aexit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.log.close()
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


async def seed(api: client.ApiClient, n: int, tags: int, concurrency: int = 16) -> float:
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    try:
        await core.create_namespace({"metadata": {"name": NS}})
    except ApiException as e:
        if e.status != 409:
            raise
    template = yaml.safe_load(TEMPLATE.read_text())
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            obj = make_stream(queue.get_nowait(), tags, template)
            status = obj.pop("status")
            made = await custom.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, obj)
            if made.get("status") != status:  # /status subresource: status is set separately
                made["status"] = status
                await custom.replace_namespaced_custom_object_status(
                    GROUP, VERSION, NS, PLURAL, obj["metadata"]["name"], made
                )

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start


def resolve_latencies(reg: ImageRegistry, n: int, samples: int) -> tuple[list[float], list[str]]:
    images = reg.launchable()
    names = [i.key for i in random.sample(images, min(len(images), samples // 4))]
    names += [f"course-{random.randrange(n):05d}" for _ in range(samples // 4)]
    names += [f"alias-{random.randrange(n)}" for _ in range(samples // 4)]
    names += [i.key.upper() for i in random.sample(images, min(len(images), samples // 4))]
    random.shuffle(names)
    for name in names[:1000]:  # warm up
        reg.resolve(name)
    out = []
    clock = time.perf_counter_ns
    for name in names:
        t0 = clock()
        reg.resolve(name)
        out.append((clock() - t0) / 1000)
    return out, names


async def propagation(
    api: client.ApiClient, reg: ImageRegistry, n: int, changes: int
) -> list[float]:
    custom = client.CustomObjectsApi(api)
    seen: dict[str, float] = {}
    reg.add_change_listener(lambda source, *_: seen.setdefault(source, time.perf_counter()))
    latencies = []
    for k in range(changes):
        name = f"course-{random.randrange(n):05d}"
        source = f"imagestream:{NS}/{name}"
        seen.pop(source, None)
        sent = time.perf_counter()
        await custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            NS,
            PLURAL,
            name,
            {"metadata": {"annotations": {"opendatahub.io/notebook-image-desc": f"rev {k}"}}},
            _content_type="application/merge-patch+json",
        )
        deadline = sent + 10
        while source not in seen and time.perf_counter() < deadline:
            await asyncio.sleep(0.0005)
        latencies.append(seen.get(source, float("inf")) - sent)
    return latencies


async def stock_per_launch(api: client.ApiClient, names: list[str], launches: int) -> list[float]:
    """ODH-spawner style: LIST every stream on each launch, parse, scan linearly."""
    custom = client.CustomObjectsApi(api)
    out = []
    for name in names[:launches]:
        t0 = time.perf_counter()
        page = await custom.list_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, label_selector="opendatahub.io/notebook-image=true"
        )
        images = [i for obj in page["items"] for i in parse_imagestream(obj)]
        next((i for i in images if i.key.lower() == name.lower() or i.stream == name), None)
        out.append(time.perf_counter() - t0)
    return out


def linear_scan(images: list, names: list[str]) -> list[float]:
    out = []
    for name in names:
        t0 = time.perf_counter_ns()
        low = name.lower()
        next(
            (i for i in images if i.key.lower() == low or i.stream == low or low in i.aliases),
            None,
        )
        out.append((time.perf_counter_ns() - t0) / 1000)
    return out


def row(metric: str, value: float, unit: str, target: float | None, stock: float | None = None):
    ratio = f"{value / target:6.2f}" if target else "     -"
    verdict = ("ok" if value <= target else "MISS") if target else ""
    stock_s = f"{stock:12.1f}" if stock is not None else "           -"
    vs = f"{stock / value:8.0f}x" if stock and value else "        -"
    tgt = f"{target:8.1f}" if target else "       -"
    print(f"{metric:34} {value:12.3f} {unit:4} {tgt} {ratio} {verdict:4} {stock_s} {vs}")


async def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=None, help="streams (default 10000; 200 quick)")
    p.add_argument("--tags", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="small N for a fast check")
    p.add_argument("--changes", type=int, default=None, help="watch updates to time")
    p.add_argument("--kubeconfig", help="use this cluster instead of starting a dev cluster")
    p.add_argument("--page-size", type=int, default=1000, help="ImageRegistry.list_page_size")
    args = p.parse_args(argv)
    n = args.n or (200 if args.quick else 10_000)
    changes = args.changes or (20 if args.quick else 200)
    random.seed(42)

    async with Cluster(args.kubeconfig) as cluster:
        api = await make_api_client(cluster.kubeconfig)
        try:
            seed_s = await seed(api, n, args.tags)
            gc.collect()
            rss_before = rss_mb()
            reg = ImageRegistry(kubeconfig=cluster.kubeconfig, namespaces=[NS], resync_period=30.0)
            t0, c0 = time.perf_counter(), time.process_time()
            await reg.start()
            if not await reg.wait_synced(300):
                print("registry did not sync", file=sys.stderr)
                return 1
            sync_s, sync_cpu = time.perf_counter() - t0, time.process_time() - c0
            gc.collect()
            rss_after = rss_mb()
            n_images = len(reg.images())

            res, names = resolve_latencies(reg, n, 20_000 if not args.quick else 4_000)
            prop = await propagation(api, reg, n, changes)
            images = reg.images()
            scan = linear_scan(images, names[:500])
            per_launch = await stock_per_launch(api, names, 3 if not args.quick else 5)

            t0 = time.perf_counter()
            ImageIndex(images)
            rebuild_ms = (time.perf_counter() - t0) * 1000
            some = reg.index.sources()[-1]
            batch = reg.index.source(some)
            t0 = time.perf_counter()
            for _ in range(100):
                reg.index.set_source(some, batch[:1])
                reg.index.set_source(some, batch)
            incremental_ms = (time.perf_counter() - t0) / 200 * 1000
            await reg.stop()
        finally:
            await api.close()

    print(
        f"\nregistry_scale: {n} streams x {args.tags} tags = {n_images} images "
        f"(seeded in {seed_s:.1f} s), {changes} watch updates, python {sys.version.split()[0]}, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(
        f"{'metric':34} {'value':>12} {'unit':4} {'target':>8} {'ratio':>6} {'':4} "
        f"{'stock':>12} {'stock/ours':>9}"
    )
    row("initial sync", sync_s, "s", TARGETS["sync_s"])
    row("initial sync, CPU of this process", sync_cpu, "s", None)
    row("resolve p50", pct(res, 0.5), "us", None, pct(scan, 0.5))
    row("resolve p99", pct(res, 0.99), "us", TARGETS["resolve_p99_us"], pct(scan, 0.99))
    row("resolve p99 vs list-per-launch", pct(res, 0.99), "us", None, pct(per_launch, 0.5) * 1e6)
    row("watch propagation p50", pct(prop, 0.5), "s", None)
    row("watch propagation p99", pct(prop, 0.99), "s", TARGETS["propagation_p99_s"])
    row("apply one event (incremental)", incremental_ms, "ms", None, rebuild_ms)
    row("RSS after sync (process)", rss_after, "MB", TARGETS["rss_mb"])
    row("RSS growth from the registry", rss_after - rss_before, "MB", None)
    print(
        "stock: resolve = linear scan over parsed images; list-per-launch = one un-paged LIST"
        " + parse + scan per launch (ODH spawner style), in us; apply = full index rebuild."
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
