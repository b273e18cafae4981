"""``selection.plan_launch`` and ``sizes.ResourcePolicy``: tables of good, unknown, ambiguous
and hostile launches, against the real image index (``images/index.py``)."""

from __future__ import annotations

import pytest
from traitlets import TraitError
from traitlets.config import Config

from cnbi_spawner.errors import LaunchError, SelectionError, UnknownImage
from cnbi_spawner.images.index import ImageIndex, resolve
from cnbi_spawner.images.model import KnownImage
from cnbi_spawner.notebook_paths import normalise_notebook, notebook_url
from cnbi_spawner.selection import label_value, parse, parse_quantity, plan_launch
from cnbi_spawner.sizes import ResourcePolicy, parse_cpu, parse_memory

DIGEST = "sha256:" + "a" * 64
REF = "registry.example/courses/uai-intro@" + DIGEST


class Images:
    """The registry's read interface over the real index (no watch, no I/O)."""

    def __init__(self, images: list[KnownImage]) -> None:
        self.index = ImageIndex(images)

    def resolve(self, name: str) -> KnownImage:
        return resolve(self.index, name)

    def get(self, key: str) -> KnownImage | None:
        return self.index.get(key)


def img(key: str, **kw) -> KnownImage:
    stream, _, tag = key.partition(":")
    defaults = dict(
        key=key,
        image=f"registry.example/courses/{stream}@{DIGEST}",
        display_name=key,
        stream=stream if tag else "",
        tag=tag,
        pinned=True,
        source=f"imagestream:ns/{stream}" if tag else "static",
    )
    defaults.update(kw)
    return KnownImage(**defaults)


IMAGES = Images(
    [
        img("uai-intro:2025.1", recommended=True, aliases=("uai_source-uai.intro",)),
        img("uai-intro:2024.2", outdated=True),
        img(
            "listed:v1",
            notebooks=("lectures/l1.ipynb", "./lectures//l2.ipynb", "Ünïcode/ß.ipynb"),
        ),
        img("bigdefault:v1", default_size="large"),
        img("cuda:v1", requires_gpu=True),
        img("cudadefault:v1", requires_gpu=True, default_size="gpu-big"),
        img("broken:v1", phase="Failed"),
        img("twin-a:shared"),
        img("twin-b:shared"),
        img("clustering_and_descriptive_ai", source="static"),
    ]
)

POLICY = ResourcePolicy(
    config=Config(
        {
            "ResourcePolicy": {
                "resource_packages": {
                    "tiny": {"cpu_limit": 0.5, "mem_limit": "512M"},
                    "small": {"cpu_guarantee": "250m", "cpu_limit": 1, "mem_limit": "1G"},
                    "medium": {"cpu_limit": 2, "mem_limit": "2G"},
                    "large": {"cpu_limit": 4, "mem_limit": "4Gi"},
                    "gpu": {
                        "cpu_limit": 1,
                        "mem_limit": "1G",
                        "extra_resource_limits": {"nvidia.com/gpu": "1"},
                    },
                    "gpu-big": {
                        "cpu_limit": 8,
                        "mem_limit": "16G",
                        "extra_resource_limits": {"nvidia.com/gpu": 2},
                        "node_selector": {"gpu": "true"},
                        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                    },
                },
                "default_size": "small",
                "anonymous_max_size": "medium",
            }
        }
    )
).launch_policy()


def plan(options, *, anonymous=False, **kw):
    return plan_launch(options, IMAGES, POLICY, anonymous=anonymous, **kw)


