"""``cnbi-hub images``: table, JSON and z2jh prePuller output (static-only, no cluster)."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from cnbi_spawner.cli import main as cnbi_hub
from cnbi_spawner.images.cli import prepuller_values, safe_name
from cnbi_spawner.images.model import KnownImage

DIGEST = "sha256:" + "c" * 64
STATIC = [
    {"name": "Intro", "image": f"registry.example/courses/intro@{DIGEST}", "aliases": ["uai"]},
    {"name": "old", "image": "registry.example/courses/old:v1", "outdated": True},
    {"name": "plain", "image": "registry.example/courses/plain"},
    {"name": "same-image", "image": f"registry.example/courses/intro@{DIGEST}"},
]


@pytest.fixture
def static_file(tmp_path):
    path = tmp_path / "images.yaml"
    path.write_text(yaml.safe_dump(STATIC))
    return path


def run(capsys, *args) -> tuple[int, str]:
    code = cnbi_hub(["images", "--no-watch", *args])
    return code, capsys.readouterr().out


def test_table(capsys, static_file):
    code, out = run(capsys, "--static", str(static_file))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["KEY", "ALIASES", "IMAGE", "PINNED", "FLAGS"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {"intro", "old", "plain", "same-image"}
    assert "uai" in rows["intro"] and " yes " in rows["intro"]
    assert rows["old"].rstrip().endswith("outdated,NOT-LAUNCHABLE")
    assert " no " in rows["plain"]


def test_json(capsys, static_file):
    code, out = run(capsys, "--static", str(static_file), "--json")
    data = json.loads(out)
    assert code == 0 and data["status"]["synced"] is True
    by_key = {i["key"]: i for i in data["images"]}
    assert by_key["intro"]["pinned"] and by_key["intro"]["launchable"]
    assert by_key["old"]["launchable"] is False


def test_prepuller(capsys, static_file):
    code, out = run(capsys, "--static", str(static_file), "--prepuller")
    extra = yaml.safe_load(out)["prePuller"]["extraImages"]
    assert code == 0
    # launchable only, one entry per distinct image, digest kept (z2jh renders name:tag)
    assert extra == {
        "intro": {"name": "registry.example/courses/intro", "tag": f"latest@{DIGEST}"},
        "plain": {"name": "registry.example/courses/plain", "tag": "latest"},
    }


def test_bad_static_file_is_a_clear_error(capsys, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    assert cnbi_hub(["images", "--no-watch", "--static", str(path)]) == 2
    assert "cnbi-hub images:" in capsys.readouterr().err


def test_unreachable_cluster_exits_1(capsys, tmp_path):
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
    )
    code = cnbi_hub(["images", "--kubeconfig", str(kubeconfig), "--timeout", "1"])
    assert code == 1
    assert "could not list ImageStreams" in capsys.readouterr().err


def _img(key: str) -> KnownImage:
    return KnownImage(key=key, image="registry.example/a", display_name=key)


@pytest.mark.parametrize(
    "key",
    ["jupyter-datascience-notebook:2025.1", "UPPER_case.Name", ":::", "x" * 200, "a" * 52],
)
def test_safe_name_is_a_valid_container_name_suffix(key):
    name = safe_name(_img(key), set())
    assert re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", name)
    assert len("image-pull-" + name) <= 63


def test_safe_names_are_unique():
    taken: set[str] = set()
    names = {safe_name(_img(k), taken) for k in ["a:b", "a.b", "a-b", "x" * 100, "x" * 101]}
    assert len(names) == 5


def test_prepuller_values_skip_unlaunchable():
    images = [
        KnownImage(key="a", image=f"registry.example/a:v1@{DIGEST}", display_name="a"),
        KnownImage(key="b", image="registry.example/b:v2", display_name="b", phase="Failed"),
    ]
    assert prepuller_values(images) == {
        "prePuller": {"extraImages": {"a": {"name": "registry.example/a", "tag": f"v1@{DIGEST}"}}}
    }
