"""Sessions API of the ``cnbi`` service: a learner's own servers, and why one did not start.

Routes (under the service prefix, e.g. ``/services/cnbi/``):

- ``GET api/sessions/me`` -> ``{"user", "servers": [{name, ready, pending, started, age_seconds,
  last_activity, url, course, image, display_name, size, notebook}]}`` — the caller's own
  servers, from the hub API (the service's ``read:servers`` scope);
- ``GET api/sessions/me/logs[?server=<name>]`` -> ``{"user", "server", "pod", "phase",
  "diagnosis", "events", "logs"}`` — the caller's own pod: its recent log lines and events
  from the Kubernetes API, and a plain-language ``diagnosis``
  (:mod:`cnbi_spawner.launch_failures`: reason, message for the learner, hint for the course
  author) when it is failing. After a failed launch the hub deletes the pod; the diagnosis
  the spawner recorded as an Event (:mod:`cnbi_spawner.launch_guard`) is still returned.

Both take ``?user=<name>``: anyone may name themselves; only hub admins (``admin`` flag, or
``admin:servers`` on the token) may name someone else (403 otherwise, before anything is
looked up). The pod is found by KubeSpawner's
``hub.jupyter.org/username`` annotation (the exact, unescaped name) among
``component=singleuser-server`` pods, never by a name taken from the request.

Access: a hub login (OAuth cookie) or token with ``access:services!service=cnbi``; grant
learners that scope with :func:`learner_role`. Read-only. RBAC for the service:
``pods: list``, ``pods/log: get``, ``events: list``.
"""

from __future__ import annotations

import datetime as dt
import json

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from tornado import web

from ..anonymous import ANONYMOUS_GROUP
from ..launch_failures import LaunchFailure, diagnose, relevant_events, tail_lines
from ..launch_guard import EVENT_COMPONENT, EVENT_REASON
from .context import HubServiceHandler

POD_SELECTOR = "component=singleuser-server"
USER_ANNOTATION = "hub.jupyter.org/username"
SERVER_ANNOTATION = "hub.jupyter.org/servername"
MAX_NAME = 255
LOG_LINES = 50
EVENTS = 20


def learner_role(groups=(ANONYMOUS_GROUP,), users=(), service_name: str = "cnbi") -> dict:
    """A hub role letting learners read their own sessions (``c.JupyterHub.load_roles``)."""
    return {
        "name": "cnbi-learner",
        "description": "Learners: read their own sessions and launch diagnostics",
        "scopes": [f"access:services!service={service_name}"],
        "groups": list(groups),
        "users": list(users),
    }


def _age(started: str, now: dt.datetime) -> float | None:
    try:
        when = dt.datetime.fromisoformat(started.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, round((now - when).total_seconds(), 1))


def session_view(name: str, server: dict, registry, now: dt.datetime) -> dict:
    """One server of the hub's user model as the API shows it (pure)."""
    options = server["user_options"] if isinstance(server.get("user_options"), dict) else {}
    course = options.get("course") if isinstance(options.get("course"), str) else ""
    image = registry.get(course) if registry is not None and course else None
    return {
        "name": name,
        "ready": bool(server.get("ready")),
        "pending": server.get("pending"),
        "started": server.get("started"),
        "age_seconds": _age(server.get("started") or "", now),
        "last_activity": server.get("last_activity"),
        "url": server.get("url"),
        "course": course or None,
        "image": image.image if image is not None else None,
        "display_name": (image.display_name or image.key) if image is not None else None,
        "size": options.get("size") if isinstance(options.get("size"), str) else None,
        "notebook": options.get("notebook") if isinstance(options.get("notebook"), str) else None,
    }


class _SessionsBase(HubServiceHandler):
    def get_login_url(self):
        raise web.HTTPError(403, "a hub token or login is required")

    def write_error(self, status_code: int, **kwargs) -> None:
        reason = self._reason
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, web.HTTPError) and exc.log_message:
            reason = exc.log_message % exc.args if exc.args else exc.log_message
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": status_code, "message": reason}))

    def is_admin(self) -> bool:
        """A hub admin: the model's ``admin`` flag, or unrestricted ``admin:servers`` on the
        token (an OAuth token only carries ``admin`` when its scopes allow reading it)."""
        user = self.current_user
        return bool(user.get("admin")) or "admin:servers" in (user.get("scopes") or ())

    def target_user(self) -> str:
        """The user asked about: the caller, or (admins only) ``?user=``."""
        me = self.current_user["name"]
        values = self.get_arguments("user")
        if len(values) > 1:
            raise web.HTTPError(400, "give user at most once")
        if not values or values[0] == me:
            return me
        asked = values[0]
        if not asked or len(asked) > MAX_NAME:
            raise web.HTTPError(400, "bad user name")
        if not self.is_admin():
            raise web.HTTPError(403, "you may only read your own sessions")
        return asked

    async def user_model(self, name: str) -> dict:
        try:
            model = await self.ctx.hub.get_user(name)
        except Exception as e:  # noqa: BLE001 - the hub is down or refuses: say so
            raise web.HTTPError(503, "cannot reach the hub (%s)", type(e).__name__) from None
        if model is None:
            raise web.HTTPError(404, "no such user")
        return model

    def send(self, body: dict) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(body))


