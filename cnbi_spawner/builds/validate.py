"""Is this build request valid? Untrusted JSON body -> ``BuildRequest`` or a field error map.

Policy (what a course author may ask for):

- The body is a JSON (or YAML: ``parse_body``) object of at most ``MAX_BODY_BYTES``; unknown
  keys are refused (400). It is either the spec fields themselves or a whole CustomNBImage
  manifest (``apiVersion: meteor.zone/v1alpha1`` and ``kind: CustomNBImage``, both
  required, ``metadata``, ``spec``), as the CNBi design's samples are written: then
  ``spec`` is the request and ``metadata.name`` only seeds the generated name (anything else
  in ``metadata`` is ignored).
- The design's earlier draft spelled ``pipelines`` as ``action: build|import`` and
  ``displayName`` as ``name``. Both are read (``action: build`` -> ``[prepare, build]``,
  ``action: import`` -> ``[import]``), with a warning saying what to write instead; giving
  both spellings of one field, or another ``action``, is refused with that advice.
- ``displayName`` (required): 1-63 characters after trimming, no control characters;
  unicode is fine, it is only shown to people. ``description``: at most 500 characters.
- ``creator`` is ALWAYS the authenticated hub user. A ``creator`` key in the body is
  accepted and ignored (so a client that echoes an object back keeps working); the
  response carries a warning saying so. It never reaches the CustomNBImage.
- Three kinds of request, told apart by their fields and ``pipelines``
  (a subset of import|prepare|build, inferred when absent):
    * import     ``pipelines: [import]``; needs ``baseImage`` (the image to import);
                 nothing else build-related.
    * package-list  ``pipelines`` ⊆ {prepare, build}; needs ``packageVersions``
                 and exactly one of ``baseImage`` / ``runtimeEnvironment``.
    * gitrepo    ``pipelines`` ⊆ {prepare, build}; needs an ``https://`` ``repoURL``
                 (optional ``ref``) and exactly one of ``baseImage`` / ``runtimeEnvironment``;
                 no ``packageVersions`` (the repository's own requirements are used).
  ``pipelines: [prepare]`` alone is the design's own package-list sample: by its "multiple
  Tasks, single PipelineRun" answer it means the whole flow, so it becomes
  ``[prepare, build]`` (``[build]`` alone stays as asked: the build pipeline prepares itself).
- ``packageVersions``: 1-200 PEP 508 requirement strings (``packaging``), each at most
  200 characters, no direct URL references (``name @ url``), no duplicate names.
- ``baseImage``: an image reference as :mod:`cnbi_spawner.launch_grammar` defines it
  (``[host[:port]/]path[:tag][@sha256:…|@sha512:…]``, no scheme, no spaces).
- ``runtimeEnvironment``: ``{pythonVersion: "3.N", osName?, osVersion?}``.
- ``ttl``: optional whole seconds, 3600..2592000 (30 days).
- The CustomNBImage name is generated: a DNS-1123 slug of ``displayName`` plus a short
  random suffix, unique among ``existing_names``.
- Per-user quota: at most ``max_in_progress`` of the user's builds may be unfinished
  (``check_quota``, over the user's current CustomNBImage objects).

Everything here is pure: no I/O, randomness injectable for tests.
"""

from __future__ import annotations

import json
import re
import secrets
import string
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from cnbi_spawner.builds import GROUP, KIND, VERSION
from cnbi_spawner.errors import LaunchError
from cnbi_spawner.launch_grammar import is_image_ref

MAX_BODY_BYTES = 64 * 1024
MAX_DISPLAY_NAME = 63
MAX_DESCRIPTION = 500
MAX_PACKAGES = 200
MAX_PACKAGE_LEN = 200
MAX_REPO_URL = 500
MIN_TTL, MAX_TTL = 3600, 30 * 24 * 3600
NAME_SLUG_MAX = 30  # + "-" + suffix; leaves room for "cnbi-<name>-package-list" in 63
SUFFIX_LEN = 5

