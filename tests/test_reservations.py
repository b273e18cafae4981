"""Capacity arithmetic of class reservations (cnbi_spawner.reservations), as tables."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction

import pytest

from cnbi_spawner import reservations as R
from cnbi_spawner.sizes import build_package

UTC = dt.UTC
NOW = dt.datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def t(text: str) -> dt.datetime:
    return R.parse_time(text, "t")


def booking(name, start, end, seats, size="small", course="uai", admitted=0):
    return R.Reservation(name, course, size, seats, t(start), t(end), "prof", admitted=admitted)


CAP = R.Capacity({"small": 100, "large": 25, "gpu": 4}, {"gpu": "gpu"})


# --- parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("2026-03-02T09:00:00Z", "2026-03-02T09:00:00Z"),
        ("2026-03-02T10:00:00+01:00", "2026-03-02T09:00:00Z"),
        ("2026-03-02t09:00z", "2026-03-02T09:00:00Z"),
        ("2026-03-02T09:00:00.123456Z", "2026-03-02T09:00:00Z"),
    ],
)
def test_times_are_stored_in_utc(text, expected):
    assert R.rfc3339(R.parse_time(text, "start")) == expected


@pytest.mark.parametrize(
    "value",
    ["2026-03-02T09:00:00", "2026-03-02", "tomorrow", 1700000000, None, "2026-02-30T09:00Z"],
)
def test_times_need_an_offset_and_a_real_date(value):
    with pytest.raises(R.ReservationError) as e:
        R.parse_time(value, "start")
    assert e.value.status == 400 and "start" in e.value.message


# --- overlaps, back-to-back, walk-in share ----------------------------------------------


@pytest.mark.parametrize(
    "bookings,slot,expected",
    [
        ([], "2026-03-02T09:00Z", 100),
        ([("a", "2026-03-02T09:00Z", "2026-03-02T11:00Z", 30)], "2026-03-02T09:00Z", 70),
        ([("a", "2026-03-02T09:00Z", "2026-03-02T11:00Z", 30)], "2026-03-02T10:00Z", 70),
        # back to back: the first ended at 11:00, the 11:00 slot is free of it
        ([("a", "2026-03-02T09:00Z", "2026-03-02T11:00Z", 30)], "2026-03-02T11:00Z", 100),
        # half hours occupy their whole slot
        ([("a", "2026-03-02T09:00Z", "2026-03-02T11:30Z", 30)], "2026-03-02T11:00Z", 70),
        # overlapping bookings add up
        (
            [
                ("a", "2026-03-02T09:00Z", "2026-03-02T11:00Z", 30),
                ("b", "2026-03-02T10:00Z", "2026-03-02T12:00Z", 50),
            ],
            "2026-03-02T10:00Z",
            20,
        ),
        # a large booking uses its share of the CPU group: 5/25 = 20 % = 20 small seats
        (
            [("a", "2026-03-02T09:00Z", "2026-03-02T11:00Z", 5, "large")],
            "2026-03-02T09:00Z",
            80,
        ),
        # GPU bookings leave the CPU sizes alone
        ([("a", "2026-03-02T09:00Z", "2026-03-02T11:00Z", 4, "gpu")], "2026-03-02T09:00Z", 100),
    ],
)
def test_available_small_seats(bookings, slot, expected):
    assert R.available(CAP, "small", t(slot), [booking(*b) for b in bookings]) == expected


@pytest.mark.parametrize(
    "share,booked_seats,expected",
    [(0.0, 0, 100), (0.2, 0, 80), (0.2, 70, 10), (0.2, 80, 0), (0.2, 95, 0), (0.25, 10, 65)],
)
def test_walk_in_share_is_kept(share, booked_seats, expected):
    cap = R.Capacity(CAP.seats, CAP.groups, Fraction(str(share)))
    bookings = [booking("a", "2026-03-02T09:00Z", "2026-03-02T10:00Z", booked_seats)]
    bookings = bookings if booked_seats else []
    assert R.available(cap, "small", t("2026-03-02T09:00Z"), bookings) == expected


@pytest.mark.parametrize(
    "request_window,seats,fits",
    [
        (("2026-03-02T09:00Z", "2026-03-02T10:00Z"), 40, True),
        (("2026-03-02T09:00Z", "2026-03-02T10:00Z"), 41, False),
        (("2026-03-02T11:00Z", "2026-03-02T12:00Z"), 100, True),  # back to back
        (("2026-03-02T10:59Z", "2026-03-02T12:00Z"), 100, False),  # overlaps a minute
        (("2026-03-02T07:00Z", "2026-03-02T09:00Z"), 100, True),  # ends as the other starts
    ],
)
def test_fits(request_window, seats, fits):
    existing = [booking("a", "2026-03-02T09:00Z", "2026-03-02T11:00Z", 60)]
    request = booking("new", *request_window, seats)
    assert R.fits(request, existing, CAP) is fits


def test_a_booking_does_not_collide_with_itself():
    existing = [booking("a", "2026-03-02T09:00Z", "2026-03-02T11:00Z", 100)]
    assert R.fits(existing[0], existing, CAP)


def test_refusal_names_the_nearest_windows_that_fit():
    existing = [booking("a", "2026-03-02T10:00Z", "2026-03-02T12:00Z", 80)]
    request = booking("new", "2026-03-02T10:00Z", "2026-03-02T11:00Z", 50)
    with pytest.raises(R.NoCapacity) as e:
        R.check_fit(request, existing, CAP, NOW)
    assert e.value.status == 409
    assert "at most 20" in e.value.message
    assert [(R.rfc3339(s), R.rfc3339(x)) for s, x in e.value.alternatives] == [
        ("2026-03-02T09:00:00Z", "2026-03-02T10:00:00Z"),  # 1 h earlier
        ("2026-03-02T08:00:00Z", "2026-03-02T09:00:00Z"),  # 2 h earlier
        ("2026-03-02T12:00:00Z", "2026-03-02T13:00:00Z"),  # 2 h later
    ]
    assert e.value.to_json()["alternatives"][0] == {
        "start": "2026-03-02T09:00:00Z",
        "end": "2026-03-02T10:00:00Z",
    }


def test_alternatives_never_start_in_the_past():
    existing = [booking("a", "2026-03-01T08:00Z", "2026-03-01T10:00Z", 100)]
    request = booking("new", "2026-03-01T08:00Z", "2026-03-01T09:00Z", 10)
    with pytest.raises(R.NoCapacity) as e:
        R.check_fit(request, existing, CAP, NOW)
    assert all(s >= NOW for s, _ in e.value.alternatives)
    assert R.rfc3339(e.value.alternatives[0][0]) == "2026-03-01T10:00:00Z"


def test_a_size_without_capacity_is_refused():
    cap = R.Capacity({"small": 0})
    with pytest.raises(R.ReservationError) as e:
        R.check_fit(booking("n", "2026-03-02T09:00Z", "2026-03-02T10:00Z", 1), [], cap, NOW)
    assert e.value.status == 409


# --- capacity from nodes (GPU sizes) ----------------------------------------------------


def node(cpu="8", memory="32Gi", gpu=None, labels=None, taints=None, unschedulable=False):
    alloc = {"cpu": cpu, "memory": memory, "pods": "110"}
    if gpu is not None:
        alloc["nvidia.com/gpu"] = gpu
    return {
        "metadata": {"labels": labels or {}},
        "spec": {"taints": taints or [], "unschedulable": unschedulable},
        "status": {"allocatable": alloc},
    }


GPU_TAINT = [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
PACKAGES = {
    "small": build_package("small", {"cpu_guarantee": 0.5, "mem_guarantee": "1G"}),
    "big": build_package("big", {"cpu_limit": 4, "mem_limit": "4G"}),  # limits as requests
    "gpu": build_package(
        "gpu",
        {
            "cpu_guarantee": 2,
            "mem_guarantee": "8G",
            "extra_resource_limits": {"nvidia.com/gpu": "1"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
        },
    ),
    "none": build_package("none", {}),
}


@pytest.mark.parametrize(
    "size,nodes,expected",
    [
        ("small", [node()], 16),  # cpu 8/0.5 = 16, memory 32/1 = 32
        ("small", [node(memory="4Gi")], 4),  # memory bound
        ("small", [node(cpu="7500m")], 15),
        ("small", [node(), node()], 32),
        ("small", [node(unschedulable=True)], 0),
        ("small", [node(gpu="4", taints=GPU_TAINT)], 0),  # CPU sizes stay off GPU nodes
        ("big", [node()], 2),
        ("gpu", [node()], 0),  # no GPU
        ("gpu", [node(gpu="4", taints=GPU_TAINT)], 4),  # cpu 8/2 = 4, gpu 4/1
        ("gpu", [node(cpu="64", memory="256Gi", gpu="2", taints=GPU_TAINT)], 2),  # GPU bound
        ("none", [node()], 0),  # no requests: configure it
    ],
)
def test_seats_from_nodes(size, nodes, expected):
    assert R.capacity(PACKAGES, {}, nodes).seats[size] == expected


def test_configured_seats_win_and_gpu_sizes_form_their_own_group():
    cap = R.capacity(PACKAGES, {"small": 40}, [node()], walk_in_share=0.1)
    assert cap.seats["small"] == 40 and cap.seats["big"] == 2
    assert cap.group("gpu") == "gpu" and cap.group("small") == "cpu"
    assert cap.walk_in_share == Fraction(1, 10)
    with pytest.raises(ValueError):
        R.capacity(PACKAGES, {}, [], walk_in_share=1.0)


# --- the week view and DST --------------------------------------------------------------


@pytest.mark.parametrize(
    "tz,day,hours",
    [
        ("UTC", dt.date(2026, 3, 29), 24),
        ("Europe/Zurich", dt.date(2026, 3, 28), 24),
        ("Europe/Zurich", dt.date(2026, 3, 29), 23),  # spring forward
        ("Europe/Zurich", dt.date(2026, 10, 25), 25),  # fall back
        ("America/New_York", dt.date(2026, 3, 8), 23),
    ],
)
def test_dst_change_days_have_their_real_number_of_hours(tz, day, hours):
    (d,) = R.week(CAP, "small", [], day, tz, days=1)
    assert len(d.cells) == hours
    assert d.cells[0].local.hour == 0
    assert all(b.start - a.start == R.SLOT for a, b in zip(d.cells, d.cells[1:], strict=False))


def test_dst_day_shows_a_booking_at_its_local_hours():
    # 09:00-11:00 Zurich time on the autumn change day is 08:00-10:00 UTC (CET, +01:00)
    existing = [booking("a", "2026-10-25T09:00:00+01:00", "2026-10-25T11:00:00+01:00", 100)]
    (d,) = R.week(CAP, "small", existing, dt.date(2026, 10, 25), "Europe/Zurich", days=1)
    full = [(c.local.strftime("%H:%M%z"), R.rfc3339(c.start)) for c in d.cells if c.state == "full"]
    assert full == [("09:00+0100", "2026-10-25T08:00:00Z"), ("10:00+0100", "2026-10-25T09:00:00Z")]
    # the repeated 02:00 hour is two cells
    assert [c.local.strftime("%H%z") for c in d.cells[2:4]] == ["02+0200", "02+0100"]


def test_cell_states():
    existing = [booking("a", "2026-03-02T09:00Z", "2026-03-02T10:00Z", 30)]
    cap = R.Capacity({"small": 30})
    (d,) = R.week(cap, "small", existing, dt.date(2026, 3, 2), "UTC", days=1)
    assert d.cells[9].state == "full" and d.cells[8].state == "free"
    (d,) = R.week(CAP, "small", existing, dt.date(2026, 3, 2), "UTC", days=1)
    assert (d.cells[9].state, d.cells[9].available, d.cells[9].booked) == ("booked", 70, 30)


# --- warming and admission --------------------------------------------------------------


@pytest.mark.parametrize(
    "now,share,admitted,expected",
    [
        ("2026-03-02T08:44Z", 1.0, 0, {}),  # before start - lead_time
        ("2026-03-02T08:45Z", 1.0, 0, {("uai", "small"): 30}),
        ("2026-03-02T09:30Z", 1.0, 12, {("uai", "small"): 18}),
        ("2026-03-02T09:30Z", 0.5, 0, {("uai", "small"): 15}),
        ("2026-03-02T09:30Z", 1.0, 30, {("uai", "small"): 0}),
        ("2026-03-02T11:00Z", 1.0, 0, {}),  # over
    ],
)
def test_pool_boosts(now, share, admitted, expected):
    r = booking("a", "2026-03-02T09:00Z", "2026-03-02T11:00Z", 30, admitted=admitted)
    assert R.pool_boosts([r], t(now), dt.timedelta(minutes=15), share) == expected


def test_boosts_of_one_course_add_up():
    a = booking("a", "2026-03-02T09:00Z", "2026-03-02T11:00Z", 30)
    b = booking("b", "2026-03-02T10:00Z", "2026-03-02T11:00Z", 20)
    c = booking("c", "2026-03-02T10:00Z", "2026-03-02T11:00Z", 5, course="other")
    boosts = R.pool_boosts([a, b, c], t("2026-03-02T10:00Z"), dt.timedelta(0), 1.0)
    assert boosts == {("uai", "small"): 50, ("other", "small"): 5}


@pytest.mark.parametrize(
    "now,ready,expected",
    [
        ("2026-03-02T08:44Z", 40, {"a": 0, "b": 0, "c": 0}),  # nobody warms yet
        ("2026-03-02T08:45Z", 40, {"a": 30, "b": 0, "c": 0}),  # a warms from 08:45
        ("2026-03-02T08:45Z", 12, {"a": 12, "b": 0, "c": 0}),  # still starting
        ("2026-03-02T09:45Z", 40, {"a": 30, "b": 10, "c": 0}),  # b gets what a leaves
        ("2026-03-02T09:45Z", 55, {"a": 30, "b": 20, "c": 0}),  # more is not counted
        ("2026-03-02T11:00Z", 40, {"a": 0, "b": 20, "c": 0}),  # a is over
        ("2026-03-02T12:00Z", 40, {"a": 0, "b": 0, "c": 0}),  # both over
    ],
)
def test_warmed_hands_the_ready_servers_to_the_warming_reservations_in_start_order(
    now, ready, expected
):
    a = booking("a", "2026-03-02T09:00Z", "2026-03-02T11:00Z", 30)
    b = booking("b", "2026-03-02T10:00Z", "2026-03-02T12:00Z", 25, admitted=5)
    c = booking("c", "2026-03-02T09:00Z", "2026-03-02T12:00Z", 5, course="other")
    ready_by_pool = {("uai", "small"): ready}  # the other course's pool has none ready
    got = R.warmed([b, c, a], ready_by_pool, t(now), dt.timedelta(minutes=15), 1.0)
    assert got == expected


@pytest.mark.parametrize(
    "now,admitted,users,user,expected",
    [
        ("2026-03-02T08:59Z", 0, (), "u1", False),
        ("2026-03-02T09:00Z", 0, (), "u1", True),
        ("2026-03-02T09:30Z", 2, ("u1", "u2"), "u3", False),  # full
        ("2026-03-02T09:30Z", 2, ("u1", "u2"), "u1", True),  # already in
        ("2026-03-02T11:00Z", 0, (), "u1", False),
    ],
)
def test_admits(now, admitted, users, user, expected):
    r = R.Reservation(
        "a", "uai", "small", 2, t("2026-03-02T09:00Z"), t("2026-03-02T11:00Z"),
        admitted=admitted, admitted_users=users,
    )  # fmt: skip
    assert R.admits(r, user, t(now)) is expected


# --- requests ---------------------------------------------------------------------------

GOOD = {
    "course": "uai-intro",
    "size": "small",
    "seats": 30,
    "start": "2026-03-02T09:00:00Z",
    "end": "2026-03-02T11:00:00Z",
    "note": "Lecture 3",
}


def validate(body):
    return R.validate_request(body, name="r1", owner="prof", sizes=["small", "gpu"], now=NOW)


def test_a_good_request():
    r = validate(GOOD)
    assert (r.name, r.owner, r.course, r.seats, r.note) == (
        "r1",
        "prof",
        "uai-intro",
        30,
        "Lecture 3",
    )
    obj = R.to_resource(r, "ns")
    assert obj["spec"]["start"] == "2026-03-02T09:00:00Z" and obj["spec"]["owner"] == "prof"
    assert R.from_resource(obj) == r


@pytest.mark.parametrize(
    "change,message",
    [
        ({"owner": "someone-else"}, "unknown field"),
        ({"course": ""}, "course"),
        ({"course": "<script>"}, "course may contain"),
        ({"course": ["x"]}, "course"),
        ({"size": "huge"}, "size must be one of"),
        ({"seats": 0}, "between 1 and"),
        ({"seats": 501}, "between 1 and"),
        ({"seats": True}, "whole number"),
        ({"seats": 2.5}, "whole number"),
        ({"start": "2026-03-02T09:00:00"}, "time zone offset"),
        ({"end": "2026-03-02T09:00:00Z"}, "end must be after start"),
        ({"end": "2026-03-03T09:00:00Z"}, "at most"),
        ({"start": "2026-02-01T09:00Z", "end": "2026-02-01T10:00Z"}, "over already"),
        ({"start": "2027-03-02T09:00Z", "end": "2027-03-02T10:00Z"}, "days ahead"),
        ({"note": "x" * 501}, "note"),
        ({"note": "bell\x07"}, "control characters"),
    ],
)
def test_bad_requests(change, message):
    with pytest.raises(R.ReservationError) as e:
        validate({**GOOD, **change})
    assert e.value.status == 400 and message in e.value.message


def test_not_an_object():
    with pytest.raises(R.ReservationError):
        validate(["course"])


def test_a_malformed_stored_object_is_skipped():
    assert R.from_resource({"metadata": {"name": "x"}, "spec": {"seats": "many"}}) is None
