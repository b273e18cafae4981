"""Shared fixtures: a dev cluster and real JupyterHub processes.

- ``devcluster``, ``stub_devcluster``, ``make_devcluster``: from the dev cluster's pytest
  plugin (``cnbi_devcluster.pytest_plugin``, installed with ``cnbi-devcluster``).
- ``start_hub``: factory ``await start_hub(config="", *, env=None, kubeconfig=None,
  timeout=60) -> HubProcess`` (see ``tests/harness.py``); every hub it started is stopped
  at teardown.
"""

from __future__ import annotations

import os

import pytest
from harness import HubProcess

# the hub and pods talk over loopback only; never through a proxy from the environment
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")


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
