"""Which CustomNBImages need a rebuild because their base image changed (pure).

Course images are built on shared base images. When a base image's tag moves to a new
digest (a security fix, say), every CustomNBImage built on it that opted in is rebuilt.

Opt-in: annotation ``cnbi.meteor.zone/rebuild-on-base-change: "true"`` (``"false"`` opts
out), else the service-wide default (``RebuildSettings.default_rebuild_on_base_change``).

The base: ``spec.baseImage`` (seed dialect) or ``spec.fromImage`` (operator dialect),
matched against the known-image registry, in this order: the image last recorded on the
CR (``cnbi.meteor.zone/base-image``), the exact registry key (``stream:tag``), a stream
name (its ``latest`` tag, else its only tag), an image reference ``repo:tag`` (``repo``
alone means ``:latest``) whose repository and tag are the image's, or a digest reference
``repo@sha256:…`` equal to an image's current pod image. Only digest-pinned registry images
count (a floating static tag has no digest to compare). A CR built into the very stream it
names as its base is ignored (no self-loops).

What the service records on the CR (metadata annotations), so the decision survives
service restarts and repeated registry events:

- ``cnbi.meteor.zone/base-digest``: the base digest the CR's current build is from;
- ``cnbi.meteor.zone/base-image``: the registry key of that base;
- on a rebuild also ``cnbi.meteor.zone/rebuilt-because`` (human text),
  ``cnbi.meteor.zone/rebuild-requested-at`` (RFC 3339) and
  ``cnbi.meteor.zone/previous-base-digest``.

Decision per CR (``plan``):

- not opted in, no base, base unknown or not pinned, self-loop -> ``skip``;
- recorded digest == the base's digest -> ``skip`` (already rebuilt for it: idempotent);
- nothing recorded yet: if this very registry change moved the base (``previous`` map
  given and its digest differs) -> ``rebuild``; else ``record`` the current digest as the
  baseline (first sight; no build);
- recorded digest differs -> ``rebuild``;
- a ``rebuild`` of a CR whose build is still in progress -> ``busy`` (not re-queued; the
  next pass after it finished decides again);
- at most ``max_in_flight`` rebuilds run at once (rebuilds requested by us and not yet
  finished count); the rest -> ``deferred`` (requested by a later pass). No storm.

How a rebuild is requested (the I/O is in :mod:`cnbi_spawner.service.rebuilds`): the same CR
is re-run, not copied. The service writes the annotations above and resets ``status`` to
``{"phase": "Pending"}`` through the ``/status`` subresource; a controller re-runs any
CustomNBImage whose status is not final (this is how the dev cluster's controller, and a
meteor-operator reconcile, treat a CR without a finished status). The spec — the author's
request — is left untouched, and the CR keeps its name, so its ImageStream, launch links
and catalog entry stay the same; the new build publishes a new digest on the same tag.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cnbi_spawner.builds.phases import imagestream_name, normalise
from cnbi_spawner.images.model import KnownImage

PREFIX = "cnbi.meteor.zone/"
OPT_IN = PREFIX + "rebuild-on-base-change"
BASE_DIGEST = PREFIX + "base-digest"
BASE_IMAGE = PREFIX + "base-image"
PREVIOUS_DIGEST = PREFIX + "previous-base-digest"
REBUILT_BECAUSE = PREFIX + "rebuilt-because"
REQUESTED_AT = PREFIX + "rebuild-requested-at"


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one CustomNBImage. ``action``: rebuild|record|skip|busy|deferred."""

    name: str
    action: str
    why: str
    base_key: str = ""
    base_name: str = ""
    digest: str = ""
    previous_digest: str = ""

    def annotations(self, now: str) -> dict[str, str]:
        """The annotations to write for ``record``/``rebuild``."""
        out = {BASE_DIGEST: self.digest, BASE_IMAGE: self.base_key}
        if self.action == "rebuild":
            out[REBUILT_BECAUSE] = f"base {self.base_name} changed"
            out[REQUESTED_AT] = now
            out[PREVIOUS_DIGEST] = self.previous_digest
        return out


def _meta(cr: dict) -> dict:
    meta = cr.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _annotations(cr: dict) -> dict:
    ann = _meta(cr).get("annotations")
    return ann if isinstance(ann, dict) else {}


def opted_in(cr: dict, default: bool) -> bool:
    value = _annotations(cr).get(OPT_IN)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return default


def base_ref(cr: dict) -> str:
    spec = cr["spec"] if isinstance(cr.get("spec"), dict) else {}
    for key in ("baseImage", "fromImage"):
        value = spec.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def digest_of(image: KnownImage) -> str:
    """``sha256:…`` of a digest-pinned image, else ''."""
    if not image.pinned or "@" not in image.image:
        return ""
    return image.image.rsplit("@", 1)[1]


