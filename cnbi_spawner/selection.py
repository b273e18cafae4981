"""Which image, notebook and resources a launch gets: one pure decision, ``plan_launch``.

Input is hostile: a tornado query (``dict[str, list[bytes]]``), a form, or a REST API
``user_options`` body (any JSON). Output is a ``LaunchPlan`` or a ``LaunchError`` from
``errors.py`` carrying the HTTP status and a message for the learner. Nothing here does
I/O; ``images`` is anything with ``resolve(name)`` (and, for restarts, ``get(key)``),
in practice ``images.registry.ImageRegistry``.

Rules (the URL contract of DESIGN §3, decided here):

- Names, values and their grammar are :mod:`cnbi_spawner.launch_grammar`'s.
- Keys: ``course`` (alias ``image``), ``notebook``, ``size``, plus ``sig``/``exp``/``ticket``
  which are accepted and ignored here (the authenticator checks signatures, the spawner
  checks tickets). Any other key -> 400.
  A key given twice -> 400; ``course`` and ``image`` together -> 400 (they are one parameter).
- Values: one piece of text (``launch_grammar.flatten``), else 400.
- ``course``: required, a course name by the grammar. Checked *before* the registry is
  asked, so junk never reaches a lookup.
  Matching is the registry's (case-insensitive names, aliases, tags; outdated images hidden).
  With ``allow_outdated=True`` (re-planning a server that already launched once) the exact
  key is looked up first with ``images.get``, so a restart keeps an image that has since
  been marked outdated; a removed image fails cleanly with 404.
- ``notebook``: see ``notebook_paths.py``; when the image lists its notebooks, the path must
  be one of them (400).
- ``size``: a resource package name (case-insensitive). Unknown -> 400. Unset -> the image's
  default size (if the policy has it), else the policy's ``default_size``.
  Anonymous users may not exceed ``anonymous_max_size``: asking for more is refused with
  403 (the request is well-formed, this user may not have it); an image's larger *default*
  is quietly capped to ``anonymous_max_size`` instead, since the learner did not ask for it.
  "Exceeds" compares resources, not names: every guarantee, limit and extra resource
  of the package must be <= the cap's (an unset limit counts as unbounded).
- GPU: an image with ``requires_gpu`` needs a package with a GPU extra resource. An explicit
  non-GPU size -> 400; no size -> the image's default if it has a GPU, else the policy's
  ``gpu_size``, else the first GPU package; none configured -> 400; an anonymous cap
  without a GPU -> 403.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import launch_grammar as grammar
from .errors import SelectionError, UnknownImage
from .images.model import KnownImage
from .notebook_paths import listed_notebooks, normalise_notebook, notebook_url

LABEL_PREFIX = "cnbi.meteor.zone/"
KNOWN_KEYS = grammar.LAUNCH_OPTIONS | grammar.LINK_PARAMS
_SHOWABLE_KEY_RE = re.compile(r"[A-Za-z0-9_.-]{1,40}\Z")
_LABEL_VALUE_RE = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?\Z")
_MAX_IGNORED_CHARS = 512


class ImageSource(Protocol):
    def resolve(self, name: str) -> KnownImage: ...


# --- quantities ---------------------------------------------------------------------------

_QUANTITY_RE = re.compile(r"\+?(\d+(?:\.\d*)?|\.\d+)(?:[eE]([-+]?\d+))?([a-zA-Z]{0,2})\Z")
_SUFFIXES = {
    "": 1.0,
    "m": 1e-3,
    "k": 1e3,
    "K": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
    "Pi": 2.0**50,
    "Ei": 2.0**60,
}


def parse_quantity(value: str | int | float) -> float:
    """A Kubernetes quantity (``"500m"``, ``"1Gi"``, ``4``) as a number; ValueError if not."""
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, int | float):
        if value < 0 or value != value:
            raise ValueError(f"not a quantity: {value!r}")
        return float(value)
    match = _QUANTITY_RE.match(str(value).strip())
    if not match or match.group(3) not in _SUFFIXES or (match.group(2) and match.group(3)):
        raise ValueError(f"not a quantity: {value!r}")
    number = float(match.group(1)) * (10 ** int(match.group(2)) if match.group(2) else 1)
    return number * _SUFFIXES[match.group(3)]


# --- policy data --------------------------------------------------------------------------

# ResourcePackage fields that are KubeSpawner traits of the same name (what a size sets).
RESOURCE_FIELDS = (
    "cpu_guarantee",
    "cpu_limit",
    "mem_guarantee",
    "mem_limit",
    "extra_resource_guarantees",
    "extra_resource_limits",
    "node_selector",
    "tolerations",
    "node_affinity_required",
)


@dataclass(frozen=True, eq=False)
class ResourcePackage:
    """A named set of resources a server may get (KubeSpawner's units: cpu cores, bytes)."""

    name: str
    display_name: str = ""
    description: str = ""
    cpu_guarantee: float | None = None
    cpu_limit: float | None = None
    mem_guarantee: int | None = None
    mem_limit: int | None = None
    extra_resource_guarantees: Mapping[str, str] = field(default_factory=dict)
    extra_resource_limits: Mapping[str, str] = field(default_factory=dict)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    node_affinity_required: tuple[Mapping[str, Any], ...] = ()

    @property
    def gpu(self) -> bool:
        """Does this package ask for a GPU (any ``*gpu*`` extra resource above zero)?"""
        return any(
            "gpu" in name.lower() and parse_quantity(amount) > 0
            for name, amount in {
                **self.extra_resource_guarantees,
                **self.extra_resource_limits,
            }.items()
        )

    def fits_within(self, cap: ResourcePackage) -> bool:
        """Is every resource of this package at most the cap's? (None = unbounded.)"""
        pairs = [
            (self.cpu_guarantee, cap.cpu_guarantee),
            (self.cpu_limit, cap.cpu_limit),
            (self.mem_guarantee, cap.mem_guarantee),
            (self.mem_limit, cap.mem_limit),
        ]
        for mine, theirs in pairs:
            if theirs is None:
                continue
            if mine is None or mine > theirs:
                return False
        for mine_map, cap_map in (
            (self.extra_resource_guarantees, cap.extra_resource_guarantees),
            (self.extra_resource_limits, cap.extra_resource_limits),
        ):
            for name, amount in mine_map.items():
                if parse_quantity(amount) > parse_quantity(cap_map.get(name, 0)):
                    return False
        return True

    @property
    def label(self) -> str:
        return self.display_name or self.name


@dataclass(frozen=True, eq=False)
class LaunchPolicy:
    """The resource packages on offer and who may have which (built by ``sizes.ResourcePolicy``)."""

    packages: Mapping[str, ResourcePackage]  # name -> package, in display order
    default_size: str
    anonymous_max_size: str | None = None
    gpu_size: str | None = None

    def __post_init__(self) -> None:
        for name in (self.default_size, self.anonymous_max_size, self.gpu_size):
            if name is not None and name not in self.packages:
                raise ValueError(f"size {name!r} is not one of {sorted(self.packages)}")

    def lookup(self, name: str) -> ResourcePackage | None:
        return self.packages.get(name) or self.packages.get(name.lower())

    def allowed_for(self, package: ResourcePackage, *, anonymous: bool) -> bool:
        if not anonymous or self.anonymous_max_size is None:
            return True
        return package.fits_within(self.packages[self.anonymous_max_size])


# --- request ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LaunchRequest:
    """The syntactically valid launch parameters, before any lookup."""

    course: str
    notebook: str | None = None
    size: str | None = None


@dataclass(frozen=True, eq=False)
class LaunchPlan:
    """Everything the spawner applies: image, landing URL, resources, labels."""

    image: KnownImage
    notebook: str | None
    default_url: str
    size: ResourcePackage
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    anonymous: bool = False

    def user_options(self) -> dict[str, str]:
        """The canonical options the hub stores; planning them again gives this plan."""
        options = {grammar.COURSE: self.image.key}
        if self.notebook is not None:
            options[grammar.NOTEBOOK] = self.notebook
        options[grammar.SIZE] = self.size.name
        return options

    def summary(self) -> dict[str, str]:
        """What a guest's hub pages say is starting (:func:`launch_summary`)."""
        return launch_summary(self.image, self.notebook)


def launch_summary(image: KnownImage, notebook: str | None) -> dict[str, str]:
    """``{"course": display name, "notebook": path or ""}``: what the guest's progress,
    failure and waiting pages name (their templates escape it)."""
    return {"course": image.display_name or image.key, "notebook": notebook or ""}


def _describe_key(key: object) -> str:
    if isinstance(key, str) and _SHOWABLE_KEY_RE.match(key):
        return f"'{key}'"
    return "a parameter"


_VALUE_PROBLEMS = {
    "repeated": "was given more than once",
    "empty": "has no value",
    "encoding": "is not valid UTF-8 text",
    "type": "must be text",
}


def _single_value(key: str, raw: object) -> str:
    """One text value (``launch_grammar.flatten``), refusals worded for the learner."""
    try:
        return grammar.flatten(raw)
    except grammar.QueryValueError as e:
        problem = _VALUE_PROBLEMS[e.reason]
        raise SelectionError(f"The launch parameter {_describe_key(key)} {problem}.") from None


def parse(options: Mapping[str, Any]) -> LaunchRequest:
    """Check the shape of the launch parameters; no lookups. Raises ``SelectionError``."""
    if not isinstance(options, Mapping):
        raise SelectionError("The launch options must be a set of named parameters.")
    values: dict[str, str] = {}
    for key, raw in options.items():
        if isinstance(key, bytes):
            try:
                key = key.decode("utf-8")
            except UnicodeDecodeError:
                raise SelectionError("A launch parameter name is not valid UTF-8.") from None
        if not isinstance(key, str) or key not in KNOWN_KEYS:
            raise SelectionError(
                f"Unknown launch parameter {_describe_key(key)}; use course, notebook and size."
            )
        if key in values:  # e.g. b"size" and "size" in one mapping
            raise SelectionError(
                f"The launch parameter {_describe_key(key)} was given more than once."
            )
        values[key] = _single_value(key, raw)
    if grammar.COURSE in values and grammar.IMAGE in values:
        raise SelectionError("Give either 'course' or 'image' (they mean the same), not both.")
    for key in sorted(grammar.LINK_PARAMS):
        value = values.get(key, "")
        if len(value) > _MAX_IGNORED_CHARS or not value.isprintable():
            raise SelectionError(f"The launch parameter '{key}' is malformed.")

    course = values.get(grammar.COURSE, values.get(grammar.IMAGE, ""))
    if not course:
        raise SelectionError("Please say which course to start (the 'course' parameter).")
    if not grammar.is_course_name(course):
        raise SelectionError(
            "That is not a valid course name: use letters, digits and . _ : - "
            f"(at most {grammar.MAX_NAME_CHARS} characters)."
        )
    size = values.get(grammar.SIZE) or None
    if size is not None and not grammar.is_size_name(size):
        raise SelectionError("That is not a valid size name.")
    notebook = normalise_notebook(values.get(grammar.NOTEBOOK, ""))
    return LaunchRequest(course=course, notebook=notebook, size=size)


# --- decisions ----------------------------------------------------------------------------


def find_image(images: ImageSource, course: str, *, allow_outdated: bool = False) -> KnownImage:
    """The registry's image for ``course``; with ``allow_outdated``, the exact key first."""
    if allow_outdated:
        get = getattr(images, "get", None)
        image = get(course) if get is not None else None
        if image is not None and image.phase not in ("Failed", "Validating"):
            return image
    image = images.resolve(course)
    if not image.launchable:  # the registry should never do this; refuse rather than trust
        raise UnknownImage(course)
    return image


def choose_size(
    requested: str | None, image: KnownImage, policy: LaunchPolicy, *, anonymous: bool
) -> ResourcePackage:
    """The resource package for this launch (rules in the module docstring)."""
    if requested is not None:
        package = policy.lookup(requested)
        if package is None:
            raise SelectionError(
                "There is no size with that name. Available sizes: "
                + ", ".join(policy.packages)
                + "."
            )
        if image.requires_gpu and not package.gpu:
            gpu_names = [p.name for p in policy.packages.values() if p.gpu]
            hint = f" Choose one of: {', '.join(gpu_names)}." if gpu_names else ""
            raise SelectionError("This course needs a GPU, and that size has none." + hint)
        if not policy.allowed_for(package, anonymous=anonymous):
            raise SelectionError(
                f"Guest users may use sizes up to '{policy.anonymous_max_size}'; "
                "please choose a smaller size.",
                status=403,
            )
        return package

    package = None
    if image.default_size:
        package = policy.lookup(image.default_size)
    if image.requires_gpu:
        if package is None or not package.gpu:
            package = policy.packages.get(policy.gpu_size) if policy.gpu_size else None
        if package is None or not package.gpu:
            package = next((p for p in policy.packages.values() if p.gpu), None)
        if package is None:
            raise SelectionError("This course needs a GPU, and this hub offers none.")
        if not policy.allowed_for(package, anonymous=anonymous):
            raise SelectionError(
                "This course needs a GPU, which guest users cannot use.", status=403
            )
        return package
    if package is None:
        package = policy.packages[policy.default_size]
    if not policy.allowed_for(package, anonymous=anonymous):
        package = policy.packages[policy.anonymous_max_size]  # type: ignore[index]
    return package


def label_value(value: str) -> str:
    """``value`` as a valid Kubernetes label value (<= 63 chars); a hash keeps it unique."""
    if _LABEL_VALUE_RE.match(value):
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", value)[:54].strip("._-")
    return f"{safe}-{digest}" if safe else digest


def not_offered(notebook: str, offered: frozenset[str]) -> str:
    """The refusal for a notebook the image does not list: its close matches, or a few of
    what it offers."""
    close = difflib.get_close_matches(notebook, sorted(offered), n=3, cutoff=0.6)
    if close:
        return "This course does not offer that notebook. Did you mean: " + ", ".join(close) + "?"
    examples = ", ".join(sorted(offered)[:5])
    return "This course does not offer that notebook." + (
        f" It offers: {examples}." if examples else ""
    )


def plan_launch(
    options: Mapping[str, Any],
    images: ImageSource,
    policy: LaunchPolicy,
    *,
    anonymous: bool,
    allow_outdated: bool = False,
) -> LaunchPlan:
    """Validate ``options`` and decide the launch, or raise a ``LaunchError``."""
    request = parse(options)
    image = find_image(images, request.course, allow_outdated=allow_outdated)
    if request.notebook is not None and image.notebooks:
        offered = listed_notebooks(image.notebooks)
        if request.notebook not in offered:
            raise SelectionError(not_offered(request.notebook, offered))
    size = choose_size(request.size, image, policy, anonymous=anonymous)
    labels = {
        LABEL_PREFIX + "image": label_value(image.key),
        LABEL_PREFIX + "size": label_value(size.name),
        LABEL_PREFIX + "anonymous": "true" if anonymous else "false",
    }
    annotations = {
        LABEL_PREFIX + "image": image.key,
        LABEL_PREFIX + "image-ref": image.image,
        LABEL_PREFIX + "image-source": image.source,
        LABEL_PREFIX + "size": size.name,
    }
    if request.notebook is not None:
        annotations[LABEL_PREFIX + "notebook"] = request.notebook
    return LaunchPlan(
        image=image,
        notebook=request.notebook,
        default_url=notebook_url(request.notebook),
        size=size,
        labels=labels,
        annotations=annotations,
        anonymous=anonymous,
    )
