"""How fast is the dev cluster? LIST with selectors at 10k objects, and stub pods at scale.

Prints a table: LIST latency over HTTP (raw JSON, no client-side model building) for
10 000 ConfigMaps with and without a label selector, the same through the
kubernetes_asyncio client (what KubeSpawner/registry pay), and how long N stub-runtime
pods take from create to Ready plus the RSS they cost. There is no stock Kubernetes to
compare against on our machines, so the figures are absolute; the client/raw ratio shows
how much of a LIST is ours.

    .venv/bin/python benchmarks/devcluster_list.py [--objects 10000] [--pods 500]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
from pathlib import Path

import aiohttp
from kubernetes_asyncio import client as k8s

from cnbi_devcluster import DevCluster
from cnbi_spawner.kube import make_api_client


async def best_of(n: int, fn) -> float:
    best = float("inf")
    for _ in range(n):
        start = time.perf_counter()
        await fn()
        best = min(best, time.perf_counter() - start)
    return best


def rss_mib() -> float:
    """Current resident set size (not the peak)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


async def run(objects: int, pods: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        content = Path(tmp) / "content"
        content.mkdir()
        images = {"registry.example/bench/stub": content}
        async with DevCluster(Path(tmp) / "dc", runtime="stub", builds=False, images=images) as c:
            rt = c.resource("v1", "configmaps")
            start = time.perf_counter()
            for i in range(objects):
                meta = {"name": f"cm-{i:06d}", "labels": {"shard": str(i % 10), "k": "v"}}
                c.store.create(rt, "default", {"metadata": meta, "data": {"i": str(i)}})
            create_s = time.perf_counter() - start
            headers = {"Authorization": f"Bearer {c.token}"}
            url = f"{c.url}/api/v1/namespaces/default/configmaps"
            rows = [("create (in-process)", f"{objects} objects", create_s)]
            api = await make_api_client(str(c.kubeconfig))
            core = k8s.CoreV1Api(api)
            async with aiohttp.ClientSession(headers=headers) as s:
                for sel in ("shard=3", "k=v,shard in (1,2)", ""):

                    async def raw(sel=sel):
                        async with s.get(url, params={"labelSelector": sel}) as r:
                            await r.read()

                    async def typed(sel=sel):
                        await core.list_namespaced_config_map("default", label_selector=sel)

                    t_raw = await best_of(3, raw)
                    t_typed = await best_of(1, typed)
                    rows.append((f"LIST raw  '{sel}'", "HTTP + JSON", t_raw))
                    rows.append((f"LIST client '{sel}'", f"x{t_typed / t_raw:.0f} of raw", t_typed))
            before = rss_mib()
            pod = {
                "spec": {
                    "containers": [
                        {
                            "name": "notebook",
                            "image": "registry.example/bench/stub:1",
                            "ports": [{"name": "notebook-port", "containerPort": 8888}],
                        }
                    ]
                }
            }
            start = time.perf_counter()
            for i in range(pods):
                await core.create_namespaced_pod("default", {**pod, "metadata": {"name": f"p{i}"}})
            while True:
                items = c.list("v1", "pods", "default")
                ready = sum(
                    1
                    for p in items
                    if any(cs.get("ready") for cs in p["status"].get("containerStatuses", []))
                )
                if ready == pods:
                    break
                await asyncio.sleep(0.1)
            rows.append(
                (
                    f"{pods} stub pods to Ready",
                    f"+{rss_mib() - before:.0f} MiB RSS",
                    time.perf_counter() - start,
                )
            )
            await api.close()
    print(f"{'what':<34} {'note':<22} {'seconds':>10}")
    for what, note, secs in rows:
        print(f"{what:<34} {note:<22} {secs:>10.4f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--objects", type=int, default=10_000)
    p.add_argument("--pods", type=int, default=500)
    args = p.parse_args()
    asyncio.run(run(args.objects, args.pods))


if __name__ == "__main__":
    main()
