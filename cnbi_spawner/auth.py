"""``TmpLoginAuthenticator`` and ``TmpLoginMixin``: the configuration and state behind
``/hub/tmplogin`` (the request handler and its metric are in :mod:`cnbi_spawner.tmplogin`).

``TmpLoginAuthenticator`` (entry point ``tmplogin``) is a drop-in for
jupyterhub-tmpauthenticator: anonymous learners, carried straight to a validated course
launch. The mixin holds the knobs (rate limits, signing key, capacity, reuse), the lazily
built collaborators (rate limiter, launch policy, image registry) and the freshly minted
anonymous users on their way to a spawn (:mod:`cnbi_spawner.on_its_way`); the checks run in
the order described in :mod:`cnbi_spawner.tmplogin`.

Unlike the stock TmpAuthenticator, ``authenticate`` never invents a user for arbitrary
login-form data: only the tmplogin handler mints anonymous users, after its checks.

Named users: ``TmpLoginMixin`` adds ``/hub/tmplogin`` to any other authenticator, e.g.
``class CourseAuthenticator(TmpLoginMixin, GenericOAuthenticator): pass``; named users log in
through that authenticator as usual, and with ``named_users_launch_as_self`` a logged-in named
user who follows a course link launches it as themselves instead of becoming anonymous.
"""

from __future__ import annotations

import asyncio
from typing import Any

from jupyterhub.auth import Authenticator
from jupyterhub.utils import maybe_future, url_path_join
from traitlets import Bool, Dict, Float, Integer, Unicode, default
from traitlets.config import LoggingConfigurable

from .anonymous import GuestPolicy
from .errors import Throttled
from .images.registry import ImageRegistry
from .moved_settings import FROM_TMPLOGIN, class_sections, refuse_moved
from .on_its_way import OnItsWay
from .pool import POOL_GROUP
from .pool_starts import PoolStartGate
from .ratelimit import Rate, RateLimiter
from .reservation_admission import ReservationAdmission
from .selection import LaunchPolicy
from .signing import LinkSigning
from .sizes import ResourcePolicy
from .tmplogin import TmpLoginHandler
from .waiting_page import Lobby, WaitingRoomHandler, WaitingRoomSettings


class _AnonymousLoginKey:
    """Key of the login data the tmplogin handler passes; no form field can be this object."""


_ANONYMOUS_LOGIN = _AnonymousLoginKey()