GOOD = [
    # options, anonymous, expected user_options, expected default_url
    (
        {"course": "uai-intro:2025.1"},
        False,
        {"course": "uai-intro:2025.1", "size": "small"},
        "/lab",
    ),
    (  # query form, bytes, alias, case-insensitive course, notebook normalised
        {"course": [b"UAI_Source-UAI.Intro"], "notebook": [b"lectures//./lecture1/mod5.ipynb"]},
        True,
        {"course": "uai-intro:2025.1", "notebook": "lectures/lecture1/mod5.ipynb", "size": "small"},
        "/lab/tree/lectures/lecture1/mod5.ipynb",
    ),
    ({"image": "uai-intro"}, False, {"course": "uai-intro:2025.1", "size": "small"}, "/lab"),
    ({"course": "2025.1"}, False, {"course": "uai-intro:2025.1", "size": "small"}, "/lab"),
    (  # sig/exp are the authenticator's business
        {"course": ["uai-intro"], "sig": ["abc"], "exp": ["123"], "size": ["MEDIUM"]},
        True,
        {"course": "uai-intro:2025.1", "size": "medium"},
        "/lab",
    ),
    (  # special characters stay part of the file name
        {"course": "uai-intro", "notebook": "A & B/50% {x}?#.ipynb"},
        False,
        {"course": "uai-intro:2025.1", "notebook": "A & B/50% {x}?#.ipynb", "size": "small"},
        "/lab/tree/A%20%26%20B/50%25%20%7Bx%7D%3F%23.ipynb",
    ),
    (  # listed notebooks, compared in canonical form
        {"course": "listed:v1", "notebook": "lectures/l2.ipynb"},
        False,
        {"course": "listed:v1", "notebook": "lectures/l2.ipynb", "size": "small"},
        "/lab/tree/lectures/l2.ipynb",
    ),
    (
        {"course": "listed", "notebook": "Ünïcode/ß.ipynb"},
        False,
        {"course": "listed:v1", "notebook": "Ünïcode/ß.ipynb", "size": "small"},
        "/lab/tree/%C3%9Cn%C3%AFcode/%C3%9F.ipynb",
    ),
    ({"course": "listed", "notebook": ""}, False, {"course": "listed:v1", "size": "small"}, "/lab"),
    (  # MIT-style static course name
        {"course": "Clustering_And_Descriptive_AI"},
        False,
        {"course": "clustering_and_descriptive_ai", "size": "small"},
        "/lab",
    ),
    # image default size; capped for guests
    ({"course": "bigdefault"}, False, {"course": "bigdefault:v1", "size": "large"}, "/lab"),
    ({"course": "bigdefault"}, True, {"course": "bigdefault:v1", "size": "medium"}, "/lab"),
    (
        {"course": "bigdefault", "size": "tiny"},
        True,
        {"course": "bigdefault:v1", "size": "tiny"},
        "/lab",
    ),
    # GPU images: first GPU package, the image's GPU default, or an explicit GPU size
    ({"course": "cuda"}, False, {"course": "cuda:v1", "size": "gpu"}, "/lab"),
    ({"course": "cudadefault"}, False, {"course": "cudadefault:v1", "size": "gpu-big"}, "/lab"),
    (
        {"course": "cuda", "size": "gpu-big"},
        False,
        {"course": "cuda:v1", "size": "gpu-big"},
        "/lab",
    ),
]


@pytest.mark.parametrize("options,anonymous,expected,url", GOOD)
def test_good_launches(options, anonymous, expected, url):
    p = plan(options, anonymous=anonymous)
    assert p.user_options() == expected
    assert p.default_url == url
    assert p.image.image.endswith(DIGEST)  # always the registry's digest-pinned ref
    # the canonical options plan to the same launch (what start() does)
    again = plan(p.user_options(), anonymous=anonymous, allow_outdated=True)
    assert again.user_options() == expected and again.image == p.image


