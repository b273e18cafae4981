"""The launch grammar: what a launch parameter, a course or size name and an image reference
may look like. One owner for each of these rules, read by every module that checks them
(selection, signing, the tmplogin handler, the spawner, image sources, sizes, builds).

Rules:

- **Parameter names**: ``course`` (alias ``image``), ``notebook``, ``size`` are launch
  options; ``sig``, ``exp`` (signed links, :mod:`cnbi_spawner.signing`) and ``ticket``
  (launch tickets) are link parameters, carried along but never launch options.
- **Query values** (:func:`flatten`): a ``str``, UTF-8 ``bytes`` or a one-element list of
  those (tornado gives ``dict[str, list[bytes]]``, the hub's spawn form lists, the REST API
  any JSON). A repeated, empty-list, non-UTF-8 or non-text value is refused.
- **Course names** (:func:`is_course_name`): 1-256 characters from
  ``A-Z a-z 0-9 . _ : @ + / -``, starting with a letter or digit. 256 is also the longest
  name the image index keeps.
- **Size names** (:func:`is_size_name`): compared lower-cased; a Kubernetes-label-like name,
  1-63 characters of ``a-z 0-9 - _ .``, starting and ending with a letter or digit.
- **Image references** (:func:`split_image_ref`): ``[host[:port]/]path[:tag][@digest]`` by
  the distribution reference grammar, with two limits that are ours: the digest must be
  ``sha256:<64 hex>`` or ``sha512:<128 hex>`` (the algorithms registries use; any other is
  refused, so nothing unknown reaches a pod spec), and the repository name is at most 255
  characters (the distribution spec's limit). A first component is a host only with a dot, a
  port, or ``localhost`` (as docker reads it).

Pure: no I/O, no imports beyond the standard library.
"""

from __future__ import annotations

import re

# --- parameter names -------------------------------------------------------------------
COURSE = "course"
IMAGE = "image"  # alias of course (MIT OL links)
NOTEBOOK = "notebook"
SIZE = "size"
SIG = "sig"
EXP = "exp"
TICKET = "ticket"
RESERVATION = "reservation"  # a class reservation's name (covered by the signature)
#: the launch options a link, the spawn form or the REST API may carry
LAUNCH_OPTIONS = frozenset({COURSE, IMAGE, NOTEBOOK, SIZE})
#: parameters of the link itself: signature, expiry, launch ticket, reservation (never
#: launch options)
LINK_PARAMS = frozenset({SIG, EXP, TICKET, RESERVATION})

# --- query values ----------------------------------------------------------------------


class QueryValueError(ValueError):
    """A query value that is not one piece of text; ``reason`` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # "repeated" | "empty" | "encoding" | "type"


def flatten(raw: object) -> str:
    """One text value from a str/bytes or a one-element list of them (see module doc)."""
    if isinstance(raw, list | tuple):
        if len(raw) > 1:
            raise QueryValueError("repeated")
        if not raw:
            raise QueryValueError("empty")
        raw = raw[0]
    if isinstance(raw, bytes | bytearray):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise QueryValueError("encoding") from None
    if not isinstance(raw, str):
        raise QueryValueError("type")
    return raw


# --- names -----------------------------------------------------------------------------
MAX_NAME_CHARS = 256
_COURSE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+/-]*\Z")
_SIZE_RE = re.compile(r"[a-z0-9](?:[-a-z0-9_.]{0,61}[a-z0-9])?\Z")


def is_course_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and 0 < len(name) <= MAX_NAME_CHARS
        and _COURSE_RE.match(name) is not None
    )


def is_size_name(name: object) -> bool:
    """A valid size name once lower-cased (callers lower-case what they compare)."""
    return isinstance(name, str) and _SIZE_RE.match(name.lower()) is not None


# --- image references ------------------------------------------------------------------
MAX_REPOSITORY_CHARS = 255
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_PORT = r"(?::[0-9]{1,5})"
_DOMAIN = rf"(?:localhost{_PORT}?|{_LABEL}(?:\.{_LABEL})+{_PORT}?|{_LABEL}{_PORT})"
TAG_PATTERN = r"\w[\w.-]{0,127}"
DIGEST_PATTERN = r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}"
_IMAGE_REF_RE = re.compile(
    rf"(?P<repo>(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*)"
    rf"(?::(?P<tag>{TAG_PATTERN}))?(?:@(?P<digest>{DIGEST_PATTERN}))?",
    re.ASCII,
)
_DIGEST_RE = re.compile(DIGEST_PATTERN, re.ASCII)
#: longest reference: repository, ":" + tag, "@" + sha512 digest
MAX_IMAGE_REF_CHARS = MAX_REPOSITORY_CHARS + 1 + 128 + 1 + 135


def split_image_ref(ref: object) -> tuple[str, str, str] | None:
    """``repo[:tag][@digest]`` -> ``(repo, tag, digest)``; ``None`` if not a valid reference."""
    if not isinstance(ref, str) or not ref or len(ref) > MAX_IMAGE_REF_CHARS:
        return None
    m = _IMAGE_REF_RE.fullmatch(ref)
    if not m or len(m["repo"]) > MAX_REPOSITORY_CHARS:
        return None
    return m["repo"], m["tag"] or "", m["digest"] or ""


def is_image_ref(ref: object) -> bool:
    return split_image_ref(ref) is not None


def is_digest(value: object) -> bool:
    return isinstance(value, str) and _DIGEST_RE.fullmatch(value) is not None
