"""The waiting room's queue (cnbi_spawner.waiting_room): order, expiry, admission, estimates.

Pure tables with a hand-driven clock; the hub-side behaviour is in test_waiting_room_hub.py.
"""

from __future__ import annotations

import pytest

from cnbi_spawner.waiting_room import (
    RoomFull,
    RoomRules,
    WaitingRoom,
    admissible,
    describe_wait,
    estimate_wait,
    ingress_arrival,
    poll_after,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def room(**rules) -> tuple[WaitingRoom, Clock]:
    clock = Clock()
    return WaitingRoom(RoomRules(**rules), clock=clock, started=50_000.0), clock


@pytest.mark.parametrize(
    ("slots", "tokens", "outstanding", "waiting", "expected"),
    [
        (None, None, 0, 5, 5),  # no limits: everyone
        (3, None, 0, 5, 3),
        (3, None, 2, 5, 1),  # two admitted are still on their way to their slots
        (3, None, 4, 5, 0),  # never negative
        (None, 2, 7, 5, 2),  # tokens: admitted places already took theirs
        (10, 1, 0, 5, 1),
        (0, 10, 0, 5, 0),
        (10, 10, 0, 0, 0),  # nobody waits
    ],
)
def test_admissible(slots, tokens, outstanding, waiting, expected):
    assert admissible(slots, tokens, outstanding, waiting) == expected


def test_first_come_first_served_and_positions():
    r, clock = room()
    places = [r.join(f"p{i}", 50_100.0 + i) for i in range(5)]
    assert [r.position(p) for p in places] == [0, 1, 2, 3, 4]
    assert r.busy and len(r) == 5 and r.outstanding == 0
    admitted = r.admit(slots=2)
    assert [p.id for p in admitted] == ["p0", "p1"]
    assert [r.position(p) for p in places[2:]] == [0, 1, 2]
    assert r.outstanding == 2 and len(r) == 3
    # the two admitted hold their slots until they come back: 2 free slots admit nobody new
    assert r.admit(slots=2) == ()
    assert r.consume("p0") and not r.consume("p0")  # once
    assert not r.consume("p3")  # not admitted yet
    assert [p.id for p in r.admit(slots=2)] == ["p2"]


def test_a_wall_clock_jump_back_cannot_let_a_newcomer_overtake():
    r, _ = room()
    first = r.join("first", 50_200.0)
    late = r.join("late", 50_100.0)  # the clock went back between the two
    assert (r.position(first), r.position(late)) == (0, 1)


def test_an_ingress_stamp_orders_places_by_when_learners_clicked():
    """B clicked after A but the hub read B's request first: with the ingress's stamps, A
    goes in ahead of B; an unstamped newcomer still queues at the back."""
    r, _ = room()
    b = r.join("b", 50_103.0, sent=50_100.2)
    a = r.join("a", 50_103.5, sent=50_100.1)
    c = r.join("c", 50_104.0)
    assert [r.position(p) for p in (a, b, c)] == [0, 1, 2]
    assert [p.id for p in r.admit(slots=1)] == ["a"]


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("t=1733000000.123", 1733000000.123),  # nginx ${msec}
        ("1733000000", 1733000000.0),
        ("t=1733000000123", 1733000000.123),  # milliseconds
        ("1733000000123456", 1733000000.123456),  # microseconds (Heroku, New Relic)
        (" t=1733000001.5 ", 1733000001.5),
        ("t=1732999900.0", None),  # 100 s before the hub's clock: not believed
        ("t=1733000100.0", None),  # 100 s ahead
        ("", None),
        (None, None),
        ("t=abc", None),
        ("t=1733000000.1234567", None),  # more digits than any clock gives
        ("t=-1733000000", None),
        ("1" * 41, None),
        ("t=1733000000; dur=5", None),
    ],
)
def test_ingress_arrival_believes_only_a_well_formed_stamp_near_the_hubs_clock(stamp, expected):
    assert ingress_arrival(stamp, 1733000000.0, 30.0) == expected


