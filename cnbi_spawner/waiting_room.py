"""The waiting room's queue: who is next, who has left, how long the wait is.

Policy (pure; the hub-side glue in :mod:`cnbi_spawner.waiting_page` feeds it data):

- **Order.** First come, first served: places are ordered by their arrival time (wall-clock
  seconds, carried in the learner's signed place cookie so that a hub restart can put a
  place back where it was), ties by the order they joined. A fresh place never arrives
  before the last one (``arrived`` is raised to the newest arrival), so wall-clock jumps
  cannot let a newcomer overtake.
- **Click order.** Under a burst the hub reads requests later than they were sent, and not
  in the order they were sent (requests queued in the proxy's connections while its event
  loop was busy). Where the ingress in front of the hub stamps each request with the time
  it received it, that time is the place's arrival (:func:`ingress_arrival`), so places are
  ordered as the learners clicked: a place may then go in ahead of places that joined
  before it. A stamp further than ``max_skew`` seconds from the hub's clock is not believed
  (the place arrives now, as without one), which also bounds how far a forged stamp could
  move a place forward. Requests are also delayed by different amounts on their way, so a
  learner who clicked first may be read after a later one was admitted: the caller then
  passes ``arrived_by`` (now minus a settle time) to :meth:`WaitingRoom.admit`, which admits
  a place only once its arrival is that old, so a request delayed by less than the settle
  time still goes in ahead.
- **Heartbeat and expiry.** Every poll (or reload) of a waiting browser is a heartbeat. A
  place with no heartbeat for ``expire_after`` seconds is abandoned and removed; so is an
  admitted place that does not come back to ``/tmplogin`` within ``admit_timeout`` seconds
  (its slot goes to the next in line).
- **Admission.** :meth:`WaitingRoom.admit` lets in, from the front, as many places as there
  are free slots (computed by the caller from the hub's own capacity rules) minus the places
  already admitted that have not arrived yet (they hold a slot the hub's counts do not show
  yet), and at most as many as the hub-wide login budget allows (``tokens``).
- **Warm pools.** A place may name what it is for (``wants``: the launch's pool key). A
  ready, unclaimed pool server needs no new slot, so :meth:`WaitingRoom.admit` also admits,
  in queue order, places whose pool has ready servers (``pools``) not yet promised to an
  admitted place, even when no slot is free: first come, first served per resource.
- **Busy.** While anyone waits or an admitted place is on its way, the room is busy: a
  newcomer queues behind them even if a slot looks free, so nobody overtakes.
- **Restart.** A place the room does not know, whose arrival predates the room (the hub
  restarted), is re-inserted in arrival order (:meth:`WaitingRoom.restore`); admissions are
  then held for ``restore_grace`` seconds so the other restored places can come back first.
- **Estimated wait.** The places ahead drain at the measured admission rate (admissions in
  the last ``rate_window`` seconds, over at least ``MIN_RATE_SPAN``); add one measured spawn
  (:func:`estimate_wait`). No admission measured yet: no estimate.
- **Poll interval.** The front of the queue polls often, the back rarely
  (:func:`poll_after`), which keeps the hub's work per second bounded as the queue grows.

Nothing here does I/O, logs or reads a clock it was not given: ``clock`` (monotonic seconds)
is injected, and wall-clock arrival times are passed in by the caller.
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

#: shortest span an admission rate is measured over (one batch is not a rate)
MIN_RATE_SPAN = 10.0


@dataclass(frozen=True, slots=True)
class RoomRules:
    """Timing of the queue (seconds)."""

    expire_after: float = 40.0
    admit_timeout: float = 30.0
    max_poll: float = 10.0
    restore_grace: float = 12.0
    rate_window: float = 120.0
    restore_max_age: float = 3600.0
    max_waiting: int = 10_000


@dataclass(slots=True)
class Place:
    """One learner's place. ``arrived`` is wall-clock; ``seen``/``admitted_at`` monotonic."""

    id: str
    arrived: float
    seq: int
    seen: float
    wants: str = ""  # the pool key of its launch ("" none)
    admitted_at: float | None = None
    via_pool: bool = False  # admitted for a ready pool server, not a slot

    @property
    def key(self) -> tuple[float, int]:
        return (self.arrived, self.seq)

    @property
    def admitted(self) -> bool:
        return self.admitted_at is not None


