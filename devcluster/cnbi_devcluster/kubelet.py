"""The dev cluster's node: schedules pods, "pulls" images, runs containers, reports status.

What a real kubelet reports and KubeSpawner reads (KUBE_API_SUBSET §4):

- schedule: ``spec.nodeName``, condition PodScheduled, Event ``Scheduled``;
- pull: any well-formed image reference pulls (Events ``Pulling``, ``Pulled``): what runs is
  the container's command from this machine, and a repository in the image map also seeds
  the pod's home. A malformed reference waits in ``InvalidImageName`` (Event
  ``InspectFailed``). A repository in ``missing_images`` (an explicit fault) fails with
  Events ``Failed``/``BackOff`` and container state ``waiting`` reason ``ErrImagePull``
  then ``ImagePullBackOff``, retried with back-off, so it pulls once it leaves the set;
- run: Events ``Created``, ``Started``; the main container's ``lifecycle.postStart`` exec
  command (run here, in the pod's home, with its environment); ``phase: Running``,
  ``podIP``, ``containerStatuses`` (``ready: false``) once the process runs;
  ``ready: true`` + conditions Ready/ContainersReady only once the container's port accepts
  connections;
- exit: ``state.terminated`` (exitCode, reason Completed/Error); under ``restartPolicy``
  Never (or OnFailure after exit 0) phase Succeeded/Failed, else the container is started
  again after a back-off (``CrashLoopBackOff``, ``restartCount``, ``lastState``);
- delete: on ``deletionTimestamp`` stop the container (SIGTERM, SIGKILL after the grace
  period), then remove the object (the DELETED event);
- PersistentVolumeClaims go ``Bound`` (a per-claim folder under the state dir, used as the
  home of pods that mount the claim).

Init containers run first, one after the other, as real processes (a failed one is
restarted with back-off, ``Init:Error``/``BackOff``, or fails the pod under
``restartPolicy: Never``); the pod is ``Initialized`` once all exited 0. ``emptyDir`` volumes
are per-pod folders under the state dir; a process here has no mount namespace, so a
container's env values, command and args that name a path under one of its emptyDir
``volumeMounts`` are moved to that folder (``podspec.in_mounts``). A claim is the pod's home
(``sandbox``).

Only the pod's main container (the one with port ``notebook-port``, else the first) runs;
other containers are reported running and ready. The ``stub``
runtime fakes only notebook servers (a ``notebook-port``); any other container (e.g. the
service's notebook-indexing pod) runs its command as a real process against the pod's seeded
home, as in the ``process`` runtime.

This module is the loop that follows the store and ties the parts together; it owns the
order of a pod's life and the store writes. What to report and when to restart are pure
functions in ``podstatus``; what to run in ``podspec``; a pod's folders and launch specs in
``sandbox``; processes and stubs in ``runtimes``; injected start failures in ``faults``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Coroutine
from functools import partial
from pathlib import Path
from typing import Any

from . import podstatus
from . import resources as R
from .faults import PodFaults
from .podspec import (
    NODE,
    container_port,
    image_repository,
    main_container,
    post_start_command,
    serves_notebooks,
)
from .runtimes import Container, IpPool, ProcessContainer, StubContainer, run_hook
from .sandbox import PodSandbox, claim_dir, launch_spec, pod_root, seed_home
from .store import Store

log = logging.getLogger("cnbi.devcluster")
POST_START_TIMEOUT = 30


class Kubelet:
    def __init__(
        self, store: Store, state_dir: Path, images: dict[str, Path], runtime: str = "process"
    ) -> None:
        if runtime not in ("process", "stub"):
            raise ValueError(f"runtime must be 'process' or 'stub', not {runtime!r}")
        self.store, self.state_dir, self.images, self.runtime = store, state_dir, images, runtime
        self.ips = IpPool()
        #: injected pod start failures (tests, demo): see faults.PodFaults
        self.pod_faults = PodFaults()
        #: image repositories that fail to pull (NotFound, retried with back-off until the
        #: repository leaves this set); every other well-formed image pulls
        self.missing_images: set[str] = set()
        #: first restart back-off in seconds (doubles per restart, at most 300), as in kubelet
        self.restart_backoff = 10.0
        self.pods: dict[str, PodSandbox] = {}  # by pod uid
        self._tasks: set[asyncio.Task] = set()
        self._stopping = False

    # ---- wiring ------------------------------------------------------------------------
    def start(self) -> None:
        """Follow the store; pods and claims created before the start are picked up now."""
        self.store.listeners.append(self._on_change)
        for rt in (R.POD_TYPE, R.PVC_TYPE):
            for obj in self.store.list(rt, None)[0]:
                self._on_change("ADDED", rt, obj, None)

    async def stop(self) -> None:
        """Stop every pod's processes and tasks; returns once none is left.

        Each round cancels the pod tasks that are left *and* stops every container (main
        and init) still running: a task waiting for its container's exit then ends even when
        its cancellation was lost (``asyncio.wait_for`` in Python 3.11 can swallow one; the
        old order, tasks first and containers after, then waited forever for a container that
        ignores SIGTERM)."""
        self._stopping = True
        with contextlib.suppress(ValueError):
            self.store.listeners.remove(self._on_change)
        while True:
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*(c.stop(1.0) for c in self._containers()), return_exceptions=True)
            if not self._tasks:
                break
            await asyncio.wait(list(self._tasks), timeout=1.0)
        self.pods.clear()

    def _containers(self) -> list[Container]:
        """Every container (init or main) a pod of this kubelet still holds."""
        return [c for p in self.pods.values() for c in (p.init, p.container) if c]

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("devcluster kubelet task failed", exc_info=task.exception())

    def _on_change(self, kind: str, rt: R.ResourceType, obj: dict, old: dict | None) -> None:
        if self._stopping:
            return
        meta = obj["metadata"]
        if rt.kind == "Pod":
            uid = meta["uid"]
            if kind == "ADDED" and obj["spec"].get("nodeName") in (None, "", NODE):
                self.pods[uid] = PodSandbox()
                self._spawn(self._run(obj))
            elif uid in self.pods and (kind == "DELETED" or meta.get("deletionTimestamp")):
                entry = self.pods[uid]
                if not entry.deleting:
                    entry.deleting = True
                    grace = 0 if kind == "DELETED" else meta.get("deletionGracePeriodSeconds", 30)
                    self._spawn(self._terminate(obj, grace, finalize=kind != "DELETED"))
        elif rt.kind == "PersistentVolumeClaim":
            if kind == "ADDED":
                self._spawn(self._bind(obj))
            elif kind == "DELETED":
                path = claim_dir(self.state_dir, meta["namespace"], meta["name"])
                shutil.rmtree(path, ignore_errors=True)

    # ---- store writes ------------------------------------------------------------------
    def _current(self, pod: dict) -> dict | None:
        """The store's pod of that name if it is still this pod (same uid)."""
        meta = pod["metadata"]
        current = self.store._objects[R.POD_TYPE.key].get((meta["namespace"], meta["name"]))
        return current if current and current["metadata"]["uid"] == meta["uid"] else None

    def update_pod(self, pod: dict, fn: Callable[[dict], None]) -> dict | None:
        """Apply ``fn`` to the store's pod (None: the pod is gone); returns the new pod."""
        if self._current(pod) is None:
            return None
        meta = pod["metadata"]
        return self.store.update_internal(R.POD_TYPE, meta["namespace"], meta["name"], fn)

    def event(self, pod: dict, reason: str, message: str, type_: str = "Normal") -> None:
        body = podstatus.event_body(pod, reason, message, type_)
        with contextlib.suppress(R.ApiError):
            self.store.create(R.EVENT_TYPE, pod["metadata"]["namespace"], body)

    def _set_waiting(self, pod: dict, waiting: dict) -> dict:
        return self.update_pod(pod, partial(podstatus.set_waiting, waiting=waiting)) or pod

    async def pull_failed(self, pod: dict, image: str, detail: str, pause: float) -> dict:
        """Report one failed pull of ``image`` as a kubelet does; returns the updated pod.

        Events ``Failed`` (with ``detail``) and ``Error: ErrImagePull``; the container waits
        in ``ErrImagePull``, then after ``pause`` seconds in ``ImagePullBackOff``; Event
        ``BackOff``.
        """
        self.event(pod, "Failed", f'Failed to pull image "{image}": {detail}', "Warning")
        self.event(pod, "Failed", "Error: ErrImagePull", "Warning")
        pod = self._set_waiting(pod, {"waiting": {"reason": "ErrImagePull", "message": detail}})
        await asyncio.sleep(pause)
        message = f'Back-off pulling image "{image}"'
        pod = self._set_waiting(
            pod, {"waiting": {"reason": "ImagePullBackOff", "message": message}}
        )
        self.event(pod, "BackOff", message, "Normal")
        return pod

    # ---- lifecycle ---------------------------------------------------------------------
    async def _run(self, pod: dict) -> None:
        meta, uid = pod["metadata"], pod["metadata"]["uid"]
        entry = self.pods[uid]
        await asyncio.sleep(0)
        fault = self.pod_faults.fault_for(pod, self.images)
        if fault:
            await self.pod_faults.play(self, pod, entry, fault)
            return
        pod = self.update_pod(pod, podstatus.schedule) or pod
        self.event(
            pod, "Scheduled", f"Successfully assigned {meta['namespace']}/{meta['name']} to {NODE}"
        )
        bad = podstatus.malformed_image(pod)
        if bad:
            detail = f'couldn\'t parse image reference "{bad}": invalid reference format'
            waiting = {"waiting": {"reason": "InvalidImageName", "message": detail}}
            pod = self._set_waiting(pod, waiting)
            self.event(pod, "InspectFailed", f'Failed to apply default image tag "{bad}": '
                       + detail, "Warning")  # fmt: skip
            self.event(pod, "Failed", "Error: InvalidImageName", "Warning")
            await entry.until_deleted()
            return
        delay = 1.0
        while not entry.deleting:
            for c in pod["spec"]["containers"]:
                self.event(pod, "Pulling", f'Pulling image "{c["image"]}"')
            image = podstatus.missing_image(pod, self.missing_images)
            if image is None:
                break
            detail = (
                f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": '
            )
            pod = await self.pull_failed(pod, image, detail + "not found", min(delay, 2))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)
        if entry.deleting:
            return
        for c in pod["spec"]["containers"]:
            self.event(pod, "Pulled", f'Successfully pulled image "{c["image"]}" in 10ms')
        if not await self._run_init_containers(pod, entry):
            return
        turn = podstatus.FIRST_TURN
        while True:
            code, started = await self._run_once(pod, entry, turn)
            if code is None or entry.deleting or self._stopping:
                return
            pod = self._current(pod) or pod
            log.info("devcluster: pod %s/%s exited with %s", meta["namespace"], meta["name"], code)
            terminated = {"terminated": podstatus.exited(code, started)}
            if not podstatus.restarts_after(pod, code):
                self.update_pod(pod, partial(podstatus.set_ended, terminated=terminated, turn=turn))
                return
            # restart with back-off, like a real kubelet: CrashLoopBackOff in between
            delay = podstatus.restart_delay(self.restart_backoff, turn.restarts)
            turn = podstatus.Turn(turn.restarts + 1, terminated)
            waiting = podstatus.crash_loop(pod, delay)
            self.update_pod(pod, partial(podstatus.set_backing_off, waiting=waiting, turn=turn))
            self.event(pod, "BackOff", "Back-off restarting failed container", "Warning")
            await self._back_off(entry, delay)

    async def _back_off(self, entry: PodSandbox, delay: float) -> None:
        """Wait ``delay`` seconds, or less if the pod is deleted meanwhile."""
        deadline = asyncio.get_running_loop().time() + delay
        while not entry.deleting and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)

    async def _run_init_containers(self, pod: dict, entry: PodSandbox) -> bool:
        """Run the init containers in order; ``True`` once all exited 0 (the pod is
        Initialized), ``False`` if the pod was deleted or failed (``restartPolicy: Never``)."""
        inits = pod["spec"].get("initContainers") or []
        states: dict[str, dict] = {}

        def report(initialized: bool = False, phase: str | None = None) -> None:
            self.update_pod(
                pod,
                partial(
                    podstatus.set_initializing, states=states, initialized=initialized, phase=phase
                ),
            )

        for c in inits:
            restarts = 0
            while True:
                if entry.deleting:
                    return False
                started = R.now_rfc3339()
                states[c["name"]] = {"running": {"startedAt": started}, "restarts": restarts}
                report()
                self.event(pod, "Created", f"Created container {c['name']}")
                self.event(pod, "Started", f"Started container {c['name']}")
                code = await self._run_to_exit(pod, entry, c)
                if code is None:
                    return False
                states[c["name"]] = {
                    "terminated": podstatus.exited(code, started),
                    "restarts": restarts,
                }
                if code == 0:
                    break
                name = pod["metadata"]["name"]
                log.info("devcluster: init container %s of %s exited %s", c["name"], name, code)
                if not podstatus.restarts_failed_init(pod):
                    report(phase="Failed")
                    return False
                report()
                self.event(pod, "BackOff", "Back-off restarting failed container", "Warning")
                await self._back_off(entry, podstatus.restart_delay(self.restart_backoff, restarts))
                restarts += 1
        if inits:
            report(initialized=True)
        return True

    async def _run_to_exit(self, pod: dict, entry: PodSandbox, c: dict) -> int | None:
        """Run one init container ``c`` to its exit code (``None``: the pod went away)."""
        folders = entry.prepare(pod, self.state_dir)
        spec = launch_spec(pod, c, folders, ip="127.0.0.1", port=0, lookup=self._lookup)
        container = ProcessContainer(spec)
        entry.init = container
        try:
            await container.start()
        except OSError as e:
            self.event(pod, "Failed", f"Error: {e}", "Warning")
            return 128
        try:
            return None if entry.deleting else await container.wait()
        except asyncio.CancelledError:  # the kubelet is stopping: no init container outlives it
            await container.stop(1.0)
            raise
        finally:
            entry.init = None

    async def _post_start(self, pod: dict, entry: PodSandbox) -> None:
        """``lifecycle.postStart.exec`` of the main container: its command, run on this
        machine with the container's environment in its home, before the pod is reported
        running (as a kubelet does). A failure is an Event ``FailedPostStartHook`` (a real
        kubelet would also kill the container)."""
        command, spec = post_start_command(pod), entry.spec
        if not command or spec is None:
            return
        failed = await run_hook(command, spec.env, spec.cwd, POST_START_TIMEOUT)
        if failed is not None:
            self.event(pod, "FailedPostStartHook", f"PostStartHook failed: {failed}", "Warning")

    async def _run_once(
        self, pod: dict, entry: PodSandbox, turn: podstatus.Turn
    ) -> tuple[int | None, str]:
        """Start the main container, report it, wait for its exit code (None: not started)."""
        meta = pod["metadata"]
        try:
            container = await self._create_container(pod, entry)
        except Exception as e:  # noqa: BLE001 - a broken command is the pod's failure, not ours
            log.warning(
                "devcluster: pod %s/%s failed to start: %s", meta["namespace"], meta["name"], e
            )
            self.event(pod, "Failed", f"Error: {e}", "Warning")
            state = podstatus.start_error(str(e))
            self.update_pod(pod, partial(podstatus.set_start_error, state=state, turn=turn))
            return None, ""
        if entry.deleting:
            await container.stop(0.5)
            return None, ""
        name = main_container(pod)["name"]
        self.event(pod, "Created", f"Created container {name}")
        self.event(pod, "Started", f"Started container {name}")
        await self._post_start(pod, entry)
        started = R.now_rfc3339()
        running = {"running": {"startedAt": started}}
        running_on = partial(podstatus.set_running, ip=container.spec.ip, state=running, turn=turn)
        pod = self.update_pod(pod, running_on) or pod
        exited = asyncio.ensure_future(container.wait())
        try:
            while not exited.done() and not entry.deleting:
                if await container.ready():
                    ready = partial(podstatus.set_ready, state=running, turn=turn)
                    pod = self.update_pod(pod, ready) or pod
                    break
                await asyncio.wait([exited], timeout=0.15)
            return await exited, started
        finally:
            exited.cancel()

    async def _terminate(self, pod: dict, grace: float, *, finalize: bool) -> None:
        meta = pod["metadata"]
        entry = self.pods.get(meta["uid"]) or PodSandbox()
        if entry.init is not None:
            await entry.init.stop(min(grace, 2))
        container = entry.container
        if container is not None:
            self.event(pod, "Killing", f"Stopping container {main_container(pod)['name']}")
            await container.stop(grace if finalize else min(grace, 2))
        self.pods.pop(meta["uid"], None)
        if finalize and self._current(pod) is not None:
            self.store.finalize(R.POD_TYPE, meta["namespace"], meta["name"])

    async def _bind(self, pvc: dict) -> None:
        await asyncio.sleep(0)
        meta = pvc["metadata"]
        claim_dir(self.state_dir, meta["namespace"], meta["name"]).mkdir(
            parents=True, exist_ok=True
        )
        storage = (((pvc.get("spec") or {}).get("resources") or {}).get("requests") or {}).get(
            "storage"
        )

        def bound(p: dict) -> None:
            p["spec"]["volumeName"] = f"pvc-{meta['uid']}"
            p["spec"].setdefault("storageClassName", "devcluster-local")
            p["status"] = {
                "phase": "Bound",
                "accessModes": p["spec"].get("accessModes") or ["ReadWriteOnce"],
                "capacity": {"storage": storage or "1Gi"},
            }

        self.store.update_internal(R.PVC_TYPE, meta["namespace"], meta["name"], bound)

    # ---- containers --------------------------------------------------------------------
    async def _create_container(self, pod: dict, entry: PodSandbox) -> Container:
        meta = pod["metadata"]
        c = main_container(pod)
        if entry.spec is not None and entry.container is not None:  # a restart: same IP, home, log
            container = type(entry.container)(entry.spec)
            entry.container = container
            await container.start()
            return container
        port = container_port(c)
        ip = self.ips.allocate(port)
        folders = entry.prepare(pod, self.state_dir)
        seed_home(folders.home, self.images.get(image_repository(c["image"])), self.state_dir)
        entry.ip, entry.log = ip, folders.root / f"{c['name']}.log"
        stub = self.runtime == "stub" and serves_notebooks(c)
        spec = launch_spec(
            pod,
            c,
            folders,
            ip=ip,
            port=port,
            lookup=self._lookup,
            command=not stub,
            as_root=os.geteuid() == 0,
        )
        container = StubContainer(spec) if stub else ProcessContainer(spec)
        entry.container = container
        entry.spec = spec
        await container.start()
        log.info(
            "devcluster: pod %s/%s running on %s:%s (%s)",
            meta["namespace"],
            meta["name"],
            ip,
            port,
            self.runtime,
        )
        return container

    def _lookup(self, kind: str, namespace: str, name: str) -> dict[str, str]:
        rt = self.store.types[("", "secrets" if kind == "secret" else "configmaps")]
        try:
            obj = self.store.get(rt, namespace, name)
        except R.ApiError:
            return {}
        data = obj.get("data") or {}
        if kind == "secret":
            return {k: base64.b64decode(v).decode(errors="replace") for k, v in data.items()}
        return {k: str(v) for k, v in data.items()}

    # ---- inspection --------------------------------------------------------------------
    def log_path(self, pod: dict, container: str | None = None) -> Path:
        entry = self.pods.get(pod["metadata"]["uid"])
        main = main_container(pod)["name"]
        if entry and entry.log and container in (None, main):
            return Path(entry.log)
        return pod_root(self.state_dir, pod) / f"{container or main}.log"

    def read_log(self, pod: dict, container: str | None = None) -> str | None:
        try:
            return self.log_path(pod, container).read_text(errors="replace")
        except OSError:
            return None

    def running(self, uid: str) -> bool:
        """Whether the pod's main container is (still) running."""
        entry = self.pods.get(uid)
        if entry is None or entry.deleting or entry.container is None:
            return False
        proc = getattr(entry.container, "proc", None)
        return proc is None or proc.returncode is None

    def describe(self) -> list[dict]:
        return [
            {
                "uid": uid,
                "ip": e.ip,
                "home": str(e.home or ""),
                "pid": getattr(e.container, "pid", None),
                "log": str(e.log or ""),
            }
            for uid, e in self.pods.items()
        ]

    def pod_info(self, namespace: str, name: str) -> dict | None:
        """ip, home, pid and log path of a running pod (tests and the demo use it)."""
        try:
            pod = self.store.get(R.POD_TYPE, namespace, name)
        except R.ApiError:
            return None
        e = self.pods.get(pod["metadata"]["uid"])
        if not e:
            return None
        return {
            "ip": e.ip,
            "home": e.home,
            "log": e.log,
            "pid": getattr(e.container, "pid", None),
        }
