"""The dev cluster's object store: what etcd + the generic registry do in kube-apiserver.

Owns: objects by (resource type, namespace, name), one cluster-wide monotonic
``resourceVersion`` counter, server-set metadata (uid, creationTimestamp, generation,
generateName), optimistic concurrency (409 on a stale ``resourceVersion``), the
``/status`` split, graceful deletion (``deletionTimestamp``, finalizers), ownerReference
garbage collection, and watch fan-out with a bounded per-type event history (a watch
from a ``resourceVersion`` older than that history gets 410 Expired, like after an etcd
compaction).

Stored objects are never mutated after they are stored (every write stores a new dict),
so reads hand out references and the JSON of each object is cached. Everything here is
synchronous and runs on the event loop thread; watchers get events through
``asyncio.Queue``. In-process listeners (kubelet, namespace controller) get
``(event_type, rtype, obj, old)`` callbacks and must not block.
"""

from __future__ import annotations

import base64
import copy
import json
import random
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from . import resources as R
from .patch import PatchError, UnsupportedPatch, apply_patch
from .selectors import Selector
from .strategy import POD_SPEC_FORBIDDEN, apply_schema, defaults_on_create, mutable_pod_spec
from .watchers import Change, Watcher, dumps

Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped
Listener = Callable[[str, R.ResourceType, dict, dict | None], None]
EVERYTHING = Selector()
PROTECTED_NAMESPACES = frozenset({"default", "kube-system", "kube-public"})
_GEN_CHARS = "bcdfghjklmnpqrstvwxz2456789"


