"""The catalog's launch-link builder (pure) and the image JSON view."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest

from cnbi_spawner.errors import BadSignature
from cnbi_spawner.images.model import KnownImage, Package
from cnbi_spawner.service.catalog import LinkRequest, build_link, image_json
from cnbi_spawner.signing import verify_params

INTRO = KnownImage(
    key="uai-intro:2024",
    image="registry.example/courses/uai-intro@sha256:" + "a" * 64,
    display_name="UAI intro",
    pinned=True,
    notebooks=("lectures/lecture1/mod5_lec1.ipynb", "lectures/a b.ipynb"),
    software=(Package("Python", "3.11"),),
    python_deps=(Package("numpy", "1.26"),),
)
FREE = KnownImage(key="free:1", image="registry.example/free:1", display_name="Free")
OLD = KnownImage(key="old:1", image="registry.example/old:1", display_name="Old", outdated=True)
IMAGES = {i.key: i for i in (INTRO, FREE, OLD)}
SIZES = ["tiny", "small", "medium"]
HUB = "https://hub.example.edu/"


def link(course="", notebook="", size="", **kw):
    return build_link(LinkRequest(course, notebook, size), IMAGES.get, SIZES, hub_url=HUB, **kw)


def query(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    assert parts.scheme == "https" and parts.netloc == "hub.example.edu"
    assert parts.path == "/tmplogin"
    return {k: v[0] for k, v in parse_qs(parts.query, strict_parsing=True).items()}


@pytest.mark.parametrize(
    ("req", "expected"),
    [
        (("uai-intro:2024", "", ""), {"course": "uai-intro:2024"}),
        (
            ("uai-intro:2024", "lectures/lecture1/mod5_lec1.ipynb", "small"),
            {
                "course": "uai-intro:2024",
                "notebook": "lectures/lecture1/mod5_lec1.ipynb",
                "size": "small",
            },
        ),
        (("uai-intro:2024", "lectures/a b.ipynb", ""), {"course": "uai-intro:2024",
                                                         "notebook": "lectures/a b.ipynb"}),
        (("uai-intro:2024", "./lectures//a b.ipynb", ""), {"course": "uai-intro:2024",
                                                            "notebook": "lectures/a b.ipynb"}),
        (("free:1", "any/where.ipynb", "tiny"), {"course": "free:1",
                                                  "notebook": "any/where.ipynb", "size": "tiny"}),
    ],
)  # fmt: skip
def test_link_ok(req, expected):
    result = link(*req)
    assert result.errors == {}
    assert result.signed is False
    assert query(result.link) == expected


@pytest.mark.parametrize(
    ("req", "field"),
    [
        (("", "", ""), "course"),
        (("nope:1", "", ""), "course"),
        (("old:1", "", ""), "course"),  # outdated: not for new launches
        (("uai-intro:2024", "other.ipynb", ""), "notebook"),  # not one of the image's
        (("free:1", "../etc/passwd", ""), "notebook"),
        (("free:1", "/abs.ipynb", ""), "notebook"),
        (("free:1", "a\\b.ipynb", ""), "notebook"),
        (("free:1", "a\x00b", ""), "notebook"),
        (("free:1", "x" * 2000, ""), "notebook"),
        (("free:1", "", "huge"), "size"),
    ],
)
def test_link_refused(req, field):
    result = link(*req)
    assert result.link is None
    assert field in result.errors and result.errors[field]


def test_signed_link_verifies_and_tampering_fails():
    result = link("uai-intro:2024", "lectures/a b.ipynb", "small", signing_key="k3y", ttl=3600,
                  now=1_000_000)  # fmt: skip
    assert result.signed and result.expires == 1_003_600
    params = query(result.link)
    assert params["exp"] == "1003600" and params["sig"]
    verify_params(params, "k3y", now=1_000_100)
    with pytest.raises(BadSignature):
        verify_params({**params, "size": "medium"}, "k3y", now=1_000_100)
    with pytest.raises(BadSignature):
        verify_params(params, "k3y", now=1_003_601)  # expired


def test_image_json_is_plain_json():
    data = json.loads(json.dumps(image_json(INTRO)))
    assert data["key"] == "uai-intro:2024"
    assert data["software"] == [{"name": "Python", "version": "3.11"}]
    assert data["python_dependencies"] == [{"name": "numpy", "version": "1.26"}]
    assert data["notebooks"] == list(INTRO.notebooks)
    assert data["launchable"] is True
    assert image_json(OLD)["launchable"] is False
