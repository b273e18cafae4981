"""The warm pool manager: keeps each course's pool of ready servers at target (service side).

The rules are :func:`cnbi_spawner.pool.plan_pool`; this module does the I/O. Every
``check_every`` seconds, and at once when the image registry changes, one pass:

1. resolves ``PoolSettings.targets`` against the registry and the sizes
   (``selection.plan_launch`` as an anonymous launch, so aliases and default sizes mean
   what they mean in a link) into :class:`~cnbi_spawner.pool.PoolKey` targets;
2. finds the members of :data:`~cnbi_spawner.pool.POOL_GROUP` (the group's member list and
   the models of members not known to be ready; all users every ``FULL_EVERY`` passes).
   Which image each pool server runs is what the course's image was when this process
   started it, and the user pods' ``cnbi.meteor.zone/image-ref`` annotation (set by the
   spawner) after a registry change or for members this process did not start (one pod
   listing);
3. asks :func:`plan_pool` and acts:

   - **start**: create a UUID user (``POST /users/{name}``), put it in the pool group, start
     its server with the pool's options (plus a launch ticket when links are signed: the
     spawner treats the UUID user as a guest, see ``CNBiSpawner._ticket_key``). A pass's
     starts are spread evenly over ``check_every`` rather than sent at once: a start is
     three requests and a spawn for the hub's one event loop, and fifty at once stalled
     learners' claims behind them for over a second every pass (``launch_storm.py
     --pool``); a start the hub refused meanwhile stops the pass's later ones;
   - **drain**: take the user out of the pool group first, then read it back: if it is in
     the anonymous group a learner claimed it a moment earlier and it is left alone,
     otherwise it is deleted (the hub stops its server). The hub's claim and the group
     removal are each one commit in the hub, so they cannot interleave.

A user that left the pool group into the anonymous group since the last pass was claimed
(``cnbi_service_pool_claimed_total``): one read of the anonymous group's member names per
pass in which members left, not one request per member (a lecture hall claims hundreds a
pass, and those requests competed with the learners' claims on the hub's one event loop).
Logs one line per start, drain and claim with the user and the course.

Hub scopes the service needs for this (:func:`pool_role`, in ``load_roles`` only when a
pool is configured): ``admin:users`` (the REST API creates users only with it),
``groups!group=cnbi-pool``, ``start:servers!group=cnbi-pool``, ``read:groups`` of the
anonymous group.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote

from traitlets import Dict, Float, Int, Integer, Union
from traitlets.config import Configurable

from ..anonymous import ANONYMOUS_GROUP, new_anonymous_name
from ..errors import LaunchError
from ..launch_grammar import TICKET
from ..pause import pause
from ..pool import (
    POOL_GROUP,
    MemberState,
    PoolCount,
    PoolKey,
    PoolMember,
    backoff_seconds,
    count_pools,
    member_key,
    plan_pool,
)
from ..selection import LABEL_PREFIX, plan_launch
from ..signing import launch_ticket
from .hubapi import HubAPIError

log = logging.getLogger("cnbi.pool")

IMAGE_REF_ANNOTATION = LABEL_PREFIX + "image-ref"
#: every this many passes the manager lists all hub users (catching e.g. a ready pool
#: server whose pod died); the passes between read only the pool group
FULL_EVERY = 10
USERNAME_ANNOTATION = "hub.jupyter.org/username"
#: the hub's answers to a pool start that mean "no room now" (see ``cnbi_spawner.pool_starts``)
HUB_FULL = frozenset({429, 503})


def pool_role(
    service_name: str = "cnbi", role_name: str = "cnbi-pool", anonymous_group: str = ANONYMOUS_GROUP
) -> dict:
    """The extra hub role the service needs to keep warm pools (``c.JupyterHub.load_roles``);
    ``anonymous_group``: the guests' group (``GuestPolicy.anonymous_group``), read to count
    claims."""
    return {
        "name": role_name,
        "description": "cnbi service: create warm-pool users and start their servers",
        "scopes": [
            "admin:users",
            f"groups!group={POOL_GROUP}",
            f"admin:groups!group={POOL_GROUP}",
            f"start:servers!group={POOL_GROUP}",
            f"read:groups!group={anonymous_group}",
        ],
        "services": [service_name],
    }


class PoolSettings(Configurable):
    """Warm pools of ready course servers, kept by the ``cnbi`` service."""

    targets = Dict(
        value_trait=Union([Integer(), Dict(value_trait=Integer())]),
        help="""Ready servers to keep per course: {"<course>": n} for the course's default
        size, or {"<course>": {"<size>": n, ...}} per size. Courses and sizes are resolved
        like a launch link's (aliases, anonymous size limits); an unknown one is logged and
        skipped. Empty: no pool.""",
    ).tag(config=True)

    max_concurrent_starts = Int(
        10,
        help="""Most pool servers starting at once over all pools (they share the hub's
        concurrent_spawn_limit and the cluster with learners).""",
    ).tag(config=True)

    check_every = Float(
        3.0,
        help="""Seconds between pool passes (a registry change also triggers one). Each
        pass lists the hub's users once.""",
    ).tag(config=True)