def _repo(ref: str) -> tuple[str, str, str]:
    """(repository, tag, digest) of an image reference."""
    digest = ""
    if "@" in ref:
        ref, digest = ref.split("@", 1)
    tag = ""
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        ref, tag = ref.rsplit(":", 1)
    return ref, tag, digest


def find_base(ref: str, images: Iterable[KnownImage], recorded_key: str = "") -> KnownImage | None:
    """The registry image a base reference names (see the module docstring), else None."""
    images = [i for i in images if i.pinned]
    by_key = {i.key.lower(): i for i in images}
    if recorded_key and recorded_key.lower() in by_key:
        return by_key[recorded_key.lower()]
    if not ref:
        return None
    if ref.lower() in by_key:
        return by_key[ref.lower()]
    stream_tags = [i for i in images if i.stream and i.stream.lower() == ref.lower()]
    if stream_tags:
        latest = [i for i in stream_tags if i.tag == "latest"]
        if latest or len(stream_tags) == 1:
            return (latest or stream_tags)[0]
        return None
    repo, tag, digest = _repo(ref)
    if digest:
        same = [i for i in images if i.image == f"{repo}@{digest}"]
        return same[0] if len(same) == 1 else None
    tag = tag or "latest"
    same = [i for i in images if _repo(i.image)[0] == repo and i.tag == tag]
    return same[0] if len(same) == 1 else None


def decide(
    cr: dict,
    images: Iterable[KnownImage],
    *,
    default_opt_in: bool = False,
    previous: Mapping[str, KnownImage] | None = None,
) -> Decision:
    """The decision for one CR, ignoring the concurrency budget (see ``plan``)."""
    meta = _meta(cr)
    name = meta["name"] if isinstance(meta.get("name"), str) else ""
    if not opted_in(cr, default_opt_in):
        return Decision(name, "skip", "not opted in")
    ref = base_ref(cr)
    if not ref:
        return Decision(name, "skip", "no base image")
    ann = _annotations(cr)
    recorded_key = ann[BASE_IMAGE] if isinstance(ann.get(BASE_IMAGE), str) else ""
    base = find_base(ref, images, recorded_key)
    if base is None:
        return Decision(name, "skip", f"base {ref!r} is not a pinned registry image")
    own = f"imagestream:{meta.get('namespace', '')}/{imagestream_name(cr)}"
    if base.source == own:
        return Decision(name, "skip", "base is the image this CR builds")
    digest = digest_of(base)
    label = base.display_name or base.key
    recorded = ann.get(BASE_DIGEST) if isinstance(ann.get(BASE_DIGEST), str) else ""
    common = {"base_key": base.key, "base_name": label, "digest": digest}
    if recorded == digest:
        return Decision(name, "skip", "up to date", **common)
    if not recorded:
        old = (previous or {}).get(base.key)
        old_digest = digest_of(old) if old is not None else ""
        if not (old_digest and old_digest != digest):
            return Decision(name, "record", "first sight of this CR", **common)
        recorded = old_digest
    if not normalise(cr).finished:
        return Decision(name, "busy", "build in progress", previous_digest=recorded, **common)
    return Decision(name, "rebuild", f"base {base.key} changed", previous_digest=recorded, **common)


def rebuilding(cr: dict) -> bool:
    """Is ``cr`` an unfinished rebuild we requested?"""
    return bool(_annotations(cr).get(REQUESTED_AT)) and not normalise(cr).finished


def plan(
    crs: Iterable[dict],
    images: Iterable[KnownImage],
    *,
    default_opt_in: bool = False,
    previous: Mapping[str, KnownImage] | None = None,
    max_in_flight: int = 2,
) -> list[Decision]:
    """Decisions for every CR (sorted by name), rebuilds beyond the budget ``deferred``."""
    crs = sorted(
        (c for c in crs if isinstance(c, dict)),
        key=lambda c: str(_meta(c).get("name", "")),
    )
    images = list(images)
    budget = max(0, max_in_flight - sum(1 for c in crs if rebuilding(c)))
    out = []
    for cr in crs:
        d = decide(cr, images, default_opt_in=default_opt_in, previous=previous)
        if d.action == "rebuild":
            if budget <= 0:
                d = Decision(
                    d.name,
                    "deferred",
                    "too many rebuilds in flight",
                    d.base_key,
                    d.base_name,
                    d.digest,
                    d.previous_digest,
                )
            else:
                budget -= 1
        out.append(d)
    return out


def rebuild_note(cr: dict) -> dict | None:
    """``{"because": "base X changed", "requested_at": …}`` for a CR we rebuilt, else None."""
    ann = _annotations(cr)
    because = ann.get(REBUILT_BECAUSE)
    if not isinstance(because, str) or not because:
        return None
    status = normalise(cr)
    return {
        "because": because,
        "requested_at": str(ann.get(REQUESTED_AT) or ""),
        "phase": status.phase,
        "imagestream": status.imagestream,
        "previous_digest": str(ann.get(PREVIOUS_DIGEST) or ""),
        "digest": str(ann.get(BASE_DIGEST) or ""),
    }
