"""Watch semantics and fault injection of the dev cluster, with the real kubernetes_asyncio client.

Watch from a resourceVersion (ADDED/MODIFIED/DELETED in order), the synthetic ADDED list for
rv "0", selector transitions, ``timeoutSeconds``, 410 Expired after compaction or beyond the
bounded history, bookmarks, resume after dropped watches, and the pause/latency faults over
the Python API and the admin endpoints.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import watch

from cnbi_devcluster import DevCluster
from cnbi_spawner.kube import make_api_client

NS = "default"


@pytest.fixture
async def cluster(tmp_path):
    async with DevCluster(tmp_path / "dc", runtime="stub", builds=False, history=50) as c:
        yield c


@pytest.fixture
async def core(cluster):
    api = await make_api_client(str(cluster.kubeconfig))
    yield k8s.CoreV1Api(api)
    await api.close()


def cm(name: str, **labels) -> dict:
    return {"metadata": {"name": name, "labels": labels}, "data": {}}


async def collect(core, n: int, timeout: float = 5, **kw) -> list[tuple[str, str, str]]:
    """The first ``n`` events (type, name, rv) of a watch on configmaps."""
    out = []
    w = watch.Watch()
    async with asyncio.timeout(timeout):
        async with w.stream(core.list_namespaced_config_map, NS, **kw) as stream:
            async for ev in stream:
                obj = ev["object"]
                out.append((ev["type"], obj.metadata.name, obj.metadata.resource_version))
                if len(out) == n:
                    break
    return out


async def test_watch_from_resource_version_sees_changes_in_order(core):
    await core.create_namespaced_config_map(NS, cm("before"))
    rv = (await core.list_namespaced_config_map(NS)).metadata.resource_version
    a = await core.create_namespaced_config_map(NS, cm("a"))
    await core.patch_namespaced_config_map("a", NS, {"data": {"x": "1"}})
    await core.delete_namespaced_config_map("a", NS)
    events = await collect(core, 3, resource_version=rv)
    assert [(t, n) for t, n, _ in events] == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    rvs = [int(r) for _, _, r in events]
    assert rvs == sorted(rvs) and rvs[0] == int(a.metadata.resource_version)
    # the DELETED object carries the deletion's own resourceVersion
    assert rvs[2] > rvs[1]


async def test_watch_without_rv_starts_with_the_current_state(core):
    for name in ("x", "y"):
        await core.create_namespaced_config_map(NS, cm(name))
    events = await collect(core, 2, resource_version="0")
    assert sorted((t, n) for t, n, _ in events) == [("ADDED", "x"), ("ADDED", "y")]


async def test_label_selector_transitions(core):
    await core.create_namespaced_config_map(NS, cm("t", tier="gold"))
    rv = (await core.list_namespaced_config_map(NS)).metadata.resource_version
    relabel = {"metadata": {"labels": {"tier": "silver"}}}
    await core.patch_namespaced_config_map("t", NS, relabel)  # leaves the selector
    await core.patch_namespaced_config_map("t", NS, {"metadata": {"labels": {"tier": "gold"}}})
    events = await collect(core, 2, resource_version=rv, label_selector="tier=gold")
    assert [t for t, _, _ in events] == ["DELETED", "ADDED"]


async def test_timeout_seconds_ends_the_watch(core):
    w = watch.Watch()
    start = time.monotonic()
    async with asyncio.timeout(10):
        async with w.stream(core.list_namespaced_config_map, NS, timeout_seconds=1) as stream:
            async for _ in stream:
                pass
    assert 0.9 <= time.monotonic() - start < 4


async def test_too_old_resource_version_is_410_expired(cluster, core):
    await core.create_namespaced_config_map(NS, cm("old"))
    rv = (await core.list_namespaced_config_map(NS)).metadata.resource_version
    await core.patch_namespaced_config_map("old", NS, {"data": {"changed": "1"}})
    cluster.store.compact()  # the change after rv is no longer in the history
    with pytest.raises(k8s.ApiException) as info:
        await collect(core, 1, resource_version=rv, timeout_seconds=2)
    assert info.value.status == 410
    # beyond the bounded history (50 events per resource type) without compaction, too
    rv = (await core.list_namespaced_config_map(NS)).metadata.resource_version
    for i in range(60):
        await core.patch_namespaced_config_map("old", NS, {"data": {"i": str(i)}})
    with pytest.raises(k8s.ApiException) as info:
        await collect(core, 1, resource_version=rv, timeout_seconds=2)
    assert info.value.status == 410
    # the stream itself is a 200 with one ERROR line carrying a Status, as kube-apiserver sends
    headers = {"Authorization": f"Bearer {cluster.token}"}
    url = f"{cluster.url}/api/v1/namespaces/{NS}/configmaps?watch=true&resourceVersion={rv}"
    async with aiohttp.ClientSession(headers=headers) as s, s.get(url) as r:
        assert r.status == 200
        line = json.loads((await r.text()).splitlines()[0])
    assert line["type"] == "ERROR"
    assert (line["object"]["code"], line["object"]["reason"]) == (410, "Expired")


async def test_bookmarks_only_when_asked(cluster):
    headers = {"Authorization": f"Bearer {cluster.token}"}
    cluster.bookmark_interval = 0.2
    base = f"{cluster.url}/api/v1/namespaces/{NS}/configmaps?watch=1&timeoutSeconds=1"
    async with aiohttp.ClientSession(headers=headers) as s:
        async with s.get(base + "&allowWatchBookmarks=true") as r:
            lines = [json.loads(x) for x in (await r.text()).splitlines()]
        assert len(lines) >= 2 and all(x["type"] == "BOOKMARK" for x in lines)
        assert lines[0]["object"]["metadata"]["resourceVersion"]
        async with s.get(base) as r:
            assert await r.text() == ""


async def test_dropped_watch_resumes_without_losing_events(cluster, core):
    seen: list[str] = []
    got_three = asyncio.Event()

    async def watcher():
        w = watch.Watch()  # no timeoutSeconds: the client reconnects from its last rv
        async with w.stream(core.list_namespaced_config_map, NS) as stream:
            async for ev in stream:
                seen.append(ev["object"].metadata.name)
                if len(seen) == 3:
                    got_three.set()
                    return

    task = asyncio.create_task(watcher())
    await core.create_namespaced_config_map(NS, cm("r1"))
    while not seen:
        await asyncio.sleep(0.02)
    assert cluster.faults.drop_watches() >= 1
    await core.create_namespaced_config_map(NS, cm("r2"))
    await core.create_namespaced_config_map(NS, cm("r3"))
    await asyncio.wait_for(got_three.wait(), 10)
    await task
    assert seen == ["r1", "r2", "r3"]


async def test_pause_503_and_hang_then_resume(cluster, core):
    cluster.faults.pause(mode="503")
    with pytest.raises(k8s.ApiException) as info:
        await core.list_namespaced_config_map(NS)
    assert info.value.status == 503
    assert json.loads(info.value.body)["reason"] == "ServiceUnavailable"
    cluster.faults.pause(mode="hang")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(core.list_namespaced_config_map(NS), 0.5)
    pending = asyncio.create_task(core.list_namespaced_config_map(NS))
    await asyncio.sleep(0.2)
    assert not pending.done()
    cluster.faults.resume()
    assert (await asyncio.wait_for(pending, 5)).kind == "ConfigMapList"
    with pytest.raises(ValueError):
        cluster.faults.pause(mode="explode")


async def test_latency_and_admin_endpoints(cluster, core):
    headers = {"Authorization": f"Bearer {cluster.token}"}
    admin = f"{cluster.url}/_devcluster"
    async with aiohttp.ClientSession(headers=headers) as s:
        async with s.post(f"{admin}/faults/latency?seconds=0.3") as r:
            assert (await r.json())["latency"] == 0.3
        start = time.monotonic()
        await core.list_namespaced_config_map(NS)
        assert time.monotonic() - start >= 0.3
        async with s.post(f"{admin}/faults/latency?seconds=0") as r:
            assert r.status == 200
        async with s.post(f"{admin}/faults/pause?mode=503") as r:
            assert (await r.json())["mode"] == "503"
        async with s.get(f"{cluster.url}/api/v1/namespaces") as r:
            assert r.status == 503
        async with s.get(f"{admin}/faults") as r:  # admin stays reachable
            assert (await r.json())["paused"] is True
        async with s.post(f"{admin}/faults/resume") as r:
            assert r.status == 200
        async with s.get(f"{cluster.url}/api/v1/namespaces") as r:
            assert r.status == 200
        async with s.post(f"{admin}/faults/pause?mode=nope") as r:
            assert r.status == 400
        async with s.post(f"{admin}/faults/drop-watches") as r:
            assert "dropped" in await r.json()
    async with aiohttp.ClientSession() as s, s.post(f"{admin}/faults/pause") as r:
        assert r.status == 401  # the admin endpoints need the token too
    assert not cluster.faults.paused
