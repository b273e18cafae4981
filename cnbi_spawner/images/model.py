"""``KnownImage``: one launchable (or listed) course image, as every other module sees it.

Pure data. Parsers (``imagestreams.py``, ``static.py``) build these; the registry
indexes them; selection and the catalog read them. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Package:
    """A name/version pair from the ODH software or python-dependency annotations."""

    name: str
    version: str = ""


@dataclass(frozen=True, slots=True)
class KnownImage:
    """An image the hub knows, under its canonical key and its aliases.

    ``image`` is exactly what goes into the pod spec. It is digest-pinned
    (``repo@sha256:…``) whenever the source knows the digest; ``pinned`` says so.
    """

    key: str  # "<stream>:<tag>" for ImageStreams, the course name for static images
    image: str  # what the pod runs
    display_name: str
    stream: str = ""
    tag: str = ""
    pinned: bool = False
    description: str = ""
    order: int = 100
    creator: str = ""
    aliases: tuple[str, ...] = ()
    software: tuple[Package, ...] = ()
    python_deps: tuple[Package, ...] = ()
    notebooks: tuple[str, ...] = ()  # when non-empty, launches may only open these paths
    notebooks_indexed: bool = False  # ``notebooks`` came from the digest's notebook index
    digest: str = ""  # "sha256:…" when ``image`` is digest-pinned
    indexed_digest: str = ""  # the digest the tag's notebook index (if any) was made for
    default_size: str | None = None
    requires_gpu: bool = False
    recommended: bool = False
    default: bool = False
    outdated: bool = False  # running servers keep it; new launches may not pick it
    phase: str = ""  # opendatahub.io/notebook-image-phase, "" when not set
    source: str = "static"  # "imagestream:<namespace>/<name>" or "static"
    url: str = ""
    namespace: str = ""  # the ImageStream's namespace, "" for static images
    created: str = ""  # RFC 3339 time of the newest status item (used to find the newest tag)

    @property
    def launchable(self) -> bool:
        """May a *new* server be started from this image?"""
        return not self.outdated and self.phase not in ("Failed", "Validating")
