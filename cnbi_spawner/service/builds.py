"""Builds API and pages of the ``cnbi`` service: CustomNBImage requests by course authors.

Routes (under the service prefix, e.g. ``/services/cnbi/``):

- ``POST api/builds`` (JSON or YAML body: the request's fields or a whole CustomNBImage
  manifest, see :mod:`cnbi_spawner.builds.validate`) -> 201 + build
- ``GET api/builds`` -> own builds (admins: all; ``?mine=1`` only their own)
- ``GET api/builds/{name}`` -> phase, conditions, message, image key, launch URL
- ``DELETE api/builds/{name}`` -> 204 (own builds only)
- ``GET api/builds/{name}/events`` -> Server-Sent Events: one ``build`` event per change,
  ending after a final phase (and, on success, once the image is in the registry)
- pages: ``builds`` (list), ``builds/new`` (form, POST with server-side validation),
  ``builds/{name}`` (status, live through the events stream, "Launch" at the end)

Access: the hub scope ``custom:cnbi:builds`` (``hub_scopes``), on the OAuth cookie
(the service needs ``oauth_client_allowed_scopes: ["custom:cnbi:builds"]``) or on an API
token; anonymous learners are refused even if a role gave them the scope. XSRF: cookie
requests that change state need the hub's XSRF token (form field ``_xsrf`` or header
``X-XSRFToken``); token-authenticated API calls do not. Browsers' ``EventSource`` requests
are not page navigations, so the hub's XSRF rules apply to them too: the status page
passes ``?_xsrf=<token>`` on the events URL. The creator of a build is
always the authenticated user (a ``creator`` in the body is ignored, with a warning).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from tornado import iostream, web

from .. import signing
from ..builds import GROUP, PLURAL, VERSION
from ..builds.phases import BuildStatus, count_in_progress, normalise
from ..builds.resource import creator_of, customnbimage, display_name_of
from ..builds.validate import (
    check_quota,
    parse_body,
    validate_request,
)
from ..errors import LaunchError
from .context import JSONAPIMixin, ScopedHandler
from .settings import BuildSettings

SCOPE = "custom:cnbi:builds"
NAME_RE = r"([a-z0-9][a-z0-9-]{0,62})"


def build_json(cr: dict, status: BuildStatus, image=None, launch_url: str = "") -> dict:
    """Public view of one build."""
    spec = cr["spec"] if isinstance(cr.get("spec"), dict) else {}
    meta = cr.get("metadata") or {}
    return {
        "name": status.name,
        "display_name": display_name_of(cr),
        "description": spec.get("description", ""),
        "creator": creator_of(cr),
        "created": meta.get("creationTimestamp", ""),
        "kind": status.kind,
        "flow": status.flow,
        "phase": status.phase,
        "phases": list(status.phases),
        "finished": status.finished,
        "message": status.message,
        "raw_phase": status.raw_phase,
        "conditions": [c.to_json() for c in status.conditions],
        "imagestream": status.imagestream,
        "image": image.key if image is not None else None,
        "launchable": bool(image is not None and image.launchable),
        "launch_url": launch_url or None,
        "spec": {
            k: spec[k]
            for k in (
                "pipelines",
                "baseImage",
                "packageVersions",
                "repoURL",
                "ref",
                "runtimeEnvironment",
            )
            if k in spec
        },
    }


class BuildsHandlerBase(ScopedHandler):
    hub_scopes = {SCOPE}
    guest_refusal = "anonymous users cannot request image builds"

    @property
    def build_settings(self) -> BuildSettings:
        return self.ctx.builds

    @property
    def api(self) -> client.CustomObjectsApi:
        if self.ctx.kube is None:
            raise web.HTTPError(503, "the Kubernetes API is not configured")
        return client.CustomObjectsApi(self.ctx.kube)

    async def list_crs(self) -> list[dict]:
        try:
            listing = await self.api.list_namespaced_custom_object(
                GROUP, VERSION, self.ctx.namespace, PLURAL
            )
        except ApiException as exc:
            raise web.HTTPError(503, f"cannot list builds ({exc.status})") from None
        return [i for i in listing.get("items") or () if isinstance(i, dict)]

    async def get_cr(self, name: str) -> dict:
        """The CustomNBImage if the user may see it, else 404."""
        try:
            cr = await self.api.get_namespaced_custom_object(
                GROUP, VERSION, self.ctx.namespace, PLURAL, name
            )
        except ApiException as exc:
            if exc.status == 404:
                raise web.HTTPError(404, "no such build") from None
            raise web.HTTPError(503, f"cannot read the build ({exc.status})") from None
        if creator_of(cr) != self.user_name and not self.is_admin:
            raise web.HTTPError(404, "no such build")
        return cr

    def require_creator(self, cr: dict) -> None:
        """Only a build's creator may delete it (admins included): 403 otherwise."""
        if creator_of(cr) != self.user_name:
            raise web.HTTPError(403, "only the creator may delete a build")

    async def delete_cr(self, name: str) -> None:
        """Delete the CustomNBImage ``name`` (already gone is fine) and log it."""
        try:
            await self.api.delete_namespaced_custom_object(
                GROUP, VERSION, self.ctx.namespace, PLURAL, name
            )
        except ApiException as exc:
            if exc.status != 404:
                raise web.HTTPError(503, f"cannot delete the build ({exc.status})") from None
        self.log_event("deleted", name)

    def image_for(self, status: BuildStatus):
        """The registry image this build produced, if it is there yet."""
        reg = self.ctx.registry
        if reg is None or not status.succeeded or not status.imagestream:
            return None
        found = [i for i in reg.images() if i.stream == status.imagestream]
        found.sort(key=lambda i: (not i.launchable, not i.recommended, not i.default))
        return found[0] if found else None

    def launch_url(self, image) -> str:
        if image is None or not image.launchable:
            return ""
        params = {"course": image.key}
        links = self.ctx.links
        if links.key_bytes:
            params = signing.sign_params(params, links.key_bytes, int(time.time() + links.max_ttl))
        return signing.launch_link(self.hub_public_url(), params)

    def view(self, cr: dict) -> dict:
        status = normalise(cr)
        image = self.image_for(status)
        return build_json(cr, status, image, self.launch_url(image))

    async def create(self, body: object) -> tuple[dict, tuple[str, ...]]:
        """Validate ``body`` for the current user and create the CustomNBImage."""
        crs = await self.list_crs()
        req = validate_request(
            body, creator=self.user_name, existing_names={c["metadata"]["name"] for c in crs}
        )
        check_quota(count_in_progress(crs, self.user_name), self.build_settings.max_in_progress)
        obj = customnbimage(req, self.ctx.namespace)
        try:
            created = await self.api.create_namespaced_custom_object(
                GROUP, VERSION, self.ctx.namespace, PLURAL, obj
            )
        except ApiException as exc:
            if exc.status == 409:
                raise LaunchError(
                    "A build with that name appeared meanwhile; try again.", status=409
                ) from None
            raise web.HTTPError(503, f"cannot create the build ({exc.status})") from None
        self._count("Pending" if req.kind != "import" else "Importing")
        self.log_event("created", req.name, f"kind={req.kind}")
        return created, req.warnings

    def _count(self, phase: str) -> None:
        self.ctx.metrics.build_requests.labels(phase=phase).inc()

    def _gauge(self, crs: list[dict]) -> None:
        """Refresh the builds-per-phase gauge from a full listing."""
        gauge = self.ctx.metrics.builds
        counts: dict[str, int] = {}
        for cr in crs:
            phase = normalise(cr).phase
            counts[phase] = counts.get(phase, 0) + 1
        for phase in ("Pending", "Preparing", "Resolving", "Building", "Importing",
                      "Validating", "Success", "Failure"):  # fmt: skip
            gauge.labels(phase=phase).set(counts.get(phase, 0))

    def log_event(self, what: str, name: str, extra: str = "") -> None:
        self.log.info("build %s: %s by %s %s", name, what, self.user_name, extra)

    @property
    def log(self) -> logging.Logger:
        return logging.getLogger("cnbi.builds")


