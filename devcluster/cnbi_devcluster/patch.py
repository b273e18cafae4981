"""The three PATCH dialects of the Kubernetes API, as pure functions on JSON values.

- ``application/merge-patch+json``: RFC 7386 (``null`` deletes, lists replaced whole).
- ``application/json-patch+json``: RFC 6902 (add, remove, replace, move, copy, test).
- ``application/strategic-merge-patch+json``: a merge patch in which the lists the API
  declares "merge by key" are merged element-wise by that key (containers by ``name``,
  ports by ``containerPort`` ...), plus the ``$patch: delete|replace`` directive and
  ``$setElementOrder``/``$retainKeys`` (accepted, ignored). Good enough for what
  KubeSpawner and kubectl send; not the full per-type schema machinery.

Inputs are never mutated; every function returns a new value. Errors raise
``PatchError`` (the server turns them into 422 / 400 Status bodies).
"""

from __future__ import annotations

import copy
from typing import Any

MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"

#: list field name -> merge key, for strategic merge (the core types' patchMergeKey tags)
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "env": "name",
    "ports": "containerPort",
    "imagePullSecrets": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "tolerations": "key",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "containerStatuses": "name",
    "initContainerStatuses": "name",
}
#: lists merged as sets of scalars
SET_LISTS = frozenset({"finalizers"})


class PatchError(ValueError):
    """The patch cannot be applied (bad document, failed test, missing path)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list, token: str, *, for_add: bool) -> int:
    if token == "-" and for_add:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token[0] == "0"):
        raise PatchError(f"invalid array index {token!r}")
    idx = int(token)
    if idx > len(container) or (idx == len(container) and not for_add):
        raise PatchError(f"array index {idx} out of range")
    return idx


def _parent(doc: Any, tokens: list[str]) -> Any:
    cur = doc
    for tok in tokens[:-1]:
        if isinstance(cur, dict):
            if tok not in cur:
                raise PatchError(f"path not found: /{'/'.join(tokens)}")
            cur = cur[tok]
        elif isinstance(cur, list):
            cur = cur[_index(cur, tok, for_add=False)]
        else:
            raise PatchError(f"path not found: /{'/'.join(tokens)}")
    return cur


def _get(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        return doc
    parent = _parent(doc, tokens)
    tok = tokens[-1]
    if isinstance(parent, dict):
        if tok not in parent:
            raise PatchError(f"path not found: /{'/'.join(tokens)}")
        return parent[tok]
    if isinstance(parent, list):
        return parent[_index(parent, tok, for_add=False)]
    raise PatchError(f"path not found: /{'/'.join(tokens)}")


def _remove(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _parent(doc, tokens)
    tok = tokens[-1]
    if isinstance(parent, dict):
        if tok not in parent:
            raise PatchError(f"path not found: /{'/'.join(tokens)}")
        return parent.pop(tok)
    if isinstance(parent, list):
        return parent.pop(_index(parent, tok, for_add=False))
    raise PatchError(f"path not found: /{'/'.join(tokens)}")


def _add(doc: Any, tokens: list[str], value: Any, *, replace: bool = False) -> Any:
    if not tokens:
        return value
    parent = _parent(doc, tokens)
    tok = tokens[-1]
    if isinstance(parent, dict):
        if replace and tok not in parent:
            raise PatchError(f"path not found: /{'/'.join(tokens)}")
        parent[tok] = value
    elif isinstance(parent, list):
        if replace:
            parent[_index(parent, tok, for_add=False)] = value
        else:
            parent.insert(_index(parent, tok, for_add=True), value)
    else:
        raise PatchError(f"path not found: /{'/'.join(tokens)}")
    return doc


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 JSON patch; all-or-nothing."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid JSON patch operation {op!r}")
        kind, tokens = op["op"], _pointer(op["path"])
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"operation {kind!r} needs a value")
        if kind == "add":
            doc = _add(doc, tokens, copy.deepcopy(op["value"]))
        elif kind == "remove":
            _remove(doc, tokens)
        elif kind == "replace":
            doc = _add(doc, tokens, copy.deepcopy(op["value"]), replace=True)
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from", ""))
            if kind == "move" and tokens[: len(source)] == source and tokens != source:
                raise PatchError("cannot move a value into one of its children")
            value = _remove(doc, source) if kind == "move" else copy.deepcopy(_get(doc, source))
            doc = _add(doc, tokens, value)
        elif kind == "test":
            if _get(doc, tokens) != op["value"]:
                raise PatchError(f"test failed at {op['path']}")
        else:
            raise PatchError(f"unknown JSON patch operation {kind!r}")
    return doc


def strategic_merge_patch(target: Any, patch: Any, field: str = "") -> Any:
    """Strategic merge patch (see module docstring for what is supported)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            drop = set(value or [])
            result[name] = [v for v in result.get(name) or [] if v not in drop]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and key in MERGE_KEYS:
            result[key] = _merge_list(result.get(key), value, MERGE_KEYS[key])
        elif isinstance(value, list) and key in SET_LISTS:
            current = list(result.get(key) or [])
            result[key] = current + [v for v in value if v not in current]
        else:
            result[key] = strategic_merge_patch(result.get(key), value, key)
    return result


def _merge_list(current: Any, patch: list, key: str) -> list:
    items = [dict(i) if isinstance(i, dict) else i for i in (current or [])]
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [copy.deepcopy(p) for p in patch if not (isinstance(p, dict) and "$patch" in p)]
    for p in patch:
        if not isinstance(p, dict) or key not in p:
            raise PatchError(f"list element needs merge key {key!r}: {p!r}")
        match = next(
            (i for i, cur in enumerate(items) if isinstance(cur, dict) and cur.get(key) == p[key]),
            None,
        )
        if p.get("$patch") == "delete":
            if match is not None:
                items.pop(match)
        elif match is None:
            items.append(strategic_merge_patch({}, p))
        else:
            items[match] = strategic_merge_patch(items[match], p)
    return items


def apply_patch(target: dict, body: Any, content_type: str, *, strategic: bool = True) -> dict:
    """Apply ``body`` of ``content_type`` to ``target``; ``strategic`` False for CRs."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype == MERGE:
        result = merge_patch(target, body)
    elif ctype == JSON_PATCH:
        result = json_patch(target, body)
    elif ctype == STRATEGIC and strategic:
        result = strategic_merge_patch(target, body)
    else:
        raise UnsupportedPatch(ctype, strategic)
    if not isinstance(result, dict):
        raise PatchError("the patched object is not a JSON object")
    return result


class UnsupportedPatch(PatchError):
    """415: the Content-Type is not a patch dialect this resource accepts."""

    def __init__(self, ctype: str, strategic: bool) -> None:
        accepted = [JSON_PATCH, MERGE] + ([STRATEGIC] if strategic else [])
        super().__init__(
            f"the body of the request was in an unknown format - accepted media types "
            f"include: {', '.join(accepted)}"
        )
        self.ctype = ctype
