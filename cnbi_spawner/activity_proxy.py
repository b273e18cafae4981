"""configurable-http-proxy without its per-route activity: the hub hears activity only from
the single-user servers.

Policy: CHP stamps a route's ``last_activity`` on every request it forwards, and the hub
copies that into the server's and user's ``last_activity`` every
``c.JupyterHub.last_activity_interval`` seconds. An open JupyterLab tab sends requests every
few seconds while the learner is away, so with the proxy's activity an idle learner with an
open tab is never culled. :class:`LearnerActivityProxy` hands the hub the proxy's user routes
without ``last_activity``, the state the hub already handles for proxies that keep none (it
then skips the route); activity comes from the servers' own reports (jupyterhub-singleuser,
which the learner-lab extension limits to the learner's own activity,
``c.LearnerLab.learner_activity``). Everything else (routes, their checks) is CHP's.

Use: ``c.JupyterHub.proxy_class = "cnbi_spawner.activity_proxy.LearnerActivityProxy"`` (the
production config does, unless ``CNBI_PROXY_ACTIVITY`` is true); ``c.ConfigurableHTTPProxy.*``
settings apply to it unchanged.
"""

from __future__ import annotations

from typing import Any

from jupyterhub.proxy import ConfigurableHTTPProxy


def without_activity(routes: dict[str, Any]) -> dict[str, Any]:
    """Pure: ``routes`` (CHP's ``GET /api/routes`` answer) without user routes' activity."""
    out = {}
    for prefix, route in routes.items():
        data = route.get("data") or {}
        if "user" in data and "last_activity" in data:
            data = {k: v for k, v in data.items() if k != "last_activity"}
            route = {**route, "data": data}
        out[prefix] = route
    return out


class LearnerActivityProxy(ConfigurableHTTPProxy):
    """configurable-http-proxy whose routes carry no activity for the hub (module docstring)."""

    async def get_all_routes(self) -> dict[str, Any]:
        return without_activity(await super().get_all_routes())
