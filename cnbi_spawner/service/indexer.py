"""The service's notebook indexer: give every new launchable digest its notebook list.

What an index is and how the registry and ``plan_launch`` use it is
:mod:`cnbi_spawner.images.notebook_index`; this module does the I/O:

- an ``ImageRegistry`` listener wakes the loop on every change; it also runs every
  ``resync_interval`` seconds. One pass picks the images that need an index
  (:func:`needs_index`) and starts up to ``max_concurrent`` indexing runs;
- one run: create the indexing pod (its own name, in the service's namespace), wait until it
  has finished (``Succeeded``/``Failed``, at most ``timeout`` seconds), read its log, write
  the index onto the ImageStream tag with a JSON patch (``test`` that the tag is still at
  that position, then ``add`` the annotation), delete the pod. A failed or timed-out run
  stores an ``error`` index for that digest, so a broken image is not retried until its
  digest changes; launches of it behave as without an index. When the Kubernetes API refuses
  (a create, a read, the patch), the run is retried after ``resync_interval``;
- at start, indexing pods left by an earlier service process are deleted.

One log line per run (image, digest, outcome). RBAC for the service: ``pods``: create,
get, list, delete; ``pods/log``: get; ``imagestreams``: patch (``helm-values/rbac.yaml``,
Role ``cnbi-notebook-index``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from traitlets import Bool, Float, Int, Unicode
from traitlets.config import Configurable

from ..images.model import KnownImage
from ..images.notebook_index import (
    ANNOTATION,
    CONTAINER,
    MAX_LOG_BYTES,
    ROLE,
    ROLE_LABEL,
    NotebookIndex,
    index_pod,
    parse_output,
)
from ..pause import pause

log = logging.getLogger("cnbi.indexer")

IS_GROUP, IS_VERSION, IS_PLURAL = "image.openshift.io", "v1", "imagestreams"


class IndexSettings(Configurable):
    """Notebook indexing of new image digests (``c.IndexSettings.*`` in the service config)."""

    enabled = Bool(
        True, help="Index the notebooks of every new launchable ImageStream digest."
    ).tag(config=True)
    max_concurrent = Int(2, help="Indexing pods that may run at once.").tag(config=True)
    timeout = Int(
        120, help="Seconds an indexing pod may run (its activeDeadlineSeconds, and our wait)."
    ).tag(config=True)
    cpu = Unicode("250m", help="CPU request and limit of an indexing pod.").tag(config=True)
    memory = Unicode("128Mi", help="Memory request and limit of an indexing pod.").tag(config=True)
    root = Unicode(
        "",
        help="Folder to index inside the image; empty: the container's working directory "
        "(the folder a learner's server opens).",
    ).tag(config=True)
    resync_interval = Float(60, help="Seconds between passes without a registry change.").tag(
        config=True
    )


def needs_index(image: KnownImage) -> bool:
    """Does this image's digest still need a notebook index? (pure)"""
    return (
        image.launchable
        and image.source.startswith("imagestream:")
        and bool(image.digest)
        and not (image.notebooks and not image.notebooks_indexed)  # declared: nothing to do
        and image.indexed_digest != image.digest
    )


def _tag_path(obj: dict, tag: str) -> int | None:
    for i, entry in enumerate((obj.get("spec") or {}).get("tags") or ()):
        if isinstance(entry, dict) and entry.get("name") == tag:
            return i
    return None