@dataclass(frozen=True, slots=True)
class Tick:
    """What one :meth:`WaitingRoom.expire` + :meth:`WaitingRoom.admit` round did."""

    admitted: tuple[Place, ...] = ()
    expired: tuple[Place, ...] = ()
    lapsed: tuple[Place, ...] = ()  # admitted, but never came back


class RoomFull(Exception):
    """The queue holds ``max_waiting`` places already."""


#: an ingress timestamp: seconds, milliseconds or microseconds since the epoch, optionally
#: with a fraction and nginx's / Heroku's ``t=`` prefix (``X-Request-Start: t=1733000000.123``)
_STAMP = re.compile(r"(?:t=)?(\d{9,16})(?:\.(\d{1,6}))?")


def ingress_arrival(stamp: str | None, now: float, max_skew: float) -> float | None:
    """The wall-clock time an ingress says it received the request, or None when there is
    no stamp, it is malformed, or it is more than ``max_skew`` seconds from ``now``."""
    match = _STAMP.fullmatch(stamp.strip()) if stamp and len(stamp) <= 40 else None
    if match is None:
        return None
    value = float(f"{match.group(1)}.{match.group(2) or 0}")
    for scale in (1e6, 1e3, 1.0):  # microseconds, milliseconds, seconds: whichever is near
        if abs(value / scale - now) <= max_skew:
            return value / scale
    return None


def admissible(slots: int | None, tokens: int | None, outstanding: int, waiting: int) -> int:
    """How many of the ``waiting`` places may be admitted now.

    ``slots``: launches the hub could start now by its capacity rules (None: no limit);
    ``outstanding``: admitted places still on their way (they will take slots);
    ``tokens``: hub-wide logins available now (None: no limit; admitted places already
    took theirs).
    """
    n = waiting
    if slots is not None:
        n = min(n, slots - outstanding)
    if tokens is not None:
        n = min(n, tokens)
    return max(0, n)


def estimate_wait(
    position: int, admissions_per_second: float | None, spawn_seconds: float | None
) -> float | None:
    """Seconds until the server of the learner at ``position`` (0 = next) should be ready."""
    if admissions_per_second is None or admissions_per_second <= 0:
        return None
    return (position + 1) / admissions_per_second + (spawn_seconds or 0.0)


