"""The learner-lab pieces without a browser: the spawner's environment and pod parts, the one
deadline rule (what the hub tells JupyterLab and what the culler does, warn stage included),
the server extension's pure parts (learner activity, poll timing, which files are the work)
and the proxy's activity-free routes."""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from traitlets import TraitError
from traitlets.config import Config

from cnbi_spawner.activity_proxy import without_activity
from cnbi_spawner.learner_lab import FILES, LearnerLab, main, with_named
from cnbi_spawner.moved_settings import FROM_LEARNER_LAB, refuse_moved
from cnbi_spawner.pool import POOL_GROUP
from cnbi_spawner.service.cull_policy import CullPolicy, Thresholds, decide, session_deadline

sys.path.insert(0, str(FILES / "python"))
import cnbi_learner_lab as lab  # noqa: E402  (the standalone server extension)

POLICY = CullPolicy(anonymous=Thresholds(600, 3600, True), named=Thresholds(1800, 0, False))


def test_environment_has_the_paths_and_switches_but_no_deadline_numbers():
    env = LearnerLab(activity_interval=30, notice=False).environment()
    assert env["JUPYTER_PATH"] == str(FILES / "data")
    assert env["JUPYTER_CONFIG_PATH"] == str(FILES / "config")
    assert (FILES / "data" / "labextensions" / "cnbi-learner-lab" / "package.json").is_file()
    assert env["JUPYTERHUB_ACTIVITY_INTERVAL"] == "30"
    assert (env["CNBI_LAB_NOTICE"], env["CNBI_LAB_LEARNER_ACTIVITY"]) == ("0", "1")
    assert not {"CNBI_LAB_IDLE_TIMEOUT", "CNBI_LAB_MAX_AGE", "CNBI_LAB_WARN_LEAD"} & set(env)
    assert LearnerLab(enabled=False).environment() == {}


def _at(seconds: float) -> datetime:
    return datetime(2026, 12, 1, 12, 0, tzinfo=UTC) + timedelta(seconds=seconds)


def _user(name: str, started: float, last: float | None, groups=("anonymous",)) -> dict:
    server = {"started": _at(started).isoformat(), "ready": True}
    if last is not None:
        server["last_activity"] = _at(last).isoformat()
    return {"name": name, "groups": list(groups), "servers": {"": server}}


def test_the_hub_answers_the_culler_deadline_and_the_culler_warns_on_the_same_rule():
    policy = CullPolicy(
        anonymous=Thresholds(600, 3600, True), named=Thresholds(1800, 0, False), warn_lead=120
    )
    cases = [  # (user, now, deadline, reason, decision reason)
        (_user("g", 0, 500), 970, 1100, "idle", "active"),
        (_user("g", 0, 500), 990, 1100, "idle", "warn-idle"),
        (_user("g", 0, 500), 1100, 1100, "idle", "idle"),  # the culler stops at the deadline
        (_user("g", 0, None), 100, 600, "idle", "active"),  # no activity yet: since start
        (_user("g", 0, 3400), 3500, 3600, "max-age", "warn-max-age"),
        (_user("author", 0, 0, groups=()), 100, 1800, "idle", "active"),
    ]
    for user, now, deadline, reason, verdict in cases:
        answer = session_deadline(user, "", policy, culling=True)
        assert (answer["deadline"], answer["reason"]) == (_at(deadline), reason), user
        assert answer["warn_at"] == _at(deadline - 120)
        server_decision = decide(user, _at(now), policy)[0]
        assert server_decision.reason == verdict, (user, now)
    named = session_deadline(_user("author", 0, 0, groups=()), "", policy, culling=True)
    assert (named["kind"], named["max_age"], named["max_age_at"]) == ("named", 0, None)
    guest = session_deadline(_user("g", 0, 500), "", policy, culling=True)
    assert (guest["kind"], guest["idle_timeout"], guest["max_age_at"]) == (
        "anonymous",
        600,
        _at(3600),
    )
    off = session_deadline(_user("g", 0, 500), "", policy, culling=False)
    assert (off["deadline"], off["idle_timeout"], off["max_age"]) == (None, 0, 0)
    pool = session_deadline(_user("g", 0, 0, groups=("anonymous", POOL_GROUP)), "", policy, True)
    assert pool["deadline"] is None


def test_poll_comes_back_in_time_for_the_warning():
    assert lab.poll_seconds(120, 500) == 30  # far away: the base interval
    assert lab.poll_seconds(120, 5) == 5  # the warning is due in 5 s
    assert lab.poll_seconds(120, -3) == 30 and lab.poll_seconds(0, None) == 15


class _Kernels:
    def __init__(self, last, states):
        self.last_kernel_activity = last
        self._kernels = {n: type("K", (), {"execution_state": st}) for n, st in enumerate(states)}


class _App:
    def __init__(self, **settings):
        self.settings = settings