async def pool_pod_images(api_client: Any, namespace: str, timeout: float = 30) -> dict[str, str]:
    """``{hub user name: image its notebook pod runs}`` for KubeSpawner's user pods."""
    from kubernetes_asyncio import client

    core = client.CoreV1Api(api_client)
    async with asyncio.timeout(timeout):
        resp = await core.list_namespaced_pod(
            namespace, label_selector="component=singleuser-server"
        )
    out: dict[str, str] = {}
    for pod in resp.items or []:
        annotations = pod.metadata.annotations or {}
        name = annotations.get(USERNAME_ANNOTATION)
        image = annotations.get(IMAGE_REF_ANNOTATION)
        if name and image and not pod.metadata.deletion_timestamp:
            out[name] = image
    return out


def member_from_model(user: dict) -> PoolMember:
    """A hub user model (in the pool group) as the pure policy sees it."""
    server = (user.get("servers") or {}).get("")
    if not server:
        return PoolMember(user["name"], None, MemberState.BROKEN)
    key = member_key(server.get("user_options"))
    if server.get("pending") == "stop":
        state = MemberState.STOPPING
    elif server.get("pending"):
        state = MemberState.STARTING
    elif server.get("ready"):
        state = MemberState.READY
    else:
        state = MemberState.BROKEN
    return PoolMember(user["name"], key, state)