BAD = [
    # options, anonymous, error class, status, words in the message
    ({}, False, SelectionError, 400, "which course"),
    ({"course": ""}, False, SelectionError, 400, "which course"),
    ({"course": "nope"}, False, UnknownImage, 404, "no course image"),
    ({"course": "uai-intro:2024.2"}, False, UnknownImage, 404, ""),  # outdated: new launch
    ({"course": "broken:v1"}, False, UnknownImage, 404, ""),
    ({"course": "shared"}, False, UnknownImage, 404, "more than one"),  # ambiguous tag
    ({"course": "uai-intro", "bogus": "1"}, False, SelectionError, 400, "'bogus'"),
    ({"course": "uai-intro", "tag": "anything"}, False, SelectionError, 400, "Unknown"),
    ({"course": "x", "<script>": "1"}, False, SelectionError, 400, "a parameter"),
    ({"course": ["uai-intro", "cuda"]}, False, SelectionError, 400, "more than once"),
    ({"course": []}, False, SelectionError, 400, "no value"),
    ({"course": "uai-intro", "image": "uai-intro"}, False, SelectionError, 400, "not both"),
    ({"course": [b"\xff\xfe"]}, False, SelectionError, 400, "UTF-8"),
    ({b"\xff": "x"}, False, SelectionError, 400, "UTF-8"),
    ({"course": 7}, False, SelectionError, 400, "text"),
    ({"course": {"a": 1}}, False, SelectionError, 400, "text"),
    ({"course": None}, False, SelectionError, 400, "text"),
    ({"course": "x" * 257}, False, SelectionError, 400, "not a valid course"),
    ({"course": "uai intro"}, False, SelectionError, 400, "not a valid course"),
    ({"course": "../../etc"}, False, SelectionError, 400, "not a valid course"),
    ({"course": "uai\x00"}, False, SelectionError, 400, "not a valid course"),
    ({"course": "registry.example/x:latest"}, False, UnknownImage, 404, ""),  # only the registry
    ({"course": "uai-intro", "sig": "a\nb"}, False, SelectionError, 400, "'sig'"),
    # notebooks
    ({"course": "uai-intro", "notebook": "../secret"}, False, SelectionError, 400, "'..'"),
    ({"course": "uai-intro", "notebook": "a/../../b"}, False, SelectionError, 400, "'..'"),
    ({"course": "uai-intro", "notebook": "/etc/passwd"}, False, SelectionError, 400, "relative"),
    ({"course": "uai-intro", "notebook": "a\\b.ipynb"}, False, SelectionError, 400, "backslash"),
    ({"course": "uai-intro", "notebook": "a\x00b"}, False, SelectionError, 400, "control"),
    (
        {"course": "uai-intro", "notebook": "a\r\nSet-Cookie: x"},
        False,
        SelectionError,
        400,
        "control",
    ),
    ({"course": "uai-intro", "notebook": "a\x7fb"}, False, SelectionError, 400, "control"),
    (
        {"course": "uai-intro", "notebook": "evil\u202egnp.ipynb"},
        False,
        SelectionError,
        400,
        "control",
    ),
    ({"course": "uai-intro", "notebook": "zero\u200bwidth"}, False, SelectionError, 400, "control"),
    ({"course": "uai-intro", "notebook": "line\u2028sep"}, False, SelectionError, 400, "control"),
    ({"course": "uai-intro", "notebook": "\ud800"}, False, SelectionError, 400, "not allowed"),
    ({"course": "uai-intro", "notebook": "./"}, False, SelectionError, 400, "does not name"),
    ({"course": "uai-intro", "notebook": "é" * 513}, False, SelectionError, 400, "too long"),
    (
        {"course": "listed", "notebook": "lectures/l3.ipynb"},
        False,
        SelectionError,
        400,
        "Did you mean: lectures/l2.ipynb, lectures/l1.ipynb?",
    ),
    (
        {"course": "listed", "notebook": "Lectures/l1.ipynb"},
        False,
        SelectionError,
        400,
        "Did you mean: lectures/l1.ipynb",
    ),
    ({"course": "listed", "notebook": "zzz/other.ipynb"}, False, SelectionError, 400, "It offers:"),
    # sizes
    ({"course": "uai-intro", "size": "huge"}, False, SelectionError, 400, "Available sizes"),
    ({"course": "uai-intro", "size": "small; rm"}, False, SelectionError, 400, "not a valid size"),
    ({"course": "uai-intro", "size": "large"}, True, SelectionError, 403, "Guest"),
    ({"course": "uai-intro", "size": "gpu"}, True, SelectionError, 403, "Guest"),
    ({"course": "cuda", "size": "small"}, False, SelectionError, 400, "needs a GPU"),
    ({"course": "cuda"}, True, SelectionError, 403, "guest"),
]


