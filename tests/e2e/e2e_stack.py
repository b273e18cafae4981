"""The whole system for end-to-end tests: dev cluster + production-config hub + CHP + service.

``start_stack(workdir, runtime=..., db_url=...)`` starts, in this order:

1. a ``DevCluster`` (``process`` runtime: pods are real ``jupyterhub-singleuser``
   processes serving the demo courses; ``stub``: cheap fake servers) with the demo image
   map and the three demo ImageStreams seeded (``cnbi_devcluster.demo``);
2. a real ``jupyterhub`` + configurable-http-proxy via ``tests/harness.HubProcess``, whose
   config is the product's production ``jupyterhub_config.py`` (``load_subconfig``),
   configured through its ``CNBI_*`` environment like a deployment, plus the few overrides in
   ``E2E_OVERRIDES`` (authors can log in with a password, dev-cluster timeouts);
3. the ``cnbi`` service, started by the hub from the production config's service entry.

It returns once ``/hub/health`` answers, the service answers and ``/tmplogin`` no longer
says "registry not synced". ``Stack.stop()`` stops hub (+proxy + service) and cluster.

The fixture ``stack`` (tests/e2e/conftest.py) is one such stack per test module (process
runtime, SQLite); the fault and PostgreSQL tests start their own.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/harness.py

from harness import REPO, HubProcess, free_port  # noqa: E402

from cnbi_devcluster import DevCluster  # noqa: E402
from cnbi_devcluster.builds import DELAY_ENV  # noqa: E402
from cnbi_devcluster.demo import demo_image_map, seed_imagestreams  # noqa: E402

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")

NS = "default"
#: ms: one browser step (a click, a page) on 2 busy cores
STEP_TIMEOUT = 30_000
PROD_CONFIG = REPO / "cnbi_spawner" / "config" / "jupyterhub_config.py"
AUTHOR = "author"
AUTHOR_PASSWORD = "e2e-author-password"
#: screenshots refresh the docs' pictures only when asked (CNBI_UPDATE_SCREENSHOTS=1), so
#: a test run leaves the work tree clean; otherwise they go to a scratch folder.
SCREENS = (
    REPO / "docs" / "_static" / "screens"
    if os.environ.get("CNBI_UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "cnbi-e2e-screens"
)
#: the MIT Open Learning example link, verbatim
MITOL_LINK = "/tmplogin?course=uai_source-uai.intro&notebook=lectures%2Flecture1%2Fmod5_lec1.ipynb"

# The production config, then only what a loopback test box needs on top of it.
E2E_OVERRIDES = """
load_subconfig({prod!r})  # noqa: F821 -- the production jupyterhub_config.py
# --- e2e overrides -------------------------------------------------------------
from jupyterhub.auth import DummyAuthenticator
from cnbi_spawner.auth import TmpLoginMixin


class E2EAuthenticator(TmpLoginMixin, DummyAuthenticator):
    \"\"\"/tmplogin for learners + a password login for the course author.\"\"\"


c.JupyterHub.authenticator_class = E2EAuthenticator
c.DummyAuthenticator.password = {password!r}
c.Authenticator.allowed_users = {{{author!r}}}
c.JupyterHub.load_groups = {{"course-authors": {{"users": [{author!r}]}}}}
c.KubeSpawner.start_timeout = {start_timeout}
c.KubeSpawner.http_timeout = {start_timeout}
{extra}
"""


@dataclass
class Stack:
    cluster: DevCluster
    hub: HubProcess
    svc: str  # public URL of the cnbi service, ends with /
    env: dict

    @property
    def url(self) -> str:
        return self.hub.url

    async def api(self, method: str, path: str, body=None, timeout: float = 30):
        """Hub REST API as the harness admin: (status, json-or-text)."""
        headers = {"Authorization": f"token {self.hub.api_token}"}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
            kw = {"json": body} if body is not None else {}
            async with s.request(method, self.hub.api_url + path, headers=headers, **kw) as r:
                text = await r.text()
                try:
                    return r.status, json.loads(text) if text else None
                except ValueError:
                    return r.status, text

    async def users(self) -> list[dict]:
        status, body = await self.api("GET", "/users?include_stopped_servers=1&limit=1000")
        assert status == 200, body
        return body

    def pods(self) -> list[dict]:
        """The learners' server pods (not e.g. the service's short-lived notebook-index pods)."""
        return self.cluster.list(
            "v1", "pods", namespace=NS, label_selector="component=singleuser-server"
        )

    async def wait_ready(self, user: str, timeout: float = 120) -> dict:
        """Wait until the user's default server is ready; its model."""

        async def ready():
            status, model = await self.api("GET", f"/users/{user}")
            server = (model.get("servers") or {}).get("") if status == 200 else None
            return model if server and server.get("ready") else None

        return await wait_for(ready, f"{user}'s server", timeout)

    async def stop(self) -> None:
        try:
            await self.hub.stop()
        finally:
            await self.cluster.stop()


