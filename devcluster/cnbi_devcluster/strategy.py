"""Per-kind rules the API server applies on writes (its "strategies"), as pure functions.

``defaults_on_create``: server-side defaults and status resets (pods start Pending with a
QoS class, namespaces Active, PVCs Pending, services get a cluster IP, Secret
``stringData`` folds into ``data``, custom resources with a /status subresource drop
``status``). ``mutable_pod_spec``: what an update may not change in a pod spec.
``apply_schema``: a custom resource pruned and validated against its CRD schema.
"""

from __future__ import annotations

import base64
import copy
import random

from . import resources as R
from .schema import prune, validate

POD_SPEC_FORBIDDEN = (
    "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, "
    "`spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` "
    "(only additions to existing tolerations) or `spec.terminationGracePeriodSeconds`"
)


def mutable_pod_spec(pod: dict) -> dict:
    """The pod spec without the fields an update may change (to compare the rest)."""
    spec = copy.deepcopy(pod.get("spec") or {})
    for key in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds"):
        spec.pop(key, None)
    for section in ("containers", "initContainers"):
        for c in spec.get(section) or []:
            if isinstance(c, dict):
                c.pop("image", None)
    return spec


def defaults_on_create(rt: R.ResourceType, obj: dict) -> None:
    """Server-side defaults and status resets of the real API's PrepareForCreate."""
    if rt.status and rt.custom:
        obj.pop("status", None)
    kind = rt.kind
    if kind == "Pod":
        spec = obj.setdefault("spec", {})
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("dnsPolicy", "ClusterFirst")
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("serviceAccountName", "default")
        for c in spec.get("containers") or []:
            tagged = ":" in c["image"].rsplit("/", 1)[-1] or "@" in c["image"]
            latest = c["image"].endswith(":latest") or not tagged
            c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
        obj["status"] = {"phase": "Pending", "qosClass": qos_class(spec)}
    elif kind == "Namespace":
        obj["spec"] = {"finalizers": ["kubernetes"]}
        obj["status"] = {"phase": "Active"}
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"][
            "name"
        ]
    elif kind == "PersistentVolumeClaim":
        obj["status"] = {"phase": "Pending"}
        obj.setdefault("spec", {}).setdefault("volumeMode", "Filesystem")
    elif kind == "Service":
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        if spec.get("clusterIP") in (None, ""):
            spec["clusterIP"] = f"10.96.{random.randint(0, 255)}.{random.randint(1, 254)}"
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        spec.setdefault("sessionAffinity", "None")
        for p in spec.get("ports") or []:
            p.setdefault("protocol", "TCP")
            p.setdefault("targetPort", p.get("port"))
        obj["status"] = {"loadBalancer": {}}
    elif kind == "Secret":
        obj.setdefault("type", "Opaque")
        string_data = obj.pop("stringData", None) or {}
        data = obj.setdefault("data", {})
        for k, v in string_data.items():
            data[k] = base64.b64encode(str(v).encode()).decode()
    elif kind == "ServiceAccount":
        pass


def qos_class(spec: dict) -> str:
    resources = [c.get("resources") or {} for c in spec.get("containers") or []]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all(
        (r.get("limits") or {}).get("cpu")
        and (r.get("limits") or {}).get("memory")
        and (r.get("requests") or r.get("limits")) == r.get("limits")
        for r in resources
    )
    return "Guaranteed" if guaranteed else "Burstable"


def apply_schema(rt: R.ResourceType, obj: dict) -> dict:
    """Prune and validate a custom resource against its CRD schema; raises 422."""
    if not rt.custom or not rt.schema:
        return obj
    pruned = prune(obj, rt.schema, root=True)
    body = {k: v for k, v in pruned.items() if k not in ("metadata", "apiVersion", "kind")}
    schema = {
        **rt.schema,
        "required": [
            r
            for r in rt.schema.get("required") or []
            if r not in ("metadata", "apiVersion", "kind")
        ],
    }
    props = dict(schema.get("properties") or {})
    for key in ("metadata", "apiVersion", "kind"):
        props.pop(key, None)
    schema["properties"] = props
    problems = validate(body, schema)
    if problems:
        raise R.invalid(rt, obj["metadata"].get("name", ""), problems)
    return pruned
