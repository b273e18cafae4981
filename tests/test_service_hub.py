"""The ``cnbi`` service as the hub runs it: real hub + proxy + service + dev cluster.

Stories:
- idle anonymous learners are removed with their servers and PVCs, an active one
  stays, a named user's idle-but-not-that-idle server stays, an abandoned login
  (no server) goes, and a PVC left behind by a deleted learner is swept;
- ``/health`` answers 503 while the Kubernetes API hangs and 200 again after;
- the catalog page and ``/api/images`` show the ImageStreams of the dev cluster and
  make launch links; people without ``access:services!service=cnbi`` get 403.

KubeSpawner runs with ``delete_pvc = False`` so that only the service can have
removed a learner's PVC.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from datetime import UTC, datetime

import aiohttp
import pytest
from harness import free_port, hub_login, service_command
from kubernetes_asyncio import client as k8s

from cnbi_spawner.kube import make_api_client

pytestmark = [pytest.mark.slow]

NS = "default"
REPO = "registry.example/courses/cull-test"
IDLE = 8  # anonymous idle timeout and abandoned-login grace, seconds
WAIT = 90


def hub_config(kubeconfig: str, port: int, cull_every: float = 1) -> str:
    cmd = service_command(
        f"--cull-every={cull_every}",
        f"--namespace={NS}",
        f"--kubeconfig={kubeconfig}",
        f"--CullerSettings.anonymous_idle_timeout={IDLE}",
        f"--CullerSettings.abandoned_grace={IDLE}",
        "--CullerSettings.named_idle_timeout=3600",
        "--CullerSettings.concurrency=4",
    )
    return f"""
from cnbi_spawner.service.app import service_role
c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.KubeSpawner.namespace = {NS!r}
c.KubeSpawner.image = {REPO + ":v1"!r}
c.KubeSpawner.storage_pvc_ensure = True
c.KubeSpawner.delete_pvc = False
c.KubeSpawner.start_timeout = {WAIT}
c.KubeSpawner.http_timeout = {WAIT}
c.JupyterHub.services = [{{
    "name": "cnbi",
    "url": "http://127.0.0.1:{port}",
    "command": {cmd!r},
    "environment": {{"KUBECONFIG": {kubeconfig!r}}},
    "oauth_no_confirm": True,
}}]
c.JupyterHub.load_roles = [
    service_role("cnbi"),
    {{"name": "catalog", "scopes": ["access:services!service=cnbi"], "users": ["author"]}},
]
"""


class Hub:
    """Hub API calls with the harness's admin token."""

    def __init__(self, hub) -> None:
        self.hub = hub
        self.session = aiohttp.ClientSession(
            headers={"Authorization": f"token {hub.api_token}"},
            timeout=aiohttp.ClientTimeout(total=WAIT),
        )

    async def call(self, method: str, path: str, body=None) -> tuple[int, object]:
        kw = {"json": body} if body is not None else {}
        async with self.session.request(method, self.hub.api_url + path, **kw) as r:
            text = await r.text()
            return r.status, (json.loads(text) if text.strip() else None)

    async def users(self) -> dict[str, dict]:
        status, body = await self.call("GET", "/users?limit=200")
        assert status == 200, body
        return {u["name"]: u for u in body}

    async def close(self) -> None:
        await self.session.close()


async def wait_for(predicate, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.5)


@pytest.fixture
def cluster(stub_devcluster):
    """The dev cluster with the stub runtime: pods are cheap fake singleuser servers."""
    return stub_devcluster


@pytest.fixture
async def kube(cluster):
    api = await make_api_client(str(cluster.kubeconfig))
    yield api
    await api.close()


@pytest.fixture
async def stack(cluster, kube, start_hub, tmp_path):
    devcluster = cluster
    content = tmp_path / "content"
    content.mkdir()
    (content / "README.md").write_text("cull test\n")
    added = devcluster.add_image(REPO, content)
    if asyncio.iscoroutine(added):
        await added
    port = free_port()
    hub = await start_hub(
        hub_config(str(devcluster.kubeconfig), port), kubeconfig=devcluster.kubeconfig
    )
    api = Hub(hub)
    svc = f"{hub.url}/services/cnbi/"

    async def service_up() -> bool:
        try:
            async with api.session.get(svc + "health") as r:
                return r.status in (200, 503)
        except aiohttp.ClientError:
            return False

    await wait_for(service_up, "the cnbi service", 60)
    yield hub, api, svc
    await api.close()


