"""The learners' JupyterLab defaults (no "Jupyter news" question): the postStart hook."""

from __future__ import annotations

import json
import subprocess

import pytest

from cnbi_spawner.lab_settings import NO_NEWS, post_start_command, with_lab_settings

FILE = "@jupyterlab/apputils-extension/notification.jupyterlab-settings"


def run(command: list[str], env: dict) -> None:
    subprocess.run(command, env={"PATH": "/usr/bin:/bin", **env}, check=True, timeout=10)


def test_writes_the_default_where_jupyterlab_reads_user_settings(tmp_path):
    command = post_start_command(NO_NEWS)
    run(command, {"HOME": str(tmp_path)})
    written = tmp_path / ".jupyter/lab/user-settings" / FILE
    assert json.loads(written.read_text()) == {"fetchNews": "false"}
    # JUPYTER_CONFIG_DIR and JUPYTERLAB_SETTINGS_DIR move it, as they move JupyterLab's
    run(command, {"HOME": str(tmp_path), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg")})
    assert (tmp_path / "cfg/lab/user-settings" / FILE).is_file()
    run(command, {"HOME": str(tmp_path), "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "s")})
    assert (tmp_path / "s" / FILE).is_file()


def test_keeps_a_choice_the_user_made(tmp_path):
    mine = tmp_path / ".jupyter/lab/user-settings" / FILE
    mine.parent.mkdir(parents=True)
    mine.write_text('{"fetchNews": "true"}')
    run(post_start_command(NO_NEWS), {"HOME": str(tmp_path)})
    assert mine.read_text() == '{"fetchNews": "true"}'


def test_values_are_quoted_not_run(tmp_path):
    evil = {"@a/b:c": {"x": "'; touch pwned; echo '$(touch pwned2)"}}
    run(post_start_command(evil), {"HOME": str(tmp_path)})
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()
    written = tmp_path / ".jupyter/lab/user-settings/@a/b/c.jupyterlab-settings"
    assert json.loads(written.read_text()) == evil["@a/b:c"]


@pytest.mark.parametrize("plugin", ["../x:y", "a b:c", "@a/b", "@a/b:c;rm", ""])
def test_refuses_what_is_not_a_plugin_id(plugin):
    with pytest.raises(ValueError):
        post_start_command({plugin: {"a": 1}})


def test_lifecycle_hooks():
    ours = {"exec": {"command": post_start_command(NO_NEWS)}}
    assert with_lab_settings({}, NO_NEWS) == {"postStart": ours}
    pre = {"preStop": {"exec": {"command": ["true"]}}}
    assert with_lab_settings(pre, NO_NEWS) == {**pre, "postStart": ours}
    assert with_lab_settings({"postStart": ours}, NO_NEWS) == {"postStart": ours}  # restart
    theirs = {"postStart": {"exec": {"command": ["/opt/setup.sh"]}}}
    assert with_lab_settings(theirs, NO_NEWS) is None  # the operator's hook is kept
    assert with_lab_settings(theirs, {}) == theirs