class SessionsHandler(_SessionsBase):
    """``GET api/sessions/me``."""

    @web.authenticated
    async def get(self) -> None:
        name = self.target_user()
        model = await self.user_model(name)
        now = dt.datetime.now(dt.UTC)
        servers = model["servers"] if isinstance(model.get("servers"), dict) else {}
        views = [
            session_view(server_name, server, self.ctx.registry, now)
            for server_name, server in sorted(servers.items())
            if isinstance(server, dict)
        ]
        self.send({"user": name, "last_activity": model.get("last_activity"), "servers": views})


class SessionLogsHandler(_SessionsBase):
    """``GET api/sessions/me/logs[?server=…]``."""

    @web.authenticated
    async def get(self) -> None:
        name = self.target_user()
        server = self.get_argument("server", "")
        if len(server) > MAX_NAME:
            raise web.HTTPError(400, "bad server name")
        if self.ctx.kube is None:
            raise web.HTTPError(503, "the Kubernetes API is not configured")
        core = client.CoreV1Api(self.ctx.kube)
        ns = self.ctx.namespace
        try:
            pod = await self._find_pod(core, ns, name, server)
            recorded = None
            if pod is not None:
                pod_name = pod["metadata"]["name"]
            else:
                recorded = await self._recorded_failure(core, ns, name, server)
                pod_name = recorded["involvedObject"]["name"] if recorded else None
            events = await self._events(core, ns, pod_name) if pod_name else []
        except ApiException as e:
            raise web.HTTPError(503, "cannot read from Kubernetes (%s)", e.status) from None
        logs = await self._logs(core, ns, pod_name) if pod is not None else []
        found = diagnose(pod, events) if pod is not None else None
        if found is None and recorded is not None:
            found = _from_event(recorded)
        if found is None and pod is None:
            found = next(
                (_from_event(e) for e in reversed(events) if e.get("reason") == EVENT_REASON),
                None,
            )
        self.send(
            {
                "user": name,
                "server": server,
                "pod": pod_name,
                "phase": ((pod or {}).get("status") or {}).get("phase") if pod else None,
                "diagnosis": found.to_json() if found is not None else None,
                "events": relevant_events(events, EVENTS),
                "logs": logs,
            }
        )

    async def _find_pod(self, core, ns: str, user: str, server: str) -> dict | None:
        resp = await core.list_namespaced_pod(
            ns, label_selector=POD_SELECTOR, _preload_content=False
        )
        items = (await resp.json()).get("items") or []
        mine = [
            p
            for p in items
            if (p["metadata"].get("annotations") or {}).get(USER_ANNOTATION) == user
            and (p["metadata"].get("annotations") or {}).get(SERVER_ANNOTATION, "") == server
        ]
        mine.sort(key=lambda p: p["metadata"].get("creationTimestamp") or "")
        return mine[-1] if mine else None

    async def _recorded_failure(self, core, ns: str, user: str, server: str) -> dict | None:
        resp = await core.list_namespaced_event(
            ns, label_selector=f"component={EVENT_COMPONENT}", _preload_content=False
        )
        items = (await resp.json()).get("items") or []
        mine = [
            e
            for e in items
            if (e["metadata"].get("annotations") or {}).get(USER_ANNOTATION) == user
            and (e["metadata"].get("annotations") or {}).get(SERVER_ANNOTATION, "") == server
        ]
        mine.sort(key=lambda e: e.get("lastTimestamp") or "")
        return mine[-1] if mine else None

    async def _events(self, core, ns: str, pod_name: str) -> list[dict]:
        resp = await core.list_namespaced_event(
            ns, field_selector=f"involvedObject.name={pod_name}", _preload_content=False
        )
        items = (await resp.json()).get("items") or []
        return [e for e in items if (e.get("involvedObject") or {}).get("name") == pod_name]

    async def _logs(self, core, ns: str, pod_name: str) -> list[str]:
        try:
            text = await core.read_namespaced_pod_log(pod_name, ns, tail_lines=LOG_LINES)
        except ApiException:  # not started yet, or gone: no lines
            return []
        return tail_lines(text if isinstance(text, str) else "", LOG_LINES)


def _from_event(event: dict) -> LaunchFailure | None:
    raw = ((event.get("metadata") or {}).get("annotations") or {}).get(
        "cnbi.meteor.zone/launch-failure"
    )
    try:
        data = json.loads(raw) if isinstance(raw, str) else {}
        return LaunchFailure(
            str(data["reason"]),
            str(data["message"]),
            str(data["hint"]),
            bool(data["terminal"]),
            str(data.get("detail", "")),
        )
    except (TypeError, ValueError, KeyError):
        return None


def handlers(prefix: str) -> list:
    return [
        (prefix + "api/sessions/me", SessionsHandler),
        (prefix + "api/sessions/me/logs", SessionLogsHandler),
    ]
