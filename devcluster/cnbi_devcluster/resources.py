"""Resource types the dev cluster serves, Kubernetes ``Status`` errors, and object checks.

Pure data and functions: ``ResourceType`` (group/version/plural/kind/scope/subresources),
the built-in core/v1 + apiextensions types, ``crd_resource_type(crd)`` for a
CustomResourceDefinition, ``ApiError`` (becomes a ``Status`` body with the reason and code
the real API server uses) and ``validate_new(...)`` for the checks done on create/update.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass(frozen=True)
class ResourceType:
    group: str  # "" for core
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    singular: str = ""
    short_names: tuple[str, ...] = ()
    status: bool = False  # has a /status subresource
    custom: bool = False  # served from a CRD (no strategic merge, rv required on PUT)
    verbs: tuple[str, ...] = (
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    )
    categories: tuple[str, ...] = field(default=())
    #: the CRD version's openAPIV3Schema (pruning + validation), None for built-in types
    schema: dict | None = field(default=None, compare=False, hash=False, repr=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def list_kind(self) -> str:
        return self.kind + "List"


def _core(plural: str, kind: str, **kw) -> ResourceType:
    return ResourceType("", "v1", plural, kind, singular=kind.lower(), **kw)


BUILTIN_TYPES: tuple[ResourceType, ...] = (
    _core("namespaces", "Namespace", namespaced=False, short_names=("ns",), status=True),
    _core("pods", "Pod", short_names=("po",), status=True, categories=("all",)),
    _core("services", "Service", short_names=("svc",), status=True, categories=("all",)),
    _core("secrets", "Secret"),
    _core("configmaps", "ConfigMap", short_names=("cm",)),
    _core("serviceaccounts", "ServiceAccount", short_names=("sa",)),
    _core("persistentvolumeclaims", "PersistentVolumeClaim", short_names=("pvc",), status=True),
    _core("events", "Event", short_names=("ev",)),
    _core("endpoints", "Endpoints", short_names=("ep",)),
    ResourceType(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        singular="customresourcedefinition",
        short_names=("crd", "crds"),
        status=True,
    ),
)

CRD_TYPE = BUILTIN_TYPES[-1]
NAMESPACE_TYPE = BUILTIN_TYPES[0]
POD_TYPE = BUILTIN_TYPES[1]
PVC_TYPE = BUILTIN_TYPES[6]
EVENT_TYPE = BUILTIN_TYPES[7]


def crd_resource_types(crd: dict) -> list[ResourceType]:
    """The resource types one CRD serves (one per served version)."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    out = []
    for ver in spec.get("versions") or []:
        if not ver.get("served", True):
            continue
        out.append(
            ResourceType(
                group=spec["group"],
                version=ver["name"],
                plural=names["plural"],
                kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                singular=names.get("singular") or names["kind"].lower(),
                short_names=tuple(names.get("shortNames") or ()),
                status="status" in (ver.get("subresources") or {}),
                custom=True,
                categories=tuple(names.get("categories") or ()),
                schema=(ver.get("schema") or {}).get("openAPIV3Schema"),
            )
        )
    return out


