"""``ImageRegistry``: the live set of known images, one per hub process.

Sources: the operator's static list (``static_images``) and, unless
``watch_imagestreams`` is off, the ImageStreams in ``namespaces`` matching
``label_selector``. Each namespace runs one list+watch loop (``reflector.py``:
paged LIST, WATCH from its resourceVersion, 410 -> relist, jittered back-off).

Each event replaces only that stream's images in the index (O(tags)), so a change
is visible to ``resolve`` as soon as the event is read. While the API is down the
last-known-good set keeps serving; ``stale_since`` says since when. ``resolve``
raises ``RegistryNotReady`` only if the registry never completed a first sync.

The decisions (parsing, resolution order) are the pure functions in
``imagestreams.py``, ``static.py`` and ``index.py``; the protocol is ``reflector.py``;
this module holds the state and applies changes (logging one line per image change).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import time
from collections.abc import Callable
from typing import ClassVar

from kubernetes_asyncio import client
from traitlets import Bool, Dict, Float, Int, List, Unicode, Union, default, observe
from traitlets.config import Config, LoggingConfigurable

from ..errors import RegistryNotReady
from ..pause import pause
from . import index as _index
from .imagestreams import ParseResult, parse_imagestream_report, stream_source
from .model import KnownImage
from .reflector import GROUP, PLURAL, VERSION, ReflectorSettings, describe, reflect
from .static import parse_static_report

__all__ = ["GROUP", "PLURAL", "VERSION", "ImageRegistry"]

SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

Listener = Callable[[dict[str, KnownImage], dict[str, KnownImage]], object]


def _simple_label(selector: str) -> tuple[str, str] | None:
    """``k=v`` -> (k, v), so the parser re-checks what the server filtered; else None."""
    if "," in selector or "!" in selector or " in " in selector or selector.count("=") != 1:
        return None
    k, v = selector.split("=")
    return (k.strip(), v.strip()) if k.strip() else None


def registry_config(config: Config) -> Config:
    """The hub's config as the registry reads it: ``c.CNBiSpawner.known_images`` (MIT-style
    one-line migration, see spawner.py) means ``static_images`` = that dict and, unless set
    explicitly, no ImageStream watch."""
    known = config["CNBiSpawner"].get("known_images") if "CNBiSpawner" in config else None
    if not known:
        return config
    merged = copy.deepcopy(config)
    merged.ImageRegistry.static_images = known
    if "watch_imagestreams" not in merged.ImageRegistry:
        merged.ImageRegistry.watch_imagestreams = False
    return merged


def _settings_key(config: Config) -> str:
    section = config["ImageRegistry"] if "ImageRegistry" in config else {}
    return json.dumps(dict(section), sort_keys=True, default=repr)


class ImageRegistry(LoggingConfigurable):
    """Known course images from static config and live ImageStreams."""

    namespaces = List(
        Unicode(),
        help="Namespaces whose ImageStreams are watched. Default: the namespace the hub "
        "runs in (service-account file or $POD_NAMESPACE), else 'default'.",
    ).tag(config=True)

    @default("namespaces")
    def _default_namespaces(self) -> list[str]:
        try:
            with open(SA_NAMESPACE_FILE) as f:
                ns = f.read().strip()
        except OSError:
            ns = ""
        return [ns or os.environ.get("POD_NAMESPACE") or "default"]

    label_selector = Unicode(
        "opendatahub.io/notebook-image=true",
        help="Label selector for the ImageStreams that hold notebook images.",
    ).tag(config=True)
    watch_imagestreams = Bool(
        True, help="Watch ImageStreams. Turn off on hubs without the ImageStream API."
    ).tag(config=True)
    static_images = Union(
        [Dict(), List()],
        default_value=None,
        allow_none=True,
        help="Static images: a KNOWN_IMAGES-style dict {course: image_ref} or a list of "
        "dicts (see cnbi_spawner.images.static). Merged with the ImageStream images.",
    ).tag(config=True)
    resync_period = Float(
        30.0,
        help="Seconds one watch request stays open (timeoutSeconds) before it is renewed "
        "from the last resourceVersion; also bounds how long a silently dead connection "
        "goes unnoticed.",
    ).tag(config=True)
    kubeconfig = Unicode(
        None, allow_none=True, help="kubeconfig path; default $KUBECONFIG or in-cluster."
    ).tag(config=True)
    list_page_size = Int(
        1000,
        help="ImageStreams per LIST page (limit/continue). Bigger pages: fewer round trips "
        "but a higher memory peak (measured at 10,000 streams on the dev cluster: 500 -> "
        "+60 MB RSS, 1000 -> +71 MB, 2000 -> +96 MB; 1000 syncs ~2x faster than 500).",
    ).tag(config=True)
    backoff_max = Float(30.0, help="Longest wait between reconnect attempts, seconds.").tag(
        config=True
    )
    request_timeout = Float(
        30.0,
        help="Client-side timeout, seconds, for one LIST page; a WATCH request gets "
        "resync_period + request_timeout (an API that hangs is noticed by then).",
    ).tag(config=True)

    first_sync_timeout = Float(
        5.0,
        help="Seconds a launch (tmplogin, the spawn page, the REST API) waits for the "
        "registry's first sync, just after the hub starts, before it is refused with 503 "
        "and Retry-After.",
    ).tag(config=True)

    _hub_registries: ClassVar[dict[str, ImageRegistry]] = {}

    @classmethod
    def for_hub(cls, config: Config, log: logging.Logger | None = None) -> ImageRegistry:
        """The hub's registry for this config, built once, when the hub starts.

        The authenticator and every spawner of a hub get the same object: it is built (with
        ``registry_config``) by the first of them, the authenticator at hub start, and kept
        per registry settings, so a caller with other settings (a test) gets its own rather
        than having its settings ignored. Nothing reconfigures it afterwards.
        """
        effective = registry_config(config)
        key = _settings_key(effective)
        found = cls._hub_registries.get(key)
        if found is None:
            kwargs: dict = {"config": effective}
            if log is not None:
                kwargs["log"] = log
            found = cls._hub_registries[key] = cls(**kwargs)
        return found

    @classmethod
    def forget_hub_registries(cls) -> None:
        """Forget the registries ``for_hub`` built (tests only; stop them first)."""
        cls._hub_registries.clear()

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.index = _index.ImageIndex()
        self.problems: dict[str, list[str]] = {}  # source -> problems of its last parse
        self.skipped: dict[str, list[tuple[str, str]]] = {}  # source -> (key, why)
        self._listeners: list[Listener] = []
        self._change_listeners: list[Callable[[str, list, list, list], object]] = []
        self._snapshot: dict[str, KnownImage] | None = None
        self._listed: set[str] = set()  # namespaces listed at least once
        self._failing: dict[str, float] = {}  # namespace -> since when its loop fails
        self._stream_rv: dict[str, str | None] = {}  # source -> resourceVersion parsed
        self._tasks: list[asyncio.Task] = []
        self._api: client.ApiClient | None = None
        self._starting: asyncio.Future | None = None
        self._synced_event = asyncio.Event()
        self.last_sync: float | None = None
        self._load_static()

    # -- status --------------------------------------------------------------------------
    @property
    def synced(self) -> bool:
        """True once every source was loaded at least once (stays true during outages)."""
        return not self.watch_imagestreams or self._listed.issuperset(self.namespaces)

    @property
    def stale_since(self) -> float | None:
        """``time.time()`` since which the API could not be reached, or None when healthy."""
        return min(self._failing.values()) if self._failing else None

    def status(self) -> dict:
        return {
            "synced": self.synced,
            "stale_since": self.stale_since,
            "last_sync": self.last_sync,
            "images": len(self.index),
            "launchable": len(self.launchable()),
            "namespaces": list(self.namespaces) if self.watch_imagestreams else [],
        }

    # -- reading -------------------------------------------------------------------------
    def resolve(self, name: str) -> KnownImage:
        """The launchable image for a NEW launch (rules: ``index`` module docstring)."""
        if not self.synced:
            raise RegistryNotReady()
        return _index.resolve(self.index, name)

    def get(self, key: str) -> KnownImage | None:
        """Exact key, outdated included (restarts of running servers)."""
        return self.index.get(key)

    def images(self) -> list[KnownImage]:
        return self.index.images()

    def launchable(self) -> list[KnownImage]:
        return [i for i in self.index.images() if i.launchable]

    def add_listener(self, callback: Listener) -> None:
        """``callback(old, new)`` (key -> image) after each change; may be a coroutine fn."""
        self._listeners.append(callback)
        self._snapshot = None  # rebuilt at the next change

    def remove_listener(self, callback: Listener) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    def add_change_listener(self, callback: Callable[[str, list, list, list], object]) -> None:
        """Cheap hook: ``callback(source, added, removed, changed)`` (key lists) per change.

        Unlike ``add_listener`` it builds no full snapshots, so it suits hot paths
        (metrics, benchmarks) on registries with tens of thousands of images.
        """
        self._change_listeners.append(callback)

    # -- applying changes ------------------------------------------------------------------
    def _mapping(self) -> dict[str, KnownImage]:
        out: dict[str, KnownImage] = {}
        for source in self.index.sources():
            for image in self.index.source(source):
                out.setdefault(image.key, image)
        return out

    def _apply(self, changes: dict[str, list[KnownImage]], *, quiet: bool = False) -> int:
        """Replace the images of each source in ``changes``; log and notify. Returns #changes."""
        old: dict[str, KnownImage] = {}
        if self._listeners:
            old = self._snapshot if self._snapshot is not None else self._mapping()
        n = 0
        for source, images in changes.items():
            added, removed, changed = self.index.set_source(source, images)
            n += len(added) + len(removed) + len(changed)
            if added or removed or changed:
                for hook in self._change_listeners:
                    try:
                        hook(source, added, removed, changed)
                    except Exception:
                        self.log.exception("Image registry change listener %r failed", hook)
            if quiet:
                continue
            for key in added:
                img = next(i for i in images if i.key == key)
                self.log.info("Image added: %s -> %s (%s)", key, img.image, source)
            for key in removed:
                self.log.info("Image removed: %s (%s)", key, source)
            for key in changed:
                img = next(i for i in images if i.key == key)
                self.log.info("Image changed: %s -> %s (%s)", key, img.image, source)
        if n and self._listeners:
            new = self._mapping()
            self._snapshot = new
            for callback in list(self._listeners):
                try:
                    result = callback(old, new)
                    if asyncio.iscoroutine(result):
                        asyncio.ensure_future(result)
                except Exception:
                    self.log.exception("Image registry listener %r failed", callback)
        return n

    def _load_static(self, *, quiet: bool = True) -> None:
        images, problems = parse_static_report(self.static_images)
        for problem in problems:
            self.log.warning("%s", problem)
        self.problems["static"] = problems
        self._apply({"static": images}, quiet=quiet)
        if quiet and images:
            self.log.info("Image registry: %d static images", len(images))

    @observe("static_images")
    def _static_changed(self, change) -> None:
        if hasattr(self, "index"):  # a change after construction: log each image change
            self._load_static(quiet=False)

    def _parse(self, obj: dict) -> ParseResult:
        return parse_imagestream_report(obj, require_label=_simple_label(self.label_selector))

    def _commit(self, result: ParseResult, rv: str | None) -> None:
        """Record what a parse found (after its images were applied)."""
        for problem in result.problems:
            self.log.warning("%s: %s", result.source, problem)
        # only non-empty entries: 10,000 healthy streams should cost nothing here
        if result.problems:
            self.problems[result.source] = result.problems
        else:
            self.problems.pop(result.source, None)
        if result.skipped:
            self.skipped[result.source] = result.skipped
        else:
            self.skipped.pop(result.source, None)
        self._stream_rv[result.source] = rv

    def _forget(self, source: str) -> None:
        self.problems.pop(source, None)
        self.skipped.pop(source, None)
        self._stream_rv.pop(source, None)

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Start watching (idempotent, safe to call from many spawners at once).

        Returns once the watch tasks exist, not when synced; see ``wait_synced``.
        """
        if not self.watch_imagestreams:
            self._synced_event.set()
            return
        if self._tasks:
            return
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        starting = self._starting
        try:
            await asyncio.shield(starting)
        finally:
            if starting.done() and self._starting is starting:
                self._starting = None

    async def _start(self) -> None:
        from ..kube import make_api_client

        api = await make_api_client(self.kubeconfig)
        if self._tasks:  # raced with another start; keep the first
            await api.close()
            return
        self._api = api
        for ns in dict.fromkeys(self.namespaces):
            self._tasks.append(asyncio.create_task(self._run(ns), name=f"imagestreams:{ns}"))
        self.log.info(
            "Image registry watching ImageStreams (%s) in %s",
            self.label_selector,
            ", ".join(dict.fromkeys(self.namespaces)),
        )

    async def ready(self, timeout: float | None = None) -> ImageRegistry:
        """Started, and synced unless ``timeout`` (default ``first_sync_timeout``) ran out;
        an unsynced registry's ``resolve`` raises ``RegistryNotReady`` (503)."""
        await self.start()
        if not self.synced:
            await self.wait_synced(self.first_sync_timeout if timeout is None else timeout)
        return self

    async def wait_synced(self, timeout: float | None = None) -> bool:
        """Wait for the first complete sync; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self.synced:
            left = 0.1 if deadline is None else min(0.1, deadline - loop.time())
            if left <= 0:
                return False
            await pause(left, until=self._synced_event)
        return True

    async def stop(self) -> None:
        """Stop watching; the images known so far stay (a later ``start`` resumes)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._api is not None:
            await self._api.close()
            self._api = None

    # -- the reflector's sink (see reflector.py) ---------------------------------------------
    def _mark_ok(self, ns: str) -> None:
        if self._failing.pop(ns, None) is not None:
            self.log.info("ImageStream API reachable again in %s", ns)

    def _mark_failing(self, ns: str, error: BaseException) -> None:
        if ns not in self._failing:
            self._failing[ns] = time.time()
            self.log.warning(
                "ImageStream API unreachable in %s (%s); serving the last-known images",
                ns,
                describe(error),
            )

    def _stream_rv_of(self, source: str) -> str | None:
        return self._stream_rv.get(source)

    def _replace_namespace(
        self, ns: str, listed: set[str], parsed: list[tuple[ParseResult, str | None]]
    ) -> None:
        """Apply one complete LIST of ``ns``: parsed streams in, unlisted streams out."""
        prefix = stream_source(ns, "")
        first = ns not in self._listed
        changes: dict[str, list[KnownImage]] = {}
        for source in self.index.sources():
            if source.startswith(prefix) and source not in listed:
                changes[source] = []
                self._forget(source)
        for result, _rv in parsed:
            changes[result.source] = result.images
        n = self._apply(changes, quiet=first)
        for result, obj_rv in parsed:
            self._commit(result, obj_rv)
        self._listed.add(ns)
        self.last_sync = time.time()
        self.log.info(
            "ImageStreams listed in %s: %d streams, %d changes, %d images known",
            ns,
            len(listed),
            n,
            len(self.index),
        )
        if self.synced:
            self._synced_event.set()

    def _apply_event(self, ns: str, kind: str, obj: dict) -> None:
        """One ADDED/MODIFIED/DELETED watch event: replace that stream's images."""
        meta = obj.get("metadata") or {}
        meta.setdefault("namespace", ns)
        source = stream_source(ns, meta.get("name", ""))
        if kind == "DELETED":
            self._forget(source)
            self._apply({source: []})
            return
        rv = meta.get("resourceVersion")
        if rv and self._stream_rv.get(source) == rv:
            return
        result = self._parse(obj)
        self._apply({result.source: result.images})
        self._commit(result, rv)

    def _reflector_settings(self) -> ReflectorSettings:
        return ReflectorSettings(
            label_selector=self.label_selector,
            page_size=self.list_page_size,
            resync_period=self.resync_period,
            request_timeout=self.request_timeout,
            backoff_max=self.backoff_max,
        )

    async def _run(self, ns: str) -> None:
        assert self._api is not None
        await reflect(self._api, ns, self._reflector_settings(), self, self.log)
