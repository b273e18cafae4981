"""Discovery documents (``/api``, ``/apis``, groups, resource lists) and ``/version`` (pure)."""

from __future__ import annotations

from . import resources as R
from .routes import Route

#: the Kubernetes version whose API (and kubectl) the dev cluster is checked against
VERSION_INFO = {
    "major": "1",
    "minor": "34",
    "gitVersion": "v1.34.0-cnbi-devcluster",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "platform": "linux/amd64",
    "goVersion": "go1.22.0",
    "compiler": "gc",
}


def discovery(
    versions: dict[tuple[str, str, str], R.ResourceType], route: Route, *, api_root: bool, host: str
) -> dict:
    """The discovery document for ``route`` (``/api``, ``/apis``, a group, a group/version)."""
    if not route.group and not route.version:
        if api_root:
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
            }
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": _groups(versions)}
    if route.group and not route.version:
        for g in _groups(versions):
            if g["name"] == route.group:
                return {"kind": "APIGroup", "apiVersion": "v1", **g}
        raise R.ApiError(404, "NotFound", "the server could not find the requested resource")
    types = [rt for (g, v, _), rt in versions.items() if g == route.group and v == route.version]
    if not types:
        raise R.ApiError(404, "NotFound", "the server could not find the requested resource")
    gv = f"{route.group}/{route.version}" if route.group else route.version
    resources = []
    for rt in types:
        resources.append(
            {
                "name": rt.plural,
                "singularName": rt.singular,
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": list(rt.verbs),
                **({"shortNames": list(rt.short_names)} if rt.short_names else {}),
                **({"categories": list(rt.categories)} if rt.categories else {}),
            }
        )
        if rt.status:
            resources.append(
                {
                    "name": f"{rt.plural}/status",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        if rt.kind == "Pod":
            resources.append(
                {
                    "name": "pods/log",
                    "singularName": "",
                    "namespaced": True,
                    "kind": "Pod",
                    "verbs": ["get"],
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    }


def _groups(versions) -> list[dict]:
    groups: dict[str, list[str]] = {}
    for g, v, _ in versions:
        if g and v not in groups.setdefault(g, []):
            groups[g].append(v)
    return [
        {
            "name": g,
            "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
            "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
        }
        for g, vs in sorted(groups.items())
    ]
