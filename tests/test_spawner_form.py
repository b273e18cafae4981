"""The spawn form and the error mapping of ``spawner.py`` (pure parts, no hub)."""

from __future__ import annotations

import html.parser

import pytest

from cnbi_spawner.errors import RegistryNotReady, SelectionError, Throttled, UnknownImage
from cnbi_spawner.hub_errors import LaunchRefused
from cnbi_spawner.images.model import KnownImage
from cnbi_spawner.sizes import ResourcePolicy
from cnbi_spawner.spawner import options_form_html

HOSTILE = '<script>alert("x")</script>&"\''


class Collector(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse(markup: str) -> Collector:
    c = Collector()
    c.feed(markup)
    return c


IMAGES = [
    KnownImage(key="uai-intro:2025.1", image="registry.example/a@sha256:" + "a" * 64,
               display_name="UAI Intro", description="Intro to AI"),
    KnownImage(key="evil:1", image="registry.example/b:1", display_name=HOSTILE,
               description=HOSTILE),
]  # fmt: skip
SIZES = list(ResourcePolicy().launch_policy().packages.values())


def test_form_lists_images_and_sizes_escaped():
    markup = options_form_html(
        IMAGES, SIZES, selected_course="evil:1", selected_size="medium", notebook=HOSTILE
    )
    assert "<script>" not in markup
    doc = parse(markup)
    tags = [t for t, _ in doc.tags]
    assert "script" not in tags
    radios = [a for t, a in doc.tags if t == "input" and a.get("type") == "radio"]
    assert [r["value"] for r in radios] == ["uai-intro:2025.1", "evil:1"]
    assert [("checked" in r) for r in radios] == [False, True]
    options = [a for t, a in doc.tags if t == "option"]
    assert [o["value"] for o in options] == ["tiny", "small", "medium", "large"]
    assert [("selected" in o) for o in options] == [False, False, True, False]
    [notebook] = [a for t, a in doc.tags if t == "input" and a.get("name") == "notebook"]
    assert notebook["value"] == HOSTILE  # the previous notebook, as an attribute value
    text = "".join(doc.text)
    assert "UAI Intro" in text and "Intro to AI" in text and HOSTILE in text  # shown as text


def test_form_defaults_and_empty_states():
    doc = parse(options_form_html(IMAGES, SIZES))
    radios = [a for t, a in doc.tags if t == "input" and a.get("type") == "radio"]
    assert "checked" in radios[0]
    options = [a for t, a in doc.tags if t == "option"]
    assert options[0]["value"] == ""  # "course default" when nothing was chosen before
    assert any(a.get("name") == "notebook" for t, a in doc.tags if t == "input")
    # never empty: an empty form makes the hub spawn with defaults after a bad query
    assert "loading" in options_form_html([], [], ready=False)
    assert "No course images" in options_form_html([], SIZES)


@pytest.mark.parametrize(
    "error,status,retry",
    [
        (SelectionError("bad <b>notebook</b>"), 400, None),
        (SelectionError("guests", status=403), 403, None),
        (UnknownImage("nope", ("uai-intro",)), 404, None),
        (RegistryNotReady(), 503, "5"),
        (Throttled("busy", retry_after=7), 429, "7"),
    ],
)
def test_http_error_carries_the_message(error, status, retry):
    http = LaunchRefused(error)
    assert http.status_code == status
    assert http.jupyterhub_message == error.message
    assert getattr(http, "headers", {}).get("Retry-After") == retry
    assert error.message in http.log_message % http.args
