"""Rebuild on base change, end to end in the dev cluster: real build controller, real image
registry watching ImageStreams, the service's rebuild loop, all over the real client.

Story: five course images are built; three name the base image ``base:latest`` (two opted
in, one not, one opted out explicitly), one opted-in names an image the registry does not
know. The base's tag moves to a new digest: each opted-in dependent is rebuilt exactly once
(one at a time: ``max_in_flight=1``), gets a new digest, and the catalog line says why; the
others are untouched. A repeated registry event and a restarted service rebuild nothing.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from harness import free_port, service_command
from kubernetes_asyncio import client

from cnbi_devcluster.builds import DELAY_ENV
from cnbi_spawner.builds import GROUP, PLURAL, VERSION
from cnbi_spawner.builds.phases import normalise
from cnbi_spawner.builds.rebuild import BASE_DIGEST, OPT_IN, REBUILT_BECAUSE
from cnbi_spawner.builds.resource import customnbimage
from cnbi_spawner.builds.validate import validate_request
from cnbi_spawner.images.registry import ImageRegistry
from cnbi_spawner.kube import make_api_client
from cnbi_spawner.service.catalog import rebuilt_lines
from cnbi_spawner.service.rebuilds import RebuildLoop, RebuildSettings

NS = "default"
A, B = ("sha256:" + ch * 64 for ch in "ab")
IS = ("image.openshift.io", "v1", NS, "imagestreams")

DEPENDENTS = {
    # name: (baseImage, annotations)
    "dep-a": ("base:latest", {OPT_IN: "true"}),
    "dep-b": ("registry.example/lab/base:latest", {OPT_IN: "true"}),
    "dep-c": ("base:latest", {}),
    "dep-d": ("base:latest", {OPT_IN: "false"}),
    "dep-e": ("registry.example/lab/unknown:1", {OPT_IN: "true"}),
}


def base_status(digest: str) -> dict:
    return {
        "dockerImageRepository": "",
        "tags": [
            {
                "tag": "latest",
                "items": [
                    {
                        "created": "2026-11-25T10:00:00Z",
                        "dockerImageReference": f"registry.example/lab/base@{digest}",
                        "image": digest,
                        "generation": 1,
                    }
                ],
            }
        ],
    }


BASE_STREAM = {
    "apiVersion": "image.openshift.io/v1",
    "kind": "ImageStream",
    "metadata": {
        "name": "base",
        "labels": {"opendatahub.io/notebook-image": "true"},
        "annotations": {"opendatahub.io/notebook-image-name": "Lab base"},
    },
    "spec": {
        "tags": [
            {
                "name": "latest",
                "from": {"kind": "DockerImage", "name": "registry.example/lab/base:latest"},
            }
        ]
    },
}


@pytest.fixture
def cluster(request, monkeypatch):
    monkeypatch.setenv(DELAY_ENV, "0.1")
    return request.getfixturevalue("stub_devcluster")


async def set_base(api, digest: str) -> None:
    obj = await api.get_namespaced_custom_object(*IS, "base")
    obj["status"] = base_status(digest)
    await api.replace_namespaced_custom_object_status(*IS, "base", obj)


async def until(predicate, what: str, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_base_change_rebuilds_each_opted_in_dependent_once(cluster):
    api_client = await make_api_client(str(cluster.kubeconfig))
    api = client.CustomObjectsApi(api_client)
    regs, tasks = [], []
    try:
        await api.create_namespaced_custom_object(*IS, BASE_STREAM)
        await set_base(api, A)
        reg = ImageRegistry(kubeconfig=str(cluster.kubeconfig), namespaces=[NS], resync_period=30)
        regs.append(reg)
        await reg.start()
        assert await reg.wait_synced(10)

        for name, (base, annotations) in DEPENDENTS.items():
            body = {"displayName": name, "baseImage": base, "packageVersions": ["pandas"]}
            obj = customnbimage(validate_request(body, creator="author"), NS)
            obj["metadata"]["name"] = name
            obj["metadata"]["annotations"].update(annotations)
            await api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, obj)

        async def get(name: str) -> dict:
            return await api.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)

        async def all_built():
            objs = [await get(n) for n in DEPENDENTS]
            return all(normalise(o).succeeded for o in objs)

        await until(all_built, "the first builds")

        def image_of(name: str) -> str | None:
            found = reg.get(f"cnbi-{name}-package-list:latest")
            return found.image if found else None

        await until(lambda: _true(all(image_of(n) for n in DEPENDENTS)), "streams in registry")
        first = {n: image_of(n) for n in DEPENDENTS}

        settings = RebuildSettings(max_in_flight=1, resync_interval=0.3)
        loop = RebuildLoop(api_client, reg, NS, settings)
        tasks.append(asyncio.create_task(loop.run()))

        async def baselines():
            objs = {n: await get(n) for n in ("dep-a", "dep-b")}
            return all(o["metadata"]["annotations"].get(BASE_DIGEST) == A for o in objs.values())

        await until(baselines, "baseline digests recorded")
        for name in ("dep-c", "dep-d", "dep-e"):
            assert BASE_DIGEST not in (await get(name))["metadata"]["annotations"]

        # watch every CR: count finished -> unfinished transitions (= rebuilds) and overlap
        rebuilds = dict.fromkeys(DEPENDENTS, 0)
        max_parallel = 0
        stop_watch = asyncio.Event()

        async def watch_phases():
            nonlocal max_parallel
            finished = dict.fromkeys(DEPENDENTS, True)
            while not stop_watch.is_set():
                running = 0
                for n in DEPENDENTS:
                    done = normalise(await get(n)).finished
                    if finished[n] and not done:
                        rebuilds[n] += 1
                    finished[n] = done
                    running += not done
                max_parallel = max(max_parallel, running)
                await asyncio.sleep(0.02)

        watcher = asyncio.create_task(watch_phases())
        tasks.append(watcher)
        await set_base(api, B)  # the base tag moves: the registry's watch sees a new digest

        async def rebuilt():
            objs = {n: await get(n) for n in ("dep-a", "dep-b")}
            return all(
                o["metadata"]["annotations"].get(BASE_DIGEST) == B and normalise(o).succeeded
                for o in objs.values()
            ) and all(image_of(n) != first[n] for n in ("dep-a", "dep-b"))

        await until(rebuilt, "both opted-in dependents rebuilt")

        # a repeated registry event, then a restarted service (fresh registry + loop)
        loop.on_registry_change({"base:latest": reg.get("base:latest")}, {})
        await asyncio.sleep(1.0)
        reg2 = ImageRegistry(kubeconfig=str(cluster.kubeconfig), namespaces=[NS])
        regs.append(reg2)
        await reg2.start()
        assert await reg2.wait_synced(10)
        again = await RebuildLoop(api_client, reg2, NS, settings).run_once()
        assert not [d for d in again if d.action in ("rebuild", "deferred", "busy")], again
        await asyncio.sleep(0.5)
        stop_watch.set()
        await watcher

        assert rebuilds == {"dep-a": 1, "dep-b": 1, "dep-c": 0, "dep-d": 0, "dep-e": 0}
        assert max_parallel == 1  # never a storm: one rebuild at a time here
        for name in ("dep-c", "dep-d", "dep-e"):
            assert image_of(name) == first[name]
            assert REBUILT_BECAUSE not in (await get(name))["metadata"]["annotations"]
        a = await get("dep-a")
        assert a["metadata"]["annotations"][REBUILT_BECAUSE] == "base Lab base changed"
        # the rebuilt image's tag records the base digest it was built from
        stream = await api.get_namespaced_custom_object(*IS, "cnbi-dep-a-package-list")
        assert stream["spec"]["tags"][0]["annotations"][BASE_DIGEST] == B

        # the catalog line
        await loop.run_once()
        lines = rebuilt_lines(reg.images(), loop)
        assert set(lines) == {"cnbi-dep-a-package-list:latest", "cnbi-dep-b-package-list:latest"}
        assert lines["cnbi-dep-a-package-list:latest"].startswith("rebuilt on 20")
        assert lines["cnbi-dep-a-package-list:latest"].endswith("because base Lab base changed")
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for r in regs:
            await r.stop()
        await api_client.close()


async def _true(value):
    return value


@pytest.mark.slow
async def test_service_rebuilds_and_catalog_says_why(cluster, start_hub, tmp_path):
    """The same story through the real ``cnbi`` service process the hub starts: its rebuild
    loop reacts to the base change and its catalog page says why the image was rebuilt."""
    import aiohttp

    port = free_port()
    kubeconfig = str(cluster.kubeconfig)
    cmd = service_command(
        "--cull-every=0",
        f"--namespace={NS}",
        f"--kubeconfig={kubeconfig}",
        "--RebuildSettings.resync_interval=0.5",
    )
    hub = await start_hub(
        f"""
