"""pytest fixtures for projects that test against the dev cluster (a ``pytest11`` plugin).

Installed with ``cnbi-devcluster``, active in every pytest run (like kopf's ``kmock``):

- ``devcluster``: a started ``DevCluster`` (process runtime, build controller on) in
  ``tmp_path/devcluster``; stopped (every pod process killed) at teardown;
- ``stub_devcluster``: the same with the ``stub`` runtime (cheap fake Jupyter servers);
- ``make_devcluster``: factory ``await make_devcluster(**DevCluster kwargs)`` for other
  settings (runtime, images, missing_images, history, builds, tls ...); all stopped at
  teardown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest_asyncio

from .cluster import DevCluster


@pytest_asyncio.fixture
async def devcluster(tmp_path) -> AsyncIterator[DevCluster]:
    async with DevCluster(tmp_path / "devcluster", runtime="process") as cluster:
        yield cluster


@pytest_asyncio.fixture
async def stub_devcluster(tmp_path) -> AsyncIterator[DevCluster]:
    async with DevCluster(tmp_path / "stub-devcluster", runtime="stub") as cluster:
        yield cluster


@pytest_asyncio.fixture
async def make_devcluster(tmp_path) -> AsyncIterator[Callable[..., Awaitable[DevCluster]]]:
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
