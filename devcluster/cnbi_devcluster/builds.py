"""The dev cluster's CustomNBImage build controller (an operator-style program).

It talks to the cluster API only through the real ``kubernetes_asyncio`` client, like a
real operator: list + watch ``customnbimages``, and for each unfinished object walk the
draft-era (seed) phases, writing ``status`` with a PUT on ``.../status`` (the operator's
``Status().Update``), one step every ``step_delay`` seconds:

  build (package-list, gitrepo): Pending -> Preparing -> Resolving -> Building -> Ready
      conditions PipelineRunPrepare / PipelineRunBuild (Unknown/Running -> True/Succeeded)
  import: Importing (PipelineRunImport Unknown/Running) -> Importing with reason
      Validating -> Ready (PipelineRunImport True/Succeeded)

Failures (phase Failed, the pipeline's condition False/Failed with the message):
- annotation ``cnbi.meteor.zone/inject-failure: "<message>"`` fails the object at its
  Building (build) or Validating (import) step with that message;
- a package that cannot be resolved fails it at Resolving: by rule, any requirement whose
  normalised name starts with ``nonexistent-`` (e.g. ``nonexistent-pkg==1.0``).

On success it creates or updates the ImageStream ``cnbi-<name>-<import|package-list|gitrepo>``
with the ODH label and annotations (name, desc, creator, url, phase, messages; tag
software + python dependencies), and a ``status.tags`` item whose ``dockerImageReference`` is
a fake ``registry.example/cnbi/<stream>@sha256:<digest>``; then calls ``on_image(repo, ...)``
(the dev cluster's ``add_image``) so that image is launchable by the process runtime.
Deleting a CustomNBImage stops its walk; its ImageStream carries an ownerReference to it.

Rebuilds: any CR whose status is reset to a non-final phase is walked again. The service's
rebuild loop (:mod:`cnbi_spawner.builds.rebuild`) does that when a base image moves, after
writing ``cnbi.meteor.zone/base-digest``; that digest goes into the published image's fake
digest (so the rebuilt image has a new one) and onto the tag as an annotation.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from cnbi_spawner.builds import GROUP, PLURAL, VERSION
from cnbi_spawner.builds.phases import normalise
from cnbi_spawner.builds.resource import creator_of, display_name_of

from .build_steps import (
    IS_GROUP,
    IS_PLURAL,
    IS_VERSION,
    imagestream_for,
    plan_steps,
)

log = logging.getLogger("cnbi.devcluster.builds")

DELAY_ENV = "CNBI_DEVCLUSTER_BUILD_DELAY"

OnImage = Callable[[str, dict], Awaitable[None] | None]


class BuildController:
    """List + watch CustomNBImages and walk each unfinished one through its phases."""

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        namespace: str | None = None,
        step_delay: float | None = None,
        on_image: OnImage | None = None,
    ) -> None:
        self.api = client.CustomObjectsApi(api_client)
        self.namespace = namespace  # None: every namespace
        if step_delay is None:
            step_delay = float(os.environ.get(DELAY_ENV, "1.0"))
        self.step_delay = step_delay
        self.on_image = on_image
        self._walks: dict[str, asyncio.Task] = {}

    async def _list(self, **kw) -> dict:
        if self.namespace:
            return await self.api.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, **kw
            )
        return await self.api.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kw)

    async def run(self) -> None:
        """Run until cancelled: list, reconcile, watch; relist after any error."""
        log.info(
            "build controller started (namespace=%s, step %.2fs)", self.namespace, self.step_delay
        )
        try:
            while True:
                try:
                    listing = await self._list()
                    for obj in listing.get("items") or ():
                        self._reconcile(obj)
                    rv = listing["metadata"]["resourceVersion"]
                    w = watch.Watch()
                    list_fn = (
                        self.api.list_namespaced_custom_object
                        if self.namespace
                        else self.api.list_cluster_custom_object
                    )
                    args = (
                        (GROUP, VERSION, self.namespace, PLURAL)
                        if self.namespace
                        else (
                            GROUP,
                            VERSION,
                            PLURAL,
                        )
                    )
                    async with w.stream(
                        list_fn, *args, resource_version=rv, timeout_seconds=30
                    ) as s:
                        async for event in s:
                            obj = event.get("object") if isinstance(event, dict) else None
                            if event.get("type") == "DELETED" and isinstance(obj, dict):
                                self._forget(obj)
                            elif isinstance(obj, dict):
                                self._reconcile(obj)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - an operator keeps going
                    log.warning("build controller: list/watch failed (%s); relisting", exc)
                    await asyncio.sleep(0.5)
        finally:
            for task in self._walks.values():
                task.cancel()
            await asyncio.gather(*self._walks.values(), return_exceptions=True)
            self._walks.clear()

    def _key(self, obj: dict) -> str:
        meta = obj.get("metadata") or {}
        return f"{meta.get('namespace')}/{meta.get('name')}/{meta.get('uid')}"

    def _forget(self, obj: dict) -> None:
        task = self._walks.pop(self._key(obj), None)
        if task:
            task.cancel()

    def _reconcile(self, obj: dict) -> None:
        if (obj.get("metadata") or {}).get("deletionTimestamp"):
            self._forget(obj)
            return
        key = self._key(obj)
        if key in self._walks or normalise(obj).finished:
            return
        self._walks[key] = asyncio.create_task(self._walk(obj), name=f"cnbi-build:{key}")

    async def _walk(self, cr: dict) -> None:
        meta = cr["metadata"]
        ns, name = meta["namespace"], meta["name"]
        steps = plan_steps(cr)
        current = (cr.get("status") or {}).get("phase")
        # resume after a restart: skip the steps already written
        done = [i for i, s in enumerate(steps) if s["phase"] == current]
        start = done[0] + 1 if done else 0
        try:
            for step in steps[start:]:
                await asyncio.sleep(self.step_delay)
                if step["phase"] == "Ready":
                    latest = await self._get(ns, name)
                    if latest is None:
                        return
                    await self._publish(latest)
                if not await self._write_status(ns, name, step):
                    return
                log.info("build %s/%s: phase %s", ns, name, step["phase"])
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("build %s/%s: walk failed", ns, name)
        finally:
            task = self._walks.get(self._key(cr))
            if task is asyncio.current_task():
                self._walks.pop(self._key(cr), None)

    async def _get(self, ns: str, name: str) -> dict | None:
        try:
            return await self.api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    async def _write_status(self, ns: str, name: str, status: dict) -> bool:
        """GET + PUT .../status, retrying on 409; False when the object is gone."""
        for _ in range(5):
            obj = await self._get(ns, name)
            if obj is None or (obj.get("metadata") or {}).get("deletionTimestamp"):
                return False
            obj["status"] = {"observedGeneration": obj["metadata"].get("generation", 1), **status}
            try:
                await self.api.replace_namespaced_custom_object_status(
                    GROUP, VERSION, ns, PLURAL, name, obj
                )
                return True
            except ApiException as exc:
                if exc.status == 404:
                    return False
                if exc.status != 409:
                    raise
        raise RuntimeError(f"status of {ns}/{name}: too many conflicts")

    async def _publish(self, cr: dict) -> None:
        """Create/update the ImageStream for a succeeded ``cr`` and register its image."""
        body, status, repo = imagestream_for(cr)
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        try:
            current = await self.api.get_namespaced_custom_object(
                IS_GROUP, IS_VERSION, ns, IS_PLURAL, name
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            current = None
        if self.on_image is not None:  # before the stream appears, so it is launchable at once
            result = self.on_image(repo, cr)
            if asyncio.iscoroutine(result):
                await result
        if current is None:
            current = await self.api.create_namespaced_custom_object(
                IS_GROUP, IS_VERSION, ns, IS_PLURAL, body
            )
        else:
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            current = await self.api.replace_namespaced_custom_object(
                IS_GROUP, IS_VERSION, ns, IS_PLURAL, name, body
            )
        current["status"] = status
        await self.api.replace_namespaced_custom_object_status(
            IS_GROUP, IS_VERSION, ns, IS_PLURAL, name, current
        )
        log.info(
            "build %s: published ImageStream %s/%s (%s)", cr["metadata"]["name"], ns, name, repo
        )


def content_for(cluster, cr: dict) -> Path:
    """The home-directory content for a built image: the base image's, else a small README."""
    images = getattr(cluster, "images", None) or {}
    spec = cr.get("spec") or {}
    base = str(spec.get("baseImage") or spec.get("fromImage") or "")
    repo = base.split("@", 1)[0]
    last = repo.rsplit("/", 1)
    if ":" in last[-1]:
        repo = repo.rsplit(":", 1)[0]
    if repo in images:
        return Path(images[repo])
    root = Path(getattr(cluster, "state_dir", None) or Path.cwd()) / "built-images"
    folder = root / cr["metadata"]["name"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(
        f"# {display_name_of(cr)}\n\nBuilt by the dev cluster build controller for "
        f"{creator_of(cr)}.\n"
    )
    return folder


def controller_for(cluster, *, step_delay: float | None = None, namespace: str | None = None):
    """A coroutine factory for ``cluster.add_controller``: runs a ``BuildController``."""

    async def run() -> None:
        from kubernetes_asyncio import config

        # load the kubeconfig first: the client builds its TLS context (the cluster's CA
        # over HTTPS) when it is created
        configuration = client.Configuration()
        await config.load_kube_config(
            config_file=str(cluster.kubeconfig), client_configuration=configuration
        )
        api_client = client.ApiClient(configuration=configuration)

        def on_image(repo: str, cr: dict) -> None:
            cluster.add_image(repo, content_for(cluster, cr))

        try:
            await BuildController(
                api_client, namespace=namespace, step_delay=step_delay, on_image=on_image
            ).run()
        finally:
            await api_client.close()

    return run
