"""Phase normalisation over both CustomNBImage dialects (fixtures + hand-made cases)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from cnbi_spawner.builds.phases import (
    BUILD_PHASES,
    DEFAULT_FAILURE,
    IMPORT_PHASES,
    build_kind,
    count_in_progress,
    imagestream_name,
    normalise,
)

FIXTURES = Path(__file__).parent / "fixtures" / "customnbimages"


def fixture(name: str) -> dict:
    return yaml.safe_load((FIXTURES / f"{name}.yaml").read_text())


FIXTURE_CASES = [
    # name, kind, phase, imagestream
    ("seed-package-list", "package-list", "Preparing", "cnbi-ubi8-py38-sample-3-package-list"),
    ("seed-import", "import", "Success", "cnbi-import-s2i-minimal-import"),
    ("seed-gitrepo", "gitrepo", "Pending", "cnbi-elyra-aidevsecops-tutorial-gitrepo"),
    (
        "operator-image-import-succeeded",
        "import",
        "Success",
        "cnbi-s2i-minimal-py38-notebook-import-import",
    ),
    (
        "operator-package-list-running",
        "package-list",
        "Building",
        "cnbi-s2i-minimal-py38-sample-1-package-list",
    ),
    # the CNBi design's samples, just applied (no status yet)
    ("design-sample-package-list", "package-list", "Pending",
     "cnbi-ubi8-py38-sample-3-package-list"),
    ("design-sample-import", "import", "Importing", "cnbi-osc-pytorch-import"),
    ("design-draft-action-build", "package-list", "Pending", "cnbi-ubi8-py38-pd-package-list"),
]  # fmt: skip


def test_every_fixture_is_covered():
    assert {p.stem for p in FIXTURES.glob("*.yaml")} == {c[0] for c in FIXTURE_CASES}


@pytest.mark.parametrize("name,kind,phase,stream", FIXTURE_CASES, ids=[c[0] for c in FIXTURE_CASES])
def test_fixtures(name, kind, phase, stream):
    cr = fixture(name)
    status = normalise(cr)
    assert (status.kind, status.phase, status.imagestream) == (kind, phase, stream)
    assert status.phase in status.phases
    assert build_kind(cr) == kind and imagestream_name(cr) == stream
    assert not status.failed


def cond(type_, status, reason="R", message=""):
    return {"type": type_, "status": status, "reason": reason, "message": message}


def cr_with(kind: str, status: dict | None) -> dict:
    spec = {
        "import": {"pipelines": ["import"], "baseImage": "x"},
        "package-list": {"pipelines": ["prepare", "build"], "packageVersions": ["a"]},
        "gitrepo": {"pipelines": ["prepare", "build"], "repoURL": "https://git.example/a"},
        "op-import": {"buildType": "ImageImport", "fromImage": "x"},
        "op-git": {"buildType": "GitRepository", "repository": "https://git.example/a"},
    }[kind]
    obj = {"metadata": {"name": "n"}, "spec": spec}
    if status is not None:
        obj["status"] = status
    return obj


TABLE = [
    # kind, status, expected phase, expected message (None = don't care)
    ("package-list", None, "Pending", ""),
    ("import", None, "Importing", ""),
    ("package-list", {"phase": "Pending"}, "Pending", None),
    ("package-list", {"phase": "CreatingRepository"}, "Preparing", None),
    ("package-list", {"phase": "Resolving"}, "Resolving", None),
    ("package-list", {"phase": "Building"}, "Building", None),
    ("package-list", {"phase": "Ready"}, "Success", ""),
    ("gitrepo", {"phase": "Succeeded"}, "Success", ""),
    ("import", {"phase": "Importing"}, "Importing", None),
    ("import", {"phase": "Preparing"}, "Importing", None),
    (
        "import",
        {
            "phase": "Importing",
            "conditions": [cond("PipelineRunImport", "Unknown", "Validating", "v")],
        },
        "Validating",
        "v",
    ),
    ("op-import", {"phase": "Running"}, "Importing", None),
    ("op-git", {"phase": "Running"}, "Building", None),
    ("op-git", {"phase": "Unknown"}, "Pending", None),
    (
        "package-list",
        {"phase": "Running", "conditions": [cond("PipelineRunPrepare", "Unknown", "Running")]},
        "Preparing",
        None,
    ),
    (
        "package-list",
        {
            "phase": "Running",
            "conditions": [
                cond("PipelineRunPrepare", "True", "Succeeded"),
                cond("PipelineRunBuild", "Unknown", "Running"),
            ],
        },
        "Building",
        None,
    ),
    ("package-list", {"phase": "Failed"}, "Failure", DEFAULT_FAILURE),
    (
        "package-list",
        {
            "phase": "Failed",
            "conditions": [cond("PipelineRunBuild", "False", "Failed", "pip: no dist")],
        },
        "Failure",
        "pip: no dist",
    ),
    (
        "op-import",
        {
            "phase": "Running",
            "conditions": [cond("ImageImportInvalid", "True", "Invalid", "not a nb")],
        },
        "Failure",
        "not a nb",
    ),
    (
        "op-git",
        {
            "phase": "Pending",
            "conditions": [cond("RequiredSecretMissing", "True", "M", "no secret")],
        },
        "Failure",
        "no secret",
    ),
    (
        "op-git",
        {"phase": "Running", "conditions": [cond("ErrorPipelineRunCreate", "True", "E", "boom")]},
        "Failure",
        "boom",
    ),
    # hostile / malformed status: never raises, degrades to the first phase
    ("package-list", {"phase": {"x": 1}}, "Pending", None),
    ("package-list", {"phase": "Exploded"}, "Pending", None),
    ("package-list", "not a dict", "Pending", None),
    ("import", {"conditions": "junk"}, "Importing", None),
    ("import", {"conditions": [None, 5, {"status": "False"}, {"type": 3}]}, "Importing", None),
]


@pytest.mark.parametrize("kind,status,phase,message", TABLE)
def test_table(kind, status, phase, message):
    result = normalise(cr_with(kind, status))
    assert result.phase == phase
    assert result.phase in (IMPORT_PHASES if result.kind == "import" else BUILD_PHASES)
    if message is not None:
        assert result.message == message


def test_garbage_objects_do_not_raise():
    for obj in ({}, {"metadata": None, "spec": [], "status": 1}, {"spec": {"buildType": 7}}):
        status = normalise(obj)
        assert status.phase == "Pending" and status.imagestream == ""


def test_count_in_progress():
    running = fixture("seed-package-list")
    done = fixture("seed-import")
    mine = copy.deepcopy(running)
    other = copy.deepcopy(running)
    other["spec"]["creator"] = "someone"
    operator = fixture("operator-package-list-running")  # creator from annotation: codificat
    assert count_in_progress([running, done, mine, other, operator], "goern") == 2
    assert count_in_progress([running, done, mine, other, operator], "codificat") == 1
    assert count_in_progress([done], "thoth-station") == 0
