"""Warm pools on the real stack: hub + CNBiSpawner (KubeSpawner) + proxy + cnbi service +
dev cluster (stub runtime: pods are cheap fake servers, the hub and proxy are real).

Stories:
- the service fills a pool; many learners click the same link at once: exactly one gets
  the ready pool server, the others get another one or an ordinary spawn; the claimed one
  opens straight in its server, and the pool is refilled; the culler leaves unclaimed pool
  servers alone while it culls a claimed, idle one like any learner;
- a hub restart keeps the warm pool and the claims (nothing handed out twice);
- a new image digest for the course drains the pool and refills it with the new image.

Links are signed, so pool servers go through the launch-ticket check like a learner's.
"""

from __future__ import annotations

import asyncio
import copy
import re
import time
from urllib.parse import unquote, urlsplit

import aiohttp
import pytest
from harness import HubProcess, free_port, service_command, wait_for
from kubernetes_asyncio import client as k8s
from test_auth_hub import browser, metrics, tmplogin
from test_spawner_hub import NOTEBOOK, REPO, imagestream, put_imagestream, user_pods

from cnbi_spawner.kube import make_api_client
from cnbi_spawner.pool import POOL_GROUP
from cnbi_spawner.pool_starts import CLAIM_WINDOW
from cnbi_spawner.signing import sign_params

pytestmark = [pytest.mark.slow]

NS = "default"
COURSE = "uai-intro:2026.1"
KEY = "pool-test-signing-key-0123456789"
IDLE = 3  # anonymous idle timeout: far shorter than the tests' waits


def service_config(path, targets: dict) -> str:
    path.write_text(
        f"c.PoolSettings.targets = {targets!r}\n"
        "c.PoolSettings.check_every = 1\n"
        'c.ResourcePolicy.anonymous_max_size = "small"\n'
    )
    return str(path)


def hub_config(kubeconfig: str, service_port: int, service_config_path: str, idle: float) -> str:
    cmd = service_command(
        f"--config={service_config_path}",
        "--cull-every=1",
        f"--namespace={NS}",
        f"--kubeconfig={kubeconfig}",
        f"--CullerSettings.anonymous_idle_timeout={idle}",
        f"--CullerSettings.abandoned_grace={idle}",
    )
    return f"""
from cnbi_spawner.service.app import service_role
from cnbi_spawner.service.pool import pool_role
c.JupyterHub.spawner_class = "cnbi"
c.JupyterHub.authenticator_class = "tmplogin"
c.LinkSigning.key = {KEY!r}
c.KubeSpawner.namespace = {NS!r}
c.KubeSpawner.start_timeout = 90
c.KubeSpawner.http_timeout = 90
c.ImageRegistry.namespaces = [{NS!r}]
c.ResourcePolicy.anonymous_max_size = "small"
c.JupyterHub.services = [{{
    "name": "cnbi",
    "url": "http://127.0.0.1:{service_port}",
    "command": {cmd!r},
    "environment": {{"KUBECONFIG": {kubeconfig!r}, "CNBI_LINK_SIGNING_KEY": {KEY!r}}},
    "oauth_no_confirm": True,
}}]
c.JupyterHub.load_roles = [service_role("cnbi"), pool_role("cnbi")]
"""


class Admin:
    def __init__(self, hub) -> None:
        self.hub = hub

    async def get(self, path: str):
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
            headers = {"Authorization": f"token {self.hub.api_token}"}
            async with s.get(self.hub.api_url + path, headers=headers) as r:
                if r.status == 404:
                    return None
                assert r.status == 200, await r.text()
                return await r.json()

    async def pool(self) -> dict[str, dict]:
        """Unclaimed pool users -> their default server model."""
        group = await self.get(f"/groups/{POOL_GROUP}")
        out = {}
        for name in (group or {}).get("users", []):
            user = await self.get(f"/users/{name}")
            if user is not None:
                out[name] = (user.get("servers") or {}).get("", {})
        return out

    async def ready_pool(self) -> set[str]:
        return {n for n, s in (await self.pool()).items() if s.get("ready")}

    async def groups_of(self, name: str) -> list[str] | None:
        user = await self.get(f"/users/{name}")
        return None if user is None else user["groups"]


