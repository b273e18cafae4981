"""``/hub/tmplogin``: anonymous learners, carried straight to a validated course launch.

The request handler that ``TmpLoginAuthenticator`` / ``TmpLoginMixin`` add to the hub (they
live in :mod:`cnbi_spawner.auth`, with the knobs and state it uses).
``GET /hub/tmplogin?course=…&notebook=…&size=…`` (the hub redirects ``/tmplogin`` there,
query kept) runs, in this order, and stops at the first refusal:

0. **Is it a person?** (``link_preview.classify``): a request that is not a person's browser
   navigation (``HEAD``, a link unfurler or mail scanner, a prefetch, no fetch metadata …)
   only checks the signature and plans the launch (so a bad link still gets its error), then
   gets a 200 page with Open Graph tags naming the course and one "Open the course" button (a
   ``POST`` of the same link, XSRF-checked, which launches). Nothing is created. This comes
   before the rate limit on purpose: unfurlers and scanners fetch every link in a message,
   and must not use up the launch tokens of the learners behind the same address. A browser
   holding a waiting-room place (it got there by a navigation) is not asked again.
   **Waiting room** (``waiting_page.py``): a browser whose place cookie names a waiting
   place gets the waiting page again (a heartbeat; no other check runs); an admitted place
   leaves the room and goes on to 2, past the rate limit and capacity (its slot and login
   token were taken when it was admitted).
1. **Rate limit** (``ratelimit.py``): per client -> 429 with ``Retry-After``. The hub-wide
   budget is taken at 6, once the launch can start.
2. **Signature** (``signing.py``), only when ``c.LinkSigning.key`` is set -> 403.
3. **Plan** the launch with the spawner's pure ``selection.plan_launch`` against the live
   image registry -> 400 bad parameter, 404 unknown course, 503 registry not synced yet.
   With no launch parameters, ``default_launch`` is used; if that is empty too, the learner
   gets a fresh user and the hub's normal ``/hub/spawn`` (stock TmpAuthenticator behaviour).
4. **Reuse** (``reuse_sessions``): a browser whose cookie names an anonymous user with a
   running or starting server for the same course goes back to it; no new user.
5. **Warm pool** (``claim_pool_servers``, :mod:`cnbi_spawner.claim`): a ready pool server
   for exactly the planned course and size is claimed in one database commit; the browser
   gets its user's cookie and goes straight to ``/user/<name>/<plan.default_url>`` (no
   spawn). None ready: the steps below, unchanged. While learners wait in the waiting room
   a newcomer queues first (browser) or gets 503 (JSON): the room admits its places for
   ready pool servers in order, so nobody overtakes them for one.
6. **Capacity**: at most ``max_anonymous_users`` anonymous users with a server (counted from
   the hub's in-memory user cache, plus logins on their way to a spawn that has not begun
   yet: :mod:`cnbi_spawner.on_its_way`), fewer pending spawns (the same way) than the hub's
   ``concurrent_spawn_limit``, no learner already waiting, and a token of the hub-wide login
   budget. Otherwise a browser takes a place in the waiting room (200, the waiting page) and
   a JSON client gets 503 (429 for the budget) with ``Retry-After``.
7. **Log in** a new user named by a UUID4, in group ``anonymous_group``, with a fresh hub
   cookie (replacing any previous one), and redirect to ``/hub/spawn?<plan.user_options()>``:
   the URL is built from the validated plan, never from the raw query.

Nothing is created on any refusal. Errors render the hub's own ``error.html`` (the message
is escaped by the template) or JSON ``{"status", "error", "message", …}`` when the client
asks for ``application/json``. Each request bumps ``cnbi_tmplogin_total{result=…}`` in the
hub's Prometheus registry (served at ``/hub/metrics``) and logs one line.

Unlike the stock TmpAuthenticator, ``authenticate`` never invents a user for arbitrary
login-form data: only this handler mints anonymous users, after the checks above.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast
from urllib.parse import quote, urlencode

from jupyterhub.handlers import BaseHandler
from jupyterhub.utils import url_path_join
from prometheus_client import REGISTRY, Counter

from .anonymous import new_anonymous_name
from .claim import claim_pool_server, observe_claim
from .errors import BadSignature, LaunchError, RegistryNotReady, Throttled
from .hub_errors import LaunchRefused
from .launch_grammar import LINK_PARAMS, RESERVATION, TICKET
from .link_preview import PAGE, Visit, VisitDecision, classify, preview_page
from .pool import PoolKey
from .pool_starts import PoolStartGate
from .ratelimit import client_key
from .reservation_admission import ReservationAdmission
from .selection import ImageSource, LaunchPlan, LaunchPolicy, plan_launch
from .signing import launch_ticket, verify_params
from .waiting_page import LobbyAuth, Waiting, log_poll
from .waiting_room import RoomFull


class TmpLoginAuth(LobbyAuth, Protocol):
    """What the handler needs from the authenticator that registers it (``TmpLoginMixin``
    on a JupyterHub ``Authenticator``, :mod:`cnbi_spawner.auth`), which passes itself as the
    handler's ``tmplogin`` argument. A protocol, so this module never imports ``auth``."""

    default_launch: dict
    named_users_launch_as_self: bool
    reuse_sessions: bool
    trusted_proxy_count: int
    link_max_ttl: int
    manage_groups: bool
    claim_pool_servers: bool
    pool_starts: PoolStartGate

    @property
    def signing_key(self) -> bytes: ...
    @property
    def reservations(self) -> ReservationAdmission: ...
    def launch_policy(self) -> LaunchPolicy: ...
    async def ready_registry(self) -> ImageSource: ...
    def user_is_anonymous(self, user: Any) -> bool: ...
    def login_data(self, name: str) -> dict: ...
    def is_reserved(self, name: str) -> bool: ...
    def reserve(self, name: str) -> None: ...
    def logged_in(self, name: str) -> None: ...
    def release(self, name: str) -> None: ...
    def in_group(self, user: Any) -> bool: ...
    def add_to_group(self, user: Any, db: Any, *, commit: bool = True) -> None: ...