KINDS = ("import", "package-list", "gitrepo")
PIPELINES = ("import", "prepare", "build")
ALLOWED_KEYS = frozenset(
    {
        "displayName",
        "description",
        "creator",
        "pipelines",
        "baseImage",
        "packageVersions",
        "repoURL",
        "ref",
        "runtimeEnvironment",
        "ttl",
    }
)
ENVELOPE_KEYS = frozenset({"apiVersion", "kind", "metadata", "spec"})
API_VERSION = f"{GROUP}/{VERSION}"
#: the earlier draft's ``spec.action`` -> ``pipelines``
DRAFT_ACTIONS = {"build": ("prepare", "build"), "import": ("import",)}
RUNTIME_KEYS = frozenset({"osName", "osVersion", "pythonVersion"})

# distribution/reference grammar (reference/regexp.go), anchored.
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
PYTHON_VERSION_RE = re.compile(r"3\.[0-9]{1,2}", re.ASCII)
OS_NAME_RE = re.compile(r"[a-z][a-z0-9.-]{0,31}", re.ASCII)
OS_VERSION_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,15}", re.ASCII)
GIT_REF_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}", re.ASCII)
HOST_RE = re.compile(rf"{_DOMAIN}", re.ASCII)


class BuildRequestError(LaunchError):
    """The build request is refused; ``fields`` maps body field -> message for the form."""

    status = 400

    def __init__(
        self, fields: Mapping[str, str], *, message: str = "", status: int | None = None
    ) -> None:
        self.fields = dict(fields)
        if not message:
            message = "The build request is not valid: " + "; ".join(
                f"{k}: {v}" for k, v in self.fields.items()
            )
        super().__init__(message, status=status)

    def to_json(self) -> dict:
        return {**super().to_json(), "fields": self.fields}


class BuildQuotaExceeded(LaunchError):
    """The user already has as many unfinished builds as allowed (429)."""

    status = 429


@dataclass(frozen=True, slots=True)
class RuntimeEnvironment:
    python_version: str
    os_name: str = ""
    os_version: str = ""

    def to_spec(self) -> dict[str, str]:
        spec = {"pythonVersion": self.python_version}
        if self.os_name:
            spec["osName"] = self.os_name
        if self.os_version:
            spec["osVersion"] = self.os_version
        return spec


@dataclass(frozen=True, slots=True)
class BuildRequest:
    """A validated request: everything ``resource.customnbimage`` needs, nothing more."""

    name: str  # DNS-1123 CustomNBImage name
    display_name: str
    creator: str  # the authenticated hub user
    kind: str  # one of KINDS
    pipelines: tuple[str, ...]
    description: str = ""
    base_image: str = ""
    package_versions: tuple[str, ...] = ()
    repo_url: str = ""
    ref: str = ""
    runtime_environment: RuntimeEnvironment | None = None
    ttl: int | None = None
    warnings: tuple[str, ...] = field(default=())


JSON_TYPES = frozenset({"application/json"})
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})


def _load_yaml(text: str) -> object:
    """One YAML document, plain data only: no tags beyond the safe ones, no aliases.

    Aliases are refused so a small body cannot expand into a huge structure.
    """
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            raise ValueError("YAML aliases are not accepted")
    return yaml.safe_load(text)


def parse_body(raw: bytes | str, content_type: str = "application/json") -> object:
    """Decode a request body (bounded size, UTF-8 JSON or YAML); raise ``BuildRequestError``.

    ``content_type`` is the media type without parameters; anything but JSON or YAML is
    refused with 415.
    """
    if content_type not in JSON_TYPES | YAML_TYPES:
        raise BuildRequestError(
            {"body": "send Content-Type: application/json (or application/yaml)"}, status=415
        )
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_BODY_BYTES:
        raise BuildRequestError({"body": f"must be at most {MAX_BODY_BYTES} bytes"}, status=413)
    what = "a JSON object" if content_type in JSON_TYPES else "a YAML mapping"
    try:
        text = raw.decode("utf-8")
        if content_type in JSON_TYPES:
            return json.loads(text)
        return _load_yaml(text)
    except (UnicodeDecodeError, ValueError, RecursionError, yaml.YAMLError):
        raise BuildRequestError({"body": f"must be {what}"}) from None


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch).startswith("C") for ch in text)


