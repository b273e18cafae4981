"""Resolution order, ambiguity, suggestions and incremental updates of the image index."""

from __future__ import annotations

import pytest

from cnbi_spawner.errors import UnknownImage
from cnbi_spawner.images.index import ImageIndex, default_tag, resolve
from cnbi_spawner.images.model import KnownImage


def img(stream, tag, *, ns="ns", created="2025-01-01T00:00:00Z", **kw) -> KnownImage:
    return KnownImage(
        key=f"{stream}:{tag}",
        image=f"registry.example/{stream}:{tag}",
        display_name=stream,
        stream=stream,
        tag=tag,
        namespace=ns,
        source=f"imagestream:{ns}/{stream}",
        created=created,
        **kw,
    )


def static(key, **kw) -> KnownImage:
    return KnownImage(key=key, image=f"registry.example/{key}", display_name=key, **kw)


IMAGES = [
    img("datascience", "2025.1", recommended=True, created="2025-01-01T00:00:00Z"),
    img("datascience", "2025.2", created="2025-06-01T00:00:00Z"),
    img("datascience", "2024.2", outdated=True, created="2024-01-01T00:00:00Z"),
    img("minimal", "2025.1", created="2025-01-01T00:00:00Z"),
    img("minimal", "v2", default=True, created="2024-01-01T00:00:00Z"),
    img("newest", "a", created="2025-01-01T00:00:00Z"),
    img("newest", "b", created="2025-03-01T00:00:00Z", aliases=("shared-alias",)),
    img("solo", "only-here", aliases=("intro", "uai")),
    img("multi", "m1", aliases=("stream-alias",), created="2025-01-01"),
    img("multi", "m2", aliases=("stream-alias",), created="2025-02-01"),
    img("failed", "x", phase="Failed", aliases=("failing",)),
    img("twice", "t1", ns="a"),
    img("twice", "t1", ns="b"),
    img("other", "t9", aliases=("shared-alias", "datascience-old")),
    static("uai_source-uai.intro", aliases=("uai.intro",)),
    static("solo"),  # static course named like a stream: exact key wins
]

# name -> expected key, or ("ambiguous", {candidates}) / ("unknown", suggestion-or-None)
CASES = [
    ("datascience:2025.1", "datascience:2025.1"),  # 1. exact key
    ("DataScience:2025.2", "datascience:2025.2"),  # case-insensitive
    ("  datascience:2025.2 ", "datascience:2025.2"),  # surrounding space
    ("uai_source-uai.intro", "uai_source-uai.intro"),  # static exact key
    ("UAI_SOURCE-UAI.INTRO", "uai_source-uai.intro"),
    ("only-here", "solo:only-here"),  # 2. unique tag
    ("v2", "minimal:v2"),
    ("2025.2", "datascience:2025.2"),  # unique among launchable (2025.1 is not)
    ("2025.1", ("ambiguous", {"datascience:2025.1", "minimal:2025.1"})),
    ("datascience", "datascience:2025.1"),  # 3. stream -> recommended beats newer
    ("minimal", "minimal:v2"),  # default-image beats newer
    ("newest", "newest:b"),  # else newest
    ("solo", "solo"),  # exact static key beats stream name
    ("intro", "solo:only-here"),  # 4. alias
    ("uai.intro", "uai_source-uai.intro"),
    ("shared-alias", ("ambiguous", {"newest:b", "other:t9"})),
    ("stream-alias", "multi:m2"),  # a stream-level alias on every tag means the stream
    ("twice", ("ambiguous", {"a/twice:t1", "b/twice:t1"})),  # same stream, two namespaces
    ("t1", ("ambiguous", {"a/twice:t1", "b/twice:t1"})),
    ("twice:t1", ("ambiguous", {"a/twice:t1", "b/twice:t1"})),
    ("B/twice:T1", "twice:t1"),  # the namespace-qualified key picks one
    ("datascience:2024.2", ("unknown", "datascience:2025.1")),  # outdated -> stream default
    ("failed:x", ("unknown", None)),  # failed phase: not launchable, no default
    ("failing", ("unknown", None)),  # aliases of non-launchable images don't resolve
    ("datascienc", ("unknown", "datascience")),  # typo -> close match
    ("nothing-like-it-zzz", ("unknown", None)),
    ("", ("unknown", None)),
    ("x" * 300, ("unknown", None)),
    ("bad\x00name", ("unknown", None)),
]


