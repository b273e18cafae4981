"""The packages as an operator meets them: installed entry points, the CLIs, hub help.

Two distributions: the product ``cnbi-spawner`` (``cnbi-hub``) and its dev cluster + demo
``cnbi-devcluster`` (``cnbi-devcluster``), which the product never imports.
"""

import re
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from cnbi_devcluster.cli import SUBCOMMANDS as DEV_SUBCOMMANDS
from cnbi_devcluster.cli import main as dev_main
from cnbi_spawner.cli import SUBCOMMANDS, main

CLIS = {"cnbi_spawner.cli": (main, SUBCOMMANDS), "cnbi_devcluster.cli": (dev_main, DEV_SUBCOMMANDS)}


@pytest.mark.parametrize(
    "group, name, target",
    [
        ("jupyterhub.spawners", "cnbi", "cnbi_spawner.spawner:CNBiSpawner"),
        ("jupyterhub.authenticators", "tmplogin", "cnbi_spawner.auth:TmpLoginAuthenticator"),
        ("console_scripts", "cnbi-hub", "cnbi_spawner.cli:main"),
        ("console_scripts", "cnbi-devcluster", "cnbi_devcluster.cli:main"),
        ("pytest11", "cnbi_devcluster", "cnbi_devcluster.pytest_plugin"),
    ],
)
def test_entry_points_resolve(group, name, target):
    (ep,) = [ep for ep in entry_points(group=group) if ep.name == name]
    assert ep.value == target
    loaded = ep.load()
    if group == "pytest11":  # a plugin module with the dev cluster fixtures
        assert {"devcluster", "stub_devcluster", "make_devcluster"} <= set(vars(loaded))
    else:
        assert callable(loaded)


@pytest.mark.parametrize("cli", sorted(CLIS))
def test_cli_help_lists_every_subcommand(capsys, cli):
    cli_main, subcommands = CLIS[cli]
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in subcommands:
        assert name in out


@pytest.mark.parametrize(
    "cli, name", [(cli, name) for cli, (_, subs) in sorted(CLIS.items()) for name in sorted(subs)]
)
def test_every_subcommand_has_help(cli, name):
    result = subprocess.run(
        [sys.executable, "-m", cli, name, "--help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) > 3, result.stdout  # real help text, not a stub


@pytest.mark.parametrize("cli", sorted(CLIS))
def test_unknown_subcommand_fails(capsys, cli):
    with pytest.raises(SystemExit) as exit_info:
        CLIS[cli][0](["no-such-command"])
    assert exit_info.value.code == 2


def test_product_cli_has_no_dev_subcommands():
    """The dev cluster and the demo moved to ``cnbi-devcluster``; ``cnbi-hub`` is the product's."""
    assert not {"demo", "devcluster", "serve"} & set(SUBCOMMANDS)


def test_product_code_never_imports_the_dev_cluster():
    import pathlib

    import cnbi_spawner

    root = pathlib.Path(cnbi_spawner.__file__).parent
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if re.search(r"^\s*(from|import) cnbi_devcluster", p.read_text(), re.M)
    ]
    assert not offenders, offenders


def test_jupyterhub_help_all_lists_our_traits():
    result = subprocess.run(
        [sys.executable, "-m", "jupyterhub", "--help-all"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for option in ("--CNBiSpawner.", "--TmpLoginAuthenticator."):
        assert option in result.stdout, f"{option} missing from jupyterhub --help-all"
