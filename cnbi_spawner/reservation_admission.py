"""Hub side of class reservations: a reservation's link admits up to ``seats`` learners.

Policy: a launch link carrying ``reservation=<name>`` (under the link's signature; links
of a hub without a signing key never admit by reservation) is admitted past the hub's
general capacity (``max_anonymous_users``, the spawn limit, the waiting room) when the
``CourseReservation`` exists, is for the launch's course and size, its window is open
and it has a seat left (:func:`cnbi_spawner.reservations.admits`). Otherwise the launch
takes the normal path (it may wait or be refused like any other).

The seat is counted durably before anything is created for the learner: the user's name
is added to the reservation's ``status.admittedUsers`` (and ``status.admitted``) with a
conditional update of the status subresource (the object's ``resourceVersion``; a
conflict re-reads and decides again), so concurrent launches never take more than
``seats`` and the count survives hub and service restarts. A launch reads the object
once (:meth:`ReservationAdmission.seat`) and counts with that read
(:meth:`ReservationAdmission.take`): one GET and one update unless launches collide.
Needs ``get`` and ``update`` on ``coursereservations/status``
(helm-values/rbac-reservations.yaml).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client import REGISTRY, Counter
from traitlets import Unicode, default
from traitlets.config import LoggingConfigurable

from . import reservations as R
from .kube import make_api_client

log = logging.getLogger("cnbi.reservations")
CONFLICT_RETRIES = 8
#: in the hub's registry (``/hub/metrics``)
ADMISSIONS = Counter(
    "cnbi_reservation_admissions",
    "Launches through a reservation's link: admitted (seat counted), refused (no seat left, "
    "window closed, not for this course/size, unknown reservation: the normal path)",
    ["outcome"],
    registry=REGISTRY,
)


@dataclass(frozen=True)
class Seat:
    """A reservation, as read once, whose link admits a learner now."""

    name: str
    obj: dict  # the CourseReservation as read (its resourceVersion makes the update conditional)
    reservation: R.Reservation


class ReservationAdmission(LoggingConfigurable):
    """Where the hub finds reservations (``c.ReservationAdmission.*``)."""

    namespace = Unicode(
        help="Namespace of the CourseReservation objects: the cnbi service's "
        "(default: $CNBI_NAMESPACE, $POD_NAMESPACE, else 'default')."
    ).tag(config=True)

    @default("namespace")
    def _namespace_default(self) -> str:
        return os.environ.get("CNBI_NAMESPACE") or os.environ.get("POD_NAMESPACE") or "default"

    kubeconfig = Unicode(
        "", help="kubeconfig file for reading reservations ('': in-cluster, else $KUBECONFIG)."
    ).tag(config=True)

    def __init__(self, clock: Callable[[], dt.datetime] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._api: client.ApiClient | None = None

    async def _objects(self) -> client.CustomObjectsApi:
        if self._api is None:
            self._api = await make_api_client(self.kubeconfig or None)
        return client.CustomObjectsApi(self._api)

    async def seat(self, name: str, course: str, size: str) -> Seat | None:
        """Read reservation ``name`` once: a :class:`Seat` if its link admits a new learner
        of this course and size now (window open, a seat left), else None (normal path)."""
        seat = await self._read(name, course, size)
        if seat is None:
            ADMISSIONS.labels(outcome="refused").inc()
        return seat

    async def take(self, seat: Seat, user: str) -> bool:
        """Count ``user``'s seat (a new or claimed learner) in the reservation's status: one
        conditional update with the resourceVersion :meth:`seat` read; only a conflict (a
        concurrent admission) reads it again and decides again. True when counted."""
        for _ in range(CONFLICT_RETRIES):
            if user in seat.reservation.admitted_users:
                ADMISSIONS.labels(outcome="admitted").inc()
                return True
            found = seat.reservation
            status = dict(seat.obj.get("status") or {})
            status["admittedUsers"] = [*found.admitted_users, user]
            status["admitted"] = found.admitted + 1
            obj = {**seat.obj, "status": status}
            api = await self._objects()
            try:
                await api.replace_namespaced_custom_object_status(*self._args(seat.name), obj)
            except ApiException as exc:
                if exc.status != 409:
                    log.warning("reservation %s: cannot count the seat (%s)", seat.name, exc.status)
                    break
                again = await self._read(seat.name, found.course, found.size, user)
                if again is None:  # the last seat went meanwhile, or the window closed
                    break
                seat = again
                continue
            ADMISSIONS.labels(outcome="admitted").inc()
            log.info(
                "reservation %s: admitted user=%s course=%s (%d/%d)",
                seat.name, user, found.course, found.admitted + 1, found.seats,
            )  # fmt: skip
            return True
        else:
            log.warning("reservation %s: too many concurrent admissions, normal launch", seat.name)
        ADMISSIONS.labels(outcome="refused").inc()
        return False

    def _args(self, name: str) -> tuple[str, str, str, str, str]:
        return (R.GROUP, R.VERSION, self.namespace, R.PLURAL, name)

    async def _read(self, name: str, course: str, size: str, user: str = "") -> Seat | None:
        if not R.NAME_RE.match(name):
            return None
        api = await self._objects()
        try:
            obj = await api.get_namespaced_custom_object(*self._args(name))
        except ApiException as exc:
            if exc.status != 404:
                log.warning("reservation %s: cannot read it (%s)", name, exc.status)
            return None
        found = R.from_resource(obj)
        if found is None or (found.course, found.size) != (course, size):
            log.info("reservation %s: not for %s/%s, normal launch", name, course, size)
            return None
        if not R.admits(found, user, self.clock()):
            log.info(
                "reservation %s: %s not admitted (%d/%d seats, window %s to %s)",
                name, user or "a new learner", found.admitted, found.seats,
                R.rfc3339(found.start), R.rfc3339(found.end),
            )  # fmt: skip
            return None
        return Seat(name, obj, found)
