"""The notebook index of an image digest: what it is, where it is stored, how it is made (pure).

Policy:

- Every launchable ImageStream tag whose image is pinned to a digest and that declares no
  ``cnbi.meteor.zone/notebooks`` list gets an index: the ``.ipynb`` files of the folder the
  learner's server opens (the container's working directory, or ``root``), made by a
  short-lived pod of exactly that digest (:func:`index_pod`: no service-account token, no
  restarts, bounded run time and resources, no network needed; the Helm values' NetworkPolicy
  denies it any). The service runs it (``cnbi_spawner.service.indexer``).
- The result is stored with the digest, as the tag annotation :data:`ANNOTATION`:
  ``{"digest": "sha256:…", "notebooks": [...], "truncated": false}`` (or ``"error"``). A
  new digest makes the old index stale; the registry ignores a stale index, so until the new
  digest is indexed, launches behave as without one.
- A complete index is used exactly like a declared list (``selection.plan_launch`` refuses
  other paths, with close matches). An index that was cut short (more than
  :data:`MAX_NOTEBOOKS` files or :data:`MAX_ANNOTATION_BYTES` of paths), that failed, or that
  found no notebook at all restricts nothing: it could refuse paths that exist.
- Paths are hidden-folder free (``.ipynb_checkpoints``, ``.git``…), relative, ``/``-separated
  and normalised like launch parameters; anything else in the pod's output is dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .fields import normalize_notebook_path

ANNOTATION = "cnbi.meteor.zone/notebook-index"
ROLE_LABEL = "cnbi.meteor.zone/role"
ROLE = "notebook-index"
IMAGE_ANNOTATION = "cnbi.meteor.zone/image"
MARKER = "CNBI-NOTEBOOK-INDEX"
MAX_NOTEBOOKS = 2000
MAX_DEPTH = 8
MAX_ANNOTATION_BYTES = 64 * 1024
MAX_LOG_BYTES = 512 * 1024
CONTAINER = "index"

#: Run by ``python3 -c`` in the image: walk the folder, print one marked JSON line.
SCRIPT = f"""
import json, os
root = os.environ.get("CNBI_INDEX_ROOT") or os.getcwd()
found, truncated = [], False
for here, dirs, files in os.walk(root):
    rel = os.path.relpath(here, root)
    depth = 0 if rel == "." else rel.count(os.sep) + 1
    dirs[:] = [] if depth >= {MAX_DEPTH} else sorted(
        d for d in dirs if not d.startswith(".") and d not in ("__pycache__", "node_modules"))
    for f in sorted(files):
        if f.endswith(".ipynb") and not f.startswith("."):
            found.append((f if rel == "." else os.path.join(rel, f)).replace(os.sep, "/"))
    if len(found) > {MAX_NOTEBOOKS}:
        found, truncated = found[:{MAX_NOTEBOOKS}], True
        break
print("{MARKER} " + json.dumps({{"root": root, "notebooks": found, "truncated": truncated}}))
"""


@dataclass(frozen=True, slots=True)
class NotebookIndex:
    """One digest's index as stored in :data:`ANNOTATION`."""

    digest: str
    notebooks: tuple[str, ...] = ()
    truncated: bool = False
    error: str = ""

    @property
    def restricts(self) -> bool:
        """May launches be limited to these notebooks? (module docstring)"""
        return bool(self.notebooks) and not self.truncated and not self.error

    def to_annotation(self) -> str:
        body: dict = {"digest": self.digest}
        if self.error:
            body["error"] = self.error[:500]
        else:
            body["notebooks"] = list(self.notebooks)
            body["truncated"] = self.truncated
        return json.dumps(body, separators=(",", ":"))


def _clean(paths: object) -> tuple[tuple[str, ...], bool]:
    """Safe, unique, bounded paths from untrusted data; (paths, cut short?)."""
    if not isinstance(paths, list):
        return (), False
    out: list[str] = []
    seen: set[str] = set()
    size = 0
    for item in paths:
        path = normalize_notebook_path(item) if isinstance(item, str) else None
        if path is None or path in seen or any(p.startswith(".") for p in path.split("/")):
            continue
        size += len(path.encode()) + 3
        if len(out) >= MAX_NOTEBOOKS or size > MAX_ANNOTATION_BYTES:
            return tuple(out), True
        seen.add(path)
        out.append(path)
    return tuple(out), False


def read_annotation(value: object) -> NotebookIndex | None:
    """The stored index, or None when absent or unreadable (never raises)."""
    if not isinstance(value, str) or len(value) > 2 * MAX_ANNOTATION_BYTES:
        return None
    try:
        data = json.loads(value)
    except ValueError:
        return None
    digest = data.get("digest") if isinstance(data, dict) else None
    if not isinstance(digest, str) or not digest.startswith("sha256:"):
        return None
    error = data.get("error")
    if isinstance(error, str) and error:
        return NotebookIndex(digest, error=error[:500])
    notebooks, cut = _clean(data.get("notebooks"))
    return NotebookIndex(digest, notebooks, truncated=cut or data.get("truncated") is True)


def parse_output(digest: str, text: str) -> NotebookIndex:
    """The index pod's log -> its index (an ``error`` index when the output is unusable)."""
    for line in reversed(text[-MAX_LOG_BYTES:].splitlines()):
        if line.startswith(MARKER + " "):
            try:
                data = json.loads(line[len(MARKER) + 1 :])
            except ValueError:
                break
            if not isinstance(data, dict):
                break
            notebooks, cut = _clean(data.get("notebooks"))
            return NotebookIndex(digest, notebooks, truncated=cut or data.get("truncated") is True)
    return NotebookIndex(digest, error="the indexing pod printed no index")


def digest_of(image_ref: str) -> str:
    """``repo@sha256:…`` -> ``sha256:…`` ("" when not digest-pinned)."""
    _, at, digest = image_ref.rpartition("@")
    return digest if at and digest.startswith("sha256:") else ""


def index_pod(
    *,
    name: str,
    namespace: str,
    image_ref: str,
    image_key: str,
    deadline_seconds: int,
    cpu: str,
    memory: str,
    root: str = "",
) -> dict:
    """The indexing pod for ``image_ref`` (digest-pinned): bounded, unprivileged, tokenless."""
    env = [{"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}]
    if root:
        env.append({"name": "CNBI_INDEX_ROOT", "value": root})
    limits = {"cpu": cpu, "memory": memory}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {ROLE_LABEL: ROLE, "app.kubernetes.io/managed-by": "cnbi-spawner"},
            "annotations": {IMAGE_ANNOTATION: image_key},
        },
        "spec": {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": deadline_seconds,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": CONTAINER,
                    "image": image_ref,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python3", "-c", SCRIPT],
                    "env": env,
                    "resources": {"requests": limits, "limits": limits},
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }
