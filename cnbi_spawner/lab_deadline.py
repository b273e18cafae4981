"""The hub tells a learner's server when the culler will stop it: the culler's own rule.

Policy: the learner-lab server extension (in the learner's pod, with the server's own API
token) asks ``GET /hub/api/cnbi/deadline/<user>[/<server>]`` and shows what it answers; it
computes no deadline itself. The answer is
:func:`cnbi_spawner.service.cull_policy.session_deadline` applied to the hub's own record of
that server (``started``, ``last_activity``) with the ``CullerSettings`` and ``GuestPolicy``
of the hub's configuration, which the ``cnbi`` service (the culler) loads from the same
``jupyterhub_config.py``: so the warning and the cull come from one rule and one set of
numbers. Needs ``read:users:activity`` on the user (a server's token has it through
``users:activity``); 404 for an unknown user or a server that is not running.

Registered by the production configuration in ``c.JupyterHub.extra_handlers`` (``HANDLERS``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.scopes import needs_scope
from tornado import web

from .anonymous import GuestPolicy
from .service.cull_policy import session_deadline
from .service.settings import CullerSettings

ROUTE = r"/api/cnbi/deadline/(?P<user_name>[^/]+)(?:/(?P<server_name>[^/]*))?"


def _iso(when: datetime | None) -> str | None:
    if when is None:
        return None
    aware = when if when.tzinfo else when.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")


class DeadlineHandler(APIHandler):
    """``GET /hub/api/cnbi/deadline/<user>[/<server>]`` (see the module docstring)."""

    @needs_scope("read:users:activity")
    async def get(self, user_name: str, server_name: str | None = None) -> None:
        server_name = server_name or ""
        user = self.find_user(user_name)
        spawner = user.orm_spawners.get(server_name) if user is not None else None
        if spawner is None or spawner.server is None:
            raise web.HTTPError(404, "No running server of that name")
        config = self.settings["config"]
        guests = GuestPolicy(config=config)
        culler = CullerSettings(config=config)
        policy = culler.policy(
            anonymous_group=guests.anonymous_group, uuid_names=guests.uuid_names_are_anonymous
        )
        model = {
            "name": user.name,
            "groups": [g.name for g in user.groups],
            "servers": {
                server_name: {
                    "started": _iso(spawner.started),
                    "last_activity": _iso(spawner.last_activity),
                }
            },
        }
        answer = session_deadline(model, server_name, policy, culling=culler.cull_every > 0)
        body = {k: _iso(v) if isinstance(v, datetime) else v for k, v in answer.items()}
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({**body, "now": _iso(datetime.now(UTC))}))


HANDLERS = [(ROUTE, DeadlineHandler)]
