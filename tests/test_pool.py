"""The warm pool's pure rules (``cnbi_spawner.pool``) and the culler's pool exception."""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from cnbi_spawner.hub_errors import LaunchRefused
from cnbi_spawner.pool import (
    POOL_GROUP,
    Drain,
    DrainReason,
    MemberState,
    PoolCount,
    PoolKey,
    PoolMember,
    backoff_seconds,
    count_pools,
    member_key,
    pick_server,
    plan_pool,
)
from cnbi_spawner.pool_starts import CLAIM_WINDOW, RETRY_AFTER, PoolStartGate, claim_burst
from cnbi_spawner.service.cull_policy import Action, CullPolicy, decide
from cnbi_spawner.service.pool import member_from_model

A = PoolKey("intro:1", "small")
B = PoolKey("ml:2", "large")
IMG_A = "repo/intro@sha256:aa"
IMG_B = "repo/ml@sha256:bb"
IMAGES = {"intro:1": IMG_A, "ml:2": IMG_B}
R, S, X = MemberState.READY, MemberState.STARTING, MemberState.BROKEN


def m(name: str, key: PoolKey | None = A, state: MemberState = R, image: str | None = None):
    return PoolMember(name, key, state, image)


PLANS = [
    # (targets, members, images, max_starts, expected starts, expected drains)
    ({A: 2}, [], IMAGES, 10, {A: 2}, []),
    ({A: 2}, [m("a"), m("b", state=S)], IMAGES, 10, {}, []),
    ({A: 3}, [m("a")], IMAGES, 1, {A: 1}, []),
    ({A: 3}, [m("a", state=S)], IMAGES, 1, {}, []),  # the one start in flight uses the budget
    ({A: 5, B: 1}, [], IMAGES, 3, {A: 2, B: 1}, []),  # round-robin: B is not starved
    ({A: 1}, [m("a"), m("b")], IMAGES, 10, {}, [("a", DrainReason.OVER_TARGET)]),
    ({A: 1}, [m("a"), m("b", state=S)], IMAGES, 10, {}, [("b", DrainReason.OVER_TARGET)]),
    ({A: 1}, [m("a", key=B)], IMAGES, 10, {A: 1}, [("a", DrainReason.NO_TARGET)]),
    ({A: 1}, [m("a", key=None)], IMAGES, 10, {A: 1}, [("a", DrainReason.NO_TARGET)]),
    ({A: 1}, [m("a", state=X)], IMAGES, 10, {A: 1}, [("a", DrainReason.BROKEN)]),
    ({A: 1}, [m("a", image="repo/intro@sha256:old")], IMAGES, 10, {A: 1},
     [("a", DrainReason.DIGEST_CHANGED)]),
    ({A: 1}, [m("a", image=IMG_A)], IMAGES, 10, {}, []),
    ({A: 1}, [m("a")], {"intro:1": None}, 10, {}, [("a", DrainReason.COURSE_GONE)]),
    ({A: 1}, [m("a")], {}, 10, {}, [("a", DrainReason.COURSE_GONE)]),
    ({A: 1}, [m("a", state=MemberState.STOPPING)], IMAGES, 10, {A: 1}, []),
    ({A: 0}, [m("a")], IMAGES, 10, {}, [("a", DrainReason.NO_TARGET)]),
    ({A: 2}, [], IMAGES, 0, {}, []),
]  # fmt: skip


def test_a_paused_pool_gets_no_starts_but_others_do():
    plan = plan_pool({A: 2, B: 1}, [m("a", state=X)], IMAGES, max_starts=5, paused=[A])
    assert plan.start == {B: 1}
    assert [(d.name, d.reason) for d in plan.drain] == [("a", DrainReason.BROKEN)]


@pytest.mark.parametrize(
    ("failures", "seconds"), [(0, 0), (1, 5), (2, 10), (3, 20), (6, 160), (7, 300), (50, 300)]
)
def test_backoff_doubles_up_to_five_minutes(failures, seconds):
    assert backoff_seconds(failures) == seconds


@pytest.mark.parametrize(("targets", "members", "images", "budget", "starts", "drains"), PLANS)
def test_plan_pool(targets, members, images, budget, starts, drains):
    plan = plan_pool(targets, members, images, max_starts=budget)
    assert plan.start == starts
    assert [(d.name, d.reason) for d in plan.drain] == drains


def test_over_target_drains_starting_before_ready():
    plan = plan_pool({A: 1}, [m("r1"), m("s1", state=S), m("r2")], IMAGES, max_starts=5)
    assert [d.name for d in plan.drain] == ["s1", "r1"]
    assert plan.drain[0] == Drain("s1", A, DrainReason.OVER_TARGET)


def test_count_pools_lists_targets_and_strays():
    counts = count_pools({A: 2}, [m("a"), m("b", state=S), m("c", key=B), m("d", key=None)])
    assert counts == {A: PoolCount(2, 1, 1), B: PoolCount(0, 1, 0)}


