"""The service's rebuild loop: react to base-image changes by re-running dependent builds.

The decision is :func:`cnbi_spawner.builds.rebuild.plan` (read its docstring for the policy
and for how a rebuild is requested); this module only does the I/O around it:

- an ``ImageRegistry`` listener notes each change (the ``old`` map, the earliest one wins
  while changes pile up) and wakes the loop; the loop also runs every ``resync_interval``
  seconds, so a rebuild deferred by the concurrency bound, or one whose dependent was busy
  building, is requested once there is room;
- one pass: list the namespace's CustomNBImages, ``plan``, then for each ``record`` /
  ``rebuild`` decision GET + PUT the CR's annotations (a 409 means someone else changed it:
  the next pass decides again) and, for a rebuild, PUT ``status: {phase: Pending}``;
- ``notes``: ``{imagestream name: rebuild note}`` from the last pass, for the catalog's
  "rebuilt on <date> because base X changed" line.

Idempotent across restarts: everything the decision needs is on the CRs. RBAC for the
service: ``customnbimages``: list, get, update; ``customnbimages/status``: update.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from traitlets import Bool, Float, Int
from traitlets.config import Configurable

from ..builds import GROUP, PLURAL, VERSION
from ..builds.rebuild import Decision, plan, rebuild_note
from ..pause import pause

log = logging.getLogger("cnbi.rebuilds")


class RebuildSettings(Configurable):
    """Rebuilds on base-image changes (``c.RebuildSettings.*`` in the service config)."""

    enabled = Bool(True, help="Rebuild opted-in CustomNBImages when their base image moves.").tag(
        config=True
    )
    default_rebuild_on_base_change = Bool(
        False,
        help="Rebuild CustomNBImages without the cnbi.meteor.zone/rebuild-on-base-change "
        'annotation too ("false" on a CR still opts it out).',
    ).tag(config=True)
    max_in_flight = Int(
        2, help="Rebuilds requested by the service that may be unfinished at once."
    ).tag(config=True)
    resync_interval = Float(
        60, help="Seconds between passes without a registry change (deferred rebuilds)."
    ).tag(config=True)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class RebuildLoop:
    def __init__(self, api_client, registry, namespace: str, settings: RebuildSettings) -> None:
        self.api = client.CustomObjectsApi(api_client)
        self.registry = registry
        self.namespace = namespace
        self.settings = settings
        self.notes: dict[str, dict] = {}
        self._previous: dict = {}
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    # -- registry listener ---------------------------------------------------------------
    def on_registry_change(self, old: dict, new: dict) -> None:
        for key, image in (old or {}).items():
            self._previous.setdefault(key, image)
        self._wake.set()

    # -- the loop ------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event | None = None) -> None:
        self.registry.add_listener(self.on_registry_change)
        log.info(
            "rebuild loop started (namespace %s, default opt-in %s, max %d in flight)",
            self.namespace,
            self.settings.default_rebuild_on_base_change,
            self.settings.max_in_flight,
        )
        while stop is None or not stop.is_set():
            try:
                if self.registry.synced:
                    await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - keep going; the next pass retries
                log.warning("rebuild pass failed: %s", e)
            await pause(self.settings.resync_interval, until=self._wake)
            self._wake.clear()

    async def run_once(self) -> list[Decision]:
        """One pass (see the module docstring); returns the decisions."""
        async with self._lock:
            previous, self._previous = self._previous, {}
            try:
                listing = await self.api.list_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL
                )
            except Exception:
                self._previous = {**previous, **self._previous}
                raise
            crs = [c for c in listing.get("items") or () if isinstance(c, dict)]
            decisions = plan(
                crs,
                self.registry.images(),
                default_opt_in=self.settings.default_rebuild_on_base_change,
                previous=previous,
                max_in_flight=self.settings.max_in_flight,
            )
            for d in decisions:
                if d.action in ("record", "rebuild"):
                    await self._apply(d)
                elif d.action in ("busy", "deferred"):
                    log.info("rebuild of %s waits: %s", d.name, d.why)
                    # remember the move for the next pass (a busy CR may have no record yet)
                    if d.base_key in previous:
                        self._previous.setdefault(d.base_key, previous[d.base_key])
            listing = await self.api.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL
            )
            notes = {}
            for cr in listing.get("items") or ():
                note = rebuild_note(cr) if isinstance(cr, dict) else None
                if note and note["imagestream"]:
                    notes[note["imagestream"]] = note
            self.notes = notes
            return decisions

    async def _apply(self, d: Decision) -> None:
        args = (GROUP, VERSION, self.namespace, PLURAL, d.name)
        try:
            cr = await self.api.get_namespaced_custom_object(*args)
            meta = cr.setdefault("metadata", {})
            meta["annotations"] = {**(meta.get("annotations") or {}), **d.annotations(_now())}
            cr = await self.api.replace_namespaced_custom_object(*args, cr)
            if d.action == "rebuild":
                cr["status"] = {"phase": "Pending"}
                await self.api.replace_namespaced_custom_object_status(*args, cr)
        except ApiException as e:
            log.warning("rebuild %s of %s not written (%s); next pass", d.action, d.name, e.status)
            return
        if d.action == "rebuild":
            log.info(
                "rebuild requested: %s because base %s changed (%s -> %s)",
                d.name,
                d.base_key,
                d.previous_digest[:19],
                d.digest[:19],
            )
        else:
            log.info("rebuild baseline: %s built on %s %s", d.name, d.base_key, d.digest[:19])
