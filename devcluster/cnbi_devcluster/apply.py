"""Server-side apply for the common cases (pure): ``kubectl apply --server-side``.

A ``PATCH`` with ``Content-Type: application/apply-patch+yaml`` and a ``fieldManager``
sends the manager's whole intent (its *applied configuration*). The policy, as
kube-apiserver's for these cases:

- the object does not exist: it is created from the configuration;
- each manager owns the fields of its last configuration, recorded in
  ``metadata.managedFields`` (``operation: Apply``, ``fieldsType: FieldsV1``);
- a field the configuration sets that another applier owns with a *different* value is a
  conflict: 409 ``Apply failed with N conflict(s)``, unless ``force=true``, which takes
  the field over; the same value makes the field shared;
- a field the manager owned before, that its new configuration leaves out and that nobody
  else owns, is removed.

Simplifications: lists are atomic (owned and replaced whole; no ``listType=map`` merge by
key), and writes other than apply record no ``Update`` ownership, so conflicts arise only
between appliers.
"""

from __future__ import annotations

import copy
from typing import Any

from . import resources as R

Path = tuple[str, ...]
#: never owned: identity and server-set metadata
UNOWNED: tuple[Path, ...] = (
    ("apiVersion",),
    ("kind",),
    ("metadata", "name"),
    ("metadata", "namespace"),
    ("metadata", "uid"),
    ("metadata", "resourceVersion"),
    ("metadata", "generation"),
    ("metadata", "creationTimestamp"),
    ("metadata", "managedFields"),
    ("status",),
)


def leaves(obj: Any, prefix: Path = ()) -> dict[Path, Any]:
    """Leaf paths of ``obj`` and their values (lists and empty maps are leaves)."""
    if isinstance(obj, dict) and obj:
        out: dict[Path, Any] = {}
        for key, value in obj.items():
            out.update(leaves(value, (*prefix, str(key))))
        return out
    return {prefix: obj}


def owned(obj: dict) -> dict[Path, Any]:
    return {
        p: v for p, v in leaves(obj).items() if p and not any(p[: len(u)] == u for u in UNOWNED)
    }


def to_fields_v1(paths: set[Path]) -> dict:
    """``{("spec", "x")}`` -> ``{"f:spec": {"f:x": {}}}`` (the FieldsV1 encoding)."""
    root: dict = {}
    for path in sorted(paths):
        node = root
        for key in path:
            node = node.setdefault(f"f:{key}", {})
    return root


def from_fields_v1(fields: dict, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    for key, child in (fields or {}).items():
        if not key.startswith("f:"):
            continue  # k:/v:/i: set elements; lists are atomic here
        path = (*prefix, key[2:])
        out |= from_fields_v1(child, path) if child else {path}
    return out


def _get(obj: Any, path: Path) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return _MISSING
        obj = obj[key]
    return obj


def _set(obj: dict, path: Path, value: Any) -> None:
    for key in path[:-1]:
        child = obj.get(key)
        if not isinstance(child, dict):
            child = obj[key] = {}
        obj = child
    obj[path[-1]] = copy.deepcopy(value)


def _remove(obj: dict, path: Path) -> None:
    parents = []
    node: Any = obj
    for key in path[:-1]:
        if not isinstance(node, dict) or key not in node:
            return
        parents.append((node, key))
        node = node[key]
    if isinstance(node, dict):
        node.pop(path[-1], None)
    for parent, key in reversed(parents):  # drop maps emptied by the removal
        if parent[key] == {}:
            del parent[key]
        else:
            break


_MISSING = object()


def _overlaps(a: Path, b: Path) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def apply(
    current: dict | None,
    config: dict,
    *,
    manager: str,
    force: bool,
    api_version: str,
    now: str,
) -> dict:
    """The object after ``manager`` applies ``config`` to ``current`` (None: create).

    Raises ``ApiError`` 409 (conflicts, without ``force``) or 400 (no manager)."""
    if not manager:
        raise R.bad_request("fieldManager: Required value: is required for apply requests")
    entries = copy.deepcopy(((current or {}).get("metadata") or {}).get("managedFields") or [])
    mine = owned(config)
    others: list[tuple[dict, set[Path]]] = []
    before: set[Path] = set()
    for entry in entries:
        paths = from_fields_v1(entry.get("fieldsV1") or {})
        if entry.get("manager") == manager and entry.get("operation") == "Apply":
            before = paths
        else:
            others.append((entry, paths))
    result = copy.deepcopy(current) if current is not None else {}
    conflicts: list[tuple[str, Path]] = []
    for path in mine:
        for entry, paths in others:
            if entry.get("operation") != "Apply":
                continue
            for theirs in [p for p in paths if _overlaps(p, path)]:
                if _get(result, theirs) != _get(config, theirs):
                    conflicts.append((entry.get("manager", ""), theirs))
                    if force:
                        paths.discard(theirs)
    if conflicts and not force:
        raise conflict_error(conflicts, api_version)
    still_owned = set().union(*(p for _, p in others)) if others else set()
    for path in before - set(mine):
        if not any(_overlaps(path, p) for p in still_owned) and _get(result, path) is not _MISSING:
            _remove(result, path)
    for path, value in mine.items():
        _set(result, path, value)
    for key in ("apiVersion", "kind"):
        result[key] = config.get(key, result.get(key))
    new_entries = [{**entry, "fieldsV1": to_fields_v1(paths)} for entry, paths in others if paths]
    new_entries.append(
        {
            "manager": manager,
            "operation": "Apply",
            "apiVersion": api_version,
            "time": now,
            "fieldsType": "FieldsV1",
            "fieldsV1": to_fields_v1(set(mine)),
        }
    )
    meta = result.setdefault("metadata", {})
    meta["managedFields"] = new_entries
    for key in ("name", "namespace"):
        if key in (config.get("metadata") or {}) and key not in meta:
            meta[key] = config["metadata"][key]
    return result


def conflict_error(conflicts: list[tuple[str, Path]], api_version: str) -> R.ApiError:
    unique = sorted(set(conflicts))
    lines = [f'conflict with "{m}" using {api_version}: .{".".join(p)}' for m, p in unique]
    n = len(unique)
    message = f"Apply failed with {n} conflict{'s' if n > 1 else ''}: " + "\n".join(lines)
    causes = [
        {"type": "FieldManagerConflict", "message": f'conflict with "{m}" using {api_version}',
         "field": "." + ".".join(p)}
        for m, p in unique
    ]  # fmt: skip
    return R.ApiError(409, "Conflict", message, {"causes": causes})
