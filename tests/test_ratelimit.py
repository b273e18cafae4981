"""Token buckets and client keys for /tmplogin: pure tables with a hand-driven clock."""

from __future__ import annotations

import pytest

from cnbi_spawner.ratelimit import Rate, RateLimiter, client_key


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def limiter(client=(60, 3), global_=(0, 0), max_clients=1000):
    clock = FakeClock()
    rl = RateLimiter(Rate(*client), Rate(*global_), max_clients=max_clients, clock=clock)
    return rl, clock


def test_burst_then_refused_with_retry_after():
    rl, clock = limiter(client=(60, 3))  # 1 token per second, burst 3
    assert [rl.check("a").allowed for _ in range(3)] == [True, True, True]
    d = rl.check("a")
    assert (d.allowed, d.retry_after, d.scope) == (False, 1, "client")
    clock.advance(0.5)
    assert not rl.check("a").allowed
    clock.advance(0.5)
    assert rl.check("a").allowed
    assert not rl.check("a").allowed


@pytest.mark.parametrize(
    "per_minute, burst, expected_retry",
    [
        (60, 1, 1),  # 1/s
        (6, 1, 10),  # one every 10 s
        (1, 1, 60),
        (300, 300, 1),  # 5/s rounds up to 1 s
        (0.5, 1, 120),
    ],
)
def test_retry_after_is_whole_seconds_until_next_token(per_minute, burst, expected_retry):
    rl, _ = limiter(client=(per_minute, burst))
    for _ in range(burst):
        assert rl.check("a").allowed
    d = rl.check("a")
    assert not d.allowed
    assert d.retry_after == expected_retry


def test_clients_are_independent():
    rl, _ = limiter(client=(60, 2))
    assert rl.check("a").allowed and rl.check("a").allowed
    assert not rl.check("a").allowed
    assert rl.check("b").allowed


def test_global_bucket_limits_all_clients_together_and_refusals_cost_nothing():
    rl, clock = limiter(client=(60, 2), global_=(60, 3))
    assert rl.check("a").allowed
    assert rl.check("b").allowed
    assert rl.check("c").allowed
    d = rl.check("d")
    assert (d.allowed, d.scope, d.retry_after) == (False, "global", 1)
    # a refused client did not lose its own token: after a refill "d" still has 2
    clock.advance(2)
    assert rl.check("d").allowed and rl.check("d").allowed
    # a client refused by its own bucket does not use global tokens
    rl2, _ = limiter(client=(60, 1), global_=(60, 2))
    assert rl2.check("x").allowed
    for _ in range(5):
        assert rl2.check("x").scope == "client"
    assert rl2.check("y").allowed


def test_zero_rate_means_unlimited():
    rl, _ = limiter(client=(0, 0), global_=(0, 0))
    assert all(rl.check("a").allowed for _ in range(10_000))
    assert len(rl) == 0


def test_full_buckets_are_forgotten():
    rl, clock = limiter(client=(60, 5))
    for i in range(50):
        rl.check(f"c{i}")
    assert len(rl) == 50
    clock.advance(0.5)  # half a token back: not full yet
    rl.check("new")
    assert len(rl) == 51
    clock.advance(10)  # all refilled
    rl.check("z")
    assert len(rl) == 1


def test_memory_is_capped_lru():
    rl, _ = limiter(client=(60, 5), max_clients=10)
    for i in range(100):
        rl.check(f"c{i}")
    assert len(rl) == 10
    # "c99" is remembered (spent a token), "c0" was evicted (fresh full bucket again)
    for _ in range(4):
        assert rl.check("c99").allowed
    assert not rl.check("c99").allowed
    for _ in range(5):
        assert rl.check("c0").allowed


def test_clock_going_backwards_does_not_add_tokens():
    rl, clock = limiter(client=(60, 1))
    assert rl.check("a").allowed
    clock.advance(-100)
    assert not rl.check("a").allowed


@pytest.mark.parametrize(
    "xff, peer, trusted, expected",
    [
        # no trusted proxies: the TCP peer, whatever the header says
        ("203.0.113.9", "198.51.100.1", 0, "198.51.100.1"),
        (None, "198.51.100.1", 1, "198.51.100.1"),
        ("", "198.51.100.1", 1, "198.51.100.1"),
        # configurable-http-proxy only: the entry it appended (the rightmost)
        ("203.0.113.9", "127.0.0.1", 1, "203.0.113.9"),
        # a client-supplied spoofed entry to the left is ignored
        ("6.6.6.6, 203.0.113.9", "127.0.0.1", 1, "203.0.113.9"),
        ("6.6.6.6,1.1.1.1,203.0.113.9", "127.0.0.1", 1, "203.0.113.9"),
        # ingress + proxy: second from the right
        ("6.6.6.6, 203.0.113.9, 10.0.0.2", "127.0.0.1", 2, "203.0.113.9"),
        # fewer entries than trusted proxies: leftmost (all were written by our proxies)
        ("203.0.113.9", "127.0.0.1", 3, "203.0.113.9"),
        # garbage at the chosen position: nearest valid entry to its right, then the peer
        ("evil, garbage, 10.0.0.2", "127.0.0.1", 2, "10.0.0.2"),
        ("<script>", "127.0.0.1", 1, "127.0.0.1"),
        (" , ,", "127.0.0.1", 1, "127.0.0.1"),
        # normalisation: ports, IPv4-mapped IPv6, IPv6 grouped by /64
        ("203.0.113.9:5555", "127.0.0.1", 1, "203.0.113.9"),
        ("::ffff:203.0.113.9", "127.0.0.1", 1, "203.0.113.9"),
        ("2001:db8:1:2:aaaa::1", "127.0.0.1", 1, "2001:db8:1:2::/64"),
        ("[2001:db8:1:2::5]:443", "127.0.0.1", 1, "2001:db8:1:2::/64"),
        (None, "::ffff:127.0.0.1", 0, "127.0.0.1"),
    ],
)
def test_client_key(xff, peer, trusted, expected):
    assert client_key(xff, peer, trusted) == expected