async def pvcs(kube) -> dict[str, str]:
    """PVC name -> owner (annotation) for user storage in NS."""
    items = await k8s.CoreV1Api(kube).list_namespaced_persistent_volume_claim(
        NS, label_selector="component=singleuser-storage"
    )
    return {
        p.metadata.name: (p.metadata.annotations or {}).get("hub.jupyter.org/username", "")
        for p in items.items
        if not p.metadata.deletion_timestamp
    }


async def test_idle_anonymous_users_are_removed_with_servers_and_pvcs(stack, kube):
    hub, api, _ = stack
    idle, active, abandoned, gone = (str(uuid.uuid4()) for _ in range(4))
    named = "alice"
    status, body = await api.call("POST", "/users", {"usernames": [idle, active, abandoned, named]})
    assert status == 201, body
    status, body = await api.call("POST", "/groups/anonymous", {})
    assert status in (201, 409), body
    await api.call("POST", "/groups/anonymous/users", {"users": [idle, active, abandoned]})

    # storage of a learner deleted earlier (an interrupted pass): must be swept
    orphan = k8s.V1PersistentVolumeClaim(
        metadata=k8s.V1ObjectMeta(
            name=f"claim-{gone}",
            labels={"component": "singleuser-storage", "hub.jupyter.org/username": gone},
            annotations={"hub.jupyter.org/username": gone},
        ),
        spec=k8s.V1PersistentVolumeClaimSpec(
            access_modes=["ReadWriteOnce"],
            resources=k8s.V1VolumeResourceRequirements(requests={"storage": "1Gi"}),
        ),
    )
    await k8s.CoreV1Api(kube).create_namespaced_persistent_volume_claim(NS, orphan)

    for name in (idle, active, named):
        status, body = await api.call("POST", f"/users/{name}/server", {})
        assert status in (201, 202), body

    stop_pinging = asyncio.Event()

    async def keep_active() -> None:  # the learner who is still working
        while not stop_pinging.is_set():
            now = datetime.now(UTC).isoformat()
            await api.call(
                "POST",
                f"/users/{active}/activity",
                {"last_activity": now, "servers": {"": {"last_activity": now}}},
            )
            await asyncio.sleep(1)

    pinger = asyncio.create_task(keep_active())
    try:

        async def all_ready() -> bool:
            users = await api.users()
            return all(users[n]["servers"].get("", {}).get("ready") for n in (active, named)) and (
                idle not in users or users[idle]["servers"].get("", {}).get("ready", True)
            )

        await wait_for(all_ready, "servers to start")
        assert {idle, active, named} <= set((await pvcs(kube)).values())

        async def idle_ones_gone() -> bool:
            users = await api.users()
            return idle not in users and abandoned not in users

        await wait_for(idle_ones_gone, "the idle and abandoned learners to be deleted", 60)

        async def storage_swept() -> bool:
            owners = set((await pvcs(kube)).values())
            return idle not in owners and gone not in owners

        await wait_for(storage_swept, "the PVCs of deleted learners to be deleted", 30)
        # a few more passes: the active learner and the named user must survive them
        await asyncio.sleep(3)
    finally:
        stop_pinging.set()
        await pinger

    users = await api.users()
    assert users[active]["servers"][""]["ready"]
    assert users[named]["servers"][""]["ready"]
    owners = set((await pvcs(kube)).values())
    assert {active, named} <= owners
    pods = await k8s.CoreV1Api(kube).list_namespaced_pod(NS)
    pod_owners = {
        (p.metadata.annotations or {}).get("hub.jupyter.org/username")
        for p in pods.items
        if not p.metadata.deletion_timestamp
    }
    assert idle not in pod_owners
    assert active in pod_owners

    metrics = await (await api.session.get(f"{hub.url}/services/cnbi/metrics")).text()
    assert 'cnbi_service_culls_total{kind="anonymous-user",reason="idle"}' in metrics
    assert 'cnbi_service_culls_total{kind="anonymous-user",reason="abandoned"}' in metrics
    assert 'cnbi_service_culls_total{kind="pvc",reason="orphan"} 1.0' in metrics
    log = hub.log_text()
    assert re.search(rf"Deleting anonymous user {idle} \(reason idle, idle 00:00:\d\d", log)


