"""Unmodified KubeSpawner in a real JupyterHub runs a real jupyterhub-singleuser on the dev cluster.

The user story: a hub operator points stock ``kubespawner.KubeSpawner`` at the dev cluster
(KUBECONFIG), a user starts a server, reaches ``/user/<name>/api/status`` through
configurable-http-proxy, the server's home was seeded from the image's content folder,
and stopping the server deletes the pod (its process is gone).
"""

from __future__ import annotations

import asyncio
import os
import time

import aiohttp
import pytest
from kubernetes_asyncio import client as k8s

from cnbi_spawner.kube import make_api_client

pytestmark = [pytest.mark.slow]

IMAGE_REPO = "registry.example/test/singleuser"
WAIT = 90

HUB_CONFIG = f"""
c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.KubeSpawner.namespace = "default"
c.KubeSpawner.image = "{IMAGE_REPO}:1"
c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
c.KubeSpawner.start_timeout = {WAIT}
c.KubeSpawner.http_timeout = {WAIT}
c.KubeSpawner.k8s_api_request_timeout = 10
"""


async def api(hub, method: str, path: str, **kw) -> tuple[int, dict | None]:
    headers = {"Authorization": f"token {hub.api_token}"}
    async with aiohttp.ClientSession(headers=headers) as s:
        async with s.request(method, hub.api_url + path, **kw) as r:
            body = await r.json() if r.content_type == "application/json" else None
            return r.status, body


async def wait_until(predicate, what: str, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.3)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_kubespawner_spawns_real_singleuser_and_stops_it(devcluster, start_hub, tmp_path):
    content = tmp_path / "content"
    content.mkdir()
    (content / "welcome.md").write_text("# hello from the image\n")
    devcluster.add_image(IMAGE_REPO, content)
    hub = await start_hub(HUB_CONFIG, kubeconfig=devcluster.kubeconfig)
    kube = await make_api_client(str(devcluster.kubeconfig))
    core = k8s.CoreV1Api(kube)
    try:
        status, _ = await api(hub, "POST", "/users/alice")
        assert status == 201
        status, _ = await api(hub, "POST", "/users/alice/server")
        assert status in (201, 202)

        async def ready():
            _, user = await api(hub, "GET", "/users/alice")
            return user["servers"].get("", {}).get("ready")

        await wait_until(ready, "alice's server to be ready")

        pods = (
            await core.list_namespaced_pod("default", label_selector="component=singleuser-server")
        ).items
        assert [p.metadata.name for p in pods] == ["jupyter-alice"]
        pod = pods[0]
        assert pod.status.phase == "Running"
        assert pod.status.pod_ip.startswith("127.") and pod.status.pod_ip != "127.0.0.1"
        assert all(cs.ready for cs in pod.status.container_statuses)
        info = devcluster.pod_info("jupyter-alice")
        assert (info["home"] / "welcome.md").read_text() == "# hello from the image\n"
        assert alive(info["pid"])

        # the user's server answers through the proxy, with a token
        _, tok = await api(hub, "POST", "/users/alice/tokens", json={"expires_in": 600})
        async with aiohttp.ClientSession() as s:
            async with s.get(
                f"{hub.url}/user/alice/api/status",
                headers={"Authorization": f"token {tok['token']}"},
            ) as r:
                assert r.status == 200, await r.text()
                assert "last_activity" in await r.json()

        # the hub's progress saw the kubelet's events
        reasons = {
            e.reason
            for e in (
                await core.list_namespaced_event(
                    "default", field_selector="involvedObject.name=jupyter-alice"
                )
            ).items
        }
        assert {"Scheduled", "Pulling", "Pulled", "Started"} <= reasons
        log = await core.read_namespaced_pod_log("jupyter-alice", "default")
        assert "Jupyter Server" in log  # jupyter_server's own start-up line

        # the reflectors' watches are cut (and the watch history compacted): KubeSpawner must
        # relist and re-watch, and still see the pod go away on stop
        devcluster.store.compact()
        assert devcluster.faults.drop_watches() >= 2  # pods + events reflectors
        status, _ = await api(hub, "DELETE", "/users/alice/server")
        assert status in (202, 204)

        async def gone():
            items = (await core.list_namespaced_pod("default")).items
            _, user = await api(hub, "GET", "/users/alice")
            return not items and not user["servers"]

        await wait_until(gone, "the pod and server to be gone", timeout=60)
        await wait_until(lambda: _false_async(alive(info["pid"])), "the process to exit", 10)
    finally:
        await kube.close()