class ApiError(Exception):
    """An API failure; ``status()`` is the Kubernetes ``Status`` body."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict:
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def _resource_name(rt: ResourceType) -> str:
    return f"{rt.plural}.{rt.group}" if rt.group else rt.plural


def not_found(rt: ResourceType, name: str) -> ApiError:
    details = {"name": name, "kind": rt.plural}
    if rt.group:
        details["group"] = rt.group
    return ApiError(404, "NotFound", f'{_resource_name(rt)} "{name}" not found', details)


def already_exists(rt: ResourceType, name: str) -> ApiError:
    details = {"name": name, "kind": rt.plural}
    if rt.group:
        details["group"] = rt.group
    return ApiError(409, "AlreadyExists", f'{_resource_name(rt)} "{name}" already exists', details)


def conflict(rt: ResourceType, name: str) -> ApiError:
    details = {"name": name, "kind": rt.plural}
    if rt.group:
        details["group"] = rt.group
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_resource_name(rt)} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        details,
    )


def invalid(rt: ResourceType, name: str, causes: list[tuple[str, str]]) -> ApiError:
    """422 Invalid with ``causes`` as (field, message) pairs."""
    text = "; ".join(f"{f}: {m}" for f, m in causes)
    details = {
        "name": name,
        "kind": rt.kind,
        "causes": [{"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes],
    }
    if rt.group:
        details["group"] = rt.group
    return ApiError(422, "Invalid", f'{rt.kind} "{name}" is invalid: {text}', details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_QUALIFIED = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
#: kinds whose names must be DNS-1123 labels (63 chars, no dots)
_LABEL_NAMED = frozenset({"Namespace", "Service"})


def name_problems(rt: ResourceType, name: str) -> list[tuple[str, str]]:
    if rt.kind in _LABEL_NAMED:
        if len(name) > 63 or not _LABEL.match(name):
            return [("metadata.name", f'Invalid value: "{name}": a lowercase RFC 1123 label')]
    elif len(name) > 253 or not _SUBDOMAIN.match(name):
        return [("metadata.name", f'Invalid value: "{name}": a lowercase RFC 1123 subdomain')]
    return []


def _qualified_key_ok(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _SUBDOMAIN.match(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(_QUALIFIED.match(name))


def validate_object(rt: ResourceType, obj: dict) -> None:
    """The structural checks the API server does on every write; raises 422 ``ApiError``."""
    meta = obj.get("metadata") or {}
    raw_name = meta.get("name") or meta.get("generateName") or ""
    name = raw_name if isinstance(raw_name, str) else ""
    causes: list[tuple[str, str]] = []
    for key in ("name", "generateName", "namespace"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            causes.append((f"metadata.{key}", "Invalid value: must be a string"))
    if not causes and meta.get("name"):
        causes += name_problems(rt, meta["name"])
    causes += _map_problems(meta, "labels", label_values=True)
    causes += _map_problems(meta, "annotations", label_values=False)
    refs = meta.get("ownerReferences")
    if refs is not None and not isinstance(refs, list):
        causes.append(("metadata.ownerReferences", "Invalid value: must be a list"))
    for ref in refs if isinstance(refs, list) else []:
        if not isinstance(ref, dict):
            causes.append(("metadata.ownerReferences", "Invalid value: must be an object"))
            continue
        missing = [k for k in ("apiVersion", "kind", "name", "uid") if not ref.get(k)]
        if missing:
            causes.append(("metadata.ownerReferences", f"Required value: {', '.join(missing)}"))
    finalizers = meta.get("finalizers")
    if finalizers is not None and (
        not isinstance(finalizers, list) or not all(isinstance(f, str) for f in finalizers)
    ):
        causes.append(("metadata.finalizers", "Invalid value: must be a list of strings"))
    for section in ("spec", "status"):
        if obj.get(section) is not None and not isinstance(obj[section], dict | list):
            causes.append((section, "Invalid value: must be an object"))
    if rt.kind == "Pod":
        causes += _pod_problems(obj.get("spec"))
    if rt.kind in ("Secret", "ConfigMap"):
        for section in ("data", "stringData", "binaryData"):
            data = obj.get(section)
            if data is not None and not isinstance(data, dict):
                causes.append((section, "Invalid value: must be a map"))
            elif data and not all(isinstance(v, str) for v in data.values()):
                causes.append((section, "Invalid value: values must be strings"))
    if causes:
        raise invalid(rt, name, causes)


def _map_problems(meta: dict, key: str, *, label_values: bool) -> list[tuple[str, str]]:
    value = meta.get(key)
    if value is None:
        return []
    if not isinstance(value, dict):
        return [(f"metadata.{key}", "Invalid value: must be a map of strings")]
    out = []
    for k, v in value.items():
        if not _qualified_key_ok(str(k)):
            out.append((f"metadata.{key}", f'Invalid value: "{k}": not a qualified name'))
        if not isinstance(v, str):
            out.append((f"metadata.{key}", f"Invalid value: {k}: must be a string"))
        elif label_values and (len(v) > 63 or not _LABEL_VALUE.match(v)):
            out.append((f"metadata.{key}", f'Invalid value: "{v}": not a label value'))
    return out


def _pod_problems(spec: object) -> list[tuple[str, str]]:
    """What the kubelet relies on: well-typed containers, ports, env, command, volumes."""
    if not isinstance(spec, dict):
        return [("spec", "Required value")]
    out: list[tuple[str, str]] = []
    for section in ("containers", "initContainers"):
        containers = spec.get(section)
        if section == "containers" and not containers:
            out.append(("spec.containers", "Required value"))
        if containers is not None and not isinstance(containers, list):
            out.append((f"spec.{section}", "Invalid value: must be a list"))
            continue
        for i, c in enumerate(containers or []):
            where = f"spec.{section}[{i}]"
            if not isinstance(c, dict):
                out.append((where, "Invalid value: must be an object"))
                continue
            for key in ("name", "image"):
                if not isinstance(c.get(key), str) or not c.get(key):
                    out.append((f"{where}.{key}", "Required value"))
            for key in ("command", "args"):
                v = c.get(key)
                if v is not None and (
                    not isinstance(v, list) or not all(isinstance(a, str) for a in v)
                ):
                    out.append((f"{where}.{key}", "Invalid value: must be a list of strings"))
            for key in ("ports", "env", "envFrom", "volumeMounts"):
                v = c.get(key)
                if v is not None and (
                    not isinstance(v, list) or not all(isinstance(x, dict) for x in v)
                ):
                    out.append((f"{where}.{key}", "Invalid value: must be a list of objects"))
            for j, port in enumerate(
                c.get("ports") or [] if isinstance(c.get("ports"), list) else []
            ):
                number = port.get("containerPort") if isinstance(port, dict) else None
                if (
                    not isinstance(number, int)
                    or isinstance(number, bool)
                    or not 0 < number < 65536
                ):
                    out.append((f"{where}.ports[{j}].containerPort", "Invalid value: 1-65535"))
    volumes = spec.get("volumes")
    if volumes is not None and (
        not isinstance(volumes, list) or not all(isinstance(v, dict) for v in volumes)
    ):
        out.append(("spec.volumes", "Invalid value: must be a list of objects"))
    return out
