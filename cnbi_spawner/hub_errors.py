"""User-facing refusals on their way to the hub: one ``HTTPError`` type for all of them.

:mod:`cnbi_spawner.errors` (pure) says what was refused, with the status and a message
written for the learner. This module is the one place that turns that into what JupyterHub
shows: a ``tornado.web.HTTPError`` with our status, ``jupyterhub_message`` (which the hub's
spawn page, error page and REST API display, escaped) and ``Retry-After`` when the error
has one. The spawner raises these from its hooks; the tmplogin handler renders them itself
(the hub's ``error.html`` or JSON); a launch that failed while starting is a
:class:`cnbi_spawner.launch_guard.LaunchFailed`, the same kind.
"""

from __future__ import annotations

from tornado import web
from tornado.httputil import responses

from .errors import LaunchError


class UserFacingError(web.HTTPError):
    """An HTTP error whose ``jupyterhub_message`` is written for the person who sees it."""

    def __init__(
        self, status: int, message: str, log_message: str, *, retry_after: int | None = None
    ) -> None:
        super().__init__(status, "%s", log_message, reason=responses.get(status, "Error"))
        self.jupyterhub_message = message  # shown (escaped) by the hub's pages and API
        self.headers = {"Retry-After": str(retry_after)} if retry_after else {}


class LaunchRefused(UserFacingError):
    """A ``LaunchError`` on its way to the hub's pages (nothing was created or started)."""

    def __init__(self, error: LaunchError) -> None:
        super().__init__(
            error.status,
            error.message,
            f"{type(error).__name__}: {error.message}",
            retry_after=getattr(error, "retry_after", None),
        )
        self.launch_error = error
