"""builds/rebuild.py: which CustomNBImages a base-image change rebuilds (table tests, pure)."""

from __future__ import annotations

import pytest

from cnbi_spawner.builds.rebuild import (
    BASE_DIGEST,
    BASE_IMAGE,
    OPT_IN,
    REQUESTED_AT,
    decide,
    find_base,
    plan,
    rebuild_note,
)
from cnbi_spawner.images.model import KnownImage

A, B, C = ("sha256:" + ch * 64 for ch in "abc")
BASE = KnownImage(
    key="base:latest",
    image=f"registry.example/lab/base@{B}",
    display_name="Base",
    stream="base",
    tag="latest",
    pinned=True,
    source="imagestream:default/base",
)
BASE_OLD = KnownImage(
    **{**{f: getattr(BASE, f) for f in BASE.__slots__}, "image": f"registry.example/lab/base@{A}"}
)
OTHER = KnownImage(
    key="other:3.11",
    image=f"registry.example/lab/other@{C}",
    display_name="Other",
    stream="other",
    tag="3.11",
    pinned=True,
    source="imagestream:default/other",
)
FLOATING = KnownImage(key="float", image="registry.example/lab/float:1", display_name="F")
IMAGES = [BASE, OTHER, FLOATING]
DONE = {"phase": "Ready"}
RUNNING = {"phase": "Building"}


def cr(name="c1", base="base:latest", ann=None, status=DONE, opt="true", key="baseImage"):
    annotations = dict(ann or {})
    if opt is not None:
        annotations[OPT_IN] = opt
    return {
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": {"displayName": name, "pipelines": ["build"], key: base},
        "status": status,
    }


@pytest.mark.parametrize(
    ("ref", "recorded", "want"),
    [
        ("base:latest", "", "base:latest"),
        ("BASE:LATEST", "", "base:latest"),
        ("base", "", "base:latest"),
        ("other", "", "other:3.11"),  # only tag of the stream
        ("registry.example/lab/base:latest", "", "base:latest"),
        ("registry.example/lab/base", "", "base:latest"),
        ("registry.example/lab/other:3.11", "", "other:3.11"),
        (f"registry.example/lab/base@{B}", "", "base:latest"),
        (f"registry.example/lab/base@{A}", "", None),  # an old digest nobody has now
        (f"registry.example/lab/base@{A}", "base:latest", "base:latest"),  # recorded wins
        ("registry.example/lab/base:3.9", "", None),
        ("float", "", None),  # not pinned: no digest to follow
        ("registry.example/elsewhere/base:latest", "", None),
        ("", "", None),
    ],
)
def test_find_base(ref, recorded, want):
    found = find_base(ref, IMAGES, recorded)
    assert (found.key if found else None) == want


@pytest.mark.parametrize(
    ("obj", "default", "previous", "action"),
    [
        # opt-in rules
        (cr(opt=None), False, None, "skip"),
        (cr(opt=None), True, None, "record"),
        (cr(opt="false"), True, None, "skip"),
        (cr(opt="yes please"), False, None, "skip"),
        (cr(opt="True"), False, None, "record"),
        # first sight: baseline, unless this very change moved the base
        (cr(), False, None, "record"),
        (cr(), False, {"base:latest": BASE}, "record"),
        (cr(), False, {"base:latest": BASE_OLD}, "rebuild"),
        (cr(key="fromImage"), False, {"base:latest": BASE_OLD}, "rebuild"),
        # recorded digest decides (idempotent across events and restarts)
        (cr(ann={BASE_DIGEST: B}), False, None, "skip"),
        (cr(ann={BASE_DIGEST: B}), False, {"base:latest": BASE_OLD}, "skip"),
        (cr(ann={BASE_DIGEST: A}), False, None, "rebuild"),
        (cr(ann={BASE_DIGEST: A}, status=RUNNING), False, None, "busy"),
        (cr(ann={BASE_DIGEST: A}, status={"phase": "Failed"}), False, None, "rebuild"),
        (cr(ann={BASE_DIGEST: A}, status={}), False, None, "busy"),
        # not a dependent of a registry image
        (cr(base="registry.example/unknown/x:1"), False, None, "skip"),
        (cr(base="float"), False, None, "skip"),
        (cr(base=""), False, None, "skip"),
        # a CR building the very stream it names as base: no self-loop
        (cr(name="base", base="cnbi-base-package-list:latest"), False, None, "skip"),
    ],
)
def test_decide(obj, default, previous, action):
    images = IMAGES
    if obj["metadata"]["name"] == "base":
        images = [
            KnownImage(
                key="cnbi-base-package-list:latest",
                image=f"registry.example/cnbi/x@{A}",
                display_name="x",
                stream="cnbi-base-package-list",
                tag="latest",
                pinned=True,
                source="imagestream:default/cnbi-base-package-list",
            )
        ]
    assert decide(obj, images, default_opt_in=default, previous=previous).action == action


