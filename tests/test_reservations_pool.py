"""A reservation warms its course's pool from start - lead_time to its end (clock injected).

The real ReservationBook (from its last listing) is the warm pool manager's extra target
source; PoolManager.resolve_targets resolves it like PoolSettings.targets and raises each
pool to at least what the reservations ask, never lowering a configured target.
"""

from __future__ import annotations

import datetime as dt

import pytest
from test_selection import Images, img

from cnbi_spawner import reservations as R
from cnbi_spawner.pool import PoolKey
from cnbi_spawner.service.pool import PoolManager, PoolSettings
from cnbi_spawner.service.reservation_book import ReservationBook, ReservationSettings
from cnbi_spawner.sizes import ResourcePolicy

START = dt.datetime(2026, 3, 29, 7, 0, tzinfo=dt.UTC)  # 09:00 in Zurich, the DST change day


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def setup(configured: dict, share: float = 1.0):
    clock = Clock(START - dt.timedelta(hours=1))
    settings = ReservationSettings(lead_time=900, pool_share=share, warm_pool=True)
    policy = ResourcePolicy(anonymous_max_size="small").launch_policy()
    book = ReservationBook(None, "ns", settings, policy, clock=clock)
    book.cached = [
        R.Reservation(
            "resv-a", "uai-intro:2026.1", "small", 30, START, START + dt.timedelta(hours=2)
        ),
    ]
    registry = Images([img("uai-intro:2026.1", aliases=("uai-intro",))])
    manager = PoolManager(
        None, registry, policy, PoolSettings(targets=configured), extra_targets=book.pool_targets
    )
    return clock, book, manager


KEY = PoolKey("uai-intro:2026.1", "small")


@pytest.mark.parametrize(
    "offset,expected",
    [
        (dt.timedelta(minutes=-16), {}),  # before start - lead_time: normal target
        (dt.timedelta(minutes=-15), {KEY: 30}),  # warm from start - lead_time
        (dt.timedelta(hours=1), {KEY: 30}),
        (dt.timedelta(hours=2), {}),  # after the end: back to normal
    ],
)
def test_the_pool_warms_at_start_minus_lead_time(offset, expected):
    clock, _, manager = setup({})
    clock.now = START + offset
    assert manager.resolve_targets() == expected


def test_admitted_learners_are_no_longer_kept_warm_and_a_configured_target_stays():
    clock, book, manager = setup({"uai-intro": 5}, share=0.5)
    clock.now = START - dt.timedelta(hours=1)
    assert manager.resolve_targets() == {KEY: 5}
    clock.now = START
    assert manager.resolve_targets() == {KEY: 15}  # half the seats
    (r,) = book.cached
    book.cached = [R.Reservation(**{**r.__dict__, "admitted": 12})]
    assert manager.resolve_targets() == {KEY: 5}  # 15 - 12 = 3 < the configured 5
