"""Watch a starting notebook pod and fail the spawn with a plain-language reason.

KubeSpawner only gives up on a pod by timeout ("pod … did not start in N seconds!"), and
the hub shows that as "Spawn failed". ``guard_start`` runs next to KubeSpawner's start and
reads the pod and its events from KubeSpawner's own reflectors (no extra API calls while
all is well; the events only while the pod is unscheduled, the one case they tell more than
the pod's status). It fails the spawn early, with :mod:`cnbi_spawner.launch_failures`' message,
when the pod shows:

- a terminal failure (OOMKilled, CrashLoopBackOff, container errors): at once;
- a failure that may still clear (ErrImagePull/ImagePullBackOff, Unschedulable): once it
  has lasted ``LaunchDiagnostics.retry_grace`` seconds;
- nothing wrong but no readiness ``timeout_margin`` seconds before the hub's
  ``start_timeout``: as ``Timeout`` (so our message wins over the hub's generic one).

The failure (``LaunchFailed``) carries ``jupyterhub_message`` (one plain line, shown after
"Spawn failed:") and ``jupyterhub_html_message`` (the hub's pages show it: message, author
hint, the last events and log lines — of this learner's own pod only, since the spawner only
reads its own pod). Before raising, the guard records the diagnosis as a Kubernetes Event on
the pod (reason ``CNBiLaunchFailed``, labels ``component=cnbi-launch-failure`` and the
KubeSpawner username label, annotation ``hub.jupyter.org/username``) so the ``cnbi``
service's sessions API can still explain the failure after the hub has deleted the pod.
That needs ``events: create`` in the hub's RBAC; without it only the log line is lost.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from traitlets import Bool, Float, Int
from traitlets.config import Configurable

from .launch_failures import (
    LaunchFailure,
    diagnose,
    events_matter,
    failure_html,
    failure_text,
    relevant_events,
    tail_lines,
)

EVENT_REASON = "CNBiLaunchFailed"
EVENT_COMPONENT = "cnbi-launch-failure"


class LaunchDiagnostics(Configurable):
    """How the spawner explains failed launches (``c.LaunchDiagnostics.*``)."""

    enabled = Bool(True, help="Watch starting pods and explain failed launches.").tag(config=True)
    retry_grace = Float(
        30,
        help="Seconds an image pull error or an unschedulable pod may last before the launch "
        "is given up (they may clear: a registry hiccup, an autoscaler adding a node).",
    ).tag(config=True)
    timeout_margin = Float(
        3,
        help="Give up this many seconds before the spawner's start_timeout, so the learner "
        "sees our explanation rather than the hub's generic timeout.",
    ).tag(config=True)
    poll_interval = Float(1.0, help="Seconds between checks of the starting pod.").tag(config=True)
    log_lines = Int(20, help="Log lines of the failed pod shown on the failure page.").tag(
        config=True
    )
    event_count = Int(8, help="Pod events shown on the failure page.").tag(config=True)
    record_event = Bool(
        True,
        help="Record the diagnosis as a Kubernetes Event on the pod (needs events: create), "
        "so the cnbi service can explain the failure after the pod is gone.",
    ).tag(config=True)


class LaunchFailed(Exception):
    """A launch that failed for a reason we can explain (the hub shows our messages).

    Not an ``HTTPError`` (``hub_errors``): the hub reports a failed start through
    ``jupyterhub_message``/``jupyterhub_html_message`` on any exception, with its own status.
    """

    def __init__(self, failure: LaunchFailure, events: list[dict], logs: list[str]) -> None:
        super().__init__(failure_text(failure))
        self.failure = failure
        self.events = events
        self.logs = logs
        self.jupyterhub_message = failure_text(failure)
        self.jupyterhub_html_message = failure_html(failure, events, logs)


def _pod_of(spawner: Any) -> dict | None:
    reflector = getattr(spawner, "pod_reflector", None)
    if reflector is None:
        return None
    return reflector.pods.get(f"{spawner.namespace}/{spawner.pod_name}")


async def _log_tail(spawner: Any, lines: int) -> list[str]:
    try:
        async with asyncio.timeout(5):
            text = await spawner.api.read_namespaced_pod_log(
                spawner.pod_name, spawner.namespace, tail_lines=lines
            )
    except Exception:  # noqa: BLE001 - no logs (not started, gone, forbidden): show none
        return []
    return tail_lines(text if isinstance(text, str) else "", lines)


async def _record(spawner: Any, pod: dict | None, failure: LaunchFailure) -> None:
    from kubernetes_asyncio import client

    meta = (pod or {}).get("metadata") or {}
    labels = ((pod or {}).get("metadata") or {}).get("labels") or {}
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    body: Any = {  # the client accepts the plain JSON object
        "metadata": {
            "generateName": f"{spawner.pod_name}.cnbi-",
            "labels": {
                "component": EVENT_COMPONENT,
                **{k: v for k, v in labels.items() if k.startswith("hub.jupyter.org/")},
            },
            "annotations": {
                "hub.jupyter.org/username": spawner.user.name,
                "hub.jupyter.org/servername": spawner.name or "",
                "cnbi.meteor.zone/launch-failure": json.dumps(failure.to_json()),
            },
        },
        "involvedObject": {
            "kind": "Pod",
            "apiVersion": "v1",
            "namespace": spawner.namespace,
            "name": spawner.pod_name,
            "uid": meta.get("uid", ""),
        },
        "reason": EVENT_REASON,
        "message": f"{failure.reason}: {failure.message}"[:1000],
        "type": "Warning",
        "source": {"component": "cnbi-spawner"},
        "reportingComponent": "cnbi-spawner",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        async with asyncio.timeout(5):
            await client.CoreV1Api(spawner.api.api_client).create_namespaced_event(
                spawner.namespace, body
            )
    except Exception as e:  # noqa: BLE001 - the page still explains; only the service can't
        spawner.log.warning("Could not record launch failure event for %s: %s", spawner.pod_name, e)


async def explain(
    spawner: Any, settings: LaunchDiagnostics, failure: LaunchFailure
) -> LaunchFailed:
    pod = _pod_of(spawner)
    events = relevant_events(list(getattr(spawner, "events", None) or []), settings.event_count)
    logs = await _log_tail(spawner, settings.log_lines)
    if settings.record_event:
        await _record(spawner, pod, failure)
    spawner.log.warning(
        "Launch failed for %s: %s (%s)", spawner._log_name, failure.reason, failure.detail
    )
    return LaunchFailed(failure, events, logs)


async def guard_start(spawner: Any, inner: asyncio.Future, settings: LaunchDiagnostics) -> Any:
    """Await KubeSpawner's start future; fail it early with an explanation (module doc)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + max(1.0, float(spawner.start_timeout) - settings.timeout_margin)
    first_seen: dict[str, float] = {}
    while True:
        try:
            await asyncio.wait([inner], timeout=settings.poll_interval)
        except asyncio.CancelledError:  # the hub's start timeout, a stop: KubeSpawner's too
            inner.cancel()
            raise
        if inner.done():
            exc = inner.exception()
            if exc is None:
                return inner.result()
            if isinstance(exc, asyncio.TimeoutError | TimeoutError):
                found = diagnose(_pod_of(spawner), spawner.events, timed_out=True)
                assert found is not None  # timed_out=True: at least a Timeout
                raise (await explain(spawner, settings, found)) from exc
            raise exc
        now = loop.time()
        pod = _pod_of(spawner)
        events = (getattr(spawner, "events", None) or []) if events_matter(pod) else []
        found = diagnose(pod, events)
        give_up = None
        if found is not None:
            first = first_seen.setdefault(found.reason, now)
            if found.terminal or now - first >= settings.retry_grace:
                give_up = found
        if give_up is None and now >= deadline:
            give_up = found or diagnose(None, [], timed_out=True)
        if give_up is not None:
            inner.cancel()
            await asyncio.gather(inner, return_exceptions=True)
            raise await explain(spawner, settings, give_up)
