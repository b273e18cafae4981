"""Cancelled background work ends cancelled, also when what it waits for finishes at that
moment: the shared pause (pause.py), a wake loop built on it, a Kubernetes call's timeout.

Python 3.11's ``asyncio.wait_for`` returns the awaitable's result in that case and drops the
cancellation: the three ``..._as_...`` tests fail with the ``wait_for`` code they replaced.
A cancelled launch guard cancels the KubeSpawner start it watches."""

from __future__ import annotations

import asyncio
import types

from kubernetes_asyncio import client

from cnbi_spawner.images.registry import ImageRegistry
from cnbi_spawner.launch_guard import LaunchDiagnostics, guard_start
from cnbi_spawner.pause import pause
from cnbi_spawner.service.kubeapi import UserStorage
from cnbi_spawner.service.rebuilds import RebuildLoop, RebuildSettings


async def settle() -> None:
    """Let every ready task run until it waits (no I/O here: a few loop turns suffice)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def ends_cancelled(task: asyncio.Task) -> bool:
    done, _ = await asyncio.wait([task], timeout=5)
    return task in done and task.cancelled()


async def test_pause_returns_after_the_timeout_when_the_event_stays_clear():
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await pause(0.05, until=asyncio.Event())
    assert loop.time() - t0 >= 0.05


async def test_pause_returns_as_soon_as_the_event_is_set():
    event = asyncio.Event()
    task = asyncio.create_task(pause(3600, until=event))
    await settle()
    assert not task.done()
    event.set()
    done, _ = await asyncio.wait([task], timeout=5)
    assert task in done and task.exception() is None


async def test_pause_on_a_set_event_returns_at_once():
    event = asyncio.Event()
    event.set()
    async with asyncio.timeout(5):
        await pause(3600, until=event)


async def test_pause_cancelled_while_waiting_ends_cancelled():
    task = asyncio.create_task(pause(3600, until=asyncio.Event()))
    await settle()
    task.cancel()
    assert await ends_cancelled(task)


async def test_pause_cancelled_as_its_event_is_set_ends_cancelled():
    """The service's shutdown does exactly this: ``stop.set()``, then ``task.cancel()`` on
    every loop waiting for ``stop``."""
    event = asyncio.Event()
    task = asyncio.create_task(pause(3600, until=event))
    await settle()
    event.set()
    task.cancel()
    assert await ends_cancelled(task)


async def test_a_wake_loop_cancelled_as_it_wakes_ends_cancelled():
    """A loop without a stop event (``RebuildLoop.run()``) is ended by cancelling it alone; a
    registry change waking it at the same moment must not eat the cancellation (with
    ``wait_for`` the loop went on to wait another ``resync_interval``, its awaiter with it)."""
    api = client.ApiClient()
    rebuilds = RebuildLoop(
        api, ImageRegistry(), "ns", RebuildSettings(resync_interval=3600)
    )  # never synced: the loop makes no API call, it only waits
    task = asyncio.create_task(rebuilds.run())
    try:
        await settle()
        assert not task.done()
        rebuilds.on_registry_change({}, {})
        task.cancel()
        assert await ends_cancelled(task)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await api.close()


async def test_a_kubernetes_call_cancelled_as_it_answers_ends_cancelled():
    """The culler's PVC delete (``UserStorage``, bounded by its timeout) cancelled at
    shutdown just as the API answers: the culler must not go on to the next PVC."""
    answered = asyncio.Event()

    class AnswersWhenTold:  # the API server's answer, timed by the test
        async def delete_namespaced_persistent_volume_claim(self, name: str, ns: str) -> dict:
            await answered.wait()
            return {}

    api = client.ApiClient()
    storage = UserStorage(api, "ns", timeout=3600)
    storage.core = AnswersWhenTold()  # type: ignore[assignment]
    task = asyncio.create_task(storage.delete_pvc("claim-someone"))
    try:
        await settle()
        assert not task.done()
        answered.set()
        task.cancel()
        assert await ends_cancelled(task)
    finally:
        await api.close()


async def test_a_cancelled_launch_guard_cancels_the_start_it_watches():
    """The hub cancels the spawn (its start timeout, a stop while pending): KubeSpawner's
    start, which the guard wraps, must not go on creating the pod on its own."""
    start = asyncio.get_running_loop().create_future()  # KubeSpawner's start, still running
    spawner = types.SimpleNamespace(start_timeout=300, pod_reflector=None, events=[])
    guard = asyncio.create_task(guard_start(spawner, start, LaunchDiagnostics()))
    await settle()
    guard.cancel()
    assert await ends_cancelled(guard)
    assert start.cancelled()