def _text(body: Mapping, key: str, errors: dict, *, max_len: int, required: bool = False) -> str:
    value = body.get(key)
    if value is None:
        if required:
            errors[key] = "is required"
        return ""
    if not isinstance(value, str):
        errors[key] = "must be a string"
        return ""
    value = value.strip()
    if required and not value:
        errors[key] = "is required"
    elif len(value) > max_len:
        errors[key] = f"must be at most {max_len} characters"
    elif _has_control(value.replace("\n", "")) or (key != "description" and "\n" in value):
        errors[key] = "must not contain control characters"
    else:
        return value
    return ""


def _packages(value: object, errors: dict) -> tuple[str, ...]:
    key = "packageVersions"
    if not isinstance(value, list):
        errors[key] = "must be a list of package requirements"
        return ()
    if not value:
        errors[key] = "must list at least one package"
        return ()
    if len(value) > MAX_PACKAGES:
        errors[key] = f"must list at most {MAX_PACKAGES} packages"
        return ()
    out: list[str] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(item, str):
            errors[where] = "must be a string"
            continue
        item = item.strip()
        if not item or len(item) > MAX_PACKAGE_LEN:
            errors[where] = f"must be 1-{MAX_PACKAGE_LEN} characters"
            continue
        if not item.isascii() or _has_control(item):
            errors[where] = "must be a PEP 508 requirement (ASCII)"
            continue
        try:
            req = Requirement(item)
        except InvalidRequirement as exc:
            errors[where] = f"is not a valid requirement: {str(exc).splitlines()[0][:120]}"
            continue
        if req.url:
            errors[where] = "direct URL references (name @ url) are not allowed"
            continue
        canon = canonicalize_name(req.name)
        if canon in seen:
            errors[where] = f"{req.name} is listed twice"
            continue
        seen.add(canon)
        out.append(str(req))
    return tuple(out)


def _runtime(value: object, errors: dict) -> RuntimeEnvironment | None:
    key = "runtimeEnvironment"
    if not isinstance(value, dict):
        errors[key] = "must be an object {pythonVersion, osName, osVersion}"
        return None
    unknown = sorted(str(k)[:40] for k in value if k not in RUNTIME_KEYS)
    if unknown:
        errors[key] = "unknown field(s): " + ", ".join(unknown)
        return None
    py, os_name, os_version = (value.get(k) for k in ("pythonVersion", "osName", "osVersion"))
    ok = True
    if not isinstance(py, str) or not PYTHON_VERSION_RE.fullmatch(py):
        errors[f"{key}.pythonVersion"] = 'must look like "3.11"'
        ok = False
    if os_name is not None and (not isinstance(os_name, str) or not OS_NAME_RE.fullmatch(os_name)):
        errors[f"{key}.osName"] = "must be a short lower-case OS name such as ubi"
        ok = False
    if os_version is not None and (
        not isinstance(os_version, str) or not OS_VERSION_RE.fullmatch(os_version)
    ):
        errors[f"{key}.osVersion"] = "must be a short version such as 8 or 22.04"
        ok = False
    if not ok or not isinstance(py, str):
        return None
    return RuntimeEnvironment(py, os_name or "", os_version or "")


def _repo_url(value: object, errors: dict) -> str:
    key = "repoURL"
    if not isinstance(value, str):
        errors[key] = "must be a string"
        return ""
    url = value.strip()
    if len(url) > MAX_REPO_URL:
        errors[key] = f"must be at most {MAX_REPO_URL} characters"
        return ""
    if not url.isascii() or any(c.isspace() or not c.isprintable() for c in url):
        errors[key] = "must be an https:// URL without spaces"
        return ""
    if not url.lower().startswith("https://"):
        errors[key] = "must be an https:// URL"
        return ""
    rest = url[len("https://") :]
    host, _, path = rest.partition("/")
    if "@" in host or not HOST_RE.fullmatch(host) or not path.strip("/"):
        errors[key] = "must be https://host/path (no user info)"
        return ""
    if any(part == ".." for part in path.split("/")) or any(c in url for c in "\\'\"`<>"):
        errors[key] = "must be a plain repository URL"
        return ""
    return url


def _pipelines(value: object, errors: dict) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        errors["pipelines"] = "must be a list of: " + ", ".join(PIPELINES)
        return None
    bad = [p for p in value if p not in PIPELINES]
    if bad:
        errors["pipelines"] = "must be a subset of: " + ", ".join(PIPELINES)
        return None
    if len(set(value)) != len(value) or not value:
        errors["pipelines"] = "must list each pipeline at most once, at least one"
        return None
    return tuple(p for p in PIPELINES if p in value)  # canonical order