class _APIBase(JSONAPIMixin, BuildsHandlerBase):
    login_refusal = "a hub token or login with the builds scope is required"


class BuildsAPIHandler(_APIBase):
    @web.authenticated
    async def get(self) -> None:
        crs = await self.list_crs()
        self._gauge(crs)
        mine_only = not self.is_admin or self.get_argument("mine", "") in ("1", "true")
        if mine_only:
            crs = [c for c in crs if creator_of(c) == self.user_name]
        crs.sort(key=lambda c: (c.get("metadata") or {}).get("creationTimestamp", ""), reverse=True)
        self.write_json({"builds": [self.view(c) for c in crs]})

    @web.authenticated
    async def post(self) -> None:
        ctype = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        created, warnings = await self.create(parse_body(self.request.body, ctype))
        data = self.view(created)
        data["warnings"] = list(warnings)
        self.set_header("Location", f"{self.ctx.prefix}api/builds/{created['metadata']['name']}")
        self.write_json(data, 201)


class BuildAPIHandler(_APIBase):
    @web.authenticated
    async def get(self, name: str) -> None:
        self.write_json(self.view(await self.get_cr(name)))

    @web.authenticated
    async def delete(self, name: str) -> None:
        self.require_creator(await self.get_cr(name))
        await self.delete_cr(name)
        self.set_status(204)
        self.finish()


class BuildEventsHandler(_APIBase):
    """Server-Sent Events: ``event: build`` with the build JSON whenever it changes."""

    @web.authenticated
    async def get(self, name: str) -> None:
        cr = await self.get_cr(name)
        settings = self.build_settings
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Accel-Buffering", "no")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.events_max_duration
        launch_deadline = None
        last = None
        try:
            while True:
                data = self.view(cr)
                text = json.dumps(data)
                if text != last:
                    self.write(f"event: build\ndata: {text}\n\n")
                    await self.flush()
                    last = text
                if data["finished"]:
                    if data["phase"] == "Failure" or data["launchable"]:
                        break
                    launch_deadline = launch_deadline or loop.time() + settings.launch_wait
                    if loop.time() > launch_deadline:
                        break
                if loop.time() > deadline:
                    break
                await asyncio.sleep(settings.events_poll_interval)
                try:
                    cr = await self.get_cr(name)
                except web.HTTPError as exc:
                    gone = {"name": name, "deleted": exc.status_code == 404}
                    self.write(f"event: gone\ndata: {json.dumps(gone)}\n\n")
                    break
            self.write("event: end\ndata: {}\n\n")
            await self.flush()
        except iostream.StreamClosedError:
            return
        self.finish()


def handlers(prefix: str) -> list:
    """Tornado URL specs for the builds API under ``prefix`` (ends with /); the pages are
    :func:`cnbi_spawner.service.build_pages.handlers`."""
    p = prefix
    return [
        (p + "api/builds", BuildsAPIHandler),
        (p + f"api/builds/{NAME_RE}/events", BuildEventsHandler),
        (p + f"api/builds/{NAME_RE}", BuildAPIHandler),
    ]