def test_join_twice_keeps_the_place_and_the_room_has_a_bound():
    r, _ = room(max_waiting=2)
    a = r.join("a", 50_100.0)
    assert r.join("a", 50_900.0) is a and len(r) == 1
    r.join("b", 50_101.0)
    with pytest.raises(RoomFull):
        r.join("c", 50_102.0)


EXPIRY = [
    # (seconds since the last heartbeat, expired?)
    (0.0, False),
    (39.9, False),
    (40.0, False),
    (40.1, True),
    (600.0, True),
]


@pytest.mark.parametrize(("silence", "gone"), EXPIRY)
def test_abandoned_places_expire_after_expire_after_seconds(silence, gone):
    r, clock = room(expire_after=40.0)
    r.join("quiet", 50_100.0)
    polling = r.join("polling", 50_101.0)
    clock.now += silence
    r.heartbeat("polling")
    tick = r.expire()
    assert [p.id for p in tick.expired] == (["quiet"] if gone else [])
    assert (r.find("quiet") is None) == gone
    assert r.position(polling) == (0 if gone else 1)
    assert r.find("polling") is polling


def test_heartbeats_keep_a_place_indefinitely():
    r, clock = room(expire_after=40.0)
    r.join("a", 50_100.0)
    for _ in range(20):
        clock.now += 30
        assert r.heartbeat("a") is not None
        assert r.expire().expired == ()
    assert r.heartbeat("nobody") is None


def test_an_admission_that_is_never_used_lapses_and_frees_its_slot():
    r, clock = room(admit_timeout=30.0)
    r.join("a", 50_100.0)
    r.join("b", 50_101.0)
    assert [p.id for p in r.admit(slots=1)] == ["a"]
    clock.now += 20
    r.heartbeat("b")
    assert r.expire().lapsed == () and r.admit(slots=1) == ()
    clock.now += 11
    r.heartbeat("b")
    tick = r.expire()
    assert [p.id for p in tick.lapsed] == ["a"] and r.find("a") is None
    assert [p.id for p in r.admit(slots=1)] == ["b"]


def test_leave_drops_waiting_or_admitted_places():
    r, _ = room()
    r.join("a", 50_100.0)
    r.join("b", 50_101.0)
    r.admit(slots=1)
    r.leave("a")
    r.leave("b")
    r.leave("nobody")
    assert not r.busy and r.outstanding == 0


RESTORE = [
    # (arrival relative to the room's start, restored?)
    (-10.0, True),  # made by the previous hub process
    (-3599.0, True),
    (-3601.0, False),  # older than restore_max_age: not believed
    (0.0, False),  # made by this room: it expired or was used
    (+5.0, False),
]


@pytest.mark.parametrize(("offset", "restored"), RESTORE)
def test_restore_after_a_hub_restart(offset, restored):
    r, _ = room(restore_max_age=3600.0)
    place = r.restore("x", r.started + offset)
    assert (place is not None) == restored


def test_restored_places_take_their_old_order_and_admission_waits_for_them():
    r, clock = room(restore_grace=12.0)
    newcomer = r.join("new", r.started + 5)
    second = r.restore("second", r.started - 20)
    assert r.admit(slots=5) == ()  # others may still come back from before the restart
    first = r.restore("first", r.started - 30)
    assert [r.position(p) for p in (first, second, newcomer)] == [0, 1, 2]
    clock.now += 12.5
    for p in (first, second, newcomer):
        r.heartbeat(p.id)
    assert [p.id for p in r.admit(slots=2)] == ["first", "second"]


def test_admission_rate_and_estimates():
    r, clock = room(rate_window=120.0)
    assert r.admissions_per_second() is None
    for i in range(30):
        r.join(f"p{i}", 50_100.0 + i)
    (last,) = r.admit(slots=1)  # one admission in a 10 s minimum span
    assert r.admissions_per_second() == pytest.approx(0.1)
    for _ in range(9):  # then one every 5 s: 10 in 45 s
        clock.now += 5
        assert r.consume(last.id)
        (last,) = r.admit(slots=1)
    assert r.admissions_per_second() == pytest.approx(10 / 45)
    clock.now += 121  # nothing for longer than the window: no measurement left
    assert r.admissions_per_second() is None