def _kind(body: Mapping, pipelines: tuple[str, ...] | None, errors: dict) -> str:
    """Which kind of request is this, and is ``pipelines`` consistent with its fields?"""
    has = {k: body.get(k) not in (None, "", []) for k in ALLOWED_KEYS}
    if pipelines is not None and "import" in pipelines:
        if pipelines != ("import",):
            errors["pipelines"] = "import cannot be combined with prepare or build"
            return ""
        kind = "import"
    elif pipelines is not None:
        kind = "gitrepo" if has["repoURL"] else "package-list"
    else:  # inferred
        if has["repoURL"]:
            kind = "gitrepo"
        elif has["packageVersions"]:
            kind = "package-list"
        else:
            kind = "import"
    if kind == "import":
        if not has["baseImage"]:
            errors["baseImage"] = "is required to import an image"
        for key in ("packageVersions", "repoURL", "ref", "runtimeEnvironment"):
            if has[key]:
                errors[key] = "is not used when importing an image"
    else:
        if has["baseImage"] == has["runtimeEnvironment"]:
            errors["baseImage"] = "give exactly one of baseImage or runtimeEnvironment"
        if kind == "package-list":
            if not has["packageVersions"]:
                errors["packageVersions"] = "is required to build from a package list"
            if has["ref"]:
                errors["ref"] = "is only used with repoURL"
        elif has["packageVersions"]:
            errors["packageVersions"] = "is not used with repoURL (the repository's are)"
    return kind


def slugify(display_name: str) -> str:
    """DNS-1123 label fragment from a display name ("" when nothing ASCII is left)."""
    ascii_text = unicodedata.normalize("NFKD", display_name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:NAME_SLUG_MAX].rstrip("-")


def random_suffix(n: int = SUFFIX_LEN) -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(n))


def generate_name(
    display_name: str,
    existing_names: Iterable[str] = (),
    *,
    suffix: Callable[[], str] = random_suffix,
    attempts: int = 20,
) -> str:
    """A unique DNS-1123 CustomNBImage name: ``<slug>-<suffix>``."""
    taken = set(existing_names)
    base = slugify(display_name) or "image"
    if not base[0].isalpha():
        base = ("i-" + base)[:NAME_SLUG_MAX].rstrip("-")
    for _ in range(attempts):
        name = f"{base}-{suffix()}"
        if name not in taken:
            return name
    raise BuildRequestError({"displayName": "could not generate a unique name; try again"})


def unwrap_manifest(body: dict, errors: dict) -> tuple[dict, str]:
    """(spec fields, name hint) of a body that may be a whole CustomNBImage manifest."""
    if "kind" not in body and "apiVersion" not in body:
        return body, ""
    unknown = sorted(str(k)[:40] for k in body if k not in ENVELOPE_KEYS)
    if unknown:
        errors["body"] = "unknown field(s) in the manifest: " + ", ".join(unknown[:10])
    if body.get("kind") != KIND:
        errors["kind"] = f"must be {KIND}"
    if body.get("apiVersion") != API_VERSION:
        errors["apiVersion"] = f"must be {API_VERSION}"
    spec = body.get("spec")
    if not isinstance(spec, dict):
        errors["spec"] = "must be an object with the request's fields"
        spec = {}
    meta = body.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    return spec, name if isinstance(name, str) else ""


def read_draft(body: dict, errors: dict, warnings: list[str]) -> dict:
    """``body`` with the earlier draft's ``action``/``name`` as ``pipelines``/``displayName``."""
    out = dict(body)
    if "action" in out:
        action = out.pop("action")
        pipelines = DRAFT_ACTIONS.get(action) if isinstance(action, str) else None
        if "pipelines" in out:
            errors["action"] = "is the earlier draft's spelling of pipelines; give pipelines only"
        elif pipelines is None:
            errors["action"] = (
                "must be build or import (the earlier draft's spelling); write "
                "pipelines: [prepare, build] or pipelines: [import] instead"
            )
        else:
            out["pipelines"] = list(pipelines)
            warnings.append(
                f"action: {action} is the earlier draft's spelling; "
                f"write pipelines: [{', '.join(pipelines)}] instead"
            )
    if "name" in out:
        name = out.pop("name")
        if "displayName" in out:
            errors["name"] = "is the earlier draft's spelling of displayName; give displayName only"
        else:
            out["displayName"] = name
            warnings.append("name is the earlier draft's spelling; write displayName instead")
    return out