class TmpLoginMixin(LoggingConfigurable):
    """Serve ``/hub/tmplogin`` from any Authenticator (put it first in the bases)."""

    reuse_sessions = Bool(
        True,
        help="""Send a browser back to its live anonymous session for the same course
        (running or starting) instead of creating another user.""",
    ).tag(config=True)

    claim_pool_servers = Bool(
        True,
        help="""Hand a learner a ready warm-pool server of exactly their course and size
        (kept by the cnbi service, PoolSettings.targets) instead of spawning one. Costs one
        database query per launch when no pool exists; False skips it.""",
    ).tag(config=True)

    pool_refill_claim_rate = Float(
        1.0,
        help="""While learners claim warm-pool servers at this many per second or more
        (over the last 5 s: a lecture hall clicking together), the hub refuses the cnbi
        service's pool starts (503; the service retries later), so the burst's claims are
        not slowed by refill spawns; the pool refills after it. 0: refill at once.""",
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
        a browser waits in the waiting room (WaitingRoomSettings) and a JSON client gets 503
        with Retry-After; nothing is created meanwhile. 0: no limit.""",
    ).tag(config=True)

    capacity_retry_after = Integer(
        60, help="Retry-After (seconds) sent when the hub is at max_anonymous_users."
    ).tag(config=True)

    spawn_arrival_timeout = Float(
        600.0,
        help="""A learner logged in by /tmplogin counts as on its way to its spawn (against
        max_anonymous_users and the hub's concurrent_spawn_limit) until the spawn begins or
        its user is deleted (the cnbi culler deletes abandoned logins); after this many
        seconds with neither, its browser is taken to be gone and stops counting.""",
    ).tag(config=True)

    @default("any_allow_config")
    def _default_any_allow_config(self) -> bool:
        return True  # anonymous access is this authenticator's allow rule

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        refuse_moved(self.config, class_sections(type(self)), FROM_TMPLOGIN)
        self.guests = GuestPolicy(parent=self)
        self.link_signing = LinkSigning(parent=self)
        # the hub's registry, built now (the hub is starting); its spawners get the same one
        self.image_registry = ImageRegistry.for_hub(self.config, self.log)
        self._limiter: RateLimiter | None = None
        self._lobby: Lobby | None = None
        self._admission: ReservationAdmission | None = None
        self._policy: LaunchPolicy | None = None
        self.on_its_way = OnItsWay(self.spawn_arrival_timeout)
        self.pool_starts = PoolStartGate()
        self._registry_task: asyncio.Future | None = None
        self._group: Any = None  # the anonymous orm.Group, while it is live in the hub's session

    # --- collaborators, built lazily from config ----------------------------------------

    @property
    def signing_key(self) -> bytes:
        return self.link_signing.key_bytes

    @property
    def link_max_ttl(self) -> int:
        return self.link_signing.max_ttl

    @property
    def anonymous_group(self) -> str:
        return self.guests.anonymous_group

    @property
    def rate_limiter(self) -> RateLimiter:
        if self._limiter is None:
            self._limiter = RateLimiter(
                Rate(self.per_client_rate, self.per_client_burst),
                Rate(self.global_rate, self.global_burst),
                max_clients=self.rate_limit_max_clients,
            )
        return self._limiter

    @property
    def lobby(self) -> Lobby:
        """The hub's one waiting room (``WaitingRoomSettings`` from the same config)."""
        if self._lobby is None:
            self._lobby = Lobby(WaitingRoomSettings(parent=self))
        return self._lobby

    @property
    def reservations(self) -> ReservationAdmission:
        """Class reservations' admission (``ReservationAdmission`` from the same config)."""
        if self._admission is None:
            self._admission = ReservationAdmission(parent=self)
        return self._admission

    def launch_policy(self) -> LaunchPolicy:
        if self._policy is None:
            self._policy = ResourcePolicy(config=self.config).launch_policy()
        return self._policy

    def start_registry(self) -> None:
        """Start the registry's sync in the background (again, if the last start failed)."""
        task = self._registry_task
        if task is None or (task.done() and (task.cancelled() or task.exception())):
            loop = asyncio.get_running_loop()  # RuntimeError outside the hub's event loop
            self._registry_task = loop.create_task(self.image_registry.start())
            self._registry_task.add_done_callback(self._registry_started)

    def _registry_started(self, task: asyncio.Future) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.log.error("tmplogin: image registry failed to start: %s", task.exception())

    async def ready_registry(self) -> ImageRegistry:
        """The registry, after waiting up to its ``first_sync_timeout`` for its first sync."""
        registry = self.image_registry
        self.start_registry()
        if not registry.synced:
            await registry.wait_synced(registry.first_sync_timeout)
        return registry  # still unsynced: resolve() raises RegistryNotReady (503)

    # --- anonymous users -----------------------------------------------------------------

    def user_is_anonymous(self, user: Any) -> bool:
        return self.guests.is_guest(user.name, [g.name for g in user.groups])

    def login_data(self, name: str) -> dict:
        """What the tmplogin handler passes to ``login_user`` for a name it reserved."""
        return {_ANONYMOUS_LOGIN: name}

    def is_reserved(self, name: str) -> bool:
        """Was ``name`` minted by the tmplogin handler, its login still under way?"""
        return self.on_its_way.is_logging_in(name)

    def reserve(self, name: str) -> None:
        self.on_its_way.mint(name)

    def logged_in(self, name: str) -> None:
        """The login of a reserved name is done: on its way to ``/hub/spawn`` now."""
        self.on_its_way.logged_in(name)

    def release(self, name: str) -> None:
        self.on_its_way.release(name)

    def live_anonymous_names(self, users: Any) -> set[str]:
        """Anonymous users with an active server (pool servers too), plus logins still on
        their way to a spawn."""
        everyone = list(users.values())
        self.on_its_way.settle({u.name for u in everyone})
        live = {u.name for u in everyone if u.active and self.user_is_anonymous(u)}
        return live | self.on_its_way.names()

    def live_anonymous(self, users: Any) -> int:
        return len(self.live_anonymous_names(users))

    def capacity_headroom(self, users: Any) -> int | None:
        """Anonymous launches ``max_anonymous_users`` allows now (None: no limit)."""
        limit = self.max_anonymous_users
        return None if limit <= 0 else limit - self.live_anonymous(users)

    def starting(self, users: Any) -> int:
        """Logins on their way to a spawn that has not begun: the hub does not count them
        yet (forgets those whose user is gone, also when there is no max_anonymous_users)."""
        if not len(self.on_its_way):
            return 0
        return self.on_its_way.settle({u.name for u in list(users.values())})

    def check_capacity(self, users: Any) -> None:
        headroom = self.capacity_headroom(users)
        if headroom is not None and headroom <= 0:
            raise Throttled(
                "The hub is at capacity right now.",
                retry_after=self.capacity_retry_after,
                status=503,
            )

    def add_to_group(self, user: Any, db: Any, *, commit: bool = True) -> None:
        """Put ``user`` (a hub ``User`` or an ``orm.User``) in the anonymous group through
        the ORM (creating the group once)."""
        from jupyterhub import orm
        from sqlalchemy import inspect

        orm_user = getattr(user, "orm_user", user)
        group = self._live_group(db)
        if group is None:
            group = orm.Group.find(db, self.anonymous_group)  # one SELECT; then cached
            if group is None:
                group = orm.Group(name=self.anonymous_group)
                db.add(group)
            self._group = group
        if group not in orm_user.groups:
            if not inspect(group).pending:  # its member list unloaded: the flush diffs
                db.expire(group, ["users"])  # only this user's groups (warm-pool claims)
            orm_user.groups.append(group)
        if commit:
            db.commit()

    def _live_group(self, db: Any) -> Any:
        """The cached group if it is still a persistent object of ``db`` (not deleted)."""
        from sqlalchemy import inspect

        group = self._group
        if group is None:
            return None
        state = inspect(group)
        if state.session is not db or not (state.persistent or state.pending):
            return None
        return group if group.name == self.anonymous_group else None

    def in_group(self, user: Any) -> bool:
        return any(g.name == self.anonymous_group for g in user.orm_user.groups)

    # --- Authenticator hooks -------------------------------------------------------------

    async def authenticate(self, handler: Any, data: Any) -> Any:
        if isinstance(data, dict) and _ANONYMOUS_LOGIN in data:
            name = data[_ANONYMOUS_LOGIN]
            if not self.is_reserved(name):
                return None
            return {"name": name, "groups": [self.anonymous_group]}
        # a mixin: the Authenticator that provides these comes after it in the MRO
        return await maybe_future(super().authenticate(handler, data))  # type: ignore[misc]

    async def check_allowed(self, username: str, authentication: Any = None) -> bool:
        if self.is_reserved(username):
            return True  # minted by our handler, logging in now
        return await maybe_future(
            super().check_allowed(username, authentication)  # type: ignore[misc]
        )

    async def pre_spawn_start(self, user: Any, spawner: Any) -> None:
        """A spawn begins (any spawner): from now on the hub counts it as pending itself.
        A warm-pool start must fit under ``max_anonymous_users`` and leave the logins on
        their way their spawn slots (``pool_starts``)."""
        self.on_its_way.release(user.name)
        await maybe_future(super().pre_spawn_start(user, spawner))  # type: ignore[misc]
        pool_start = spawner is not None and spawner.name == ""
        if pool_start and any(g.name == POOL_GROUP for g in user.orm_user.groups):
            settings = user.settings
            spawn_limit = settings.get("concurrent_spawn_limit", 0)
            self.pool_starts.admit(
                self, settings["users"], user, spawn_limit, self.pool_refill_claim_rate
            )

    def get_handlers(self, app: Any) -> list:
        try:
            self.start_registry()  # start syncing with the hub, not on the first login
        except RuntimeError as e:  # no running event loop (not inside the hub)
            self.log.warning("tmplogin: image registry not started at startup: %s", e)
        return [
            *super().get_handlers(app),  # type: ignore[misc]
            ("/tmplogin", TmpLoginHandler, {"tmplogin": self}),
            ("/waiting-room", WaitingRoomHandler, {"tmplogin": self}),
        ]


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