class PoolManager:
    """Runs pool passes (see the module docstring)."""

    def __init__(
        self,
        hub: Any,
        registry: Any,
        launch_policy: Any,
        settings: PoolSettings,
        *,
        kube: Any = None,
        namespace: str = "default",
        signing_key: bytes = b"",
        metrics: Any = None,
        anonymous_group: str = ANONYMOUS_GROUP,
        extra_targets: Callable[[], Mapping[str, Mapping[str, int]]] | None = None,
    ) -> None:
        self.hub = hub
        self.extra_targets = extra_targets
        self.registry = registry
        self.launch_policy = launch_policy
        self.settings = settings
        self.kube = kube
        self.namespace = namespace
        self.signing_key = signing_key
        self.metrics = metrics
        self.anonymous_group = anonymous_group
        self.counts: dict[PoolKey, PoolCount] = {}  # for the catalog and the gauges
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._starting: dict[str, PoolKey] = {}  # names this process is creating/starting
        self._members: dict[str, PoolKey | None] = {}  # pool members at the last pass
        self._tasks: set[asyncio.Task] = set()
        self._bad_targets: set[str] = set()
        self._failures: dict[PoolKey, int] = {}  # failed starts in a row, per pool
        self._paused_until: dict[PoolKey, float] = {}
        self._refusals = 0  # pool starts the hub refused in a row (no room): all pools wait
        self._hub_full_until = 0.0
        self._counted: set[str] = set()  # broken members already counted as failures
        self._images: dict[str, str | None] = {}  # member -> image its pod runs (None: no pod)
        self._relist = True  # list the pods at the next pass
        self._passes = 0
        self._guests_forbidden = False
        self._ready: dict[str, dict] = {}  # user models of members ready at the last pass
        self.group_ready = False

    # --- targets -------------------------------------------------------------------------

    def resolve_targets(self) -> dict[PoolKey, int]:
        """``PoolSettings.targets`` as exact pool keys (unknown courses logged once), each
        raised to what ``extra_targets`` (booked classes: ``{course: {size: n}}``) asks."""
        out = self._resolve(self.settings.targets.items(), sum)
        if self.extra_targets is not None:
            for key, n in self._resolve(self.extra_targets().items(), max).items():
                out[key] = max(out.get(key, 0), n)
        return out

    def _resolve(
        self, targets: Iterable[tuple[str, Any]], combine: Callable[[tuple[int, int]], int]
    ) -> dict[PoolKey, int]:
        out: dict[PoolKey, int] = {}
        for course, value in targets:
            sizes = value if isinstance(value, Mapping) else {None: value}
            for size, n in sizes.items():
                options = {"course": course} if size is None else {"course": course, "size": size}
                try:
                    plan = plan_launch(options, self.registry, self.launch_policy, anonymous=True)
                except LaunchError as e:
                    label = f"{course}/{size or 'default'}"
                    if label not in self._bad_targets:
                        self._bad_targets.add(label)
                        log.warning("Pool target %s skipped: %s", label, e.message)
                    continue
                key = PoolKey(plan.image.key, plan.size.name)
                out[key] = combine((out.get(key, 0), max(0, int(n))))
        return out

    def current_images(self, targets: dict[PoolKey, int]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for key in targets:
            image = self.registry.get(key.course)
            out[key.course] = image.image if image is not None and image.launchable else None
        return out

    # --- one pass ------------------------------------------------------------------------

    async def run_once(self) -> None:
        async with self._lock:
            await self._pass()

    async def _pass(self) -> None:
        if not self.registry.synced:
            return
        if not self.group_ready:
            await self._ensure_group()
        targets = self.resolve_targets()
        starting = dict(self._starting)  # before listing: a start may finish meanwhile
        pool_users, claimed = await self._pool_users()
        found = [member_from_model(u) for u in pool_users if u["name"] not in starting]
        images = await self._images_of(found)
        members = [
            PoolMember(m.name, m.key, m.state, images.get(m.name)) if m.key else m for m in found
        ]
        members += [PoolMember(n, k, MemberState.STARTING) for n, k in starting.items()]
        self._note_claims(claimed)

        self._note_outcomes(members)
        now = time.monotonic()
        paused = [k for k, until in self._paused_until.items() if until > now]
        plan = plan_pool(
            targets,
            members,
            self.current_images(targets),
            max_starts=self.settings.max_concurrent_starts,
            paused=list(targets) if self._hub_full_until > now else paused,
        )
        for drain in plan.drain:
            key = drain.key or self._members.get(drain.name)  # a failed server lost its options
            self._spawn_task(self._drain(drain.name, key, drain.reason.value))
        starts = [key for key, n in plan.start.items() for _ in range(n)]
        spacing = self.settings.check_every / len(starts) if starts else 0.0
        for i, key in enumerate(starts):  # spread over the pass: no burst on the hub's loop
            name = new_anonymous_name()
            self._starting[name] = key
            self._images[name] = self.registry.get(key.course).image
            self._spawn_task(self._start(name, key, delay=i * spacing))
        drained = {d.name for d in plan.drain}
        kept = {m.name: m for m in members if m.name not in drained}
        for name, key in self._starting.items():
            kept.setdefault(name, PoolMember(name, key, MemberState.STARTING))
        self.counts = count_pools(targets, kept.values())
        self._members = {m.name: m.key for m in kept.values()}
        if self.metrics is not None:
            self.metrics.observe_pools(self.counts)

    async def _images_of(self, members: list[PoolMember]) -> dict[str, str | None]:
        """The image each member's pod runs. Pods are listed only when the registry changed
        or a member is new to this process (a service restart); members this process
        started run what the course's image was when they were started."""
        names = {m.name for m in members}
        alive = names | set(self._starting)
        self._images = {n: i for n, i in self._images.items() if n in alive}
        unknown = any(m.name not in self._images for m in members if m.state is MemberState.READY)
        if self.kube is not None and (self._relist or unknown):
            self._relist = False
            listed = await pool_pod_images(self.kube, self.namespace)
            self._images.update({n: listed.get(n) for n in names})
        return self._images

    def _note_outcomes(self, members: list[PoolMember]) -> None:
        """Count failed starts in a row per pool (a ready member resets it) for the back-off."""
        for m in members:
            key = m.key or self._members.get(m.name)  # a failed server has no options left
            if key is None:
                continue
            if m.state is MemberState.READY:
                self._failures.pop(key, None)
                self._paused_until.pop(key, None)
            elif m.state is MemberState.BROKEN and m.name not in self._counted:
                self._counted.add(m.name)
                self._fail(key)
        self._counted &= {m.name for m in members}

    def _fail(self, key: PoolKey) -> None:
        n = self._failures[key] = self._failures.get(key, 0) + 1
        pause = backoff_seconds(n)
        self._paused_until[key] = time.monotonic() + pause
        log.warning("Pool %s: start failed (%d in a row); no new starts for %.0fs", key, n, pause)

    async def _pool_users(self) -> tuple[list[dict], set[str]]:
        """The pool group's user models, and last pass's members that learners claimed since.

        Every ``FULL_EVERY``-th pass (and the first) lists all users. The others read the
        group's member names (one request), fetch only members not known to be ready, and,
        if members left, the anonymous group's names (one request): a steady pool costs the
        hub one request per pass, not a listing of every learner.
        """
        self._passes += 1
        if self._passes % FULL_EVERY == 1 or FULL_EVERY == 1:
            users = {u["name"]: u for u in await self.hub.all_users()}
            pool = [u for u in users.values() if POOL_GROUP in (u.get("groups") or ())]
            names = {u["name"] for u in pool}
            claimed = {
                n for n in self._members if n in users and n not in names
                and self.anonymous_group in (users[n].get("groups") or ())
            }  # fmt: skip
        else:
            names = await self.hub.group_members(POOL_GROUP)
            fetch = [n for n in names if n not in self._ready]
            models = await asyncio.gather(*(self.hub.get_user(n) for n in fetch))
            fetched = {n: m for n, m in zip(fetch, models, strict=True) if m is not None}
            pool = [fetched[n] if n in fetched else self._ready[n] for n in names
                    if n in fetched or n in self._ready]  # fmt: skip
            left = {n for n in self._members if n not in names}
            claimed = left & await self._guests() if left else set()
        self._ready = {
            u["name"]: u for u in pool if member_from_model(u).state is MemberState.READY
        }
        return pool, claimed

    async def _guests(self) -> set[str]:
        """The anonymous group's member names (none while it does not exist yet, or while
        the service's role may not read it: then claims go uncounted, with one warning)."""
        try:
            return await self.hub.group_members(self.anonymous_group, missing_ok=True)
        except HubAPIError as e:
            if e.status != 403:
                raise
            if not self._guests_forbidden:
                self._guests_forbidden = True
                log.warning(
                    "Cannot read the hub group %s (403): pool claims are not counted. Give "
                    "the service read:groups!group=%s (pool_role(anonymous_group=...)).",
                    self.anonymous_group, self.anonymous_group,
                )  # fmt: skip
            return set()

    def _note_claims(self, claimed: set[str]) -> None:
        """Members of the last pass that learners claimed (now in the anonymous group)."""
        for name in sorted(claimed):
            key = self._members.get(name)
            log.info("Pool server of %s claimed (course %s)", name, key)
            if self.metrics is not None and key is not None:
                self.metrics.pool_claimed.labels(course=key.course, size=key.size).inc()

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ensure_group(self) -> None:
        path = f"/groups/{quote(POOL_GROUP, safe='')}"
        status, _ = await self.hub.request("GET", path, ok404=True)
        if status == 404:
            try:
                await self.hub.request("POST", path, body={})
            except HubAPIError as e:
                if e.status != 409:  # 409: created meanwhile
                    raise
        self.group_ready = True

    async def _start(self, name: str, key: PoolKey, delay: float = 0.0) -> None:
        options = key.user_options()
        if self.signing_key:  # the spawner starts a guest only with its link's ticket
            options[TICKET] = launch_ticket(self.signing_key, name, options)
        quoted = quote(name, safe="")
        try:
            await asyncio.sleep(delay)
            if self._hub_full_until > time.monotonic():  # refused meanwhile: not now
                return
            t0 = time.monotonic()
            await self.hub.request("POST", f"/users/{quoted}", body={})
            await self.hub.request(
                "POST", f"/groups/{quote(POOL_GROUP, safe='')}/users", body={"users": [name]}
            )
            status = await self.hub.start_server(name, options, retries=0)
            log.info("Pool server starting for %s (course %s, %s)", name, key, status)
            self._refusals = 0
            if status == 201:
                self._observe_start(key, t0)
        except HubAPIError as e:
            if e.status in HUB_FULL:
                await self._refused(name, key, e.status)
            else:
                self._start_failed(name, key, e)
        except Exception as e:
            self._start_failed(name, key, e)
        finally:
            self._starting.pop(name, None)

    async def _refused(self, name: str, key: PoolKey, status: int) -> None:
        """The hub refused a start before anything ran (no room under max_anonymous_users,
        ``cnbi_spawner.pool_starts``; 429: its concurrent_spawn_limit). Not a broken image:
        no pool starts for a while (doubling while refusals go on), the empty user goes."""
        self._refusals += 1
        pause = backoff_seconds(self._refusals, base=self.settings.check_every, cap=60)
        self._hub_full_until = time.monotonic() + pause
        log.info(
            "Pool start for %s (course %s) refused by the hub (%d); no pool starts for %.0fs",
            name, key, status, pause,
        )  # fmt: skip
        if self.metrics is not None:
            self.metrics.pool_start_refusals.labels(course=key.course, size=key.size).inc()
        await self.hub.delete_user(name)

    def _start_failed(self, name: str, key: PoolKey, e: Exception) -> None:
        log.error("Pool start for %s (course %s) failed: %s", name, key, e)
        self._fail(key)
        if self.metrics is not None:
            self.metrics.pool_start_failures.labels(course=key.course, size=key.size).inc()

    def _observe_start(self, key: PoolKey, t0: float) -> None:
        if self.metrics is not None:
            self.metrics.pool_start_seconds.observe(time.monotonic() - t0)

    async def _drain(self, name: str, key: PoolKey | None, reason: str) -> None:
        quoted = quote(name, safe="")
        try:
            await self.hub.request(
                "DELETE",
                f"/groups/{quote(POOL_GROUP, safe='')}/users",
                body={"users": [name]},
                ok404=True,
            )
            user = await self.hub.get_user(name)
            if user is None:
                return
            if self.anonymous_group in (user.get("groups") or ()):
                log.info("Pool server of %s was claimed before its drain (%s)", name, reason)
                return
            log.info("Draining pool server of %s (course %s, reason %s)", name, key, reason)
            if not await self.hub.delete_user(name):
                # stop still pending: out of the pool group already, so the culler's
                # abandoned-login rule removes the user if we cannot
                log.info("Pool user %s busy stopping; deleting it later", name)
                self._spawn_task(self._delete_later(name))
            if self.metrics is not None:
                self.metrics.pool_drained.labels(reason=reason).inc()
        except Exception as e:
            log.error("Drain of pool server %s failed: %s", quoted, e)

    async def _delete_later(self, name: str, tries: int = 20) -> None:
        for _ in range(tries):
            await asyncio.sleep(self.settings.check_every)
            if await self.hub.delete_user(name):
                return

    # --- loop ----------------------------------------------------------------------------

    def wake(self, *_args: Any) -> None:
        """Registry change listener: run a pass now, with the pods listed (a digest may have
        moved)."""
        self._relist = True
        self._wake.set()

    async def run_forever(self, stop: asyncio.Event) -> None:
        self.registry.add_change_listener(self.wake)
        try:
            while not stop.is_set():
                try:
                    await self.run_once()
                except Exception as e:
                    log.error("Pool pass failed: %s", e)
                self._wake.clear()
                await pause(self.settings.check_every, until=self._wake)
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def status(self) -> dict[str, dict[str, PoolCount]]:
        """``{course key: {size: counts}}`` for the catalog."""
        out: dict[str, dict[str, PoolCount]] = {}
        for key, count in self.counts.items():
            out.setdefault(key.course, {})[key.size] = count
        return out
