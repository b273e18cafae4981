"""Class reservations: the capacity arithmetic, pure (no I/O, the clock is an argument).

Policy:

- **Capacity** is counted in seats per size (resource package). A size's seats are
  configured (``ReservationSettings.seats``) or derived from the cluster's nodes: on each
  schedulable node the package's requests fit ``min(cpu // cpu_req, mem // mem_req,
  gpu // gpu_req)`` times (requests are the guarantees, else the limits; a node is used
  only if the package's ``node_selector`` matches and it tolerates the node's
  ``NoSchedule``/``NoExecute`` taints); the seats are the sum over nodes.
- Sizes share hardware: CPU sizes share the CPU nodes, GPU sizes the GPU nodes (two
  **capacity groups**). A booking of ``n`` seats of size ``s`` uses the fraction
  ``n / capacity(s)`` of its group in every hour it touches.
- **Available** seats of size ``s`` in an hour = ``floor((1 - walk_in_share - used) *
  capacity(s))``, where ``used`` is the sum of the fractions of the group's bookings in
  that hour: a share is always kept for walk-in learners without a reservation.
- **Hours** are UTC hour slots; a window occupies every slot it overlaps (a window
  ending at 10:00 does not occupy the 10:00 slot, so back-to-back bookings do not
  collide; one ending at 10:30 does). Times are stored in UTC; a calendar shows the
  days of a time zone, so a DST change day has 23 or 25 hour cells.
- A booking **fits** if every slot it touches has at least its seats available; one that
  does not is refused with the nearest windows of the same length (whole-hour shifts,
  earlier ones only if they still start in the future) that do.
- **Warming**: from ``start - lead_time`` until ``end`` a reservation asks the warm pool of
  its (course, size) for ``ceil(seats * share)`` servers minus the learners it already
  admitted; ``status.warmed`` is how many of them are ready (:func:`warmed`).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

from .errors import LaunchError
from .launch_grammar import RESERVATION
from .selection import ResourcePackage, parse_quantity

GROUP = "cnbi.meteor.zone"
VERSION = "v1alpha1"
PLURAL = "coursereservations"
KIND = "CourseReservation"
#: the launch-link parameter naming the reservation (covered by the link's signature)
LINK_PARAM = RESERVATION

SLOT = dt.timedelta(hours=1)
UTC = dt.UTC
NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?"
    r"([Zz]|[+-]\d{2}:\d{2})\Z"
)
MAX_NOTE = 500
_FIELDS = {"course", "size", "seats", "start", "end", "note"}


class ReservationError(LaunchError):
    """A reservation request that cannot be accepted (400 unless said otherwise)."""


class NoCapacity(ReservationError):
    """The booking does not fit (409); ``alternatives`` are windows that do."""

    status = 409

    def __init__(self, message: str, alternatives: Sequence[tuple[dt.datetime, dt.datetime]]):
        super().__init__(message)
        self.alternatives = list(alternatives)

    def to_json(self) -> dict:
        out = super().to_json()
        out["alternatives"] = [
            {"start": rfc3339(s), "end": rfc3339(e)} for s, e in self.alternatives
        ]
        return out


# --- times ------------------------------------------------------------------------------


def parse_time(value: object, what: str) -> dt.datetime:
    """An RFC 3339 timestamp with an offset (``Z`` or ``+01:00``) as an aware UTC datetime."""
    if not isinstance(value, str) or not _RFC3339.match(value.strip()):
        raise ReservationError(
            f"{what} must be an RFC 3339 time with a time zone offset, "
            f"e.g. 2026-03-02T09:00:00Z (got {str(value)[:40]!r})"
        )
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("z", "Z").replace("t", "T"))
    except ValueError:
        raise ReservationError(f"{what} is not a valid date and time: {value[:40]!r}") from None
    return parsed.astimezone(UTC).replace(microsecond=0)


def rfc3339(when: dt.datetime) -> str:
    """``when`` in UTC as ``YYYY-MM-DDTHH:MM:SSZ`` (how the CRD stores times)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def floor_hour(when: dt.datetime) -> dt.datetime:
    return when.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def hour_slots(start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """The UTC hour slots (their starts) that the window ``[start, end)`` overlaps."""
    out = []
    slot = floor_hour(start)
    while slot < end:
        out.append(slot)
        slot += SLOT
    return out


# --- data -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reservation:
    """One booking as the arithmetic sees it (times aware, UTC)."""

    name: str
    course: str
    size: str
    seats: int
    start: dt.datetime
    end: dt.datetime
    owner: str = ""
    note: str = ""
    admitted: int = 0
    admitted_users: tuple[str, ...] = ()
    warmed: int = 0  # status.warmed as last written

    def overlaps(self, slot: dt.datetime) -> bool:
        return self.start < slot + SLOT and self.end > slot

    def active(self, now: dt.datetime) -> bool:
        return self.start <= now < self.end


@dataclass(frozen=True)
class Capacity:
    """Seats per size, the capacity group of each size and the walk-in share."""

    seats: Mapping[str, int]
    groups: Mapping[str, str] = field(default_factory=dict)  # size -> "cpu" / "gpu"
    walk_in_share: Fraction = Fraction(0)

    def group(self, size: str) -> str:
        return self.groups.get(size, "cpu")


def capacity(
    packages: Mapping[str, ResourcePackage],
    configured: Mapping[str, int],
    nodes: Sequence[Mapping[str, Any]] = (),
    walk_in_share: float = 0.0,
) -> Capacity:
    """Seats of every size: configured ones as given, the others from ``nodes``."""
    if not 0 <= walk_in_share < 1:
        raise ValueError(f"walk_in_share must be in [0, 1), not {walk_in_share}")
    seats = {}
    for name, package in packages.items():
        if name in configured:
            seats[name] = max(0, int(configured[name]))
        else:
            seats[name] = sum(seats_on_node(node, package) for node in nodes)
    groups = {name: "gpu" if p.gpu else "cpu" for name, p in packages.items()}
    return Capacity(seats, groups, Fraction(str(walk_in_share)))


def _requests(package: ResourcePackage) -> dict[str, float]:
    """What one server of ``package`` asks the scheduler for (guarantee, else limit)."""
    out: dict[str, float] = {}
    cpu = package.cpu_guarantee if package.cpu_guarantee is not None else package.cpu_limit
    mem = package.mem_guarantee if package.mem_guarantee is not None else package.mem_limit
    if cpu:
        out["cpu"] = float(cpu)
    if mem:
        out["memory"] = float(mem)
    extra = {**package.extra_resource_limits, **package.extra_resource_guarantees}
    for name, amount in extra.items():
        value = parse_quantity(amount)
        if value > 0:
            out[name] = value
    return out


def _tolerates(package: ResourcePackage, taint: Mapping[str, Any]) -> bool:
    if taint.get("effect") not in ("NoSchedule", "NoExecute"):
        return True
    for tol in package.tolerations:
        if tol.get("effect") and tol.get("effect") != taint.get("effect"):
            continue
        if tol.get("operator") == "Exists" and tol.get("key") in (None, "", taint.get("key")):
            return True
        if tol.get("key") == taint.get("key") and tol.get("value") == taint.get("value"):
            return True
    return False


def seats_on_node(node: Mapping[str, Any], package: ResourcePackage) -> int:
    """How many servers of ``package`` fit on one node (a Kubernetes Node object as a dict)."""
    spec = node.get("spec") or {}
    meta = node.get("metadata") or {}
    if spec.get("unschedulable"):
        return 0
    labels = meta.get("labels") or {}
    if any(labels.get(k) != v for k, v in package.node_selector.items()):
        return 0
    if not all(_tolerates(package, t) for t in spec.get("taints") or ()):
        return 0
    requests = _requests(package)
    if not requests:
        return 0  # nothing to divide by: configure the size's seats instead
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    fits = []
    for resource, need in requests.items():
        try:
            have = parse_quantity(allocatable.get(resource, 0))
        except ValueError:
            return 0
        fits.append(math.floor(have / need + 1e-9))
    return max(0, min(fits))


# --- availability -----------------------------------------------------------------------


def used_share(
    cap: Capacity, size: str, slot: dt.datetime, bookings: Iterable[Reservation]
) -> Fraction:
    """The share of ``size``'s capacity group that the bookings use in ``slot``."""
    group = cap.group(size)
    used = Fraction(0)
    for r in bookings:
        if cap.group(r.size) != group or not r.overlaps(slot):
            continue
        total = cap.seats.get(r.size, 0)
        used += Fraction(r.seats, total) if total > 0 else Fraction(1)
    return used


def available(cap: Capacity, size: str, slot: dt.datetime, bookings: Iterable[Reservation]) -> int:
    """Seats of ``size`` still bookable in ``slot`` (never negative)."""
    total = cap.seats.get(size, 0)
    if total <= 0:
        return 0
    free = (1 - cap.walk_in_share - used_share(cap, size, slot, bookings)) * total
    return max(0, math.floor(free))


def booked(size: str, slot: dt.datetime, bookings: Iterable[Reservation]) -> int:
    """Seats of ``size`` booked in ``slot``."""
    return sum(r.seats for r in bookings if r.size == size and r.overlaps(slot))


def fits(request: Reservation, bookings: Sequence[Reservation], cap: Capacity) -> bool:
    """Does ``request`` fit next to ``bookings`` (itself excluded by name) in every slot?"""
    others = [b for b in bookings if b.name != request.name]
    return all(
        available(cap, request.size, slot, others) >= request.seats
        for slot in hour_slots(request.start, request.end)
    )


def nearest_windows(
    request: Reservation,
    bookings: Sequence[Reservation],
    cap: Capacity,
    now: dt.datetime,
    *,
    count: int = 3,
    horizon: dt.timedelta = dt.timedelta(days=14),
) -> list[tuple[dt.datetime, dt.datetime]]:
    """Up to ``count`` windows of the request's length, shifted by whole hours, that fit;
    nearest first (earlier before later at the same distance), none starting before ``now``."""
    out: list[tuple[dt.datetime, dt.datetime]] = []
    steps = int(horizon / SLOT)
    for k in range(1, steps + 1):
        for shift in (-k, k):
            delta = shift * SLOT
            start = request.start + delta
            if start < now:
                continue
            moved = Reservation(
                request.name,
                request.course,
                request.size,
                request.seats,
                start,
                request.end + delta,
            )
            if fits(moved, bookings, cap):
                out.append((moved.start, moved.end))
                if len(out) >= count:
                    return out
    return out


def check_fit(
    request: Reservation, bookings: Sequence[Reservation], cap: Capacity, now: dt.datetime
) -> None:
    """Raise :class:`NoCapacity` (409, with the nearest windows that fit) if it does not fit."""
    if cap.seats.get(request.size, 0) <= 0:
        raise ReservationError(f"size {request.size!r} has no bookable capacity", status=409)
    if fits(request, bookings, cap):
        return
    others = [b for b in bookings if b.name != request.name]
    short = min(
        available(cap, request.size, slot, others)
        for slot in hour_slots(request.start, request.end)
    )
    raise NoCapacity(
        f"{request.seats} seats of size {request.size!r} do not fit in that window "
        f"(at most {short} are free in its busiest hour)",
        nearest_windows(request, bookings, cap, now),
    )


# --- calendar ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One hour of the calendar: its UTC start, the local hour, and what is left."""

    start: dt.datetime
    local: dt.datetime
    available: int
    booked: int
    state: str  # "free" | "booked" | "full"


@dataclass(frozen=True)
class Day:
    date: dt.date
    cells: tuple[Cell, ...]


def week(
    cap: Capacity,
    size: str,
    bookings: Sequence[Reservation],
    first_day: dt.date,
    tz: str = "UTC",
    days: int = 7,
) -> list[Day]:
    """``days`` local days from ``first_day`` in ``tz``: one cell per real hour of each day
    (23 on the spring DST change, 25 in autumn), each a UTC hour slot."""
    zone = ZoneInfo(tz)
    out = []
    for i in range(days):
        date = first_day + dt.timedelta(days=i)
        begin = dt.datetime.combine(date, dt.time(), zone).astimezone(UTC)
        end = dt.datetime.combine(date + dt.timedelta(days=1), dt.time(), zone).astimezone(UTC)
        cells = []
        for slot in hour_slots(begin, end):
            free = available(cap, size, slot, bookings)
            taken = booked(size, slot, bookings)
            state = "full" if free == 0 else "booked" if taken else "free"
            cells.append(Cell(slot, slot.astimezone(zone), free, taken, state))
        out.append(Day(date, tuple(cells)))
    return out


# --- warming and admission --------------------------------------------------------------


def warms(r: Reservation, now: dt.datetime, lead_time: dt.timedelta) -> bool:
    """Does ``r`` warm its course's pool now (from ``start - lead_time`` until ``end``)?"""
    return r.start - lead_time <= now < r.end


def _ask(r: Reservation, share: float) -> int:
    return max(0, math.ceil(r.seats * share - 1e-9) - r.admitted)


def pool_boosts(
    bookings: Iterable[Reservation], now: dt.datetime, lead_time: dt.timedelta, share: float
) -> dict[tuple[str, str], int]:
    """``{(course, size): servers}`` the warm pool should hold for reservations now."""
    out: dict[tuple[str, str], int] = {}
    for r in bookings:
        if warms(r, now, lead_time):
            out[(r.course, r.size)] = out.get((r.course, r.size), 0) + _ask(r, share)
    return out


def warmed(
    bookings: Iterable[Reservation],
    ready: Mapping[tuple[str, str], int],
    now: dt.datetime,
    lead_time: dt.timedelta,
    share: float,
) -> dict[str, int]:
    """``{reservation name: ready pool servers warm for it}`` (``status.warmed``).

    While a reservation warms the pool, the ready servers of its (course, size) pool go to
    the warming reservations of that pool in start order, each up to what it asks the
    pool for (:func:`pool_boosts`); a reservation that does not warm now has 0.
    """
    left = dict(ready)
    out: dict[str, int] = {}
    for r in sorted(bookings, key=lambda r: (r.start, r.name)):
        if not warms(r, now, lead_time):
            out[r.name] = 0
            continue
        key = (r.course, r.size)
        out[r.name] = n = min(_ask(r, share), max(0, left.get(key, 0)))
        left[key] = left.get(key, 0) - n
    return out


def admits(r: Reservation, user: str, now: dt.datetime) -> bool:
    """May the reservation's link admit ``user`` now (in the window, a seat left, or the
    user was admitted already)?"""
    if not r.active(now):
        return False
    return user in r.admitted_users or r.admitted < r.seats


# --- requests ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """What one booking may ask for (``ReservationSettings``)."""

    max_seats: int = 500
    max_duration: dt.timedelta = dt.timedelta(hours=12)
    max_ahead: dt.timedelta = dt.timedelta(days=180)


def validate_request(
    body: object,
    *,
    name: str,
    owner: str,
    sizes: Iterable[str],
    now: dt.datetime,
    limits: Limits = Limits(),
) -> Reservation:
    """A booking from an untrusted JSON body, or :class:`ReservationError` (400) saying why.

    ``owner`` is the authenticated user; an ``owner`` field in the body is refused, like
    every unknown field. ``course`` is checked syntactically here; the caller resolves it.
    """
    if not isinstance(body, dict):
        raise ReservationError("the body must be a JSON object")
    unknown = sorted(str(k)[:40] for k in set(body) - _FIELDS)
    if unknown:
        raise ReservationError(
            f"unknown field(s) {unknown}; allowed: {sorted(_FIELDS)} "
            "(the owner is always the signed-in user)"
        )
    course = body.get("course")
    if not isinstance(course, str) or not course.strip() or len(course) > 253:
        raise ReservationError("course must be a course name (a non-empty string)")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:/-]*", course.strip()):
        raise ReservationError("course may contain letters, digits, '.', '_', ':', '/', '-' only")
    size = body.get("size")
    known = list(sizes)
    if not isinstance(size, str) or size not in known:
        raise ReservationError(f"size must be one of {known}")
    seats = body.get("seats")
    if isinstance(seats, str) and seats.strip().isdigit():
        seats = int(seats.strip())  # form posts
    if not isinstance(seats, int) or isinstance(seats, bool):
        raise ReservationError("seats must be a whole number")
    if not 1 <= seats <= limits.max_seats:
        raise ReservationError(f"seats must be between 1 and {limits.max_seats}")
    start = parse_time(body.get("start"), "start")
    end = parse_time(body.get("end"), "end")
    if end <= start:
        raise ReservationError("end must be after start")
    if end - start > limits.max_duration:
        raise ReservationError(f"a reservation lasts at most {limits.max_duration}")
    if end <= now:
        raise ReservationError("the window is over already")
    if start - now > limits.max_ahead:
        raise ReservationError(f"book at most {limits.max_ahead.days} days ahead")
    note = body.get("note", "")
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        raise ReservationError(f"note must be text of at most {MAX_NOTE} characters")
    if any(not ch.isprintable() and ch not in "\n\t" for ch in note):
        raise ReservationError("note contains control characters")
    return Reservation(name, course.strip(), size, seats, start, end, owner, note.strip())