def link(course: str = COURSE, notebook: str | None = None) -> dict:
    params = {"course": course}
    if notebook:
        params["notebook"] = notebook
    return sign_params(params, KEY, int(time.time()) + 600)


def user_in(location: str) -> str | None:
    """The user a /tmplogin redirect hands the browser to (``/user/<name>/…``), if any."""
    parts = urlsplit(location).path.split("/")
    return parts[2] if len(parts) > 2 and parts[1] == "user" else None


@pytest.fixture
async def kube(stub_devcluster, tmp_path):
    (tmp_path / "content").mkdir()
    stub_devcluster.add_image(REPO, tmp_path / "content")
    api = await make_api_client(str(stub_devcluster.kubeconfig))
    await put_imagestream(api, imagestream())
    yield api
    await api.close()


async def start_stack(
    start_hub, cluster, tmp_path, targets: dict, idle: float = 600, extra: str = ""
):
    port = free_port()
    config = hub_config(
        str(cluster.kubeconfig),
        port,
        service_config(tmp_path / "service_config.py", targets),
        idle,
    )
    hub = await start_hub(config + extra, kubeconfig=cluster.kubeconfig)
    return hub, config


async def wait_ready(admin: Admin, n: int, timeout: float = 60) -> set[str]:
    async def full():
        return len(await admin.ready_pool()) >= n

    await wait_for(full, f"{n} ready pool servers", timeout)
    return await admin.ready_pool()


async def test_one_pool_server_goes_to_exactly_one_learner(
    start_hub, stub_devcluster, kube, tmp_path
):
    hub, _ = await start_stack(start_hub, stub_devcluster, tmp_path, {"uai-intro": 1}, IDLE)
    admin = Admin(hub)
    (pool_user,) = await wait_ready(admin, 1)

    learners = [browser() for _ in range(8)]
    try:
        answers = await asyncio.gather(
            *(tmplogin(b, hub, link(notebook=NOTEBOOK)) for b in learners)
        )
        assert all(code == 302 for code, _, _ in answers), answers
        locations = [unquote(h["Location"]) for _, h, _ in answers]
        claimed = [user_in(loc) for loc in locations if user_in(loc)]
        spawned = [loc for loc in locations if not user_in(loc)]
        assert claimed.count(pool_user) == 1, locations  # exactly one learner got it
        assert len(set(claimed)) == len(claimed), locations  # nobody shares a server
        assert all("/hub/spawn?" in loc and "ticket" in loc for loc in spawned), spawned
        assert f"/user/{pool_user}/lab/tree/{NOTEBOOK}" in locations
        assert (await metrics(hub))["claimed"] == len(claimed)

        # the winner is an ordinary anonymous learner now, and its browser is logged in
        assert await admin.groups_of(pool_user) == ["anonymous"]
        winner = learners[[user_in(loc) for loc in locations].index(pool_user)]
        claim_url = next(h["Location"] for _, h, _ in answers if pool_user in h["Location"])
        async with winner.get(hub.url + claim_url) as r:
            body = await r.text()
            assert r.status == 200, body[:500]
            assert "stub notebook server" in body and "lab/tree/lectures" in body

        # the pool is refilled with a new server; the service counted the claim
        refill = await wait_ready(admin, 1)
        assert pool_user not in refill
        claim = f'cnbi_service_pool_claimed_total{{course="{COURSE}",size="small"}} 1.0'

        async def claim_counted():
            return claim in await _service_metrics(hub)

        await wait_for(claim_counted, "the service to count the claim", 20)
        assert f"Pool server of {pool_user} claimed" in hub.log_text()

        # the culler stops the claimed server once idle, never the unclaimed one
        async def winner_culled():
            return await admin.groups_of(pool_user) is None

        await wait_for(winner_culled, "the claimed, idle server culled", 60)
        await asyncio.sleep(IDLE + 2)  # several cull passes past the idle timeout
        assert refill <= await admin.ready_pool()
        assert "Culling server" not in hub.log_text().split(str(next(iter(refill))))[-1]
    finally:
        for b in learners:
            await b.close()


