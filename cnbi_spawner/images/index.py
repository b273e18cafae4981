"""Which image answers to a name: the index and the one ``resolve`` rule.

Resolution for a NEW launch (all matching case-insensitive, launchable images only):

1. exact key (``<stream>:<tag>`` or a static course name), or ``<namespace>/<stream>:<tag>``
   to pick one of several namespaces that have the same stream;
2. a tag name that exactly one launchable image carries;
3. a stream name -> that stream's default tag: recommended, else ``default-image``,
   else the newest (``items[0].created``), ties broken by tag name;
4. an alias (``cnbi.meteor.zone/course-aliases`` or static ``aliases``).

The first level with exactly one candidate wins. When no level is unique but some
level had several candidates, the name is ambiguous (``UnknownImage(ambiguous=True)``
listing the candidates); otherwise ``UnknownImage`` with close matches (difflib).
An outdated or failed image is never returned by ``resolve``; ``get`` still finds it
by exact key so running servers can restart.

The index is grouped by *source* (one ImageStream, or "static"): replacing one source
touches only that source's names, so a watch event costs O(tags in the stream), not
O(all images), and ``resolve`` is a handful of dict lookups. The index is mutated only
through ``set_source``/``remove_source`` and never across an ``await``; readers see
either the old or the new state.
"""

from __future__ import annotations

import difflib
import heapq
import time
from collections.abc import Iterable

from ..errors import UnknownImage
from ..launch_grammar import MAX_NAME_CHARS
from .model import KnownImage

Ref = tuple[str, str]  # (source, key)


def _norm(name: object) -> str | None:
    if not isinstance(name, str):
        return None
    name = name.strip().lower()
    if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
        return None
    return name


# A level maps a lower-cased name to one Ref (the common case, no container) or, when
# several images share the name, to a dict used as an ordered set of Refs. This keeps
# 30,000 images to a few MB of index instead of one small dict per name.
Refs = Ref | dict[Ref, None]


def _add(level: dict[str, Refs], name: str, ref: Ref) -> None:
    found = level.get(name)
    if found is None:
        level[name] = ref
    elif isinstance(found, tuple):
        if found != ref:
            level[name] = {found: None, ref: None}
    else:
        found[ref] = None


def _drop(level: dict[str, Refs], name: str, ref: Ref) -> None:
    found = level.get(name)
    if found is None:
        return
    if isinstance(found, tuple):
        if found == ref:
            del level[name]
        return
    found.pop(ref, None)
    if len(found) == 1:
        level[name] = next(iter(found))
    elif not found:
        del level[name]


def _refs(found: Refs | None) -> tuple[Ref, ...]:
    if found is None:
        return ()
    return (found,) if isinstance(found, tuple) else tuple(found)


def default_tag(images: Iterable[KnownImage]) -> KnownImage | None:
    """A stream's default launchable tag: recommended -> default-image -> newest."""
    candidates = [i for i in images if i.launchable]
    if not candidates:
        return None
    return max(candidates, key=lambda i: (i.recommended, i.default, i.created, i.tag))


class ImageIndex:
    """All known images, indexed for ``resolve``/``get``; see the module docstring."""

    def __init__(self, images: Iterable[KnownImage] = ()) -> None:
        self._sources: dict[str, dict[str, KnownImage]] = {}
        self._by_key: dict[str, Refs] = {}  # lower key -> all images (any state)
        self._levels: tuple[dict[str, Refs], ...] = ({}, {}, {}, {})
        self._stream_default: dict[str, Ref] = {}  # source -> ref of its default tag
        self._sorted: list[KnownImage] | None = None
        self._names: list[str] | None = None
        self._suggest_cache: dict[str, tuple[str, ...]] = {}
        grouped: dict[str, list[KnownImage]] = {}
        for image in images:
            grouped.setdefault(image.source, []).append(image)
        for source, group in grouped.items():
            self.set_source(source, group)

    # -- reading -------------------------------------------------------------------------
    def __len__(self) -> int:
        return sum(len(s) for s in self._sources.values())

    def image(self, ref: Ref) -> KnownImage:
        return self._sources[ref[0]][ref[1]]

    def get(self, key: str) -> KnownImage | None:
        """Exact key (outdated/failed included); case-insensitive fallback."""
        n = _norm(key)
        refs = _refs(self._by_key.get(n)) if n else ()
        if not refs:
            return None
        for ref in refs:
            if ref[1] == key:
                return self.image(ref)
        return self.image(refs[0])

    def images(self) -> list[KnownImage]:
        """Every image, sorted by order, then display name, then key."""
        if self._sorted is None:
            every = [i for s in self._sources.values() for i in s.values()]
            every.sort(key=lambda i: (i.order, i.display_name.lower(), i.key))
            self._sorted = every
        return list(self._sorted)

    def source(self, source: str) -> list[KnownImage]:
        return list(self._sources.get(source, {}).values())

    def sources(self) -> list[str]:
        return list(self._sources)

    def names(self) -> list[str]:
        """Every name ``resolve`` answers to (for suggestions)."""
        if self._names is None:
            seen: dict[str, None] = {}
            for level in self._levels:
                seen.update(dict.fromkeys(level))
            self._names = list(seen)
        return self._names

    # -- writing -------------------------------------------------------------------------
    def set_source(
        self, source: str, images: Iterable[KnownImage]
    ) -> tuple[list[str], list[str], list[str]]:
        """Replace everything ``source`` contributed; returns (added, removed, changed) keys."""
        new: dict[str, KnownImage] = {}
        for image in images:
            new.setdefault(image.key, image)
        old = self._sources.get(source, {})
        added = [k for k in new if k not in old]
        removed = [k for k in old if k not in new]
        changed = [k for k in new if k in old and old[k] != new[k]]
        if not (added or removed or changed):
            return [], [], []
        self._unindex(source, old)
        if new:
            self._sources[source] = new
            self._index(source, new)
        else:
            self._sources.pop(source, None)
        self._sorted = self._names = None
        self._suggest_cache = {}
        return added, removed, changed

    def remove_source(self, source: str) -> list[str]:
        return self.set_source(source, ())[1]

    def _index(self, source: str, images: dict[str, KnownImage]) -> None:
        exact, tags, streams, aliases = self._levels
        for key, image in images.items():
            ref = (source, key)
            low = key.lower()
            qualified = f"{image.namespace}/{low}" if image.namespace else ""
            _add(self._by_key, low, ref)
            if qualified:
                _add(self._by_key, qualified, ref)
            if not image.launchable:
                continue
            _add(exact, low, ref)
            if qualified:
                _add(exact, qualified, ref)
            if image.tag:
                _add(tags, image.tag.lower(), ref)
            for alias in image.aliases:
                _add(aliases, alias.lower(), ref)
        best = default_tag(images.values())
        if best is not None and best.stream:
            self._stream_default[source] = (source, best.key)
            _add(streams, best.stream.lower(), (source, ""))

    def _unindex(self, source: str, images: dict[str, KnownImage]) -> None:
        exact, tags, streams, aliases = self._levels
        for key, image in images.items():
            ref = (source, key)
            low = key.lower()
            qualified = f"{image.namespace}/{low}" if image.namespace else ""
            _drop(self._by_key, low, ref)
            _drop(exact, low, ref)
            if qualified:
                _drop(self._by_key, qualified, ref)
                _drop(exact, qualified, ref)
            if image.tag:
                _drop(tags, image.tag.lower(), ref)
            for alias in image.aliases:
                _drop(aliases, alias.lower(), ref)
        if self._stream_default.pop(source, None) is not None:
            stream = next(iter(images.values())).stream
            _drop(streams, stream.lower(), (source, ""))