@pytest.mark.parametrize("options,anonymous,cls,status,words", BAD)
def test_refused_launches(options, anonymous, cls, status, words):
    with pytest.raises(LaunchError) as info:
        plan(options, anonymous=anonymous)
    assert type(info.value) is cls
    assert info.value.status == status
    assert words in info.value.message
    assert "\n" not in info.value.message and "\x00" not in info.value.message


def test_unknown_course_is_checked_before_the_registry():
    class Exploding:
        def resolve(self, name):
            raise AssertionError("registry asked about junk")

    with pytest.raises(SelectionError):
        plan_launch({"course": "a b"}, Exploding(), POLICY, anonymous=True)
    with pytest.raises(SelectionError):
        plan_launch({"course": "ok", "notebook": "../x"}, Exploding(), POLICY, anonymous=True)


def test_restart_keeps_an_outdated_image_but_not_a_removed_one():
    p = plan({"course": "uai-intro:2024.2"}, allow_outdated=True)
    assert p.image.key == "uai-intro:2024.2" and p.image.outdated
    with pytest.raises(UnknownImage):
        plan({"course": "broken:v1"}, allow_outdated=True)
    with pytest.raises(UnknownImage):
        plan({"course": "gone:v1"}, allow_outdated=True)


def test_labels_and_annotations():
    p = plan({"course": "uai-intro", "notebook": "a/b.ipynb", "size": "medium"}, anonymous=True)
    assert p.labels["cnbi.meteor.zone/image"].startswith("uai-intro_2025.1-")
    assert p.labels["cnbi.meteor.zone/size"] == "medium"
    assert p.labels["cnbi.meteor.zone/anonymous"] == "true"
    assert p.annotations["cnbi.meteor.zone/image"] == "uai-intro:2025.1"
    assert p.annotations["cnbi.meteor.zone/image-ref"] == p.image.image
    assert p.annotations["cnbi.meteor.zone/notebook"] == "a/b.ipynb"
    assert p.size.cpu_limit == 2 and p.size.mem_limit == 2 * 2**30


LABELS = [
    ("plain-name", "plain-name"),
    ("a:b", None),
    ("x" * 80, None),
    (":::", None),
    ("", ""),
]


@pytest.mark.parametrize("value,expected", LABELS)
def test_label_value(value, expected):
    out = label_value(value)
    if expected is not None:
        assert out == expected
    assert len(out) <= 63
    assert out == "" or (out[0].isalnum() and out[-1].isalnum())
    assert all(c.isalnum() or c in "-_." for c in out)
    assert label_value("a:b") != label_value("a_b")


NOTEBOOKS = [
    ("a.ipynb", "a.ipynb", "/lab/tree/a.ipynb"),
    ("./a//b/./c.ipynb", "a/b/c.ipynb", "/lab/tree/a/b/c.ipynb"),
    ("dir/", "dir", "/lab/tree/dir"),
    ("...", "...", "/lab/tree/..."),
    ("%2e%2e/x", "%2e%2e/x", "/lab/tree/%252e%252e/x"),  # a literal name, quoted again
    ("", None, "/lab"),
]


@pytest.mark.parametrize("value,path,url", NOTEBOOKS)
def test_notebook_paths(value, path, url):
    assert normalise_notebook(value) == path
    assert notebook_url(path) == url


def test_parse_is_syntax_only():
    request = parse({"course": [b"Any-Name"], "notebook": [b"x.ipynb"], "size": [b"small"]})
    assert (request.course, request.notebook, request.size) == ("Any-Name", "x.ipynb", "small")


QUANTITIES = [("500m", 0.5), ("2", 2.0), (4, 4.0), ("1Gi", 2**30), ("1e3", 1000.0), ("1.5k", 1500)]


@pytest.mark.parametrize("value,expected", QUANTITIES)
def test_parse_quantity(value, expected):
    assert parse_quantity(value) == pytest.approx(expected)


@pytest.mark.parametrize("value", ["", "abc", "-1", "1Q", "1e3Mi", True, -2])
def test_parse_quantity_rejects(value):
    with pytest.raises(ValueError):
        parse_quantity(value)


