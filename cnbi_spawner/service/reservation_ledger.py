"""Bookings that cannot double-book across service processes: a ledger in Kubernetes.

Policy: the bookings of one capacity group (CPU sizes, GPU sizes: they share hardware,
see :mod:`cnbi_spawner.reservations`) are ordered by one ConfigMap per group,
``cnbi-reservations-<group>``, by optimistic concurrency on its ``resourceVersion``.
No lock is held and nothing expires; a booking:

1. reads the ledger (creates it when missing) and remembers its ``resourceVersion``;
2. lists the reservations and checks that the new one fits;
3. creates its ``CourseReservation``;
4. commits: updates the ledger conditionally on the ``resourceVersion`` of step 1.

If another booking of the group committed in between, step 4 gets 409: the reservation
of step 3 is deleted again and the booking starts over from step 1 (up to
``COMMIT_TRIES`` times, then 503). Why that is safe: a booking that read the ledger
after another's commit lists that other's reservation (created before its commit), and
of two bookings that read the same ledger version only the first to commit stays.
A reservation is handed out (201, its link) only once committed. A losing reservation
exists for a moment between its create and its delete; bookings that list it meanwhile
count it, so they may refuse a booking that would have fit, never accept one that does
not. A service that dies between steps 3 and 4 leaves a real, listed reservation (its
owner sees and may cancel it). ``kubectl`` edits bypass the ledger (operators' call).

RBAC (helm-values/rbac-reservations.yaml): ``create`` configmaps, ``get``/``update`` of
the ledger ConfigMaps by name. The capacity check itself is the caller's (a callback):
this module owns only the ordering.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from tornado import web

from .. import reservations as R

log = logging.getLogger("cnbi.reservations")

COMMIT_TRIES = 8
LEDGER_PREFIX = "cnbi-reservations-"


def ledger_name(group: str) -> str:
    """The ConfigMap that orders the bookings of capacity group ``group``."""
    return LEDGER_PREFIX + group


class BookingLedger:
    """Commits bookings through the group's ledger ConfigMap (see the module docstring)."""

    def __init__(self, kube: Any, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.conflicts = 0  # commits that lost to another booking (and started over)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.kube)

    @property
    def objects(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.kube)

    async def book(
        self,
        request: R.Reservation,
        group: str,
        check: Callable[[], Awaitable[None]],
        clock: Callable[[], dt.datetime],
    ) -> None:
        """Store ``request`` once ``check()`` (list + capacity; raises to refuse) passed
        under a ledger version that nobody else committed on meanwhile."""
        for _ in range(COMMIT_TRIES):
            ledger = await self._read(group)
            await check()
            await self._create(request)
            if await self._commit(ledger, request, clock()):
                return
            self.conflicts += 1
            log.info(
                "reservation %s: another booking of the %s sizes came first; checking again",
                request.name, group,
            )  # fmt: skip
            await self._delete(request.name)
        raise web.HTTPError(503, "too many bookings at once; try again")

    async def _read(self, group: str) -> client.V1ConfigMap:
        name = ledger_name(group)
        try:
            return await self.core.read_namespaced_config_map(name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise web.HTTPError(503, f"cannot read the booking ledger ({exc.status})") from None
        body = client.V1ConfigMap(
            metadata=client.V1ObjectMeta(
                name=name,
                namespace=self.namespace,
                labels={"app.kubernetes.io/part-of": "cnbi-spawner"},
            ),
            data={"group": group, "commits": "0"},
        )
        try:
            return await self.core.create_namespaced_config_map(self.namespace, body)
        except ApiException as exc:
            if exc.status == 409:  # another booking created it meanwhile
                return await self._read(group)
            raise web.HTTPError(503, f"cannot create the booking ledger ({exc.status})") from None

    async def _create(self, request: R.Reservation) -> None:
        try:
            await self.objects.create_namespaced_custom_object(
                R.GROUP, R.VERSION, self.namespace, R.PLURAL,
                R.to_resource(request, self.namespace),
            )  # fmt: skip
        except ApiException as exc:
            raise web.HTTPError(503, f"cannot store the reservation ({exc.status})") from None

    async def _commit(
        self, ledger: client.V1ConfigMap, request: R.Reservation, now: dt.datetime
    ) -> bool:
        data = dict(ledger.data or {})
        try:
            commits = int(data.get("commits", "0"))
        except ValueError:
            commits = 0
        data.update(commits=str(commits + 1), last=request.name, at=R.rfc3339(now))
        ledger.data = data  # its metadata keeps the resourceVersion read first: conditional
        try:
            await self.core.replace_namespaced_config_map(
                ledger.metadata.name, self.namespace, ledger
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            await self._delete(request.name)
            raise web.HTTPError(503, f"cannot commit the booking ({exc.status})") from None
        return True

    async def _delete(self, name: str) -> None:
        try:
            await self.objects.delete_namespaced_custom_object(
                R.GROUP, R.VERSION, self.namespace, R.PLURAL, name
            )
        except ApiException as exc:
            if exc.status != 404:
                log.error("reservation %s: lost a booking race, not deleted (%s)", name, exc.status)
