"""ImageStream and static-config parsing: every fixture, then nasty variants."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import pytest
import yaml

from cnbi_spawner.images.fields import normalize_notebook_path
from cnbi_spawner.images.imagestreams import parse_imagestream, parse_imagestream_report
from cnbi_spawner.images.model import Package
from cnbi_spawner.images.static import parse_static_report
from cnbi_spawner.launch_grammar import split_image_ref

FIXTURES = Path(__file__).parent / "fixtures" / "imagestreams"
DS = "jupyter-datascience-notebook"
DS_NEW = (
    "registry.example/opendatahub/odh-workbench-jupyter-datascience-cpu-py311-ubi9"
    "@sha256:97ac518d5982f0ad438b6c33f36162715be651fb4dbe1a80f972712997c0de22"
)


def load(name: str) -> dict:
    return yaml.safe_load((FIXTURES / f"{name}.yaml").read_text())


# fixture -> {key: (pinned, recommended, outdated, launchable)}, skipped keys
EXPECTED = {
    "jupyter-datascience-notebook": (
        {
            f"{DS}:2025.1": (True, True, False, True),
            f"{DS}:2024.2": (True, False, True, False),
        },
        [],
    ),
    "jupyter-minimal-gpu-notebook-ordered": (
        {
            "jupyter-minimal-gpu-notebook:2025.1": (True, True, False, True),
            "jupyter-minimal-gpu-notebook:2024.2": (True, False, False, True),
        },
        [],
    ),
    "jupyter-trustyai-notebook-malformed-deps": (
        {"jupyter-trustyai-notebook:2025.1": (True, True, False, True)},
        [],
    ),
    "cnbi-import-s2i-minimal-import": (
        {"cnbi-import-s2i-minimal-import:v0.2.2": (True, False, False, True)},
        [],
    ),
    "custom-my-scipy-notebook-failed-import": ({}, ["custom-my-scipy-notebook:2024-13-01"]),
    "runtime-datascience-not-notebook": ({}, ["runtime-datascience"]),
}


def test_every_fixture_is_covered():
    assert {p.stem for p in FIXTURES.glob("*.yaml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture(name):
    expected, skipped = EXPECTED[name]
    result = parse_imagestream_report(load(name))
    got = {i.key: (i.pinned, i.recommended, i.outdated, i.launchable) for i in result.images}
    assert got == expected
    assert [k for k, _ in result.skipped] == skipped
    for image in result.images:
        assert "@sha256:" in image.image
        assert image.image.startswith("registry.example/")
        assert image.source == f"imagestream:opendatahub/{image.stream}"
        assert image.namespace == "opendatahub"


def test_datascience_details():
    by_key = {i.key: i for i in parse_imagestream(load("jupyter-datascience-notebook"))}
    new = by_key[f"{DS}:2025.1"]
    assert new.image == DS_NEW  # items[0], the newest of two
    assert new.display_name == "Jupyter | Data Science | CPU | Python 3.11"
    assert new.order == 7
    assert new.software == (Package("Python", "v3.11"),)
    assert new.python_deps[0] == Package("JupyterLab", "4.4")
    assert len(new.python_deps) == 17
    assert new.created == "2025-08-27T14:05:10Z"


def test_order_and_older_recommended_spelling():
    images = parse_imagestream(load("jupyter-minimal-gpu-notebook-ordered"))
    assert {i.order for i in images} == {3}
    assert [i.tag for i in images if i.recommended] == ["2025.1"]


def test_malformed_deps_is_read_best_effort_and_warned(caplog):
    with caplog.at_level(logging.WARNING):
        (image,) = parse_imagestream(load("jupyter-trustyai-notebook-malformed-deps"))
    assert image.launchable
    assert len(image.python_deps) == 22
    assert "notebook-python-dependencies: invalid JSON" in caplog.text


def test_failed_import_reason():
    result = parse_imagestream_report(load("custom-my-scipy-notebook-failed-import"))
    assert result.skipped == [("custom-my-scipy-notebook:2024-13-01", "import failed: NotFound")]


def test_import_phase_creator_and_visible_key():
    (image,) = parse_imagestream(load("cnbi-import-s2i-minimal-import"))
    assert image.phase == "Succeeded" and image.creator == "thoth-station"
    assert Package("jupyterhub", "1.3.0") in image.python_deps


# --- nasty variants of the datascience stream -------------------------------------------------


def ds(mutate) -> dict:
    obj = copy.deepcopy(load("jupyter-datascience-notebook"))
    mutate(obj)
    return obj


def tag_ann(obj, tag="2025.1") -> dict:
    return next(t for t in obj["spec"]["tags"] if t["name"] == tag)["annotations"]


def set_(path, value):
    def mutate(obj):
        target = obj
        for p in path[:-1]:
            target = target[p]
        target[path[-1]] = value

    return mutate


def status_tag(obj, tag="2025.1") -> dict:
    return next(t for t in obj["status"]["tags"] if t["tag"] == tag)


CNBI = "cnbi.meteor.zone/"
SW = "opendatahub.io/notebook-software"
HUGE = "x" * 1_000_000

# (id, mutate, check(images, result))
VARIANTS = [
    (
        "bad-json-software",
        lambda o: tag_ann(o).__setitem__(SW, "[{not json"),
        lambda imgs, r: len(imgs) == 2 and imgs[1].software == () and r.problems,
    ),
    (
        "software-not-a-list",
        lambda o: tag_ann(o).__setitem__(SW, '{"name": "Python"}'),
        lambda imgs, r: imgs[1].software == () and "expected a JSON list" in r.problems[0],
    ),
    (
        "non-int-order",
        set_(["metadata", "annotations", "opendatahub.io/notebook-image-order"], "seven"),
        lambda imgs, r: {i.order for i in imgs} == {100} and "not an integer" in r.problems[0],
    ),
    (
        "missing-status",
        lambda o: o.pop("status"),
        lambda imgs, r: imgs == [] and len(r.skipped) == 2,
    ),
    (
        "status-null",
        set_(["status"], None),
        lambda imgs, r: imgs == [],
    ),
    (
        "items-null",
        lambda o: status_tag(o).__setitem__("items", None),
        lambda imgs, r: [i.tag for i in imgs] == ["2024.2"] and r.skipped[0][1] == "import failed",
    ),
    (
        "items-empty",
        lambda o: status_tag(o).__setitem__("items", []),
        lambda imgs, r: [i.tag for i in imgs] == ["2024.2"],
    ),
    (
        "no-label",
        lambda o: o["metadata"]["labels"].pop("opendatahub.io/notebook-image"),
        lambda imgs, r: imgs == [],
    ),
    (
        "label-false",
        set_(["metadata", "labels", "opendatahub.io/notebook-image"], "false"),
        lambda imgs, r: imgs == [],
    ),
    (
        "empty-docker-image-repository",
        set_(["status", "dockerImageRepository"], ""),
        lambda imgs, r: len(imgs) == 2 and all(i.pinned for i in imgs),
    ),
    (
        "no-digest-falls-back-to-status-repo",
        lambda o: status_tag(o)["items"][0].pop("dockerImageReference"),
        lambda imgs, r: (
            imgs[1].image
            == (
                "registry.example/opendatahub/jupyter-datascience-notebook"
                "@sha256:97ac518d5982f0ad438b6c33f36162715be651fb4dbe1a80f972712997c0de22"
            )
            and imgs[1].pinned
        ),
    ),
    (
        "no-digest-at-all-falls-back-to-repo-tag-unpinned",
        lambda o: [status_tag(o)["items"][0].pop(k) for k in ("dockerImageReference", "image")],
        lambda imgs, r: (
            imgs[1].image == "registry.example/opendatahub/jupyter-datascience-notebook:2025.1"
            and not imgs[1].pinned
            and "no digest" in r.problems[0]
        ),
    ),
    (
        "no-digest-no-repo-falls-back-to-from-name",
        lambda o: (
            [status_tag(o)["items"][0].pop(k) for k in ("dockerImageReference", "image")],
            o["status"].__setitem__("dockerImageRepository", ""),
        ),
        lambda imgs, r: (
            imgs[1].image.startswith("registry.example/opendatahub/odh-workbench")
            and not imgs[1].pinned
        ),
    ),
    (
        "hostile-image-reference-is-skipped",
        lambda o: status_tag(o)["items"][0].__setitem__(
            "dockerImageReference", "evil image; rm -rf /"
        ),
        lambda imgs, r: (
            imgs[1].image.startswith("registry.example/opendatahub/jupyter-datascience")
            and imgs[1].pinned
            and "not a valid image reference" in r.problems[0]
        ),
    ),
    (
        "huge-annotations",
        lambda o: (
            tag_ann(o).__setitem__(SW, "[" + HUGE + "]"),
            o["metadata"]["annotations"].__setitem__("opendatahub.io/notebook-image-name", HUGE),
            o["metadata"]["annotations"].__setitem__(CNBI + "course-aliases", HUGE),
        ),
        lambda imgs, r: (
            len(imgs) == 2
            and len(imgs[0].display_name) <= 256
            and imgs[0].aliases == ()
            and any("too long" in p for p in r.problems)
        ),
    ),
    (
        "control-characters-in-name",
        set_(["metadata", "annotations", "opendatahub.io/notebook-image-name"], "a\x00b\nc"),
        lambda imgs, r: imgs[0].display_name == "a b c",
    ),
    (
        "annotations-not-strings",
        lambda o: o["metadata"].__setitem__(
            "annotations", {"opendatahub.io/notebook-image-order": 5, CNBI + "notebooks": ["a"]}
        ),
        lambda imgs, r: imgs[0].order == 5 and imgs[0].notebooks == (),
    ),
    (
        "cnbi-annotations-on-stream-tag-wins",
        lambda o: (
            o["metadata"]["annotations"].update(
                {
                    CNBI + "course-aliases": "Intro, uai.intro ,bad alias!",
                    CNBI + "notebooks": '["lectures/l1.ipynb", "../etc/passwd", "/abs", "a\\\\b"]',
                    CNBI + "default-size": "Small",
                    CNBI + "requires-gpu": "true",
                }
            ),
            tag_ann(o).update({CNBI + "default-size": "large", CNBI + "requires-gpu": "false"}),
        ),
        lambda imgs, r: (
            imgs[0].aliases == ("intro", "uai.intro")
            and imgs[0].notebooks == ("lectures/l1.ipynb",)
            and (imgs[0].default_size, imgs[1].default_size) == ("small", "large")
            and (imgs[0].requires_gpu, imgs[1].requires_gpu) == (True, False)
            and sum("skipped" in p for p in r.problems) >= 4
        ),
    ),
    (
        "aliases-as-json-list",
        lambda o: tag_ann(o).__setitem__(CNBI + "course-aliases", '["A", "b", 3]'),
        lambda imgs, r: imgs[1].aliases == ("a", "b"),
    ),
    (
        "unknown-phase-ignored-failed-phase-not-launchable",
        set_(["metadata", "annotations", "opendatahub.io/notebook-image-phase"], "Failed"),
        lambda imgs, r: len(imgs) == 2 and not any(i.launchable for i in imgs),
    ),
    (
        "default-image-on-stream-older-spelling",
        set_(["metadata", "annotations", "opendatahub.io/default-image"], "true"),
        lambda imgs, r: all(i.default for i in imgs),
    ),
    (
        "spec-tags-not-a-list",
        set_(["spec", "tags"], "nope"),
        lambda imgs, r: len(imgs) == 2 and imgs[0].software == (),
    ),
    (
        "status-tag-without-name",
        lambda o: status_tag(o).pop("tag"),
        lambda imgs, r: [i.tag for i in imgs] == ["2024.2"],
    ),
    (
        "hostile-tag-name-skipped",
        lambda o: status_tag(o).__setitem__("tag", "2025.1 <script>"),
        lambda imgs, r: (
            [i.tag for i in imgs] == ["2024.2"]
            and "invalid tag name" in [why for _, why in r.skipped]
        ),
    ),
    (
        "javascript-url-dropped",
        set_(["metadata", "annotations", "opendatahub.io/notebook-image-url"], "javascript:x()"),
        lambda imgs, r: imgs[0].url == "",
    ),
    (
        "bad-stream-name",
        set_(["metadata", "name"], "Bad Name"),
        lambda imgs, r: imgs == [] and "valid name" in r.problems[0],
    ),
    (
        "too-many-tags-capped",
        lambda o: o["status"]["tags"].extend(
            {"tag": f"t{i}", "items": o["status"]["tags"][0]["items"]} for i in range(600)
        ),
        lambda imgs, r: len(imgs) == 500 and "only the first 500" in r.problems[0],
    ),
    (
        "not-a-dict",
        lambda o: o.clear(),
        lambda imgs, r: imgs == [],
    ),
]


@pytest.mark.parametrize("mutate,check", [v[1:] for v in VARIANTS], ids=[v[0] for v in VARIANTS])
def test_variant(mutate, check):
    obj = ds(mutate)
    result = parse_imagestream_report(obj)
    images = sorted(result.images, key=lambda i: i.tag)
    assert check(images, result), (images, result.problems, result.skipped)


@pytest.mark.parametrize("obj", [None, [], "x", 3, {"metadata": None}, {"metadata": {"name": 5}}])
def test_garbage_objects(obj):
    assert parse_imagestream(obj) == []


# --- field validators -----------------------------------------------------------------------

REFS = [
    ("registry.example/c/u@sha256:" + "a" * 64, ("registry.example/c/u", "", "sha256:" + "a" * 64)),
    ("registry.example:5000/a/b:v1", ("registry.example:5000/a/b", "v1", "")),
    ("ubuntu", ("ubuntu", "", "")),
    ("a/b:t@sha256:" + "0" * 64, ("a/b", "t", "sha256:" + "0" * 64)),
    ("UPPER/case", None),
    ("a b", None),
    ("a/b:", None),
    ("a/b@sha256:short", None),
    ("a" * 600, None),
    ("", None),
    (None, None),
    ("a/b\n", None),
]  # fmt: skip


@pytest.mark.parametrize("ref,expected", REFS)
def test_split_image_ref(ref, expected):
    assert split_image_ref(ref) == expected


PATHS = [
    ("lectures/l1.ipynb", "lectures/l1.ipynb"),
    ("./a//b.ipynb", "a/b.ipynb"),
    ("../x", None),
    ("a/../../x", None),
    ("/etc/passwd", None),
    ("a\\b", None),
    ("a\x00b", None),
    ("~/x", None),
    ("", None),
    ("é" * 600, None),
]


@pytest.mark.parametrize("path,expected", PATHS)
def test_notebook_paths(path, expected):
    assert normalize_notebook_path(path) == expected


# --- static config ----------------------------------------------------------------------------

DIGEST = "@sha256:" + "b" * 64
STATIC = [
    (
        "mit-ol-dict",
        {"Clustering_And_Descriptive_AI": "registry.example/mitol/clustering:latest"},
        [("clustering_and_descriptive_ai", False)],
        0,
    ),
    (
        "pinned",
        {"uai_source-uai.intro": "registry.example/courses/uai-intro" + DIGEST},
        [("uai_source-uai.intro", True)],
        0,
    ),
    (
        "bad-image-dropped",
        {"ok": "registry.example/a:1", "bad": "not an image!"},
        [("ok", False)],
        1,
    ),
    ("bad-name-dropped", {"has space": "registry.example/a:1"}, [], 1),
    (
        "rich-list",
        [
            {
                "name": "Intro",
                "image": "registry.example/a" + DIGEST,
                "aliases": ["uai", "INTRO"],
                "notebooks": ["l1.ipynb", "../x"],
                "default_size": "small",
                "requires_gpu": True,
                "order": "x",
                "colour": "red",
            }
        ],
        [("intro", True)],
        3,
    ),
    (
        "duplicate",
        [{"name": "a", "image": "r/a"}, {"name": "A", "image": "r/b"}],
        [("a", False)],
        1,
    ),
    ("not-a-dict-entry", ["x", {"name": "a", "image": "r/a"}], [("a", False)], 1),
    ("wrong-type", "registry.example/a", [], 1),
    ("none", None, [], 0),
]


@pytest.mark.parametrize(
    "config,expected,n_problems", [s[1:] for s in STATIC], ids=[s[0] for s in STATIC]
)
def test_static(config, expected, n_problems):
    images, problems = parse_static_report(config)
    assert [(i.key, i.pinned) for i in images] == expected
    assert len(problems) == n_problems, problems
    assert all(i.source == "static" and i.launchable for i in images)


def test_static_rich_fields():
    (image,), _ = parse_static_report(STATIC[4][1])
    assert image.aliases == ("uai",)  # the key itself is not an alias
    assert image.notebooks == ("l1.ipynb",)
    assert (image.default_size, image.requires_gpu, image.order) == ("small", True, 100)
    assert image.display_name == "Intro"


def test_static_json_roundtrip_from_file_form():
    config = json.loads(json.dumps(STATIC[4][1]))
    assert parse_static_report(config)[0][0].key == "intro"
