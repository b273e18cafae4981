"""``/hub/tmplogin``: anonymous learners, carried straight to a validated course launch.

``TmpLoginAuthenticator`` (entry point ``tmplogin``) is a drop-in for
jupyterhub-tmpauthenticator. ``GET /hub/tmplogin?course=…&notebook=…&size=…`` (the hub
redirects ``/tmplogin`` there, query kept) runs, in this order, and stops at the first refusal:

1. **Rate limit** (``ratelimit.py``): per client, then hub-wide -> 429 with ``Retry-After``.
2. **Signature** (``signing.py``), only when ``link_signing_key`` is set -> 403.
3. **Plan** the launch with the spawner's pure ``selection.plan_launch`` against the live
   image registry -> 400 bad parameter, 404 unknown course, 503 registry not synced yet.
   With no launch parameters, ``default_launch`` is used; if that is empty too, the learner
   gets a fresh user and the hub's normal ``/hub/spawn`` (stock TmpAuthenticator behaviour).
4. **Reuse** (``reuse_sessions``): a browser whose cookie names an anonymous user with a
   running or starting server for the same course goes back to it; no new user.
5. **Capacity**: at most ``max_anonymous_users`` anonymous users with a server (counted from
   the hub's in-memory user cache, plus logins of the last few seconds that have not started
   their spawn yet) -> 503 with ``Retry-After``.
6. **Log in** a new user named by a UUID4, in group ``anonymous_group``, with a fresh hub
   cookie (replacing any previous one), and redirect to ``/hub/spawn?<plan.user_options()>``:
   the URL is built from the validated plan, never from the raw query.

Nothing is created on any refusal. Errors render the hub's own ``error.html`` (the message
is escaped by the template) or JSON ``{"status", "error", "message", …}`` when the client
asks for ``application/json``. Each request bumps ``cnbi_tmplogin_total{result=…}`` in the
hub's Prometheus registry (served at ``/hub/metrics``) and logs one line.

Unlike the stock TmpAuthenticator, ``authenticate`` never invents a user for arbitrary
login-form data: only this handler mints anonymous users, after the checks above.

Named users: ``TmpLoginMixin`` adds ``/hub/tmplogin`` to any other authenticator, e.g.
``class CourseAuthenticator(TmpLoginMixin, GenericOAuthenticator): pass``; named users log in
through that authenticator as usual, and with ``named_users_launch_as_self`` a logged-in named
user who follows a course link launches it as themselves instead of becoming anonymous.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

from jupyterhub.auth import Authenticator
from jupyterhub.handlers import BaseHandler
from jupyterhub.utils import maybe_future, url_path_join
from prometheus_client import REGISTRY, Counter
from tornado import web
from tornado.httputil import responses
from traitlets import Bool, Bytes, Dict, Float, Integer, Unicode, Union, default
from traitlets.config import LoggingConfigurable

from .anonymous import ANONYMOUS_GROUP, is_anonymous, new_anonymous_name
from .errors import BadSignature, LaunchError, RegistryNotReady, Throttled
from .ratelimit import Rate, RateLimiter, client_key
from .signing import as_key, verify_params

RESULTS = (
    "ok",
    "reused",
    "bad_request",
    "unknown_course",
    "bad_signature",
    "rate_limited",
    "at_capacity",
    "not_ready",
)
#: query parameters that are not launch options: the hub's ``next`` and the signature
NOT_OPTIONS = frozenset({"next", "sig", "exp"})
#: seconds a freshly minted user counts against capacity before its spawn shows up
RESERVATION_SECONDS = 30.0
SIGNING_KEY_ENV = "CNBI_LINK_SIGNING_KEY"


def _counter() -> Counter:
    try:
        counter = Counter(
            "cnbi_tmplogin", "Requests to /hub/tmplogin by outcome", ["result"], registry=REGISTRY
        )
    except ValueError:  # this module was imported twice (e.g. reloaded): reuse the collector
        counter = REGISTRY._names_to_collectors["cnbi_tmplogin_total"]  # type: ignore[attr-defined]
    for result in RESULTS:
        counter.labels(result=result)
    return counter


TMPLOGIN_TOTAL = _counter()


def result_for(error: LaunchError) -> str:
    """The metric label for a refusal."""
    if isinstance(error, Throttled):
        return "rate_limited" if error.status == 429 else "at_capacity"
    if isinstance(error, RegistryNotReady):
        return "not_ready"
    if isinstance(error, BadSignature):
        return "bad_signature"
    if error.status == 404:
        return "unknown_course"
    return "bad_request"


def wants_json(accept: str) -> bool:
    """Does the client ask for JSON rather than a page? (Browsers always list text/html.)"""
    accept = accept.lower()
    return "application/json" in accept and "text/html" not in accept


def spawn_url(hub_base_url: str, options: Mapping[str, str] | None) -> str:
    """``<hub>/spawn`` carrying the validated options (never the raw request query).

    Keys get the hub's ``opt-`` prefix (JupyterHub 5+), so they can never clash with the
    hub's own spawn parameters; the hub strips it before ``options_from_query``.
    """
    url = url_path_join(hub_base_url, "spawn")
    if not options:
        return url
    return url + "?" + urlencode({f"opt-{k}": v for k, v in options.items()}, quote_via=quote)


class LaunchRefused(web.HTTPError):
    """A ``LaunchError`` on its way to the hub's error page (or JSON)."""

    def __init__(self, error: LaunchError) -> None:
        super().__init__(
            error.status,
            log_message=f"tmplogin refused: {type(error).__name__}",
            reason=responses.get(error.status, "Error"),
        )
        self.launch_error = error
        self.jupyterhub_message = error.message  # shown (escaped) by the hub's error.html
        retry_after = getattr(error, "retry_after", None)
        self.headers = {"Retry-After": str(retry_after)} if retry_after else {}


