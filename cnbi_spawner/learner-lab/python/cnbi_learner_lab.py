"""cnbi-spawner inside the learner's Jupyter server: what the learner-lab frontend shows.

Runs in any course image (only the standard library, tornado and jupyter_server, which every
JupyterLab image has; ``cnbi_spawner`` is not installed there). The spawner
(``cnbi_spawner.learner_lab``) puts this folder on the server's path and sets
``CNBI_LAB_NOTICE`` and ``CNBI_LAB_DOWNLOAD`` (``1``/``0``), ``CNBI_LAB_STARTED`` (ISO time
the spawn began: the download's "changed since") and ``CNBI_LAB_LEARNER_ACTIVITY``.

Deadlines are not computed here: the hub answers them with the culler's own rule
(``GET /hub/api/cnbi/deadline/<user>/<server>``, ``cnbi_spawner.lab_deadline``).

Activity (``CNBI_LAB_LEARNER_ACTIVITY=1``): an open JupyterLab tab polls the server every few
seconds (kernels, sessions, terminals, contents), and jupyter_server counts every such API
request as activity, so jupyterhub-singleuser would report an idle learner as active for as
long as the tab is open. This extension therefore replaces the server's ``last_activity``
(what jupyterhub-singleuser reports to the hub) with the learner's own activity: kernel
activity (a busy kernel is active now), terminal activity, other extensions'
``*_last_activity`` settings, and the learner's input in JupyterLab (keys, pointer, wheel,
touch), which the frontend reports to ``cnbi-learner/activity``; API requests do not count.

Endpoints, under the server's base URL:

- ``GET cnbi-learner/session``: the switches plus the hub's deadline answer (``kind``,
  ``idle_timeout``, ``max_age``, ``warn_lead``, ``deadline``, ``reason``, ``warn_at``,
  ``max_age_at``, ``now``) and ``poll_seconds``. Not counted as activity.
- ``POST cnbi-learner/activity``: the learner used JupyterLab (counted locally; reported to
  the hub by jupyterhub-singleuser on its interval).
- ``POST cnbi-learner/keep-working``: counts as activity and reports it to the hub now
  (``POST /hub/api/users/{name}/activity``, as jupyterhub-singleuser does), then answers
  like ``session``. The culler reads that activity.
- ``GET cnbi-learner/download``: a zip of the files under the server's root created or
  changed since the session started (modification time after ``CNBI_LAB_STARTED``), without
  hidden files and folders (``.*``: checkpoints, caches, settings) and without symlinks.
  404 when downloads are off.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import os
import time
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jupyter_server.base.handlers import APIHandler, JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

ROUTE = "cnbi-learner"
_PROCESS_STARTED = time.time()


def _flag(name: str, default: bool) -> bool:
    return os.environ.get(name, "1" if default else "0").strip().lower() in ("1", "true", "yes")


def parse_time(value: Any) -> float | None:
    """An ISO timestamp ('Z', offset or naive UTC) as epoch seconds; ``None`` if not one."""
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def settings_from_env() -> dict[str, Any]:
    return {
        "notice": _flag("CNBI_LAB_NOTICE", True),
        "download": _flag("CNBI_LAB_DOWNLOAD", True),
        "learner_activity": _flag("CNBI_LAB_LEARNER_ACTIVITY", False),
        "started": parse_time(os.environ.get("CNBI_LAB_STARTED")) or _PROCESS_STARTED,
    }


def poll_seconds(warn_lead: float, until_warning: float | None) -> float:
    """How soon the frontend asks again: often enough to show the warning on time."""
    base = max(2.0, min(30.0, (warn_lead or 60.0) / 4))
    if until_warning is not None and until_warning > 0:
        return max(2.0, min(base, until_warning))
    return base


#: where the frontend's reports of the learner's input are kept (a jupyter_server
#: ``*_last_activity`` setting, so the stock last_activity counts it as well)
INPUT_KEY = "cnbi_learner_last_activity"


def learner_last_activity(web_app: Any) -> datetime:
    """The server's last activity without API requests (see the module docstring)."""
    settings = web_app.settings
    kernels = settings["kernel_manager"]
    sources = [settings["started"], kernels.last_kernel_activity]
    sources += [
        value
        for key, value in settings.items()
        if key.endswith("_last_activity") and key != "api_last_activity" and value
    ]
    sources += list(settings.get("last_activity_times", {}).values())
    if any(getattr(k, "execution_state", "") == "busy" for k in kernels._kernels.values()):
        sources.append(datetime.now(UTC))
    return max(sources)


