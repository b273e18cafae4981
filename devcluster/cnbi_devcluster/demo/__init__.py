"""``cnbi-devcluster demo``: the whole system on one machine, for trying it and for docs.

Starts, in this order, and stops in reverse on Ctrl-C/SIGTERM/SIGHUP, leaving no process
behind (``processes.ProcessTree``: the proxy and the service run in sessions of their own):

1. the embedded dev cluster (``cnbi_devcluster``), process runtime, over HTTPS with a
   throw-away CA in its kubeconfig (so ``kubectl`` works with it as it is), with an
   image map that seeds each demo course's homes from ``courses/<name>/``;
2. the three demo course ImageStreams from ``imagestreams.yaml`` (one is the MIT Open
   Learning example, so ``/tmplogin?course=uai_source-uai.intro&notebook=…`` works);
3. JupyterHub with the product's production ``jupyterhub_config.py`` (shipped in the
   ``cnbi_spawner`` package, so an installed wheel has it) plus the dev-cluster
   overrides in ``demo_config.py`` (which starts the ``cnbi`` service).

Once the hub answers it writes ``<state-dir>/demo.json`` with ``hub_url``, an admin
``api_token`` (local use only) and the ``kubeconfig`` path, and prints launch URLs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import sys
import urllib.parse
from pathlib import Path

import yaml

import cnbi_spawner
from cnbi_devcluster.processes import ProcessTree

HERE = Path(__file__).parent
PRODUCTION_CONFIG = Path(cnbi_spawner.__file__).parent / "config" / "jupyterhub_config.py"
DEMO_LINKS = [
    ("uai_source-uai.intro", "lectures/lecture1/mod5_lec1.ipynb"),
    ("python-basics", "intro/01-hello.ipynb"),
    ("data-science", "analysis/explore.ipynb"),
]


def demo_imagestreams() -> list[dict]:
    """The demo's ImageStream objects, as they would be applied with ``oc apply``."""
    with open(HERE / "imagestreams.yaml") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def demo_image_map() -> dict[str, Path]:
    """Image repository -> content folder, for the dev cluster's kubelet."""
    return {
        stream["status"]["dockerImageRepository"]: HERE / "courses" / stream["metadata"]["name"]
        for stream in demo_imagestreams()
    }


def launch_url(hub_url: str, course: str, notebook: str) -> str:
    query = urllib.parse.urlencode({"course": course, "notebook": notebook})
    return f"{hub_url}/tmplogin?{query}"


async def seed_imagestreams(kubeconfig: Path, namespace: str) -> None:
    """Create the demo ImageStreams (spec, then status through ``/status``)."""
    from kubernetes_asyncio.client import CustomObjectsApi
    from kubernetes_asyncio.client.exceptions import ApiException

    from cnbi_spawner.kube import make_api_client

    async with await make_api_client(str(kubeconfig)) as api_client:
        api = CustomObjectsApi(api_client)
        for stream in demo_imagestreams():
            args = ("image.openshift.io", "v1", namespace, "imagestreams")
            status = stream.pop("status")
            try:
                created = await api.create_namespaced_custom_object(*args, stream)
            except ApiException as e:
                if e.status != 409:
                    raise
                created = await api.get_namespaced_custom_object(*args, stream["metadata"]["name"])
            created["status"] = status
            await api.replace_namespaced_custom_object_status(
                *args, created["metadata"]["name"], created
            )


async def wait_for_hub(url: str, proc: asyncio.subprocess.Process, timeout: float = 90) -> None:
    from tornado.httpclient import AsyncHTTPClient

    client = AsyncHTTPClient()
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if proc.returncode is not None:
            raise RuntimeError(f"jupyterhub exited with code {proc.returncode}")
        try:
            await client.fetch(f"{url}/hub/health", request_timeout=2)
            return
        except Exception:
            await asyncio.sleep(0.3)
    raise TimeoutError(f"the hub did not answer at {url}/hub/health within {timeout:.0f} s")


async def run(port: int, state_dir: Path, config: Path) -> None:
    from cnbi_devcluster import DevCluster

    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)

    # HTTPS with a throw-away CA in its kubeconfig: kubectl sends its token only over HTTPS
    cluster = DevCluster(
        state_dir / "cluster", runtime="process", images=demo_image_map(), tls=True
    )
    await cluster.start()
    hub: ProcessTree | None = None
    try:
        namespace = "default"
        await seed_imagestreams(cluster.kubeconfig, namespace)
        hub_url = f"http://127.0.0.1:{port}"
        token = secrets.token_hex(32)
        hub_port, proxy_api_port, service_port = free_ports(3)
        env = {
            **os.environ,
            "KUBECONFIG": str(cluster.kubeconfig),
            "CNBI_DEMO_ADMIN_TOKEN": token,
            "CNBI_PRODUCTION_CONFIG": str(config),
            "CNBI_NAMESPACE": namespace,
            "CNBI_HUB_IP": "127.0.0.1",
            "CNBI_HUB_PORT": str(port),
            "CNBI_DEMO_HUB_PORT": str(hub_port),
            "CNBI_DEMO_PROXY_API_PORT": str(proxy_api_port),
            "CNBI_SERVICE_URL": f"http://127.0.0.1:{service_port}",
            "CNBI_DB_URL": f"sqlite:///{state_dir / 'jupyterhub.sqlite'}",
            # the learner-lab extension arrives as on a real cluster: an init container
            "CNBI_LEARNER_LAB_IMAGE": os.environ.get(
                "CNBI_LEARNER_LAB_IMAGE", "registry.example/jupyterhub/cnbi-hub:demo"
            ),
            "NO_PROXY": "127.0.0.1,localhost",
            # the hub starts `cnbi-hub service`: find it beside this Python, venv active or not
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        }
        for key in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
            env.pop(key, None)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "jupyterhub", "-f", str(HERE / "demo_config.py"),
            cwd=state_dir, env=env, start_new_session=True,
        )  # fmt: skip
        hub = ProcessTree(proc)
        hub.follow()
        await wait_for_hub(hub_url, proc)
        info = {"hub_url": hub_url, "api_token": token, "kubeconfig": str(cluster.kubeconfig)}
        (state_dir / "demo.json").write_text(json.dumps(info, indent=2) + "\n")
        print(f"\ncnbi-spawner demo is up at {hub_url}  (Ctrl-C stops everything)\n")
        for course, notebook in DEMO_LINKS:
            print(f"  {course:24} {launch_url(hub_url, course, notebook)}")
        print(f"\n  catalog: {hub_url}/services/cnbi/   state: {state_dir}/demo.json\n")
        waiters = [asyncio.ensure_future(proc.wait()), asyncio.ensure_future(stop.wait())]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if hub is not None:
            await hub.stop()
        await cluster.stop()


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now (the hub's internal ports must not clash with anything)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cnbi-devcluster demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--port", type=int, default=8000, help="public port (default 8000)")
    parser.add_argument("--state-dir", type=Path, default=Path(".demo"), help="where state goes")
    parser.add_argument(
        "--config", type=Path, default=PRODUCTION_CONFIG, help="production jupyterhub_config.py"
    )
    args = parser.parse_args(argv)
    asyncio.run(run(args.port, args.state_dir, args.config.resolve()))
    return 0
