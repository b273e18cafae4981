"""The warm pool's rules: pure decisions about pre-started course servers (no I/O).

Policy
------
A **pool** holds ready servers for one ``(course image key, size)``: anonymous hub users
(UUID names) in the hub group :data:`POOL_GROUP` whose default server runs that course
with that size. The ``cnbi`` service keeps every pool at its target
(:func:`plan_pool`, acted on by :mod:`cnbi_spawner.service.pool`); ``/tmplogin`` hands a
ready one to a learner whose validated launch is exactly that course and size
(:func:`pick_server`, acted on by :mod:`cnbi_spawner.claim`).

What :func:`plan_pool` decides, every pass, from what exists:

1. **Drain** (stop the server, delete the user) a pool member whose server is neither
   running nor starting (``broken``: a failed or stopped start), whose pool has no target
   any more (``no-target``), whose course is gone from the registry or may no longer be
   launched (``course-gone``), whose pod runs another image than the course's current one
   (``digest-changed``: the ImageStream tag moved), or that is one too many for its
   target (``over-target``; starting ones go first, ready ones are the pool's value).
2. **Start** as many new members as each pool lacks, counting members still starting,
   never more than ``max_starts`` starts in flight over all pools (the hub's spawn limit
   and the cluster are shared with learners), the pool furthest below target first. A pool
   whose starts keep failing is ``paused`` (no starts) for a back-off that doubles with
   each failure in a row (:func:`backoff_seconds`), so a broken course image does not make
   the pool spawn and fail in a loop.

A member is claimed when it leaves :data:`POOL_GROUP` (the hub moves it to the anonymous
group in one database commit); from then on it is an ordinary anonymous learner and no
rule here touches it. Unclaimed members are never culled (``cull_policy``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

T = TypeVar("T")

#: hub group of unclaimed pool servers' users; leaving it is what "claimed" means
POOL_GROUP = "cnbi-pool"


@dataclass(frozen=True, order=True, slots=True)
class PoolKey:
    """Which pool: the course image's exact registry key and the size name."""

    course: str
    size: str

    def __str__(self) -> str:
        return f"{self.course}/{self.size}"

    def user_options(self) -> dict[str, str]:
        """The options a pool server is started with (no notebook: any link may claim it)."""
        return {"course": self.course, "size": self.size}


class MemberState(StrEnum):
    STARTING = "starting"
    READY = "ready"
    BROKEN = "broken"  # no server running or starting (a failed start, a stopped server)
    STOPPING = "stopping"


@dataclass(frozen=True, slots=True)
class PoolMember:
    """One unclaimed pool user as the hub and the cluster report it."""

    name: str
    key: PoolKey | None  # None: its stored options name no course/size (not ours to keep)
    state: MemberState
    image: str | None = None  # what its pod runs (``None``: no pod seen yet)


class DrainReason(StrEnum):
    NO_TARGET = "no-target"
    COURSE_GONE = "course-gone"
    DIGEST_CHANGED = "digest-changed"
    BROKEN = "broken"
    OVER_TARGET = "over-target"


@dataclass(frozen=True, slots=True)
class Drain:
    name: str
    key: PoolKey | None
    reason: DrainReason


@dataclass(frozen=True, slots=True)
class PoolPlan:
    """What one pass does: servers to start per pool, members to drain."""

    start: dict[PoolKey, int] = field(default_factory=dict)
    drain: tuple[Drain, ...] = ()


@dataclass(frozen=True, slots=True)
class PoolCount:
    """A pool's state for gauges and the catalog."""

    target: int = 0
    ready: int = 0
    starting: int = 0


