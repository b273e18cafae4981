"""What the culler culls, and why: pure decisions (data in, decisions out, no I/O).

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

0. An unclaimed warm-pool server (its user is in :data:`cnbi_spawner.pool.POOL_GROUP`) is
   never culled and its user never deleted: the pool manager owns it until a learner
   claims it (the claim leaves the group and restarts the idle clock).
1. A server with a pending action (spawn or stop) is never touched, and its user
   is not deleted this pass: the hub is busy with it; the next pass will see it.
2. A server that is neither ready nor pending is left alone (not ours to judge), and
   a user model without ``servers`` (a token lacking ``read:servers``) is never deleted.
3. Idle time is ``now - last_activity`` of the server (``started`` if there was
   no activity yet); a user's idle time is ``now - last_activity`` of the user
   (``created`` if none). Timestamps in the future count as "active now".

Deadlines and the warning (:func:`server_deadlines`, :func:`session_deadline`): a server is
stopped at ``last_activity + idle_timeout`` ("idle") or ``started + max_age`` ("max-age"),
whichever comes first; from ``warn_lead`` seconds before that the server is in its *warn
stage* (kept, reason ``warn-idle``/``warn-max-age``, logged by the culler). This module is
the one owner of that rule: the culler acts on it and the hub tells the learner's
JupyterLab the same deadline (:mod:`cnbi_spawner.lab_deadline`), never computed elsewhere.
4. A user is deleted only when every server it had is stopped in this pass (or it
   had none); a stop answered "202, still stopping" postpones the delete.
5. Everything is idempotent: a 404 from the hub or Kubernetes means "already
   gone" and counts as done, so an interrupted pass is finished by the next one.

PVCs: KubeSpawner labels user storage ``component=singleuser-storage`` and
``hub.jupyter.org/username=<safe slug>`` and annotates the raw user name. Each
pass lists those PVCs once; after an anonymous user is deleted its PVCs are
deleted, and PVCs of anonymous users who no longer exist in the hub (orphans from
an interrupted pass) are deleted once they are older than ``abandoned_grace``.


:class:`~cnbi_spawner.service.culler.Culler` lists the users and PVCs, asks :func:`decide`
and :func:`orphan_pvcs`, and acts on the answers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from ..anonymous import ANONYMOUS_GROUP, is_anonymous
from ..pool import POOL_GROUP

PVC_COMPONENT_SELECTOR = "component=singleuser-storage"
USERNAME_KEY = "hub.jupyter.org/username"


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
    warn_lead: float = 120


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


def server_deadlines(server: dict, limits: Thresholds) -> dict[str, datetime]:
    """``{"idle": when, "max-age": when}`` for a server model (``started``, ``last_activity``);
    a limit that is off (or a time that is unknown) has no entry."""
    started = parse_time(server.get("started"))
    last = parse_time(server.get("last_activity")) or started
    out = {}
    if limits.idle_timeout and last is not None:
        out["idle"] = last + timedelta(seconds=limits.idle_timeout)
    if limits.max_age and started is not None:
        out["max-age"] = started + timedelta(seconds=limits.max_age)
    return out


def _earliest(deadlines: dict[str, datetime]) -> tuple[datetime, str] | None:
    return min(((when, reason) for reason, when in deadlines.items()), default=None)


def session_deadline(user: dict, server_name: str, policy: CullPolicy, culling: bool) -> dict:
    """What a learner's JupyterLab is told about one server of ``user`` (a hub user model):
    ``kind``, this kind's ``idle_timeout``/``max_age`` (0: off, or culling off), ``warn_lead``,
    the server's ``started``/``last_activity``, the next ``deadline`` with its ``reason``,
    ``warn_at`` and ``max_age_at`` (datetimes or ``None``). Pool servers have no deadline."""
    kind = user_kind(user, policy)
    limits = policy.anonymous if kind == "anonymous" else policy.named
    server = (user.get("servers") or {}).get(server_name) or {}
    exempt = not culling or POOL_GROUP in (user.get("groups") or ())
    if server_name and not policy.cull_named_servers:
        exempt = True
    deadlines = {} if exempt else server_deadlines(server, limits)
    earliest = _earliest(deadlines)
    return {
        "kind": kind,
        "idle_timeout": 0 if exempt else limits.idle_timeout,
        "max_age": 0 if exempt else limits.max_age,
        "warn_lead": policy.warn_lead,
        "started": parse_time(server.get("started")),
        "last_activity": parse_time(server.get("last_activity")),
        "deadline": earliest[0] if earliest else None,
        "reason": earliest[1] if earliest else None,
        "warn_at": earliest[0] - timedelta(seconds=policy.warn_lead) if earliest else None,
        "max_age_at": deadlines.get("max-age"),
    }


def _decide_server(
    name: str, server_name: str, server: dict, now: datetime, kind: str, limits: Thresholds, policy
) -> CullDecision:
    started = parse_time(server.get("started"))
    age = _seconds_since(started, now)
    idle = _seconds_since(parse_time(server.get("last_activity")) or started, now)

    def verdict(action: Action, reason: str) -> CullDecision:
        return CullDecision(name, server_name, action, reason, kind, idle, age)

    if server.get("pending"):
        return verdict(Action.KEEP, f"pending-{server['pending']}")
    if not server.get("ready"):
        return verdict(Action.KEEP, "not-ready")
    if server_name and not policy.cull_named_servers:
        return verdict(Action.KEEP, "named-server")
    deadlines = server_deadlines(server, limits)
    for reason in ("idle", "max-age"):
        if reason in deadlines and now >= deadlines[reason]:
            return verdict(Action.STOP, reason)
    earliest = _earliest(deadlines)
    if policy.warn_lead and earliest and now >= earliest[0] - timedelta(seconds=policy.warn_lead):
        return verdict(Action.KEEP, f"warn-{earliest[1]}")  # the open JupyterLab warns now
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
    if POOL_GROUP in (user.get("groups") or ()):  # unclaimed pool server: the pool's own
        pool = [CullDecision(name, sname, Action.KEEP, "pool", kind) for sname in sorted(servers)]
        return [*pool, CullDecision(name, None, Action.KEEP, "pool", kind)]
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
