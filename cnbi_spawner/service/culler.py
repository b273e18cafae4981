"""The culler: stop idle servers, delete throw-away learners and their storage.

Policy (what gets culled, and why)
----------------------------------
Every ``cull_every`` seconds the service pages through the hub's user list
(``GET /hub/api/users?state=active`` and ``?state=inactive``, paginated like
jupyterhub-idle-culler 2.x) and asks :func:`decide` about each user. Users fall
into two kinds, decided by :func:`cnbi_spawner.anonymous.is_anonymous` (group
``anonymous`` or, optionally, a UUID name):

* **anonymous** learners (created by ``/tmplogin``) get short thresholds: a server
  idle for ``idle_timeout`` (default 10 min) or older than ``max_age`` (default 6 h,
  even if active) is stopped, and once all of a learner's servers are gone the
  user is deleted with its PVCs. An anonymous user *without* a server (an
  abandoned login, a failed spawn, a learner who stopped their server) is deleted
  after ``abandoned_grace`` seconds without activity.
* **named** users (course authors, staff) get longer thresholds (idle 1 h, no max
  age) and are never deleted unless ``cull_named_users`` is set; admins are never
  deleted.

Safety rules, in order of precedence:

1. A server with a pending action (spawn or stop) is never touched, and its user
   is not deleted this pass: the hub is busy with it; the next pass will see it.
2. A server that is neither ready nor pending is left alone (not ours to judge), and
   a user model without ``servers`` (a token lacking ``read:servers``) is never deleted.
3. Idle time is ``now - last_activity`` of the server (``started`` if there was
   no activity yet); a user's idle time is ``now - last_activity`` of the user
   (``created`` if none). Timestamps in the future count as "active now".
4. A user is deleted only when every server it had is stopped in this pass (or it
   had none); a stop answered "202, still stopping" postpones the delete.
5. Everything is idempotent: a 404 from the hub or Kubernetes means "already
   gone" and counts as done, so an interrupted pass is finished by the next one.

PVCs: KubeSpawner labels user storage ``component=singleuser-storage`` and
``hub.jupyter.org/username=<safe slug>`` and annotates the raw user name. Each
pass lists those PVCs once; after an anonymous user is deleted its PVCs are
deleted, and PVCs of anonymous users who no longer exist in the hub (orphans from
an interrupted pass) are deleted once they are older than ``abandoned_grace``.

:func:`decide` is pure (data in, decisions out); :class:`Culler` does the I/O
with bounded concurrency, honours ``dry_run`` and logs one line per action with
user, reason and idle time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from ..anonymous import ANONYMOUS_GROUP, is_anonymous

log = logging.getLogger("cnbi.culler")

PVC_COMPONENT_SELECTOR = "component=singleuser-storage"
USERNAME_KEY = "hub.jupyter.org/username"


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Limits for one kind of user. ``0`` switches a limit off."""

    idle_timeout: float
    max_age: float = 0
    cull_users: bool = False


@dataclass(frozen=True, slots=True)
class CullPolicy:
    """Everything :func:`decide` needs to know, in one value."""

    anonymous: Thresholds = Thresholds(idle_timeout=600, max_age=6 * 3600, cull_users=True)
    named: Thresholds = Thresholds(idle_timeout=3600, max_age=0, cull_users=False)
    abandoned_grace: float = 600
    anonymous_group: str = ANONYMOUS_GROUP
    uuid_names: bool = True
    cull_named_servers: bool = True


class Action(StrEnum):
    KEEP = "keep"
    STOP = "stop"  # stop one server
    DELETE_USER = "delete_user"


@dataclass(frozen=True, slots=True)
class CullDecision:
    """One verdict: about a server (``server`` is its name, ``""`` = default) or the user
    (``server is None``)."""

    user: str
    server: str | None
    action: Action
    reason: str
    kind: str  # "anonymous" | "named"
    idle_seconds: float | None = None
    age_seconds: float | None = None

    @property
    def culls(self) -> bool:
        return self.action is not Action.KEEP


def parse_time(value: str | None) -> datetime | None:
    """Hub ISO timestamps ('...Z' or offset); naive means UTC. ``None``/bad -> ``None``."""
    if not value or not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _seconds_since(then: datetime | None, now: datetime) -> float | None:
    if then is None:
        return None
    return max(0.0, (now - then).total_seconds())


def user_kind(user: dict, policy: CullPolicy) -> str:
    anon = is_anonymous(
        str(user.get("name", "")),
        user.get("groups") or (),
        group=policy.anonymous_group,
        uuid_names=policy.uuid_names,
    )
    return "anonymous" if anon else "named"