async def test_health_follows_the_kubernetes_api(stack, cluster):
    devcluster = cluster
    hub, api, svc = stack

    async def health() -> tuple[int, dict]:
        async with api.session.get(svc + "health") as r:
            return r.status, await r.json()

    async def healthy() -> bool:
        return (await health())[0] == 200

    await wait_for(healthy, "health 200 (registry synced)", 60)
    status, body = await health()
    assert body["hub"]["ok"] and body["kubernetes"]["ok"] and body["registry"]["synced"]

    devcluster.faults.pause(mode="hang")
    try:
        t0 = time.monotonic()
        status, body = await health()
        assert status == 503, body
        assert body["kubernetes"]["ok"] is False and body["hub"]["ok"] is True
        assert time.monotonic() - t0 < 10  # a probe must not hang with the API
    finally:
        devcluster.faults.resume()
    await wait_for(healthy, "health back to 200 after resume", 30)


def imagestream() -> dict:
    digest = "sha256:" + "c0" * 32
    return {
        "apiVersion": "image.openshift.io/v1",
        "kind": "ImageStream",
        "metadata": {
            "name": "cull-test",
            "namespace": NS,
            "labels": {"opendatahub.io/notebook-image": "true"},
            "annotations": {
                "opendatahub.io/notebook-image-name": "Catalog <Course>",
                "opendatahub.io/notebook-image-desc": "Shown in the catalog",
                "cnbi.meteor.zone/notebooks": json.dumps(["lectures/one.ipynb"]),
            },
        },
        "spec": {
            "tags": [
                {
                    "name": "v1",
                    "annotations": {
                        "opendatahub.io/notebook-python-dependencies": json.dumps(
                            [{"name": "numpy", "version": "2.1"}]
                        )
                    },
                    "from": {"kind": "DockerImage", "name": f"{REPO}:v1"},
                }
            ]
        },
        "status": {
            "dockerImageRepository": REPO,
            "tags": [
                {
                    "tag": "v1",
                    "items": [
                        {
                            "created": "2026-09-01T08:00:00Z",
                            "dockerImageReference": f"{REPO}@{digest}",
                            "image": digest,
                            "generation": 1,
                        }
                    ],
                }
            ],
        },
    }


async def put_imagestream(kube, obj: dict) -> None:
    api = k8s.CustomObjectsApi(kube)
    args = ("image.openshift.io", "v1", NS, "imagestreams")
    created = await api.create_namespaced_custom_object(*args, obj)
    obj = {
        **obj,
        "metadata": {
            **obj["metadata"],
            **{"resourceVersion": created["metadata"]["resourceVersion"]},
        },
    }
    await api.replace_namespaced_custom_object_status(*args, obj["metadata"]["name"], obj)


async def login(hub, name: str) -> aiohttp.ClientSession:
    session = aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=aiohttp.ClientTimeout(total=WAIT)
    )
    await hub_login(session, hub.url, name)
    return session


async def test_catalog_lists_imagestreams_and_makes_links(stack, kube):
    hub, api, svc = stack
    await put_imagestream(kube, imagestream())
    key = "cull-test:v1"

    async def listed() -> bool:
        async with api.session.get(svc + "api/images") as r:
            assert r.status == 200, await r.text()
            return key in [i["key"] for i in (await r.json())["images"]]

    await wait_for(listed, "the ImageStream in /api/images", 30)
    async with api.session.get(svc + "api/images/" + key) as r:
        image = await r.json()
    assert image["display_name"] == "Catalog <Course>"
    assert image["python_dependencies"] == [{"name": "numpy", "version": "2.1"}]
    async with api.session.get(svc + "api/images/nope:1") as r:
        assert r.status == 404

    author = await login(hub, "author")
    try:
        async with author.get(svc) as r:  # through the hub's OAuth flow
            page = await r.text()
            assert r.status == 200, page
        assert "Catalog &lt;Course&gt;" in page  # escaped
        assert "numpy 2.1" in page and "lectures/one.ipynb" in page
        assert "/hub/static/css/style.min.css" in page  # the hub's look
        async with author.get(svc, params={"course": key, "notebook": "lectures/one.ipynb"}) as r:
            page = await r.text()
            assert r.status == 200, page
        link = re.search(r'id="launch-link"[^>]*value="([^"]+)"', page).group(1)
        assert link.startswith(f"{hub.url}/tmplogin?course=cull-test%3Av1&amp;notebook=")
        async with author.get(svc, params={"course": key, "notebook": "../x"}) as r:
            assert r.status == 400
            assert "is-invalid" in await r.text()
    finally:
        await author.close()

    stranger = await login(hub, "stranger")  # no access:services!service=cnbi
    try:
        async with stranger.get(svc) as r:
            assert r.status == 403
    finally:
        await stranger.close()
    async with aiohttp.ClientSession() as anon:
        async with anon.get(svc + "api/images") as r:
            assert r.status == 403
