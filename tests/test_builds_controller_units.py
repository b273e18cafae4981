"""The dev cluster build controller's pure parts: steps it writes, the ImageStream it publishes."""

from __future__ import annotations

import json

import pytest

from cnbi_devcluster.build_steps import (
    INJECT_FAILURE,
    imagestream_for,
    plan_steps,
    unresolvable,
)
from cnbi_spawner.builds.phases import normalise
from cnbi_spawner.builds.resource import customnbimage
from cnbi_spawner.builds.validate import validate_request
from cnbi_spawner.images.imagestreams import parse_imagestream

BASE = "registry.example/courses/minimal:v1"


def cr_for(body: dict, annotations: dict | None = None) -> dict:
    req = validate_request(body, creator="author", suffix=lambda: "abcde")
    cr = customnbimage(req, "ns")
    cr["metadata"].update(uid="u-1", generation=1)
    cr["metadata"]["annotations"].update(annotations or {})
    return cr


def walk(cr: dict) -> list[str]:
    """Design phases seen when each planned status is written in turn."""
    seen = []
    for status in plan_steps(cr):
        cr = {**cr, "status": status}
        seen.append(normalise(cr).phase)
    return seen


PKG = {"displayName": "Pandas course", "baseImage": BASE, "packageVersions": ["pandas==2.2.3"]}
IMPORT = {"displayName": "Imported", "baseImage": BASE}
GIT = {"displayName": "Git", "baseImage": BASE, "repoURL": "https://git.example/org/repo"}


@pytest.mark.parametrize(
    "body,annotations,phases,message",
    [
        (PKG, {}, ["Pending", "Preparing", "Resolving", "Building", "Success"], ""),
        (GIT, {}, ["Pending", "Preparing", "Resolving", "Building", "Success"], ""),
        (IMPORT, {}, ["Importing", "Validating", "Success"], ""),
        (
            {**PKG, "packageVersions": ["numpy", "nonexistent-thing>=1"]},
            {},
            ["Pending", "Preparing", "Resolving", "Failure"],
            "Could not find a version that satisfies the requirement nonexistent-thing>=1",
        ),
        (PKG, {INJECT_FAILURE: "disk full"},
         ["Pending", "Preparing", "Resolving", "Building", "Failure"], "disk full"),
        (IMPORT, {INJECT_FAILURE: "not a notebook"},
         ["Importing", "Validating", "Failure"], "not a notebook"),
    ],
)  # fmt: skip
def test_walks(body, annotations, phases, message):
    cr = cr_for(body, annotations)
    assert walk(cr) == phases
    final = normalise({**cr, "status": plan_steps(cr)[-1]})
    assert final.message == message


def test_unresolvable_rule():
    assert unresolvable(["pandas", "Nonexistent_Pkg"]) == "Nonexistent_Pkg"
    assert unresolvable(["pandas", "numpy>=1"]) is None


@pytest.mark.parametrize("body,tag", [(PKG, "latest"), (IMPORT, "v1"), (GIT, "latest")])
def test_published_imagestream_is_launchable(body, tag):
    cr = cr_for(body)
    stream, status, repo = imagestream_for(cr)
    ann = stream["metadata"]["annotations"]
    assert stream["metadata"]["name"] == normalise(cr).imagestream
    assert stream["metadata"]["labels"]["opendatahub.io/notebook-image"] == "true"
    assert ann["opendatahub.io/notebook-image-creator"] == "author"
    assert ann["cnbi.meteor.zone/source"] == f"customnbimage/{cr['metadata']['name']}"
    ref = status["tags"][0]["items"][0]["dockerImageReference"]
    assert ref.startswith(repo + "@sha256:") and repo.startswith("registry.example/")
    images = parse_imagestream({**stream, "status": status})
    assert len(images) == 1
    image = images[0]
    assert image.launchable and image.key == f"{stream['metadata']['name']}:{tag}"
    assert image.image == ref and image.creator == "author"
    if body is PKG:
        deps = json.loads(
            stream["spec"]["tags"][0]["annotations"]["opendatahub.io/notebook-python-dependencies"]
        )
        assert deps == [{"name": "pandas", "version": "2.2.3"}]
        assert [(p.name, p.version) for p in image.python_deps] == [("pandas", "2.2.3")]
