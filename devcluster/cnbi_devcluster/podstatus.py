"""What the dev cluster's kubelet decides and reports for a pod: pure functions, data to data.

The policy (as a real kubelet, KUBE_API_SUBSET §4), one function a rule:

- the shape of ``status``: conditions (:func:`pod_conditions`), ``containerStatuses`` (the
  main container in a given state, the others running) and ``initContainerStatuses``;
- pull: a malformed image reference stops the pod (:func:`malformed_image`), a repository
  in the missing set fails to pull (:func:`missing_image`);
- exit: exit code 0 is ``Completed``, any other ``Error`` (:func:`exited`); a container
  that cannot start is ``StartError`` with exit code 128;
- restart: ``restartPolicy`` Never keeps any exit, OnFailure keeps exit 0, Always (the
  default) keeps none (:func:`restarts_after`); a failed init container is restarted
  unless Never (:func:`restarts_failed_init`); each restart waits twice as long as the one
  before, at most 300 s (:func:`restart_delay`), the main container in ``CrashLoopBackOff``;
- events: the body of an Event the kubelet (or, for ``Scheduled``, the scheduler) writes.

The ``set_*`` functions change the status of the pod they are given (the store's copy,
inside ``Store.update_internal``). No I/O: nothing here reads or writes the store, files or
processes; the kubelet does, with what these return.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from . import resources as R
from .podspec import NODE, image_repository, is_image_reference, main_container

#: an init container not started yet
PENDING_INIT = {"waiting": {"reason": "PodInitializing"}}
#: the longest restart back-off in seconds, as in kubelet
MAX_BACKOFF = 300


def pod_conditions(ready: bool, initialized: bool = True) -> list[dict]:
    now = R.now_rfc3339()
    flag = "True" if ready else "False"
    return [
        {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": now},
        {
            "type": "Initialized",
            "status": "True" if initialized else "False",
            "lastTransitionTime": now,
        },
        {"type": "Ready", "status": flag, "lastTransitionTime": now},
        {"type": "ContainersReady", "status": flag, "lastTransitionTime": now},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
    ]


def _image_id(image: str) -> str:
    """A stable digest per image reference, as a runtime reports the image it pulled."""
    return f"{image_repository(image)}@sha256:" + uuid.uuid5(uuid.NAMESPACE_URL, image).hex * 2


@dataclass(frozen=True)
class Turn:
    """One run of the main container: how many restarts came before it, and the state the
    run before it ended in (``lastState``)."""

    restarts: int = 0
    last_state: dict | None = None


#: the first run of a container
FIRST_TURN = Turn()


def container_statuses(
    pod: dict, state: dict, *, ready: bool = False, turn: Turn = FIRST_TURN
) -> list[dict]:
    """``status.containerStatuses``: the main container in ``state``, others running."""
    out = []
    main = main_container(pod)["name"]
    for c in pod["spec"]["containers"]:
        st = state if c["name"] == main else {"running": {"startedAt": R.now_rfc3339()}}
        out.append(
            {
                "name": c["name"],
                "image": c["image"],
                "imageID": "" if "waiting" in st and not turn.restarts else _image_id(c["image"]),
                "ready": ready and "running" in st,
                "restartCount": turn.restarts if c["name"] == main else 0,
                "started": "running" in st,
                "state": st,
                "lastState": (turn.last_state or {}) if c["name"] == main else {},
            }
        )
    return out


def init_container_statuses(pod: dict, states: dict[str, dict]) -> list[dict]:
    """``status.initContainerStatuses``: each init container in ``states[name]`` (e.g.
    ``{"running": …}`` or ``{"terminated": …}``), waiting in ``PodInitializing`` if absent."""
    out = []
    for c in pod["spec"].get("initContainers") or []:
        state = states.get(c["name"], PENDING_INIT)
        done = state.get("terminated") or {}
        out.append(
            {
                "name": c["name"],
                "image": c.get("image", ""),
                "imageID": "" if "waiting" in state else _image_id(c.get("image", "")),
                "ready": done.get("exitCode") == 0,
                "restartCount": int(state.get("restarts", 0)),
                "started": "running" in state,
                "state": {k: v for k, v in state.items() if k != "restarts"},
            }
        )
    return out


# ---- decisions ------------------------------------------------------------------------------
def malformed_image(pod: dict) -> str | None:
    """The first image of the pod's containers that is no well-formed reference, if any."""
    bad = [c["image"] for c in pod["spec"]["containers"] if not is_image_reference(c["image"])]
    return bad[0] if bad else None


