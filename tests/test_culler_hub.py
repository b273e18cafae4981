"""Cull passes against a real hub (no Kubernetes): dry run, pending spawns, named servers.

The hub runs instant servers (a spawner whose "server" is the hub's own port) and
a spawner whose start never finishes (a pending spawn). The culler is driven
in-process with the service's role token, so each pass is observed exactly.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from cnbi_spawner.service.cull_policy import Action, CullPolicy, Thresholds
from cnbi_spawner.service.culler import Culler
from cnbi_spawner.service.hubapi import HubClient

pytestmark = [pytest.mark.slow]

SERVICE_TOKEN = "cnbi-" + uuid.uuid4().hex

CONFIG = f"""
import asyncio
from jupyterhub.spawner import Spawner
from cnbi_spawner.service.app import service_role

class InstantSpawner(Spawner):
    async def start(self):
        if self.user.name.startswith("slow-"):
            await asyncio.sleep(3600)  # a spawn that stays pending
        return (self.hub.ip or "127.0.0.1", self.hub.port)
    async def stop(self, now=False):
        pass
    async def poll(self):
        return None if self.server else 0

c.JupyterHub.spawner_class = InstantSpawner
c.JupyterHub.allow_named_servers = True
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.Spawner.start_timeout = 3600
c.JupyterHub.services = [{{"name": "cnbi", "api_token": {SERVICE_TOKEN!r}}}]
c.JupyterHub.load_roles = [service_role("cnbi")]
"""

# everything is "idle" after a second: the passes below decide on what exists
POLICY = CullPolicy(
    anonymous=Thresholds(idle_timeout=1, max_age=0, cull_users=True),
    named=Thresholds(idle_timeout=1, max_age=0, cull_users=False),
    abandoned_grace=1,
)


@pytest.fixture
async def hub(start_hub):
    return await start_hub(CONFIG)


async def test_dry_run_then_real_pass(hub):
    admin = HubClient(hub.api_url, hub.api_token)
    service = HubClient(hub.api_url, SERVICE_TOKEN, concurrency=4)
    learners = [str(uuid.uuid4()) for _ in range(3)]
    slow = "slow-" + str(uuid.uuid4())
    try:
        await admin.create_users([*learners, slow, "alice"])
        await admin.add_group_members("anonymous", [*learners, slow])
        for name in [learners[0], learners[1], "alice"]:
            assert await admin.start_server(name) == 201
        await admin.request("POST", "/users/alice/servers/extra", body={})
        assert await admin.start_server(slow) == 202  # pending for good
        await asyncio.sleep(1.5)

        dry = await Culler(service, POLICY, concurrency=4, dry_run=True).run_once()
        assert dry.users_deleted == 3 and dry.servers_stopped == 4
        after_dry = {u["name"]: u for u in await admin.all_users()}
        assert set(after_dry) >= {*learners, slow, "alice"}  # nothing changed
        assert "" in after_dry[learners[0]]["servers"]

        real = await Culler(service, POLICY, concurrency=4).run_once()
        assert real.errors == 0
        assert real.deleted_users == set(learners)  # two with servers, one without
        by_user = {(d.user, d.server): d for d in real.decisions}
        assert by_user[(slow, "")].reason == "pending-spawn"
        assert by_user[(slow, None)].action is Action.KEEP
        assert by_user[("alice", None)].reason == "user-culling-off"
        assert by_user[("alice", "extra")].action is Action.STOP

        left = {u["name"]: u for u in await admin.all_users()}
        assert not set(learners) & set(left)
        assert left[slow]["servers"][""]["pending"] == "spawn"
        assert left["alice"]["servers"] == {}  # both of alice's servers stopped, alice kept
        assert real.anonymous_live == 1  # the slow learner

        again = await Culler(service, POLICY, concurrency=4).run_once()  # idempotent
        assert again.errors == 0 and again.users_deleted == 0
    finally:
        admin.close()
        service.close()