async def test_hub_restart_keeps_the_pool_and_its_claims(
    start_hub, stub_devcluster, kube, tmp_path
):
    hub, config = await start_stack(start_hub, stub_devcluster, tmp_path, {"uai-intro": 2})
    admin = Admin(hub)
    before = await wait_ready(admin, 2)
    async with browser() as b:
        code, headers, _ = await tmplogin(b, hub, link())
    first = user_in(headers["Location"])
    assert code == 302 and first in before

    await hub.stop()
    again = HubProcess(config, workdir=hub.workdir, kubeconfig=stub_devcluster.kubeconfig)
    for attr in ("port", "hub_port", "proxy_api_port", "url", "api_url", "api_token"):
        setattr(again, attr, getattr(hub, attr))
    await again.start()
    try:
        admin = Admin(again)
        kept = before - {first}
        # the unclaimed server survived the restart, still ready, still in the pool
        assert kept <= await admin.ready_pool() or kept <= await wait_ready(admin, 2)
        assert await admin.groups_of(first) == ["anonymous"]  # the claim survived too
        got = set()
        for _ in range(3):
            async with browser() as b:
                code, headers, _ = await tmplogin(b, again, link())
                assert code == 302
                got.add(user_in(headers["Location"]))
        assert first not in got  # never handed out twice
        assert kept <= got  # the restarted hub hands out the kept server
    finally:
        await again.stop()


async def test_new_digest_drains_the_pool(start_hub, stub_devcluster, kube, tmp_path):
    hub, _ = await start_stack(start_hub, stub_devcluster, tmp_path, {"uai-intro": 2})
    admin = Admin(hub)
    old = await wait_ready(admin, 2)
    for name in old:
        (pod,) = await user_pods(kube, name)
        assert pod.spec.containers[0].image.endswith("1b" * 32)

    moved = copy.deepcopy(imagestream())
    new_digest = "sha256:" + "2c" * 32
    item = moved["status"]["tags"][0]["items"][0]
    item["dockerImageReference"] = item["dockerImageReference"].split("@")[0] + "@" + new_digest
    item["image"] = new_digest
    await put_imagestream(kube, moved)

    async def replaced():
        ready = await admin.ready_pool()
        return len(ready) == 2 and not ready & old

    await wait_for(replaced, "the pool refilled with the new digest", 60)
    for name in await admin.ready_pool():
        (pod,) = await user_pods(kube, name)
        assert pod.spec.containers[0].image.endswith("2c" * 32)
    for name in old:  # drained: users gone, not handed to learners
        assert await admin.groups_of(name) is None
    assert "reason digest-changed" in hub.log_text()

    async def gauges():
        scrape = await _service_metrics(hub)
        return (
            'cnbi_service_pool_drained_total{reason="digest-changed"} 2.0' in scrape
            and f'cnbi_service_pool_ready{{course="{COURSE}",size="small"}} 2.0' in scrape
            and f'cnbi_service_pool_target{{course="{COURSE}",size="small"}} 2.0' in scrape
        )

    await wait_for(gauges, "pool metrics at /services/cnbi/metrics", 20)


async def _service_metrics(hub) -> str:
    async with aiohttp.ClientSession() as s:
        async with s.get(hub.url + "/services/cnbi/metrics") as r:
            assert r.status == 200
            return await r.text()


