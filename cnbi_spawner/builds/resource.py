"""``BuildRequest`` -> CustomNBImage object (pure).

The object is written in the seed dialect (``displayName``, ``creator``, ``pipelines`` …)
that DESIGN §4 drafts, and ALSO carries what the later meteor-operator reads
(``buildType``, ``fromImage``/``repository``/``gitRef`` and the
``opendatahub.io/notebook-image-{name,desc,creator}`` annotations), so either
controller can act on it. ``creator`` always comes from the request, which the
service fills from the authenticated user.
"""

from __future__ import annotations

from cnbi_spawner.builds import GROUP, KIND, VERSION
from cnbi_spawner.builds.validate import BuildRequest

CREATED_BY = "cnbi-spawner"
CREATOR_ANNOTATION = "opendatahub.io/notebook-image-creator"
NAME_ANNOTATION = "opendatahub.io/notebook-image-name"
DESC_ANNOTATION = "opendatahub.io/notebook-image-desc"
BUILD_TYPES = {"import": "ImageImport", "package-list": "PackageList", "gitrepo": "GitRepository"}


def customnbimage(req: BuildRequest, namespace: str) -> dict:
    """The CustomNBImage to create for ``req`` in ``namespace``."""
    spec: dict = {
        "displayName": req.display_name,
        "creator": req.creator,
        "pipelines": list(req.pipelines),
        "buildType": BUILD_TYPES[req.kind],
    }
    if req.description:
        spec["description"] = req.description
    if req.kind == "import":
        spec["baseImage"] = req.base_image  # seed dialect: the image to import
        spec["fromImage"] = req.base_image  # operator dialect
    elif req.base_image:
        spec["baseImage"] = req.base_image
    if req.package_versions:
        spec["packageVersions"] = list(req.package_versions)
    if req.runtime_environment is not None:
        spec["runtimeEnvironment"] = req.runtime_environment.to_spec()
    if req.repo_url:
        spec["repoURL"] = req.repo_url
        spec["repository"] = req.repo_url
        if req.ref:
            spec["ref"] = req.ref
            spec["gitRef"] = req.ref
    if req.ttl is not None:
        spec["ttl"] = req.ttl
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            "name": req.name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/created-by": CREATED_BY},
            "annotations": {
                NAME_ANNOTATION: req.display_name,
                DESC_ANNOTATION: req.description,
                CREATOR_ANNOTATION: req.creator,
            },
        },
        "spec": spec,
    }


def creator_of(cr: dict) -> str:
    """Who asked for this CustomNBImage (seed ``spec.creator``, else the operator annotation)."""
    spec = cr.get("spec") or {}
    creator = spec.get("creator") if isinstance(spec, dict) else None
    if isinstance(creator, str) and creator:
        return creator
    annotations = (cr.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(CREATOR_ANNOTATION, "") if isinstance(annotations, dict) else ""
    return value if isinstance(value, str) else ""


def display_name_of(cr: dict) -> str:
    """Seed ``spec.displayName``, else the operator annotation, else the earlier draft's
    ``spec.name``, else the object's name."""
    spec = cr.get("spec") or {}
    name = spec.get("displayName") if isinstance(spec, dict) else None
    if isinstance(name, str) and name:
        return name
    annotations = (cr.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(NAME_ANNOTATION, "") if isinstance(annotations, dict) else ""
    if isinstance(value, str) and value:
        return value
    draft = spec.get("name") if isinstance(spec, dict) else None
    if isinstance(draft, str) and draft:
        return draft
    return (cr.get("metadata") or {}).get("name", "")
