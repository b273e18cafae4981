"""OpenAPI documents for the served API: ``/openapi/v3`` (index + one per group-version) and
``/openapi/v2`` (JSON), so ``kubectl explain`` and ``kubectl apply``'s validation work (pure).

Where the schemas come from, one source each:

- custom resources: their CRD version's ``openAPIV3Schema`` (``metadata`` becoming the
  ``ObjectMeta`` reference, as the real API publishes it);
- core/v1 kinds (and ObjectMeta): the models of ``kubernetes_asyncio``, which are generated
  from the official OpenAPI: property names, types and descriptions.

Each top-level schema carries ``x-kubernetes-group-version-kind``; each resource gets its
paths (list/create, get/replace/patch/delete) whose write operations declare the
``fieldValidation`` query parameter, which is how kubectl learns that the server validates
fields itself (``kubectl apply`` then sends ``fieldValidation=Strict``).
"""

from __future__ import annotations

import hashlib
import json
import re
from functools import cache
from typing import Any

from . import resources as R
from .discovery import VERSION_INFO

META = "io.k8s.apimachinery.pkg.apis.meta.v1."
CORE = "io.k8s.api.core.v1."
#: model class names that live in meta/v1, not core/v1
META_MODELS = {
    "V1ObjectMeta": "ObjectMeta",
    "V1ListMeta": "ListMeta",
    "V1OwnerReference": "OwnerReference",
    "V1ManagedFieldsEntry": "ManagedFieldsEntry",
    "V1Status": "Status",
    "V1DeleteOptions": "DeleteOptions",
}
#: core kind -> kubernetes_asyncio model class name
CORE_MODELS = {"Event": "CoreV1Event"}
_DOC = re.compile(r"^\s*Gets the .*?\n\n(.*?)(?:  # noqa: E501)?\s*\n\n\s*:return:", re.S)


def schema_name(model: str) -> str:
    if model in META_MODELS:
        return META + META_MODELS[model]
    for prefix in ("CoreV1", "V1"):
        if model.startswith(prefix):
            return CORE + model[len(prefix) :]
    return CORE + model


def _model(name: str) -> type | None:
    from kubernetes_asyncio.client import models

    return getattr(models, name, None)


def _type_schema(t: str, refs: set[str]) -> dict:
    if t.startswith("list[") and t.endswith("]"):
        return {"type": "array", "items": _type_schema(t[5:-1], refs)}
    if t.startswith("dict(") and t.endswith(")"):
        value = t[5:-1].split(",", 1)[1].strip()
        return {"type": "object", "additionalProperties": _type_schema(value, refs)}
    simple = {
        "str": {"type": "string"},
        "int": {"type": "integer", "format": "int64"},
        "float": {"type": "number", "format": "double"},
        "bool": {"type": "boolean"},
        "datetime": {"type": "string", "format": "date-time"},
        "date": {"type": "string", "format": "date"},
        "object": {"x-kubernetes-preserve-unknown-fields": True},
    }
    if t in simple:
        return dict(simple[t])
    refs.add(t)
    return {"allOf": [{"$ref": f"#/components/schemas/{schema_name(t)}"}]}


def _description(cls: type, attr: str) -> str:
    prop = getattr(cls, attr, None)
    m = _DOC.match(getattr(prop, "__doc__", None) or "")
    return re.sub(r"\s+", " ", m.group(1)).strip() if m else ""


@cache
def model_schema(model: str) -> tuple[dict, frozenset[str]]:
    """The OpenAPI schema of a ``kubernetes_asyncio`` model, and the models it refers to."""
    cls = _model(model)
    if cls is None:
        return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}, frozenset()
    refs: set[str] = set()
    props = {}
    for attr, t in cls.openapi_types.items():
        prop = _type_schema(t, refs)
        if desc := _description(cls, attr):
            prop["description"] = desc
        props[cls.attribute_map[attr]] = prop
    return {"type": "object", "properties": props}, frozenset(refs)


def model_schemas(roots: list[str]) -> dict[str, dict]:
    """Schemas of ``roots`` and everything they refer to, by their OpenAPI names."""
    out: dict[str, dict] = {}
    todo = list(roots)
    while todo:
        model = todo.pop()
        name = schema_name(model)
        if name in out:
            continue
        schema, refs = model_schema(model)
        out[name] = json.loads(json.dumps(schema))  # callers may annotate their copy
        todo.extend(refs)
    return out


def core_model(kind: str) -> str:
    return CORE_MODELS.get(kind, f"V1{kind}")


def field_schema(rt: R.ResourceType):
    """``(schema, resolve)`` to check a body of ``rt`` for unknown fields (``schema.py``)."""
    if rt.custom:
        return rt.schema, None
    return _builtin_field_schema(rt.kind)


@cache
def _builtin_field_schema(kind: str):
    model = core_model(kind)
    if _model(model) is None:
        return None, None
    schemas = model_schemas([model])
    return schemas[schema_name(model)], lambda name: schemas.get(name) or {PRESERVE: True}


PRESERVE = "x-kubernetes-preserve-unknown-fields"


