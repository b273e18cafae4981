"""``ServiceContext``: what every handler of the service finds in ``settings["cnbi"]``.

Holds the shared objects (settings, hub API client, Kubernetes client and user
storage, image registry, metrics, culler) and renders pages with the hub's own
templates (``page.html`` from the installed JupyterHub, our templates first), so
the service looks like the hub. No I/O happens here.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape
from jupyterhub._data import DATA_FILES_PATH
from jupyterhub.services.auth import HubOAuthenticated
from kubernetes_asyncio.client import ApiClient
from tornado import web

from ..anonymous import GuestPolicy
from ..errors import LaunchError
from ..images.registry import ImageRegistry
from ..signing import LinkSigning
from .culler import Culler
from .hubapi import HubClient
from .kubeapi import UserStorage
from .metrics import ServiceMetrics
from .pool import PoolManager
from .rebuilds import RebuildLoop
from .reservation_book import ReservationBook
from .settings import BuildSettings, ServiceSettings

HERE = Path(__file__).parent


@dataclass
class _UserView:
    name: str
    json_escaped_name: str


@dataclass
class ServiceContext:
    """What handlers find in ``settings["cnbi"]``: built once by ``app.ServiceApp.run``."""

    settings: ServiceSettings
    guests: GuestPolicy
    links: LinkSigning
    builds: BuildSettings
    hub: HubClient
    metrics: ServiceMetrics
    jinja: Environment
    culler: Culler
    namespace: str
    prefix: str = "/services/cnbi/"
    hub_base_url: str = "/"
    sizes: list[str] = field(default_factory=list)
    registry: ImageRegistry | None = None  # None: ServiceSettings.registry is off
    kube: ApiClient | None = None  # None: ServiceSettings.kubernetes is off
    storage: UserStorage | None = None  # with kube
    rebuilds: RebuildLoop | None = None  # when RebuildSettings.enabled
    pool: PoolManager | None = None  # when PoolSettings.targets or reservations warm it
    reservations: ReservationBook | None = None  # with the Kubernetes API

    def render(self, template: str, handler: Any = None, **ns: Any) -> str:
        return render_page(self.jinja, self.prefix, self.hub_base_url, template, handler, **ns)


def render_page(
    jinja: Environment,
    prefix: str,
    hub_base_url: str,
    template: str,
    handler: Any = None,
    **ns: Any,
) -> str:
    """A service page with the hub's ``page.html`` look (``handler``: whose user, XSRF)."""
    hub_prefix = hub_base_url + "hub/"
    user = handler.current_user if handler is not None else None
    view = _UserView(user["name"], json.dumps(user["name"])[1:-1]) if user else None
    base: dict[str, Any] = {
        "base_url": hub_prefix,
        "prefix": hub_base_url,
        "service_prefix": prefix,
        "user": view,
        "no_spawner_check": True,
        "admin_access": False,
        "parsed_scopes": set((user or {}).get("scopes", [])),
        "services": [],
        "logout_url": hub_prefix + "logout",
        "login_url": hub_prefix + "login",
        "logo_url": hub_prefix,
        "announcement": None,
        "version_hash": "",
        "xsrf_token": handler.xsrf_token.decode() if handler is not None else "",
        "static_url": lambda path, include_version=True: hub_prefix + "static/" + path,
        "service_static": lambda path: prefix + "static/" + path,
        "link_for": lambda course, notebook: _builder_url(prefix, course, notebook),
        "expires_text": "",
    }
    result = ns.get("result")
    if result is not None and result.expires:
        base["expires_text"] = dt.datetime.fromtimestamp(result.expires, dt.UTC).strftime(
            "%Y-%m-%d %H:%M UTC"
        )
    base.update(ns)
    return jinja.get_template(template).render(**base)


def _builder_url(prefix: str, course: str, notebook: str) -> str:
    params = {"course": course}
    if notebook:
        params["notebook"] = notebook
    return prefix + "?" + urlencode(params) + "#builder"


def make_jinja() -> Environment:
    return Environment(
        loader=ChoiceLoader(
            [
                FileSystemLoader(str(HERE / "templates")),
                FileSystemLoader(os.path.join(DATA_FILES_PATH, "templates")),
            ]
        ),
        autoescape=select_autoescape(default=True),
    )


class HubServiceHandler(HubOAuthenticated, web.RequestHandler):
    """Base of the service's hub-authenticated handlers: ``ctx`` and ``hub_auth`` from settings."""

    @property
    def ctx(self) -> ServiceContext:
        return self.settings["cnbi"]

    @property
    def hub_auth(self) -> Any:
        return self.settings["hub_auth"]

    def hub_public_url(self) -> str:
        """The public hub root for launch links: ``ServiceSettings.public_hub_url``, else this
        request's scheme and host with the hub's base URL."""
        configured = self.ctx.settings.public_hub_url
        if configured:
            return configured.rstrip("/") + "/"
        return f"{self.request.protocol}://{self.request.host}{self.ctx.hub_base_url}"


class ScopedHandler(HubServiceHandler):
    """A handler for named users holding ``hub_scopes``: guests are refused (403, with
    ``guest_refusal``) even if a role gave them the scope; cookie requests that change
    state need the hub's XSRF token, token-authenticated API calls do not."""

    guest_refusal = "anonymous users cannot use this"

    def check_xsrf_cookie(self) -> None:
        # tornado checks XSRF before prepare(): identify a token-authenticated request
        # first, so API clients with "Authorization: token …" are exempt (as in the hub)
        # while cookie requests still need the hub's XSRF token.
        if self.request.headers.get("Authorization") and not getattr(self, "_cnbi_probe", False):
            self._cnbi_probe = True
            _ = self.current_user
        return self.hub_auth.check_xsrf_cookie(self)

    def prepare(self) -> None:
        user = self.current_user
        if user and self.ctx.guests.is_guest(user.get("name", ""), user.get("groups") or ()):
            raise web.HTTPError(403, self.guest_refusal)

    @property
    def user_name(self) -> str:
        return self.current_user["name"]

    @property
    def is_admin(self) -> bool:
        return bool(self.current_user.get("admin"))


class JSONAPIMixin(web.RequestHandler):
    """JSON answers and errors for API handlers: a :class:`LaunchError` becomes its status
    and ``to_json()``; no login redirect (403 with ``login_refusal``)."""

    login_refusal = "a hub token is required"

    def get_login_url(self) -> str:
        raise web.HTTPError(403, self.login_refusal)

    def write_json(self, data: object, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(data))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, LaunchError):
            self.set_status(exc.status)
            body = exc.to_json()
        else:
            message = getattr(exc, "log_message", None) or self._reason
            body = {"status": status_code, "message": message}
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, LaunchError):
            self.send_error(e.status, exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)
