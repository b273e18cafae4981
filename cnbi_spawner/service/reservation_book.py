"""The service's class reservations: settings, the instructors' role and the book.

The book keeps ``CourseReservation`` objects in the service's namespace (Kubernetes is
the store, so bookings survive restarts), checks capacity with
:mod:`cnbi_spawner.reservations` and stores a booking through the capacity group's
ledger (:mod:`.reservation_ledger`: two bookings, in one process or in two, cannot both
take the last seats), writes ``status.warmed`` (the pool's ready servers for each
warming reservation), counts metrics and logs one line per booking, refusal and
cancellation. A cluster without the CourseReservation CRD is logged once; the API and
page answer 503 saying so, and the listing is retried every ``MISSING_RECHECK`` s until
the CRD appears (logged once too). The HTTP side is :mod:`.reservations`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from tornado import web
from traitlets import Bool, Dict, Float, Int, Unicode
from traitlets.config import Configurable

from .. import reservations as R
from .. import signing
from ..pause import pause
from ..selection import LaunchPolicy, plan_launch
from .reservation_ledger import BookingLedger

SCOPE = "custom:cnbi:reservations"
log = logging.getLogger("cnbi.reservations")
#: seconds between listings while the CourseReservation CRD is missing
MISSING_RECHECK = 600.0
CRD_FILE = "helm-values/crds/coursereservations.cnbi.meteor.zone.yaml"

#: ``c.JupyterHub.custom_scopes.update(CUSTOM_SCOPES)``
CUSTOM_SCOPES = {SCOPE: {"description": "Book seats of a course for a class (reservations)."}}


def instructor_role(
    groups: list[str] | tuple[str, ...] = ("instructors",),
    users: list[str] | tuple[str, ...] = (),
    service_name: str = "cnbi",
) -> dict:
    """A hub role (``c.JupyterHub.load_roles``) for instructors: reservations + the service.

    JupyterHub's ``admin`` role has no custom scopes and cannot be changed, so list the
    admins who should manage reservations in ``users`` (the production config passes
    ``c.Authenticator.admin_users``). Never grant it to the anonymous group: the API
    refuses anonymous users anyway.
    """
    return {
        "name": "cnbi-instructor",
        "description": "Instructors: book seats of a course for a class",
        "scopes": [SCOPE, f"access:services!service={service_name}"],
        "groups": list(groups),
        "users": list(users),
    }


class ReservationSettings(Configurable):
    """Class reservations (``c.ReservationSettings.*`` in the service config)."""

    seats = Dict(
        value_trait=Int(),
        help="""Bookable seats per size, e.g. {"small": 200, "gpu": 8}. A size not listed
        gets its seats from the cluster's nodes (allocatable CPU/memory/GPU divided by the
        size's requests; needs the optional ClusterRole in
        helm-values/rbac-reservations-nodes.yaml).""",
    ).tag(config=True)
    walk_in_share = Float(
        0.2,
        help="Share of every hour's capacity never booked, kept for learners without a "
        "reservation (0 <= share < 1).",
    ).tag(config=True)
    warm_pool = Bool(
        False,
        help="Warm the course's pool for a reservation (lead_time before its start until "
        "its end). Runs the pool manager even without PoolSettings.targets; the service "
        "then needs pool_role() in the hub's load_roles.",
    ).tag(config=True)
    lead_time = Float(
        900, help="Seconds before a reservation's start that its course's pool is warmed."
    ).tag(config=True)
    pool_share = Float(
        1.0,
        help="Share of a reservation's seats kept warm in the pool from start - lead_time "
        "to its end (1.0: every seat not yet taken).",
    ).tag(config=True)
    max_seats = Int(500, help="Most seats one reservation may book.").tag(config=True)
    max_hours = Float(12, help="Longest reservation window, in hours.").tag(config=True)
    max_days_ahead = Int(180, help="How far ahead a reservation may start, in days.").tag(
        config=True
    )
    timezone = Unicode(
        "UTC", help="Time zone of the calendar page (IANA name, e.g. Europe/Zurich)."
    ).tag(config=True)
    nodes_cache = Float(60, help="Seconds the cluster's node list is reused for capacity.").tag(
        config=True
    )
    refresh_every = Float(
        30,
        help="Seconds between listings of the reservations (bookings by other replicas or "
        "kubectl, the pool's warm targets) and writes of their status.warmed.",
    ).tag(config=True)

    def limits(self) -> R.Limits:
        return R.Limits(
            max_seats=self.max_seats,
            max_duration=dt.timedelta(hours=self.max_hours),
            max_ahead=dt.timedelta(days=self.max_days_ahead),
        )


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ReservationBook:
    """The service's reservations: the Kubernetes store, capacity and the clock."""

    def __init__(
        self,
        kube: Any,
        namespace: str,
        settings: ReservationSettings,
        policy: LaunchPolicy,
        *,
        registry: Any = None,
        metrics: Any = None,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.settings = settings
        self.policy = policy
        self.registry = registry
        self.metrics = metrics
        self.clock = clock
        self.lock = asyncio.Lock()  # this process's bookings one at a time (fewer conflicts)
        self.ledger = BookingLedger(kube, namespace)
        self.installed: bool | None = None  # the CRD is served (None: not listed yet)
        #: ``{(course, size): ready pool servers}`` from the warm pool (None: no pool)
        self.pool_ready: Callable[[], Mapping[tuple[str, str], int]] | None = None
        self._nodes: tuple[float, list[dict]] = (-1e9, [])
        self.cached: list[R.Reservation] = []  # the last listing, for the pool's targets

    @property
    def api(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.kube)

    async def fetch(self) -> list[R.Reservation]:
        try:
            listing = await self.api.list_namespaced_custom_object(
                R.GROUP, R.VERSION, self.namespace, R.PLURAL
            )
        except ApiException as exc:
            if exc.status == 404:  # the API does not serve the type: no CRD
                self._note_installed(False)
                raise web.HTTPError(
                    503,
                    f"class reservations are not installed: the cluster has no "
                    f"CourseReservation CRD (kubectl apply -f {CRD_FILE})",
                ) from None
            raise web.HTTPError(503, f"cannot list reservations ({exc.status})") from None
        self._note_installed(True)
        found = [R.from_resource(i) for i in listing.get("items") or () if isinstance(i, dict)]
        self.cached = sorted((r for r in found if r is not None), key=lambda r: r.start)
        self._observe()
        return self.cached

    def _note_installed(self, installed: bool) -> None:
        """Log a change of whether the CRD is served, once per change."""
        if installed == self.installed:
            return
        if not installed:
            log.warning(
                "Class reservations are off: namespace %s has no CourseReservation CRD "
                "(kubectl apply -f %s); checking again every %.0fs",
                self.namespace, CRD_FILE, MISSING_RECHECK,
            )  # fmt: skip
        elif self.installed is False:
            log.info("CourseReservation CRD found: class reservations are on")
        self.installed = installed

    async def get(self, name: str) -> R.Reservation:
        try:
            obj = await self.api.get_namespaced_custom_object(
                R.GROUP, R.VERSION, self.namespace, R.PLURAL, name
            )
        except ApiException as exc:
            if exc.status == 404:
                raise web.HTTPError(404, "no such reservation") from None
            raise web.HTTPError(503, f"cannot read the reservation ({exc.status})") from None
        found = R.from_resource(obj)
        if found is None:
            raise web.HTTPError(404, "no such reservation")
        return found

    async def capacity(self) -> R.Capacity:
        missing = set(self.policy.packages) - set(self.settings.seats)
        nodes = await self._list_nodes() if missing else []
        return R.capacity(
            self.policy.packages, self.settings.seats, nodes, self.settings.walk_in_share
        )

    async def _list_nodes(self) -> list[dict]:
        at, nodes = self._nodes
        if time.monotonic() - at < self.settings.nodes_cache:
            return nodes
        try:
            resp = await client.CoreV1Api(self.kube).list_node()
            nodes = [self.kube.sanitize_for_serialization(n) for n in resp.items or []]
        except ApiException as exc:
            log.warning("Cannot list nodes for capacity (%s); unconfigured sizes get 0", exc.status)
            nodes = []
        self._nodes = (time.monotonic(), nodes)
        return nodes

    def resolve(self, course: str, size: str) -> tuple[str, str]:
        """The course's registry key and the size, as a learner's link would get them."""
        if self.registry is None:
            raise web.HTTPError(503, "the image registry is not running")
        plan = plan_launch(
            {"course": course, "size": size}, self.registry, self.policy, anonymous=True
        )
        return plan.image.key, plan.size.name

    async def create(self, body: object, owner: str) -> R.Reservation:
        """Validate ``body`` for ``owner``, check the capacity and store the reservation."""
        now = self.clock()
        name = "resv-" + secrets.token_hex(5)
        request = R.validate_request(
            body,
            name=name,
            owner=owner,
            sizes=self.policy.packages,
            now=now,
            limits=self.settings.limits(),
        )
        course, size = self.resolve(request.course, request.size)
        request = R.Reservation(
            name, course, size, request.seats, request.start, request.end, owner, request.note
        )
        async with self.lock:
            cap = await self.capacity()

            async def check() -> None:  # under the ledger version just read
                bookings = [r for r in await self.fetch() if r.end > now]
                try:
                    R.check_fit(request, bookings, cap, now)
                except R.ReservationError:
                    self._count("refused")
                    log.info(
                        "reservation refused: %s seats of %s/%s for %s, no capacity",
                        request.seats, course, size, owner,
                    )  # fmt: skip
                    raise

            await self.ledger.book(request, cap.group(size), check, self.clock)
            self.cached = sorted([*self.cached, request], key=lambda r: r.start)
        self._count("booked")
        self._observe()
        log.info(
            "reservation %s: booked by %s, %s seats of %s/%s, %s to %s",
            name, owner, request.seats, course, size,
            R.rfc3339(request.start), R.rfc3339(request.end),
        )  # fmt: skip
        return request

    async def delete(self, r: R.Reservation, by: str) -> None:
        try:
            await self.api.delete_namespaced_custom_object(
                R.GROUP, R.VERSION, self.namespace, R.PLURAL, r.name
            )
        except ApiException as exc:
            if exc.status != 404:
                raise web.HTTPError(503, f"cannot cancel the reservation ({exc.status})") from None
        self.cached = [c for c in self.cached if c.name != r.name]
        self._observe()
        log.info("reservation %s: cancelled by %s (%s, owner %s)", r.name, by, r.course, r.owner)

    def pool_targets(self) -> dict[str, dict[str, int]]:
        """``{course: {size: servers}}`` the warm pool should hold now (PoolManager's
        extra target source); from the last listing, refreshed by :meth:`run`."""
        boosts = R.pool_boosts(
            self.cached,
            self.clock(),
            dt.timedelta(seconds=self.settings.lead_time),
            self.settings.pool_share,
        )
        out: dict[str, dict[str, int]] = {}
        for (course, size), n in boosts.items():
            out.setdefault(course, {})[size] = n
        return out

    async def write_warmed(self) -> None:
        """Write ``status.warmed`` of every listed reservation whose count changed (a merge
        patch of that field alone: the hub's admissions write the rest of the status)."""
        if self.pool_ready is None:
            return
        counts = R.warmed(
            self.cached,
            self.pool_ready(),
            self.clock(),
            dt.timedelta(seconds=self.settings.lead_time),
            self.settings.pool_share,
        )
        for r in self.cached:
            n = counts.get(r.name, 0)
            if n == r.warmed:
                continue
            try:
                await self.api.patch_namespaced_custom_object_status(
                    R.GROUP, R.VERSION, self.namespace, R.PLURAL, r.name,
                    {"status": {"warmed": n}},  # a merge patch: this field alone
                    _content_type="application/merge-patch+json",  # type: ignore[call-arg]
                )  # fmt: skip
            except ApiException as exc:
                if exc.status != 404:  # 404: cancelled meanwhile
                    log.warning("reservation %s: cannot write warmed (%s)", r.name, exc.status)
                continue
            log.info("reservation %s: %d pool servers warm for %s", r.name, n, r.course)

    async def run(self, stop: asyncio.Event) -> None:
        """List the reservations (other replicas, kubectl edits) and write their warmed
        counts every ``refresh_every`` seconds; every ``MISSING_RECHECK`` s without a CRD."""
        while not stop.is_set():
            every = self.settings.refresh_every
            try:
                await self.fetch()
                await self.write_warmed()
            except web.HTTPError as exc:
                if self.installed is False:
                    every = max(every, MISSING_RECHECK)  # logged once by fetch
                else:
                    log.warning("Reservations listing failed: %s", exc.log_message)
            await pause(every, until=stop)

    def launch_url(self, r: R.Reservation, hub_url: str, key: bytes) -> str:
        """The class's launch link: signed, carries the reservation, valid until its end."""
        params = {"course": r.course, "size": r.size, R.LINK_PARAM: r.name}
        if key:
            params = signing.sign_params(params, key, int(r.end.timestamp()))
        return signing.launch_link(hub_url, params)

    def _count(self, outcome: str) -> None:
        counter = getattr(self.metrics, "reservation_requests", None)
        if counter is not None:
            counter.labels(outcome=outcome).inc()

    def _observe(self) -> None:
        gauge = getattr(self.metrics, "reserved_seats", None)
        if gauge is None:
            return
        now = self.clock()
        for size in self.policy.packages:
            upcoming = sum(r.seats for r in self.cached if r.size == size and r.end > now)
            gauge.labels(size=size).set(upcoming)
