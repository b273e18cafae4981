"""The package as an operator meets it: installed entry points, the CLI, hub help."""

import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from cnbi_spawner.cli import SUBCOMMANDS, main


@pytest.mark.parametrize(
    "group, name, target",
    [
        ("jupyterhub.spawners", "cnbi", "cnbi_spawner.spawner:CNBiSpawner"),
        ("jupyterhub.authenticators", "tmplogin", "cnbi_spawner.auth:TmpLoginAuthenticator"),
        ("console_scripts", "cnbi-hub", "cnbi_spawner.cli:main"),
    ],
)
def test_entry_points_resolve(group, name, target):
    (ep,) = [ep for ep in entry_points(group=group) if ep.name == name]
    assert ep.value == target
    assert callable(ep.load())


def test_cli_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_subcommand_has_help(name):
    result = subprocess.run(
        [sys.executable, "-m", "cnbi_spawner.cli", name, "--help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) > 3, result.stdout  # real help text, not a stub


def test_unknown_subcommand_fails(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["no-such-command"])
    assert exit_info.value.code == 2


def test_jupyterhub_help_all_lists_our_traits():
    result = subprocess.run(
        [sys.executable, "-m", "jupyterhub", "--help-all"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for option in ("--CNBiSpawner.", "--TmpLoginAuthenticator."):
        assert option in result.stdout, f"{option} missing from jupyterhub --help-all"
