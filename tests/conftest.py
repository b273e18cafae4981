"""Shared fixtures: a dev cluster and real JupyterHub processes.

- ``devcluster``: a started ``DevCluster`` (process runtime, build controller on) in
  ``tmp_path/devcluster``; stopped (every pod process killed) at teardown.
- ``stub_devcluster``: the same with the ``stub`` runtime (cheap fake singleuser servers).
- ``make_devcluster``: factory ``await make_devcluster(**DevCluster kwargs)`` for other
  settings (runtime, images, history, builds, tls ...); all stopped at teardown.
- ``start_hub``: factory ``await start_hub(config="", *, env=None, kubeconfig=None,
  timeout=60) -> HubProcess`` (see ``tests/harness.py``); every hub it started is stopped
  at teardown.
"""

from __future__ import annotations

import os

import pytest
from harness import HubProcess

from cnbi_devcluster import DevCluster

# the hub and pods talk over loopback only; never through a proxy from the environment
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
async def devcluster(tmp_path):
    cluster = DevCluster(tmp_path / "devcluster", runtime="process")
    await cluster.start()
    try:
        yield cluster
    finally:
        await cluster.stop()


@pytest.fixture
async def stub_devcluster(tmp_path):
    cluster = DevCluster(tmp_path / "stub-devcluster", runtime="stub")
    await cluster.start()
    try:
        yield cluster
    finally:
        await cluster.stop()


@pytest.fixture
async def make_devcluster(tmp_path):
    clusters: list[DevCluster] = []

    async def make(**kwargs) -> DevCluster:
        state_dir = kwargs.pop("state_dir", None) or tmp_path / f"devcluster{len(clusters)}"
        cluster = DevCluster(state_dir, **kwargs)
        clusters.append(cluster)
        return await cluster.start()

    try:
        yield make
    finally:
        for cluster in reversed(clusters):
            await cluster.stop()


@pytest.fixture
async def start_hub(tmp_path):
    hubs: list[HubProcess] = []

    async def start(
        config: str = "",
        *,
        env: dict | None = None,
        kubeconfig=None,
        timeout: float = 60,
        workdir=None,
    ) -> HubProcess:
        hub = HubProcess(
            config,
            env=env,
            kubeconfig=kubeconfig,
            workdir=workdir or tmp_path / f"hub{len(hubs)}",
        )
        hubs.append(hub)
        return await hub.start(timeout=timeout)

    try:
        yield start
    finally:
        for hub in reversed(hubs):
            await hub.stop()
