"""The catalog: which course images can be launched, and launch links for them.

Routes (under the service prefix, e.g. ``/services/cnbi/``):

- ``GET /`` — HTML page in the hub's look (extends the hub's ``page.html``, uses the
  hub's CSS from ``/hub/static/``): every launchable image with its description,
  software, python dependencies and notebooks, and a launch-link builder. The
  builder is a plain GET form (``?course=…&notebook=…&size=…``): the link is made
  and checked on the server, so it works without JavaScript; a small script only
  adds a "Copy" button.
- ``GET /api/images`` and ``GET /api/images/{key}`` — JSON view of the registry.

All routes need a hub login (HubOAuth; API calls may use a hub token instead).
The link builder validates its input like ``/tmplogin`` would (only registry
images, safe notebook paths, known sizes) and signs the link when a signing key
is configured (:mod:`cnbi_spawner.signing`). Nothing here changes any state.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from urllib.parse import unquote

from tornado import web

from .. import signing
from ..errors import LaunchError
from ..images.model import KnownImage
from ..notebook_paths import listed_notebooks, normalise_notebook
from .context import HubServiceHandler


def image_json(image: KnownImage) -> dict:
    """The public view of one image (the pod image ref is included: it is no secret,
    and course authors want to see the digest they launch)."""
    return {
        "key": image.key,
        "display_name": image.display_name,
        "description": image.description,
        "image": image.image,
        "pinned": image.pinned,
        "stream": image.stream,
        "tag": image.tag,
        "aliases": list(image.aliases),
        "order": image.order,
        "software": [{"name": p.name, "version": p.version} for p in image.software],
        "python_dependencies": [{"name": p.name, "version": p.version} for p in image.python_deps],
        "notebooks": list(image.notebooks),
        "notebooks_indexed": image.notebooks_indexed,
        "default_size": image.default_size,
        "requires_gpu": image.requires_gpu,
        "recommended": image.recommended,
        "default": image.default,
        "outdated": image.outdated,
        "launchable": image.launchable,
        "phase": image.phase,
        "source": image.source,
        "url": image.url,
        "creator": image.creator,
    }


def rebuilt_lines(images: list[KnownImage], rebuilds) -> dict[str, str]:
    """``{image key: "rebuilt on <date> because base X changed"}`` from the rebuild loop's
    notes (``service/rebuilds.py``), for images whose stream a finished rebuild published."""
    notes = rebuilds.notes if rebuilds is not None else {}
    out = {}
    for image in images:
        note = notes.get(image.source.rsplit("/", 1)[-1]) if image.source else None
        if note and note.get("phase") == "Success":
            when = (image.created or note.get("requested_at") or "")[:10]
            out[image.key] = f"rebuilt on {when} because {note['because']}"
    return out


@dataclass(frozen=True)
class LinkRequest:
    course: str = ""
    notebook: str = ""
    size: str = ""


@dataclass(frozen=True)
class LinkResult:
    link: str | None
    errors: dict[str, str]
    signed: bool = False
    expires: int | None = None


def pool_lines(pool) -> dict[str, str]:
    """``{image key: "Warm pool: 3/5 ready (small), 2 starting"}`` from the pool manager's
    last pass (``service/pool.py``); courses without a pool get no line."""
    out: dict[str, str] = {}
    for course, sizes in (pool.status() if pool is not None else {}).items():
        parts = []
        for size, count in sorted(sizes.items()):
            text = f"{count.ready}/{count.target} ready ({size})"
            parts.append(text + (f", {count.starting} starting" if count.starting else ""))
        out[course] = "Warm pool: " + "; ".join(parts)
    return out


def build_link(
    req: LinkRequest,
    lookup,
    sizes: list[str],
    *,
    hub_url: str,
    signing_key: bytes | str = "",
    ttl: int = 0,
    now: float | None = None,
) -> LinkResult:
    """Check a link-builder request and make the ``/tmplogin`` link (pure).

    ``lookup(key) -> KnownImage | None``; ``hub_url`` is the public hub root
    (``https://hub.example.edu/``), the link is ``<hub_url>tmplogin?…``.
    """
    errors: dict[str, str] = {}
    image = lookup(req.course) if req.course else None
    if not req.course:
        errors["course"] = "Pick a course image."
    elif image is None or not image.launchable:
        errors["course"] = "There is no launchable course image with that name."
    notebook = None
    try:
        notebook = normalise_notebook(req.notebook)
    except LaunchError as e:
        errors["notebook"] = e.message
    if image is not None and notebook and image.notebooks:
        if notebook not in listed_notebooks(image.notebooks):
            errors["notebook"] = "That notebook is not one of this image's notebooks."
    if req.size and sizes and req.size not in sizes:
        errors["size"] = "Unknown size; pick one from the list."
    if errors or image is None:
        return LinkResult(None, errors)
    params = {"course": image.key}
    if notebook:
        params["notebook"] = notebook
    if req.size:
        params["size"] = req.size
    expires = None
    if signing_key:
        expires = int((now if now is not None else time.time()) + ttl)
        params = signing.sign_params(params, signing_key, expires)
    return LinkResult(signing.launch_link(hub_url, params), {}, bool(signing_key), expires)


class _Base(HubServiceHandler):
    def lookup(self, key: str) -> KnownImage | None:
        reg = self.ctx.registry
        return reg.get(key) if reg is not None else None

    def images(self) -> list[KnownImage]:
        reg = self.ctx.registry
        return list(reg.images()) if reg is not None else []


class ImagesAPIHandler(_Base):
    """``GET api/images[/<key>]``: JSON. ``?all=1`` includes outdated/failed images."""

    def get_login_url(self):
        raise web.HTTPError(403, "a hub token or login is required")

    @web.authenticated
    def get(self, key: str | None = None) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        if key is not None:
            image = self.lookup(unquote(key))
            if image is None:
                self.set_status(404)
                self.write(json.dumps({"status": 404, "message": "no image with that key"}))
                return
            self.write(json.dumps(image_json(image)))
            return
        show_all = self.get_argument("all", "") in ("1", "true", "yes")
        images = [i for i in self.images() if show_all or i.launchable]
        reg = self.ctx.registry
        self.write(
            json.dumps(
                {
                    "synced": bool(reg is not None and reg.synced),
                    "images": [image_json(i) for i in images],
                }
            )
        )


class CatalogHandler(_Base):
    """``GET /``: the catalog page with the launch-link builder."""

    @web.authenticated
    def get(self) -> None:
        args = {k: self.get_argument(k, "")[:2048] for k in ("course", "notebook", "size")}
        asked = any(args.values()) or "make" in self.request.arguments
        req = LinkRequest(**args)
        images = [i for i in self.images() if i.launchable]
        sizes = self.ctx.sizes
        result = None
        if asked:
            result = build_link(
                req,
                self.lookup,
                sizes,
                hub_url=self.hub_public_url(),
                signing_key=self.ctx.links.key_bytes,
                ttl=self.ctx.links.max_ttl,
            )
            if result.errors:
                self.set_status(400)
        selected = self.lookup(req.course) if req.course else None
        html = self.ctx.render(
            "catalog.html",
            handler=self,
            images=images,
            req=req,
            result=result,
            sizes=sizes,
            selected=selected,
            signing=bool(self.ctx.links.key_bytes),
            synced=bool(self.ctx.registry is not None and self.ctx.registry.synced),
            user_model=self.current_user,
            rebuilt=rebuilt_lines(images, self.ctx.rebuilds),
            pools=pool_lines(self.ctx.pool),
        )
        self.set_header("Cache-Control", "no-store")
        self.write(html)