def _peer_address(request: Any) -> str:
    """The TCP peer (not ``remote_ip``: the hub runs tornado with ``xheaders=True``)."""
    address = getattr(getattr(request.connection, "context", None), "address", None)
    if isinstance(address, tuple) and address:
        return str(address[0])
    return "unix"


class TmpLoginHandler(BaseHandler):
    """``GET /hub/tmplogin``: see the module docstring."""

    async def get(self) -> None:
        auth = self.authenticator
        if not isinstance(auth, TmpLoginMixin):
            raise web.HTTPError(500, "tmplogin handler used without TmpLoginMixin")
        self.set_header("Cache-Control", "no-store")
        client = client_key(
            self.request.headers.get("X-Forwarded-For"),
            _peer_address(self.request),
            auth.trusted_proxy_count,
        )
        try:
            result, url, who = await self._launch(auth, client)
        except LaunchError as error:
            result = result_for(error)
            TMPLOGIN_TOTAL.labels(result=result).inc()
            self.log.warning("tmplogin %s status=%d client=%s", result, error.status, client)
            raise LaunchRefused(error) from None
        TMPLOGIN_TOTAL.labels(result=result).inc()
        self.log.info("tmplogin %s %s client=%s", result, who, client)
        self.redirect(url)

    async def _launch(self, auth: TmpLoginMixin, client: str) -> tuple[str, str, str]:
        decision = auth.rate_limiter.check(client)
        if not decision.allowed:
            message = (
                "Too many launches from your network."
                if decision.scope == "client"
                else "The hub is handling too many launches right now."
            )
            raise Throttled(message, retry_after=decision.retry_after, status=429)

        query = self.request.query_arguments
        key = auth.signing_key
        if key:
            verify_params(query, key, time.time(), max_ttl=auth.link_max_ttl or None)
        options: dict[str, Any] = {k: v for k, v in query.items() if k not in NOT_OPTIONS}
        if not options and auth.default_launch:
            options = {k: str(v) for k, v in auth.default_launch.items()}

        user = self.current_user
        named = user is not None and not auth.user_is_anonymous(user)
        as_self = named and auth.named_users_launch_as_self
        plan = None
        if options:
            from .selection import plan_launch

            plan = plan_launch(
                options, await auth.ready_registry(), auth.launch_policy(), anonymous=not as_self
            )
        course = plan.user_options()["course"] if plan else "-"

        if as_self:  # a named user launches the course in their own server
            url = spawn_url(self.hub.base_url, plan.user_options() if plan else None)
            return "ok", url, f"user={user.name} course={course} named"

        if user is not None and auth.reuse_sessions:
            url = self._reuse_url(user, plan)
            if url:
                return "reused", url, f"user={user.name} course={course}"

        auth.check_capacity(self.users)
        new_user = await self._login_anonymous(auth)
        if plan is not None:
            url = spawn_url(self.hub.base_url, plan.user_options())
        else:  # the hub's own check of ?next= (same host, path only; "" when refused)
            url = self._validate_next_url(self.get_argument("next", "")) or spawn_url(
                self.hub.base_url, None
            )
        return "ok", url, f"user={new_user.name} course={course}"

    def _reuse_url(self, user: Any, plan: Any) -> str | None:
        """Where to send a browser back to its own live session for this course, if any."""
        spawner = user.spawners.get("")
        if spawner is None or not spawner.active or spawner.pending == "stop":
            return None
        if plan is not None:
            course = (spawner.user_options or {}).get("course")
            if course != plan.user_options()["course"]:
                return None
        target = user.url if plan is None else url_path_join(user.url, plan.default_url)
        if spawner.ready:
            return target
        pending = url_path_join(self.hub.base_url, "spawn-pending", user.escaped_name)
        return pending + "?" + urlencode({"next": target}, quote_via=quote)

    async def _login_anonymous(self, auth: TmpLoginMixin) -> Any:
        """Create the UUID user (in the anonymous group) and set its cookie."""
        name = new_anonymous_name()
        auth.reserve(name)
        try:
            user = await self.login_user({_ANONYMOUS_LOGIN: name})
            if user is None:  # refused by blocked_users, username_pattern or a post_auth_hook
                raise LaunchError("Guest access is not allowed on this hub.", status=403)
            if not auth.manage_groups and not auth.in_group(user):  # e.g. a pre-existing name
                auth.add_to_group(user, self.db)
        except BaseException:
            auth.release(name)
            raise
        return user

    def user_from_username(self, username: str) -> Any:
        """The hub's ``user_from_username``, plus the anonymous group for a user this handler
        minted, in the same SQLite commit as the user row (the default-role grant commits).

        A separate group update cost one more commit (an fsync) per login; and the session
        must never be left dirty across an ``await``: any other request finishing meanwhile
        rolls it back (the hub's ``BaseHandler.finish``), which also expires every ORM object
        the hub holds. So this runs in one synchronous stretch, like the hub's own.
        """
        auth = self.authenticator
        if auth.manage_groups or username not in getattr(auth, "_reservations", ()):
            return super().user_from_username(username)
        user = self.find_user(username)
        if user is not None:
            return user
        from jupyterhub import orm, roles
        from jupyterhub.metrics import TOTAL_USERS

        orm_user = orm.User(name=username)
        self.db.add(orm_user)
        auth.add_to_group(orm_user, self.db, commit=False)
        roles.assign_default_roles(self.db, entity=orm_user)
        TOTAL_USERS.inc()
        self.db.commit()
        return self._user_from_orm(orm_user)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exception = (kwargs.get("exc_info") or (None, None, None))[1]
        if not isinstance(exception, LaunchRefused):
            super().write_error(status_code, **kwargs)
            return
        for name, value in exception.headers.items():
            self.set_header(name, value)
        if wants_json(self.request.headers.get("Accept", "")):
            body = exception.launch_error.to_json()
            if "Retry-After" in exception.headers:
                body["retry_after"] = int(exception.headers["Retry-After"])
            self.set_header("Content-Type", "application/json; charset=UTF-8")
            self.finish(json.dumps(body))
            return
        # the hub's error.html, not e.g. its 404.html whose fixed text would hide our message
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        html = self.render_template(
            "error.html",
            sync=True,
            status_code=status_code,
            status_message=exception.reason,
            message=exception.jupyterhub_message,  # autoescaped by the template
            message_html="",
            extra_error_html="",
            exception=exception,
            no_spawner_check=True,  # the page must not create a spawner as a side effect
        )
        self.finish(html)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, LaunchRefused):
            return  # already logged as one line by get()
        super().log_exception(typ, value, tb)