RESULTS = (
    "ok",
    "preview",
    "confirm",
    "reused",
    "claimed",
    "bad_request",
    "unknown_course",
    "bad_signature",
    "rate_limited",
    "at_capacity",
    "not_ready",
    "waiting",
)
NOT_LAUNCHED = (
    "Nothing was started: only a person's browser opening this link launches the course "
    "(a browser navigation; see the link-preview rules in the URL contract)."
)
#: query parameters that are not launch options: the hub's ``next`` and the signature
NOT_OPTIONS = frozenset({"next"}) | LINK_PARAMS


def _counter() -> Counter:
    try:
        counter = Counter(
            "cnbi_tmplogin", "Requests to /hub/tmplogin by outcome", ["result"], registry=REGISTRY
        )
    except ValueError:  # this module was imported twice (e.g. reloaded): reuse the collector
        counter = cast(Counter, REGISTRY._names_to_collectors["cnbi_tmplogin_total"])
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


def _peer_address(request: Any) -> str:
    """The TCP peer (not ``remote_ip``: the hub runs tornado with ``xheaders=True``)."""
    address = getattr(getattr(request.connection, "context", None), "address", None)
    if isinstance(address, tuple) and address:
        return str(address[0])
    return "unix"


class TmpLoginHandler(BaseHandler):
    """``GET /hub/tmplogin``: see the module docstring (``HEAD`` previews, ``POST`` is the
    preview page's launch button)."""

    def initialize(self, tmplogin: TmpLoginAuth) -> None:
        self.tmplogin = tmplogin  # the authenticator that registered this handler
        self._poll = False

    async def get(self) -> None:
        await self._visit()

    async def head(self) -> None:
        await self._visit()

    async def post(self) -> None:
        await self._visit()

    async def _visit(self) -> None:
        auth = self.tmplogin
        self.set_header("Cache-Control", "no-store")
        client = client_key(
            self.request.headers.get("X-Forwarded-For"),
            _peer_address(self.request),
            auth.trusted_proxy_count,
        )
        started = time.monotonic()
        decision = classify(self.request.method or "GET", self.request.headers)
        if decision.visit is Visit.CONFIRM and auth.lobby.enabled and auth.lobby.place_of(self):
            decision = VisitDecision(Visit.LAUNCH, "waiting-room place")
        try:
            if not decision.launches:
                await self._preview(auth, decision, client)
                return
            result, url, who = await self._launch(auth, client)
        except Waiting as waiting:
            TMPLOGIN_TOTAL.labels(result="waiting").inc()
            if waiting.joined:
                self.log.info(  # lag: read this long after its arrival (an ingress stamp)
                    "tmplogin waiting place=%s %s client=%s lag=%.3fs",
                    waiting.place.id,
                    waiting.why,
                    client,
                    max(0.0, time.time() - waiting.place.arrived),
                )
            else:
                self._poll = True  # the waiting page again: a heartbeat, logged at DEBUG
            self.finish(auth.lobby.render(self, waiting.place, waiting.launch))
            return
        except LaunchError as error:
            result = result_for(error)
            TMPLOGIN_TOTAL.labels(result=result).inc()
            self.log.warning("tmplogin %s status=%d client=%s", result, error.status, client)
            raise LaunchRefused(error) from None
        TMPLOGIN_TOTAL.labels(result=result).inc()
        self.log.info("tmplogin %s %s client=%s", result, who, client)
        self.redirect(url)
        if result == "claimed":
            observe_claim(started)

    async def _plan(self, auth: TmpLoginAuth, *, anonymous: bool) -> Any:
        """Check the signature and plan the launch (pure): the plan, or None for no options."""
        query = self.request.query_arguments
        if auth.signing_key:
            verify_params(query, auth.signing_key, time.time(), max_ttl=auth.link_max_ttl)
        options: dict[str, Any] = {k: v for k, v in query.items() if k not in NOT_OPTIONS}
        if not options and auth.default_launch:
            options = {k: str(v) for k, v in auth.default_launch.items()}
        if not options:
            return None
        return plan_launch(
            options, await auth.ready_registry(), auth.launch_policy(), anonymous=anonymous
        )

    async def _summary(self, auth: TmpLoginAuth) -> dict[str, str] | None:
        """What a waiting browser's page names on a reload: this link's checked launch
        (None when it names none, or no longer passes its checks: the page just says less)."""
        try:
            plan = await self._plan(auth, anonymous=True)
        except LaunchError:
            return None
        return plan.summary() if plan is not None else None

    async def _preview(self, auth: TmpLoginAuth, decision: VisitDecision, client: str) -> None:
        """The link preview / one-button page; creates nothing (module docstring, step 0)."""
        plan = await self._plan(auth, anonymous=True)
        if plan is not None:
            image = plan.image
            page = preview_page(image.display_name, image.key, image.description, plan.notebook)
        else:
            page = preview_page("Start a notebook", "", "", None)
        result = "confirm" if decision.visit is Visit.CONFIRM else "preview"
        TMPLOGIN_TOTAL.labels(result=result).inc()
        self.log.info(
            "tmplogin %s reason=%s course=%s client=%s",
            result,
            decision.reason,
            page.course or "-",
            client,
        )
        self.set_header("X-Robots-Tag", "noindex, nofollow")
        if wants_json(self.request.headers.get("Accept", "")):  # a program: say so, in JSON
            self.set_header("Content-Type", "application/json; charset=UTF-8")
            body = {"status": 200, "launched": False, "reason": decision.reason}
            body.update(course=page.course, title=page.title, message=NOT_LAUNCHED)
            self.finish(json.dumps(body))
            return
        ns = dict(self.template_namespace)
        ns.update(
            preview=page,
            action=self.request.uri,  # the same link, escaped by the template
            xsrf=self.xsrf_token.decode("ascii"),
            no_spawner_check=True,
        )
        html = self.settings["jinja2_env_sync"].from_string(PAGE).render(**ns)
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(html)

    async def _launch(self, auth: TmpLoginAuth, client: str) -> tuple[str, str, str]:
        lobby = auth.lobby
        browser = lobby.enabled and not wants_json(self.request.headers.get("Accept", ""))
        place = lobby.place_of(self) if browser else None
        if place is not None:  # a reload (or the page's own reload) of a waiting browser
            lobby.tick(auth, self.settings)
            if not lobby.consume(place):
                raise Waiting(place, launch=await self._summary(auth))
            lobby.forget(self)  # admitted: its slot and login token were taken for it
        decision = auth.rate_limiter.check(client, hub_wide=False)
        if not decision.allowed:
            message = (
                "Too many launches from your network."
                if decision.scope == "client"
                else "The hub is handling too many launches right now."
            )
            raise Throttled(message, retry_after=decision.retry_after, status=429)

        key = auth.signing_key
        user = self.current_user
        named = user is not None and not auth.user_is_anonymous(user)
        as_self = named and auth.named_users_launch_as_self
        plan = await self._plan(auth, anonymous=not as_self)
        course = plan.user_options()["course"] if plan else "-"

        if as_self:  # a named user launches the course in their own server
            url = spawn_url(self.hub.base_url, plan.user_options() if plan else None)
            return "ok", url, f"user={user.name} course={course} named"

        if user is not None and auth.reuse_sessions:
            reuse = self._reuse_url(user, plan)
            if reuse:
                return "reused", reuse, f"user={user.name} course={course}"

        pool = PoolKey(plan.image.key, plan.size.name) if plan is not None else None
        wants = str(pool) if pool is not None and auth.claim_pool_servers else ""
        # a class reservation's seat (signed links only): past the line and the capacity
        reservation = self.get_query_argument(RESERVATION, "") if key else ""
        seat = None
        if reservation and pool is not None:  # one read of the reservation per launch
            seat = await auth.reservations.seat(reservation, pool.course, pool.size)
        if place is None and seat is None:  # nobody overtakes the waiting room, for a pool server
            self._wait_unless(lobby.check_line, auth, browser, f"course={course}", wants, plan)
        if plan is not None and pool is not None and auth.claim_pool_servers:  # no spawn gate
            claimed = claim_pool_server(self, auth, pool)
            if claimed is not None:  # one commit made it this learner's; no spawn needed
                auth.pool_starts.claimed()
                if seat is not None:  # a pool server needs no capacity: counted if one is left
                    await auth.reservations.take(seat, claimed.name)
                self.set_login_cookie(claimed)
                url = url_path_join(claimed.url, plan.default_url)
                return "claimed", url, f"user={claimed.name} course={course} pool"

        name = new_anonymous_name()
        seated = seat is not None and await auth.reservations.take(seat, name)  # before the user
        if place is None and not seated:
            self._wait_unless(lobby.gate, auth, browser, f"course={course}", wants, plan)
        new_user = await self._login_anonymous(auth, name)
        if plan is not None:
            options = plan.user_options()
            if key:  # bind the checked launch to this user (the spawner verifies it)
                options[TICKET] = launch_ticket(key, new_user.name, options)
            url = spawn_url(self.hub.base_url, options)
        else:  # the hub's own check of ?next= (same host, path only; "" when refused)
            url = self._validate_next_url(self.get_query_argument("next", "")) or spawn_url(
                self.hub.base_url, None
            )
        extra = f" reservation={reservation}" if seated else ""
        return "ok", url, f"user={new_user.name} course={course}{extra}"

    def _wait_unless(
        self,
        check: Callable[..., None],
        auth: TmpLoginAuth,
        browser: bool,
        what: str,
        wants: str,
        plan: LaunchPlan | None,
    ) -> None:
        """Run one of the lobby's checks for a newcomer (``check(auth, settings)`` raises
        ``Throttled``); a browser that must wait gets a place instead of the refusal."""
        lobby = auth.lobby
        lobby.tick(auth, self.settings)
        try:
            check(auth, self.settings)
        except Throttled as refusal:
            if not browser:
                raise
            try:
                place = lobby.join(self, wants)
            except RoomFull:
                raise refusal from None
            why = f"{what} reason={result_for(refusal)}"
            launch = plan.summary() if plan is not None else None
            raise Waiting(place, why=why, launch=launch) from None

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

    async def _login_anonymous(self, auth: TmpLoginAuth, name: str) -> Any:
        """Create the UUID user ``name`` (in the anonymous group) and set its cookie."""
        auth.reserve(name)
        try:
            user = await self.login_user(auth.login_data(name))
            if user is None:  # refused by blocked_users, username_pattern or a post_auth_hook
                raise LaunchError("Guest access is not allowed on this hub.", status=403)
            if not auth.manage_groups and not auth.in_group(user):  # e.g. a pre-existing name
                auth.add_to_group(user, self.db)
        except BaseException:
            auth.release(name)
            raise
        auth.logged_in(name)  # counted as on its way until its spawn begins
        return user

    def user_from_username(self, username: str) -> Any:
        """The hub's ``user_from_username``, plus the anonymous group for a user this handler
        minted, in the same SQLite commit as the user row (the default-role grant commits).

        A separate group update cost one more commit (an fsync) per login; and the session
        must never be left dirty across an ``await``: any other request finishing meanwhile
        rolls it back (the hub's ``BaseHandler.finish``), which also expires every ORM object
        the hub holds. So this runs in one synchronous stretch, like the hub's own.
        """
        auth = self.tmplogin
        if auth.manage_groups or not auth.is_reserved(username):
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

    def _log(self) -> None:
        """Tornado's per-request log hook: a waiting browser's reload at DEBUG, like a poll."""
        if self._poll:
            log_poll(self)
        else:
            super()._log()

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, LaunchRefused):
            return  # already logged as one line by get()
        super().log_exception(typ, value, tb)