async def test_a_failing_course_image_pauses_its_pool(start_hub, stub_devcluster, kube, tmp_path):
    stub_devcluster.kubelet.pod_faults.set(REPO, "ErrImagePull")
    hub, _ = await start_stack(start_hub, stub_devcluster, tmp_path, {"uai-intro": 3})
    admin = Admin(hub)

    async def paused():
        return "no new starts for" in hub.log_text()

    await wait_for(paused, "the pool's back-off after failed starts", 90)
    created_before = hub.log_text().count("cnbi.pool] Pool server starting for")
    await asyncio.sleep(8)  # inside the back-off: nothing new is started
    assert hub.log_text().count("cnbi.pool] Pool server starting for") == created_before
    assert not await admin.ready_pool()

    stub_devcluster.kubelet.pod_faults.set(REPO, None)  # the author fixed the image
    await wait_ready(admin, 3, timeout=120)  # the pool resumes after its back-off


async def test_the_pool_refills_after_a_burst_of_claims(start_hub, stub_devcluster, kube, tmp_path):
    """While learners claim pool servers fast (here any claim is a burst: 0.1 a second over
    the 5 s window), the hub refuses the service's refill starts; after the burst the pool is
    refilled."""
    burst = "c.TmpLoginMixin.pool_refill_claim_rate = 0.1\n"
    hub, _ = await start_stack(start_hub, stub_devcluster, tmp_path, {"uai-intro": 2}, extra=burst)
    admin = Admin(hub)
    ready = await wait_ready(admin, 2)
    async with browser() as b:
        code, headers, _ = await tmplogin(b, hub, link(notebook=NOTEBOOK))
    claimed_at = time.monotonic()
    assert code == 302 and user_in(headers["Location"]) in ready

    async def refused() -> bool:
        return "Learners are claiming warm pool servers (1 in the last 5 s)" in hub.log_text()

    await wait_for(refused, "the refill refused during the burst", 20)
    refill = await wait_ready(admin, 2)
    assert time.monotonic() - claimed_at >= CLAIM_WINDOW  # not before the burst was over
    assert len(refill - ready) == 1


async def test_the_pool_never_pushes_the_hub_past_max_anonymous_users(
    start_hub, stub_devcluster, kube, tmp_path
):
    """Room for 3 anonymous users, a pool target of 5: the pool fills the room and no more
    (the hub refuses the other starts, the service waits); a claim needs no room, and its
    replacement is refused too, since the claimed server still counts."""
    cap = "c.TmpLoginMixin.max_anonymous_users = 3\n"
    hub, _ = await start_stack(start_hub, stub_devcluster, tmp_path, {"uai-intro": 5}, extra=cap)
    admin = Admin(hub)
    seen: list[int] = []

    async def with_a_server() -> int:  # learners' and pool servers' pods in the cluster
        pods = await k8s.CoreV1Api(kube).list_namespaced_pod(NS)
        return sum(1 for p in pods.items if not p.metadata.deletion_timestamp)

    async def refused() -> bool:
        seen.append(await with_a_server())
        return "refused by the hub (503)" in hub.log_text()

    await wait_for(refused, "a pool start refused at max_anonymous_users", 60)
    ready = await wait_ready(admin, 3)
    for _ in range(5):  # several pool passes: still 3, never more
        await asyncio.sleep(1)
        seen.append(await with_a_server())
    assert len(await admin.ready_pool()) == 3
    assert max(seen) <= 3, seen
    assert "at max_anonymous_users (3); no pool server started" in hub.log_text()
    assert 'cnbi_service_pool_start_refusals_total{course="' in await _service_metrics(hub)

    async with browser() as b:  # the hub is full, but a ready pool server needs no room
        code, headers, _ = await tmplogin(b, hub, link(notebook=NOTEBOOK))
    assert code == 302 and user_in(headers["Location"]) in ready
    for _ in range(5):  # no replacement: the claimed server still takes its place
        await asyncio.sleep(1)
        seen.append(await with_a_server())
    assert max(seen) <= 3, seen
    assert len(await admin.ready_pool()) == 2
    refused = re.findall(r"Pool start for (\S+) \(course \S+\) refused", hub.log_text())
    assert refused

    async def deleted() -> bool:  # the refused pool users were deleted, not left over
        return all([await admin.get(f"/users/{name}") is None for name in refused])

    await wait_for(deleted, "refused pool users deleted", 20)