def validate_request(
    body: object,
    *,
    creator: str,
    existing_names: Iterable[str] = (),
    suffix: Callable[[], str] = random_suffix,
) -> BuildRequest:
    """Validate a decoded body for ``creator`` (the authenticated user) -> ``BuildRequest``.

    Raises ``BuildRequestError`` (400) with every problem found, keyed by field.
    """
    if not isinstance(body, dict):
        raise BuildRequestError({"body": "must be a JSON object"})
    errors: dict[str, str] = {}
    warnings: list[str] = []
    body, name_hint = unwrap_manifest(body, errors)
    body = read_draft(body, errors, warnings)
    unknown = sorted(str(k)[:40] for k in body if k not in ALLOWED_KEYS)
    if unknown:
        errors.setdefault("body", "unknown field(s): " + ", ".join(unknown[:10]))
    if "creator" in body:
        warnings.append("creator is always the signed-in user; the value sent was ignored")

    display_name = _text(body, "displayName", errors, max_len=MAX_DISPLAY_NAME, required=True)
    description = _text(body, "description", errors, max_len=MAX_DESCRIPTION)
    pipelines = _pipelines(body.get("pipelines"), errors)
    kind = _kind(body, pipelines, errors) if "pipelines" not in errors else ""

    base_image = ""
    if body.get("baseImage") not in (None, ""):
        value = body["baseImage"]
        if not isinstance(value, str) or not is_image_ref(value):
            errors.setdefault(
                "baseImage", "must be an image reference like registry.example/org/image:tag"
            )
        else:
            base_image = value
    packages: tuple[str, ...] = ()
    if body.get("packageVersions") not in (None, []) and "packageVersions" not in errors:
        packages = _packages(body["packageVersions"], errors)
    repo_url = ""
    if body.get("repoURL") not in (None, "") and "repoURL" not in errors:
        repo_url = _repo_url(body["repoURL"], errors)
    ref = ""
    if body.get("ref") not in (None, "") and "ref" not in errors:
        value = body["ref"]
        if not isinstance(value, str) or not GIT_REF_RE.fullmatch(value) or ".." in value:
            errors["ref"] = "must be a branch, tag or commit name"
        else:
            ref = value
    runtime = None
    if body.get("runtimeEnvironment") is not None and "runtimeEnvironment" not in errors:
        runtime = _runtime(body["runtimeEnvironment"], errors)
    ttl = None
    if body.get("ttl") is not None:
        value = body["ttl"]
        if isinstance(value, bool) or not isinstance(value, int):
            errors["ttl"] = "must be a whole number of seconds"
        elif not MIN_TTL <= value <= MAX_TTL:
            errors["ttl"] = f"must be between {MIN_TTL} and {MAX_TTL} seconds"
        else:
            ttl = value
    if not isinstance(creator, str) or not creator:
        errors["creator"] = "no authenticated user"
    if errors:
        raise BuildRequestError(errors)

    if pipelines is None or pipelines == ("prepare",):
        pipelines = ("import",) if kind == "import" else ("prepare", "build")
    return BuildRequest(
        name=generate_name(name_hint or display_name, existing_names, suffix=suffix),
        display_name=display_name,
        creator=creator,
        kind=kind,
        pipelines=pipelines,
        description=description,
        base_image=base_image,
        package_versions=packages,
        repo_url=repo_url,
        ref=ref,
        runtime_environment=runtime,
        ttl=ttl,
        warnings=tuple(warnings),
    )


def check_quota(in_progress: int, max_in_progress: int) -> None:
    """Refuse a new build when the user already has ``max_in_progress`` unfinished ones."""
    if max_in_progress >= 0 and in_progress >= max_in_progress:
        raise BuildQuotaExceeded(
            f"You already have {in_progress} builds in progress (limit {max_in_progress}). "
            "Wait for one to finish or delete one."
        )
