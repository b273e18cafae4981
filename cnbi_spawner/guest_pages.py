"""What a guest sees on the hub's own pages: the course, not the hub's machinery.

Policy: on every hub page a guest (``c.GuestPolicy``) sees — the progress page, the waiting
room, error pages — the navigation bar shows no user name (a UUID that means nothing to a
learner), no Home/Token/Admin/Services links and no Logout; the progress page hides its
"Stop Server" button and says which course and notebook are starting, and the page after a
failed or stopped launch names them too (named users see the stock pages, and the stock text
whenever the spawner is not ours). ``c.GuestPages.enabled
= False`` gives guests the stock pages again.

How: the production config puts :data:`TEMPLATES` first on ``c.JupyterHub.template_paths``
(its ``page.html``, ``spawn_pending.html`` and ``not_running.html`` extend the hub's own
``templates/…`` and override only blocks, so a hub upgrade keeps its pages) and adds
:class:`GuestMark` to ``c.JupyterHub.template_vars`` as ``cnbi_guest``: the hub calls it
with the page's user.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from traitlets import Bool
from traitlets.config import Config, Configurable

from .anonymous import GuestPolicy

TEMPLATES = Path(__file__).with_name("hub_templates")
#: the template variable the templates read
TEMPLATE_VAR = "cnbi_guest"


class GuestPages(Configurable):
    """The guest's view of the hub's pages (``c.GuestPages.<option>``)."""

    enabled = Bool(
        True,
        help="""Guests' hub pages (progress, waiting room, errors) hide the user name
        (a UUID), the Home/Token/Admin links, Logout and the progress page's Stop Server
        button, and the progress page names the course and notebook. False: guests see
        the hub's stock pages.""",
    ).tag(config=True)


class GuestMark:
    """``template_vars`` callable: is the page's user a guest who gets the guest pages?

    Holds the hub's config object and reads ``c.GuestPolicy``/``c.GuestPages`` at the first
    page, when every config file has been loaded."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._answer: tuple[GuestPolicy, bool] | None = None

    def __call__(self, user: Any) -> bool:
        if user is None:
            return False
        if self._answer is None:
            enabled = GuestPages(config=self._config).enabled
            self._answer = (GuestPolicy(config=self._config), enabled)
        policy, enabled = self._answer
        return enabled and policy.is_guest(user.name, [g.name for g in user.groups])
