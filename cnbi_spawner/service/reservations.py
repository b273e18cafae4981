"""Reservations API and page of the ``cnbi`` service: instructors book seats of a course.

Routes (under the service prefix, e.g. ``/services/cnbi/``):

- ``POST api/reservations`` (JSON: course, size, seats, start, end, note) -> 201 +
  reservation with its launch link; 400 for a bad field, 409 (with ``alternatives``: the
  nearest windows that fit) when the seats are not free
- ``GET api/reservations`` -> own reservations (admins: ``?all=1`` everybody's)
- ``GET api/reservations/{name}`` -> one (owner or admin; others 404)
- ``DELETE api/reservations/{name}`` -> 204 (owner or admin; others 404)
- ``GET api/reservations/calendar?size=&week=YYYY-MM-DD&tz=`` -> the week grid
- page ``reservations``: week view per size (free / booked / full), the booking form
  (XSRF-checked POST) and the caller's reservations with their launch links

Access: the hub scope ``custom:cnbi:reservations`` (the instructors group and, by name,
the admins, see :func:`instructor_role`); anonymous learners are refused even if a role
gave them the scope. The owner is always the authenticated user. Kubernetes is the store
(``CourseReservation`` objects in the service's namespace); the arithmetic is
:mod:`cnbi_spawner.reservations`; bookings are ordered across service processes by
:mod:`.reservation_ledger`, so two bookings cannot both take the last seats. One log
line per booking and cancellation.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from zoneinfo import ZoneInfo

from tornado import web

from .. import reservations as R
from ..errors import LaunchError
from .context import JSONAPIMixin, ScopedHandler
from .reservation_book import SCOPE, ReservationBook

NAME = r"([a-z0-9][a-z0-9-]{0,62})"


class _ReservationsBase(ScopedHandler):
    hub_scopes = {SCOPE}
    guest_refusal = "anonymous users cannot book classes"

    @property
    def book(self) -> ReservationBook:
        book = getattr(self.ctx, "reservations", None)
        if book is None:
            raise web.HTTPError(503, "reservations need the Kubernetes API")
        return book

    async def visible(self, name: str) -> R.Reservation:
        """The reservation if the caller owns it or is an admin; 404 otherwise."""
        r = await self.book.get(name)
        if r.owner != self.user_name and not self.is_admin:
            raise web.HTTPError(404, "no such reservation")
        return r

    def view(self, r: R.Reservation) -> dict:
        out = R.to_json(r)
        out["launch_url"] = self.book.launch_url(r, self.hub_public_url(), self.ctx.links.key_bytes)
        return out

    def calendar(self, cap: R.Capacity, bookings: list[R.Reservation]) -> dict:
        """The week grid per size for ``?week=YYYY-MM-DD`` (default: this week) and ``?tz=``."""
        tz = self.get_argument("tz", self.book.settings.timezone)[:64]
        try:
            zone = ZoneInfo(tz)
        except (ValueError, KeyError, OSError):
            raise LaunchError(f"unknown time zone {tz[:64]!r}") from None
        week_arg = self.get_argument("week", "")[:10]
        try:
            first = dt.date.fromisoformat(week_arg) if week_arg else None
        except ValueError:
            raise LaunchError("week must be a date, YYYY-MM-DD") from None
        if first is None:
            today = self.book.clock().astimezone(zone).date()
            first = today - dt.timedelta(days=today.weekday())
        sizes = [self.get_argument("size")] if self.get_argument("size", "") else list(cap.seats)
        unknown = [s for s in sizes if s not in cap.seats]
        if unknown:
            raise LaunchError(f"size must be one of {list(cap.seats)}")
        return {
            "tz": tz,
            "week": first.isoformat(),
            "sizes": {
                size: {
                    "capacity": cap.seats[size],
                    "days": [
                        {
                            "date": d.date.isoformat(),
                            "hours": [
                                {
                                    "start": R.rfc3339(c.start),
                                    "local": c.local.strftime("%H:%M"),
                                    "available": c.available,
                                    "booked": c.booked,
                                    "state": c.state,
                                }
                                for c in d.cells
                            ],
                        }
                        for d in R.week(cap, size, bookings, first, tz)
                    ],
                }
                for size in sizes
            },
        }


class _APIBase(JSONAPIMixin, _ReservationsBase):
    login_refusal = "a hub token or login with the reservations scope is required"


def _json_body(raw: bytes, ctype: str) -> object:
    if ctype not in ("application/json", ""):
        raise LaunchError("send the reservation as application/json", status=415)
    if len(raw) > 16 * 1024:
        raise LaunchError("the body is too large", status=413)
    try:
        return json.loads(raw or b"null")
    except ValueError:
        raise LaunchError("the body is not valid JSON") from None


class ReservationsAPIHandler(_APIBase):
    @web.authenticated
    async def get(self) -> None:
        everything = self.is_admin and self.get_argument("all", "") in ("1", "true")
        found = await self.book.fetch()
        if not everything:
            found = [r for r in found if r.owner == self.user_name]
        self.write_json({"reservations": [self.view(r) for r in found]})

    @web.authenticated
    async def post(self) -> None:
        ctype = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        created = await self.book.create(_json_body(self.request.body, ctype), self.user_name)
        self.set_header("Location", f"{self.ctx.prefix}api/reservations/{created.name}")
        self.write_json(self.view(created), 201)


class ReservationAPIHandler(_APIBase):
    @web.authenticated
    async def get(self, name: str) -> None:
        self.write_json(self.view(await self.visible(name)))

    @web.authenticated
    async def delete(self, name: str) -> None:
        await self.book.delete(await self.visible(name), self.user_name)
        self.set_status(204)
        self.finish()


class CalendarAPIHandler(_APIBase):
    @web.authenticated
    async def get(self) -> None:
        bookings = await self.book.fetch()
        self.write_json(self.calendar(await self.book.capacity(), bookings))


FORM_FIELDS = ("course", "size", "seats", "start", "end", "note")


class ReservationsPageHandler(_ReservationsBase):
    """The calendar, the booking form (POST, XSRF-checked) and the caller's bookings."""

    async def _render(self, status: int = 200, **ns: Any) -> None:
        bookings = await self.book.fetch()
        mine = [self.view(r) for r in bookings if r.owner == self.user_name]
        try:
            grid = self.calendar(await self.book.capacity(), bookings)
        except LaunchError as exc:
            raise web.HTTPError(exc.status, exc.message) from None
        self.set_status(status)
        self.set_header("Cache-Control", "no-store")
        ns.setdefault("form", {})
        ns.setdefault("message", "")
        ns.setdefault("alternatives", [])
        ns.setdefault("created", None)
        self.finish(
            self.ctx.render(
                "reservations.html",
                handler=self,
                grid=grid,
                mine=mine,
                sizes=list(self.book.policy.packages),
                **ns,
            )  # fmt: skip
        )

    @web.authenticated
    async def get(self) -> None:
        await self._render()

    @web.authenticated
    async def post(self) -> None:
        if self.get_body_argument("action", "") == "cancel":
            r = await self.visible(self.get_body_argument("name", "")[:63])
            await self.book.delete(r, self.user_name)
            self.redirect(f"{self.ctx.prefix}reservations")
            return
        form = {k: self.get_body_argument(k, "")[:600] for k in FORM_FIELDS}
        body: dict[str, object] = {k: v for k, v in form.items() if v or k != "note"}
        try:
            created = await self.book.create(body, self.user_name)
        except LaunchError as exc:
            alternatives = exc.to_json().get("alternatives", [])
            await self._render(
                exc.status, form=form, message=exc.message, alternatives=alternatives
            )
            return
        await self._render(201, created=self.view(created))


def handlers(prefix: str) -> list:
    """Tornado URL specs of the reservations API and page under ``prefix`` (ends with /)."""
    p = prefix
    return [
        (p + "api/reservations", ReservationsAPIHandler),
        (p + "api/reservations/calendar", CalendarAPIHandler),
        (p + f"api/reservations/{NAME}", ReservationAPIHandler),
        (p + "reservations", ReservationsPageHandler),
    ]
