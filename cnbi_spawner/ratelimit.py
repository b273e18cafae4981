"""Token buckets that keep ``/tmplogin`` from being used to flood the hub.

Policy, in the order the login handler applies it:

1. **Per client.** Each client (see :func:`client_key`) has a bucket of ``burst`` tokens that
   refills at ``rate`` tokens per second; a login takes one token. The default is generous
   (300 per minute, burst 300) because a whole class often sits behind one NAT address.
2. **Global.** One bucket for the whole hub, so many clients together cannot exceed what the
   hub's database and spawner can absorb. ``/tmplogin`` takes this token last, once a launch
   can start (``check(key, hub_wide=False)`` first, :meth:`RateLimiter.take_global` later),
   so learners queued in the waiting room do not use up the budget of those it admits.

A refused check consumes nothing (neither bucket), so a client hammering the hub does not
starve itself further, and a client refused by the global bucket in ``check`` keeps its own
tokens.

Memory is bounded: a bucket that has refilled to full is indistinguishable from a fresh one,
so it is dropped when it reaches the front of the LRU order, and at most ``max_clients``
buckets are kept (the least recently used go first).

Everything here is pure and synchronous; time comes from an injectable ``clock`` (seconds,
monotonic) so tests drive it by hand. Nothing here does I/O or logs.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rate:
    """``per_minute`` tokens per minute, at most ``burst`` stored. ``per_minute <= 0``: no limit."""

    per_minute: float
    burst: int

    @property
    def unlimited(self) -> bool:
        return self.per_minute <= 0

    @property
    def per_second(self) -> float:
        return self.per_minute / 60.0

    @property
    def capacity(self) -> float:
        return float(max(1, self.burst))


class TokenBucket:
    """A classic token bucket; ``tokens`` is refreshed lazily on each look."""

    __slots__ = ("rate", "tokens", "updated")

    def __init__(self, rate: Rate, now: float) -> None:
        self.rate = rate
        self.tokens = rate.capacity
        self.updated = now

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.rate.capacity, self.tokens + elapsed * self.rate.per_second)
        self.updated = now

    def full_at(self, now: float) -> bool:
        """Would this bucket be full at ``now``? (Then forgetting it loses nothing.)"""
        missing = self.rate.capacity - self.tokens
        return missing <= (now - self.updated) * self.rate.per_second

    def wait_for_one(self) -> float:
        """Seconds until one token is available (0 when one is there now)."""
        if self.tokens >= 1.0:
            return 0.0
        return (1.0 - self.tokens) / self.rate.per_second


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer for one request: allowed, or refused with ``retry_after`` whole seconds."""

    allowed: bool
    retry_after: int = 0
    scope: str = ""  # "client" or "global" when refused


ALLOW = Decision(True)


def _retry_seconds(wait: float) -> int:
    return max(1, math.ceil(wait - 1e-9))


class RateLimiter:
    """Per-client plus global token buckets with bounded memory."""

    def __init__(
        self,
        per_client: Rate,
        global_rate: Rate,
        *,
        max_clients: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_client = per_client
        self.global_rate = global_rate
        self.max_clients = max(1, max_clients)
        self.clock = clock
        self._clients: OrderedDict[str, TokenBucket] = OrderedDict()
        self._global = TokenBucket(global_rate, clock())

    def __len__(self) -> int:
        """Number of client buckets currently held in memory."""
        return len(self._clients)

    def check(self, key: str, *, hub_wide: bool = True) -> Decision:
        """Take one token for ``key`` (and one global token), or say how long to wait.

        ``hub_wide=False``: the client's bucket only; the caller takes the global token
        later with :meth:`take_global` (the waiting room does, once a launch can start).
        """
        now = self.clock()
        self._evict(now)
        bucket = None
        if not self.per_client.unlimited:
            bucket = self._clients.get(key)
            if bucket is None:
                bucket = TokenBucket(self.per_client, now)
                self._clients[key] = bucket
                while len(self._clients) > self.max_clients:
                    self._clients.popitem(last=False)
            else:
                self._clients.move_to_end(key)
                bucket.refill(now)
            wait = bucket.wait_for_one()
            if wait > 0:
                return Decision(False, _retry_seconds(wait), "client")
        if hub_wide and not self.global_rate.unlimited:
            self._global.refill(now)
            wait = self._global.wait_for_one()
            if wait > 0:
                return Decision(False, _retry_seconds(wait), "global")
            self._global.tokens -= 1.0
        if bucket is not None:
            bucket.tokens -= 1.0
        return ALLOW

    def take_global(self, n: int = 1) -> Decision:
        """Take ``n`` global tokens at once, or none and say how long until one is there."""
        if self.global_rate.unlimited or n <= 0:
            return ALLOW
        self._global.refill(self.clock())
        if self._global.tokens < n:
            return Decision(False, _retry_seconds(self._global.wait_for_one()), "global")
        self._global.tokens -= n
        return ALLOW

    def global_available(self) -> int | None:
        """Whole global tokens there now (None: no hub-wide limit)."""
        if self.global_rate.unlimited:
            return None
        self._global.refill(self.clock())
        return int(self._global.tokens)

    def _evict(self, now: float) -> None:
        """Drop least-recently-used buckets that have refilled completely (lossless)."""
        while self._clients:
            key, bucket = next(iter(self._clients.items()))
            if not bucket.full_at(now):
                break
            del self._clients[key]


def _normalise_ip(text: str) -> str | None:
    """Canonical form of one address; IPv6 clients are grouped by their /64 network."""
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "192.0.2.1:443"
        text = text.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


def client_key(forwarded_for: str | None, peer: str, trusted_proxy_count: int) -> str:
    """The address a login is charged to.

    ``peer`` is the TCP peer of the hub; ``forwarded_for`` the raw ``X-Forwarded-For`` header.
    ``trusted_proxy_count`` is how many proxies in front of the hub append to that header
    (configurable-http-proxy is one; an ingress in front of it is another). Only the last
    ``trusted_proxy_count`` entries were written by proxies we trust, so the client is the
    entry at that position from the right; anything further left is client-supplied and
    ignored. With 0 the TCP peer is the client. When the header is shorter than expected,
    the leftmost entry is used (every entry then came from a trusted proxy). An entry that is
    not an IP address falls back to the nearest valid entry to its right, then to the peer.
    """
    peer_key = _normalise_ip(peer) or (peer.strip() or "unknown")
    if trusted_proxy_count <= 0 or not forwarded_for:
        return peer_key
    hops = [h for h in (part.strip() for part in forwarded_for.split(",")) if h]
    if not hops:
        return peer_key
    index = max(0, len(hops) - trusted_proxy_count)
    for hop in hops[index:]:
        key = _normalise_ip(hop)
        if key is not None:
            return key
    return peer_key
