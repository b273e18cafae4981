"""The culler: stop idle servers, delete throw-away learners and their storage.

The policy (what gets culled, why, and the safety rules) is :mod:`.cull_policy`, pure
data in, decisions out. :class:`Culler` does the I/O: every
``cull_every`` seconds it pages through the hub's user list (``GET
/hub/api/users?state=active`` and ``?state=inactive``, paginated like
jupyterhub-idle-culler 2.x) and lists the user PVCs once, asks :func:`decide` about each
user and :func:`orphan_pvcs` about the PVCs, then acts with bounded concurrency, honours
``dry_run`` and logs one line per action with user, reason and idle time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..pause import pause
from .cull_policy import (
    Action,
    CullDecision,
    CullPolicy,
    decide,
    orphan_pvcs,
    pvc_owner,
    user_kind,
)

log = logging.getLogger("cnbi.culler")


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    s = int(seconds)
    return f"{s // 3600:02}:{s % 3600 // 60:02}:{s % 60:02}"


@dataclass
class PassResult:
    """What one pass did (or, in dry-run, would have done)."""

    users_seen: int = 0
    servers_stopped: int = 0
    users_deleted: int = 0
    pvcs_deleted: int = 0
    errors: int = 0
    postponed: int = 0
    duration: float = 0.0
    list_seconds: float = 0.0  # part of ``duration`` spent listing users and PVCs
    anonymous_live: int = 0  # anonymous users left after the pass
    decisions: list[CullDecision] = field(default_factory=list)
    deleted_users: set[str] = field(default_factory=set)


class Culler:
    """Runs cull passes: list users, :func:`decide`, act with bounded concurrency.

    ``hub`` is a :class:`~cnbi_spawner.service.hubapi.HubClient`; ``kube`` a
    :class:`~cnbi_spawner.service.kubeapi.UserStorage` (``None``: no PVC work).
    """

    def __init__(
        self,
        hub,
        policy: CullPolicy,
        *,
        kube=None,
        concurrency: int = 10,
        dry_run: bool = False,
        metrics=None,
        logger: logging.Logger | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.clock = clock  # "now" of the idle and age thresholds
        self.hub = hub
        self.kube = kube
        self.policy = policy
        self.concurrency = max(1, concurrency)
        self.dry_run = dry_run
        self.metrics = metrics
        self.log = logger or log
        self._lock = asyncio.Lock()

    async def run_once(self, now: datetime | None = None) -> PassResult:
        async with self._lock:  # never two passes at once
            t0 = time.monotonic()
            result = await self._pass(now)
            result.duration = time.monotonic() - t0
            if self.metrics is not None:
                self.metrics.observe_pass(result)
            self.log.info(
                "Cull pass%s: %d users seen, %d servers stopped, %d users deleted, "
                "%d PVCs deleted, %d postponed, %d errors in %.2fs (listing %.2fs)",
                " (dry run)" if self.dry_run else "",
                result.users_seen,
                result.servers_stopped,
                result.users_deleted,
                result.pvcs_deleted,
                result.postponed,
                result.errors,
                result.duration,
                result.list_seconds,
            )
            return result

    async def _pass(self, now: datetime | None) -> PassResult:
        listed_at = datetime.now(UTC)
        t0 = time.monotonic()
        users: dict[str, dict] = {}
        for state in ("active", "inactive"):
            async for user in self.hub.list_users(state=state):
                users.setdefault(user["name"], user)
        pvcs = await self.kube.list_pvcs() if self.kube is not None else []
        now = now or self.clock()
        result = PassResult(users_seen=len(users), list_seconds=time.monotonic() - t0)
        kinds = [user_kind(u, self.policy) for u in users.values()]
        result.anonymous_live = kinds.count("anonymous")

        by_owner: dict[str, list[dict]] = {}
        for pvc in pvcs:
            owner = pvc_owner(pvc)
            if owner:
                by_owner.setdefault(owner, []).append(pvc)

        hub_slots = asyncio.Semaphore(self.concurrency)
        kube_slots = asyncio.Semaphore(self.concurrency)

        async def one(user: dict) -> None:
            decisions = decide(user, now, self.policy)
            result.decisions.extend(decisions)
            for d in decisions:
                if d.reason.startswith("warn-"):
                    self.log.info(
                        "Warn stage: server %r of %s (%s) is culled soon (%s), idle %.0fs",
                        d.server, d.user, d.kind, d.reason[len("warn-") :], d.idle_seconds or 0,
                    )  # fmt: skip
            if not any(d.culls for d in decisions):
                return
            async with hub_slots:
                try:
                    deleted = await self._act(user, decisions, result)
                except Exception as e:  # one user's failure must not stop the pass
                    result.errors += 1
                    self.log.error("Cull of %s failed: %s", user["name"], e)
                    return
            # storage goes after the user, outside the hub slot: the hub moves on meanwhile
            if deleted and decisions[-1].kind == "anonymous" and self.kube is not None:
                async with kube_slots:
                    pvcs = by_owner.get(user["name"], [])
                    await self._delete_pvcs(pvcs, result, reason="user-deleted")

        await asyncio.gather(*(one(u) for u in users.values()))

        if self.kube is not None:
            orphans = orphan_pvcs(pvcs, set(users), listed_at, self.policy)
            for pvc in orphans:
                self.log.info(
                    "Deleting orphan PVC %s of deleted anonymous user %s",
                    pvc["metadata"]["name"],
                    pvc_owner(pvc),
                )
            await self._delete_pvcs(orphans, result, reason="orphan")
        return result

    async def _act(self, user: dict, decisions, result: PassResult) -> bool:
        """Stop servers / delete the user as decided; True when the user was deleted."""
        name = user["name"]
        stops = [d for d in decisions if d.server is not None and d.action is Action.STOP]
        user_decision = decisions[-1]
        for d in stops:
            self.log.info(
                "Culling server %s%s (%s user, reason %s, idle %s, age %s)%s",
                name,
                f"/{d.server}" if d.server else "",
                d.kind,
                d.reason,
                fmt_seconds(d.idle_seconds),
                fmt_seconds(d.age_seconds),
                " [dry run]" if self.dry_run else "",
            )
        if user_decision.action is Action.DELETE_USER:
            self.log.info(
                "Deleting %s user %s (reason %s, idle %s, age %s, %d servers)%s",
                user_decision.kind,
                name,
                user_decision.reason,
                fmt_seconds(user_decision.idle_seconds),
                fmt_seconds(user_decision.age_seconds),
                len(stops),
                " [dry run]" if self.dry_run else "",
            )
        if self.dry_run:
            result.servers_stopped += len(stops)
            result.users_deleted += user_decision.action is Action.DELETE_USER
            self._count(stops, user_decision)
            return user_decision.action is Action.DELETE_USER  # dry run: PVCs logged too

        # The hub stops a user's *default* server itself when deleting the user, so a
        # learner with only that server takes one request instead of two.
        only_default = all(d.server == "" for d in stops)
        if not (user_decision.action is Action.DELETE_USER and only_default):
            outcomes = await asyncio.gather(*(self.hub.stop_server(name, d.server) for d in stops))
            stopped = [d for d, done in zip(stops, outcomes, strict=True) if done]
            result.servers_stopped += len(stopped)
            self._count(stopped, None)
            if len(stopped) < len(stops):
                result.postponed += 1
                self.log.info("Server of %s is slow to stop; user deletion postponed", name)
                return False
            stops = []
        if user_decision.action is not Action.DELETE_USER:
            return False
        if not await self.hub.delete_user(name):
            result.postponed += 1
            self.log.info("User %s is busy (stop pending); deletion postponed", name)
            return False
        result.servers_stopped += len(stops)
        result.users_deleted += 1
        result.deleted_users.add(name)
        result.anonymous_live -= user_decision.kind == "anonymous"
        self._count(stops, user_decision)
        return True

    async def _delete_pvcs(self, pvcs: list[dict], result: PassResult, *, reason: str) -> None:
        for pvc in pvcs:
            pvc_name = pvc["metadata"]["name"]
            if self.dry_run:
                self.log.info("Would delete PVC %s [dry run]", pvc_name)
                continue
            try:
                deleted = await self.kube.delete_pvc(pvc_name)
            except Exception as e:
                result.errors += 1
                self.log.error("Deleting PVC %s failed: %s", pvc_name, e)
                continue
            if not deleted:  # already gone (KubeSpawner's delete_forever got there first)
                continue
            result.pvcs_deleted += 1
            self.log.info("Deleted PVC %s of %s (%s)", pvc_name, pvc_owner(pvc), reason)
            if self.metrics is not None:
                self.metrics.culls.labels(kind="pvc", reason=reason).inc()

    def _count(self, stops: list[CullDecision], user_decision: CullDecision | None) -> None:
        if self.metrics is None:
            return
        for d in stops:
            self.metrics.culls.labels(kind=f"{d.kind}-server", reason=d.reason).inc()
        if user_decision is not None:
            self.metrics.culls.labels(
                kind=f"{user_decision.kind}-user", reason=user_decision.reason
            ).inc()

    async def run_forever(self, every: float, stop: asyncio.Event) -> None:
        """A pass now, then every ``every`` seconds until ``stop`` is set."""
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception as e:
                self.log.error("Cull pass failed: %s", e)
                if self.metrics is not None:
                    self.metrics.cull_errors.inc()
            await pause(every, until=stop)
