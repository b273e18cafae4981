"""The hub side of the lecture-hall waiting room: place cookie, admission round, page, poll.

When ``/hub/tmplogin`` cannot start a launch now (``max_anonymous_users`` reached, the hub's
``concurrent_spawn_limit`` of pending spawns reached, or the hub-wide login budget spent), a
browser is not shown an error: it gets a place in the first-come queue of
:mod:`cnbi_spawner.waiting_room` and the waiting page, which shows its position and an
estimated wait and continues by itself once admitted. A client that asks for JSON gets the
refusal as before (503/429 with ``Retry-After``). Nothing is created for a waiting learner:
no user, no spawn; the place lives in this process's memory and in the browser's cookie.

- **Place cookie.** ``cnbi-place`` holds the place's random id and its wall-clock arrival,
  signed with the hub's cookie secret (tornado secure cookie), path ``/hub/``. A reload of the
  launch link with it keeps the place (and counts as a heartbeat); after a hub restart the
  place is re-inserted at its old arrival time (:meth:`WaitingRoom.restore`).
- **Admission round** (:meth:`Lobby.tick`, at most once per ``TICK_SECONDS``, run by whichever
  request comes: a poll, a reload or a new arrival): expire abandoned places, then admit from
  the front as many as the hub can start now. Free slots are the smaller of the capacity
  headroom (``TmpLoginMixin.capacity_headroom``: the one capacity rule) and the spawn
  headroom (:func:`~cnbi_spawner.on_its_way.spawn_headroom`: the hub's own
  ``concurrent_spawn_limit`` count, taken once a round and counted down by each launch let
  through until the next one, so a login does not walk the user list for it), and
  admissions take their hub-wide login tokens as they are made.
  Places whose launch has a warm pool (``wants``) are also admitted for that pool's ready,
  unclaimed servers (:func:`cnbi_spawner.claim.ready_pool_servers`, one query a round),
  which need no slot; back at ``/tmplogin`` they claim one.
- **Newcomers** (:meth:`Lobby.check_line`, then :meth:`Lobby.gate`): while anyone waits or
  an admitted place is on its way, a newcomer queues behind them (JSON: 503), even if a
  slot or a pool server looks free.
- **Poll** ``GET /hub/waiting-room``: JSON ``{"state": "waiting"|"admitted"|"gone", …}`` with
  ``poll_seconds``, the server's hint for the next poll. A poll is a signed-cookie check and
  a dict lookup: no database query, no user lookup (a plain tornado handler, not the hub's
  ``BaseHandler``). The page needs no JavaScript: a ``<noscript>`` meta refresh reloads it.
- **Logs**: one INFO line per join (``tmplogin waiting place=…``), admission, expiry and
  restore. A poll that answers (and a reload that only shows the waiting page again) is
  logged at DEBUG (:func:`log_poll`): a full lecture hall polls tens of times a second,
  which at INFO would bury everything else in the hub's access log. Failed polls keep the
  hub's own line (WARNING and up).
- **Metrics** (the hub's ``/hub/metrics``): ``cnbi_waiting_room_length``,
  ``cnbi_waiting_room_wait_seconds`` (join to admission), ``cnbi_waiting_room_joined_total``,
  ``cnbi_waiting_room_admitted_total``, ``cnbi_waiting_room_expired_total{reason}``.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import time
from collections import deque
from pathlib import Path
from typing import Any, Protocol

from jinja2 import BaseLoader, ChoiceLoader, Environment, FileSystemLoader
from jupyterhub.metrics import SERVER_SPAWN_DURATION_SECONDS, prometheus_log_method
from jupyterhub.utils import url_path_join
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from tornado import web
from tornado.log import access_log
from traitlets import Bool, Float, Integer, Unicode
from traitlets.config import LoggingConfigurable

from .claim import ready_pool_servers
from .errors import Throttled
from .on_its_way import spawn_headroom
from .ratelimit import RateLimiter
from .waiting_room import (
    Place,
    RoomFull,
    RoomRules,
    WaitingRoom,
    describe_wait,
    estimate_wait,
    ingress_arrival,
    poll_after,
)


class LobbyAuth(Protocol):
    """What the waiting room needs from the authenticator (``TmpLoginMixin``,
    :mod:`cnbi_spawner.auth`, which passes itself to the handler as ``tmplogin``). A
    protocol, so this module never imports ``auth`` (which imports this one)."""

    capacity_retry_after: int
    claim_pool_servers: bool

    @property
    def rate_limiter(self) -> RateLimiter: ...
    @property
    def lobby(self) -> Lobby: ...
    def check_capacity(self, users: Any) -> None: ...
    def capacity_headroom(self, users: Any) -> int | None: ...
    def starting(self, users: Any) -> int: ...


PLACE_COOKIE = "cnbi-place"
#: shortest time between two admission rounds (a round walks the hub's user list once)
TICK_SECONDS = 1.0
TEMPLATES = Path(__file__).with_name("templates")
#: id | wall-clock arrival | pool key (our own signed value; the key is never used as a path)
_PLACE_VALUE = re.compile(r"([A-Za-z0-9_-]{16,64})\|(\d{1,12}(?:\.\d{1,6})?)\|([^|]{0,300})")

QUEUE_LENGTH = Gauge(
    "cnbi_waiting_room_length", "Browsers waiting for a launch slot", registry=REGISTRY
)
QUEUE_WAIT = Histogram(
    "cnbi_waiting_room_wait_seconds",
    "Time from joining the waiting room to admission",
    buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600),
    registry=REGISTRY,
)
ARRIVAL_LAG = Histogram(
    "cnbi_waiting_room_arrival_lag_seconds",
    "Time from the ingress's arrival stamp (WaitingRoomSettings.arrival_header) to the hub "
    "reading the request, for places taken in the waiting room",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30),
    registry=REGISTRY,
)
QUEUE_JOINED = Counter(
    "cnbi_waiting_room_joined", "Places taken in the waiting room", registry=REGISTRY
)
QUEUE_ADMITTED = Counter(
    "cnbi_waiting_room_admitted", "Places admitted to launch", registry=REGISTRY
)
QUEUE_EXPIRED = Counter(
    "cnbi_waiting_room_expired",
    "Places dropped: abandoned (no heartbeat) or lapsed (admitted, never came back)",
    ["reason"],
    registry=REGISTRY,
)
for _reason in ("abandoned", "lapsed"):
    QUEUE_EXPIRED.labels(reason=_reason)


class WaitingRoomSettings(LoggingConfigurable):
    """Knobs of the waiting room (``c.WaitingRoomSettings.<option>``)."""

    enabled = Bool(
        True,
        help="""Browsers whose launch cannot start now (max_anonymous_users, the hub's
        concurrent_spawn_limit, the hub-wide login rate) wait in a first-come queue on a
        page that continues by itself. False: they get the 503/429 error page, as JSON
        clients always do.""",
    ).tag(config=True)

    expire_seconds = Float(
        40.0,
        help="""A waiting place with no poll or reload for this long is abandoned and
        dropped (keep it well above max_poll_seconds).""",
    ).tag(config=True)

    admit_seconds = Float(
        30.0,
        help="""An admitted browser must come back to /tmplogin within this long, or its
        slot goes to the next in line.""",
    ).tag(config=True)

    max_poll_seconds = Float(
        10.0,
        help="""Longest poll interval the page is told to use (the front of the queue polls
        every second, the back less often).""",
    ).tag(config=True)

    max_waiting = Integer(
        10_000,
        help="Most places in the queue; beyond it, browsers get the error page.",
    ).tag(config=True)

    arrival_header = Unicode(
        "",
        help="""Request header in which the ingress in front of the hub stamps the time it
        received each request (seconds, ms or µs since the epoch, optionally ``t=``-prefixed;
        nginx: ``proxy_set_header X-Request-Start "t=${msec}";``). When set, waiting places
        are ordered by that time, the order learners clicked, instead of the order the hub
        read the requests, which differs when the hub is busy during a burst. Set it only if
        the ingress overwrites the header on every request: otherwise a client could move
        its own place up to arrival_skew seconds forward. Empty (default): the hub's own
        arrival order.""",
    ).tag(config=True)

    arrival_skew = Float(
        30.0,
        help="""An arrival_header stamp further than this many seconds from the hub's clock
        is not believed (the place arrives when the hub reads the request).""",
    ).tag(config=True)

    arrival_settle = Float(
        2.0,
        help="""With arrival_header set: a waiting place is admitted only once its stamp is
        at least this many seconds old, so a learner who clicked first but whose request
        reached the hub later (held in the proxy or the hub's connection queue during a
        burst) still goes in first. Every waiting learner waits at least this long; the
        metric cnbi_waiting_room_arrival_lag_seconds shows the delays this hub sees.""",
    ).tag(config=True)

    def rules(self) -> RoomRules:
        return RoomRules(
            expire_after=self.expire_seconds,
            admit_timeout=self.admit_seconds,
            max_poll=self.max_poll_seconds,
            restore_grace=2 * self.max_poll_seconds + TICK_SECONDS,
            max_waiting=self.max_waiting,
        )


class Waiting(Exception):
    """This browser holds a waiting place: answer with the waiting page."""

    def __init__(
        self, place: Place, *, why: str = "", launch: dict[str, str] | None = None
    ) -> None:
        super().__init__(place.id)
        self.place = place
        self.why = why  # set when the place was just taken: what was asked, and the refusal
        self.launch = launch  # what the page names: the checked course and notebook

    @property
    def joined(self) -> bool:
        return bool(self.why)


def _cookie_path(handler: web.RequestHandler) -> str:
    return handler.settings["hub"].base_url  # /hub/: both /tmplogin and /waiting-room


def _spawn_totals() -> tuple[float, float]:
    """(sum, count) of the hub's successful spawn durations so far."""
    total = count = 0.0
    for metric in SERVER_SPAWN_DURATION_SECONDS.collect():
        for sample in metric.samples:
            if sample.labels.get("status") != "success":
                continue
            if sample.name.endswith("_sum"):
                total += sample.value
            elif sample.name.endswith("_count"):
                count += sample.value
    return total, count


