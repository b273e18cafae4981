"""Static image config -> ``KnownImage`` list (for hubs without ImageStreams).

Two forms are accepted:

- the MIT Open Learning drop-in, ``KNOWN_IMAGES = {"Course_Name": "repo:tag", ...}``:
  key = the course name lower-cased (launch links match it case-insensitively);
- a richer list of dicts, one per image::

      [{"name": "uai_source-uai.intro",            # required: the key
        "image": "registry.example/courses/uai-intro@sha256:...",   # required
        "display_name": "...", "description": "...", "order": 10,
        "aliases": ["intro", "uai"], "notebooks": ["lectures/l1.ipynb"],
        "default_size": "small", "requires_gpu": false, "recommended": true,
        "outdated": false, "creator": "...", "url": "...",
        "software": [{"name": "Python", "version": "3.11"}],
        "python_deps": [{"name": "numpy", "version": "2.1"}]}]

An entry with an invalid name or image reference is dropped with a problem string
(the operator sees it in the hub log and in ``cnbi-hub images``); other bad fields
are ignored with a problem string. Pure: no I/O.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from ..launch_grammar import is_course_name, split_image_ref
from . import fields
from .model import KnownImage

log = logging.getLogger(__name__)

KNOWN_FIELDS = {
    "name", "image", "display_name", "description", "order", "aliases", "notebooks",
    "default_size", "requires_gpu", "recommended", "default", "outdated", "creator", "url",
    "software", "python_deps",
}  # fmt: skip


def _as_json_text(value: object) -> object:
    """Config lists come as Python lists; the field parsers read JSON text."""
    return json.dumps(value) if isinstance(value, (list, tuple)) else value


def _bool(value: object) -> bool:
    return value is True or fields.flag(value)


def _one(entry: Mapping, problems: list[str]) -> KnownImage | None:
    name = entry.get("name")
    key = name.strip().lower() if isinstance(name, str) else ""
    if not is_course_name(key):
        problems.append(f"static image {str(name)[:40]!r}: invalid name; skipped")
        return None
    image = entry.get("image")
    parts = split_image_ref(image.strip() if isinstance(image, str) else image)
    if not parts or not isinstance(image, str) or not isinstance(name, str):
        problems.append(f"static image {key!r}: invalid image reference; skipped")
        return None
    unknown = sorted(str(k)[:40] for k in entry if k not in KNOWN_FIELDS)
    if unknown:
        problems.append(f"static image {key!r}: unknown fields {unknown} ignored")
    order, p = fields.parse_order(entry.get("order"))
    aliases, pa = fields.parse_aliases(_as_json_text(entry.get("aliases")), f"{key} aliases")
    notebooks, pn = fields.parse_notebooks(
        _as_json_text(entry.get("notebooks")), f"{key} notebooks"
    )
    size, ps = fields.parse_size(entry.get("default_size"), f"{key} default_size")
    software, p1 = fields.parse_packages(_as_json_text(entry.get("software")), f"{key} software")
    deps, p2 = fields.parse_packages(_as_json_text(entry.get("python_deps")), f"{key} python_deps")
    problems.extend(([p] if p else []) + pa + pn + ([ps] if ps else []) + p1 + p2)
    return KnownImage(
        key=key,
        image=image.strip(),
        display_name=(
            fields.text(entry.get("display_name"), fields.MAX_DISPLAY_CHARS) or name.strip()
        ),
        pinned=bool(parts[2]),
        description=fields.text(entry.get("description")),
        order=order,
        creator=fields.text(entry.get("creator"), fields.MAX_DISPLAY_CHARS),
        aliases=tuple(a for a in aliases if a != key),
        software=software,
        python_deps=deps,
        notebooks=notebooks,
        default_size=size,
        requires_gpu=_bool(entry.get("requires_gpu")),
        recommended=_bool(entry.get("recommended")),
        default=_bool(entry.get("default")),
        outdated=_bool(entry.get("outdated")),
        url=fields.safe_url(entry.get("url")),
        source="static",
    )


def parse_static_report(config: object) -> tuple[list[KnownImage], list[str]]:
    """``{course: image_ref}`` or ``[{...}, ...]`` -> (images, problems)."""
    problems: list[str] = []
    if config is None:
        return [], problems
    if isinstance(config, Mapping):
        entries: list[object] = [{"name": k, "image": v} for k, v in config.items()]
    elif isinstance(config, (list, tuple)):
        entries = list(config)
    else:
        return [], [f"static images: expected a dict or a list, got {type(config).__name__}"]
    images: list[KnownImage] = []
    seen: set[str] = set()
    for entry in entries:
        if not isinstance(entry, Mapping):
            problems.append("static images: an entry is not a dict; skipped")
            continue
        image = _one(entry, problems)
        if image is None:
            continue
        if image.key in seen:
            problems.append(f"static image {image.key!r}: duplicate name; later entry skipped")
            continue
        seen.add(image.key)
        images.append(image)
    return images, problems


def parse_static(config: object, *, logger: logging.Logger | None = None) -> list[KnownImage]:
    """Like ``parse_static_report``, logging each problem as a warning."""
    images, problems = parse_static_report(config)
    for problem in problems:
        (logger or log).warning("%s", problem)
    return images
