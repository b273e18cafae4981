"""The build form's flat fields -> API body (pure), and the result through validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnbi_spawner.builds.validate import BuildRequestError, validate_request
from cnbi_spawner.service.build_pages import form_to_body

BASE = "registry.example/courses/minimal:v1"
FIXTURES = Path(__file__).parent / "fixtures" / "customnbimages"


@pytest.mark.parametrize(
    "form,kind,error_field",
    [
        ({"kind": "import", "displayName": "x", "baseImage": BASE}, "import", None),
        ({"kind": "import", "displayName": "x"}, None, "baseImage"),
        (
            {"kind": "package-list", "displayName": "x", "pythonVersion": "3.11",
             "packageVersions": "pandas\n# comment\n\nnumpy>=1\n"},
            "package-list", None,
        ),
        (
            {"kind": "package-list", "displayName": "x", "baseImage": BASE,
             "pythonVersion": "3.11", "packageVersions": "pandas"},
            "package-list", None,  # base image wins; the python field is ignored
        ),
        ({"kind": "package-list", "displayName": "x", "baseImage": BASE}, None, "packageVersions"),
        (
            {"kind": "gitrepo", "displayName": "x", "baseImage": BASE,
             "repoURL": "https://git.example/o/r", "ref": "main",
             "packageVersions": "ignored for git"},
            "gitrepo", None,
        ),
        ({"kind": "gitrepo", "displayName": "x", "baseImage": BASE,
          "repoURL": "git@git.example:o/r"},
         None, "repoURL"),
        ({"kind": "evil", "displayName": "x", "baseImage": BASE}, "import", None),
        ({"kind": "import", "displayName": "", "baseImage": BASE}, None, "displayName"),
        (
            {"kind": "manifest", "displayName": "ignored", "baseImage": "ignored",
             "manifest": (FIXTURES / "design-sample-package-list.yaml").read_text()},
            "package-list", None,
        ),
        (
            {"kind": "manifest",
             "manifest": (FIXTURES / "design-draft-action-build.yaml").read_text()},
            "package-list", None,
        ),
        (
            {"kind": "manifest",
             "manifest": (FIXTURES / "design-sample-import.yaml").read_text()},
            "import", None,
        ),
        ({"kind": "manifest", "manifest": "spec: {displayName: x}"}, None, "baseImage"),
        ({"kind": "manifest", "manifest": "{"}, None, "body"),
    ],
)  # fmt: skip
def test_form_round_trip(form, kind, error_field):
    if error_field:
        with pytest.raises(BuildRequestError) as info:
            validate_request(form_to_body(form), creator="author")
        assert error_field in info.value.fields
    else:
        req = validate_request(form_to_body(form), creator="author")
        assert req.kind == kind and req.creator == "author"