def changed_files(root: Path, since: float) -> Iterator[Path]:
    """Regular files under ``root`` modified after ``since``, no hidden parts, no symlinks."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(folder, name)
            if name.startswith(".") or path.is_symlink() or not path.is_file():
                continue
            if path.stat().st_mtime > since:
                yield path


def zip_of(root: Path, since: float) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in changed_files(root, since):
            archive.write(path, path.relative_to(root).as_posix())
    return buffer.getvalue()


class _Hub:
    """The hub's REST API with this server's own token (JUPYTERHUB_* from the spawner)."""

    def __init__(self) -> None:
        self.url = os.environ.get("JUPYTERHUB_API_URL", "")
        self.token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
        self.user = os.environ.get("JUPYTERHUB_USER", "")
        self.server = os.environ.get("JUPYTERHUB_SERVER_NAME", "")

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        request = HTTPRequest(
            url_path_join(self.url, path),
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
            body=None if body is None else json.dumps(body),
            request_timeout=10,
        )
        response = await AsyncHTTPClient().fetch(request)
        return json.loads(response.body or b"null")

    async def deadline(self) -> dict[str, Any]:
        """The culler's deadline for this server, as the hub computes it."""
        return await self._call("GET", f"cnbi/deadline/{self.user}/{self.server}")

    async def report_activity(self) -> None:
        now = iso(time.time())
        body = {"last_activity": now, "servers": {self.server: {"last_activity": now}}}
        await self._call("POST", f"users/{self.user}/activity", body)


class _Base(APIHandler):
    _track_activity = False  # polling the session is not the learner's activity

    @property
    def learner(self) -> dict[str, Any]:
        return self.settings["cnbi_learner"]

    async def answer(self) -> None:
        settings = self.learner
        try:
            hub = await _Hub().deadline()
        except (HTTPClientError, OSError, ValueError) as e:
            # e.g. a hub without cnbi_spawner.lab_deadline: no deadline, no warning
            self.log.warning("cnbi-learner: the hub gave no deadline: %s", e)
            hub = {"deadline": None, "warn_at": None, "warn_lead": 0, "kind": None}
        warn_at, now = parse_time(hub.get("warn_at")), parse_time(hub.get("now")) or time.time()
        until = None if warn_at is None else warn_at - now
        self.finish(
            {
                **hub,
                "notice": settings["notice"],
                "download": settings["download"],
                "temporary": hub.get("kind") == "anonymous",
                "poll_seconds": poll_seconds(float(hub.get("warn_lead") or 0), until),
                "download_name": "my-work.zip",
            }
        )


class SessionHandler(_Base):
    @web.authenticated
    async def get(self) -> None:
        await self.answer()


class ActivityHandler(APIHandler):
    _track_activity = False

    @web.authenticated
    def post(self) -> None:
        self.settings[INPUT_KEY] = datetime.now(UTC)
        self.set_status(204)
        self.finish()


class KeepWorkingHandler(_Base):
    @web.authenticated
    async def post(self) -> None:
        self.settings[INPUT_KEY] = datetime.now(UTC)
        try:
            await _Hub().report_activity()
        except (HTTPClientError, OSError) as e:
            self.log.error("cnbi-learner: could not report activity to the hub: %s", e)
            raise web.HTTPError(502, "The hub did not take the activity; try again.") from None
        self.log.info("cnbi-learner: %s keeps working (activity reported)", _Hub().user)
        await self.answer()


class DownloadHandler(JupyterHandler):
    @web.authenticated
    async def get(self) -> None:
        settings = self.settings["cnbi_learner"]
        if not settings["download"]:
            raise web.HTTPError(404, "Downloads are turned off on this hub.")
        root = Path(self.settings["server_root_dir"]).expanduser()
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(None, zip_of, root, settings["started"])
        self.log.info("cnbi-learner: download of %d bytes", len(data))
        self.set_header("Content-Type", "application/zip")
        self.set_header("Content-Disposition", 'attachment; filename="my-work.zip"')
        self.set_header("Cache-Control", "no-store")
        self.finish(data)


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "cnbi_learner_lab"}]


def _load_jupyter_server_extension(server_app: Any) -> None:
    web_app = server_app.web_app
    settings = settings_from_env()
    web_app.settings["cnbi_learner"] = settings
    if settings["learner_activity"]:  # what jupyterhub-singleuser reports to the hub
        web_app.last_activity = functools.partial(learner_last_activity, web_app)
    base = url_path_join(web_app.settings["base_url"], ROUTE)
    web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base, "session"), SessionHandler),
            (url_path_join(base, "activity"), ActivityHandler),
            (url_path_join(base, "keep-working"), KeepWorkingHandler),
            (url_path_join(base, "download"), DownloadHandler),
        ],
    )
    server_app.log.info(
        "cnbi-learner-lab: loaded (%s; activity: %s)",
        base,
        "the learner's own" if settings["learner_activity"] else "jupyter_server's",
    )
