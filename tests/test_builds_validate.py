"""Build request validation: a table of good and hostile bodies."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from cnbi_spawner.builds.resource import customnbimage
from cnbi_spawner.builds.validate import (
    MAX_BODY_BYTES,
    BuildQuotaExceeded,
    BuildRequestError,
    check_quota,
    generate_name,
    parse_body,
    validate_request,
)
from cnbi_spawner.launch_grammar import is_image_ref

DNS1123 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
BASE = "registry.example/courses/s2i-minimal-py38-notebook:v0.2.2"


def ok(body: dict, **kw):
    return validate_request(body, creator="author", suffix=lambda: "abcde", **kw)


GOOD = [
    ("import", {"displayName": "Imported minimal", "baseImage": BASE}, "import", ("import",)),
    (
        "import explicit",
        {"displayName": "x", "pipelines": ["import"], "baseImage": "ubuntu"},
        "import",
        ("import",),
    ),
    (
        "package list on runtime env",
        {
            "displayName": "ubi8 py38 with pandas",
            "runtimeEnvironment": {"osName": "ubi", "osVersion": "8", "pythonVersion": "3.8"},
            "packageVersions": [
                "pandas",
                "boto3>=1.24.0",
                "numpy[extra]==1.26.*; python_version>'3'",
            ],
        },
        "package-list",
        ("prepare", "build"),
    ),
    (
        "package list on base image, build only",
        {
            "displayName": "p",
            "pipelines": ["build"],
            "baseImage": "registry.example:5000/a/b@sha256:" + "a" * 64,
            "packageVersions": ["scipy"],
        },
        "package-list",
        ("build",),
    ),
    (
        "git repo",
        {
            "displayName": "Elyra DevSecOps Tutorial",
            "pipelines": ["build", "prepare"],
            "baseImage": BASE,
            "repoURL": "https://git.example/AICoE/elyra-aidevsecops-tutorial",
            "ref": "master",
            "ttl": 86400,
            "description": "Build from the\nElyra tutorial",
        },
        "gitrepo",
        ("prepare", "build"),
    ),
    (
        "draft action import",
        {"name": "Draft", "action": "import", "baseImage": BASE},
        "import",
        ("import",),
    ),
    (
        "unicode display name",
        {"displayName": "Données — 数据 课程", "baseImage": BASE},
        "import",
        ("import",),
    ),
]


@pytest.mark.parametrize("label,body,kind,pipelines", GOOD, ids=[g[0] for g in GOOD])
def test_good_bodies(label, body, kind, pipelines):
    req = ok(body)
    assert req.kind == kind
    assert req.pipelines == pipelines
    assert req.creator == "author"
    assert DNS1123.fullmatch(req.name) and len(req.name) <= 36
    cr = customnbimage(req, "ns")
    assert cr["spec"]["creator"] == "author"
    assert cr["metadata"]["annotations"]["opendatahub.io/notebook-image-creator"] == "author"
    assert cr["spec"]["pipelines"] == list(pipelines)


def test_unicode_name_slug():
    assert ok({"displayName": "Données — 数据", "baseImage": BASE}).name == "donnees-abcde"
    assert ok({"displayName": "数据", "baseImage": BASE}).name == "image-abcde"
    assert ok({"displayName": "2024 course", "baseImage": BASE}).name == "i-2024-course-abcde"


def test_spoofed_creator_is_ignored_with_warning():
    req = ok({"displayName": "x", "baseImage": BASE, "creator": "someone-else"})
    assert req.creator == "author"
    assert req.warnings
    assert "someone-else" not in json.dumps(customnbimage(req, "ns"))


def test_name_unique_against_existing():
    suffixes = iter(["aaaaa", "aaaaa", "bbbbb"])
    name = generate_name("My Course", {"my-course-aaaaa"}, suffix=lambda: next(suffixes))
    assert name == "my-course-bbbbb"
    with pytest.raises(BuildRequestError):
        generate_name("My Course", {"my-course-aaaaa"}, suffix=lambda: "aaaaa")


BAD = [
    ("not an object", ["displayName"], "body"),
    ("string", "hello", "body"),
    ("missing displayName", {"baseImage": BASE}, "displayName"),
    ("blank displayName", {"displayName": "   ", "baseImage": BASE}, "displayName"),
    ("long displayName", {"displayName": "x" * 64, "baseImage": BASE}, "displayName"),
    ("control chars", {"displayName": "a\x00b", "baseImage": BASE}, "displayName"),
    ("newline in name", {"displayName": "a\nb", "baseImage": BASE}, "displayName"),
    ("displayName dict", {"displayName": {"$ne": 1}, "baseImage": BASE}, "displayName"),
    ("displayName number", {"displayName": 5, "baseImage": BASE}, "displayName"),
    ("unknown field", {"displayName": "x", "baseImage": BASE, "image": "evil"}, "body"),
    ("nested junk", {"displayName": "x", "baseImage": BASE, "a": {"b": [{"c": None}]}}, "body"),
    ("import without image", {"displayName": "x", "pipelines": ["import"]}, "baseImage"),
    ("nothing to do", {"displayName": "x"}, "baseImage"),
    ("bad pipeline", {"displayName": "x", "pipelines": ["deploy"], "baseImage": BASE}, "pipelines"),
    ("pipelines str", {"displayName": "x", "pipelines": "import", "baseImage": BASE}, "pipelines"),
    ("pipelines dup", {"displayName": "x", "pipelines": ["build", "build"]}, "pipelines"),
    ("empty pipelines", {"displayName": "x", "pipelines": [], "baseImage": BASE}, "pipelines"),
    (
        "import+build",
        {"displayName": "x", "pipelines": ["import", "build"], "baseImage": BASE},
        "pipelines",
    ),
    (
        "prepare only, no packages",
        {"displayName": "x", "pipelines": ["prepare"], "baseImage": BASE},
        "packageVersions",
    ),
    (
        "manifest of another kind",
        {"apiVersion": "v1", "kind": "Pod", "spec": {"displayName": "x", "baseImage": BASE}},
        "kind",
    ),
    (
        "manifest of another group",
        {"apiVersion": "evil/v1", "kind": "CustomNBImage", "spec": {"displayName": "x"}},
        "apiVersion",
    ),
    (
        "manifest without apiVersion",
        {"kind": "CustomNBImage", "spec": {"displayName": "x", "baseImage": BASE}},
        "apiVersion",
    ),
    (
        "spec without a manifest",
        {"spec": {"displayName": "x", "baseImage": BASE}},
        "body",
    ),
    (
        "manifest without a spec",
        {"kind": "CustomNBImage", "apiVersion": "meteor.zone/v1alpha1", "metadata": {"name": "a"}},
        "spec",
    ),
    (
        "manifest spec a list",
        {"kind": "CustomNBImage", "apiVersion": "meteor.zone/v1alpha1", "spec": ["displayName"]},
        "spec",
    ),
    (
        "manifest with a status",
        {
            "kind": "CustomNBImage",
            "spec": {"displayName": "x", "baseImage": BASE},
            "status": {"phase": "Ready"},
        },
        "body",
    ),
    (
        "draft action and pipelines",
        {
            "name": "x",
            "action": "build",
            "pipelines": ["build"],
            "baseImage": BASE,
            "packageVersions": ["a"],
        },
        "action",
    ),
    ("draft action unknown", {"name": "x", "action": "deploy", "baseImage": BASE}, "action"),
    ("draft action not a string", {"name": "x", "action": ["build"], "baseImage": BASE}, "action"),
    ("draft name and displayName", {"name": "x", "displayName": "y", "baseImage": BASE}, "name"),
    ("draft name not a string", {"name": {"a": 1}, "baseImage": BASE}, "displayName"),
    (
        "import with packages",
        {"displayName": "x", "pipelines": ["import"], "baseImage": BASE, "packageVersions": ["a"]},
        "packageVersions",
    ),
    (
        "build without packages",
        {"displayName": "x", "pipelines": ["prepare", "build"], "baseImage": BASE},
        "packageVersions",
    ),
    (
        "both base and runtime",
        {
            "displayName": "x",
            "baseImage": BASE,
            "runtimeEnvironment": {"pythonVersion": "3.11"},
            "packageVersions": ["a"],
        },
        "baseImage",
    ),
    ("neither base nor runtime", {"displayName": "x", "packageVersions": ["a"]}, "baseImage"),
    (
        "bad specifier",
        {"displayName": "x", "baseImage": BASE, "packageVersions": ["pandas>>1"]},
        "packageVersions[0]",
    ),
    (
        "shell in specifier",
        {"displayName": "x", "baseImage": BASE, "packageVersions": ["ok", "a; rm -rf /"]},
        "packageVersions[1]",
    ),
    (
        "url requirement",
        {"displayName": "x", "baseImage": BASE, "packageVersions": ["pkg @ file:///etc/passwd"]},
        "packageVersions[0]",
    ),
    (
        "duplicate package",
        {"displayName": "x", "baseImage": BASE, "packageVersions": ["Pandas", "pandas==2"]},
        "packageVersions[1]",
    ),
    (
        "package not a string",
        {"displayName": "x", "baseImage": BASE, "packageVersions": [{"name": "a"}]},
        "packageVersions[0]",
    ),
    (
        "unicode package",
        {"displayName": "x", "baseImage": BASE, "packageVersions": ["pändas"]},
        "packageVersions[0]",
    ),
    (
        "10000 packages",
        {"displayName": "x", "baseImage": BASE, "packageVersions": [f"p{i}" for i in range(10000)]},
        "packageVersions",
    ),
    (
        "package too long",
        {"displayName": "x", "baseImage": BASE, "packageVersions": ["a" * 201]},
        "packageVersions[0]",
    ),
    (
        "packageVersions string",
        {"displayName": "x", "baseImage": BASE, "packageVersions": "pandas"},
        "packageVersions",
    ),
    ("image with space", {"displayName": "x", "baseImage": "registry.example/a b:1"}, "baseImage"),
    (
        "image with scheme",
        {"displayName": "x", "baseImage": "https://registry.example/a"},
        "baseImage",
    ),
    ("image upper path", {"displayName": "x", "baseImage": "registry.example/A/b"}, "baseImage"),
    ("image list", {"displayName": "x", "baseImage": ["a"]}, "baseImage"),
    ("image too long", {"displayName": "x", "baseImage": "a/" * 200 + "b"}, "baseImage"),
    (
        "file repo",
        {"displayName": "x", "baseImage": BASE, "repoURL": "file:///etc", "pipelines": ["build"]},
        "repoURL",
    ),
    (
        "http repo",
        {"displayName": "x", "baseImage": BASE, "repoURL": "http://git.example/a"},
        "repoURL",
    ),
    (
        "userinfo repo",
        {"displayName": "x", "baseImage": BASE, "repoURL": "https://u:p@git.example/a"},
        "repoURL",
    ),
    (
        "repo no path",
        {"displayName": "x", "baseImage": BASE, "repoURL": "https://git.example"},
        "repoURL",
    ),
    (
        "repo with space",
        {"displayName": "x", "baseImage": BASE, "repoURL": "https://git.example/a b"},
        "repoURL",
    ),
    (
        "bad ref",
        {"displayName": "x", "baseImage": BASE, "repoURL": "https://git.example/a", "ref": "-x"},
        "ref",
    ),
    (
        "ref without repo",
        {"displayName": "x", "baseImage": BASE, "packageVersions": ["a"], "ref": "main"},
        "ref",
    ),
    (
        "git with packages",
        {
            "displayName": "x",
            "baseImage": BASE,
            "repoURL": "https://git.example/a",
            "packageVersions": ["a"],
        },
        "packageVersions",
    ),
    (
        "python 2",
        {
            "displayName": "x",
            "runtimeEnvironment": {"pythonVersion": "2.7"},
            "packageVersions": ["a"],
        },
        "runtimeEnvironment.pythonVersion",
    ),
    (
        "python number",
        {
            "displayName": "x",
            "runtimeEnvironment": {"pythonVersion": 3.11},
            "packageVersions": ["a"],
        },
        "runtimeEnvironment.pythonVersion",
    ),
    (
        "runtime junk key",
        {
            "displayName": "x",
            "runtimeEnvironment": {"pythonVersion": "3.11", "cmd": "sh"},
            "packageVersions": ["a"],
        },
        "runtimeEnvironment",
    ),
    (
        "runtime list",
        {"displayName": "x", "runtimeEnvironment": ["3.11"], "packageVersions": ["a"]},
        "runtimeEnvironment",
    ),
    ("ttl bool", {"displayName": "x", "baseImage": BASE, "ttl": True}, "ttl"),
    ("ttl small", {"displayName": "x", "baseImage": BASE, "ttl": 5}, "ttl"),
    ("ttl str", {"displayName": "x", "baseImage": BASE, "ttl": "86400"}, "ttl"),
    (
        "description long",
        {"displayName": "x", "baseImage": BASE, "description": "d" * 501},
        "description",
    ),
]


@pytest.mark.parametrize("label,body,field", BAD, ids=[b[0] for b in BAD])
def test_bad_bodies(label, body, field):
    with pytest.raises(BuildRequestError) as info:
        ok(body)
    err = info.value
    assert err.status == 400
    assert field in err.fields, err.fields
    assert err.to_json()["fields"] == err.fields


def test_creator_required():
    with pytest.raises(BuildRequestError) as info:
        validate_request({"displayName": "x", "baseImage": BASE}, creator="")
    assert "creator" in info.value.fields


@pytest.mark.parametrize(
    "raw,status",
    [
        (b"x" * (MAX_BODY_BYTES + 1), 413),
        (b"{not json", 400),
        (b"\xff\xfe", 400),
        (b"[" * 30000 + b"]" * 30000, 400),
    ],
)
def test_parse_body_refuses(raw, status):
    with pytest.raises(BuildRequestError) as info:
        parse_body(raw)
    assert info.value.status == status


def test_parse_body_ok():
    assert parse_body(b'{"displayName": "x"}') == {"displayName": "x"}
    assert parse_body(b"displayName: x\n", "application/yaml") == {"displayName": "x"}


@pytest.mark.parametrize(
    "raw,ctype,status",
    [
        (b"{}", "text/plain", 415),
        (b"{}", "", 415),
        (b"a: &x [1]\nb: *x\n", "application/yaml", 400),  # aliases: no expansion bombs
        (b"a: !!python/object:os.system {}\n", "application/yaml", 400),
        (b"a: 1\n---\nb: 2\n", "application/yaml", 400),
        (b"a: [\n", "text/yaml", 400),
    ],
)
def test_parse_body_refuses_media(raw, ctype, status):
    with pytest.raises(BuildRequestError) as info:
        parse_body(raw, ctype)
    assert info.value.status == status


FIXTURES = Path(__file__).parent / "fixtures" / "customnbimages"

# the CNBi design's three samples, verbatim: (file, kind, pipelines, warning words)
DESIGN_SAMPLES = [
    ("design-sample-package-list.yaml", "package-list", ("prepare", "build"), ["creator"]),
    ("design-sample-import.yaml", "import", ("import",), ["creator"]),
    (
        "design-draft-action-build.yaml",
        "package-list",
        ("prepare", "build"),
        ["creator", "pipelines: [prepare, build]", "write displayName"],
    ),
]


@pytest.mark.parametrize("file,kind,pipelines,warned", DESIGN_SAMPLES)
@pytest.mark.parametrize("shape", ["manifest yaml", "manifest json", "spec json"])
def test_design_samples_accepted_as_written(file, kind, pipelines, warned, shape):
    text = (FIXTURES / file).read_text()
    manifest = yaml.safe_load(text)
    if shape == "manifest yaml":
        body = parse_body(text.encode(), "application/yaml")
    elif shape == "manifest json":
        body = parse_body(json.dumps(manifest).encode())
    else:
        body = parse_body(json.dumps(manifest["spec"]).encode())
    req = ok(body)
    spec = manifest["spec"]
    assert (req.kind, req.pipelines) == (kind, pipelines)
    assert req.display_name == spec.get("displayName", spec.get("name"))
    assert req.creator == "author"  # never the sample's creator
    assert req.package_versions == tuple(spec.get("packageVersions", ()))
    assert req.base_image == spec.get("baseImage", "")
    if "runtimeEnvironment" in spec:
        assert req.runtime_environment.to_spec() == spec["runtimeEnvironment"]
    if shape != "spec json":  # metadata.name seeds the generated name
        assert req.name == manifest["metadata"]["name"] + "-abcde"
    for words in warned:
        assert any(words in w for w in req.warnings), req.warnings
    cr = customnbimage(req, "ns")
    assert cr["spec"]["pipelines"] == list(pipelines)
    assert "action" not in cr["spec"] and "name" not in cr["spec"]


@pytest.mark.parametrize(
    "ref,valid",
    [
        ("ubuntu", True),
        ("ubuntu:22.04", True),
        ("registry.example/org/img:tag", True),
        ("registry.example:5000/org/img@sha256:" + "0" * 64, True),
        ("registry.example/org/img:tag@sha256:" + "0" * 64, True),
        ("localhost/a__b/c-d.e", True),
        ("", False),
        ("a b", False),
        ("docker://registry.example/a", False),
        ("registry.example/Org/img", False),
        ("img:", False),
        ("img@sha256:xyz", False),
        ("img:-bad", False),
        ("/abs", False),
        ("a/../b", False),
        ("img\n", False),
        # one grammar for builds and image sources: only sha256/sha512 digests
        ("registry.example/org/img@sha512:" + "0" * 128, True),
        ("registry.example/org/img@md5:" + "0" * 32, False),
        ("registry.example/org/img@sha256+b64:" + "0" * 64, False),
        ("registry.example/" + "a" * 240, False),  # repository over 255 characters
    ],
)
def test_image_refs(ref, valid):
    assert is_image_ref(ref) is valid


def test_quota():
    check_quota(1, 2)
    with pytest.raises(BuildQuotaExceeded) as info:
        check_quota(2, 2)
    assert info.value.status == 429
    check_quota(100, -1)  # negative = unlimited
