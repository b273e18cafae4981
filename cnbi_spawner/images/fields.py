"""Validators for the values an image source hands us (annotations, static config).

Names and image references follow :mod:`cnbi_spawner.launch_grammar`.

Every value read from an ImageStream annotation or an operator's config file
passes through one of these pure functions before it reaches a ``KnownImage``.
They never raise on bad input: they return ``None`` / an empty result plus a
human-readable problem string, so a parser can log it and keep the image.
Nothing here does I/O.
"""

from __future__ import annotations

import json
import re
from typing import TypeGuard

from ..launch_grammar import TAG_PATTERN, is_course_name, is_image_ref, is_size_name
from .model import Package

#: Caps that keep a hostile annotation from costing memory or CPU.
MAX_JSON_CHARS = 64 * 1024
MAX_TEXT_CHARS = 2048
MAX_DISPLAY_CHARS = 256  # display names, creators
MAX_LIST_ITEMS = 256
MAX_NOTEBOOK_PATH_BYTES = 1024
_INTERN_LIMIT = 100_000  # entries in each de-duplication table (cleared when full)

_TRAILING_COMMA_RE = re.compile(r",\s*([\]}])")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


_K8S_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", re.ASCII)
_TAG_RE = re.compile(TAG_PATTERN, re.ASCII)
_URL_RE = re.compile(r"https?://[^\s\x00-\x1f\x7f\"'<>\\]{1,1000}", re.ASCII | re.IGNORECASE)