def plan_pool(
    targets: Mapping[PoolKey, int],
    members: Iterable[PoolMember],
    current_images: Mapping[str, str | None],
    *,
    max_starts: int,
    paused: Iterable[PoolKey] = (),
) -> PoolPlan:
    """Decide one pass (see the module docstring).

    ``current_images`` maps a course key to the image a *new* server of it would run,
    ``None`` when the course is gone or not launchable; a pool whose course maps to
    ``None`` (or is missing) gets no starts.
    """
    drains: list[Drain] = []
    kept: dict[PoolKey, list[PoolMember]] = {}
    in_flight = 0
    for m in sorted(members, key=lambda m: m.name):
        if m.state is MemberState.STOPPING:
            continue  # the hub is stopping it already; counts for nothing
        if m.state is MemberState.BROKEN:
            drains.append(Drain(m.name, m.key, DrainReason.BROKEN))
            continue
        if m.key is None or targets.get(m.key, 0) <= 0:
            drains.append(Drain(m.name, m.key, DrainReason.NO_TARGET))
            continue
        current = current_images.get(m.key.course)
        if current is None:
            drains.append(Drain(m.name, m.key, DrainReason.COURSE_GONE))
        elif m.image is not None and m.image != current:
            drains.append(Drain(m.name, m.key, DrainReason.DIGEST_CHANGED))
        else:
            kept.setdefault(m.key, []).append(m)
            in_flight += m.state is MemberState.STARTING

    for key, live in kept.items():
        extra = len(live) - targets[key]
        if extra > 0:  # starting ones first: the ready ones are what learners get
            order = sorted(live, key=lambda m: m.state is MemberState.READY)
            for m in order[:extra]:
                drains.append(Drain(m.name, key, DrainReason.OVER_TARGET))
                in_flight -= m.state is MemberState.STARTING

    budget = max(0, max_starts - in_flight)
    held = set(paused)
    missing = {
        key: target - len(kept.get(key, ()))
        for key, target in targets.items()
        if target > 0 and current_images.get(key.course) is not None and key not in held
    }
    start: dict[PoolKey, int] = {}
    # round-robin, furthest below target first: one course's burst cannot starve another
    while budget > 0 and any(n > 0 for n in missing.values()):
        for key in sorted(missing, key=lambda k: (-missing[k], k)):
            if budget == 0 or missing[key] <= 0:
                continue
            start[key] = start.get(key, 0) + 1
            missing[key] -= 1
            budget -= 1
    return PoolPlan(start=start, drain=tuple(drains))


def backoff_seconds(failures_in_a_row: int, *, base: float = 5.0, cap: float = 300.0) -> float:
    """How long a pool makes no new starts after this many failed starts in a row."""
    if failures_in_a_row <= 0:
        return 0.0
    return min(cap, base * 2 ** (failures_in_a_row - 1))


def count_pools(
    targets: Mapping[PoolKey, int], members: Iterable[PoolMember]
) -> dict[PoolKey, PoolCount]:
    """Target, ready and starting members per pool (every targeted pool, plus strays)."""
    ready: dict[PoolKey, int] = {}
    starting: dict[PoolKey, int] = {}
    for m in members:
        if m.key is None:
            continue
        if m.state is MemberState.READY:
            ready[m.key] = ready.get(m.key, 0) + 1
        elif m.state is MemberState.STARTING:
            starting[m.key] = starting.get(m.key, 0) + 1
    keys = set(targets) | set(ready) | set(starting)
    return {
        k: PoolCount(targets.get(k, 0), ready.get(k, 0), starting.get(k, 0)) for k in sorted(keys)
    }


def member_key(options: object) -> PoolKey | None:
    """The pool a server's stored ``user_options`` put it in (``None``: not a pool server)."""
    if not isinstance(options, Mapping):
        return None
    course, size = options.get("course"), options.get("size")
    if not (isinstance(course, str) and isinstance(size, str) and course and size):
        return None
    if options.get("notebook") is not None:
        return None  # pool servers carry no notebook; a claim may open any
    return PoolKey(course, size)


def pick_server(candidates: Iterable[tuple[T, PoolKey | None, bool]], key: PoolKey) -> T | None:
    """The pool member to hand out for ``key``: a ready member of exactly that pool.

    ``candidates`` are ``(member, key, ready)`` of the unclaimed pool users, ``member`` being
    whatever the caller needs back (a name, the hub's user). The first fit in the given
    order wins and the rest is not looked at, so callers pass them in a stable order (the
    hub: by user id, i.e. the oldest pool server first) and may pass a lazy iterable.
    """
    for member, member_pool, ready in candidates:
        if ready and member_pool == key:
            return member
    return None