class Store:
    """In-memory API objects; see the module docstring."""

    def __init__(self, history: int = 1000) -> None:
        self.rv = 1
        self.history_size = history
        self.types: dict[Key, R.ResourceType] = {}  # (group, plural) -> type
        self.versions: dict[tuple[str, str, str], R.ResourceType] = {}
        self._objects: dict[Key, dict[Key, dict]] = {}
        self._raw: dict[Key, dict[Key, bytes]] = {}
        self._history: dict[Key, deque[Change]] = {}
        self._floor: dict[Key, int] = {}  # highest rv dropped from the history
        self._watchers: dict[Key, set[Watcher]] = {}
        self._owners: dict[str, set[tuple[Key, Key]]] = {}  # owner uid -> dependents
        self.listeners: list[Listener] = []
        self.compacted_rv = 0
        for rt in R.BUILTIN_TYPES:
            self.register(rt)

    # ---- types -------------------------------------------------------------------------
    def register(self, rt: R.ResourceType) -> None:
        self.versions[(rt.group, rt.version, rt.plural)] = rt
        if rt.key not in self.types:
            self.types[rt.key] = rt
            self._objects[rt.key] = {}
            self._raw[rt.key] = {}
            self._history[rt.key] = deque()
            self._floor[rt.key] = 0
            self._watchers[rt.key] = set()

    def unregister(self, group: str, plural: str) -> None:
        for vkey in [k for k in self.versions if k[0] == group and k[2] == plural]:
            del self.versions[vkey]
        rt = self.types.get((group, plural))
        if rt:
            for key in list(self._objects.get(rt.key, {})):
                self._remove(rt, key)
            for w in self._watchers.pop(rt.key, set()):
                w.close()
            del self._objects[rt.key], self._raw[rt.key], self._history[rt.key]
            del self.types[rt.key]

    def lookup(self, group: str, version: str, plural: str) -> R.ResourceType | None:
        return self.versions.get((group, version, plural))

    def as_version(self, rt: R.ResourceType, obj: dict) -> dict:
        """``obj`` as served at ``rt``'s version (CRD versions share storage, no conversion)."""
        if obj.get("apiVersion") == rt.api_version:
            return obj
        return {**obj, "apiVersion": rt.api_version}

    # ---- reads -------------------------------------------------------------------------
    def get(self, rt: R.ResourceType, namespace: str, name: str) -> dict:
        obj = self._objects[rt.key].get((namespace if rt.namespaced else "", name))
        if obj is None:
            raise R.not_found(rt, name)
        return obj

    def raw(self, rt: R.ResourceType, obj: dict) -> bytes:
        meta = obj["metadata"]
        return self._raw[rt.key][(meta.get("namespace", ""), meta["name"])]

    def list(
        self,
        rt: R.ResourceType,
        namespace: str | None,
        selector: Selector = EVERYTHING,
        *,
        limit: int = 0,
        continue_token: str | None = None,
    ) -> tuple[list[dict], str, str | None, int | None]:
        """Matching objects sorted by (namespace, name): (items, rv, continue, remaining)."""
        start: Key | None = None
        list_rv = self.rv
        if continue_token:
            try:
                token = json.loads(base64.urlsafe_b64decode(continue_token.encode()))
                start, list_rv = tuple(token["start"]), int(token["rv"])
            except (ValueError, KeyError, TypeError) as e:
                raise R.bad_request(f"continue key is not valid: {e}") from None
            if list_rv < self.compacted_rv:
                raise R.gone(
                    "The provided continue parameter is too old to display a consistent list "
                    "result. You can start a new list without the continue parameter."
                )
        objects = self._objects[rt.key]
        keys = sorted(objects) if (limit or start) else list(objects)
        if namespace and rt.namespaced:
            keys = [k for k in keys if k[0] == namespace]
        if start is not None:
            keys = [k for k in keys if k > start]
        items: list[dict] = []
        empty = selector.empty
        for i, k in enumerate(keys):
            obj = objects[k]
            if empty or selector.matches(obj):
                items.append(obj)
                if limit and len(items) == limit:
                    rest = keys[i + 1 :]
                    remaining = sum(1 for r in rest if empty or selector.matches(objects[r]))
                    if not remaining:
                        return items, str(list_rv), None, None
                    tok = dumps({"rv": list_rv, "start": list(k)})
                    return items, str(list_rv), base64.urlsafe_b64encode(tok).decode(), remaining
        if not (limit or start):
            items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return items, str(list_rv), None, None

    # ---- writes ------------------------------------------------------------------------
    def create(
        self,
        rt: R.ResourceType,
        namespace: str,
        body: dict,
        *,
        dry_run: bool = False,
        managed_fields: list[dict] | None = None,
    ) -> dict:
        if not isinstance(body, dict):
            raise R.bad_request("the request body must be a JSON object")
        obj = copy.deepcopy(body)
        if obj.get("kind") not in (None, rt.kind):
            raise R.bad_request(f"the kind {obj['kind']!r} does not match {rt.kind!r}")
        obj["kind"], obj["apiVersion"] = rt.kind, rt.api_version
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            meta = obj["metadata"] = {}
        ns = ""
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise R.bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            ns = meta["namespace"] = namespace
            self._check_namespace(ns)
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise R.invalid(
                    rt, "", [("metadata.name", "Required value: name or generateName is required")]
                )
            for _ in range(20):
                name = meta["generateName"] + "".join(random.choices(_GEN_CHARS, k=5))
                if (ns, name) not in self._objects[rt.key]:
                    break
            meta["name"] = name
        if (ns, meta["name"]) in self._objects[rt.key]:
            raise R.already_exists(rt, meta["name"])
        R.validate_object(rt, obj)
        for server_set in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
            meta.pop(server_set, None)
        if managed_fields:  # set by server-side apply (apply.py), never by the client
            meta["managedFields"] = managed_fields
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = R.now_rfc3339()
        if rt.custom or "spec" in obj:
            meta["generation"] = 1
        defaults_on_create(rt, obj)
        obj = apply_schema(rt, obj)
        if dry_run:
            return obj
        self._store(rt, obj, None)
        return obj

    def replace(
        self,
        rt: R.ResourceType,
        namespace: str,
        name: str,
        body: dict,
        *,
        status: bool = False,
        dry_run: bool = False,
    ) -> dict:
        if not isinstance(body, dict):
            raise R.bad_request("the request body must be a JSON object")
        current = self.get(rt, namespace, name)
        meta = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
        if meta.get("name") not in (None, name):
            raise R.bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the "
                f"URL ({name})"
            )
        rv = meta.get("resourceVersion")
        if rv in (None, "") and rt.custom:
            raise R.invalid(
                rt,
                name,
                [
                    (
                        "metadata.resourceVersion",
                        "Invalid value: 0x0: must be specified for an update",
                    )
                ],
            )
        if rv not in (None, "") and str(rv) != current["metadata"]["resourceVersion"]:
            raise R.conflict(rt, name)
        return self._update(rt, current, body, status=status, dry_run=dry_run)

    def patch(
        self,
        rt: R.ResourceType,
        namespace: str,
        name: str,
        body: object,
        content_type: str,
        *,
        status: bool = False,
        dry_run: bool = False,
    ) -> dict:
        current = self.get(rt, namespace, name)
        try:
            patched = apply_patch(current, body, content_type, strategic=not rt.custom)
        except UnsupportedPatch as e:
            raise R.ApiError(415, "UnsupportedMediaType", str(e)) from None
        except PatchError as e:
            raise R.ApiError(422, "Invalid", f"the server rejected our request: {e}") from None
        if not isinstance(patched.get("metadata"), dict):
            raise R.ApiError(422, "Invalid", "the patched object has no metadata")
        rv = (patched.get("metadata") or {}).get("resourceVersion")
        if rv not in (None, "") and str(rv) != current["metadata"]["resourceVersion"]:
            raise R.conflict(rt, name)
        return self._update(rt, current, patched, status=status, dry_run=dry_run)

    def _update(
        self, rt: R.ResourceType, current: dict, body: dict, *, status: bool, dry_run: bool = False
    ) -> dict:
        cmeta = current["metadata"]
        if status:
            new = {**current, "status": copy.deepcopy(body.get("status"))}
            if new["status"] is None:
                new.pop("status")
            new["metadata"] = dict(cmeta)
        else:
            new = copy.deepcopy(body)
            new["kind"], new["apiVersion"] = rt.kind, rt.api_version
            meta = new.get("metadata") if isinstance(new.get("metadata"), dict) else {}
            new["metadata"] = meta
            for keep in ("name", "namespace", "uid", "creationTimestamp", "generation"):
                if keep in cmeta:
                    meta[keep] = cmeta[keep]
            for keep in ("deletionTimestamp", "deletionGracePeriodSeconds"):
                meta.pop(keep, None)
                if keep in cmeta:
                    meta[keep] = cmeta[keep]
            if rt.status:
                new.pop("status", None)
                if "status" in current:
                    new["status"] = current["status"]
            if rt.kind == "Secret" and new.get("stringData"):
                data = new["data"] = dict(new.get("data") or {})
                for k, v in new.pop("stringData").items():
                    data[k] = base64.b64encode(str(v).encode()).decode()
            R.validate_object(rt, new)
            if rt.kind == "Pod" and mutable_pod_spec(new) != mutable_pod_spec(current):
                raise R.invalid(rt, cmeta["name"], [("spec", POD_SPEC_FORBIDDEN)])
            if _spec_of(new) != _spec_of(current) and "generation" in cmeta:
                meta["generation"] = cmeta["generation"] + 1
        new = apply_schema(rt, new)
        new["metadata"]["resourceVersion"] = cmeta["resourceVersion"]
        if new == current or dry_run:
            return current if new == current else new  # no-op or dry run: nothing stored
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            if rt.kind != "Pod" or not (current.get("spec") or {}).get("nodeName"):
                return self._remove(rt, _key(rt, new), final=new)
        self._store(rt, new, current)
        return new

    def update_internal(self, rt: R.ResourceType, namespace: str, name: str, fn) -> dict | None:
        """Controller-side write: ``fn(copy)`` edits a deep copy; no rv check. None if gone."""
        try:
            current = self.get(rt, namespace, name)
        except R.ApiError:
            return None
        new = copy.deepcopy(current)
        fn(new)
        if new == current:
            return current
        self._store(rt, new, current)
        return new

    def delete(
        self,
        rt: R.ResourceType,
        namespace: str,
        name: str,
        *,
        grace: int | None = None,
        propagation: str | None = None,
        preconditions: dict | None = None,
        dry_run: bool = False,
    ) -> dict:
        """Delete (or start deleting) an object; returns the object as the API reports it."""
        current = self.get(rt, namespace, name)
        meta = current["metadata"]
        if rt.kind == "Namespace" and name in PROTECTED_NAMESPACES:
            raise R.ApiError(
                403,
                "Forbidden",
                f'namespaces "{name}" is forbidden: this namespace may not be deleted',
            )
        pre = preconditions or {}
        if pre.get("uid") and pre["uid"] != meta["uid"]:
            raise R.ApiError(
                409,
                "Conflict",
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: "
                f"{meta['uid']}",
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
            raise R.conflict(rt, name)
        if dry_run:
            return current
        if propagation == "Orphan":
            self._orphan(meta["uid"])
        graceful = rt.kind == "Pod" and (current.get("spec") or {}).get("nodeName")
        if graceful:
            if grace is None:
                grace = int((current.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
            if grace <= 0:
                graceful = False
        if rt.kind == "Namespace" or graceful or meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                shorter = graceful and grace < meta.get("deletionGracePeriodSeconds", grace + 1)
                if not shorter:
                    return current
            seconds = grace if graceful else 0
            when = datetime.now(UTC) + timedelta(seconds=seconds)

            def mark(obj: dict) -> None:
                obj["metadata"]["deletionTimestamp"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
                obj["metadata"]["deletionGracePeriodSeconds"] = seconds
                if rt.kind == "Namespace":
                    obj.setdefault("status", {})["phase"] = "Terminating"

            return self.update_internal(rt, namespace, name, mark) or current
        return self._remove(rt, _key(rt, current))

    def finalize(self, rt: R.ResourceType, namespace: str, name: str) -> dict | None:
        """Remove an object now (the kubelet's last word on a terminated pod)."""
        key = (namespace if rt.namespaced else "", name)
        if key not in self._objects[rt.key]:
            return None
        return self._remove(rt, key)

    # ---- watch -------------------------------------------------------------------------
    def watch(
        self, rt: R.ResourceType, namespace: str | None, selector: Selector, rv: str | None
    ) -> Watcher:
        """Open a watch; replays history after ``rv`` (or the current state for rv "0"/none)."""
        w = Watcher(rt, namespace if rt.namespaced else None, selector)
        if rv in (None, "", "0"):
            for obj in self.list(rt, namespace, selector)[0]:
                w.queue.put_nowait(("ADDED", obj))
        else:
            try:
                since = int(rv)
            except ValueError:
                raise R.bad_request(f"invalid resource version: {rv!r}") from None
            floor = max(self._floor[rt.key], self.compacted_rv)
            if since < floor:
                raise R.gone(f"too old resource version: {since} ({floor + 1})")
            for change in self._history[rt.key]:
                if change.rv > since:
                    w.offer(change)
        self._watchers[rt.key].add(w)
        return w

    def unwatch(self, w: Watcher) -> None:
        self._watchers.get(w.rt.key, set()).discard(w)

    def drop_watches(self) -> int:
        n = 0
        for ws in self._watchers.values():
            for w in list(ws):
                w.close()
                n += 1
            ws.clear()
        return n

    def compact(self) -> None:
        """Forget all history: every watch resumed from an older rv now gets 410."""
        self.compacted_rv = self.rv
        for key, hist in self._history.items():
            hist.clear()
            self._floor[key] = self.rv

    # ---- internals ---------------------------------------------------------------------
    def _check_namespace(self, ns: str) -> None:
        nsobj = self._objects[("", "namespaces")].get(("", ns))
        if nsobj is None:
            raise R.not_found(R.NAMESPACE_TYPE, ns)
        if nsobj["metadata"].get("deletionTimestamp"):
            raise R.ApiError(
                403,
                "Forbidden",
                f"unable to create new content in namespace {ns} because it is being terminated",
            )

    def _next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def _store(self, rt: R.ResourceType, obj: dict, old: dict | None) -> None:
        rv = self._next_rv()
        obj["metadata"]["resourceVersion"] = str(rv)
        key = _key(rt, obj)
        self._objects[rt.key][key] = obj
        self._raw[rt.key][key] = dumps(obj)
        self._index_owners(rt, key, old, obj)
        self._emit(rt, Change(rv, "MODIFIED" if old else "ADDED", obj, old))

    def _remove(self, rt: R.ResourceType, key: Key, final: dict | None = None) -> dict:
        old = self._objects[rt.key].pop(key)
        self._raw[rt.key].pop(key, None)
        rv = self._next_rv()
        gone = copy.deepcopy(final or old)
        gone["metadata"]["resourceVersion"] = str(rv)
        self._index_owners(rt, key, old, None)
        self._emit(rt, Change(rv, "DELETED", gone, old))
        self._collect(old["metadata"]["uid"])
        return gone

    def _emit(self, rt: R.ResourceType, change: Change) -> None:
        hist = self._history[rt.key]
        hist.append(change)
        while len(hist) > self.history_size:
            self._floor[rt.key] = hist.popleft().rv
        for w in self._watchers[rt.key]:
            w.offer(change)
        for listener in list(self.listeners):
            listener(change.type, rt, change.obj, change.old)

    def _index_owners(self, rt: R.ResourceType, key: Key, old: dict | None, new: dict | None):
        for obj, add in ((old, False), (new, True)):
            for ref in ((obj or {}).get("metadata") or {}).get("ownerReferences") or []:
                deps = self._owners.setdefault(ref.get("uid", ""), set())
                (deps.add if add else deps.discard)((rt.key, key))

    def _collect(self, owner_uid: str) -> None:
        """Background cascade: delete every object owned by ``owner_uid``."""
        for type_key, key in list(self._owners.pop(owner_uid, set())):
            rt = self.types.get(type_key)
            obj = self._objects.get(type_key, {}).get(key)
            if rt is None or obj is None:
                continue
            refs = obj["metadata"].get("ownerReferences") or []
            keep = [r for r in refs if r.get("uid") != owner_uid]
            if keep:  # other owners keep it alive
                self.update_internal(rt, key[0], key[1], _set_owner_refs(keep))
                continue
            try:
                self.delete(rt, key[0], key[1], propagation="Background")
            except R.ApiError:
                pass

    def _orphan(self, owner_uid: str) -> None:
        for type_key, key in list(self._owners.pop(owner_uid, set())):
            rt = self.types.get(type_key)
            if rt is None:
                continue

            def strip(o: dict) -> None:
                refs = o["metadata"].get("ownerReferences") or []
                o["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != owner_uid]
                if not o["metadata"]["ownerReferences"]:
                    del o["metadata"]["ownerReferences"]

            self.update_internal(rt, key[0], key[1], strip)


def _set_owner_refs(refs: list[dict]):
    def edit(obj: dict) -> None:
        obj["metadata"]["ownerReferences"] = refs

    return edit


def _key(rt: R.ResourceType, obj: dict) -> Key:
    meta = obj["metadata"]
    return (meta.get("namespace", "") if rt.namespaced else "", meta["name"])


def _spec_of(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "kind", "apiVersion")}
