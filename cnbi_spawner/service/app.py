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
``users:activity`` or any group scope. Run with ``--ServiceSettings...``/``--CullerSettings...``
flags or a config file (``--config``); ``cnbi-hub service --help-all`` lists every knob
(the settings themselves are :mod:`cnbi_spawner.service.settings`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import secrets
import signal
import sys
from collections.abc import Callable
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.log import LogFormatter
from traitlets import TraitError, Unicode, default
from traitlets.config import Application, Config

from ..anonymous import GuestPolicy
from ..images.registry import ImageRegistry, registry_config
from ..kube import make_api_client
from ..moved_settings import FROM_CULLER, refuse_moved
from ..signing import LinkSigning
from ..sizes import ResourcePolicy
from . import build_pages, builds, reservations, sessions
from .catalog import CatalogHandler, ImagesAPIHandler
from .context import HERE, ServiceContext, make_jinja
from .culler import Culler
from .health import HealthHandler
from .hubapi import HubClient
from .indexer import IndexSettings, NotebookIndexer
from .kubeapi import UserStorage
from .metrics import MetricsHandler, ServiceMetrics
from .pool import PoolManager, PoolSettings
from .rebuilds import RebuildLoop, RebuildSettings
from .reservation_book import ReservationBook, ReservationSettings, utcnow
from .settings import BuildSettings, CullerSettings, ServiceSettings

SERVICE_SCOPES = ("list:users", "read:users", "read:servers", "delete:servers", "delete:users")


def service_role(service_name: str = "cnbi", role_name: str = "cnbi-service") -> dict:
    """The hub role for the service (``c.JupyterHub.load_roles``): least privilege."""
    return {
        "name": role_name,
        "description": "cnbi service: cull idle servers, delete anonymous users",
        "scopes": list(SERVICE_SCOPES),
        "services": [service_name],
    }


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
    handlers[1:1] = [
        *sessions.handlers(p),
        *builds.handlers(p),
        *build_pages.handlers(p),
        *reservations.handlers(p),
    ]
    return web.Application(
        handlers,
        cnbi=ctx,
        hub_auth=hub_auth,
        cookie_secret=secrets.token_bytes(32),
        login_url=hub_auth.login_url,
        xsrf_cookies=True,
    )


def _sizes(config: Config) -> list[str]:
    """The sizes guests may launch with, for the catalog's link builder."""
    try:
        policy = ResourcePolicy(config=config).launch_policy()
    except TraitError as e:  # the hub refuses to start with this config; say so here too
        logging.getLogger("cnbi").error("Invalid resource configuration: %s", e)
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
        "namespace": "ServiceSettings.namespace",
        "kubeconfig": "ServiceSettings.kubeconfig",
        "log-level": "Application.log_level",
    }
    flags = {
        "dry-run": ({"CullerSettings": {"dry_run": True}}, "Log what would be culled only."),
        "no-kubernetes": ({"ServiceSettings": {"kubernetes": False}}, "Hub-only culling."),
        "no-registry": ({"ServiceSettings": {"registry": False}}, "Do not run the registry."),
    }

    @default("log_level")
    def _log_level(self):
        return logging.INFO

    _log_formatter_cls = LogFormatter  # type: ignore[assignment]  # tornado's colours

    @default("log_format")
    def _log_format(self):
        return "%(color)s[%(levelname)1.1s %(asctime)s %(name)s]%(end_color)s %(message)s"

    def __init__(self, clock: Callable[[], dt.datetime] = utcnow, **kwargs) -> None:
        super().__init__(**kwargs)
        self.clock = clock  # what time the reservations and the culler think it is
        # configurables owned by other modules, listed in ``--help-all`` too
        self.classes = [
            ServiceApp,
            ServiceSettings,
            CullerSettings,
            PoolSettings,
            ReservationSettings,
            GuestPolicy,
            LinkSigning,
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
        refuse_moved(self.config, ["CullerSettings"], FROM_CULLER)
        for name in ("cnbi", "cnbi.culler", "cnbi.hubapi", "cnbi.kube", "cnbi.pool", "tornado"):
            logging.getLogger(name).setLevel(self.log_level)  # type: ignore[arg-type]
        logging.getLogger("cnbi").handlers = self.log.handlers
        logging.getLogger("cnbi").propagate = False
        logging.getLogger("tornado.application").handlers = self.log.handlers

    def registry_config(self, settings: ServiceSettings) -> Config:
        """The registry's config: the hub's, with the service's namespace and kubeconfig as
        defaults (an explicit ``c.ImageRegistry.namespaces``/``kubeconfig`` wins)."""
        config = registry_config(self.config)
        configured = config["ImageRegistry"] if "ImageRegistry" in config else {}
        defaults = Config()
        if "kubeconfig" not in configured and settings.kubeconfig:
            defaults.ImageRegistry.kubeconfig = settings.kubeconfig
        if "namespaces" not in configured:
            defaults.ImageRegistry.namespaces = [settings.namespace]
        merged = Config(defaults)
        merged.merge(config)
        return merged

    async def run(self) -> None:
        settings = ServiceSettings(parent=self)
        culling = CullerSettings(parent=self)
        guests = GuestPolicy(parent=self)
        metrics = ServiceMetrics()
        hub = HubClient(concurrency=culling.concurrency)
        prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/cnbi/")
        kube = await make_api_client(settings.kubeconfig or None) if settings.kubernetes else None
        storage = UserStorage(kube, settings.namespace) if kube is not None else None
        registry = None
        if settings.registry:  # the service's own (another process than the hub's)
            registry = ImageRegistry(config=self.registry_config(settings), log=self.log)
        ctx = ServiceContext(
            settings=settings,
            guests=guests,
            links=LinkSigning(parent=self),
            builds=BuildSettings(parent=self),
            hub=hub,
            metrics=metrics,
            jinja=make_jinja(),
            namespace=settings.namespace,
            prefix=prefix if prefix.endswith("/") else prefix + "/",
            hub_base_url=os.environ.get("JUPYTERHUB_BASE_URL", "/"),
            sizes=_sizes(self.config),
            registry=registry,
            kube=kube,
            storage=storage,
            culler=Culler(
                hub,
                culling.policy(
                    anonymous_group=guests.anonymous_group,
                    uuid_names=guests.uuid_names_are_anonymous,
                ),
                kube=storage,
                concurrency=culling.concurrency,
                dry_run=culling.dry_run,
                metrics=metrics,
                logger=logging.getLogger("cnbi.culler"),
                clock=self.clock,
            ),
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
            culling.cull_every,
            ", dry run" if culling.dry_run else "",
        )

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        tasks = []
        if ctx.registry is not None:
            tasks.append(asyncio.create_task(self._start_registry(ctx.registry)))
        if culling.cull_every > 0:
            tasks.append(asyncio.create_task(ctx.culler.run_forever(culling.cull_every, stop)))
        if ctx.registry is not None and ctx.kube is not None:
            rebuild_settings = RebuildSettings(parent=self)
            if rebuild_settings.enabled:  # ctx.rebuilds.notes feed the catalog's rebuild line
                ctx.rebuilds = RebuildLoop(ctx.kube, ctx.registry, ctx.namespace, rebuild_settings)
                tasks.append(asyncio.create_task(ctx.rebuilds.run(stop)))
            index_settings = IndexSettings(parent=self)
            if index_settings.enabled:
                indexer = NotebookIndexer(ctx.kube, ctx.registry, ctx.namespace, index_settings)
                tasks.append(asyncio.create_task(indexer.run(stop)))
        reservation_settings = ReservationSettings(parent=self)
        if ctx.kube is not None:  # class reservations: Kubernetes is their store
            ctx.reservations = ReservationBook(
                ctx.kube,
                ctx.namespace,
                reservation_settings,
                ResourcePolicy(config=self.config).launch_policy(),
                registry=ctx.registry,
                metrics=metrics,
                clock=self.clock,
            )
            tasks.append(asyncio.create_task(ctx.reservations.run(stop)))
        warm = ctx.reservations if reservation_settings.warm_pool else None
        pool_settings = PoolSettings(parent=self)
        if (pool_settings.targets or warm is not None) and ctx.registry is not None:
            ctx.pool = PoolManager(
                hub,
                ctx.registry,
                ResourcePolicy(config=self.config).launch_policy(),
                pool_settings,
                kube=ctx.kube,
                namespace=ctx.namespace,
                signing_key=ctx.links.key_bytes,
                metrics=metrics,
                anonymous_group=ctx.guests.anonymous_group,
                extra_targets=warm.pool_targets if warm is not None else None,
            )
            tasks.append(asyncio.create_task(ctx.pool.run_forever(stop)))
            if warm is not None:  # status.warmed: the pools' ready servers at the last pass
                pool = ctx.pool
                warm.pool_ready = lambda: {
                    (key.course, key.size): n.ready for key, n in pool.counts.items()
                }
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


def main(argv: list[str] | None = None, clock: Callable[[], dt.datetime] = utcnow) -> int:
    """Run the service; ``clock`` (tests) is the wall clock of reservations and culling."""
    app = ServiceApp(clock=clock)
    app.initialize(list(sys.argv[1:] if argv is None else argv))
    asyncio.run(app.run())
    return 0