def is_k8s_name(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _K8S_NAME_RE.fullmatch(value) is not None


def is_tag(value: object) -> TypeGuard[str]:
    """An image tag as docker and OpenShift allow it (ASCII word chars, '.', '-')."""
    return isinstance(value, str) and _TAG_RE.fullmatch(value) is not None


def safe_url(value: object) -> str:
    """An http(s) URL, or an image reference (BYON streams put one there); else ""."""
    if not isinstance(value, str):
        return ""
    value = value.strip()
    if _URL_RE.fullmatch(value) or is_image_ref(value):
        return value
    return ""


_SHARED: dict[str, str] = {}


def text(value: object, limit: int = MAX_TEXT_CHARS) -> str:
    """An annotation as display text: a string, control characters replaced, capped.

    Equal texts come back as one shared object (streams made from one manifest repeat
    descriptions, creators and URLs), bounded so hostile input cannot grow it forever.
    """
    if not isinstance(value, str):
        return ""
    value = _CONTROL_RE.sub(" ", value).strip()[:limit]
    found = _SHARED.get(value)
    if found is None:
        if len(_SHARED) >= _INTERN_LIMIT:
            _SHARED.clear()
        found = _SHARED[value] = value
    return found


def flag(value: object) -> bool:
    """ODH boolean annotations are the strings "true"/"false"."""
    return isinstance(value, str) and value.strip().lower() == "true"


def parse_order(value: object, default: int = 100) -> tuple[int, str | None]:
    if value is None or value == "":
        return default, None
    try:
        if not isinstance(value, (str, int)) or isinstance(value, bool) or len(str(value)) > 12:
            raise ValueError
        return int(str(value).strip()), None
    except ValueError:
        return default, f"order {str(value)[:40]!r} is not an integer; using {default}"


def load_json(value: object, what: str) -> tuple[object, str | None]:
    """Lenient JSON: tolerates trailing commas (the usual hand-edit mistake)."""
    if not isinstance(value, str) or not value.strip():
        return None, None
    if len(value) > MAX_JSON_CHARS:
        return None, f"{what}: value of {len(value)} characters is too long; ignored"
    try:
        return json.loads(value), None
    except json.JSONDecodeError as e:
        first = f"{what}: invalid JSON ({e.msg} at line {e.lineno})"
    try:
        return json.loads(
            _TRAILING_COMMA_RE.sub(r"\1", value)
        ), first + "; read after dropping trailing commas"
    except ValueError:
        return None, first + "; ignored"


_PACKAGES: dict[tuple[str, str], Package] = {}
_PACKAGE_LISTS: dict[str, tuple[Package, ...]] = {}


def _package(name: str, version: str) -> Package:
    """One shared Package per (name, version): 30k images list the same few hundred."""
    key = (name, version)
    found = _PACKAGES.get(key)
    if found is None:
        if len(_PACKAGES) >= _INTERN_LIMIT:
            _PACKAGES.clear()
        found = _PACKAGES[key] = Package(name, version)
    return found


def parse_packages(value: object, what: str) -> tuple[tuple[Package, ...], list[str]]:
    """A JSON list of ``{name, version}`` objects -> Packages; bad entries are skipped.

    Results of clean values are cached by their text (tags of one stream, and streams
    built from one manifest, repeat the same annotation), which saves time and memory.
    """
    cached = _PACKAGE_LISTS.get(value) if isinstance(value, str) else None
    if cached is not None:
        return cached, []
    packages, problems = _parse_packages(value, what)
    if isinstance(value, str) and not problems and len(value) <= 8192:
        if len(_PACKAGE_LISTS) >= _INTERN_LIMIT // 10:
            _PACKAGE_LISTS.clear()
        _PACKAGE_LISTS[value] = packages
    return packages, problems


def _parse_packages(value: object, what: str) -> tuple[tuple[Package, ...], list[str]]:
    data, problem = load_json(value, what)
    problems = [problem] if problem else []
    if data is None:
        return (), problems
    if not isinstance(data, list):
        return (), problems + [f"{what}: expected a JSON list; ignored"]
    out: list[Package] = []
    for entry in data[:MAX_LIST_ITEMS]:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            problems.append(f"{what}: skipped an entry without a name")
            continue
        version = entry.get("version", "")
        if isinstance(version, bool) or not isinstance(version, (str, int, float)):
            version = ""
        name = text(entry["name"], 128)
        if name:
            out.append(_package(name, text(str(version), 64)))
    if len(data) > MAX_LIST_ITEMS:
        problems.append(f"{what}: only the first {MAX_LIST_ITEMS} entries kept")
    return tuple(out), problems


def _string_list(value: object, what: str) -> tuple[list[str], list[str]]:
    """JSON list of strings, or a comma-separated string."""
    if not isinstance(value, str) or not value.strip():
        return [], []
    if len(value) > MAX_JSON_CHARS:
        return [], [f"{what}: value of {len(value)} characters is too long; ignored"]
    if value.lstrip().startswith("["):
        data, problem = load_json(value, what)
        problems = [problem] if problem else []
        if not isinstance(data, list):
            return [], problems + ([] if problem else [f"{what}: expected a JSON list"])
        items = [x for x in data if isinstance(x, str)]
        if len(items) != len(data):
            problems.append(f"{what}: skipped entries that are not strings")
        return items, problems
    return [x for x in value.split(",")], []


def parse_aliases(value: object, what: str = "course-aliases") -> tuple[tuple[str, ...], list[str]]:
    """Course aliases, lower-cased; invalid names dropped with a problem string."""
    raw, problems = _string_list(value, what)
    out: list[str] = []
    for item in raw[:MAX_LIST_ITEMS]:
        alias = item.strip().lower()
        if not alias:
            continue
        if is_course_name(alias):
            if alias not in out:
                out.append(alias)
        else:
            problems.append(f"{what}: {alias[:40]!r} is not a valid name; skipped")
    return tuple(out), problems


def normalize_notebook_path(path: object) -> str | None:
    """A safe relative notebook path, normalised; ``None`` when it is not acceptable."""
    if not isinstance(path, str) or not path or "\\" in path or _CONTROL_RE.search(path):
        return None
    if len(path.encode("utf-8", "surrogatepass")) > MAX_NOTEBOOK_PATH_BYTES:
        return None
    if path.startswith("/") or path.startswith("~"):
        return None
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        return None
    return "/".join(parts)


def parse_notebooks(value: object, what: str = "notebooks") -> tuple[tuple[str, ...], list[str]]:
    raw, problems = _string_list(value, what)
    out: list[str] = []
    for item in raw[: MAX_LIST_ITEMS * 4]:
        path = normalize_notebook_path(item.strip())
        if path is None:
            problems.append(f"{what}: {item[:60]!r} is not a safe relative path; skipped")
        elif path not in out:
            out.append(path)
    return tuple(out), problems


def parse_size(value: object, what: str = "default-size") -> tuple[str | None, str | None]:
    if not isinstance(value, str) or not value.strip():
        return None, None
    size = value.strip().lower()
    if is_size_name(size):
        return size, None
    return None, f"{what}: {value[:40]!r} is not a valid size name; ignored"
