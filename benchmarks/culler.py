"""One cull pass over a hub full of anonymous users: cnbi culler vs jupyterhub-idle-culler.

State (the same for both contenders): N anonymous users (UUID names, group
``anonymous``), each with a running default server; half of them idle for 1 h, the
other half active 30 s ago. It is seeded straight into a SQLite hub database
(the REST API cannot back-date activity), copied fresh for each contender, and
served by a real ``jupyterhub`` + configurable-http-proxy. Servers are instant
"null" servers (a spawner whose pods are an HTTP stub in this process), so the
figures measure the culler and the hub, not Kubernetes.

Each contender runs one pass with the same idle timeout (600 s) and the same
concurrency (10 hub requests in flight):

- ``cnbi``: ``cnbi_spawner.service.culler.Culler.run_once`` (state=active/inactive
  pages, one ``DELETE /users/{name}`` per idle learner, bounded concurrency);
- ``idle-culler``: ``jupyterhub_idle_culler.cull_idle(..., cull_users=True)``, the
  function ``jupyterhub-idle-culler --cull-users`` runs every ``cull_every``.

Storage: unless ``--no-pvcs``, a dev cluster (``cnbi-devcluster serve``, stub
runtime, its own process) holds one KubeSpawner-labelled PVC per user, re-seeded
before each contender. The cnbi culler deletes a deleted learner's PVCs itself
(one LIST per pass, then DELETEs, inside the timed pass). The idle culler does not
touch storage; on a real hub KubeSpawner's ``delete_forever`` would (when
``delete_pvc`` is on), so its "PVCs left" column is reported, not judged.

Checked afterwards through the hub API (and the Kubernetes API): every idle user,
server and PVC gone, every active user still there with its server and PVC.
Prints a table and the time ratio.

    python benchmarks/culler.py            # 10 000 users
    python benchmarks/culler.py --quick    # 400 users
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tornado import web
from tornado.httpserver import HTTPServer

from cnbi_spawner.kube import make_api_client
from cnbi_spawner.service.cull_policy import CullPolicy, Thresholds
from cnbi_spawner.service.culler import Culler
from cnbi_spawner.service.hubapi import HubClient
from cnbi_spawner.service.kubeapi import UserStorage

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-admin-token-" + uuid.uuid4().hex
# Idle learners were last seen 2 h ago, active ones 30 s before their hub starts: with a
# 1 h timeout the verdicts cannot flip however slow a loaded machine makes the setup.
IDLE_TIMEOUT = 3600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proxy_command() -> str:
    return os.environ.get("CNBI_PROXY_COMMAND") or str(
        ROOT / "node_modules/.bin/configurable-http-proxy"
    )


def seed_db(path: Path, names: list[str], stub_port: int) -> tuple[set[str], set[str]]:
    """Write the users (every other one idle) with running servers, timestamps from now.

    Returns (idle names, active names). Called once per contender, right before its hub
    starts, so "active" means the same thing for both.
    """
    from jupyterhub import orm

    session = orm.new_session_factory(f"sqlite:///{path}")()
    now = datetime.now(UTC).replace(tzinfo=None)  # the hub stores naive UTC
    group = orm.Group(name="anonymous")
    session.add(group)
    idle, active = set(), set()
    users = []
    for i, name in enumerate(names):
        is_idle = i % 2 == 0
        (idle if is_idle else active).add(name)
        seen = now - (timedelta(hours=2) if is_idle else timedelta(seconds=30))
        user = orm.User(name=name, created=now - timedelta(hours=3), last_activity=seen)
        server = orm.Server(
            ip="127.0.0.1", port=stub_port, base_url=f"/user/{name}/", cookie_name="c"
        )
        spawner = orm.Spawner(
            name="", server=server, state={"running": True}, started=now - timedelta(hours=2),
            last_activity=seen,
        )  # fmt: skip
        user._orm_spawners.append(spawner)
        users.append(user)
    group.users = users
    session.add_all(users)
    session.commit()
    session.close()
    return idle, active


HUB_CONFIG = """
from jupyterhub.spawner import Spawner

class NullSpawner(Spawner):
    async def start(self):
        self._running = True
        return ("127.0.0.1", {stub_port})
    async def stop(self, now=False):
        self._running = False
    async def poll(self):
        return None if getattr(self, "_running", False) else 0
    def get_state(self):
        state = super().get_state()
        state["running"] = getattr(self, "_running", False)
        return state
    def load_state(self, state):
        super().load_state(state)
        self._running = bool(state.get("running"))

