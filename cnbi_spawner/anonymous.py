"""Who counts as an anonymous (throw-away) learner.

One pure rule shared by the authenticator, the spawner and the culler, so that
"anonymous" means the same thing everywhere: a member of the anonymous group, or
(optionally) a user whose name is a UUID, as ``/tmplogin`` creates them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

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
