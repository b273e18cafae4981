"""ImageStream object (a plain dict, as the API returns it) -> ``KnownImage`` list.

Policy (DESIGN §4):

- Only streams carrying the notebook-image label (``opendatahub.io/notebook-image: "true"``)
  are read; anything else (e.g. Elyra runtime streams) yields nothing.
- One ``KnownImage`` per tag that ``status.tags[]`` lists with non-empty ``items``;
  a tag whose import failed (``items: null``) is reported as skipped, never listed.
- The image reference is ``items[0].dockerImageReference`` (newest, digest-pinned).
  Only when no digest is known do we fall back to ``status.dockerImageRepository:tag``
  or ``spec.tags[].from.name``; such images have ``pinned=False`` and a problem is reported.
- Parsing is lenient: a bad JSON annotation or order value is reported (and logged by
  the caller) and ignored; it never hides the image.
- ``cnbi.meteor.zone/*`` annotations (course-aliases, notebooks, default-size,
  requires-gpu) may sit on the stream or on the tag; the tag wins.
- ``default-image`` is read from the tag and, as older tools did, from the stream.
- A tag without a declared ``notebooks`` list takes its notebooks from its notebook index
  (``cnbi.meteor.zone/notebook-index``, :mod:`.notebook_index`) when that index was made for
  the tag's current digest and restricts (complete, not empty); a stale index is ignored.

Pure: no I/O. ``parse_imagestream`` logs its problems to the logger it is given.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from ..launch_grammar import is_digest, split_image_ref
from . import fields
from .model import KnownImage
from .notebook_index import ANNOTATION as INDEX_ANNOTATION
from .notebook_index import digest_of, read_annotation

ODH = "opendatahub.io/"
CNBI = "cnbi.meteor.zone/"
NOTEBOOK_LABEL = (ODH + "notebook-image", "true")
RECOMMENDED_KEYS = (ODH + "workbench-image-recommended", ODH + "notebook-image-recommended")
PHASES = ("Validating", "Succeeded", "Failed")
MAX_TAGS = 500  # per stream: a hostile stream must not cost unbounded parse time

log = logging.getLogger(__name__)


@dataclass
class ParseResult:
    """What one ImageStream contributed: images, tags left out (with why), and problems."""

    source: str
    images: list[KnownImage] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)
    problems: list[str] = field(default_factory=list)


def stream_source(namespace: str, name: str) -> str:
    return f"imagestream:{namespace}/{name}"


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def _tag_name(value: object) -> str | None:
    return value if fields.is_tag(value) else None


def _pick_ref(
    tag: str, item: dict, status_repo: str, spec_from: dict
) -> tuple[str | None, bool, str | None]:
    """(image ref, pinned, problem) for one launchable tag."""
    ref = item.get("dockerImageReference")
    parts = split_image_ref(ref)
    if parts and parts[2]:
        return ref, True, None
    digest = item.get("image")
    repo_parts = split_image_ref(status_repo)
    bad = "dockerImageReference is not a valid image reference; " if ref and not parts else ""
    if is_digest(digest) and repo_parts and not repo_parts[1] and not repo_parts[2]:
        return (
            f"{status_repo}@{digest}",
            True,
            (bad + "using status.dockerImageRepository@image") if bad else None,
        )
    if parts:
        return ref, False, "dockerImageReference has no digest; launches are not pinned"
    if repo_parts and not repo_parts[1] and not repo_parts[2]:
        candidate = f"{status_repo}:{tag}"
        if split_image_ref(candidate):
            return candidate, False, "no digest known; using status.dockerImageRepository:tag"
    if spec_from.get("kind", "DockerImage") == "DockerImage":
        name = spec_from.get("name")
        if split_image_ref(name):
            return name, False, "no digest known; using spec.tags[].from.name"
    return None, False, "no usable image reference"


def _by_tag(entries: list, key: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for entry in entries:
        entry = _dict(entry)
        name = _tag_name(entry.get(key))
        if name is not None and name not in out:
            out[name] = entry
    return out


def parse_imagestream_report(
    obj: object, *, require_label: tuple[str, str] | None = NOTEBOOK_LABEL
) -> ParseResult:
    """Parse one ImageStream; see the module docstring for the rules."""
    obj = _dict(obj)
    meta = _dict(obj.get("metadata"))
    name = meta.get("name")
    namespace = meta["namespace"] if isinstance(meta.get("namespace"), str) else ""
    if not fields.is_k8s_name(name):
        return ParseResult(source="imagestream:?", problems=["ImageStream without a valid name"])
    if namespace and not fields.is_k8s_name(namespace):
        return ParseResult(source="imagestream:?", problems=[f"{name}: invalid namespace"])
    result = ParseResult(source=stream_source(namespace, name))
    labels = _dict(meta.get("labels"))
    if require_label and labels.get(require_label[0]) != require_label[1]:
        result.skipped.append((name, f"no {require_label[0]}={require_label[1]} label"))
        return result
    ann = _dict(meta.get("annotations"))
    problems = result.problems

    order, problem = fields.parse_order(ann.get(ODH + "notebook-image-order"))
    if problem:
        problems.append(problem)
    phase = fields.text(ann.get(ODH + "notebook-image-phase"), 64)
    if phase and phase not in PHASES:
        problems.append(f"unknown notebook-image-phase {phase[:40]!r}; ignored")
        phase = ""
    common: dict[str, Any] = dict(
        display_name=fields.text(ann.get(ODH + "notebook-image-name"), fields.MAX_DISPLAY_CHARS)
        or name,
        description=fields.text(ann.get(ODH + "notebook-image-desc")),
        url=fields.safe_url(ann.get(ODH + "notebook-image-url")),
        creator=fields.text(ann.get(ODH + "notebook-image-creator"), fields.MAX_DISPLAY_CHARS),
        order=order,
        phase=phase,
        stream=name,
        namespace=namespace,
        source=result.source,
    )
    stream_default = fields.flag(ann.get(ODH + "default-image"))

    spec_tags = _by_tag(_list(_dict(obj.get("spec")).get("tags")), "name")
    status = _dict(obj.get("status"))
    status_repo = status.get("dockerImageRepository")
    status_repo = status_repo if isinstance(status_repo, str) else ""
    status_tags = _by_tag(_list(status.get("tags")), "tag")
    for entry in _list(status.get("tags")):
        tag = _dict(entry).get("tag")
        if tag is not None and not fields.is_tag(tag):
            result.skipped.append((f"{name}:{str(tag)[:40]!r}", "invalid tag name"))
    for tag in spec_tags:
        if tag not in status_tags:
            result.skipped.append((f"{name}:{tag}", "not imported yet (no status.tags entry)"))

    if len(status_tags) > MAX_TAGS:
        problems.append(f"{len(status_tags)} tags; only the first {MAX_TAGS} are read")
        status_tags = dict(list(status_tags.items())[:MAX_TAGS])
    for tag, st in status_tags.items():
        key = f"{name}:{tag}"
        items = [i for i in _list(st.get("items")) if isinstance(i, dict)]
        if not items:
            reason = "import failed" if st.get("items") is None else "no imported items"
            for cond in _list(st.get("conditions")):
                cond = _dict(cond)
                if cond.get("type") == "ImportSuccess" and cond.get("status") == "False":
                    reason += ": " + fields.text(cond.get("reason") or cond.get("message"), 200)
                    break
            result.skipped.append((key, reason))
            continue
        spec = spec_tags.get(tag, {})
        tag_ann = _dict(spec.get("annotations"))
        ref, pinned, problem = _pick_ref(tag, items[0], status_repo, _dict(spec.get("from")))
        if ref is None:
            result.skipped.append((key, problem or "no usable image reference"))
            continue
        if problem:
            problems.append(f"{key}: {problem}")

        def ours(suffix: str, tag_ann: dict = tag_ann) -> object:
            return tag_ann.get(CNBI + suffix, ann.get(CNBI + suffix))

        software, p1 = fields.parse_packages(
            tag_ann.get(ODH + "notebook-software"), f"{key} notebook-software"
        )
        deps, p2 = fields.parse_packages(
            tag_ann.get(ODH + "notebook-python-dependencies"), f"{key} notebook-python-dependencies"
        )
        aliases, p3 = fields.parse_aliases(ours("course-aliases"), f"{key} course-aliases")
        notebooks, p4 = fields.parse_notebooks(ours("notebooks"), f"{key} notebooks")
        digest = digest_of(ref) if pinned else ""
        index = read_annotation(tag_ann.get(INDEX_ANNOTATION))
        indexed = not notebooks and index is not None and index.digest == digest
        if indexed and index is not None and index.restricts:
            notebooks = index.notebooks
        size, p5 = fields.parse_size(ours("default-size"), f"{key} default-size")
        problems.extend(p1 + p2 + p3 + p4 + ([p5] if p5 else []))
        default_ann = tag_ann.get(ODH + "default-image")
        created = items[0].get("created")
        result.images.append(
            KnownImage(
                key=key,
                image=ref,
                tag=tag,
                pinned=pinned,
                aliases=aliases,
                software=software,
                python_deps=deps,
                notebooks=notebooks,
                notebooks_indexed=indexed and bool(notebooks),
                digest=digest,
                indexed_digest=index.digest if index is not None else "",
                default_size=size,
                requires_gpu=fields.flag(ours("requires-gpu")),
                recommended=any(fields.flag(tag_ann.get(k)) for k in RECOMMENDED_KEYS),
                default=fields.flag(default_ann) if default_ann is not None else stream_default,
                outdated=fields.flag(tag_ann.get(ODH + "image-tag-outdated")),
                created=created if isinstance(created, str) and len(created) <= 64 else "",
                **common,
            )
        )
    return result


def parse_imagestream(
    obj: object,
    *,
    require_label: tuple[str, str] | None = NOTEBOOK_LABEL,
    logger: logging.Logger | None = None,
) -> list[KnownImage]:
    """ImageStream dict -> its launchable-tag images; problems logged as one warning each."""
    result = parse_imagestream_report(obj, require_label=require_label)
    for problem in result.problems:
        (logger or log).warning("%s: %s", result.source, problem)
    return result.images