def _ref_image(index: ImageIndex, ref: Ref) -> KnownImage:
    return index.image(index._stream_default[ref[0]] if ref[1] == "" else ref)


def _within_one_source(index: ImageIndex, refs: dict[Ref, None]) -> KnownImage | None:
    """Several tags of ONE stream share the name (e.g. a stream-level alias): not
    ambiguous, it means that stream; pick among them by the default-tag rule."""
    sources = {ref[0] for ref in refs}
    if len(sources) != 1 or len(refs) > 64:
        return None
    return default_tag(_ref_image(index, ref) for ref in refs)


def resolve(index: ImageIndex, name: object) -> KnownImage:
    """The launchable image ``name`` means (rules in the module docstring)."""
    n = _norm(name)
    if n is None or not isinstance(name, str):
        raise UnknownImage(str(name)[:64] if isinstance(name, str) else "")
    ambiguous: dict[Ref, None] | None = None
    for level in index._levels:
        found = level.get(n)
        if found is None:
            continue
        if isinstance(found, tuple):
            return _ref_image(index, found)
        one_stream = _within_one_source(index, found)
        if one_stream is not None:
            return one_stream
        ambiguous = ambiguous or found
    if ambiguous:
        images = [_ref_image(index, r) for r in ambiguous]
        keys = sorted({i.key for i in images})
        if len(keys) < len(images):  # same key in several namespaces: qualify them
            keys = sorted({f"{i.namespace}/{i.key}" if i.namespace else i.key for i in images})
        raise UnknownImage(n, tuple(keys[:8]), ambiguous=True)
    raise UnknownImage(name.strip(), suggest(index, n))  # as asked, not lower-cased


def suggest(
    index: ImageIndex, name: str, n: int = 3, *, cutoff: float = 0.6, budget: float = 0.01
) -> tuple[str, ...]:
    """Close launchable names for an error page.

    Like ``difflib.get_close_matches`` but with a CPU budget (``budget`` seconds) and a
    small cache, because unknown names come from anonymous requests: with 30,000 images
    a full scan costs ~0.3 s, which must not be a lever for load. Small registries are
    always scanned completely.
    """
    if name in index._by_key:  # exists, but not launchable: offer its stream's default
        image = index.get(name)
        ref = index._stream_default.get(image.source) if image else None
        return (index.image(ref).key,) if ref else ()
    name = name[:64]
    cache = index._suggest_cache
    if name in cache:
        return cache[name]
    matcher = difflib.SequenceMatcher()
    matcher.set_seq2(name)
    scored: list[tuple[float, str]] = []
    deadline = time.perf_counter() + budget
    for i, candidate in enumerate(index.names()):
        if i % 512 == 511 and time.perf_counter() > deadline:
            break
        matcher.set_seq1(candidate)
        if (
            matcher.real_quick_ratio() >= cutoff
            and matcher.quick_ratio() >= cutoff
            and (ratio := matcher.ratio()) >= cutoff
        ):
            scored.append((ratio, candidate))
    result = tuple(x for _, x in heapq.nlargest(n, scored))
    if len(cache) >= 1024:
        cache.clear()
    cache[name] = result
    return result