async def wait_for(predicate, what: str, timeout: float = 30, interval: float = 0.3):
    """Poll ``await predicate()`` until truthy (returned), or fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def http_status(url: str, **kw) -> int | None:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
            async with s.get(url, allow_redirects=False, **kw) as r:
                return r.status
    except (TimeoutError, aiohttp.ClientError):
        return None


def stack_env(
    cluster: DevCluster, hub: HubProcess, *, db_url: str, service_port: int, extra: dict
) -> dict:
    """The ``CNBI_*`` environment a deployment would set, pointed at loopback ports."""
    return {
        "CNBI_NAMESPACE": NS,
        "CNBI_HUB_IP": "127.0.0.1",
        "CNBI_HUB_PORT": str(hub.port),
        "CNBI_DB_URL": db_url,
        "CNBI_SERVICE_URL": f"http://127.0.0.1:{service_port}",
        "CNBI_PROXY_COMMAND": os.environ.get("CNBI_PROXY_COMMAND")
        or str(REPO / "node_modules" / ".bin" / "configurable-http-proxy"),
        "CNBI_CULL_EVERY": "0",  # culling is the culler tests' business; 0 = off
        "KUBECONFIG": str(cluster.kubeconfig),
        **extra,
    }


async def start_hub_on(
    cluster: DevCluster,
    workdir: Path,
    *,
    db_url: str | None = None,
    extra_config: str = "",
    env: dict | None = None,
    start_timeout: int = 120,
    service_port: int | None = None,
    hub: HubProcess | None = None,
) -> tuple[HubProcess, dict]:
    """Start (or restart, given ``hub``) the production-config hub against ``cluster``."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = E2E_OVERRIDES.format(
        prod=str(PROD_CONFIG),
        password=AUTHOR_PASSWORD,
        author=AUTHOR,
        start_timeout=start_timeout,
        extra=extra_config,
    )
    if hub is None:
        hub = HubProcess(config, workdir=workdir, kubeconfig=cluster.kubeconfig)
    full_env = stack_env(
        cluster,
        hub,
        db_url=db_url or f"sqlite:///{workdir / 'jupyterhub.sqlite'}",
        service_port=service_port or free_port(),
        extra=env or {},
    )
    hub.extra_env = full_env
    await hub.start(timeout=90)
    return hub, full_env


async def wait_stack_ready(hub: HubProcess, svc: str, timeout: float = 90) -> None:
    async def up():
        service = await http_status(svc + "health")
        probe = f"{hub.url}/hub/tmplogin?course=nonexistent-probe"
        launch = await http_status(probe, headers={"Accept": "application/json"})
        # service answers (any non-5xx); the registry has synced (404 unknown course, or 403
        # when links must be signed; 503 while it is still loading)
        return service is not None and service < 500 and launch in (403, 404)

    await wait_for(up, "the cnbi service and a synced image registry", timeout, interval=0.5)


async def start_stack(
    workdir: Path,
    *,
    runtime: str = "process",
    db_url: str | None = None,
    extra_config: str = "",
    env: dict | None = None,
    start_timeout: int = 120,
) -> Stack:
    os.environ.setdefault(DELAY_ENV, "0.3")  # build controller steps (read at cluster start)
    cluster = DevCluster(workdir / "cluster", runtime=runtime, images=demo_image_map())
    await cluster.start()
    try:
        await seed_imagestreams(cluster.kubeconfig, NS)
        hub, full_env = await start_hub_on(
            cluster,
            workdir / "hub",
            db_url=db_url,
            extra_config=extra_config,
            env=env,
            start_timeout=start_timeout,
        )
        stack = Stack(cluster=cluster, hub=hub, svc=f"{hub.url}/services/cnbi/", env=full_env)
        try:
            await wait_stack_ready(hub, stack.svc)
        except BaseException:
            print(hub.log_tail(80))
            await hub.stop()
            raise
        return stack
    except BaseException:
        await cluster.stop()
        raise


def anon_users(users: list[dict]) -> list[dict]:
    return [u for u in users if "anonymous" in (u.get("groups") or [])]