class Lobby:
    """The hub's one waiting room: see the module docstring."""

    def __init__(self, settings: WaitingRoomSettings, clock: Any = time.monotonic) -> None:
        self.settings = settings
        self.log = settings.log
        self.clock = clock
        self.room = WaitingRoom(settings.rules(), clock=clock)
        self._next_tick = -math.inf
        #: spawns the hub's concurrent_spawn_limit allows until the next round (None: no limit)
        self._spawn_free: int | None = None
        self._spawns: deque[tuple[float, float, float]] = deque()
        self._env: Environment | None = None

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    # --- the place cookie ----------------------------------------------------------------

    def place_of(self, handler: web.RequestHandler) -> Place | None:
        """The live place the request's cookie names (a heartbeat), restored after a hub
        restart; None without a (valid, live) one."""
        raw = handler.get_secure_cookie(PLACE_COOKIE, max_age_days=1)
        match = _PLACE_VALUE.fullmatch(raw.decode("ascii", "replace")) if raw else None
        if match is None:
            return None
        place_id, arrived, wants = match.group(1), float(match.group(2)), match.group(3)
        place = self.room.heartbeat(place_id)
        if place is None:
            try:
                place = self.room.restore(place_id, arrived, wants)
            except RoomFull:
                return None
            if place is not None:
                self.log.info("waiting-room restored place=%s after a hub restart", place_id)
        return place

    def join(self, handler: web.RequestHandler, wants: str = "") -> Place:
        """A new place at the back, and its cookie (raises ``RoomFull``). ``wants``: the
        launch's warm pool (``str(PoolKey)``), or "" """
        now, header = time.time(), self.settings.arrival_header
        stamp = handler.request.headers.get(header) if header else None
        sent = ingress_arrival(stamp, now, self.settings.arrival_skew)
        place = self.room.join(secrets.token_urlsafe(18), now, wants, sent)
        if sent is not None:
            ARRIVAL_LAG.observe(max(0.0, now - sent))
        QUEUE_JOINED.inc()
        QUEUE_LENGTH.set(len(self.room))
        handler.set_secure_cookie(
            PLACE_COOKIE,
            f"{place.id}|{place.arrived:.3f}|{place.wants}",
            expires_days=None,  # a session cookie: closing the browser gives the place up
            path=_cookie_path(handler),
            httponly=True,
            samesite="Lax",
            secure=handler.request.protocol == "https",
        )
        return place

    def forget(self, handler: web.RequestHandler) -> None:
        handler.clear_cookie(PLACE_COOKIE, path=_cookie_path(handler))

    # --- admission -----------------------------------------------------------------------

    def check_line(self, auth: LobbyAuth, settings: dict) -> None:
        """Raise ``Throttled`` while anyone waits: a newcomer may not overtake."""
        if self.room.busy:
            raise Throttled(
                "Learners are waiting for a place on this hub.",
                retry_after=self.retry_after(auth),
                status=503,
            )

    def gate(self, auth: LobbyAuth, settings: dict) -> None:
        """Raise ``Throttled`` unless a newcomer's spawn may start now (then it has taken
        its hub-wide login token). ``settings``: the hub's tornado settings."""
        self.check_line(auth, settings)
        auth.check_capacity(settings["users"])
        if self._spawn_free is not None and self._spawn_free <= 0:
            raise Throttled(
                "The hub is starting many servers right now.",
                retry_after=self.retry_after(auth),
                status=503,
            )
        decision = auth.rate_limiter.take_global()
        if not decision.allowed:
            raise Throttled(
                "The hub is handling too many launches right now.",
                retry_after=decision.retry_after,
                status=429,
            )
        if self._spawn_free is not None:
            self._spawn_free -= 1  # this login will spawn before the next round counts it

    def tick(self, auth: LobbyAuth, settings: dict) -> None:
        """One admission round, unless one ran less than ``TICK_SECONDS`` ago.
        ``settings``: the hub's tornado settings (``users``, ``db``, spawn limit)."""
        now = self.clock()
        if now < self._next_tick:
            return
        self._next_tick = now + TICK_SECONDS
        self._sample_spawns(now)
        done = self.room.expire()
        for place in done.expired:
            self.log.info("waiting-room expired place=%s (no heartbeat)", place.id)
        for place in done.lapsed:
            self.log.info("waiting-room lapsed place=%s (admitted, never came back)", place.id)
        QUEUE_EXPIRED.labels(reason="abandoned").inc(len(done.expired))
        QUEUE_EXPIRED.labels(reason="lapsed").inc(len(done.lapsed))
        users = settings["users"]
        spawn_limit = settings.get("concurrent_spawn_limit", 0)
        if spawn_limit:
            counts = users.count_active_users()
            self._spawn_free = spawn_headroom(counts, spawn_limit, auth.starting(users))
        else:
            self._spawn_free = None
            auth.starting(users)  # forget settled reservations all the same
        if len(self.room):
            capacity = auth.capacity_headroom(users)
            limits = [n for n in (capacity, self._spawn_free) if n is not None]
            slots = min(limits) if limits else None
            pools = None
            if auth.claim_pool_servers and any(p.wants for p in self.room.waiting()):
                pools = ready_pool_servers(settings["db"], users)  # one query a round
            tokens = auth.rate_limiter.global_available()
            wall = time.time()
            settle = self.settings.arrival_settle
            arrived_by = wall - settle if self.settings.arrival_header else None
            admitted = self.room.admit(slots, tokens, pools, arrived_by)
            auth.rate_limiter.take_global(len(admitted))
            if self._spawn_free is not None:
                self._spawn_free -= sum(1 for p in admitted if not p.via_pool)
            for place in admitted:
                waited = max(0.0, wall - place.arrived)
                QUEUE_WAIT.observe(waited)
                self.log.info(
                    "waiting-room admitted place=%s waited=%.1fs%s",
                    place.id,
                    waited,
                    f" pool={place.wants}" if place.via_pool else "",
                )
            QUEUE_ADMITTED.inc(len(admitted))
        QUEUE_LENGTH.set(len(self.room))

    def consume(self, place: Place) -> bool:
        used = self.room.consume(place.id)
        QUEUE_LENGTH.set(len(self.room))
        return used

    # --- estimates -----------------------------------------------------------------------

    def _sample_spawns(self, now: float) -> None:
        total, count = _spawn_totals()
        self._spawns.append((now, total, count))
        while len(self._spawns) > 2 and now - self._spawns[1][0] > self.room.rules.rate_window:
            self._spawns.popleft()

    def spawn_seconds(self) -> float | None:
        """Mean duration of the hub's successful spawns in the window (else overall)."""
        if not self._spawns:
            return None
        _, total, count = self._spawns[-1]
        _, total0, count0 = self._spawns[0]
        if count > count0:
            return (total - total0) / (count - count0)
        return total / count if count else None

    def wait_seconds(self, position: int) -> float | None:
        return estimate_wait(position, self.room.admissions_per_second(), self.spawn_seconds())

    def retry_after(self, auth: LobbyAuth) -> int:
        """Retry-After for a JSON client: the wait at the back of the queue, if measured."""
        wait = self.wait_seconds(len(self.room))
        if wait is None:
            return auth.capacity_retry_after
        return max(1, min(3600, math.ceil(wait)))

    def status(self, place: Place | None) -> dict[str, Any]:
        """What the page shows and the poll answers."""
        if place is None or self.room.find(place.id) is None:
            return {"state": "gone", "poll_seconds": 1.0}
        if place.admitted:
            return {"state": "admitted", "poll_seconds": 0.0}
        ahead = self.room.position(place)
        wait = self.wait_seconds(ahead)
        return {
            "state": "waiting",
            "position": ahead + 1,
            "wait_seconds": None if wait is None else round(wait),
            "wait": describe_wait(wait),
            "poll_seconds": poll_after(ahead, self.room.rules.max_poll),
        }

    # --- the page ------------------------------------------------------------------------

    def render(self, handler: Any, place: Place, launch: dict[str, str] | None = None) -> str:
        """The waiting page in the hub's look (``page.html``), for a ``BaseHandler``;
        ``launch``: the checked course and notebook it waits for (``LaunchPlan.summary``)."""
        if self._env is None:
            hub_env: Environment = handler.settings["jinja2_env_sync"]
            loaders: list[BaseLoader] = [FileSystemLoader(str(TEMPLATES))]
            if hub_env.loader is not None:
                loaders.append(hub_env.loader)
            self._env = hub_env.overlay(loader=ChoiceLoader(loaders))
        status = self.status(place)
        namespace = dict(handler.template_namespace)
        namespace.update(
            xsrf_token=handler.xsrf_token.decode("ascii"),
            no_spawner_check=True,  # the page must not create a spawner as a side effect
            status=status,
            launch=launch,
            poll_url=url_path_join(handler.hub.base_url, "waiting-room"),
        )
        return self._env.get_template("waiting-room.html").render(**namespace)


