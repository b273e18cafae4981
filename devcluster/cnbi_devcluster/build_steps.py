"""What the dev cluster's build controller writes, as pure functions (no I/O).

:func:`plan_steps` turns a CustomNBImage into the ``status`` values its walk goes through
(including injected and unresolvable-package failures), :func:`imagestream_for` into the
ImageStream (and fake image reference) a successful build publishes. The controller that
walks them over the cluster API is :mod:`cnbi_devcluster.builds`, whose docstring
describes the phases, failures and ImageStream in full.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from datetime import UTC, datetime

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from cnbi_spawner.builds import GROUP, KIND, VERSION
from cnbi_spawner.builds.phases import SOURCE_ANNOTATION, build_kind, imagestream_name
from cnbi_spawner.builds.resource import creator_of, display_name_of

INJECT_FAILURE = "cnbi.meteor.zone/inject-failure"
BASE_DIGEST_ANNOTATION = "cnbi.meteor.zone/base-digest"  # see cnbi_spawner.builds.rebuild
UNRESOLVABLE_PREFIX = "nonexistent-"
IMAGE_HOST = "registry.example/cnbi"
IS_GROUP, IS_VERSION, IS_PLURAL = "image.openshift.io", "v1", "imagestreams"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cond(type_: str, status: str, reason: str, message: str) -> dict:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": _now(),
    }


def unresolvable(packages: list) -> str | None:
    """The first requirement the fake resolver cannot resolve (rule: ``nonexistent-*``)."""
    for item in packages or ():
        try:
            name = canonicalize_name(Requirement(str(item)).name)
        except InvalidRequirement:
            return str(item)
        if name.startswith(UNRESOLVABLE_PREFIX):
            return str(item)
    return None


def plan_steps(cr: dict) -> list[dict]:
    """The statuses to write, in order, for ``cr`` (pure). The last one is final."""
    name = cr["metadata"]["name"]
    spec = cr.get("spec") or {}
    annotations = cr["metadata"].get("annotations") or {}
    injected = annotations.get(INJECT_FAILURE)
    run = f"cnbi-{name}"

    def status(phase: str, conditions: list[dict], pipelines: list[str]) -> dict:
        return {
            "phase": phase,
            "conditions": conditions,
            "pipelines": [
                {
                    "name": p,
                    "pipelineRunName": f"{run}-{p}",
                    "ready": "True" if phase == "Ready" else "False",
                }
                for p in pipelines
            ],
        }

    if build_kind(cr) == "import":
        steps = [
            status(
                "Importing",
                [_cond("PipelineRunImport", "Unknown", "Running", "Importing")],
                ["import"],
            ),
            status(
                "Importing",
                [_cond("PipelineRunImport", "Unknown", "Validating", "Validating the image")],
                ["import"],
            ),
        ]
        if injected:
            fail = _cond("PipelineRunImport", "False", "Failed", str(injected))
            return steps + [status("Failed", [fail], ["import"])]
        done = _cond("PipelineRunImport", "True", "Succeeded", "Tasks Completed: 4 (Failed: 0)")
        return steps + [status("Ready", [done], ["import"])]

    prep_running = _cond("PipelineRunPrepare", "Unknown", "Running", "Preparing the build")
    prep_done = _cond("PipelineRunPrepare", "True", "Succeeded", "Prepared")
    steps = [
        status("Pending", [], []),
        status("Preparing", [prep_running], ["prepare"]),
        status(
            "Resolving",
            [_cond("PipelineRunPrepare", "Unknown", "Running", "Resolving packages")],
            ["prepare"],
        ),
    ]
    bad = unresolvable(spec.get("packageVersions") or [])
    if bad:
        message = f"Could not find a version that satisfies the requirement {bad}"
        fail = _cond("PipelineRunPrepare", "False", "Failed", message)
        return steps + [status("Failed", [fail], ["prepare"])]
    build_running = _cond("PipelineRunBuild", "Unknown", "Running", "Building the image")
    steps.append(status("Building", [prep_done, build_running], ["prepare", "build"]))
    if injected:
        fail = _cond("PipelineRunBuild", "False", "Failed", str(injected))
        return steps + [status("Failed", [prep_done, fail], ["prepare", "build"])]
    build_done = _cond("PipelineRunBuild", "True", "Succeeded", "Tasks Completed: 3 (Failed: 0)")
    return steps + [status("Ready", [prep_done, build_done], ["prepare", "build"])]


def _tag_of(cr: dict) -> str:
    if build_kind(cr) != "import":
        return "latest"
    image = str((cr.get("spec") or {}).get("baseImage") or (cr.get("spec") or {}).get("fromImage"))
    image = image.split("@", 1)[0]
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else "latest"


def imagestream_for(cr: dict) -> tuple[dict, dict, str]:
    """(ImageStream object, its status, image repository) for a succeeded ``cr`` (pure)."""
    meta = cr["metadata"]
    spec = cr.get("spec") or {}
    stream = imagestream_name(cr)
    tag = _tag_of(cr)
    # a rebuild for a new base digest (cnbi.meteor.zone/base-digest, written by the service's
    # rebuild loop) publishes a new digest, like a real build on a changed base would
    base_digest = (meta.get("annotations") or {}).get(BASE_DIGEST_ANNOTATION) or ""
    identity = [meta.get("uid"), meta.get("generation"), spec] + (
        [base_digest] if base_digest else []
    )
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    repo = f"{IMAGE_HOST}/{stream}"
    python = ((spec.get("runtimeEnvironment") or {}).get("pythonVersion")) or "3.11"
    deps = []
    for item in spec.get("packageVersions") or ():
        with contextlib.suppress(InvalidRequirement):
            req = Requirement(str(item))
            deps.append({"name": req.name, "version": str(req.specifier).lstrip("=") or "latest"})
    source = spec.get("baseImage") or spec.get("fromImage") or spec.get("repoURL") or ""
    tag_annotations = {
        "opendatahub.io/notebook-software": json.dumps([{"name": "Python", "version": python}]),
        "opendatahub.io/notebook-python-dependencies": json.dumps(deps),
    }
    if build_kind(cr) == "import" and source:
        tag_annotations["openshift.io/imported-from"] = source
    if base_digest:
        tag_annotations[BASE_DIGEST_ANNOTATION] = base_digest
    body = {
        "apiVersion": f"{IS_GROUP}/{IS_VERSION}",
        "kind": "ImageStream",
        "metadata": {
            "name": stream,
            "namespace": meta["namespace"],
            "labels": {
                "opendatahub.io/notebook-image": "true",
                "app.kubernetes.io/created-by": "cnbi-devcluster-build-controller",
            },
            "annotations": {
                "opendatahub.io/notebook-image-name": display_name_of(cr),
                "opendatahub.io/notebook-image-desc": str(spec.get("description") or ""),
                "opendatahub.io/notebook-image-url": str(source),
                "opendatahub.io/notebook-image-creator": creator_of(cr),
                "opendatahub.io/notebook-image-phase": "Succeeded",
                "opendatahub.io/notebook-image-messages": "",
                SOURCE_ANNOTATION: f"customnbimage/{meta['name']}",
            },
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": KIND,
                    "name": meta["name"],
                    "uid": meta.get("uid", ""),
                    "controller": True,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "spec": {
            "lookupPolicy": {"local": True},
            "tags": [
                {
                    "name": tag,
                    "annotations": tag_annotations,
                    "from": {"kind": "DockerImage", "name": f"{repo}:{tag}"},
                    "importPolicy": {},
                    "referencePolicy": {"type": "Source"},
                }
            ],
        },
    }
    status = {
        "dockerImageRepository": "",
        "tags": [
            {
                "tag": tag,
                "items": [
                    {
                        "created": _now(),
                        "dockerImageReference": f"{repo}@sha256:{digest}",
                        "image": f"sha256:{digest}",
                        "generation": 1,
                    }
                ],
            }
        ],
    }
    return body, status, repo
