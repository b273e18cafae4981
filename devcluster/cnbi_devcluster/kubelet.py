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
- exit: ``state.terminated`` (exitCode, reason Completed/Error), phase Succeeded/Failed
  (no restarts: ``restartPolicy`` is not honoured);
- delete: on ``deletionTimestamp`` stop the container (SIGTERM, SIGKILL after the grace
  period), then remove the object (the DELETED event);
- PersistentVolumeClaims go ``Bound`` (a per-claim folder under the state dir, used as the
  home of pods that mount the claim).

Init containers run first, one after the other, as real processes (a failed one is
restarted with back-off, ``Init:Error``/``BackOff``, or fails the pod under
``restartPolicy: Never``); the pod is ``Initialized`` once all exited 0. ``emptyDir`` volumes
are per-pod folders under the state dir; a process here has no mount namespace, so a
container's env values, command and args that name a path under one of its emptyDir
``volumeMounts`` are moved to that folder (``podspec.in_mounts``). A claim is the pod's home.

Only the pod's main container (the one with port ``notebook-port``, else the first) runs;
other containers are reported running and ready. The ``stub``
runtime fakes only notebook servers (a ``notebook-port``); any other container (e.g. the
service's notebook-indexing pod) runs its command as a real process against the pod's seeded
home, as in the ``process`` runtime.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import shutil
import sys
import uuid
from pathlib import Path

from . import resources as R
from .faults import PodFaults, until_deleted
from .podspec import (
    NODE,
    container_argv,
    container_env,
    container_port,
    container_statuses,
    empty_dirs,
    image_repository,
    init_container_statuses,
    is_image_reference,
    main_container,
    mounts_of,
    pod_conditions,
    serves_notebooks,
)
from .runtimes import IpPool, LaunchSpec, ProcessContainer, StubContainer
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
        self.pods: dict[str, dict] = {}  # uid -> {"task", "container", "ip", "home", "log"}
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

    def _containers(self) -> list:
        """Every container (init or main) a pod of this kubelet still holds."""
        return [c for p in self.pods.values() for c in (p.get("init"), p.get("container")) if c]

    def _spawn(self, coro) -> None:
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
                self.pods[uid] = {"deleting": False}
                self._spawn(self._run(obj))
            elif uid in self.pods and (kind == "DELETED" or meta.get("deletionTimestamp")):
                entry = self.pods[uid]
                if not entry["deleting"]:
                    entry["deleting"] = True
                    grace = 0 if kind == "DELETED" else meta.get("deletionGracePeriodSeconds", 30)
                    self._spawn(self._terminate(obj, grace, finalize=kind != "DELETED"))
        elif rt.kind == "PersistentVolumeClaim":
            if kind == "ADDED":
                self._spawn(self._bind(obj))
            elif kind == "DELETED":
                path = self._claim_dir(meta["namespace"], meta["name"])
                shutil.rmtree(path, ignore_errors=True)

    # ---- status helpers ----------------------------------------------------------------
    def _update(self, pod: dict, fn) -> dict | None:
        meta = pod["metadata"]
        current = self.store._objects[R.POD_TYPE.key].get((meta["namespace"], meta["name"]))
        if current is None or current["metadata"]["uid"] != meta["uid"]:
            return None
        return self.store.update_internal(R.POD_TYPE, meta["namespace"], meta["name"], fn)

    def event(self, pod: dict, reason: str, message: str, type_: str = "Normal") -> None:
        meta = pod["metadata"]
        now, micro = R.now_rfc3339(), R.now_micro()
        body = {
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}"},
            "involvedObject": {
                "kind": "Pod",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
                "apiVersion": "v1",
                "resourceVersion": meta.get("resourceVersion", ""),
                "fieldPath": f"spec.containers{{{main_container(pod)['name']}}}"
                if reason not in ("Scheduled", "Killing")
                else "",
            },
            "reason": reason,
            "message": message,
            "source": {"component": "kubelet", "host": NODE},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "eventTime": None,
            "count": 1,
            "type": type_,
            "reportingComponent": "kubelet",
            "reportingInstance": NODE,
        }
        if reason == "Scheduled":
            body["source"] = {"component": "default-scheduler"}
            body["reportingComponent"] = "default-scheduler"
            body["firstTimestamp"] = body["lastTimestamp"] = None
            body["eventTime"] = micro
        with contextlib.suppress(R.ApiError):
            self.store.create(R.EVENT_TYPE, meta["namespace"], body)

    def _set_waiting(self, pod: dict, waiting: dict) -> dict:
        def update(p: dict) -> None:
            p["status"]["containerStatuses"] = container_statuses(p, waiting, ready=False)

        return self._update(pod, update) or pod

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

        def schedule(p: dict) -> None:
            p["spec"]["nodeName"] = NODE
            p["status"].update(
                hostIP="127.0.0.1",
                hostIPs=[{"ip": "127.0.0.1"}],
                startTime=R.now_rfc3339(),
                conditions=pod_conditions(False),
            )
            if p["spec"].get("initContainers"):  # run below, before the main container
                p["status"]["initContainerStatuses"] = init_container_statuses(p, {})
                p["status"]["conditions"] = pod_conditions(False, initialized=False)

        pod = self._update(pod, schedule) or pod
        self.event(
            pod, "Scheduled", f"Successfully assigned {meta['namespace']}/{meta['name']} to {NODE}"
        )
        bad = [c["image"] for c in pod["spec"]["containers"] if not is_image_reference(c["image"])]
        if bad:
            detail = f'couldn\'t parse image reference "{bad[0]}": invalid reference format'
            waiting = {"waiting": {"reason": "InvalidImageName", "message": detail}}
            pod = self._set_waiting(pod, waiting)
            self.event(pod, "InspectFailed", f'Failed to apply default image tag "{bad[0]}": '
                       + detail, "Warning")  # fmt: skip
            self.event(pod, "Failed", "Error: InvalidImageName", "Warning")
            await until_deleted(entry)
            return
        delay = 1.0
        while not entry["deleting"]:
            for c in pod["spec"]["containers"]:
                self.event(pod, "Pulling", f'Pulling image "{c["image"]}"')
            missing = [
                c["image"]
                for c in pod["spec"]["containers"]
                if image_repository(c["image"]) in self.missing_images
            ]
            if not missing:
                break
            image = missing[0]
            detail = (
                f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": '
            )
            pod = await self.pull_failed(pod, image, detail + "not found", min(delay, 2))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)
        if entry["deleting"]:
            return
        for c in pod["spec"]["containers"]:
            self.event(pod, "Pulled", f'Successfully pulled image "{c["image"]}" in 10ms')
        if not await self._run_init_containers(pod, entry):
            return
        restarts, last_state = 0, None
        while True:
            code, started = await self._run_once(pod, entry, restarts, last_state)
            if code is None or entry["deleting"] or self._stopping:
                return
            pod = self._current(pod) or pod
            log.info("devcluster: pod %s/%s exited with %s", meta["namespace"], meta["name"], code)
            terminated = {
                "terminated": {
                    "exitCode": code,
                    "reason": "Completed" if code == 0 else "Error",
                    "startedAt": started,
                    "finishedAt": R.now_rfc3339(),
                }
            }
            policy = pod["spec"].get("restartPolicy", "Always")
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                self._update(
                    pod,
                    lambda p, t=terminated, n=restarts, last=last_state, c=code: p["status"].update(
                        phase="Succeeded" if c == 0 else "Failed",
                        conditions=pod_conditions(False),
                        containerStatuses=container_statuses(
                            p, t, ready=False, restart_count=n, last_state=last
                        ),
                    ),
                )
                return
            # restart with back-off, like a real kubelet: CrashLoopBackOff in between
            delay = min(self.restart_backoff * 2**restarts, 300)
            restarts, last_state = restarts + 1, terminated
            name = main_container(pod)["name"]
            message = f"back-off {delay:g}s restarting failed container={name} pod={meta['name']}"
            waiting = {"waiting": {"reason": "CrashLoopBackOff", "message": message}}
            self._update(
                pod,
                lambda p, w=waiting, n=restarts, last=last_state: p["status"].update(
                    conditions=pod_conditions(False),
                    containerStatuses=container_statuses(
                        p, w, ready=False, restart_count=n, last_state=last
                    ),
                ),
            )
            self.event(pod, "BackOff", "Back-off restarting failed container", "Warning")
            deadline = asyncio.get_running_loop().time() + delay
            while not entry["deleting"] and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)

    async def _run_init_containers(self, pod: dict, entry: dict) -> bool:
        """Run the init containers in order; ``True`` once all exited 0 (the pod is
        Initialized), ``False`` if the pod was deleted or failed (``restartPolicy: Never``)."""
        inits = pod["spec"].get("initContainers") or []
        states: dict[str, dict] = {}

        def report(initialized: bool = False, phase: str | None = None) -> None:
            def update(p: dict) -> None:
                p["status"]["initContainerStatuses"] = init_container_statuses(p, states)
                p["status"]["conditions"] = pod_conditions(False, initialized=initialized)
                if phase:
                    p["status"]["phase"] = phase

            self._update(pod, update)

        for c in inits:
            restarts = 0
            while True:
                if entry["deleting"]:
                    return False
                started = R.now_rfc3339()
                states[c["name"]] = {"running": {"startedAt": started}, "restarts": restarts}
                report()
                self.event(pod, "Created", f"Created container {c['name']}")
                self.event(pod, "Started", f"Started container {c['name']}")
                code = await self._run_to_exit(pod, entry, c)
                if code is None:
                    return False
                done = {
                    "exitCode": code,
                    "reason": "Completed" if code == 0 else "Error",
                    "startedAt": started,
                    "finishedAt": R.now_rfc3339(),
                }
                states[c["name"]] = {"terminated": done, "restarts": restarts}
                if code == 0:
                    break
                name = pod["metadata"]["name"]
                log.info("devcluster: init container %s of %s exited %s", c["name"], name, code)
                if pod["spec"].get("restartPolicy") == "Never":
                    report(phase="Failed")
                    return False
                report()
                self.event(pod, "BackOff", "Back-off restarting failed container", "Warning")
                deadline = asyncio.get_running_loop().time() + min(
                    self.restart_backoff * 2**restarts, 300
                )
                while not entry["deleting"] and asyncio.get_running_loop().time() < deadline:
                    await asyncio.sleep(0.05)
                restarts += 1
        if inits:
            report(initialized=True)
        return True

    async def _run_to_exit(self, pod: dict, entry: dict, c: dict) -> int | None:
        """Run one init container ``c`` to its exit code (``None``: the pod went away)."""
        root, home = self._pod_dirs(pod, entry)
        runtime_dir = root / "runtime"
        runtime_dir.mkdir(parents=True, exist_ok=True)
        mounts = mounts_of(c, entry["volumes"])
        bin_dir = Path(sys.executable).parent
        spec = LaunchSpec(
            argv=container_argv(c, "127.0.0.1", 0, bin_dir=bin_dir, root=False, mounts=mounts),
            env=container_env(
                pod,
                c,
                ip="127.0.0.1",
                home=home,
                runtime_dir=runtime_dir,
                bin_dir=bin_dir,
                lookup=self._lookup,
                mounts=mounts,
            ),
            cwd=home,
            ip="127.0.0.1",
            port=0,
            log_path=root / f"{c['name']}.log",
            meta={"pod": pod["metadata"]["name"]},
        )
        container = ProcessContainer(spec)
        entry["init"] = container
        try:
            await container.start()
        except OSError as e:
            self.event(pod, "Failed", f"Error: {e}", "Warning")
            return 128
        try:
            return None if entry["deleting"] else await container.wait()
        except asyncio.CancelledError:  # the kubelet is stopping: no init container outlives it
            await container.stop(1.0)
            raise
        finally:
            entry.pop("init", None)

    def _pod_dirs(self, pod: dict, entry: dict) -> tuple[Path, Path]:
        """The pod's folder and home (created once), and its emptyDir folders in
        ``entry["volumes"]`` (by volume name)."""
        if "root" not in entry:
            meta = pod["metadata"]
            root = self.state_dir / "pods" / meta["namespace"] / f"{meta['name']}-{meta['uid'][:8]}"
            entry["root"], entry["home"] = root, self._home_for(pod, root)
            entry["volumes"] = {name: root / "volumes" / name for name in empty_dirs(pod)}
            for folder in entry["volumes"].values():
                folder.mkdir(parents=True, exist_ok=True)
        return entry["root"], entry["home"]

    async def _post_start(self, pod: dict, entry: dict) -> None:
        """``lifecycle.postStart.exec`` of the main container: its command, run on this
        machine with the container's environment in its home, before the pod is reported
        running (as a kubelet does). A failure is an Event ``FailedPostStartHook`` (a real
        kubelet would also kill the container)."""
        hook = (main_container(pod).get("lifecycle") or {}).get("postStart") or {}
        command = (hook.get("exec") or {}).get("command") if isinstance(hook, dict) else None
        spec = entry.get("spec")
        if not command or spec is None:
            return
        try:
            proc = await asyncio.create_subprocess_exec(
                *[str(a) for a in command],
                env=spec.env,
                cwd=spec.cwd,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            _, err = await asyncio.wait_for(proc.communicate(), POST_START_TIMEOUT)
            failed = f"exit code {proc.returncode}: {err.decode(errors='replace')[:200]}"
            ok = proc.returncode == 0
        except (OSError, TimeoutError) as e:
            failed, ok = str(e) or "timed out", False
        if not ok:
            self.event(pod, "FailedPostStartHook", f"PostStartHook failed: {failed}", "Warning")

    def _current(self, pod: dict) -> dict | None:
        meta = pod["metadata"]
        current = self.store._objects[R.POD_TYPE.key].get((meta["namespace"], meta["name"]))
        return current if current and current["metadata"]["uid"] == meta["uid"] else None

    async def _run_once(
        self, pod: dict, entry: dict, restarts: int, last_state: dict | None
    ) -> tuple[int | None, str]:
        """Start the main container, report it, wait for its exit code (None: not started)."""
        meta = pod["metadata"]
        extra = {"restart_count": restarts, "last_state": last_state}
        try:
            container = await self._create_container(pod, entry)
        except Exception as e:  # noqa: BLE001 - a broken command is the pod's failure, not ours
            log.warning(
                "devcluster: pod %s/%s failed to start: %s", meta["namespace"], meta["name"], e
            )
            self.event(pod, "Failed", f"Error: {e}", "Warning")
            state = {
                "terminated": {
                    "exitCode": 128,
                    "reason": "StartError",
                    "message": str(e),
                    "startedAt": R.now_rfc3339(),
                    "finishedAt": R.now_rfc3339(),
                }
            }
            self._update(
                pod,
                lambda p: p["status"].update(
                    phase="Failed",
                    containerStatuses=container_statuses(p, state, ready=False, **extra),
                ),
            )
            return None, ""
        if entry["deleting"]:
            await container.stop(0.5)
            return None, ""
        name = main_container(pod)["name"]
        self.event(pod, "Created", f"Created container {name}")
        self.event(pod, "Started", f"Started container {name}")
        await self._post_start(pod, entry)
        started = R.now_rfc3339()
        running = {"running": {"startedAt": started}}
        ip = entry["ip"]
        pod = (
            self._update(
                pod,
                lambda p: p["status"].update(
                    phase="Running",
                    podIP=ip,
                    podIPs=[{"ip": ip}],
                    containerStatuses=container_statuses(p, running, ready=False, **extra),
                ),
            )
            or pod
        )
        exited = asyncio.ensure_future(container.wait())
        try:
            while not exited.done() and not entry["deleting"]:
                if await container.ready():
                    pod = (
                        self._update(
                            pod,
                            lambda p: p["status"].update(
                                conditions=pod_conditions(True),
                                containerStatuses=container_statuses(
                                    p, running, ready=True, **extra
                                ),
                            ),
                        )
                        or pod
                    )
                    break
                await asyncio.wait([exited], timeout=0.15)
            return await exited, started
        finally:
            exited.cancel()

    async def _terminate(self, pod: dict, grace: float, *, finalize: bool) -> None:
        meta = pod["metadata"]
        entry = self.pods.get(meta["uid"], {})
        if entry.get("init") is not None:
            await entry["init"].stop(min(grace, 2))
        container = entry.get("container")
        if container is not None:
            self.event(pod, "Killing", f"Stopping container {main_container(pod)['name']}")
            await container.stop(grace if finalize else min(grace, 2))
        self.pods.pop(meta["uid"], None)
        if finalize:
            current = self.store._objects[R.POD_TYPE.key].get((meta["namespace"], meta["name"]))
            if current is not None and current["metadata"]["uid"] == meta["uid"]:
                self.store.finalize(R.POD_TYPE, meta["namespace"], meta["name"])

    async def _bind(self, pvc: dict) -> None:
        await asyncio.sleep(0)
        meta = pvc["metadata"]
        self._claim_dir(meta["namespace"], meta["name"]).mkdir(parents=True, exist_ok=True)
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

    def _claim_dir(self, namespace: str, name: str) -> Path:
        return self.state_dir / "volumes" / namespace / name

    # ---- containers --------------------------------------------------------------------
    async def _create_container(self, pod: dict, entry: dict):
        meta = pod["metadata"]
        c = main_container(pod)
        if entry.get("spec") is not None:  # a restart: same IP, home and log
            container = type(entry["container"])(entry["spec"])
            entry["container"] = container
            await container.start()
            return container
        port = container_port(c)
        ip = self.ips.allocate(port)
        root, home = self._pod_dirs(pod, entry)
        mounts = mounts_of(c, entry["volumes"])
        content = self.images.get(image_repository(c["image"]))
        if content and Path(content).is_dir() and not any(home.iterdir()):
            state = self.state_dir.resolve()

            def skip_state_dir(folder: str, names: list[str]) -> list[str]:
                # a content folder may contain the state dir (e.g. both under tmp_path)
                return [n for n in names if (Path(folder) / n).resolve() == state]

            shutil.copytree(content, home, dirs_exist_ok=True, symlinks=True, ignore=skip_state_dir)
        entry.update(ip=ip, home=home, log=root / f"{c['name']}.log")
        runtime_dir = root / "runtime"
        runtime_dir.mkdir(parents=True, exist_ok=True)
        spec = LaunchSpec(
            argv=[],
            env=container_env(
                pod,
                c,
                ip=ip,
                home=home,
                runtime_dir=runtime_dir,
                bin_dir=Path(sys.executable).parent,
                lookup=self._lookup,
                mounts=mounts,
            ),
            cwd=home,
            ip=ip,
            port=port,
            log_path=root / f"{c['name']}.log",
            meta={"pod": meta["name"]},
        )
        if self.runtime == "stub" and serves_notebooks(c):
            container = StubContainer(spec)
        else:
            spec.argv = container_argv(
                c,
                ip,
                port,
                bin_dir=Path(sys.executable).parent,
                root=os.geteuid() == 0,
                mounts=mounts,
            )
            container = ProcessContainer(spec)
        entry["container"] = container
        entry["spec"] = spec
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

    def _home_for(self, pod: dict, root: Path) -> Path:
        for vol in pod["spec"].get("volumes") or []:
            claim = (vol.get("persistentVolumeClaim") or {}).get("claimName")
            if claim:
                home = self._claim_dir(pod["metadata"]["namespace"], claim)
                home.mkdir(parents=True, exist_ok=True)
                return home
        home = root / "home"
        home.mkdir(parents=True, exist_ok=True)
        return home

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
        if entry and entry.get("log") and container in (None, main):
            return Path(entry["log"])
        meta = pod["metadata"]
        name = container or main
        root = self.state_dir / "pods" / meta["namespace"] / f"{meta['name']}-{meta['uid'][:8]}"
        return root / f"{name}.log"

    def read_log(self, pod: dict, container: str | None = None) -> str | None:
        try:
            return self.log_path(pod, container).read_text(errors="replace")
        except OSError:
            return None

    def running(self, uid: str) -> bool:
        """Whether the pod's main container is (still) running."""
        entry = self.pods.get(uid)
        proc = getattr((entry or {}).get("container"), "proc", None)
        if entry is None or entry.get("deleting") or entry.get("container") is None:
            return False
        return proc is None or proc.returncode is None

    def describe(self) -> list[dict]:
        out = []
        for uid, e in self.pods.items():
            container = e.get("container")
            out.append(
                {
                    "uid": uid,
                    "ip": e.get("ip"),
                    "home": str(e.get("home") or ""),
                    "pid": getattr(container, "pid", None),
                    "log": str(e.get("log") or ""),
                }
            )
        return out

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
            "ip": e.get("ip"),
            "home": e.get("home"),
            "log": e.get("log"),
            "pid": getattr(e.get("container"), "pid", None),
        }
