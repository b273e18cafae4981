"""cnbi-spawner inside the learner's Jupyter server: what the learner-lab frontend shows.

Runs in any course image (only the standard library, tornado and jupyter_server, which every
JupyterLab image has; ``cnbi_spawner`` is not installed there). The spawner
(``cnbi_spawner.learner_lab``) puts this folder on the server's path and passes the session's
facts as environment variables, from the same settings the culler uses:

``CNBI_LAB_TEMPORARY`` (``1``: a guest, deleted with the session), ``CNBI_LAB_IDLE_TIMEOUT``
and ``CNBI_LAB_MAX_AGE`` (seconds, ``0``: no limit), ``CNBI_LAB_WARN_LEAD`` (seconds before
the idle deadline the warning shows, ``0``: none), ``CNBI_LAB_NOTICE`` and
``CNBI_LAB_DOWNLOAD`` (``1``/``0``), ``CNBI_LAB_STARTED`` (ISO time the spawn began).

Endpoints, under the server's base URL:

- ``GET cnbi-learner/session``: those facts plus ``last_activity`` (the hub's, asked with the
  server's own token), ``deadline`` and ``reason`` (the earlier of last activity + idle
  timeout, ``idle``, and start + maximum age, ``max-age``), ``now`` and ``poll_seconds``. Not
  counted as activity by the Jupyter server.
- ``POST cnbi-learner/keep-working``: reports activity for this server to the hub now
  (``POST /hub/api/users/{name}/activity``, what jupyterhub-singleuser does every few
  minutes), then answers like ``session``. The culler reads that activity.
- ``GET cnbi-learner/download``: a zip of the files under the server's root created or
  changed since the session started (modification time after ``CNBI_LAB_STARTED``), without
  hidden files and folders (``.*``: checkpoints, caches, settings) and without symlinks.
  404 when downloads are off.
"""

from __future__ import annotations

import asyncio
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


def _seconds(name: str) -> float:
    try:
        return max(0.0, float(os.environ.get(name, "0")))
    except ValueError:
        return 0.0


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
    started = parse_time(os.environ.get("CNBI_LAB_STARTED")) or _PROCESS_STARTED
    return {
        "temporary": _flag("CNBI_LAB_TEMPORARY", False),
        "notice": _flag("CNBI_LAB_NOTICE", True) and _flag("CNBI_LAB_TEMPORARY", False),
        "download": _flag("CNBI_LAB_DOWNLOAD", True),
        "idle_timeout": _seconds("CNBI_LAB_IDLE_TIMEOUT"),
        "max_age": _seconds("CNBI_LAB_MAX_AGE"),
        "warn_lead": _seconds("CNBI_LAB_WARN_LEAD"),
        "started": started,
    }


def deadline(
    settings: dict[str, Any], last_activity: float | None
) -> tuple[float | None, str | None]:
    """When the culler stops this server, and why: the culler's rule (idle since the last
    activity, else since the start; or older than the maximum age), earliest first."""
    options = []
    if settings["idle_timeout"]:
        options.append(((last_activity or settings["started"]) + settings["idle_timeout"], "idle"))
    if settings["max_age"]:
        options.append((settings["started"] + settings["max_age"], "max-age"))
    if not options:
        return None, None
    return min(options)


def poll_seconds(settings: dict[str, Any], left: float | None) -> float:
    """How soon the frontend asks again: often enough to show the warning on time."""
    lead = settings["warn_lead"] or 60.0
    base = max(2.0, min(30.0, lead / 4))
    if left is not None and left > lead:
        return max(2.0, min(base, left - lead))
    return base


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

    async def last_activity(self) -> float | None:
        """This server's last activity as the hub (and so the culler) sees it."""
        model = await self._call("GET", f"users/{self.user}")
        server = ((model or {}).get("servers") or {}).get(self.server) or {}
        return parse_time(server.get("last_activity")) or parse_time(model.get("last_activity"))

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
            last = await _Hub().last_activity()
        except (HTTPClientError, OSError, ValueError) as e:
            self.log.warning("cnbi-learner: cannot read the hub's last activity: %s", e)
            last = None
        now = time.time()
        end, reason = deadline(settings, last)
        left = None if end is None else end - now
        self.finish(
            {
                **settings,
                "started": iso(settings["started"]),
                "last_activity": iso(last),
                "deadline": iso(end),
                "reason": reason,
                "now": iso(now),
                "poll_seconds": poll_seconds(settings, left),
                "download_name": "my-work.zip",
            }
        )


class SessionHandler(_Base):
    @web.authenticated
    async def get(self) -> None:
        await self.answer()


class KeepWorkingHandler(_Base):
    @web.authenticated
    async def post(self) -> None:
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
    web_app.settings["cnbi_learner"] = settings_from_env()
    base = url_path_join(web_app.settings["base_url"], ROUTE)
    web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base, "session"), SessionHandler),
            (url_path_join(base, "keep-working"), KeepWorkingHandler),
            (url_path_join(base, "download"), DownloadHandler),
        ],
    )
    server_app.log.info("cnbi-learner-lab: loaded (%s)", base)
