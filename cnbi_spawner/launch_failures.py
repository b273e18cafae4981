"""Why did a learner's server not start? Kubernetes pod state + events -> plain language (pure).

Owns the mapping from what Kubernetes reports about a notebook pod to two texts:

- ``message``: for the learner, in words a student understands, without Kubernetes jargon;
- ``hint``: for the course author / hub operator, naming the Kubernetes reason and what to
  check.

Reasons recognised, strongest first (the first that applies wins):

=====================  =================================================================
``OOMKilled``          a container (now or in ``lastState``) terminated with OOMKilled
``CrashLoopBackOff``   a container waits with CrashLoopBackOff, or restarted after exiting
``ErrImagePull``       container waiting ErrImagePull (also ``InvalidImageName``)
``ImagePullBackOff``   container waiting ImagePullBackOff (pull failed, kubelet retrying)
``Unschedulable``      condition PodScheduled=False/Unschedulable or a FailedScheduling
                       event ("0/3 nodes are available: 3 Insufficient cpu.")
``ContainerError``     CreateContainerConfigError / CreateContainerError / StartError /
                       a container that exited with an error and is not restarted
                       (an error exit under restartPolicy Always/OnFailure: CrashLoopBackOff)
``Timeout``            none of the above, but the caller says the start timed out
=====================  =================================================================

``terminal`` says whether waiting longer can help: an OOM kill or a crash loop will not
fix itself; a pull error or an unschedulable pod might (a registry hiccup, an autoscaler
adding a node), so callers give those a grace period before giving up.

Nothing here does I/O; every input may be malformed (it is read leniently and never raises).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass

#: reason -> (learner message, author hint, terminal)
REASONS: dict[str, tuple[str, str, bool]] = {
    "OOMKilled": (
        "Your notebook server ran out of memory and was stopped. "
        "Please try again; if it keeps happening, tell your course staff.",
        "The notebook container was OOMKilled: the image needs more memory than the chosen "
        "size allows. Raise the course's default size (or the size's mem_limit), or make the "
        "image load less at start-up.",
        True,
    ),
    "CrashLoopBackOff": (
        "Your notebook server keeps stopping right after it starts, so it cannot open. "
        "This is a problem with the course setup, not with anything you did.",
        "The container exits at start-up and Kubernetes restarts it (CrashLoopBackOff). "
        "Check the log lines below and the image's command/entrypoint; the image must run "
        "jupyterhub-singleuser.",
        True,
    ),
    "ErrImagePull": (
        "The course software could not be downloaded, so your notebook server cannot start. "
        "This is a problem with the course setup, not with anything you did.",
        "ErrImagePull: the node cannot pull the image. Check that the image reference (tag or "
        "digest) still exists in the registry and that the cluster may pull it "
        "(imagePullSecrets).",
        False,
    ),
    "ImagePullBackOff": (
        "The course software could not be downloaded, so your notebook server cannot start. "
        "This is a problem with the course setup, not with anything you did.",
        "ImagePullBackOff: pulling the image failed and Kubernetes keeps retrying. Check that "
        "the image reference (tag or digest) exists and that the cluster may pull it "
        "(imagePullSecrets).",
        False,
    ),
    "Unschedulable": (
        "The hub has no room for another notebook server right now. "
        "Please try again in a few minutes.",
        "The pod could not be scheduled: no node has enough free resources for the requested "
        "size. Pick a smaller default size for the course, or add capacity to the cluster.",
        False,
    ),
    "ContainerError": (
        "Your notebook server could not be started. "
        "This is a problem with the course setup, not with anything you did.",
        "The container could not be created or exited with an error. See the events and log "
        "lines below (missing Secret/ConfigMap, bad command, failing start-up script).",
        True,
    ),
    "Timeout": (
        "Your notebook server took too long to start. Please try again in a minute.",
        "The pod did not become ready within the spawner's start_timeout. A large image "
        "(pre-pull it), a slow start-up, or a busy cluster; see the events below.",
        True,
    ),
}

_CONTAINER_ERRORS = (
    "CreateContainerConfigError",
    "CreateContainerError",
    "StartError",
    "RunContainerError",
    "InvalidImageName",
)
_INSUFFICIENT = re.compile(r"Insufficient ([A-Za-z0-9/_-]+(?:\.[A-Za-z0-9/_-]+)*)")


@dataclass(frozen=True, slots=True)
class LaunchFailure:
    """One diagnosis: ``reason`` is a key of ``REASONS``; ``detail`` is Kubernetes' own text."""

    reason: str
    message: str
    hint: str
    terminal: bool
    detail: str = ""

    def to_json(self) -> dict:
        return {
            "reason": self.reason,
            "message": self.message,
            "hint": self.hint,
            "terminal": self.terminal,
            "detail": self.detail,
        }


