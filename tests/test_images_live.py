"""ImageRegistry against the dev cluster, through the real kubernetes_asyncio client.

Each test drives ImageStreams with the real client (create, status patch, annotate,
delete) and checks that the registry follows within a second; then faults: a paused
API (503 and hang), recovery, dropped watches, and a too-old resourceVersion (410).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import sys
import time
from pathlib import Path

import pytest
import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from traitlets.config import Config

from cnbi_spawner.errors import UnknownImage
from cnbi_spawner.images.registry import GROUP, PLURAL, VERSION, ImageRegistry
from cnbi_spawner.kube import make_api_client

FIXTURES = Path(__file__).parent / "fixtures" / "imagestreams"
NS = "opendatahub"
DS = "jupyter-datascience-notebook"
FOLLOW = 1.0
UNREACHABLE = (  # a kubeconfig whose API server refuses connections
    "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
    "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
    "users: [{name: u, user: {token: t}}]\n"
)  # the registry must follow a change within this many seconds


def fixture(name: str) -> dict:
    return yaml.safe_load((FIXTURES / f"{name}.yaml").read_text())


def as_new(obj: dict) -> dict:
    """A fixture as a client would POST it: no server-set metadata."""
    obj = copy.deepcopy(obj)
    meta = obj["metadata"]
    for key in ("uid", "resourceVersion", "generation", "creationTimestamp"):
        meta.pop(key, None)
    return obj


async def wait_for(predicate, timeout: float, what: str) -> float:
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.01)


def resolves(reg: ImageRegistry, name: str) -> str | None:
    try:
        return reg.resolve(name).key
    except UnknownImage:
        return None


class Streams:
    """ImageStream CRUD through the real client (status through the /status subresource)."""

    def __init__(self, api: client.ApiClient):
        self.api = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    async def ensure_namespace(self, ns: str = NS) -> None:
        try:
            await self.core.create_namespace({"metadata": {"name": ns}})
        except ApiException as e:
            if e.status != 409:
                raise

    async def create(self, obj: dict, ns: str = NS) -> dict:
        obj = as_new(obj)
        status = obj.pop("status", None)
        created = await self.api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, obj)
        if status is not None:
            created["status"] = status
            created = await self.api.replace_namespaced_custom_object_status(
                GROUP, VERSION, ns, PLURAL, obj["metadata"]["name"], created
            )
        return created

    async def annotate(self, name: str, annotations: dict, ns: str = NS) -> dict:
        return await self.api.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            ns,
            PLURAL,
            name,
            {"metadata": {"annotations": annotations}},
            _content_type="application/merge-patch+json",
        )

    async def delete(self, name: str, ns: str = NS) -> None:
        await self.api.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)


@pytest.fixture
async def kube(devcluster):
    api = await make_api_client(str(devcluster.kubeconfig))
    streams = Streams(api)
    await streams.ensure_namespace()
    yield streams
    await api.close()


@pytest.fixture
async def registry(devcluster, kube):
    regs: list[ImageRegistry] = []

    async def make(**kw) -> ImageRegistry:
        kw.setdefault("namespaces", [NS])
        kw.setdefault("resync_period", 1.0)
        kw.setdefault("request_timeout", 1.0)
        kw.setdefault("backoff_max", 0.5)
        reg = ImageRegistry(kubeconfig=str(devcluster.kubeconfig), **kw)
        regs.append(reg)
        await reg.start()
        assert await reg.wait_synced(10), "registry did not sync"
        return reg

    yield make
    for reg in regs:
        await reg.stop()


async def test_lists_existing_streams_and_ignores_runtime(kube, registry):
    for name in FIXTURES.glob("*.yaml"):
        await kube.create(fixture(name.stem))
    reg = await registry()
    assert {i.key for i in reg.launchable()} == {
        f"{DS}:2025.1",
        "jupyter-minimal-gpu-notebook:2025.1",
        "jupyter-minimal-gpu-notebook:2024.2",
        "jupyter-trustyai-notebook:2025.1",
        "cnbi-import-s2i-minimal-import:v0.2.2",
    }
    assert reg.get(f"{DS}:2024.2").outdated
    assert reg.resolve(DS).key == f"{DS}:2025.1"
    assert "@sha256:" in reg.resolve(DS).image
    assert reg.skipped[f"imagestream:{NS}/custom-my-scipy-notebook"]
    assert not any("runtime-datascience" in s for s in reg.index.sources())
    assert reg.synced and reg.stale_since is None


async def test_follows_create_modify_delete(kube, registry):
    reg = await registry()
    changes: list[tuple[set, set]] = []
    reg.add_listener(lambda old, new: changes.append((set(old), set(new))))
    assert resolves(reg, DS) is None

    await kube.create(fixture("jupyter-datascience-notebook"))
    await wait_for(lambda: resolves(reg, DS) == f"{DS}:2025.1", FOLLOW, "stream created")

    await kube.annotate(DS, {"cnbi.meteor.zone/course-aliases": "intro-to-ds"})
    await wait_for(lambda: resolves(reg, "Intro-To-DS") == f"{DS}:2025.1", FOLLOW, "alias added")

    await kube.delete(DS)
    await wait_for(lambda: reg.get(f"{DS}:2025.1") is None, FOLLOW, "stream deleted")
    assert resolves(reg, "intro-to-ds") is None
    assert changes and f"{DS}:2025.1" in changes[0][1] and f"{DS}:2025.1" in changes[-1][0]


async def test_static_and_imagestreams_merge(kube, registry):
    static = {"Course_A": "registry.example/courses/a:v1"}
    reg = await registry(static_images=static)
    await kube.create(fixture("cnbi-import-s2i-minimal-import"))
    await wait_for(lambda: resolves(reg, "v0.2.2") is not None, FOLLOW, "stream seen")
    assert reg.resolve("course_a").image == "registry.example/courses/a:v1"


@pytest.mark.parametrize("mode", ["503", "hang"])
async def test_api_pause_keeps_last_known_good_then_resyncs(devcluster, kube, registry, mode):
    await kube.create(fixture("jupyter-datascience-notebook"))
    reg = await registry()
    assert reg.resolve(DS)

    devcluster.faults.pause(mode=mode)
    try:
        # hang is only noticed when the watch request times out (resync + request timeout)
        await wait_for(lambda: reg.stale_since is not None, 6, "outage noticed")
        assert reg.synced  # still serving
        assert reg.resolve(DS).key == f"{DS}:2025.1"
    finally:
        devcluster.faults.resume()
    await wait_for(lambda: reg.stale_since is None, 6, "recovered")
    await kube.create(fixture("jupyter-trustyai-notebook-malformed-deps"))
    await wait_for(
        lambda: resolves(reg, "jupyter-trustyai-notebook") is not None, FOLLOW, "post-outage"
    )


async def test_dropped_watches_lose_nothing(devcluster, kube, registry):
    reg = await registry()
    devcluster.faults.drop_watches()
    await kube.create(fixture("jupyter-datascience-notebook"))
    await wait_for(lambda: resolves(reg, DS) is not None, 3, "event after dropped watch")


async def test_too_old_resource_version_relists(devcluster, kube, registry, caplog):
    caplog.set_level(logging.INFO)
    reg = await registry()
    await kube.create(fixture("jupyter-datascience-notebook"))
    await wait_for(lambda: resolves(reg, DS) is not None, FOLLOW, "first stream")
    # the registry's next watch (resumed from its last rv) arrives after history is gone:
    # only a relist (after 410 Gone) can show the stream created in between
    devcluster.faults.latency = 0.3
    devcluster.faults.drop_watches()
    obj = as_new(fixture("jupyter-trustyai-notebook-malformed-deps"))
    status = obj.pop("status")
    created = devcluster.create(f"{GROUP}/{VERSION}", PLURAL, obj, namespace=NS)
    created["status"] = status
    devcluster.replace(f"{GROUP}/{VERSION}", PLURAL, created, namespace=NS, status=True)
    devcluster.store.compact()
    await wait_for(lambda: resolves(reg, "jupyter-trustyai-notebook") is not None, 3, "relist")
    devcluster.faults.latency = 0
    assert reg.stale_since is None  # a 410 is routine, not an outage
    assert "expired (410 Gone); listing again" in caplog.text


async def test_never_synced_is_not_ready(tmp_path):
    from cnbi_spawner.errors import RegistryNotReady

    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text(UNREACHABLE)
    reg = ImageRegistry(kubeconfig=str(kubeconfig), namespaces=[NS], backoff_max=0.2)
    await reg.start()
    try:
        assert not await reg.wait_synced(0.5)
        with pytest.raises(RegistryNotReady):
            reg.resolve(DS)
        assert reg.stale_since is not None
    finally:
        await reg.stop()


async def test_concurrent_starts_make_one_watcher(tmp_path):
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text(UNREACHABLE)
    reg = ImageRegistry(kubeconfig=str(kubeconfig), namespaces=["a", "b", "a"])
    try:
        await asyncio.gather(*(reg.start() for _ in range(5)))
        assert sorted(t.get_name() for t in reg._tasks) == ["imagestreams:a", "imagestreams:b"]
    finally:
        await reg.stop()


async def test_static_only_needs_no_cluster():
    reg = ImageRegistry(watch_imagestreams=False, static_images={"A": "registry.example/a"})
    await reg.start()
    assert await reg.wait_synced(0)
    assert reg.resolve("a").image == "registry.example/a"
    await reg.stop()


def test_static_images_changed_at_run_time(caplog):
    caplog.set_level(logging.INFO)
    reg = ImageRegistry(watch_imagestreams=False, static_images={"A": "registry.example/a"})
    seen: list[tuple[set, set]] = []
    reg.add_listener(lambda old, new: seen.append((set(old), set(new))))
    reg.static_images = {"B": "registry.example/b:v1"}
    assert seen == [({"a"}, {"b"})]
    assert reg.resolve("B").image == "registry.example/b:v1"
    assert reg.get("a") is None
    assert "Image added: b -> registry.example/b:v1 (static)" in caplog.text
    assert "Image removed: a (static)" in caplog.text


def test_for_hub_is_one_per_hub_config():
    ImageRegistry.forget_hub_registries()
    try:
        hub = Config({"ImageRegistry": {"watch_imagestreams": False}})
        first = ImageRegistry.for_hub(hub)
        assert ImageRegistry.for_hub(Config(hub)) is first  # the same settings: the same one
        assert ImageRegistry.for_hub(Config()) is not first
    finally:
        ImageRegistry.forget_hub_registries()


async def test_cli_against_cluster(devcluster, kube):
    for name in ("jupyter-datascience-notebook", "custom-my-scipy-notebook-failed-import"):
        await kube.create(fixture(name))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cnbi_spawner.cli",
        "images",
        "--kubeconfig",
        str(devcluster.kubeconfig),
        "-n",
        NS,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    text = out.decode()
    assert proc.returncode == 0, err.decode()
    assert f"{DS}:2025.1" in text and "recommended" in text
    assert "custom-my-scipy-notebook:2024-13-01: import failed: NotFound" in text
