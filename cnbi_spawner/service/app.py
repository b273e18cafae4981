"""``cnbi-hub service``: the hub-managed ``cnbi`` service process.

The hub starts it (``c.JupyterHub.services`` entry with ``command``) and hands it
``JUPYTERHUB_API_TOKEN``, ``JUPYTERHUB_API_URL``, ``JUPYTERHUB_SERVICE_PREFIX``
(``/services/cnbi/``), ``JUPYTERHUB_SERVICE_URL`` (where to listen) and the OAuth
client settings. One asyncio loop runs: the tornado app (catalog, images API,
health, metrics, builds), the culler loop and the image registry's watch.
SIGTERM/SIGINT stop all three cleanly.

Register it in ``jupyterhub_config.py``::

    c.JupyterHub.services = [{
        "name": "cnbi",
        "command": ["cnbi-hub", "service"],
        "url": "http://127.0.0.1:10101",
        "environment": {"KUBECONFIG": ...},   # the hub does not pass its env through
        "oauth_no_confirm": True,
    }]
    c.JupyterHub.load_roles = [service_role("cnbi")]    # from this module
    # who may open the catalog (course authors, staff):
    c.JupyterHub.load_roles.append({"name": "cnbi-catalog", "groups": ["authors"],
                                    "scopes": ["access:services!service=cnbi"]})

Least privilege (:func:`service_role`): the service's token gets exactly

- ``list:users`` — page through ``GET /hub/api/users`` (with ``state`` filters);
- ``read:users`` — the user model fields the policy reads: ``groups`` (anonymous?),
  ``admin``, ``created``, ``last_activity`` (``read:users:groups`` and
  ``read:users:activity`` alone do not give ``created``/``admin``);
- ``read:servers`` — the ``servers`` dict (``pending``, ``ready``, ``started``,
  per-server ``last_activity``);
- ``delete:servers`` — stop servers (``DELETE /users/{name}/server[s/{server}]``);
- ``delete:users`` — delete users (``DELETE /users/{name}``). JupyterHub 5+ has this
  narrow scope; ``admin:users`` (superuser-like: create users, edit admin flags,
  read auth state) is *not* needed.

It does not get ``start:servers``, ``admin:users``, ``admin:servers``, ``tokens``,
``users:activity`` or any group scope. Run with ``--CullerSettings...`` flags or a
config file (``--config``); ``cnbi-hub service --help-all`` lists every knob.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import sys
from pathlib import Path
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.log import LogFormatter
from traitlets import Bool, Float, Int, Unicode, default
from traitlets.config import Application, Configurable

from ..images.registry import ImageRegistry
from ..kube import make_api_client
from ..signing import SIGNING_KEY_ENV
from . import build_pages, builds, sessions
from .builds import BuildSettings
from .catalog import CatalogHandler, ImagesAPIHandler
from .context import HERE, ServiceContext, make_jinja
from .cull_policy import CullPolicy, Thresholds
from .culler import Culler
from .health import HealthHandler
from .hubapi import HubClient
from .indexer import IndexSettings, NotebookIndexer
from .kubeapi import UserStorage
from .metrics import MetricsHandler, ServiceMetrics
from .pool import PoolManager, PoolSettings
from .rebuilds import RebuildLoop, RebuildSettings

SERVICE_SCOPES = ("list:users", "read:users", "read:servers", "delete:servers", "delete:users")


def service_role(service_name: str = "cnbi", role_name: str = "cnbi-service") -> dict:
    """The hub role for the service (``c.JupyterHub.load_roles``): least privilege."""
    return {
        "name": role_name,
        "description": "cnbi service: cull idle servers, delete anonymous users",
        "scopes": list(SERVICE_SCOPES),
        "services": [service_name],
    }


def _default_namespace() -> str:
    for var in ("CNBI_NAMESPACE", "POD_NAMESPACE"):
        if os.environ.get(var):
            return os.environ[var]
    sa = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    if sa.exists():
        return sa.read_text().strip()
    return "default"


class CullerSettings(Configurable):
    """Every knob of the ``cnbi`` service (the registry has its own, on ImageRegistry)."""

    cull_every = Float(60, help="Seconds between cull passes (0: never cull).").tag(config=True)
    anonymous_idle_timeout = Float(
        600, help="Stop an anonymous learner's server idle for this many seconds (0: never)."
    ).tag(config=True)
    anonymous_max_age = Float(
        6 * 3600,
        help="Stop an anonymous learner's server this many seconds after it started, "
        "even if active (0: no limit). Also deletes server-less anonymous users this old.",
    ).tag(config=True)
    abandoned_grace = Float(
        600,
        help="Delete an anonymous user that has no server after this many seconds without "
        "activity (abandoned logins, failed spawns).",
    ).tag(config=True)
    named_idle_timeout = Float(
        3600, help="Stop a named (non-anonymous) user's server idle this long (0: never)."
    ).tag(config=True)
    named_max_age = Float(
        0, help="Stop a named user's server this many seconds after it started (0: no limit)."
    ).tag(config=True)
    cull_named_users = Bool(
        False,
        help="Also delete named users whose servers are all gone and who were idle for "
        "named_idle_timeout. Off by default: named users are real people. Admins never.",
    ).tag(config=True)
    cull_named_servers = Bool(
        True, help="Cull named servers (user/server), not only default servers."
    ).tag(config=True)
    anonymous_group = Unicode(
        "anonymous", help="Hub group whose members are anonymous learners."
    ).tag(config=True)
    uuid_names_are_anonymous = Bool(
        True, help="Also treat users whose name is a UUID as anonymous."
    ).tag(config=True)
    concurrency = Int(
        10, help="Hub API requests (and users handled) in flight at once during a cull pass."
    ).tag(config=True)
    dry_run = Bool(False, help="Log what would be culled, change nothing.").tag(config=True)
    namespace = Unicode(
        help="Kubernetes namespace of user pods and PVCs (default: $CNBI_NAMESPACE, "
        "$POD_NAMESPACE, the service account's namespace, else 'default')."
    ).tag(config=True)

    @default("namespace")
    def _namespace_default(self) -> str:
        return _default_namespace()

    kubeconfig = Unicode(
        "", help="Path to a kubeconfig file ('' : in-cluster, else $KUBECONFIG)."
    ).tag(config=True)
    kubernetes = Bool(
        True, help="Use the Kubernetes API (PVC deletion, health). Off: hub-only culling."
    ).tag(config=True)
    registry = Bool(True, help="Run the image registry (catalog, /api/images).").tag(config=True)
    registry_stale_limit = Float(
        300, help="/health fails when the registry has been stale for longer than this (s)."
    ).tag(config=True)
    link_signing_key = Unicode(
        help="HMAC key for launch links (same as the authenticator's); '' : unsigned links. "
        "Default: $CNBI_LINK_SIGNING_KEY."
    ).tag(config=True)

    @default("link_signing_key")
    def _key_default(self) -> str:
        return os.environ.get(SIGNING_KEY_ENV, "")

    link_ttl = Int(14 * 24 * 3600, help="Lifetime of signed launch links (s).").tag(config=True)
    public_hub_url = Unicode(
        help="Public hub root for launch links, e.g. https://hub.example.edu/ "
        "(default: $JUPYTERHUB_PUBLIC_URL, else the request's host + base URL)."
    ).tag(config=True)

    @default("public_hub_url")
    def _public_default(self) -> str:
        return os.environ.get("JUPYTERHUB_PUBLIC_URL", "")

    def policy(self) -> CullPolicy:
        return CullPolicy(
            anonymous=Thresholds(self.anonymous_idle_timeout, self.anonymous_max_age, True),
            named=Thresholds(self.named_idle_timeout, self.named_max_age, self.cull_named_users),
            abandoned_grace=self.abandoned_grace,
            anonymous_group=self.anonymous_group,
            uuid_names=self.uuid_names_are_anonymous,
            cull_named_servers=self.cull_named_servers,
        )


class OAuthCallbackHandler(HubOAuthCallbackHandler):
    """The hub's OAuth callback, bound to this app's HubOAuth (not the singleton)."""

    @property
    def hub_auth(self):
        return self.settings["hub_auth"]


def make_app(ctx: ServiceContext, hub_auth: HubOAuth) -> web.Application:
    p = ctx.prefix
    handlers: list = [
        (p.rstrip("/"), web.RedirectHandler, {"url": p}),
        (p, CatalogHandler),
        (p + "oauth_callback", OAuthCallbackHandler),
        (p + "api/images", ImagesAPIHandler),
        (p + r"api/images/(.+)", ImagesAPIHandler),
        (p + "health", HealthHandler),
        (p + "metrics", MetricsHandler),
        (p + r"static/(.*)", web.StaticFileHandler, {"path": str(HERE / "static")}),
    ]
    handlers[1:1] = [*sessions.handlers(p), *builds.handlers(p), *build_pages.handlers(p)]
    return web.Application(
        handlers,
        cnbi=ctx,
        hub_auth=hub_auth,
        cookie_secret=secrets.token_bytes(32),
        login_url=hub_auth.login_url,
        xsrf_cookies=True,
    )


def _sizes(config) -> list[str]:
    try:
        from ..sizes import ResourcePolicy

        policy = ResourcePolicy(config=config).launch_policy()
    except Exception:
        return []
    return [n for n, p in policy.packages.items() if policy.allowed_for(p, anonymous=True)]


class ServiceApp(Application):
    name = "cnbi-hub service"
    description = "The hub-managed cnbi service: culler, catalog, health, metrics, builds."

    config_file = Unicode("", help="Python config file to load.").tag(config=True)
    aliases = {
        "config": "ServiceApp.config_file",
        "cull-every": "CullerSettings.cull_every",
        "concurrency": "CullerSettings.concurrency",
        "namespace": "CullerSettings.namespace",
        "kubeconfig": "CullerSettings.kubeconfig",
        "log-level": "Application.log_level",
    }
    flags = {
        "dry-run": ({"CullerSettings": {"dry_run": True}}, "Log what would be culled only."),
        "no-kubernetes": ({"CullerSettings": {"kubernetes": False}}, "Hub-only culling."),
        "no-registry": ({"CullerSettings": {"registry": False}}, "Do not run the registry."),
    }

    @default("log_level")
    def _log_level(self):
        return logging.INFO

    _log_formatter_cls = LogFormatter

    @default("log_format")
    def _log_format(self):
        return "%(color)s[%(levelname)1.1s %(asctime)s %(name)s]%(end_color)s %(message)s"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        # configurables owned by other modules, listed in ``--help-all`` too
        self.classes = [
            ServiceApp,
            CullerSettings,
            PoolSettings,
            ImageRegistry,
            BuildSettings,
            RebuildSettings,
            IndexSettings,
        ]

    def initialize(self, argv=None) -> None:
        self.parse_command_line(argv)
        if self.config_file:
            self.load_config_file(self.config_file)
            self.update_config(self.cli_config)  # command line wins over the file
        for name in ("cnbi", "cnbi.culler", "cnbi.hubapi", "cnbi.kube", "cnbi.pool", "tornado"):
            logging.getLogger(name).setLevel(self.log_level)
        logging.getLogger("cnbi").handlers = self.log.handlers
        logging.getLogger("cnbi").propagate = False
        logging.getLogger("tornado.application").handlers = self.log.handlers

    async def run(self) -> None:
        settings = CullerSettings(parent=self)
        metrics = ServiceMetrics()
        hub = HubClient(concurrency=settings.concurrency)
        ctx = ServiceContext(
            settings=settings,
            hub=hub,
            metrics=metrics,
            namespace=settings.namespace,
            prefix=os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/cnbi/"),
            hub_base_url=os.environ.get("JUPYTERHUB_BASE_URL", "/"),
            sizes=_sizes(self.config),
            jinja=make_jinja(),
        )
        if not ctx.prefix.endswith("/"):
            ctx.prefix += "/"
        if settings.kubernetes:
            ctx.kube = await make_api_client(settings.kubeconfig or None)
            ctx.storage = UserStorage(ctx.kube, settings.namespace)
        if settings.registry:
            ctx.registry = ImageRegistry.shared(parent=self, config=self.config)
            configured = self.config.get("ImageRegistry", {})
            if "kubeconfig" not in configured and settings.kubeconfig:
                ctx.registry.kubeconfig = settings.kubeconfig
            if "namespaces" not in configured:
                ctx.registry.namespaces = [settings.namespace]
        ctx.culler = Culler(
            hub,
            settings.policy(),
            kube=ctx.storage,
            concurrency=settings.concurrency,
            dry_run=settings.dry_run,
            metrics=metrics,
            logger=logging.getLogger("cnbi.culler"),
        )
        hub_auth = HubOAuth(parent=self, cache_max_age=60)
        app = make_app(ctx, hub_auth)
        url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101"))
        server = HTTPServer(app, xheaders=True)
        server.listen(url.port or 80, url.hostname or "127.0.0.1")
        self.log.info(
            "cnbi service on %s%s (namespace %s, cull every %ss%s)",
            url.netloc,
            ctx.prefix,
            ctx.namespace,
            settings.cull_every,
            ", dry run" if settings.dry_run else "",
        )

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        tasks = []
        if ctx.registry is not None:
            tasks.append(asyncio.create_task(self._start_registry(ctx.registry)))
        if settings.cull_every > 0:
            tasks.append(asyncio.create_task(ctx.culler.run_forever(settings.cull_every, stop)))
        if ctx.registry is not None and ctx.kube is not None:
            rebuild_settings = RebuildSettings(parent=self)
            if rebuild_settings.enabled:  # ctx.rebuilds.notes feed the catalog's rebuild line
                ctx.rebuilds = RebuildLoop(ctx.kube, ctx.registry, ctx.namespace, rebuild_settings)
                tasks.append(asyncio.create_task(ctx.rebuilds.run(stop)))
            index_settings = IndexSettings(parent=self)
            if index_settings.enabled:
                indexer = NotebookIndexer(ctx.kube, ctx.registry, ctx.namespace, index_settings)
                tasks.append(asyncio.create_task(indexer.run(stop)))
        pool_settings = PoolSettings(parent=self)
        if pool_settings.targets and ctx.registry is not None:
            from ..signing import as_key
            from ..sizes import ResourcePolicy

            ctx.pool = PoolManager(
                hub,
                ctx.registry,
                ResourcePolicy(config=self.config).launch_policy(),
                pool_settings,
                kube=ctx.kube,
                namespace=ctx.namespace,
                signing_key=as_key(settings.link_signing_key or b""),
                metrics=metrics,
                anonymous_group=settings.anonymous_group,
            )
            tasks.append(asyncio.create_task(ctx.pool.run_forever(stop)))
        await stop.wait()
        self.log.info("Shutting down")
        server.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if ctx.registry is not None:
            try:
                await asyncio.wait_for(ctx.registry.stop(), 5)
            except Exception as e:
                self.log.warning("Registry stop: %s", e)
        hub.close()
        if ctx.kube is not None:
            await ctx.kube.close()
        await asyncio.wait_for(server.close_all_connections(), 5)

    async def _start_registry(self, registry) -> None:
        try:
            await registry.start()
        except Exception as e:  # keep serving; /health says the registry is not synced
            self.log.error("Image registry failed to start: %s", e)


def main(argv: list[str] | None = None) -> int:
    app = ServiceApp()
    app.initialize(list(sys.argv[1:] if argv is None else argv))
    asyncio.run(app.run())
    return 0