UNITS = [
    (parse_memory, "1G", 2**30),
    (parse_memory, "1.5G", int(1.5 * 2**30)),
    (parse_memory, "2Gi", 2 * 2**30),
    (parse_memory, "512M", 512 * 2**20),
    (parse_memory, 1000, 1000),
    (parse_memory, "1000", 1000),
    (parse_cpu, "500m", 0.5),
    (parse_cpu, 2, 2.0),
    (parse_cpu, "1.5", 1.5),
]


@pytest.mark.parametrize("parser,value,expected", UNITS)
def test_units(parser, value, expected):
    assert parser(value) == expected


@pytest.mark.parametrize(
    "parser,value",
    [(parse_memory, "1GB"), (parse_memory, "lots"), (parse_memory, 1.5), (parse_memory, -1)]
    + [(parse_cpu, "1Gi"), (parse_cpu, "two"), (parse_cpu, None), (parse_cpu, True)],
)
def test_units_rejected(parser, value):
    with pytest.raises(ValueError):
        parser(value)


def test_default_policy_is_consistent():
    policy = ResourcePolicy().launch_policy()
    assert list(policy.packages) == ["tiny", "small", "medium", "large"]
    assert policy.default_size == "small" and policy.anonymous_max_size == "medium"
    assert not any(p.gpu for p in policy.packages.values())


BAD_CONFIG = [
    ({"resource_packages": {"s": {"mem_limit": "1GB"}}}, "'s': 'mem_limit'"),
    ({"resource_packages": {"s": {"cpu_limit": "fast"}}}, "CPU"),
    ({"resource_packages": {"s": {"cpu_limt": 1}}}, "unknown field"),
    ({"resource_packages": {"Big!": {}}}, "name"),
    ({"resource_packages": {"s": {"cpu_guarantee": 2, "cpu_limit": 1}}}, "larger"),
    (
        {"resource_packages": {"s": {"extra_resource_limits": {"nvidia.com/gpu": "one"}}}},
        "quantity",
    ),
    ({"resource_packages": {"s": {"tolerations": {"key": "x"}}}}, "list of objects"),
    ({"resource_packages": {}}, "at least one"),
    ({"default_size": "nope"}, "'nope'"),
    ({"anonymous_max_size": "nope"}, "'nope'"),
]


@pytest.mark.parametrize("settings,words", BAD_CONFIG)
def test_bad_config_fails_at_load(settings, words):
    with pytest.raises(TraitError) as info:
        ResourcePolicy(config=Config({"ResourcePolicy": settings}))
    assert words in str(info.value)


def test_anonymous_cap_compares_resources_not_names():
    policy = ResourcePolicy(
        config=Config(
            {
                "ResourcePolicy": {
                    "resource_packages": {
                        "b-small": {"cpu_limit": 1, "mem_limit": "1G"},
                        "a-sneaky": {"cpu_limit": 1},  # unbounded memory
                        "c-gpu-lite": {
                            "cpu_limit": 1,
                            "mem_limit": "1G",
                            "extra_resource_limits": {"nvidia.com/gpu": "1"},
                        },
                    },
                    "default_size": "b-small",
                    "anonymous_max_size": "b-small",
                }
            }
        )
    ).launch_policy()
    images = Images([img("plain:v1")])
    for size, allowed in [("b-small", True), ("a-sneaky", False), ("c-gpu-lite", False)]:
        options = {"course": "plain", "size": size}
        if allowed:
            assert plan_launch(options, images, policy, anonymous=True).size.name == size
        else:
            with pytest.raises(SelectionError) as info:
                plan_launch(options, images, policy, anonymous=True)
            assert info.value.status == 403
        assert plan_launch(options, images, policy, anonymous=False).size.name == size


def test_gpu_image_without_gpu_packages():
    with pytest.raises(SelectionError) as info:
        plan_launch({"course": "cuda"}, IMAGES, ResourcePolicy().launch_policy(), anonymous=False)
    assert info.value.status == 400 and "offers none" in info.value.message