class NotebookIndexer:
    def __init__(self, api_client, registry, namespace: str, settings: IndexSettings) -> None:
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.registry = registry
        self.namespace = namespace
        self.settings = settings
        self._wake = asyncio.Event()
        self._running: dict[tuple[str, str], asyncio.Task] = {}  # (source, tag) -> run
        self._done: dict[tuple[str, str], str] = {}  # (source, tag) -> digest tried here
        self._retry_at: dict[tuple[str, str], float] = {}  # after an API failure

    def on_registry_change(self, old: dict, new: dict) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        self.registry.add_listener(self.on_registry_change)
        log.info(
            "notebook indexer started (namespace %s, %d at once, %ss per pod)",
            self.namespace,
            self.settings.max_concurrent,
            self.settings.timeout,
        )
        try:
            await self._delete_leftovers()
            while stop is None or not stop.is_set():
                try:
                    if self.registry.synced:
                        self.run_once()
                except Exception as e:  # noqa: BLE001 - keep going; the next pass retries
                    log.warning("notebook index pass failed: %s", e)
                await pause(self.settings.resync_interval, until=self._wake)
                self._wake.clear()
        finally:
            for task in self._running.values():
                task.cancel()
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    def run_once(self) -> list[KnownImage]:
        """Start runs for the images that need one (bounded); returns the images started."""
        started = []
        for image in sorted(self.registry.images(), key=lambda i: i.key):
            key = (image.source, image.tag)
            if len(self._running) >= self.settings.max_concurrent:
                break
            retry = self._retry_at.get(key)
            if retry is not None and retry <= time.monotonic():
                self._done.pop(key, None)
                self._retry_at.pop(key, None)
            if key in self._running or self._done.get(key) == image.digest:
                continue
            if not needs_index(image):
                continue
            self._done[key] = image.digest
            task = asyncio.create_task(self._index(image), name=f"cnbi-index:{image.key}")
            self._running[key] = task
            task.add_done_callback(functools.partial(self._finished, key))
            started.append(image)
        return started

    def _retry_later(self, image: KnownImage) -> None:
        key = (image.source, image.tag)
        self._retry_at[key] = time.monotonic() + self.settings.resync_interval

    def _finished(self, key: tuple[str, str], _task: asyncio.Task | None = None) -> None:
        self._running.pop(key, None)
        self._wake.set()  # room for the next one

    async def _delete_leftovers(self) -> None:
        try:
            pods = await self.core.list_namespaced_pod(
                self.namespace, label_selector=f"{ROLE_LABEL}={ROLE}"
            )
        except ApiException as e:
            log.warning("notebook indexer: cannot list leftover pods (%s)", e.status)
            return
        for pod in pods.items:
            await self._delete(pod.metadata.name)

    async def _delete(self, name: str) -> None:
        try:
            await self.core.delete_namespaced_pod(name, self.namespace, grace_period_seconds=0)
        except ApiException as e:
            if e.status != 404:
                log.warning("notebook indexer: cannot delete pod %s (%s)", name, e.status)

    async def _index(self, image: KnownImage) -> None:
        started = time.monotonic()
        name = f"cnbi-index-{secrets.token_hex(5)}"
        pod: Any = index_pod(  # a plain JSON object, which the client sends as is
            name=name,
            namespace=self.namespace,
            image_ref=image.image,
            image_key=image.key,
            deadline_seconds=self.settings.timeout,
            cpu=self.settings.cpu,
            memory=self.settings.memory,
            root=self.settings.root,
        )
        try:
            await self.core.create_namespaced_pod(self.namespace, pod)
            index = await self._result(name, image.digest)
        except ApiException as e:
            log.warning("notebook index %s: run failed (%s); retried later", image.key, e.status)
            self._retry_later(image)
            await self._delete(name)
            return
        except asyncio.CancelledError:
            await self._delete(name)
            raise
        await self._delete(name)
        written = await self._store(image, index)
        outcome = (
            f"error={index.error!r}"
            if index.error
            else f"notebooks={len(index.notebooks)}{' truncated' if index.truncated else ''}"
        )
        log.info(
            "notebook index %s digest=%s %s stored=%s in %.1fs",
            image.key,
            image.digest[:19],
            outcome,
            written,
            time.monotonic() - started,
        )

    async def _result(self, name: str, digest: str) -> NotebookIndex:
        """Wait for the pod to finish and read its index from the log."""
        deadline = time.monotonic() + self.settings.timeout + 10
        phase = ""
        while time.monotonic() < deadline:
            found = await self.core.read_namespaced_pod(name, self.namespace)
            phase = (found.status.phase if found.status else "") or ""
            if phase in ("Succeeded", "Failed"):
                break
            await asyncio.sleep(0.5)
        else:
            return NotebookIndex(digest, error=f"the indexing pod did not finish ({phase})")
        try:
            text = await self.core.read_namespaced_pod_log(
                name, self.namespace, container=CONTAINER, limit_bytes=MAX_LOG_BYTES
            )
        except ApiException as e:
            return NotebookIndex(digest, error=f"cannot read the indexing pod's log ({e.status})")
        index = parse_output(digest, text or "")
        if phase == "Failed" and not index.error:
            return NotebookIndex(digest, error="the indexing pod failed")
        return index

    async def _store(self, image: KnownImage, index: NotebookIndex) -> bool:
        """Write the index onto the image's ImageStream tag (JSON patch); False if not."""
        stream_ns, stream = image.namespace or self.namespace, image.stream
        try:
            obj = await self.custom.get_namespaced_custom_object(
                IS_GROUP, IS_VERSION, stream_ns, IS_PLURAL, stream
            )
            i = _tag_path(obj, image.tag)
            if i is None:
                log.warning("notebook index %s: the stream has no spec tag to annotate", image.key)
                return False
            ops: list[dict] = [{"op": "test", "path": f"/spec/tags/{i}/name", "value": image.tag}]
            if not isinstance(obj["spec"]["tags"][i].get("annotations"), dict):
                ops.append({"op": "add", "path": f"/spec/tags/{i}/annotations", "value": {}})
            key = ANNOTATION.replace("~", "~0").replace("/", "~1")
            path = f"/spec/tags/{i}/annotations/{key}"
            ops.append({"op": "add", "path": path, "value": index.to_annotation()})
            await self.custom.patch_namespaced_custom_object(
                IS_GROUP, IS_VERSION, stream_ns, IS_PLURAL, stream, ops
            )
        except ApiException as e:
            log.warning("notebook index %s: not stored (%s); retried later", image.key, e.status)
            self._retry_later(image)
            return False
        return True