def gvk(rt: R.ResourceType) -> dict:
    return {"group": rt.group, "version": rt.version, "kind": rt.kind}


def crd_schema_name(rt: R.ResourceType) -> str:
    return ".".join(reversed(rt.group.split("."))) + f".{rt.version}.{rt.kind}"


def crd_schema(rt: R.ResourceType) -> dict:
    schema = json.loads(json.dumps(rt.schema or {"type": "object"}))
    props = schema.setdefault("properties", {})
    meta = {"allOf": [{"$ref": f"#/components/schemas/{META}ObjectMeta"}]}
    meta["description"] = "Standard object's metadata."
    props["metadata"] = meta
    props.setdefault("apiVersion", {"type": "string"})
    props.setdefault("kind", {"type": "string"})
    return schema


# ---- paths ------------------------------------------------------------------------------------
FIELD_VALIDATION = {
    "name": "fieldValidation",
    "in": "query",
    "description": "How the server treats unknown or duplicate fields: Ignore, Warn or Strict.",
    "schema": {"type": "string", "uniqueItems": True},
}


def _op(rt: R.ResourceType, action: str, ref: str, *, writes: bool) -> dict:
    op: dict[str, Any] = {
        "operationId": f"{action}{rt.kind}",
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(rt),
        "responses": {
            "200": {
                "description": "OK",
                "content": {"application/json": {"schema": {"$ref": ref}}},
            }
        },
    }
    if writes:
        op["parameters"] = [FIELD_VALIDATION, {"name": "fieldManager", "in": "query",
                                               "schema": {"type": "string"}}]  # fmt: skip
        op["requestBody"] = {"content": {"*/*": {"schema": {"$ref": ref}}}, "required": True}
    return op


def resource_paths(rt: R.ResourceType, ref: str) -> dict[str, dict]:
    base = f"/api/{rt.version}" if not rt.group else f"/apis/{rt.group}/{rt.version}"
    coll = (
        f"{base}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{base}/{rt.plural}"
    )
    return {
        coll: {
            "get": _op(rt, "list", ref, writes=False),
            "post": _op(rt, "post", ref, writes=True),
        },
        f"{coll}/{{name}}": {
            "get": _op(rt, "get", ref, writes=False),
            "put": _op(rt, "put", ref, writes=True),
            "patch": _op(rt, "patch", ref, writes=True),
            "delete": _op(rt, "delete", ref, writes=False),
        },
    }


def group_version_doc(types: list[R.ResourceType]) -> dict:
    """The OpenAPI v3 document of one group-version (``types`` all share it)."""
    paths: dict[str, dict] = {}
    schemas: dict[str, dict] = model_schemas(["V1ObjectMeta"])
    for rt in types:
        if rt.custom:
            name = crd_schema_name(rt)
            schemas[name] = crd_schema(rt)
        else:
            model = core_model(rt.kind)
            schemas.update(model_schemas([model]))
            name = schema_name(model)
        schemas[name]["x-kubernetes-group-version-kind"] = [gvk(rt)]
        paths.update(resource_paths(rt, f"#/components/schemas/{name}"))
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (cnbi dev cluster)", "version": VERSION_INFO["gitVersion"]},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def gv_key(rt: R.ResourceType) -> str:
    return f"api/{rt.version}" if not rt.group else f"apis/{rt.group}/{rt.version}"


def by_group_version(types: list[R.ResourceType]) -> dict[str, list[R.ResourceType]]:
    out: dict[str, list[R.ResourceType]] = {}
    for rt in types:
        out.setdefault(gv_key(rt), []).append(rt)
    return out


def doc_hash(doc: dict) -> str:
    return hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32].upper()


def v3_index(docs: dict[str, dict]) -> dict:
    """``/openapi/v3``: each group-version's relative URL (with a content hash, as served)."""
    return {
        "paths": {
            key: {"serverRelativeURL": f"/openapi/v3/{key}?hash={doc_hash(doc)}"}
            for key, doc in sorted(docs.items())
        }
    }


def _v2_ref(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: (
                v.replace("#/components/schemas/", "#/definitions/")
                if k == "$ref" and isinstance(v, str)
                else _v2_ref(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_v2_ref(v) for v in value]
    return value


def v2_doc(docs: dict[str, dict]) -> dict:
    """``/openapi/v2`` (Swagger 2.0, JSON): every group-version's schemas as definitions."""
    definitions: dict[str, dict] = {}
    paths: dict[str, dict] = {}
    for doc in docs.values():
        definitions.update(_v2_ref(doc["components"]["schemas"]))
        for path, ops in doc["paths"].items():
            paths[path] = {
                method: {
                    "operationId": op["operationId"],
                    "x-kubernetes-action": op["x-kubernetes-action"],
                    "x-kubernetes-group-version-kind": op["x-kubernetes-group-version-kind"],
                    "responses": {"200": {"description": "OK"}},
                }
                for method, op in ops.items()
            }
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes (cnbi dev cluster)", "version": VERSION_INFO["gitVersion"]},
        "paths": paths,
        "definitions": definitions,
    }
