"""Who counts as an anonymous (throw-away) learner, a "guest".

One rule and one set of settings for the authenticator, the spawner, the culler and the
builds API, so that "anonymous" means the same thing everywhere: a member of the
anonymous group (``GuestPolicy.anonymous_group``, default ``anonymous``), or, unless
``GuestPolicy.uuid_names_are_anonymous`` is off, a user whose name is a canonical UUID, as
``/tmplogin`` creates them. The hub and the ``cnbi`` service both load
``jupyterhub_config.py``, so both read the same ``c.GuestPolicy`` and cannot disagree.

Pure: no I/O.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from traitlets import Bool, Unicode
from traitlets.config import Configurable

ANONYMOUS_GROUP = "anonymous"


def is_uuid_name(name: str) -> bool:
    """True for names ``/tmplogin`` could have made: a canonical lower-case UUID."""
    try:
        return str(uuid.UUID(name)) == name
    except (ValueError, TypeError, AttributeError):
        return False


def is_anonymous(
    name: str,
    groups: Iterable[str] = (),
    *,
    group: str = ANONYMOUS_GROUP,
    uuid_names: bool = True,
) -> bool:
    """Is this user one of the throw-away learners?"""
    return group in set(groups) or (uuid_names and is_uuid_name(name))


def new_anonymous_name() -> str:
    """A fresh user name for an anonymous learner (UUID4, canonical form)."""
    return str(uuid.uuid4())


class GuestPolicy(Configurable):
    """Who is a guest (anonymous learner): read by the hub and the ``cnbi`` service alike."""

    anonymous_group = Unicode(
        ANONYMOUS_GROUP,
        help="""Hub group of the anonymous learners: /tmplogin adds every guest to it
        (creating it if missing); the culler, the spawner and the builds API treat its
        members as guests.""",
    ).tag(config=True)

    uuid_names_are_anonymous = Bool(
        True,
        help="""Also treat users whose name is a canonical UUID (as /tmplogin makes them)
        as guests, even outside anonymous_group.""",
    ).tag(config=True)

    def is_guest(self, name: str, groups: Iterable[str] = ()) -> bool:
        return is_anonymous(
            name, groups, group=self.anonymous_group, uuid_names=self.uuid_names_are_anonymous
        )
