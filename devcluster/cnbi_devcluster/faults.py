"""Fault injection for the dev cluster's API: outages, dropped watches, slow responses.

- ``pause(mode="hang")``: new requests wait (the connection is open, no answer) and open
  watches stop delivering events until ``resume()`` — a network partition.
- ``pause(mode="503")``: new requests get ``503 ServiceUnavailable`` Status bodies and open
  watches are closed — an API server that is down behind a load balancer.
- ``drop_watches()``: close every open watch now (clients must resume from their last rv).
- ``latency = seconds``: every API request is delayed by that much.

Pod start failures (image pull errors, OOM kills, crash loops, unschedulable pods, pods
that never get ready) are injected per pod or per image: see ``PodFaults``.

The admin endpoints under ``/_devcluster/`` are never affected, so a test can always
resume the API it paused.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from . import resources as R
from .podspec import NODE, image_repository, main_container
from .podstatus import Turn, container_statuses, crash_loop, pod_conditions
from .resources import ApiError
from .sandbox import PodSandbox, pod_root

log = logging.getLogger("cnbi.devcluster")

MODES = ("hang", "503")


class Faults:
    def __init__(self, store) -> None:
        self._store = store
        self.mode: str | None = None
        self.latency: float = 0.0
        self._resumed = asyncio.Event()
        self._resumed.set()

    @property
    def paused(self) -> bool:
        return self.mode is not None

    def pause(self, mode: str = "hang") -> None:
        if mode not in MODES:
            raise ValueError(f"pause mode must be one of {MODES}, not {mode!r}")
        self.mode = mode
        self._resumed.clear()
        if mode == "503":
            self._store.drop_watches()
        log.info("devcluster: API paused (%s)", mode)

    def resume(self) -> None:
        if self.mode:
            log.info("devcluster: API resumed")
        self.mode = None
        self._resumed.set()

    def drop_watches(self) -> int:
        n = self._store.drop_watches()
        log.info("devcluster: dropped %d watches", n)
        return n

    async def gate(self) -> None:
        """Run before each API request: delay, hang or refuse as configured."""
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        if self.mode == "hang":
            await self._resumed.wait()
        elif self.mode == "503":
            raise ApiError(
                503, "ServiceUnavailable", "the dev cluster API is paused (fault injection)"
            )

    async def stall(self) -> None:
        """Run before each watch event: hold events while paused in hang mode."""
        if self.mode == "hang":
            await self._resumed.wait()

    def state(self) -> dict:
        return {"paused": self.mode is not None, "mode": self.mode, "latency": self.latency}


# ---- pod faults: make a pod fail to start the way a real cluster would ----------------------

#: fault name -> what the pod shows (see ``PodFaults``)
POD_FAULTS = (
    "ErrImagePull",
    "ImagePullBackOff",
    "OOMKilled",
    "CrashLoopBackOff",
    "Unschedulable",
    "Timeout",
)
POD_FAULT_ANNOTATION = "cnbi.meteor.zone/inject-fault"
POD_FAULT_FILE = ".devcluster-fault"


class PodFaults:
    """Pod start failures, chosen per pod (the kubelet asks ``fault_for`` before it runs one).

    A pod gets a fault from, in order: its annotation ``cnbi.meteor.zone/inject-fault``;
    the per-image-repository map (``cluster.kubelet.pod_faults.set(repo, fault)``, in
    process); a file ``.devcluster-fault`` holding the fault name at the top of the image's
    content folder (so ``POST /_devcluster/images`` with such a folder sets one over HTTP).
    Faults, as a real kubelet/scheduler reports them:

    - ``ErrImagePull`` / ``ImagePullBackOff``: Events Pulling, Failed, BackOff; container
      waiting ErrImagePull then ImagePullBackOff, for as long as the pod exists;
    - ``OOMKilled``: the container starts, is killed (terminated OOMKilled, exit 137), and
      waits in CrashLoopBackOff with ``lastState.terminated.reason: OOMKilled``;
    - ``CrashLoopBackOff``: the same with exit code 1 (reason Error) and a traceback in the log;
    - ``Unschedulable``: never scheduled; condition PodScheduled=False/Unschedulable and a
      FailedScheduling Event "0/1 nodes are available: 1 Insufficient cpu.";
    - ``Timeout``: scheduled, pulled, started, phase Running, but never ready.
    """

    def __init__(self) -> None:
        self.by_repo: dict[str, str] = {}

    def set(self, repo: str, fault: str | None) -> None:
        if fault is None:
            self.by_repo.pop(repo, None)
            return
        if fault not in POD_FAULTS:
            raise ValueError(f"pod fault must be one of {POD_FAULTS}, not {fault!r}")
        self.by_repo[repo] = fault

    def fault_for(self, pod: dict, images: dict) -> str | None:
        annotation = ((pod.get("metadata") or {}).get("annotations") or {}).get(
            POD_FAULT_ANNOTATION
        )
        if annotation in POD_FAULTS:
            return annotation
        repo = image_repository(main_container(pod)["image"])
        if repo in self.by_repo:
            return self.by_repo[repo]
        folder = images.get(repo)
        if folder:
            try:
                name = (Path(folder) / POD_FAULT_FILE).read_text().strip()
            except OSError:
                return None
            return name if name in POD_FAULTS else None
        return None

    async def play(self, kubelet, pod: dict, entry: PodSandbox, fault: str) -> None:
        """Report ``fault`` on ``pod`` until it is deleted (``entry.deleting``)."""
        meta = pod["metadata"]
        c = main_container(pod)
        log.info("devcluster: pod %s/%s: injected fault %s", meta["namespace"], meta["name"], fault)

        def update(fn) -> None:
            nonlocal pod
            pod = kubelet.update_pod(pod, fn) or pod

        if fault == "Unschedulable":
            message = "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are "
            message += "available: 1 No preemption victims found for incoming pod."
            cond = {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": message,
                "lastTransitionTime": R.now_rfc3339(),
            }
            update(lambda p: p["status"].update(phase="Pending", conditions=[cond]))
            kubelet.event(pod, "FailedScheduling", message, "Warning")
            await entry.until_deleted()
            return

        def schedule(p: dict) -> None:
            p["spec"]["nodeName"] = NODE
            p["status"].update(
                hostIP="127.0.0.1", startTime=R.now_rfc3339(), conditions=pod_conditions(False)
            )

        update(schedule)
        kubelet.event(pod, "Scheduled", f"Successfully assigned {meta['name']} to {NODE}")
        kubelet.event(pod, "Pulling", f'Pulling image "{c["image"]}"')
        if fault in ("ErrImagePull", "ImagePullBackOff"):
            detail = (
                f'rpc error: code = Unknown desc = failed to pull and unpack image "{c["image"]}"'
            )
            pod = await kubelet.pull_failed(
                pod, c["image"], detail + ": unexpected status 401 Unauthorized", 0.3
            )
            kubelet.event(pod, "Failed", "Error: ImagePullBackOff", "Warning")
            await entry.until_deleted()
            return
        kubelet.event(pod, "Pulled", f'Successfully pulled image "{c["image"]}" in 10ms')
        kubelet.event(pod, "Created", f"Created container {c['name']}")
        kubelet.event(pod, "Started", f"Started container {c['name']}")
        started = R.now_rfc3339()
        running = {"running": {"startedAt": started}}
        update(
            lambda p: p["status"].update(
                phase="Running",
                podIP="127.0.0.1" if fault == "Timeout" else None,
                containerStatuses=container_statuses(p, running, ready=False),
            )
        )
        if fault == "Timeout":
            await entry.until_deleted()
            return
        oom = fault == "OOMKilled"
        root = pod_root(kubelet.state_dir, pod)
        root.mkdir(parents=True, exist_ok=True)
        lines = ["[I] Starting jupyterhub-singleuser", "[I] Loading the course data set"]
        if oom:
            lines.append("[I] Allocating arrays for the course data set")
        else:
            lines += [
                "Traceback (most recent call last):",
                '  File "/opt/course/start.py", line 3, in <module>',
                "ModuleNotFoundError: No module named 'course_setup'",
            ]
        (root / f"{c['name']}.log").write_text("\n".join(lines) + "\n")
        await asyncio.sleep(0.3)
        terminated = {
            "terminated": {
                "exitCode": 137 if oom else 1,
                "reason": "OOMKilled" if oom else "Error",
                "startedAt": started,
                "finishedAt": R.now_rfc3339(),
            }
        }
        update(
            lambda p: p["status"].update(
                containerStatuses=container_statuses(p, terminated, ready=False)
            )
        )
        await asyncio.sleep(0.3)
        waiting = crash_loop(pod, 10)
        update(
            lambda p: p["status"].update(
                containerStatuses=container_statuses(p, waiting, turn=Turn(1, terminated))
            )
        )
        kubelet.event(pod, "BackOff", "Back-off restarting failed container", "Warning")
        await entry.until_deleted()
