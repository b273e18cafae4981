"""Prometheus metrics of the ``cnbi`` service, and ``GET <prefix>metrics``.

One :class:`ServiceMetrics` per service process, on its own
``prometheus_client.CollectorRegistry`` (so tests can run several in one
process). Other parts increment what they own through ``settings["cnbi"].metrics``:
the builds API uses ``build_requests`` (Counter, label ``phase``) when it
accepts/observes a build and ``builds`` (Gauge, label ``phase``) for the current
count per phase.

The endpoint is unauthenticated, like the hub's ``/hub/health``: it shows counts,
never user names. Put it behind the proxy's network policy if that matters.
"""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from tornado import web

PREFIX = "cnbi_service"


class ServiceMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.culls = Counter(
            f"{PREFIX}_culls",
            "Cull actions taken, by what was culled and why",
            ["kind", "reason"],
            registry=r,
        )
        self.cull_errors = Counter(
            f"{PREFIX}_cull_errors", "Cull passes that failed as a whole", registry=r
        )
        self.cull_pass_duration = Histogram(
            f"{PREFIX}_cull_pass_duration_seconds",
            "Time taken by one cull pass",
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
            registry=r,
        )
        self.last_cull_pass = Gauge(
            f"{PREFIX}_last_cull_pass_timestamp_seconds",
            "When the last cull pass finished (Unix time)",
            registry=r,
        )
        self.anonymous_users = Gauge(
            f"{PREFIX}_anonymous_users",
            "Anonymous users the hub had at the last cull pass",
            registry=r,
        )
        self.registry_images = Gauge(
            f"{PREFIX}_registry_images",
            "Images in the known-image registry",
            ["launchable"],
            registry=r,
        )
        self.registry_synced = Gauge(
            f"{PREFIX}_registry_synced", "1 when the image registry has synced", registry=r
        )
        self.registry_sync_lag = Gauge(
            f"{PREFIX}_registry_sync_lag_seconds",
            "Seconds since the image registry lost its watch (0 when up to date)",
            registry=r,
        )
        self.build_requests = Counter(
            f"{PREFIX}_build_requests",
            "Image build requests seen, by phase reached",
            ["phase"],
            registry=r,
        )
        self.builds = Gauge(
            f"{PREFIX}_builds", "Image builds currently in each phase", ["phase"], registry=r
        )

        self.reservation_requests = Counter(
            f"{PREFIX}_reservation_requests",
            "Reservation requests by outcome (booked, refused: no capacity)",
            ["outcome"],
            registry=r,
        )
        self.reserved_seats = Gauge(
            f"{PREFIX}_reserved_seats",
            "Seats booked in reservations not yet over, per size",
            ["size"],
            registry=r,
        )

        per_pool = ["course", "size"]
        self.pool_target, self.pool_ready, self.pool_starting = (
            Gauge(f"{PREFIX}_pool_{name}", text, per_pool, registry=r)
            for name, text in (
                ("target", "Ready warm-pool servers wanted per course and size"),
                ("ready", "Unclaimed warm-pool servers ready to hand out, per course and size"),
                ("starting", "Warm-pool servers starting, per course and size"),
            )
        )
        self.pool_claimed, self.pool_start_failures, self.pool_start_refusals = (
            Counter(f"{PREFIX}_pool_{name}", text, per_pool, registry=r)
            for name, text in (
                ("claimed", "Warm-pool servers learners claimed at /tmplogin, per course and size"),
                ("start_failures", "Warm-pool server starts that failed"),
                (
                    "start_refusals",
                    "Warm-pool server starts the hub refused for lack of room "
                    "(max_anonymous_users, concurrent_spawn_limit)",
                ),
            )
        )
        self.pool_drained = Counter(
            f"{PREFIX}_pool_drained",
            "Warm-pool servers removed unclaimed, by reason",
            ["reason"],
            registry=r,
        )
        self.pool_start_seconds = Histogram(
            f"{PREFIX}_pool_start_seconds",
            "Time from creating a pool user to its server answering 201 (started at once)",
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300),
            registry=r,
        )

    def observe_pools(self, counts) -> None:
        """Set the pool gauges from ``{PoolKey: PoolCount}`` (pools gone drop to 0)."""
        for gauge, field in (
            (self.pool_target, "target"),
            (self.pool_ready, "ready"),
            (self.pool_starting, "starting"),
        ):
            for labels in list(getattr(gauge, "_metrics", {})):
                gauge.labels(*labels).set(0)
            for key, count in counts.items():
                gauge.labels(course=key.course, size=key.size).set(getattr(count, field))

    def observe_pass(self, result) -> None:
        self.cull_pass_duration.observe(result.duration)
        self.last_cull_pass.set(time.time())
        self.anonymous_users.set(result.anonymous_live)

    def observe_registry(self, registry) -> None:
        """Refresh the registry gauges (called just before each scrape)."""
        if registry is None:
            return
        images = registry.images()
        launchable = sum(1 for i in images if i.launchable)
        self.registry_images.labels(launchable="true").set(launchable)
        self.registry_images.labels(launchable="false").set(len(images) - launchable)
        self.registry_synced.set(1 if registry.synced else 0)
        self.registry_sync_lag.set(stale_seconds(registry))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def stale_seconds(registry) -> float:
    since = getattr(registry, "stale_since", None)
    if since is None:
        return 0.0
    # stale_since is a time.time() or time.monotonic() stamp; accept either
    now = time.time() if since > 1e9 else time.monotonic()
    return max(0.0, now - since)


class MetricsHandler(web.RequestHandler):
    def get(self) -> None:
        ctx = self.settings["cnbi"]
        try:
            ctx.metrics.observe_registry(ctx.registry)
        except Exception:  # a scrape must not fail because the registry is mid-change
            pass
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.set_header("Cache-Control", "no-store")
        self.write(ctx.metrics.render())