@pytest.fixture(scope="module")
def index() -> ImageIndex:
    return ImageIndex(IMAGES)


@pytest.mark.parametrize("name,expected", CASES)
def test_resolve(index, name, expected):
    if isinstance(expected, str):
        assert resolve(index, name).key == expected
        return
    kind, detail = expected
    with pytest.raises(UnknownImage) as exc:
        resolve(index, name)
    err = exc.value
    assert err.status == 404
    if kind == "ambiguous":
        assert err.ambiguous and set(err.suggestions) == detail
    else:
        assert not err.ambiguous
        if detail is None:
            assert not any(s.startswith(("failed", "failing")) for s in err.suggestions)
        else:
            assert err.suggestions[0] == detail or detail in err.suggestions


@pytest.mark.parametrize(
    "name,shown",
    [
        ("No-Such-Course", "There is no course image named 'No-Such-Course'."),  # as asked
        ("  padded  ", "There is no course image named 'padded'."),
        ("x" * 200, "There is no course image named '" + "x" * 79 + "…'."),
        ("bidi\u202eevil", None),  # not printable: never reaches a message as is
        ("", "There is no course image with that name."),
    ],
)
def test_unknown_course_message_names_what_was_asked(index, name, shown):
    with pytest.raises(UnknownImage) as exc:
        resolve(index, name)
    if shown is None:
        assert "\u202e" not in exc.value.message
    else:
        assert exc.value.message.startswith(shown)


@pytest.mark.parametrize("name", [None, 3, b"solo", ["solo"]])
def test_resolve_non_strings(index, name):
    with pytest.raises(UnknownImage):
        resolve(index, name)


def test_qualified_key_picks_the_namespace(index):
    assert resolve(index, "b/twice:t1").namespace == "b"
    assert index.get("a/twice:t1").namespace == "a"


def test_get_includes_outdated_and_failed(index):
    assert index.get("datascience:2024.2").outdated
    assert index.get("failed:x").phase == "Failed"
    assert index.get("DATASCIENCE:2024.2").key == "datascience:2024.2"
    assert index.get("nope") is None


def test_images_sorted_and_complete(index):
    images = index.images()
    assert len(images) == len(index) == len(IMAGES)
    assert [i.order for i in images] == sorted(i.order for i in images)


def test_default_tag_rules():
    assert default_tag([]) is None
    assert default_tag([img("s", "a", outdated=True)]) is None
    a, b = img("s", "a", created="1"), img("s", "b", created="2")
    assert default_tag([a, b]) is b
    assert default_tag([a, b, img("s", "c", default=True, created="0")]).tag == "c"


def test_incremental_updates():
    index = ImageIndex(IMAGES)
    source = "imagestream:ns/datascience"
    # the recommended tag goes away: the stream now resolves to the newest launchable tag
    kept = [i for i in index.source(source) if i.tag != "2025.1"]
    added, removed, changed = index.set_source(source, kept)
    assert (added, removed, changed) == ([], ["datascience:2025.1"], [])
    assert resolve(index, "datascience").key == "datascience:2025.2"
    assert resolve(index, "2025.1").key == "minimal:2025.1"  # no longer ambiguous
    # a change of one field is reported as changed
    newer = [KnownImage(**{**_fields(i), "image": i.image + "x"}) for i in kept]
    assert index.set_source(source, newer)[2] == ["datascience:2025.2", "datascience:2024.2"]
    assert index.set_source(source, newer) == ([], [], [])  # no-op
    # removing a whole stream drops its names
    assert sorted(index.remove_source(source)) == ["datascience:2024.2", "datascience:2025.2"]
    with pytest.raises(UnknownImage):
        resolve(index, "datascience")
    with pytest.raises(UnknownImage):
        resolve(index, "2025.2")
    assert index.get("datascience:2024.2") is None
    assert len(index) == len(IMAGES) - 3
    # unchanged parts still resolve
    assert resolve(index, "intro").key == "solo:only-here"


def test_outdated_flip_hides_from_resolve_but_not_get():
    index = ImageIndex([img("s", "a")])
    assert resolve(index, "s").key == "s:a"
    index.set_source("imagestream:ns/s", [img("s", "a", outdated=True)])
    with pytest.raises(UnknownImage):
        resolve(index, "s")
    assert index.get("s:a").outdated


def _fields(image: KnownImage) -> dict:
    return {f: getattr(image, f) for f in image.__dataclass_fields__}