c.JupyterHub.spawner_class = NullSpawner
c.JupyterHub.authenticator_class = "dummy"
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.db_url = "sqlite:///{db}"
c.JupyterHub.cookie_secret_file = "{workdir}/cookie_secret"
c.JupyterHub.pid_file = "{workdir}/hub.pid"
c.ConfigurableHTTPProxy.command = ["{proxy}"]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.should_start = True
c.JupyterHub.last_activity_interval = 0      # no activity updates during the run
c.JupyterHub.init_spawners_timeout = -1
c.JupyterHub.cleanup_servers = False         # quick shutdown with thousands of servers
c.JupyterHub.services = [{{"name": "bench", "api_token": "{token}"}}]
c.JupyterHub.load_roles = [{{"name": "bench", "services": ["bench"],
    "scopes": ["admin:users", "admin:servers", "admin:groups", "read:hub"]}}]
c.JupyterHub.log_level = "WARN"
c.Authenticator.allow_all = True
"""


class Hub:
    def __init__(self, workdir: Path, db: Path, stub_port: int) -> None:
        self.workdir = workdir
        self.port = free_port()
        cfg = HUB_CONFIG.format(
            stub_port=stub_port,
            port=self.port,
            hub_port=free_port(),
            proxy_api_port=free_port(),
            db=db,
            workdir=workdir,
            proxy=proxy_command(),
            token=TOKEN,
        )
        (workdir / "jupyterhub_config.py").write_text(textwrap.dedent(cfg))
        self.api_url = f"http://127.0.0.1:{self.port}/hub/api"
        self.proc: subprocess.Popen | None = None

    async def start(self, timeout: float) -> float:
        t0 = time.monotonic()
        self.log = open(self.workdir / "hub.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(self.workdir / "jupyterhub_config.py")],
            cwd=self.workdir,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        client = HubClient(self.api_url, TOKEN, retries=0, request_timeout=5)
        try:
            while time.monotonic() - t0 < timeout:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"hub exited; see {self.workdir}/hub.log")
                try:
                    await client.version(timeout=2)
                    return time.monotonic() - t0
                except Exception:
                    await asyncio.sleep(0.5)
        finally:
            client.close()
        raise TimeoutError(f"hub not up in {timeout}s; see {self.workdir}/hub.log")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.log.close()


NS = "default"


class Cluster:
    """``cnbi-devcluster serve`` (stub runtime) in its own process, holding the PVCs."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.kubeconfig = workdir / "kubeconfig.yaml"
        self.proc: subprocess.Popen | None = None
        self.api = None

    async def start(self) -> None:
        cmd = [sys.executable, "-m", "cnbi_devcluster.cli", "serve", "--runtime", "stub"]
        cmd += ["--state-dir", str(self.workdir), "--kubeconfig", str(self.kubeconfig)]
        cmd += ["--no-builds", "--log-level", "WARNING"]
        self.log = open(self.workdir.parent / "devcluster.log", "wb")
        self.proc = subprocess.Popen(
            cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        for _ in range(120):
            if self.kubeconfig.exists():
                break
            if self.proc.poll() is not None:
                raise RuntimeError("dev cluster exited; see devcluster.log")
            await asyncio.sleep(0.25)
        await asyncio.sleep(0.25)
        self.api = await make_api_client(str(self.kubeconfig))

    async def seed(self, names: list[str]) -> None:
        """Exactly one user-storage PVC per name (deletes leftovers first)."""
        from kubernetes_asyncio import client

        core = client.CoreV1Api(self.api)
        storage = UserStorage(self.api, NS)
        sem = asyncio.Semaphore(20)

        async def limited(coro):
            async with sem:
                return await coro

        old = await storage.list_pvcs()
        await asyncio.gather(*(limited(storage.delete_pvc(p["metadata"]["name"])) for p in old))

        def pvc(name: str) -> dict:
            return {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {
                    "name": f"claim-{name}",
                    "labels": {
                        "component": "singleuser-storage",
                        "hub.jupyter.org/username": name,
                    },
                    "annotations": {"hub.jupyter.org/username": name},
                },
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }

        await asyncio.gather(
            *(limited(core.create_namespaced_persistent_volume_claim(NS, pvc(n))) for n in names)
        )

    async def owners(self) -> set[str]:
        from cnbi_spawner.service.cull_policy import pvc_owner

        return {pvc_owner(p) for p in await UserStorage(self.api, NS).list_pvcs()}

    async def stop(self) -> None:
        if self.api is not None:
            await self.api.close()
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            self.log.close()


async def run_cnbi(api_url: str, concurrency: int, cluster: Cluster | None) -> str:
    hub = HubClient(api_url, TOKEN, concurrency=concurrency)
    policy = CullPolicy(
        anonymous=Thresholds(idle_timeout=IDLE_TIMEOUT, max_age=0, cull_users=True),
        abandoned_grace=IDLE_TIMEOUT,
    )
    logger = logging.getLogger("bench.cnbi")
    storage = UserStorage(cluster.api, NS) if cluster is not None else None
    culler = Culler(hub, policy, kube=storage, concurrency=concurrency, logger=logger)
    result = await culler.run_once()
    hub.close()
    if result.errors:
        raise RuntimeError(f"cnbi culler reported {result.errors} errors")
    return (
        f"listing {result.list_seconds:.1f}s, {result.users_deleted} users and "
        f"{result.pvcs_deleted} PVCs deleted"
    )


async def run_idle_culler(api_url: str, concurrency: int, cluster: Cluster | None) -> str:
    from jupyterhub_idle_culler import cull_idle

    await cull_idle(
        url=api_url,
        api_token=TOKEN,
        inactive_limit=IDLE_TIMEOUT,
        logger=logging.getLogger("bench.idle-culler"),
        cull_users=True,
        concurrency=concurrency,
    )
    return "does not delete storage" if cluster is not None else ""


async def check(api_url: str, idle: set[str], active: set[str], cluster) -> dict:
    hub = HubClient(api_url, TOKEN, concurrency=4)
    users = await hub.all_users()
    hub.close()
    left = {u["name"]: u for u in users}
    kept = active & left.keys()
    owners = await cluster.owners() if cluster is not None else None
    return {
        "idle_pvcs_left": len(idle & owners) if owners is not None else None,
        "active_pvcs_lost": len(active - owners) if owners is not None else None,
        "idle_left": len(idle & left.keys()),
        "active_culled": len(active - left.keys()),
        "active_server_stopped": sum(1 for n in kept if "" not in left[n]["servers"]),
    }


class Stub(web.RequestHandler):
    def get(self, *_):
        self.write("ok")


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="400 users")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--only", choices=["cnbi", "idle-culler"], help="run one contender")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--no-pvcs", action="store_true", help="no dev cluster, no PVCs")
    args = parser.parse_args(argv)
    n = 400 if args.quick else args.users
    logging.basicConfig(level=logging.WARNING)

    stub_port = free_port()
    stub = HTTPServer(web.Application([(r"/(.*)", Stub)]))
    stub.listen(stub_port, "127.0.0.1")

    work = Path(tempfile.mkdtemp(prefix="cnbi-bench-culler-"))
    names = [str(uuid.uuid4()) for _ in range(n)]

    cluster = None
    if not args.no_pvcs:
        (work / "devcluster").mkdir()
        cluster = Cluster(work / "devcluster")
        await cluster.start()

    contenders = {"cnbi": run_cnbi, "idle-culler": run_idle_culler}
    if args.only:
        contenders = {args.only: contenders[args.only]}
    rows = []
    try:
        for name, run in contenders.items():
            workdir = work / name
            workdir.mkdir()
            db = workdir / "jupyterhub.sqlite"
            hub = Hub(workdir, db, stub_port)
            try:
                if cluster is not None:
                    await cluster.seed(names)
                t0 = time.monotonic()
                idle, active = seed_db(db, names, stub_port)
                took = time.monotonic() - t0
                print(f"{name}: seeded {n} users ({len(idle)} idle) in {took:.1f}s")
                startup = await hub.start(timeout=120 + n / 20)
                t0 = time.monotonic()
                note = await run(hub.api_url, args.concurrency, cluster)
                elapsed = time.monotonic() - t0
                result = await check(hub.api_url, idle, active, cluster)
            finally:
                hub.stop()
            rows.append((name, elapsed, startup, result, note))
    finally:
        stub.stop()
        if cluster is not None:
            await cluster.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print(f"one cull pass, {n} anonymous users, {len(idle)} idle, concurrency {args.concurrency}")
    header = f"{'culler':<12} {'pass (s)':>9} {'users/s':>8} {'idle left':>10} "
    header += f"{'active culled':>14} {'idle PVCs left':>15} {'hub start (s)':>14}"
    print(header)
    for name, elapsed, startup, r, note in rows:
        pvcs = "-" if r["idle_pvcs_left"] is None else str(r["idle_pvcs_left"])
        lost = r["active_culled"] + r["active_server_stopped"] + (r["active_pvcs_lost"] or 0)
        print(
            f"{name:<12} {elapsed:>9.2f} {n / elapsed:>8.0f} {r['idle_left']:>10} "
            f"{lost:>14} {pvcs:>15} {startup:>14.1f}  {note}"
        )
    ok = all(
        r["idle_left"] == 0
        and r["active_culled"] == 0
        and r["active_server_stopped"] == 0
        and not r["active_pvcs_lost"]
        and (name != "cnbi" or not r["idle_pvcs_left"])
        for name, _, _, r, _ in rows
    )
    if len(rows) == 2:
        ratio = rows[0][1] / rows[1][1]
        print(f"\nratio cnbi / idle-culler: {ratio:.2f}x (target <= 1.0x)")
    print("correct" if ok else "INCORRECT: see the table")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