def test_learner_activity_leaves_out_api_requests_only():
    t0 = _at(0)
    app = _App(
        started=t0,
        kernel_manager=_Kernels(_at(10), ["idle"]),
        api_last_activity=_at(999),  # JupyterLab's polling
        terminal_last_activity=_at(20),
        last_activity_times={},
    )
    assert lab.learner_last_activity(app) == _at(20)
    app.settings[lab.INPUT_KEY] = _at(30)  # the learner typed
    assert lab.learner_last_activity(app) == _at(30)
    app.settings["kernel_manager"] = _Kernels(_at(10), ["idle", "busy"])
    assert lab.learner_last_activity(app) > _at(999)  # running code is activity now


def test_the_proxy_hands_the_hub_user_routes_without_activity():
    routes = {
        "/user/a/": {
            "target": "http://x",
            "data": {"user": "a", "server_name": "", "last_activity": "t"},
        },
        "/": {"target": "http://hub", "data": {"hub": True, "last_activity": "t"}},
    }
    out = without_activity(routes)
    assert out["/user/a/"]["data"] == {"user": "a", "server_name": ""}
    assert out["/"] == routes["/"] and "last_activity" in routes["/user/a/"]["data"]


def test_changed_files_are_new_or_modified_visible_regular_files(tmp_path):
    old = time.time() - 3600
    for name in ("course.ipynb", "data/table.csv", "edited.py"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("from the image")
        os.utime(path, (old, old))
    start = time.time() - 60
    (tmp_path / "edited.py").write_text("changed")
    (tmp_path / "new.txt").write_text("new")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / ".ipynb_checkpoints" / "new-checkpoint.txt").write_text("x")
    (tmp_path / ".hidden").write_text("x")
    (tmp_path / "link.txt").symlink_to(tmp_path / "new.txt")
    found = sorted(p.relative_to(tmp_path).as_posix() for p in lab.changed_files(tmp_path, start))
    assert found == ["edited.py", "new.txt"]


def test_init_container_delivery_builds_the_pod_parts_and_points_the_env_there():
    lab = LearnerLab(init_image="registry.example/hub:1", mount_path="/opt/ll")
    parts = lab.pod_parts()
    assert parts.init_container == {
        "name": "cnbi-learner-lab",
        "image": "registry.example/hub:1",
        "command": ["cnbi-hub", "learner-lab", "/opt/ll"],
        "volumeMounts": [{"name": "cnbi-learner-lab", "mountPath": "/opt/ll"}],
        # limits on every container: a namespace's ResourceQuota on limits admits the pod
        "resources": {
            "requests": {"cpu": "10m", "memory": "32Mi"},
            "limits": {"cpu": "500m", "memory": "128Mi"},
        },
    }
    assert parts.volume == {"name": "cnbi-learner-lab", "emptyDir": {"sizeLimit": "64Mi"}}
    mount = {"name": "cnbi-learner-lab", "mountPath": "/opt/ll", "readOnly": True}
    assert parts.volume_mount == mount
    env = lab.environment()
    assert (env["JUPYTER_PATH"], env["JUPYTER_CONFIG_PATH"]) == ("/opt/ll/data", "/opt/ll/config")
    assert LearnerLab().pod_parts() is None  # no image: the path the pod already sees
    assert LearnerLab(init_image="x:1", enabled=False).pod_parts() is None
    for bad in ("relative/path", "/opt/{username}"):
        with pytest.raises(ValueError, match="absolute path"):
            LearnerLab(init_image="x:1", mount_path=bad).pod_parts()
    mine = {"limits": {"memory": "64Mi"}}
    assert (
        LearnerLab(init_image="x:1", init_resources=mine).pod_parts().init_container["resources"]
        == mine
    )
    assert (
        "resources"
        not in LearnerLab(init_image="x:1", init_resources={}).pod_parts().init_container
    )
    for bad in ({"limit": {"cpu": "1"}}, {"limits": "1"}):
        with pytest.raises(ValueError, match="init_resources"):
            LearnerLab(init_image="x:1", init_resources=bad).pod_parts()


def test_with_named_replaces_an_entry_of_the_same_name():
    mine = {"name": "a", "v": 2}
    assert with_named([{"name": "a", "v": 1}, {"name": "b"}], mine) == [{"name": "b"}, mine]
    assert with_named([], mine) == [mine]


def test_the_init_containers_command_copies_the_built_folder(tmp_path, capsys):
    assert main([str(tmp_path / "to")]) == 0
    copied = sorted(p.relative_to(tmp_path / "to").as_posix() for p in (tmp_path / "to").rglob("*"))
    assert "data/labextensions/cnbi-learner-lab/package.json" in copied
    assert "python/cnbi_learner_lab.py" in copied and "config/jupyter_server_config.py" in copied
    assert not any("__pycache__" in p for p in copied)
    assert "copied" in capsys.readouterr().out


def test_the_old_warn_lead_setting_is_refused_with_its_new_home():
    config = Config({"LearnerLab": {"warn_lead": 30}})
    with pytest.raises(TraitError, match=r"c\.LearnerLab\.warn_lead is now c\.CullerSettings"):
        refuse_moved(config, ["LearnerLab"], FROM_LEARNER_LAB)