def test_decision_annotations():
    d = decide(cr(ann={BASE_DIGEST: A}), IMAGES)
    ann = d.annotations("2026-11-25T10:00:00Z")
    assert ann[BASE_DIGEST] == B and ann[BASE_IMAGE] == "base:latest"
    assert ann["cnbi.meteor.zone/rebuilt-because"] == "base Base changed"
    assert ann["cnbi.meteor.zone/previous-base-digest"] == A
    assert ann[REQUESTED_AT] == "2026-11-25T10:00:00Z"
    baseline = decide(cr(), IMAGES).annotations("t")
    assert set(baseline) == {BASE_DIGEST, BASE_IMAGE}


def test_plan_bounds_rebuilds_in_flight():
    crs = [cr(name=f"c{i}", ann={BASE_DIGEST: A}) for i in range(5)]
    crs.append(cr(name="z-running", ann={BASE_DIGEST: A, REQUESTED_AT: "t"}, status=RUNNING))
    actions = [d.action for d in plan(crs, IMAGES, max_in_flight=3)]
    # one of ours is still running: 2 more may start, the rest wait; the running one is busy
    assert actions == ["rebuild", "rebuild", "deferred", "deferred", "deferred", "busy"]
    assert [d.action for d in plan(crs, IMAGES, max_in_flight=0)][:5] == ["deferred"] * 5


def test_plan_is_lenient():
    junk = [None, "x", {}, {"metadata": "x"}, {"metadata": {"name": 3}, "spec": []}]
    assert all(d.action == "skip" for d in plan(junk, IMAGES, default_opt_in=True))


def test_rebuild_note():
    assert rebuild_note(cr()) is None
    done = cr(ann={"cnbi.meteor.zone/rebuilt-because": "base Base changed", REQUESTED_AT: "t"})
    note = rebuild_note(done)
    assert note["because"] == "base Base changed" and note["phase"] == "Success"
    assert note["imagestream"] == "cnbi-c1-package-list"


def test_catalog_page_shows_the_rebuild_line():
    """The catalog template renders ``rebuilt_lines`` (escaped) under the image."""
    from types import SimpleNamespace

    from cnbi_spawner.service.catalog import LinkRequest, rebuilt_lines
    from cnbi_spawner.service.context import make_jinja, render_page

    built = KnownImage(
        key="cnbi-c1-package-list:latest",
        image=f"registry.example/cnbi/cnbi-c1-package-list@{C}",
        display_name="Course <1>",
        stream="cnbi-c1-package-list",
        tag="latest",
        pinned=True,
        source="imagestream:default/cnbi-c1-package-list",
        created="2026-11-25T10:00:00Z",
    )
    done = cr(ann={"cnbi.meteor.zone/rebuilt-because": "base <Base> changed", REQUESTED_AT: "t"})
    loop = SimpleNamespace(notes={"cnbi-c1-package-list": rebuild_note(done)})
    lines = rebuilt_lines([built, OTHER], loop)
    assert lines == {built.key: "rebuilt on 2026-11-25 because base <Base> changed"}
    assert rebuilt_lines([built], None) == {}
    page = render_page(
        make_jinja(),
        "/services/cnbi/",
        "/",
        "catalog.html",
        images=[built, OTHER],
        req=LinkRequest(),
        result=None,
        sizes=[],
        selected=None,
        signing=False,
        synced=True,
        rebuilt=lines,
    )
    assert "rebuilt on 2026-11-25 because base &lt;Base&gt; changed" in page
    assert page.count('class="cnbi-rebuilt') == 1