@pytest.mark.parametrize(
    ("position", "rate", "spawn", "expected"),
    [
        (0, None, 8.0, None),  # nothing admitted yet: no estimate
        (0, 0.0, 8.0, None),
        (0, 0.5, 8.0, 10.0),  # next in line: one admission interval + one spawn
        (9, 0.5, 8.0, 28.0),
        (9, 2.0, None, 5.0),  # no spawn measured yet
    ],
)
def test_estimate_wait(position, rate, spawn, expected):
    assert estimate_wait(position, rate, spawn) == expected


@pytest.mark.parametrize(
    ("position", "expected"), [(0, 1.0), (24, 1.0), (25, 2.0), (100, 5.0), (5000, 10.0)]
)
def test_poll_after_grows_with_the_position_up_to_max_poll(position, expected):
    assert poll_after(position, max_poll=10.0) == expected


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "still being measured"),
        (0.0, "less than a minute"),
        (59.0, "less than a minute"),
        (80.0, "about 1 minute"),
        (100.0, "about 2 minutes"),
        (3600.0, "about 60 minutes"),
    ],
)
def test_describe_wait(seconds, text):
    assert describe_wait(seconds) == text


POOL_ADMISSION = [
    # (wants of the waiting places in order, free slots, ready pool servers, admitted)
    (["a", "b", "a"], 0, {}, []),
    (["a", "b", "a"], 0, {"b": 1}, ["p1"]),  # a ready server of its pool: no slot needed
    (["a", "b", "a"], 0, {"a": 1}, ["p0"]),  # first come first served within the pool
    (["a", "b", "a"], 0, {"a": 5}, ["p0", "p2"]),
    (["a", "b", "a"], 1, {"b": 1}, ["p0", "p1"]),  # p0 takes the slot, p1 the server
    (["a", "b", "a"], 1, {"a": 1}, ["p0", "p1"]),  # p0 the server, p1 the slot
    (["", "", ""], 0, {"a": 3}, []),  # a place for no pool never takes a pool server
]


@pytest.mark.parametrize(("wants", "slots", "pools", "expected"), POOL_ADMISSION)
def test_ready_pool_servers_admit_their_own_places_in_order(wants, slots, pools, expected):
    r, _ = room()
    for i, want in enumerate(wants):
        r.join(f"p{i}", 50_100.0 + i, wants=want)
    assert [p.id for p in r.admit(slots=slots, pools=pools)] == expected


def test_promised_pool_servers_are_not_promised_twice():
    r, _ = room()
    for i in range(3):
        r.join(f"p{i}", 50_100.0 + i, wants="a")
    assert [p.id for p in r.admit(slots=0, pools={"a": 1})] == ["p0"]
    assert r.admit(slots=0, pools={"a": 1}) == ()  # p0 has not claimed it yet
    assert r.admit(slots=1, pools={"a": 1}) == (r.find("p1"),)  # a slot is free meanwhile
    assert r.consume("p0")
    assert [p.id for p in r.admit(slots=0, pools={"a": 1})] == ["p2"]


def test_tokens_bound_pool_admissions_too():
    r, _ = room()
    for i in range(3):
        r.join(f"p{i}", 50_100.0 + i, wants="a")
    assert [p.id for p in r.admit(slots=5, tokens=1, pools={"a": 3})] == ["p0"]


def test_arrived_by_lets_a_request_read_late_go_in_ahead():
    """Clicked first, read after a later click: while admission waits for the stamps to
    settle (``arrived_by``: now minus the settle time), it still goes in first; the round
    stops at the first place that arrived after ``arrived_by``."""
    r, _ = room()
    r.join("later", 50_102.0, sent=50_101.0)
    assert r.admit(slots=5, arrived_by=50_100.5) == ()  # nobody's click is old enough yet
    r.join("earlier", 50_102.2, sent=50_100.4)  # clicked first, reached the hub last
    r.join("unstamped", 50_102.3)  # the hub's own read time: behind both
    assert [p.id for p in r.admit(slots=5, arrived_by=50_101.0)] == ["earlier", "later"]
    assert r.admit(slots=5, arrived_by=50_102.0) == ()
    assert [p.id for p in r.admit(slots=5, arrived_by=50_102.3)] == ["unstamped"]
