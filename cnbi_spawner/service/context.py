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
from tornado import web

HERE = Path(__file__).parent


@dataclass
class _UserView:
    name: str
    json_escaped_name: str


@dataclass
class ServiceContext:
    """What handlers find in ``settings["cnbi"]``."""

    settings: Any  # app.CullerSettings
    hub: Any  # hubapi.HubClient
    metrics: Any  # metrics.ServiceMetrics
    namespace: str
    registry: Any = None  # ImageRegistry
    kube: Any = None  # kubernetes_asyncio ApiClient
    storage: Any = None  # kubeapi.UserStorage
    culler: Any = None  # culler.Culler
    rebuilds: Any = None  # rebuilds.RebuildLoop, when enabled
    pool: Any = None  # pool.PoolManager, when PoolSettings.targets is set
    prefix: str = "/services/cnbi/"
    hub_base_url: str = "/"
    sizes: list[str] = field(default_factory=list)
    jinja: Environment | None = None

    def render(self, template: str, handler=None, **ns) -> str:
        hub_prefix = self.hub_base_url + "hub/"
        user = handler.current_user if handler is not None else None
        view = _UserView(user["name"], json.dumps(user["name"])[1:-1]) if user else None
        base = {
            "base_url": hub_prefix,
            "prefix": self.hub_base_url,
            "service_prefix": self.prefix,
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
            "service_static": lambda path: self.prefix + "static/" + path,
            "link_for": lambda course, notebook: _builder_url(self.prefix, course, notebook),
            "expires_text": "",
        }
        result = ns.get("result")
        if result is not None and result.expires:
            base["expires_text"] = dt.datetime.fromtimestamp(result.expires, dt.UTC).strftime(
                "%Y-%m-%d %H:%M UTC"
            )
        base.update(ns)
        return self.jinja.get_template(template).render(**base)


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
    def hub_auth(self):
        return self.settings["hub_auth"]
