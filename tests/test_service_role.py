"""The service's hub role is enough, and every scope in it is needed (real hub).

One hub, one external service per variant: the full ``service_role`` scopes, and
the same minus one scope. Each variant runs the calls a cull pass makes (list
users with ``state``, read the fields ``decide`` needs, stop a server, delete a
user). The full role must do all of them; each reduced role must fail at the
call that needs the missing scope. Servers are instant (a spawner whose
"server" is the hub's own port), so no Kubernetes is involved.
"""

from __future__ import annotations

import uuid

import pytest

from cnbi_spawner.service.app import SERVICE_SCOPES, service_role
from cnbi_spawner.service.hubapi import HubAPIError, HubClient

pytestmark = [pytest.mark.slow]

VARIANTS = {"full": list(SERVICE_SCOPES)}
for _scope in SERVICE_SCOPES:
    VARIANTS[f"minus-{_scope.replace(':', '-')}"] = [s for s in SERVICE_SCOPES if s != _scope]
TOKENS = {name: f"{name}-{uuid.uuid4().hex}" for name in VARIANTS}

CONFIG = f"""
from jupyterhub.spawner import Spawner

class InstantSpawner(Spawner):
    async def start(self):
        return (self.hub.ip or "127.0.0.1", self.hub.port)
    async def stop(self, now=False):
        pass
    async def poll(self):
        return None if self.server else 0

c.JupyterHub.spawner_class = InstantSpawner
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.services = [
    {{"name": name, "api_token": token}} for name, token in {TOKENS!r}.items()
]
_variants = {VARIANTS!r}
c.JupyterHub.load_roles = [
    {{"name": "svc-" + name, "scopes": scopes, "services": [name]}}
    for name, scopes in _variants.items()
]
"""


def test_service_role_shape():
    role = service_role("cnbi")
    assert role["services"] == ["cnbi"]
    assert set(role["scopes"]) == {
        "list:users",
        "read:users",
        "read:servers",
        "delete:servers",
        "delete:users",
    }
    assert not {"admin:users", "admin:servers", "start:servers", "tokens"} & set(role["scopes"])


async def cull_calls(api_url: str, token: str, admin: HubClient) -> dict[str, bool]:
    """Run the calls a pass needs for two fresh learners; which of them worked?"""
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    await admin.create_users([a, b])
    await admin.add_group_members("anonymous", [a, b])
    await admin.start_server(a)
    await admin.start_server(b)
    hub = HubClient(api_url, token, retries=0)
    ok: dict[str, bool] = {}
    try:
        try:
            users = {u["name"]: u for u in await hub.all_users(state="active")}
            ok["list"] = a in users
        except HubAPIError:
            ok["list"], users = False, {}
        model = users.get(a, {})
        ok["fields"] = all(k in model for k in ("groups", "created", "last_activity", "admin"))
        ok["servers"] = bool(model.get("servers", {}).get("", {}).get("started"))
        try:
            ok["stop"] = await hub.stop_server(a)
        except HubAPIError:
            ok["stop"] = False
        try:
            ok["delete"] = await hub.delete_user(b)  # with its running server
        except HubAPIError:
            ok["delete"] = False
    finally:
        hub.close()
    return ok


EXPECTED_FAILURE = {
    "minus-list-users": "list",
    "minus-read-users": "fields",
    "minus-read-servers": "servers",
    "minus-delete-servers": "stop",
    "minus-delete-users": "delete",
}


async def test_each_scope_is_needed_and_the_role_is_enough(start_hub):
    hub = await start_hub(CONFIG)
    admin = HubClient(hub.api_url, hub.api_token)
    try:
        results = {
            name: await cull_calls(hub.api_url, token, admin) for name, token in TOKENS.items()
        }
    finally:
        admin.close()
    assert all(results["full"].values()), results["full"]
    for name, call in EXPECTED_FAILURE.items():
        assert results[name][call] is False, (name, results[name])
