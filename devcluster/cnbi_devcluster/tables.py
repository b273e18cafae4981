"""Server-side printing: ``meta.k8s.io/v1`` ``Table`` for ``kubectl get`` (pure).

A client that sends ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io`` (kubectl
does, for ``get`` and ``get -w``) gets the rows the real API server prints: pods with
Ready, Status, Restarts, Age (IP and Node at priority 1, shown by ``-o wide``); custom
resources with their CRD version's ``additionalPrinterColumns`` (a ``date`` column as a
human age, like ``kubectl``'s); namespaces, config maps, secrets, services, claims and
events with their usual columns; anything else Name and Age. Each row's ``object`` is the
object's ``PartialObjectMetadata`` (``includeObject=Metadata``, the default), the whole
object (``Object``) or nothing (``None``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from . import resources as R

TABLE_API_VERSION = "meta.k8s.io/v1"
INCLUDE_OBJECT = ("Metadata", "Object", "None")

NAME_DOC = "Name must be unique within a namespace."
AGE_DOC = (
    "CreationTimestamp is a timestamp representing the server time when this object was created."
)


def wants_table(accept: str) -> bool:
    """Whether the ``Accept`` header's first choice is a ``meta.k8s.io`` Table."""
    first = accept.split(",", 1)[0].replace(" ", "")
    params = set(first.split(";")[1:])
    return "as=Table" in params and "g=meta.k8s.io" in params


def human_duration(seconds: float) -> str:
    """Kubernetes' ``duration.HumanDuration`` (``5m12s``, ``3h``, ``2d4h``, ``1y``)."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def age(timestamp: str | None, now: datetime) -> str:
    if not timestamp:
        return "<unknown>"
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "<invalid>"
    return human_duration((now - then).total_seconds())


# ---- JSONPath, the simple kind additionalPrinterColumns use: .a.b, .a[0].b, .a\.b ------------
_STEP = re.compile(r"\.((?:\\\.|[^.\[])+)|\[(\d+)\]")


def json_path(obj: object, path: str) -> object:
    """Value at ``path`` (``None`` if absent); ``ValueError`` for syntax outside the subset."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    steps: list[str | int] = []
    pos = 0
    while pos < len(path):
        m = _STEP.match(path, pos)
        if not m:
            raise ValueError(f"unsupported JSONPath {path!r}")
        pos = m.end()
        steps.append(m.group(1).replace("\\.", ".") if m.group(1) is not None else int(m.group(2)))
    value = obj
    for step in steps:
        if isinstance(step, str):
            value = value.get(step) if isinstance(value, dict) else None
        else:
            value = value[step] if isinstance(value, list) and step < len(value) else None
        if value is None:
            return None
    return value


def cell_for(column_type: str, value: object, now: datetime) -> object:
    """A printer column's cell, as the CRD table convertor renders its JSON value."""
    if value is None:
        return None
    if column_type == "date" and isinstance(value, str):
        return age(value, now)
    if column_type == "integer" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if column_type == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if column_type == "boolean" and isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


# ---- built-in kinds ---------------------------------------------------------------------------
Column = dict  # a TableColumnDefinition
Cells = Callable[[dict, datetime], list]


def column(name: str, description: str = "", *, fmt: str = "", priority: int = 0) -> Column:
    return {
        "name": name,
        "type": "string",
        "format": fmt,
        "description": description,
        "priority": priority,
    }


