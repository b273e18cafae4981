"""Claiming a warm pool server for a learner at ``/tmplogin`` (hub process).

Owns the one database step that hands an unclaimed pool user (group
:data:`~cnbi_spawner.pool.POOL_GROUP`, see :mod:`cnbi_spawner.pool`) to a learner, and the
hub-side pool metrics. The tmplogin handler calls :func:`claim_pool_server` after its
checks (rate limit, signature, plan, reuse); which member is chosen is
:func:`cnbi_spawner.pool.pick_server`.

Atomic by construction: choosing the member, moving it from the pool group to the
anonymous group, and restarting its idle clock all happen in **one synchronous stretch
ending in one commit**. The hub is one process with one event loop, so no other request
runs in between (an ``await`` there would also let another request's ``finish()`` roll the
session back); the commit makes the claim survive a hub restart, and the ``cnbi``
service, which only drains users still in the pool group (re-checked after taking them
out of it), never touches a claimed one.

The claimed server's ``started`` and ``last_activity`` become the claim time: the culler's
idle timeout and maximum age count from when the learner got it, not from when the pool
started it.

Cost does not grow with the pool (measured with ``benchmarks/launch_storm.py --pool``): the
members are read from the group's membership rows in small batches, oldest first, until a
ready one fits (usually the first), never as the ORM's ``Group.users`` list; and the big
groups' ``users`` lists are unloaded before the move, so the commit's flush compares the
claimed user's own few groups instead of two lists of a thousand members each. The pool's
``orm.Group`` is kept while it is a live object of the hub's session (no lookup per claim).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram

from .pool import POOL_GROUP, PoolKey, member_key, pick_server


def _collector(factory: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    try:
        return factory(name, *args, registry=REGISTRY, **kwargs)
    except ValueError:  # this module was imported twice (e.g. reloaded): reuse the collector
        names = REGISTRY._names_to_collectors
        return names.get(name) or names[name + "_total"]


POOL_CLAIMS = _collector(
    Counter,
    "cnbi_pool_claims",
    "Launches at /tmplogin that looked for a warm pool server, by course, size and outcome "
    "(claimed, or empty: none ready, the launch spawns as usual)",
    ["course", "size", "result"],
)
CLAIM_SECONDS = _collector(
    Histogram,
    "cnbi_pool_claim_seconds",
    "Time /tmplogin spent on a launch answered with a claimed pool server "
    "(request received to redirect into the server)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


def claim_pool_server(handler: Any, auth: Any, key: PoolKey) -> Any:
    """Hand a ready pool server of exactly ``key`` to the caller, or return ``None``.

    ``handler`` is a hub ``BaseHandler`` (for ``db`` and ``users``), ``auth`` the
    ``TmpLoginMixin`` (it owns the anonymous group). Returns the hub ``User`` now in the
    anonymous group. Synchronous on purpose: see the module docstring.
    """
    from jupyterhub.utils import utcnow

    db = handler.db
    group = _pool_group(db)
    # lazily: the walk stops at the first fit (usually the oldest member), not at the end
    members = _members(db, group, handler.users) if group is not None else iter(())
    found = pick_server((((u, s), member, ready) for u, s, member, ready in members), key)
    if group is None or found is None:
        POOL_CLAIMS.labels(course=key.course, size=key.size, result="empty").inc()
        return None
    user, spawner = found
    db.expire(group, ["users"])  # unloaded: the flush below need not diff the whole pool
    user.orm_user.groups.remove(group)
    auth.add_to_group(user.orm_user, db, commit=False)
    now = utcnow(with_tz=False)
    user.orm_user.last_activity = now
    spawner.orm_spawner.started = now
    spawner.orm_spawner.last_activity = now
    db.commit()
    POOL_CLAIMS.labels(course=key.course, size=key.size, result="claimed").inc()
    return user


Member = tuple[Any, Any, PoolKey | None, bool]

#: membership rows read per query while looking for a fitting member
BATCH = 32

_group_cache: dict[str, Any] = {}


def _pool_group(db: Any) -> Any:
    """The pool's ``orm.Group`` (``None`` while no pool exists), looked up once and kept
    while it is a live object of ``db``."""
    from jupyterhub import orm
    from sqlalchemy import inspect

    group = _group_cache.get(POOL_GROUP)
    if group is not None:
        state = inspect(group)
        if state.session is db and state.persistent:
            return group
    group = orm.Group.find(db, POOL_GROUP)
    if group is not None:
        _group_cache[POOL_GROUP] = group
    return group


def _members(db: Any, group: Any, users: Any) -> Iterator[Member]:
    """The pool group's users as ``(user, spawner, pool key, ready)``, oldest (lowest user
    id) first, read from the membership table ``BATCH`` rows at a time as the caller
    iterates."""
    from jupyterhub.orm import user_group_map
    from sqlalchemy import select

    column = user_group_map.c.user_id
    query = select(column).where(user_group_map.c.group_id == group.id).order_by(column)
    last = None
    while True:
        page = query if last is None else query.where(column > last)
        ids = list(db.execute(page.limit(BATCH)).scalars())
        for user_id in ids:
            user = users[user_id]
            spawner = user.spawners.get("")  # only servers this hub process knows are running
            ready = spawner is not None and spawner.ready and not spawner.pending
            options = spawner.user_options if spawner is not None else None
            yield user, spawner, member_key(options), ready
        if len(ids) < BATCH:
            return
        last = ids[-1]


def ready_pool_servers(db: Any, users: Any) -> collections.Counter[str]:
    """Ready, unclaimed pool servers per pool (``str(PoolKey)``), for the waiting room."""
    group = _pool_group(db)
    if group is None:
        return collections.Counter()
    members = _members(db, group, users)
    return collections.Counter(str(member) for _, _, member, ready in members if ready and member)


def observe_claim(started: float) -> None:
    """Record a claimed launch's time in /tmplogin (``started``: ``time.monotonic()``)."""
    CLAIM_SECONDS.observe(time.monotonic() - started)
