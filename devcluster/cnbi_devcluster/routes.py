"""URL paths of the Kubernetes API -> what they address (pure).

    /api/v1[/watch][/namespaces/{ns}]/{plural}[/{name}[/{subresource}]]
    /apis/{group}/{version}[/watch][/namespaces/{ns}]/{plural}[/{name}[/{subresource}]]

``/api/v1/namespaces/{name}`` and ``/api/v1/namespaces/{name}/status`` address the
Namespace object itself. Discovery paths (``/api``, ``/api/v1``, ``/apis``,
``/apis/{group}``, ``/apis/{group}/{version}``) come back as ``Route(discovery=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})


@dataclass(frozen=True)
class Route:
    group: str = ""
    version: str = ""
    plural: str = ""
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    watch: bool = False  # the legacy /watch/ path prefix
    discovery: bool = False


def parse_path(path: str) -> Route | None:
    """Split an API path; None when it is not an API path at all."""
    parts = [unquote(p) for p in path.strip("/").split("/")]
    if not parts or parts[0] not in ("api", "apis"):
        return None
    if parts[0] == "api":
        if len(parts) == 1:
            return Route(discovery=True)
        group, version, rest = "", parts[1], parts[2:]
    else:
        if len(parts) <= 2:
            return Route(group=parts[1] if len(parts) == 2 else "", discovery=True)
        group, version, rest = parts[1], parts[2], parts[3:]
    if not rest:
        return Route(group=group, version=version, discovery=True)
    watch = rest[0] == "watch"
    if watch:
        rest = rest[1:]
        if not rest:
            return None
    if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in NAMESPACE_SUBRESOURCES:
        ns, rest = rest[1], rest[2:]
    else:
        ns = None
    if len(rest) > 3 or any(p == "" for p in rest):
        return None
    return Route(
        group=group,
        version=version,
        plural=rest[0],
        namespace=ns,
        name=rest[1] if len(rest) > 1 else None,
        subresource=rest[2] if len(rest) > 2 else None,
        watch=watch,
    )