def poll_after(position: int, max_poll: float) -> float:
    """Seconds until a browser at ``position`` should poll again (1 s at the front)."""
    return float(min(max_poll, 1 + position // 25))


@dataclass
class WaitingRoom:
    """The first-come queue of places; see the module docstring."""

    rules: RoomRules = field(default_factory=RoomRules)
    clock: Callable[[], float] = time.monotonic
    started: float = field(default_factory=time.time)  # wall-clock birth of this room

    def __post_init__(self) -> None:
        self._waiting: list[Place] = []  # sorted by key
        self._keys: list[tuple[float, int]] = []
        self._by_id: dict[str, Place] = {}
        self._seq = itertools.count()
        self._newest = 0.0
        self._hold_until = -math.inf
        self._admissions: deque[float] = deque()

    # --- membership ----------------------------------------------------------------------

    def __len__(self) -> int:
        """Places waiting (not counting admitted ones)."""
        return len(self._waiting)

    @property
    def outstanding(self) -> int:
        """Admitted places that have not come back yet."""
        return len(self._by_id) - len(self._waiting)

    @property
    def busy(self) -> bool:
        return bool(self._by_id)

    def find(self, place_id: str) -> Place | None:
        return self._by_id.get(place_id)

    def join(
        self, place_id: str, arrived: float, wants: str = "", sent: float | None = None
    ) -> Place:
        """A new place (``arrived``: wall-clock now): at the back of the queue, or, with the
        time ``sent`` an ingress received its request (:func:`ingress_arrival`), in the
        order the learners clicked."""
        return self._insert(place_id, max(arrived, self._newest) if sent is None else sent, wants)

    def restore(self, place_id: str, arrived: float, wants: str = "") -> Place | None:
        """Put back a place made before this room existed (hub restart), in arrival order.

        Returns None for a place that cannot be one of those: made after this room started
        (so it expired or was used), or more than ``restore_max_age`` before.
        """
        if not (self.started - self.rules.restore_max_age <= arrived < self.started):
            return None
        self._hold_until = max(self._hold_until, self.clock() + self.rules.restore_grace)
        return self._insert(place_id, arrived, wants)

    def _insert(self, place_id: str, arrived: float, wants: str) -> Place:
        if place_id in self._by_id:
            return self._by_id[place_id]
        if len(self._waiting) >= self.rules.max_waiting:
            raise RoomFull()
        place = Place(place_id, arrived, next(self._seq), self.clock(), wants)
        self._newest = max(self._newest, arrived)
        i = bisect.bisect_left(self._keys, place.key)
        self._keys.insert(i, place.key)
        self._waiting.insert(i, place)
        self._by_id[place_id] = place
        return place

    def heartbeat(self, place_id: str) -> Place | None:
        place = self._by_id.get(place_id)
        if place is not None:
            place.seen = self.clock()
        return place

    def position(self, place: Place) -> int:
        """Places ahead of a waiting ``place`` (0: it is next); 0 once admitted."""
        if place.admitted:
            return 0
        return bisect.bisect_left(self._keys, place.key)

    def consume(self, place_id: str) -> bool:
        """An admitted place arrives at ``/tmplogin``: it leaves the room. False if it was
        not admitted (or is not here)."""
        place = self._by_id.get(place_id)
        if place is None or not place.admitted:
            return False
        del self._by_id[place_id]
        return True

    def leave(self, place_id: str) -> None:
        """Drop a place whatever its state (e.g. its browser got its old session back)."""
        place = self._by_id.pop(place_id, None)
        if place is not None and not place.admitted:
            self._remove_waiting({place_id})

    # --- the periodic round --------------------------------------------------------------

    def expire(self) -> Tick:
        """Drop abandoned places and admissions that were never used."""
        now = self.clock()
        expired = tuple(p for p in self._waiting if now - p.seen > self.rules.expire_after)
        lapsed = tuple(
            p
            for p in self._by_id.values()
            if p.admitted_at is not None and now - p.admitted_at > self.rules.admit_timeout
        )
        for place in (*expired, *lapsed):
            del self._by_id[place.id]
        if expired:
            self._remove_waiting({p.id for p in expired})
        return Tick(expired=expired, lapsed=lapsed)

    def admit(
        self,
        slots: int | None,
        tokens: int | None = None,
        pools: Mapping[str, int] | None = None,
        arrived_by: float | None = None,
    ) -> tuple[Place, ...]:
        """Admit places from the front (see :func:`admissible`), plus, in queue order,
        places whose pool has ready servers in ``pools`` not promised to an admitted place.
        ``arrived_by`` (wall-clock): only places that arrived by then; the first later one
        stops the round (the places behind it arrived later still)."""
        now = self.clock()
        if now < self._hold_until or not self._waiting:
            return ()
        promised = Counter(p.wants for p in self._by_id.values() if p.admitted and p.via_pool)
        spare = {k: n - promised[k] for k, n in (pools or {}).items() if n > promised[k]}
        by_slot = self.outstanding - sum(promised.values())
        free = admissible(slots, tokens, by_slot, len(self._waiting))
        budget = len(self._waiting) if tokens is None else max(0, tokens)
        chosen: list[Place] = []
        for place in self._waiting:
            if len(chosen) >= budget or (free <= 0 and not spare):
                break
            if arrived_by is not None and place.arrived > arrived_by:
                break
            if spare.get(place.wants, 0) > 0:
                spare[place.wants] -= 1
                if not spare[place.wants]:
                    del spare[place.wants]
                place.via_pool = True
            elif free > 0:
                free -= 1
            else:
                continue  # no slot, no ready server of its pool: it keeps its place
            chosen.append(place)
        if chosen:
            self._remove_waiting({p.id for p in chosen})
        for place in chosen:
            place.admitted_at = now
            self._admissions.append(now)
        return tuple(chosen)

    def admissions_per_second(self) -> float | None:
        """Admissions per second over the last ``rate_window`` seconds (None: none yet)."""
        now = self.clock()
        window = self.rules.rate_window
        while self._admissions and now - self._admissions[0] > window:
            self._admissions.popleft()
        if not self._admissions:
            return None
        span = max(now - self._admissions[0], MIN_RATE_SPAN)
        return len(self._admissions) / span

    def waiting(self) -> Iterable[Place]:
        return iter(self._waiting)

    def _remove_waiting(self, ids: set[str]) -> None:
        kept = [p for p in self._waiting if p.id not in ids]
        self._waiting = kept
        self._keys = [p.key for p in kept]


def describe_wait(seconds: float | None) -> str:
    """The estimated wait in words, for the waiting page."""
    if seconds is None:
        return "still being measured"
    if seconds < 60:
        return "less than a minute"
    minutes = round(seconds / 60)
    return "about 1 minute" if minutes == 1 else f"about {minutes} minutes"
