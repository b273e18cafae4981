"""The learner-lab pieces without a browser: the spawner's environment (from the culler's
own settings) and the server extension's pure parts (deadline, which files are the work)."""

from __future__ import annotations

import os
import sys
import time

import pytest

from cnbi_spawner.learner_lab import FILES, LearnerLab, main, with_named
from cnbi_spawner.service.cull_policy import CullPolicy, Thresholds

sys.path.insert(0, str(FILES / "python"))
import cnbi_learner_lab as lab  # noqa: E402  (the standalone server extension)

POLICY = CullPolicy(anonymous=Thresholds(600, 3600, True), named=Thresholds(1800, 0, False))


def test_environment_takes_the_culler_limits_of_the_kind_of_user():
    guest = LearnerLab().environment(guest=True, policy=POLICY, culling=True)
    named = LearnerLab(warn_lead=30).environment(guest=False, policy=POLICY, culling=True)
    assert guest["CNBI_LAB_IDLE_TIMEOUT"] == "600" and guest["CNBI_LAB_MAX_AGE"] == "3600"
    assert guest["CNBI_LAB_TEMPORARY"] == "1" and guest["CNBI_LAB_WARN_LEAD"] == "120"
    assert named["CNBI_LAB_IDLE_TIMEOUT"] == "1800" and named["CNBI_LAB_MAX_AGE"] == "0"
    assert named["CNBI_LAB_TEMPORARY"] == "0" and named["CNBI_LAB_WARN_LEAD"] == "30"
    assert guest["JUPYTER_PATH"] == str(FILES / "data")
    assert (FILES / "data" / "labextensions" / "cnbi-learner-lab" / "package.json").is_file()
    off = LearnerLab().environment(guest=True, policy=POLICY, culling=False)
    assert off["CNBI_LAB_IDLE_TIMEOUT"] == "0" and off["CNBI_LAB_MAX_AGE"] == "0"
    assert LearnerLab(enabled=False).environment(guest=True, policy=POLICY, culling=True) == {}


def test_deadline_is_the_earlier_of_idle_and_max_age():
    settings = {"idle_timeout": 600.0, "max_age": 3600.0, "started": 1000.0}
    assert lab.deadline(settings, 1500.0) == (2100.0, "idle")
    assert lab.deadline(settings, None) == (1600.0, "idle")  # no activity yet: since start
    assert lab.deadline(settings, 4500.0) == (4600.0, "max-age")
    assert lab.deadline({**settings, "idle_timeout": 0, "max_age": 0}, 1.0) == (None, None)


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
    }
    assert parts.volume == {"name": "cnbi-learner-lab", "emptyDir": {"sizeLimit": "64Mi"}}
    mount = {"name": "cnbi-learner-lab", "mountPath": "/opt/ll", "readOnly": True}
    assert parts.volume_mount == mount
    env = lab.environment(guest=True, policy=POLICY, culling=True)
    assert (env["JUPYTER_PATH"], env["JUPYTER_CONFIG_PATH"]) == ("/opt/ll/data", "/opt/ll/config")
    assert LearnerLab().pod_parts() is None  # no image: the path the pod already sees
    assert LearnerLab(init_image="x:1", enabled=False).pod_parts() is None
    for bad in ("relative/path", "/opt/{username}"):
        with pytest.raises(ValueError, match="absolute path"):
            LearnerLab(init_image="x:1", mount_path=bad).pod_parts()


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