def missing_image(pod: dict, missing: set[str]) -> str | None:
    """The first image of the pod's containers whose repository is in ``missing``, if any."""
    images = [c["image"] for c in pod["spec"]["containers"]]
    return next((image for image in images if image_repository(image) in missing), None)


def exited(code: int, started: str) -> dict:
    """The ``terminated`` state of a container that ran from ``started`` to now."""
    return {
        "exitCode": code,
        "reason": "Completed" if code == 0 else "Error",
        "startedAt": started,
        "finishedAt": R.now_rfc3339(),
    }


def start_error(message: str) -> dict:
    """The state of a main container whose process could not be started."""
    now = R.now_rfc3339()
    return {
        "terminated": {
            "exitCode": 128,
            "reason": "StartError",
            "message": message,
            "startedAt": now,
            "finishedAt": now,
        }
    }


def restarts_after(pod: dict, code: int) -> bool:
    """Whether the main container is started again after it exited with ``code``."""
    policy = pod["spec"].get("restartPolicy", "Always")
    return not (policy == "Never" or (policy == "OnFailure" and code == 0))


def restarts_failed_init(pod: dict) -> bool:
    """Whether a failed init container is started again (else the pod fails)."""
    return pod["spec"].get("restartPolicy") != "Never"


def restart_delay(first: float, restarts: int) -> float:
    """Seconds to wait before restart number ``restarts + 1``: ``first``, doubling."""
    return min(first * 2**restarts, MAX_BACKOFF)


def crash_loop(pod: dict, delay: float) -> dict:
    """The ``waiting`` state of a main container restarted after ``delay`` seconds."""
    name = main_container(pod)["name"]
    message = (
        f"back-off {delay:g}s restarting failed container={name} pod={pod['metadata']['name']}"
    )
    return {"waiting": {"reason": "CrashLoopBackOff", "message": message}}


def event_body(pod: dict, reason: str, message: str, type_: str = "Normal") -> dict:
    """An Event about ``pod`` from the kubelet (``Scheduled``: from the scheduler)."""
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
    return body


# ---- status changes (of the store's copy of a pod) ----------------------------------------
def schedule(p: dict) -> None:
    """Bound to this node; not ready; init containers (if any) pending."""
    p["spec"]["nodeName"] = NODE
    p["status"].update(
        hostIP="127.0.0.1",
        hostIPs=[{"ip": "127.0.0.1"}],
        startTime=R.now_rfc3339(),
        conditions=pod_conditions(False),
    )
    if p["spec"].get("initContainers"):  # the kubelet runs them before the main container
        p["status"]["initContainerStatuses"] = init_container_statuses(p, {})
        p["status"]["conditions"] = pod_conditions(False, initialized=False)


def set_initializing(
    p: dict, states: dict[str, dict], initialized: bool = False, phase: str | None = None
) -> None:
    """Init containers in ``states`` (see :func:`init_container_statuses`)."""
    p["status"]["initContainerStatuses"] = init_container_statuses(p, states)
    p["status"]["conditions"] = pod_conditions(False, initialized=initialized)
    if phase:
        p["status"]["phase"] = phase


def set_waiting(p: dict, waiting: dict) -> None:
    """The main container waits (e.g. in ``ErrImagePull``) before its first start."""
    p["status"]["containerStatuses"] = container_statuses(p, waiting, ready=False)


def set_start_error(p: dict, state: dict, turn: Turn) -> None:
    p["status"].update(phase="Failed", containerStatuses=container_statuses(p, state, turn=turn))


def set_running(p: dict, ip: str, state: dict, turn: Turn) -> None:
    """Running on ``ip``, not ready yet (its port does not accept connections yet)."""
    statuses = container_statuses(p, state, turn=turn)
    p["status"].update(phase="Running", podIP=ip, podIPs=[{"ip": ip}], containerStatuses=statuses)


def set_ready(p: dict, state: dict, turn: Turn) -> None:
    statuses = container_statuses(p, state, ready=True, turn=turn)
    p["status"].update(conditions=pod_conditions(True), containerStatuses=statuses)


def set_ended(p: dict, terminated: dict, turn: Turn) -> None:
    """The main container exited for good: phase Succeeded (exit 0) or Failed."""
    phase = "Succeeded" if terminated["terminated"]["exitCode"] == 0 else "Failed"
    statuses = container_statuses(p, terminated, turn=turn)
    p["status"].update(phase=phase, conditions=pod_conditions(False), containerStatuses=statuses)


def set_backing_off(p: dict, waiting: dict, turn: Turn) -> None:
    """Between two runs of the main container (``waiting`` in CrashLoopBackOff)."""
    statuses = container_statuses(p, waiting, turn=turn)
    p["status"].update(conditions=pod_conditions(False), containerStatuses=statuses)
