"""The ``notebook`` launch parameter: which file JupyterLab opens, and only safe ones.

Policy (DESIGN §3), applied to the value *after* the hub has URL-decoded the query once:

- the empty string means "no notebook" (the learner lands on ``/lab``);
- at most ``MAX_NOTEBOOK_BYTES`` (1024) bytes of UTF-8, checked before anything else;
- no control or format characters: Unicode categories ``Cc`` (NUL, CR, LF, DEL, …),
  ``Cf`` (bidi overrides, zero-width joiners, BOM, …), ``Cs`` (lone surrogates from JSON),
  ``Zl``/``Zp`` (line/paragraph separators);
- no backslash (a Windows separator or an escape trick), not absolute (no leading ``/``);
- normalised: empty and ``.`` segments are dropped (``a//./b/`` -> ``a/b``); any ``..``
  segment is refused outright (never "resolved"), so the path cannot leave the home folder;
- something must remain (``./`` alone is refused);
- case-sensitive and not Unicode-normalised: the file system decides what exists.

The URL JupyterLab opens is ``/lab/tree/<quote(path)>``: every byte outside the unreserved
set (and ``/``) is percent-encoded, so ``?``, ``#``, ``%``, ``{`` and spaces in a file name
stay part of the name. Pure functions; nothing here touches a file system.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import quote

from .errors import SelectionError

MAX_NOTEBOOK_BYTES = 1024
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def normalise_notebook(value: str) -> str | None:
    """The canonical relative path for ``value``, ``None`` for "no notebook".

    Raises ``SelectionError`` (400) with a message for the learner when the path is not allowed.
    """
    if value == "":
        return None
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates, e.g. "\ud800" from a JSON body
        raise SelectionError(
            "The notebook path contains characters that are not allowed."
        ) from None
    if size > MAX_NOTEBOOK_BYTES:
        raise SelectionError(f"The notebook path is too long (at most {MAX_NOTEBOOK_BYTES} bytes).")
    if any(unicodedata.category(ch) in _FORBIDDEN_CATEGORIES for ch in value):
        raise SelectionError(
            "The notebook path contains control characters, which are not allowed."
        )
    if "\\" in value:
        raise SelectionError("The notebook path may not contain backslashes; use '/'.")
    if value.startswith("/"):
        raise SelectionError(
            "The notebook path must be relative to the home folder (no leading '/')."
        )
    parts = [part for part in value.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise SelectionError("The notebook path may not contain '..'.")
    if not parts:
        raise SelectionError("The notebook path does not name a file.")
    return "/".join(parts)


def notebook_url(path: str | None) -> str:
    """The JupyterLab URL (relative to the server) that opens ``path``."""
    if path is None:
        return "/lab"
    return "/lab/tree/" + quote(path, safe="/")


def listed_notebooks(notebooks: tuple[str, ...]) -> frozenset[str]:
    """The image's own notebook list in canonical form; unusable entries are left out."""
    canonical = set()
    for entry in notebooks:
        try:
            path = normalise_notebook(entry)
        except SelectionError:
            continue
        if path is not None:
            canonical.add(path)
    return frozenset(canonical)