async def _false_async(value: bool) -> bool:
    return not value


async def test_kubespawner_on_the_stub_runtime(stub_devcluster, start_hub, tmp_path):
    """The stub runtime answers what the hub and the proxy need, for many users cheaply."""
    content = tmp_path / "content"
    content.mkdir()
    stub_devcluster.add_image(IMAGE_REPO, content)
    hub = await start_hub(HUB_CONFIG, kubeconfig=stub_devcluster.kubeconfig)
    users = [f"u{i}" for i in range(4)]
    for name in users:
        assert (await api(hub, "POST", f"/users/{name}"))[0] == 201
        assert (await api(hub, "POST", f"/users/{name}/server"))[0] in (201, 202)

    async def all_ready():
        ready = [(await api(hub, "GET", f"/users/{n}"))[1]["servers"] for n in users]
        return all(s.get("", {}).get("ready") for s in ready)

    await wait_until(all_ready, "all stub servers ready")
    async with aiohttp.ClientSession() as s:
        for name in users:
            async with s.get(f"{hub.url}/user/{name}/api/status") as r:
                assert r.status == 200 and "last_activity" in await r.json()
            async with s.get(f"{hub.url}/user/{name}/lab/tree/notes.ipynb") as r:
                assert r.status == 200 and "text/html" in r.headers["Content-Type"]
    for name in users:
        assert (await api(hub, "DELETE", f"/users/{name}/server"))[0] in (202, 204)

    async def none_left():
        return not stub_devcluster.list("v1", "pods", "default")

    await wait_until(none_left, "all stub pods deleted", timeout=60)


async def test_stock_kubespawner_with_its_default_image_on_a_plain_dev_cluster(
    devcluster, start_hub
):
    """Nothing registered, no image or cmd configured: KubeSpawner's default image pulls and
    the dev cluster runs a real jupyterhub-singleuser for it (the runtime decides what runs)."""
    from kubespawner import KubeSpawner

    config = "\n".join(
        line for line in HUB_CONFIG.splitlines() if not line.startswith(("c.KubeSpawner.image",
                                                                       "c.KubeSpawner.cmd"))
    )  # fmt: skip
    assert not devcluster.images
    hub = await start_hub(config, kubeconfig=devcluster.kubeconfig)
    assert (await api(hub, "POST", "/users/bob"))[0] == 201
    assert (await api(hub, "POST", "/users/bob/server"))[0] in (201, 202)

    async def ready():
        _, user = await api(hub, "GET", "/users/bob")
        return user["servers"].get("", {}).get("ready")

    await wait_until(ready, "bob's server on the default image")
    (pod,) = devcluster.list("v1", "pods", "default")
    assert pod["spec"]["containers"][0]["image"] == KubeSpawner.image.default_value
    _, tok = await api(hub, "POST", "/users/bob/tokens", json={"expires_in": 600})
    async with aiohttp.ClientSession() as s:
        async with s.get(
            f"{hub.url}/user/bob/api/status", headers={"Authorization": f"token {tok['token']}"}
        ) as r:
            assert r.status == 200, await r.text()
    assert (await api(hub, "DELETE", "/users/bob/server"))[0] in (202, 204)

    async def gone():
        return not devcluster.list("v1", "pods", "default")

    await wait_until(gone, "bob's pod deleted", timeout=60)