from cnbi_spawner.service.app import service_role
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.services = [{{
    "name": "cnbi", "url": "http://127.0.0.1:{port}", "command": {cmd!r},
    "environment": {{"KUBECONFIG": {kubeconfig!r}}}, "oauth_no_confirm": True,
}}]
c.JupyterHub.load_roles = [service_role("cnbi")]
""",
        kubeconfig=cluster.kubeconfig,
    )
    api_client = await make_api_client(kubeconfig)
    api = client.CustomObjectsApi(api_client)
    headers = {"Authorization": f"token {hub.api_token}"}
    svc = f"{hub.url}/services/cnbi/"
    try:
        async with aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=30)
        ) as session:

            async def catalog() -> str:
                try:
                    async with session.get(svc) as r:
                        return await r.text() if r.status == 200 else ""
                except aiohttp.ClientError:
                    return ""

            await api.create_namespaced_custom_object(*IS, BASE_STREAM)
            await set_base(api, A)
            body = {"displayName": "Stats", "baseImage": "base:latest", "packageVersions": ["x"]}
            obj = customnbimage(validate_request(body, creator="author"), NS)
            obj["metadata"]["name"] = "stats"
            obj["metadata"]["annotations"][OPT_IN] = "true"
            await api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, obj)

            async def get() -> dict:
                return await api.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, "stats")

            async def baseline():
                o = await get()
                return normalise(o).succeeded and o["metadata"]["annotations"].get(BASE_DIGEST) == A

            await until(baseline, "the service to record the baseline", 60)
            assert "cnbi-stats-package-list:latest" in await until(catalog, "catalog", 30)
            assert "cnbi-rebuilt" not in await catalog()
            await set_base(api, B)

            async def says_why():
                page = await catalog()
                return "because base Lab base changed" in page and page

            page = await until(says_why, "the catalog's rebuild line", 60)
            assert "rebuilt on 20" in page
            assert (await get())["metadata"]["annotations"][BASE_DIGEST] == B
    finally:
        await api_client.close()