def failure(reason: str, detail: str = "") -> LaunchFailure:
    message, hint, terminal = REASONS[reason]
    if reason == "Unschedulable":
        short = [m for m in _INSUFFICIENT.findall(detail or "")]
        if short:
            hint = f"Insufficient {', '.join(dict.fromkeys(short))}: " + hint
    return LaunchFailure(reason, message, hint, terminal, (detail or "")[:1000])


def _d(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _l(value: object) -> list:
    return value if isinstance(value, list) else []


def _s(value: object) -> str:
    return value if isinstance(value, str) else ""


def _statuses(pod: dict) -> list[dict]:
    status = _d(pod.get("status"))
    out: list[dict] = []
    for key in ("initContainerStatuses", "containerStatuses"):
        out.extend(_d(s) for s in _l(status.get(key)))
    return out


def events_matter(pod: dict | None) -> bool:
    """Whether :func:`diagnose` can learn anything from the pod's events: only while the pod
    exists and is not scheduled (its FailedScheduling events); the rest is in its status.
    A caller polling a starting pod reads the events only then (reading them is not free:
    KubeSpawner keeps every event of the namespace in one list)."""
    pod = _d(pod)
    if not pod or _s(_d(pod.get("spec")).get("nodeName")):
        return False
    for cond in _l(_d(pod.get("status")).get("conditions")):
        cond = _d(cond)
        if cond.get("type") == "PodScheduled" and cond.get("status") == "True":
            return False
    return True


def diagnose(
    pod: dict | None, events: Iterable[dict] = (), *, timed_out: bool = False
) -> LaunchFailure | None:
    """The failure a pod (or its events) shows, else ``Timeout`` when ``timed_out``, else None."""
    pod = _d(pod)
    statuses = _statuses(pod)
    events = [_d(e) for e in events or ()]
    for cs in statuses:
        for state in (_d(cs.get("state")), _d(cs.get("lastState"))):
            term = _d(state.get("terminated"))
            if _s(term.get("reason")) == "OOMKilled":
                code = term.get("exitCode")
                return failure("OOMKilled", f"container {_s(cs.get('name'))} exit code {code}")
    for cs in statuses:
        waiting = _d(_d(cs.get("state")).get("waiting"))
        if _s(waiting.get("reason")) == "CrashLoopBackOff":
            return failure("CrashLoopBackOff", _s(waiting.get("message")))
    for cs in statuses:
        waiting = _d(_d(cs.get("state")).get("waiting"))
        reason = _s(waiting.get("reason"))
        if reason in ("ErrImagePull", "ImagePullBackOff"):
            return failure(reason, _s(waiting.get("message")))
        if reason == "InvalidImageName":
            return failure("ErrImagePull", _s(waiting.get("message")) or reason)
    for cond in _l(_d(pod.get("status")).get("conditions")):
        cond = _d(cond)
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            if _s(cond.get("reason")) == "Unschedulable":
                return failure("Unschedulable", _s(cond.get("message")))
    scheduled = any(_s(e.get("reason")) == "Scheduled" for e in events)
    for e in reversed(events):
        if _s(e.get("reason")) == "FailedScheduling" and not scheduled:
            return failure("Unschedulable", _s(e.get("message")))
    for cs in statuses:
        waiting = _d(_d(cs.get("state")).get("waiting"))
        term = _d(_d(cs.get("state")).get("terminated"))
        if _s(waiting.get("reason")) in _CONTAINER_ERRORS:
            return failure("ContainerError", _s(waiting.get("message")) or waiting["reason"])
        if term and term.get("exitCode") not in (0, None):
            detail = _s(term.get("message")) or f"exit code {term.get('exitCode')}"
            detail = f"{_s(term.get('reason'))}: {detail}".strip(": ")
            # restarted by the kubelet (restartPolicy Always/OnFailure): the first turn of a
            # crash loop, seen before the CrashLoopBackOff wait
            restarts = _s(_d(pod.get("spec")).get("restartPolicy")) or "Always"
            return failure("ContainerError" if restarts == "Never" else "CrashLoopBackOff", detail)
        if int(cs.get("restartCount") or 0) > 0 and not cs.get("ready"):
            last = _d(_d(cs.get("lastState")).get("terminated"))
            return failure("CrashLoopBackOff", f"exit code {last.get('exitCode')}")
    if timed_out:
        return failure("Timeout")
    return None


def event_view(event: dict) -> dict:
    """A Kubernetes Event as the sessions API and the failure page show it."""
    e = _d(event)
    return {
        "time": _s(e.get("lastTimestamp")) or _s(e.get("eventTime")) or _s(e.get("firstTimestamp")),
        "type": _s(e.get("type")),
        "reason": _s(e.get("reason")),
        "message": _s(e.get("message"))[:1000],
        "count": e.get("count") if isinstance(e.get("count"), int) else 1,
    }


def relevant_events(events: Iterable[dict], limit: int = 8) -> list[dict]:
    """The last ``limit`` events, warnings kept in preference to routine ones, in time order."""
    views = [event_view(e) for e in events or ()]
    views.sort(key=lambda v: v["time"])
    if len(views) <= limit:
        return views
    warnings = [i for i, v in enumerate(views) if v["type"] == "Warning"][-limit:]
    rest = [i for i, v in enumerate(views) if v["type"] != "Warning"]
    keep = set(warnings)
    for i in reversed(rest):
        if len(keep) >= limit:
            break
        keep.add(i)
    return [views[i] for i in sorted(keep)]


def tail_lines(text: str | None, limit: int = 20) -> list[str]:
    """The last ``limit`` non-empty log lines, each at most 500 characters."""
    lines = [line.rstrip()[:500] for line in (text or "").splitlines() if line.strip()]
    return lines[-limit:]


#: raw event reason -> what the progress page says instead of Kubernetes' message
_PROGRESS = {
    "Scheduled": "A place for your server was found.",
    "Pulling": "Downloading the course software…",
    "Pulled": "Course software downloaded.",
    "Created": "Preparing your notebook server…",
    "Started": "Starting your notebook server…",
    "FailedScheduling": "Waiting for room on the hub (it is busy right now)…",
    "Failed": "The course software could not be downloaded yet; retrying…",
    "BackOff": "Something went wrong starting your server; retrying…",
    "OOMKilling": "Your server ran out of memory.",
}


def progress_message(event: dict) -> str | None:
    """A plain-language progress line for one raw Kubernetes event (None: keep the original)."""
    e = _d(event)
    reason = _s(e.get("reason"))
    if reason == "BackOff" and "pulling image" in _s(e.get("message")).lower():
        return _PROGRESS["Failed"]
    if reason == "Failed" and "pull" not in _s(e.get("message")).lower():
        return "Your notebook server failed to start; retrying…"
    return _PROGRESS.get(reason)


def failure_text(f: LaunchFailure) -> str:
    """One line for the hub's "Spawn failed: …" message."""
    return f"{f.message} (reason: {f.reason})"


def failure_html(f: LaunchFailure, events: Iterable[dict] = (), logs: Iterable[str] = ()) -> str:
    """The failure for the hub's spawn/pending pages: message, author hint, events, log lines.

    Every string is escaped: event messages and log lines are not ours.
    """
    e = html.escape
    parts = [
        f'<div class="cnbi-launch-failure" data-reason="{e(f.reason)}">',
        f'<p class="cnbi-failure-message"><strong>{e(f.message)}</strong></p>',
        '<details class="cnbi-failure-details"><summary>Details for the course author</summary>',
        f'<p class="cnbi-failure-hint">{e(f.hint)}</p>',
    ]
    if f.detail:
        parts.append(f"<p><code>{e(f.reason)}</code>: {e(f.detail)}</p>")
    events = list(events)
    if events:
        parts.append('<p>Last events:</p><ul class="cnbi-failure-events">')
        for v in events:
            parts.append(
                f"<li>{e(v['time'])} [{e(v['type'])}] {e(v['reason'])}: {e(v['message'])}</li>"
            )
        parts.append("</ul>")
    logs = list(logs)
    if logs:
        parts.append('<p>Last log lines:</p><pre class="cnbi-failure-logs">')
        parts.append(e("\n".join(logs)))
        parts.append("</pre>")
    parts.append("</details></div>")
    return "".join(parts)