def pod_status(pod: dict) -> str:
    """The STATUS cell of ``kubectl get pods`` (kubelet reasons win over the phase)."""
    status = pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Unknown"
    running = False
    for cs in reversed(status.get("containerStatuses") or []):
        state = cs.get("state") or {}
        if (state.get("waiting") or {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif state.get("terminated"):
            t = state["terminated"]
            reason = t.get("reason") or (
                f"Signal:{t['signal']}" if t.get("signal") else f"ExitCode:{t.get('exitCode')}"
            )
        elif state.get("running") and cs.get("ready"):
            running = True
    if reason == "Completed" and running:
        reason = "Running"
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        reason = "Terminating"
    return reason


def _pod_cells(pod: dict) -> list:
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    total = len((pod.get("spec") or {}).get("containers") or [])
    ready = sum(1 for cs in statuses if cs.get("ready"))
    restarts = sum(int(cs.get("restartCount") or 0) for cs in statuses)
    return [f"{ready}/{total}", pod_status(pod), str(restarts)]


def _pod_wide_cells(pod: dict) -> list:
    return [
        (pod.get("status") or {}).get("podIP") or "<none>",
        (pod.get("spec") or {}).get("nodeName") or "<none>",
    ]


def _event_cells(ev: dict, now: datetime) -> list:
    obj = ev.get("involvedObject") or {}
    last = ev.get("lastTimestamp") or ev.get("eventTime") or ev["metadata"].get("creationTimestamp")
    return [
        age(last, now),
        ev.get("type") or "",
        ev.get("reason") or "",
        f"{(obj.get('kind') or '').lower()}/{obj.get('name') or ''}",
        (ev.get("message") or "").strip(),
    ]


def _service_cells(svc: dict) -> list:
    spec = svc.get("spec") or {}
    ports = ",".join(
        f"{p.get('port')}/{p.get('protocol') or 'TCP'}" for p in spec.get("ports") or []
    )
    return [spec.get("type") or "ClusterIP", spec.get("clusterIP") or "<none>", "<none>",
            ports or "<none>"]  # fmt: skip


ACCESS_MODES = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX"}


def _pvc_cells(pvc: dict) -> list:
    spec, status = pvc.get("spec") or {}, pvc.get("status") or {}
    return [
        status.get("phase") or "Pending",
        spec.get("volumeName") or "",
        (status.get("capacity") or {}).get("storage") or "",
        ",".join(ACCESS_MODES.get(m, m) for m in status.get("accessModes") or []),
        spec.get("storageClassName") or "<unset>",
    ]


def named(
    middle: Sequence[tuple[str, str]],
    cells: Callable[[dict], list],
    wide: Sequence[tuple[str, str]] = (),
    wide_cells: Callable[[dict], list] = lambda o: [],
) -> tuple[list[Column], Cells]:
    """Columns Name, ``middle`` (name, description), Age, then ``wide`` at priority 1."""
    columns = [column("Name", NAME_DOC, fmt="name")]
    columns += [column(n, d) for n, d in middle] + [column("Age", AGE_DOC)]
    columns += [column(n, d, priority=1) for n, d in wide]

    def row(o: dict, now: datetime) -> list:
        created = age(o["metadata"].get("creationTimestamp"), now)
        return [o["metadata"]["name"], *cells(o), created, *wide_cells(o)]

    return columns, row


BUILTIN: dict[str, tuple[list[Column], Cells]] = {
    "Pod": named(
        [("Ready", "The aggregate readiness state of this pod for accepting traffic."),
         ("Status", "The aggregate status of the containers in this pod."),
         ("Restarts", "The number of times the containers in this pod have been restarted.")],
        _pod_cells,
        [("IP", "IP address allocated to the pod."),
         ("Node", "Name of the node the pod is assigned to.")],
        _pod_wide_cells,
    ),
    "Namespace": named(
        [("Status", "The phase of the namespace.")],
        lambda o: [(o.get("status") or {}).get("phase") or "Active"],
    ),
    "ConfigMap": named(
        [("Data", "Number of keys.")],
        lambda o: [str(len(o.get("data") or {}) + len(o.get("binaryData") or {}))],
    ),
    "Secret": named(
        [("Type", "The type of the secret."), ("Data", "Number of keys.")],
        lambda o: [o.get("type") or "Opaque", str(len(o.get("data") or {}))],
    ),
    "Service": named(
        [("Type", "The type of the service."), ("Cluster-IP", "The cluster IP."),
         ("External-IP", "The external IP."), ("Port(s)", "The ports of the service.")],
        _service_cells,
    ),
    "PersistentVolumeClaim": named(
        [("Status", "The phase of the claim."), ("Volume", "The bound volume."),
         ("Capacity", "The capacity."), ("Access Modes", "The access modes."),
         ("StorageClass", "The storage class.")],
        _pvc_cells,
    ),
    "Event": (
        [column("Last Seen", "Time since the event was last seen."), column("Type", "Event type."),
         column("Reason", "Why the event happened."), column("Object", "The object it is about."),
         column("Message", "What happened.")],
        _event_cells,
    ),
}  # fmt: skip
DEFAULT = named([], lambda o: [])


def printer_columns(crd: dict | None, version: str) -> list[dict] | None:
    """The ``additionalPrinterColumns`` of ``crd``'s ``version`` (None: not a CRD's)."""
    if crd is None:
        return None
    for v in (crd.get("spec") or {}).get("versions") or []:
        if v.get("name") == version:
            return v.get("additionalPrinterColumns") or [
                {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
            ]
    return None


def _row_object(obj: dict, include: str) -> dict | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": TABLE_API_VERSION,
        "metadata": obj.get("metadata") or {},
    }


def table(
    rt: R.ResourceType,
    objects: list[dict],
    *,
    crd_columns: list[dict] | None = None,
    list_meta: dict | None = None,
    include_object: str = "Metadata",
    now: datetime | None = None,
) -> dict:
    """The ``Table`` for ``objects`` of type ``rt`` (``crd_columns`` for custom resources)."""
    if include_object not in INCLUDE_OBJECT:
        raise R.bad_request(
            f"includeObject must be one of {', '.join(INCLUDE_OBJECT)}, not {include_object!r}"
        )
    now = now or datetime.now(UTC)
    if crd_columns is not None:
        columns = [column("Name", NAME_DOC, fmt="name")] + [
            {
                "name": c["name"],
                "type": c.get("type", "string"),
                "format": c.get("format", ""),
                "description": c.get("description", ""),
                "priority": int(c.get("priority", 0)),
            }
            for c in crd_columns
        ]

        def cells(o: dict, now: datetime) -> list:
            out: list = [o["metadata"]["name"]]
            for c in crd_columns:
                try:
                    value = json_path(o, c["jsonPath"])
                except ValueError:
                    value = "<error>"
                out.append(cell_for(c.get("type", "string"), value, now))
            return out
    else:
        columns, cells = BUILTIN.get(rt.kind, DEFAULT)
    return {
        "kind": "Table",
        "apiVersion": TABLE_API_VERSION,
        "metadata": list_meta or {},
        "columnDefinitions": columns,
        "rows": [
            {"cells": cells(o, now), "object": _row_object(o, include_object)} for o in objects
        ],
    }