def _decide_server(
    name: str, server_name: str, server: dict, now: datetime, kind: str, limits: Thresholds, policy
) -> CullDecision:
    started = parse_time(server.get("started"))
    age = _seconds_since(started, now)
    last = parse_time(server.get("last_activity")) or started
    idle = _seconds_since(last, now)

    def verdict(action: Action, reason: str) -> CullDecision:
        return CullDecision(name, server_name, action, reason, kind, idle, age)

    if server.get("pending"):
        return verdict(Action.KEEP, f"pending-{server['pending']}")
    if not server.get("ready"):
        return verdict(Action.KEEP, "not-ready")
    if server_name and not policy.cull_named_servers:
        return verdict(Action.KEEP, "named-server")
    if limits.idle_timeout and idle is not None and idle >= limits.idle_timeout:
        return verdict(Action.STOP, "idle")
    if limits.max_age and age is not None and age >= limits.max_age:
        return verdict(Action.STOP, "max-age")
    return verdict(Action.KEEP, "active")


def decide(user: dict, now: datetime, policy: CullPolicy) -> list[CullDecision]:
    """Decide about one hub user model: one decision per server, then one for the user.

    ``user`` is a model from ``GET /hub/api/users`` (needs ``name``, ``groups``,
    ``admin``, ``created``, ``last_activity``, ``servers``). The last decision
    always has ``server=None`` and says whether the user itself is deleted.
    """
    name = str(user.get("name", ""))
    kind = user_kind(user, policy)
    limits = policy.anonymous if kind == "anonymous" else policy.named
    servers: dict[str, Any] = user.get("servers") or {}
    decisions = [
        _decide_server(name, sname, server or {}, now, kind, limits, policy)
        for sname, server in sorted(servers.items())
    ]

    created = parse_time(user.get("created"))
    age = _seconds_since(created, now)
    idle = _seconds_since(parse_time(user.get("last_activity")) or created, now)

    def user_verdict(action: Action, reason: str) -> list[CullDecision]:
        return [*decisions, CullDecision(name, None, action, reason, kind, idle, age)]

    if "servers" not in user:
        # without read:servers we cannot tell a running learner from an abandoned one
        return user_verdict(Action.KEEP, "servers-unknown")
    if not limits.cull_users:
        return user_verdict(Action.KEEP, "user-culling-off")
    if user.get("admin"):
        return user_verdict(Action.KEEP, "admin")
    if decisions:
        kept = [d for d in decisions if not d.culls]
        if kept:
            return user_verdict(Action.KEEP, "servers-remain")
        # every server goes this pass: the user goes with them, for the same reason
        reasons = {d.reason for d in decisions}
        return user_verdict(Action.DELETE_USER, "idle" if "idle" in reasons else "max-age")
    # no server at all
    grace = policy.abandoned_grace if kind == "anonymous" else limits.idle_timeout
    if grace and idle is not None and idle >= grace:
        return user_verdict(Action.DELETE_USER, "abandoned" if kind == "anonymous" else "idle")
    if limits.max_age and age is not None and age >= limits.max_age:
        return user_verdict(Action.DELETE_USER, "max-age")
    return user_verdict(Action.KEEP, "recent")


def pvc_owner(pvc: dict) -> str | None:
    """The hub user name a KubeSpawner PVC belongs to (annotation, else label slug)."""
    meta = pvc.get("metadata") or {}
    return (meta.get("annotations") or {}).get(USERNAME_KEY) or (meta.get("labels") or {}).get(
        USERNAME_KEY
    )


def orphan_pvcs(
    pvcs: Iterable[dict], known_users: set[str], listed_at: datetime, policy: CullPolicy
) -> list[dict]:
    """PVCs of anonymous users the hub no longer has, old enough not to be a race.

    ``listed_at`` is when the user listing began: a user created before it is in
    ``known_users``; the grace margin covers clock skew and slow listings.
    """
    out = []
    for pvc in pvcs:
        owner = pvc_owner(pvc)
        if not owner or owner in known_users:
            continue
        if not is_anonymous(owner, (), uuid_names=policy.uuid_names):
            continue  # a named user's storage is never ours to sweep
        created = parse_time((pvc.get("metadata") or {}).get("creationTimestamp"))
        if created is None or (listed_at - created).total_seconds() < policy.abandoned_grace:
            continue
        out.append(pvc)
    return out


# --------------------------------------------------------------------------- I/O


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
    ) -> None:
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
        now = now or datetime.now(UTC)
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
            try:
                await asyncio.wait_for(stop.wait(), timeout=every)
            except TimeoutError:
                pass