# --- the custom resource ----------------------------------------------------------------


def to_resource(r: Reservation, namespace: str) -> dict:
    """The ``CourseReservation`` object for ``r``."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            "name": r.name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "cnbi-spawner"},
        },
        "spec": _spec(r),
    }


def _spec(r: Reservation) -> dict:
    return {
        "course": r.course,
        "size": r.size,
        "seats": r.seats,
        "start": rfc3339(r.start),
        "end": rfc3339(r.end),
        "owner": r.owner,
        "note": r.note,
    }


def from_resource(obj: Mapping[str, Any]) -> Reservation | None:
    """A stored ``CourseReservation`` as a :class:`Reservation`; None if it is malformed."""
    try:
        spec = obj["spec"]
        status = obj.get("status") or {}
        users = status.get("admittedUsers") or []
        return Reservation(
            name=str(obj["metadata"]["name"]),
            course=str(spec["course"]),
            size=str(spec["size"]),
            seats=int(spec["seats"]),
            start=parse_time(spec["start"], "start"),
            end=parse_time(spec["end"], "end"),
            owner=str(spec.get("owner", "")),
            note=str(spec.get("note", "")),
            admitted=int(status.get("admitted") or 0),
            admitted_users=tuple(str(u) for u in users),
            warmed=int(status.get("warmed") or 0),
        )
    except (KeyError, TypeError, ValueError, ReservationError):
        return None


def to_json(r: Reservation) -> dict:
    """The public view of one reservation (API)."""
    return {"name": r.name, **_spec(r), "admitted": r.admitted, "warmed": r.warmed}