def log_poll(handler: web.RequestHandler) -> None:
    """The hub's access-log line for a waiting browser's poll, at DEBUG, and its request
    metric (``jupyterhub_request_duration_seconds``) as the hub's ``log_function`` records."""
    request = handler.request
    access_log.debug(
        "%d %s %s (@%s) %.2fms",
        handler.get_status(),
        request.method,
        request.path,  # no query: a poll has none, a reload's is the link
        request.remote_ip,
        1000.0 * request.request_time(),
    )
    prometheus_log_method(handler)


class WaitingRoomHandler(web.RequestHandler):
    """``GET /hub/waiting-room``: the place's status as JSON (see the module docstring)."""

    def initialize(self, tmplogin: LobbyAuth) -> None:
        self.tmplogin = tmplogin  # the authenticator that registered this handler

    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        auth = self.tmplogin
        lobby = auth.lobby
        place = lobby.place_of(self)
        if place is not None:
            lobby.tick(auth, self.settings)
        status = lobby.status(place)
        if status["state"] == "gone":
            self.set_status(404)
        self.finish(json.dumps(status))

    def _log(self) -> None:
        """Tornado's per-request log hook (meant for overriding): answered polls at DEBUG."""
        if self.get_status() < 400:
            log_poll(self)
        else:
            super()._log()