MEMBER_KEYS = [
    ({"course": "intro:1", "size": "small"}, A),
    ({"course": "intro:1", "size": "small", "ticket": "t"}, A),
    ({"course": "intro:1", "size": "small", "notebook": "x.ipynb"}, None),
    ({"course": "intro:1"}, None),
    ({"course": ["intro:1"], "size": "small"}, None),
    (None, None),
    ("course=intro:1", None),
]


@pytest.mark.parametrize(("options", "key"), MEMBER_KEYS)
def test_member_key(options, key):
    assert member_key(options) == key


def test_pick_server_takes_the_first_ready_of_exactly_that_pool():
    candidates = [("a", B, True), ("b", A, False), ("c", A, True), ("d", A, True)]
    assert pick_server(candidates, A) == "c"
    assert pick_server(candidates, PoolKey("intro:1", "large")) is None
    assert pick_server([], A) is None


SERVER_MODELS = [
    ({}, None, X),
    ({"": {"ready": True, "pending": None, "user_options": A.user_options()}}, A, R),
    ({"": {"ready": False, "pending": "spawn", "user_options": A.user_options()}}, A, S),
    ({"": {"ready": False, "pending": "stop", "user_options": A.user_options()}}, A,
     MemberState.STOPPING),
    ({"": {"ready": False, "pending": None, "user_options": {}}}, None, X),
]  # fmt: skip


@pytest.mark.parametrize(("servers", "key", "state"), SERVER_MODELS)
def test_member_from_hub_model(servers, key, state):
    member = member_from_model({"name": "u", "servers": servers})
    assert (member.key, member.state) == (key, state)


def test_culler_never_touches_an_unclaimed_pool_server():
    now = datetime.now(UTC)
    long_ago = (now - timedelta(days=2)).isoformat()
    server = {"ready": True, "pending": None, "started": long_ago, "last_activity": long_ago}
    user = {
        "name": "0b3e7c8e-1b5e-4a59-9a8e-3c1d2f4e5a6b",
        "groups": [POOL_GROUP],
        "admin": False,
        "created": long_ago,
        "last_activity": long_ago,
        "servers": {"": server},
    }
    decisions = decide(user, now, CullPolicy())
    assert [(d.server, d.action, d.reason) for d in decisions] == [
        ("", Action.KEEP, "pool"),
        (None, Action.KEEP, "pool"),
    ]
    claimed = {**user, "groups": ["anonymous"]}  # the same server once claimed: culled
    assert decide(claimed, now, CullPolicy())[0].action is Action.STOP


def test_catalog_line_per_pooled_course():
    from cnbi_spawner.service.catalog import pool_lines

    class Manager:
        def status(self):
            return {"intro:1": {"small": PoolCount(5, 3, 2), "large": PoolCount(1, 1, 0)}}

    assert pool_lines(Manager()) == {
        "intro:1": "Warm pool: 1/1 ready (large); 3/5 ready (small), 2 starting"
    }
    assert pool_lines(None) == {}


def test_pick_server_stops_at_the_first_fit():
    def candidates():
        yield "a", A, True
        raise AssertionError("looked past the first fit")

    assert pick_server(candidates(), A) == "a"


@pytest.mark.parametrize(
    ("ages", "rate", "expected"),
    [
        ([4.9, 4, 3, 2, 1], 1.0, 5),  # 5 claims in 5 s: a burst at 1/s
        ([4, 3, 2, 1], 1.0, 0),  # 4 in 5 s: not
        ([9, 8, 7, 6, 1], 1.0, 0),  # the older ones are outside the window
        ([1, 1, 1, 1, 1], 0.0, 0),  # 0: never a burst
        ([], 1.0, 0),
    ],
)
def test_claim_burst(ages, rate, expected):
    now = 1000.0
    claims = deque(now - a for a in ages)
    assert claim_burst(claims, now, rate) == expected
    assert all(now - t <= CLAIM_WINDOW for t in claims)  # older times were dropped


def test_pool_starts_are_refused_during_a_burst_of_claims():
    clock = [100.0]
    gate = PoolStartGate(clock=lambda: clock[0])
    auth = SimpleNamespace(max_anonymous_users=0, starting=lambda users: 0)
    for _ in range(6):  # six claims in 3 s
        gate.claimed()
        clock[0] += 0.5
    with pytest.raises(LaunchRefused) as refused:
        gate.admit(auth, {}, SimpleNamespace(name="p1"), refill_claim_rate=1.0)
    assert refused.value.status_code == 503
    assert refused.value.headers == {"Retry-After": str(RETRY_AFTER)}
    assert "6 in the last 5 s" in refused.value.jupyterhub_message
    gate.admit(auth, {}, SimpleNamespace(name="p1"), refill_claim_rate=0.0)  # off: admitted
    clock[0] += 5.0  # the burst is over
    gate.admit(auth, {}, SimpleNamespace(name="p1"), refill_claim_rate=1.0)
