"""The notebook index (pure): the pod, its output, the annotation, the registry's use of it."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from cnbi_spawner.images.imagestreams import parse_imagestream
from cnbi_spawner.images.model import KnownImage
from cnbi_spawner.images.notebook_index import (
    ANNOTATION,
    MARKER,
    MAX_NOTEBOOKS,
    SCRIPT,
    NotebookIndex,
    digest_of,
    index_pod,
    parse_output,
    read_annotation,
)
from cnbi_spawner.service.indexer import needs_index

D1, D2 = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def test_the_script_lists_the_folders_notebooks(tmp_path):
    for path in ["a.ipynb", "x/y/b.ipynb", "x/notes.md", ".hidden/c.ipynb",
                 "x/.ipynb_checkpoints/b-checkpoint.ipynb", "node_modules/d.ipynb",
                 "deep/1/2/3/4/5/6/7/8/9/e.ipynb"]:  # fmt: skip
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("{}")
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    index = parse_output(D1, out)
    assert index.notebooks == ("a.ipynb", "x/y/b.ipynb") and index.restricts


@pytest.mark.parametrize(
    "text,notebooks,truncated,error",
    [
        (f'noise\n{MARKER} {{"notebooks": ["a.ipynb", "b/c.ipynb"]}}\n', ("a.ipynb", "b/c.ipynb"),
         False, ""),
        (f'{MARKER} {{"notebooks": ["../etc/x.ipynb", "/abs.ipynb", "ok.ipynb", "ok.ipynb", 3, '
         f'".git/h.ipynb"]}}', ("ok.ipynb",), False, ""),
        (f'{MARKER} {{"notebooks": [], "truncated": true}}', (), True, ""),
        (f"{MARKER} not json", (), False, "printed no index"),
        ("Traceback (most recent call last): ...", (), False, "printed no index"),
        (f'{MARKER} ["a.ipynb"]', (), False, "printed no index"),
        ("", (), False, "printed no index"),
    ],
)  # fmt: skip
def test_output_parsing(text, notebooks, truncated, error):
    index = parse_output(D1, text)
    assert (index.notebooks, index.truncated) == (notebooks, truncated)
    assert error in index.error if error else not index.error


def test_output_is_bounded():
    many = [f"n{i}.ipynb" for i in range(MAX_NOTEBOOKS + 50)]
    index = parse_output(D1, f"{MARKER} " + json.dumps({"notebooks": many}))
    assert len(index.notebooks) == MAX_NOTEBOOKS and index.truncated and not index.restricts
    long = ["d/" * 400 + f"{i}.ipynb" for i in range(200)]  # ~800 bytes each
    index = parse_output(D1, f"{MARKER} " + json.dumps({"notebooks": long}))
    assert index.truncated and len(index.to_annotation()) < 70 * 1024


def test_annotation_round_trip_and_hostile_values():
    index = NotebookIndex(D1, ("a.ipynb", "b/c.ipynb"))
    assert read_annotation(index.to_annotation()) == index
    failed = NotebookIndex(D1, error="boom")
    assert read_annotation(failed.to_annotation()) == failed and not failed.restricts
    for bad in [None, 3, "", "{", "[]", '{"digest": "md5:x"}', '{"notebooks": ["a.ipynb"]}',
                "x" * 300_000]:  # fmt: skip
        assert read_annotation(bad) is None
    assert read_annotation(json.dumps({"digest": D1, "notebooks": "a.ipynb"})).notebooks == ()


def test_the_pod_is_bounded_and_tokenless():
    pod = index_pod(
        name="cnbi-index-x",
        namespace="ns",
        image_ref=f"r/i@{D1}",
        image_key="i:1",
        deadline_seconds=60,
        cpu="250m",
        memory="128Mi",
        root="/home/jovyan",
    )
    spec = pod["spec"]
    (c,) = spec["containers"]
    assert c["image"] == f"r/i@{D1}" and c["command"][:2] == ["python3", "-c"]
    assert spec["restartPolicy"] == "Never" and spec["activeDeadlineSeconds"] == 60
    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False
    assert c["resources"]["limits"] == {"cpu": "250m", "memory": "128Mi"}
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"name": "CNBI_INDEX_ROOT", "value": "/home/jovyan"} in c["env"]
    assert "ports" not in c


def stream(tag_annotations: dict, digest: str = D1) -> dict:
    return {
        "metadata": {"name": "s", "namespace": "ns",
                     "labels": {"opendatahub.io/notebook-image": "true"}},
        "spec": {"tags": [{"name": "v1", "annotations": tag_annotations}]},
        "status": {"tags": [{"tag": "v1", "items": [
            {"dockerImageReference": f"r/s@{digest}", "image": digest}]}]},
    }  # fmt: skip


@pytest.mark.parametrize(
    "annotations,notebooks,indexed",
    [
        ({ANNOTATION: NotebookIndex(D1, ("a.ipynb",)).to_annotation()}, ("a.ipynb",), True),
        ({ANNOTATION: NotebookIndex(D2, ("a.ipynb",)).to_annotation()}, (), False),  # stale
        ({ANNOTATION: NotebookIndex(D1, ("a.ipynb",), truncated=True).to_annotation()}, (), False),
        ({ANNOTATION: NotebookIndex(D1, error="x").to_annotation()}, (), False),
        ({ANNOTATION: NotebookIndex(D1).to_annotation()}, (), False),  # none found
        ({ANNOTATION: "{garbage"}, (), False),
        ({ANNOTATION: NotebookIndex(D1, ("a.ipynb",)).to_annotation(),
          "cnbi.meteor.zone/notebooks": '["declared.ipynb"]'}, ("declared.ipynb",), False),
    ],
)  # fmt: skip
def test_the_registry_uses_a_current_index_like_a_declared_list(annotations, notebooks, indexed):
    (image,) = parse_imagestream(stream(annotations))
    assert (image.notebooks, image.notebooks_indexed) == (notebooks, indexed)
    assert image.digest == D1


def test_which_images_need_an_index():
    base = KnownImage(key="s:v1", image=f"r/s@{D1}", display_name="s", pinned=True, digest=D1,
                      source="imagestream:ns/s", stream="s", tag="v1")  # fmt: skip
    assert needs_index(base)
    assert not needs_index(replace(base, indexed_digest=D1))  # done (or failed) for this digest
    assert needs_index(replace(base, indexed_digest=D2))  # a new digest
    assert not needs_index(replace(base, notebooks=("x.ipynb",)))  # declared
    assert not needs_index(replace(base, digest="", pinned=False))  # nothing to pin it to
    assert not needs_index(replace(base, source="static"))
    assert not needs_index(replace(base, outdated=True))
    assert digest_of(f"r/s@{D1}") == D1 and digest_of("r/s:v1") == ""
