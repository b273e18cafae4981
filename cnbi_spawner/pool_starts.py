"""Warm-pool starts against ``max_anonymous_users`` and the spawn limit (hub process).

Policy: a pool server is an anonymous user with a server, so it counts towards
``TmpLoginMixin.max_anonymous_users`` exactly like a learner's, from the moment its start
is admitted: while it starts, while it waits unclaimed, and after a learner claims it (a
claim needs no room: the server is counted already). The ``cnbi`` service asks the hub to
start pool servers (``POST /users/{name}/server`` for a member of
:data:`~cnbi_spawner.pool.POOL_GROUP`); the hub admits such a start only while the
anonymous users with a server (learners, pool servers, logins on their way to a spawn)
stay below the limit. Otherwise the start is refused before anything runs: the API
answers 503 (``Retry-After``), the hub stops nothing because nothing started, and the
service deletes the empty pool user and pauses its starts
(:mod:`cnbi_spawner.service.pool`). Learners and pool starts share the room first come,
first served: a full hub gets no new pool servers, and a pool never pushes it past the
limit. With no limit (0) every start is admitted.

Concurrent starts: the service sends many at once and the hub marks each spawn pending
before this check runs, so pending pool spawns not admitted yet are not counted against
each other: the first ones to reach the check take the room that is left, the rest are
refused. An admitted start is remembered only while it is pending; then it is counted as
an active user like any other.

Spawn limit: the hub lets a start through while its pending spawns are below
``concurrent_spawn_limit``, but it cannot see the learners ``/tmplogin`` has logged in and
sent on to ``/hub/spawn`` (:mod:`cnbi_spawner.on_its_way`). A pool start that took the slot
one of them was promised would send that learner to the hub's 429, so the gate refuses a
pool start (503, as above) while the hub's pending spawns, this one included, plus the
logins on their way exceed the limit. A learner's launch goes first; the pool waits for a
free slot.

Claim bursts: while learners claim pool servers at ``refill_claim_rate`` per second or more
(over the last :data:`CLAIM_WINDOW` seconds: a lecture hall clicking), pool starts are
refused the same way. Each start is a spawn on the hub's one event loop, and refilling
during the burst slowed the claims it was refilling for (``launch_storm.py --pool``: 300
refill starts during the 60 s of 1000 claims); the pool refills once the burst is over.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from .errors import Throttled
from .hub_errors import LaunchRefused
from .on_its_way import spawn_headroom
from .pool import POOL_GROUP

#: Retry-After (s) of a refused pool start: about one pool pass
RETRY_AFTER = 5
#: seconds over which the claim rate of a burst is measured
CLAIM_WINDOW = 5.0


class CapacityAuth(Protocol):
    """What the gate reads from the authenticator (``TmpLoginMixin``)."""

    max_anonymous_users: int

    def live_anonymous_names(self, users: Any) -> set[str]: ...

    def starting(self, users: Any) -> int: ...


def pool_servers(users: Any) -> tuple[set[str], set[str]]:
    """Names of pool members (group :data:`POOL_GROUP`) with an active default server, and
    of those among them whose server is starting."""
    active, starting = set(), set()
    for user in list(users.values()):
        spawner = user.spawners.get("")
        if spawner is None or not spawner.active:
            continue
        if any(g.name == POOL_GROUP for g in user.orm_user.groups):
            active.add(user.name)
            if spawner.pending == "spawn":
                starting.add(user.name)
    return active, starting


def claim_burst(claims: deque[float], now: float, rate: float) -> int:
    """Claims in the last :data:`CLAIM_WINDOW` seconds if they come at ``rate`` per second or
    more (a burst), else 0. Drops older times from the left of ``claims`` (oldest first)."""
    while claims and now - claims[0] > CLAIM_WINDOW:
        claims.popleft()
    return len(claims) if rate > 0 and len(claims) >= rate * CLAIM_WINDOW else 0


class PoolStartGate:
    """Admits or refuses pool starts (see the module docstring); one per authenticator."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._admitted: set[str] = set()  # pool starts admitted and still pending
        self._claims: deque[float] = deque()  # when learners claimed pool servers, oldest first
        self._clock = clock

    def claimed(self) -> None:
        """A learner was handed a pool server (``claim.claim_pool_server``)."""
        self._claims.append(self._clock())

    def admit(
        self,
        auth: CapacityAuth,
        users: Any,
        user: Any,
        spawn_limit: int = 0,
        refill_claim_rate: float = 0.0,
    ) -> None:
        """Let ``user``'s pool start go on, or raise ``LaunchRefused`` (503).
        ``spawn_limit``: the hub's ``concurrent_spawn_limit`` (0: none);
        ``refill_claim_rate``: claims per second that make a burst (0: never refuse for one)."""
        burst = claim_burst(self._claims, self._clock(), refill_claim_rate)
        if burst:
            raise LaunchRefused(
                Throttled(
                    f"Learners are claiming warm pool servers ({burst} in the last "
                    f"{CLAIM_WINDOW:.0f} s); the pool refills after the burst.",
                    retry_after=RETRY_AFTER,
                    status=503,
                )
            )
        on_the_way = auth.starting(users) if spawn_limit else 0  # no walk when nobody is
        if on_the_way:
            free = spawn_headroom(users.count_active_users(), spawn_limit, on_the_way)
            if free is not None and free < 0:  # ``user``'s own pending start is counted in it
                raise LaunchRefused(
                    Throttled(
                        f"The hub's concurrent_spawn_limit ({spawn_limit}) is taken by pending "
                        f"spawns and {on_the_way} login(s) on their way to one; no pool server "
                        "started.",
                        retry_after=RETRY_AFTER,
                        status=503,
                    )
                )
        limit = auth.max_anonymous_users
        if limit <= 0:  # no limit: no walk over every user per pool start
            self._admitted.clear()
            return
        active, starting = pool_servers(users)
        self._admitted &= starting  # settled starts are counted as active users from now
        live = (auth.live_anonymous_names(users) | active) - (starting - self._admitted)
        if len(live) + 1 > limit:  # ``user`` is one of the starting, not admitted ones
            raise LaunchRefused(
                Throttled(
                    f"The hub is at max_anonymous_users ({limit}); no pool server started.",
                    retry_after=RETRY_AFTER,
                    status=503,
                )
            )
        self._admitted.add(user.name)
