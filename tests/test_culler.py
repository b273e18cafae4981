"""The cull policy (``service/culler.py: decide``) as a table, plus the PVC helpers.

Each row is a user model as ``GET /hub/api/users`` returns it, a policy, and the
expected (server verdicts, user verdict). Times are seconds before NOW.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cnbi_spawner.service.cull_policy import (
    Action,
    CullPolicy,
    Thresholds,
    decide,
    orphan_pvcs,
    parse_time,
    pvc_owner,
)

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
UUID = "0b6e3f5e-8f7a-4c1e-9d2b-5a4c3b2a1f00"


def ago(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return (NOW - timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def server(
    idle: float | None = 10,
    started: float = 100,
    pending: str | None = None,
    ready: bool = True,
) -> dict:
    return {
        "last_activity": ago(idle),
        "started": ago(started),
        "pending": pending,
        "ready": ready and not pending,
    }


def user(
    name: str = UUID,
    groups: tuple[str, ...] = ("anonymous",),
    servers: dict | None = None,
    idle: float | None = 10,
    created: float = 100,
    admin: bool = False,
) -> dict:
    return {
        "name": name,
        "groups": list(groups),
        "admin": admin,
        "created": ago(created),
        "last_activity": ago(idle),
        "servers": servers or {},
    }


POLICY = CullPolicy(
    anonymous=Thresholds(idle_timeout=600, max_age=6 * 3600, cull_users=True),
    named=Thresholds(idle_timeout=3600, max_age=0, cull_users=False),
    abandoned_grace=900,
)
NAMED_USERS_TOO = CullPolicy(
    anonymous=POLICY.anonymous,
    named=Thresholds(idle_timeout=3600, max_age=0, cull_users=True),
    abandoned_grace=900,
)
NO_NAMED_SERVERS = CullPolicy(cull_named_servers=False)

S, K, D = Action.STOP, Action.KEEP, Action.DELETE_USER

# id, user model, policy, [(server, action, reason)...], (user action, user reason)
CASES = [
    ("anon-active", user(servers={"": server(idle=30)}), POLICY,
     [("", K, "active")], (K, "servers-remain")),
    ("anon-idle", user(servers={"": server(idle=601)}), POLICY,
     [("", S, "idle")], (D, "idle")),
    ("anon-idle-exactly-at-limit", user(servers={"": server(idle=600)}), POLICY,
     [("", S, "idle")], (D, "idle")),
    ("anon-by-uuid-name-only", user(groups=(), servers={"": server(idle=700)}), POLICY,
     [("", S, "idle")], (D, "idle")),
    ("anon-max-age-while-active",
     user(servers={"": server(idle=5, started=6 * 3600 + 1)}), POLICY,
     [("", S, "max-age")], (D, "max-age")),
    ("anon-no-activity-yet-uses-started",
     user(servers={"": server(idle=None, started=700)}), POLICY,
     [("", S, "idle")], (D, "idle")),
    ("anon-pending-spawn-never-culled",
     user(servers={"": server(idle=99999, started=99999, pending="spawn")}), POLICY,
     [("", K, "pending-spawn")], (K, "servers-remain")),
    ("anon-pending-stop-never-culled",
     user(servers={"": server(idle=99999, pending="stop")}), POLICY,
     [("", K, "pending-stop")], (K, "servers-remain")),
    ("anon-not-ready-not-pending-left-alone",
     user(servers={"": server(idle=99999, ready=False)}), POLICY,
     [("", K, "not-ready")], (K, "servers-remain")),
    ("anon-two-servers-one-active", user(servers={"": server(idle=700), "b": server(idle=5)}),
     POLICY, [("", S, "idle"), ("b", K, "active")], (K, "servers-remain")),
    ("anon-two-servers-both-idle",
     user(servers={"": server(idle=700), "b": server(idle=5, started=30000)}), POLICY,
     [("", S, "idle"), ("b", S, "max-age")], (D, "idle")),
    ("anon-abandoned-login", user(servers={}, idle=901, created=901), POLICY,
     [], (D, "abandoned")),
    ("anon-fresh-login-no-server-yet", user(servers={}, idle=20, created=20), POLICY,
     [], (K, "recent")),
    ("anon-no-activity-falls-back-to-created", user(servers={}, idle=None, created=1000),
     POLICY, [], (D, "abandoned")),
    ("anon-old-but-recently-active-no-server",
     user(servers={}, idle=10, created=6 * 3600 + 5), POLICY, [], (D, "max-age")),
    ("anon-future-timestamp-counts-as-now", user(servers={"": server(idle=-300)}), POLICY,
     [("", K, "active")], (K, "servers-remain")),
    ("anon-admin-never-deleted", user(servers={"": server(idle=700)}, admin=True), POLICY,
     [("", S, "idle")], (K, "admin")),
    ("named-idle-under-named-timeout",
     user(name="alice", groups=(), servers={"": server(idle=700)}), POLICY,
     [("", K, "active")], (K, "user-culling-off")),
    ("named-idle-over-named-timeout",
     user(name="alice", groups=(), servers={"": server(idle=3601)}), POLICY,
     [("", S, "idle")], (K, "user-culling-off")),
    ("named-no-max-age-by-default",
     user(name="alice", groups=(), servers={"": server(idle=5, started=99999)}), POLICY,
     [("", K, "active")], (K, "user-culling-off")),
    ("named-user-culling-on", user(name="alice", groups=(), servers={"": server(idle=3601)}),
     NAMED_USERS_TOO, [("", S, "idle")], (D, "idle")),
    ("named-no-server-culling-on", user(name="alice", groups=(), servers={}, idle=3601),
     NAMED_USERS_TOO, [], (D, "idle")),
    ("named-no-server-recent-culling-on",
     user(name="alice", groups=(), servers={}, idle=60), NAMED_USERS_TOO, [], (K, "recent")),
    ("named-servers-not-culled-when-off",
     user(servers={"": server(idle=700), "x": server(idle=700)}), NO_NAMED_SERVERS,
     [("", S, "idle"), ("x", K, "named-server")], (K, "servers-remain")),
    ("uuid-name-ignored-when-uuid-rule-off",
     user(groups=(), servers={"": server(idle=700)}), CullPolicy(uuid_names=False),
     [("", K, "active")], (K, "user-culling-off")),
    ("custom-anonymous-group",
     user(name="guest-1", groups=("guests",), servers={"": server(idle=700)}),
     CullPolicy(anonymous_group="guests"), [("", S, "idle")], (D, "idle")),
    ("idle-limit-off",
     user(servers={"": server(idle=99999, started=100)}),
     CullPolicy(anonymous=Thresholds(idle_timeout=0, max_age=0, cull_users=True)),
     [("", K, "active")], (K, "servers-remain")),
]  # fmt: skip


@pytest.mark.parametrize(("model", "policy", "servers", "verdict"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_decide(model, policy, servers, verdict):
    decisions = decide(model, NOW, policy)
    assert [(d.server, d.action, d.reason) for d in decisions[:-1]] == servers
    last = decisions[-1]
    assert last.server is None
    assert (last.action, last.reason) == verdict
    assert all(d.user == model["name"] for d in decisions)


def test_decide_reports_idle_and_age_and_kind():
    d = decide(user(servers={"": server(idle=700, started=800)}), NOW, POLICY)
    assert d[0].idle_seconds == pytest.approx(700)
    assert d[0].age_seconds == pytest.approx(800)
    assert d[0].kind == "anonymous"
    named = decide(user(name="bob", groups=("staff",)), NOW, POLICY)
    assert named[-1].kind == "named"


def test_decide_tolerates_missing_fields():
    # a model with only a name (e.g. a token without read:users) must not crash or cull
    d = decide({"name": "alice"}, NOW, POLICY)
    assert [x.action for x in d] == [Action.KEEP]


def test_no_server_information_never_deletes():
    # without read:servers the model has no "servers": an old learner may still be running
    model = user(servers={}, idle=99999, created=99999)
    del model["servers"]
    assert [(d.action, d.reason) for d in decide(model, NOW, POLICY)] == [
        (Action.KEEP, "servers-unknown")
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-25T11:00:00Z", datetime(2026, 11, 25, 11, tzinfo=UTC)),
        ("2026-11-25T11:00:00.123456Z", datetime(2026, 11, 25, 11, 0, 0, 123456, tzinfo=UTC)),
        ("2026-11-25T11:00:00", datetime(2026, 11, 25, 11, tzinfo=UTC)),
        ("2026-11-25T12:00:00+01:00", datetime(2026, 11, 25, 11, tzinfo=UTC)),
        (None, None),
        ("", None),
        ("yesterday", None),
    ],
)
def test_parse_time(text, expected):
    assert parse_time(text) == expected


def pvc(name, owner, created_ago, *, annotate=True):
    meta = {
        "name": name,
        "labels": {"component": "singleuser-storage", "hub.jupyter.org/username": owner},
        "creationTimestamp": ago(created_ago),
    }
    if annotate:
        meta["annotations"] = {"hub.jupyter.org/username": owner}
    return {"metadata": meta}


def test_pvc_owner_prefers_annotation():
    p = pvc("claim-x", "x", 10)
    p["metadata"]["annotations"]["hub.jupyter.org/username"] = "X@y"
    assert pvc_owner(p) == "X@y"
    assert pvc_owner(pvc("claim-x", "x", 10, annotate=False)) == "x"
    assert pvc_owner({"metadata": {"name": "other"}}) is None


def test_orphan_pvcs_only_old_anonymous_unknown_owners():
    other = "1c6e3f5e-8f7a-4c1e-9d2b-5a4c3b2a1f00"
    young = "2c6e3f5e-8f7a-4c1e-9d2b-5a4c3b2a1f00"
    pvcs = [
        pvc("claim-known", UUID, 5000),  # its user still exists
        pvc("claim-orphan", other, 5000),  # user gone, old: sweep
        pvc("claim-young", young, 30),  # user maybe just created: leave
        pvc("claim-alice", "alice", 5000),  # named user's storage: never
    ]
    out = orphan_pvcs(pvcs, {UUID}, NOW, POLICY)
    assert [p["metadata"]["name"] for p in out] == ["claim-orphan"]