class _AnonymousLoginKey:
    """Key of the login data this handler passes; no form field can be this object."""


_ANONYMOUS_LOGIN = _AnonymousLoginKey()


class TmpLoginMixin(LoggingConfigurable):
    """Serve ``/hub/tmplogin`` from any Authenticator (put it first in the bases)."""

    anonymous_group = Unicode(
        ANONYMOUS_GROUP,
        help="Group every anonymous user is added to (created if missing).",
    ).tag(config=True)

    reuse_sessions = Bool(
        True,
        help="""Send a browser back to its live anonymous session for the same course
        (running or starting) instead of creating another user.""",
    ).tag(config=True)

    default_launch = Dict(
        {},
        help="""Launch parameters used when /tmplogin has none, e.g. {"course": "intro"}.
        Empty: a new anonymous user is sent to the hub's spawn page as is.""",
    ).tag(config=True)

    named_users_launch_as_self = Bool(
        True,
        help="""A logged-in named (not anonymous) user following a launch link starts the
        course in their own server. False: they get a new anonymous session instead.""",
    ).tag(config=True)

    per_client_rate = Float(
        300.0,
        help="""Logins per minute per client address (0: unlimited). Generous by default
        because a whole class often shares one NAT address.""",
    ).tag(config=True)

    per_client_burst = Integer(
        300, help="Logins a client may make at once before per_client_rate applies."
    ).tag(config=True)

    global_rate = Float(1200.0, help="Logins per minute for the whole hub (0: unlimited).").tag(
        config=True
    )

    global_burst = Integer(
        300, help="Logins the hub accepts at once before global_rate applies."
    ).tag(config=True)

    rate_limit_max_clients = Integer(
        100_000, help="Most client buckets kept in memory (least recently used are dropped)."
    ).tag(config=True)

    trusted_proxy_count = Integer(
        1,
        help="""How many proxies in front of the hub append to X-Forwarded-For and are
        trusted. configurable-http-proxy counts as one, so 1 fits a hub whose proxy faces
        the clients; add one per ingress/load balancer in front of it. 0: use the TCP peer.
        Entries further left are client-supplied and never used.""",
    ).tag(config=True)

    max_anonymous_users = Integer(
        0,
        help="""Most anonymous users with a server (running or starting) at a time; over it,
        /tmplogin answers 503 with Retry-After and creates nothing. 0: no limit.""",
    ).tag(config=True)

    capacity_retry_after = Integer(
        60, help="Retry-After (seconds) sent when the hub is at max_anonymous_users."
    ).tag(config=True)

    link_signing_key = Union(
        [Bytes(), Unicode()],
        help=f"""HMAC-SHA256 key for signed launch links. When set, /tmplogin requires a
        valid, unexpired `sig`/`exp` (403 otherwise). Defaults to ${SIGNING_KEY_ENV}.
        Never logged. Mint links with `cnbi-hub sign-link`.""",
    ).tag(config=True)

    @default("link_signing_key")
    def _default_signing_key(self) -> str:
        return os.environ.get(SIGNING_KEY_ENV, "")

    link_max_ttl = Integer(
        30 * 24 * 3600,
        help="Longest validity (seconds from now) a signed link may claim; 0: no bound.",
    ).tag(config=True)

    registry_wait_timeout = Float(
        5.0,
        help="""Seconds a launch waits for the image registry's first sync (just after the
        hub starts) before answering 503 with Retry-After.""",
    ).tag(config=True)

    @default("any_allow_config")
    def _default_any_allow_config(self) -> bool:
        return True  # anonymous access is this authenticator's allow rule

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._limiter: RateLimiter | None = None
        self._policy: Any = None
        self._reservations: dict[str, float] = {}
        self._registry_task: asyncio.Future | None = None

    # --- collaborators, built lazily from config ----------------------------------------

    @property
    def signing_key(self) -> bytes:
        return as_key(self.link_signing_key or b"")

    @property
    def rate_limiter(self) -> RateLimiter:
        if self._limiter is None:
            self._limiter = RateLimiter(
                Rate(self.per_client_rate, self.per_client_burst),
                Rate(self.global_rate, self.global_burst),
                max_clients=self.rate_limit_max_clients,
            )
        return self._limiter

    def launch_policy(self) -> Any:
        if self._policy is None:
            from .sizes import ResourcePolicy

            self._policy = ResourcePolicy(config=self.config).launch_policy()
        return self._policy

    def image_registry(self) -> Any:
        """The shared registry, started in the background on first use."""
        from .images.registry import ImageRegistry

        registry = ImageRegistry.shared(parent=self)
        task = self._registry_task
        if task is None or (task.done() and (task.cancelled() or task.exception())):
            loop = asyncio.get_running_loop()  # RuntimeError outside the hub's event loop
            self._registry_task = loop.create_task(registry.start())
            self._registry_task.add_done_callback(self._registry_started)
        return registry

    def _registry_started(self, task: asyncio.Future) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.log.error("tmplogin: image registry failed to start: %s", task.exception())

    async def ready_registry(self) -> Any:
        """The registry, after waiting up to ``registry_wait_timeout`` for its first sync."""
        registry = self.image_registry()
        if not registry.synced and self.registry_wait_timeout > 0:
            await registry.wait_synced(self.registry_wait_timeout)
        return registry  # still unsynced: resolve() raises RegistryNotReady (503)

    # --- anonymous users -----------------------------------------------------------------

    def user_is_anonymous(self, user: Any) -> bool:
        return is_anonymous(user.name, (g.name for g in user.groups), group=self.anonymous_group)

    def reserve(self, name: str) -> None:
        self._reservations[name] = time.monotonic()

    def release(self, name: str) -> None:
        self._reservations.pop(name, None)

    def live_anonymous(self, users: Any) -> int:
        """Anonymous users with an active server, plus logins still on their way to a spawn."""
        cutoff = time.monotonic() - RESERVATION_SECONDS
        for name in [n for n, t in self._reservations.items() if t < cutoff]:
            del self._reservations[name]
        live = {u.name for u in list(users.values()) if u.active and self.user_is_anonymous(u)}
        for name in live.intersection(self._reservations):
            del self._reservations[name]  # its spawn has begun: counted as active from now on
        return len(live | set(self._reservations))

    def check_capacity(self, users: Any) -> None:
        limit = self.max_anonymous_users
        if limit > 0 and self.live_anonymous(users) >= limit:
            raise Throttled(
                "The hub is at capacity right now.",
                retry_after=self.capacity_retry_after,
                status=503,
            )

    def add_to_group(self, user: Any, db: Any, *, commit: bool = True) -> None:
        """Put ``user`` (a hub ``User`` or an ``orm.User``) in the anonymous group through
        the ORM (creating the group once)."""
        from jupyterhub import orm

        orm_user = getattr(user, "orm_user", user)
        group = orm.Group.find(db, self.anonymous_group)
        if group is None:
            group = orm.Group(name=self.anonymous_group)
            db.add(group)
        if group not in orm_user.groups:
            orm_user.groups.append(group)
        if commit:
            db.commit()

    def in_group(self, user: Any) -> bool:
        return any(g.name == self.anonymous_group for g in user.orm_user.groups)

    # --- Authenticator hooks -------------------------------------------------------------

    async def authenticate(self, handler: Any, data: Any) -> Any:
        if isinstance(data, dict) and _ANONYMOUS_LOGIN in data:
            name = data[_ANONYMOUS_LOGIN]
            if name not in self._reservations:
                return None
            return {"name": name, "groups": [self.anonymous_group]}
        return await maybe_future(super().authenticate(handler, data))

    async def check_allowed(self, username: str, authentication: Any = None) -> bool:
        if username in self._reservations:
            return True  # minted by our handler a moment ago
        return await maybe_future(super().check_allowed(username, authentication))

    def get_handlers(self, app: Any) -> list:
        try:
            self.image_registry()  # start syncing with the hub, not on the first login
        except (ImportError, RuntimeError) as e:
            self.log.warning("tmplogin: image registry not started at startup: %s", e)
        return [*super().get_handlers(app), ("/tmplogin", TmpLoginHandler)]


class TmpLoginAuthenticator(TmpLoginMixin, Authenticator):
    """Anonymous course launches at ``/hub/tmplogin``; drop-in for TmpAuthenticator."""

    login_service = Unicode(
        "Guest access", help="Text of the login button when auto_login is False."
    ).tag(config=True)

    @default("auto_login")
    def _auto_login_default(self) -> bool:
        return True

    def login_url(self, base_url: str) -> str:
        return url_path_join(base_url, "tmplogin")


__all__ = [
    "LaunchRefused",
    "TMPLOGIN_TOTAL",
    "TmpLoginAuthenticator",
    "TmpLoginHandler",
    "TmpLoginMixin",
    "result_for",
    "spawn_url",
    "wants_json",
]
