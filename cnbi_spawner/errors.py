"""Typed errors that carry their user-facing meaning.

Every way a launch can be refused is one class here, with the HTTP status it
maps to and a message written for the learner (never a stack trace, never raw
input echoed back unescaped: templates escape ``message``).
Handlers turn a ``LaunchError`` into an error page or a JSON body; nothing is
created or spawned when one is raised.
"""

from __future__ import annotations


class LaunchError(Exception):
    """Base class: a launch request that cannot be served as asked."""

    status: int = 400

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    def to_json(self) -> dict:
        return {"status": self.status, "error": type(self).__name__, "message": self.message}


class SelectionError(LaunchError):
    """A launch parameter is malformed or not allowed (400)."""

    status = 400


MAX_SHOWN_NAME = 80


def shown_name(name: str) -> str:
    """``name`` as it may appear in a message: printable characters only (no control,
    bidi or zero-width characters), at most ``MAX_SHOWN_NAME`` of them. Pages escape it."""
    text = "".join(ch if ch.isprintable() else "\ufffd" for ch in name.strip())
    return text if len(text) <= MAX_SHOWN_NAME else text[: MAX_SHOWN_NAME - 1] + "…"


class UnknownImage(LaunchError):
    """No launchable image answers to that name (404), or the name is ambiguous."""

    status = 404

    def __init__(
        self, name: str, suggestions: tuple[str, ...] = (), *, ambiguous: bool = False
    ) -> None:
        self.name = name
        self.suggestions = tuple(suggestions)
        self.ambiguous = ambiguous
        if ambiguous:
            message = (
                "That course name matches more than one image; please use one of the full names."
            )
        elif shown_name(name):
            message = f"There is no course image named '{shown_name(name)}'."
        else:
            message = "There is no course image with that name."
        if self.suggestions:
            message += " Did you mean: " + ", ".join(self.suggestions) + "?"
        super().__init__(message)

    def to_json(self) -> dict:
        return {**super().to_json(), "suggestions": list(self.suggestions)}


class RegistryNotReady(LaunchError):
    """The image registry has not synced yet, so no launch can be checked (503)."""

    status = 503
    retry_after = 5

    def __init__(self, message: str = "The hub is still loading its course images.") -> None:
        super().__init__(message + f" Please try again in {self.retry_after} seconds.")


class BadSignature(LaunchError):
    """The launch link's signature is missing, wrong or expired (403)."""

    status = 403


class Throttled(LaunchError):
    """Too many launches (429) or the hub is at capacity (503); retry later."""

    def __init__(self, message: str, *, retry_after: int, status: int = 429) -> None:
        self.retry_after = max(1, int(retry_after))
        super().__init__(
            f"{message} Please try again in {self.retry_after} seconds.", status=status
        )
