"""The docs describe what the code has: no invented knobs, nothing left out, a clean build.

- every ``Class.option`` the docs name exists on that class;
- every ``CNBI_*`` variable the docs name is read by the code, and every one that
  ``jupyterhub_config.py`` reads is in the environment reference;
- every configurable class of the package with options is in the configuration reference;
- every ``cnbi-hub SUBCOMMAND`` / ``cnbi-devcluster SUBCOMMAND`` the docs and READMEs
  name exists;
- ``sphinx-build -W`` (warnings are errors) succeeds: broken links, missing files,
  autodoc import failures.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest
from traitlets.config import Configurable

import cnbi_spawner

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CONFIG = ROOT / "cnbi_spawner" / "config" / "jupyterhub_config.py"


def doc_texts() -> dict[str, str]:
    return {
        str(p.relative_to(DOCS)): p.read_text()
        for p in sorted(DOCS.rglob("*.md"))
        if "_build" not in p.parts
    }


def package_modules() -> list:
    out = []
    for info in pkgutil.walk_packages(cnbi_spawner.__path__, "cnbi_spawner."):
        out.append(importlib.import_module(info.name))
    return out


def our_configurables() -> dict[str, type]:
    found = {}
    for module in package_modules():
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, Configurable)
                and obj.__module__ == module.__name__
                and obj.class_own_traits(config=True)
            ):
                found[name] = obj
    return found


def known_classes() -> dict[str, type]:
    from jupyterhub.app import JupyterHub
    from jupyterhub.auth import Authenticator
    from jupyterhub.proxy import ConfigurableHTTPProxy
    from kubespawner import KubeSpawner

    from cnbi_spawner.auth import TmpLoginAuthenticator

    return {
        **our_configurables(),
        "TmpLoginAuthenticator": TmpLoginAuthenticator,
        "JupyterHub": JupyterHub,
        "KubeSpawner": KubeSpawner,
        "Authenticator": Authenticator,
        "ConfigurableHTTPProxy": ConfigurableHTTPProxy,
    }


def test_every_option_named_in_the_docs_exists():
    classes = known_classes()
    pattern = re.compile(r"\b(" + "|".join(classes) + r")\.([a-z_][a-z0-9_]*)\b")
    missing = []
    for page, text in doc_texts().items():
        for cls_name, option in pattern.findall(text):
            traits = classes[cls_name].class_traits(config=True)
            if option not in traits:
                missing.append(f"{page}: {cls_name}.{option}")
    assert not missing, "options the docs name but the code lacks:\n" + "\n".join(missing)


def code_text() -> str:
    # the test suite's own switches (e.g. CNBI_UPDATE_SCREENSHOTS) count as code too
    files = [
        p
        for top in ("cnbi_spawner", "devcluster", "tests")
        for p in sorted((ROOT / top).rglob("*.py"))
    ]
    return "\n".join(p.read_text() for p in files if p.is_file())


def test_every_env_var_named_in_the_docs_is_read_by_the_code():
    code = code_text()
    invented = sorted(
        f"{page}: {name}"
        for page, text in doc_texts().items()
        for name in set(re.findall(r"\bCNBI_[A-Z0-9_]*[A-Z0-9]\b", text))
        if f'"{name}"' not in code and name not in {"CNBI_POD_IP"}  # helm helper variable
    )
    assert not invented, "variables the docs name but nothing reads:\n" + "\n".join(invented)


def test_every_config_env_var_is_in_the_environment_reference():
    assert CONFIG.is_file(), "jupyterhub_config.py (the production config) is missing"
    names = set(re.findall(r"""\benv\w*\(\s*["'](CNBI_\w+)["']""", CONFIG.read_text()))
    assert names
    reference = (DOCS / "reference" / "environment.md").read_text()
    missing = sorted(n for n in names if f"`{n}`" not in reference)
    assert not missing, f"not in docs/reference/environment.md: {missing}"


def test_every_configurable_class_is_in_the_configuration_reference():
    """Each class with options: an ``autoconfigurable`` entry, or each option named."""
    reference = (DOCS / "reference" / "configuration.md").read_text()
    documented = set(re.findall(r"\.\. autoconfigurable:: ([\w.]+)", reference))
    missing = []
    for name, cls in our_configurables().items():
        if f"{cls.__module__}.{name}" in documented:
            continue
        missing += [
            f"{name}.{option}"
            for option in cls.class_own_traits(config=True)
            if f"{name}.{option}" not in reference
        ]
    assert not missing, f"options missing from docs/reference/configuration.md: {missing}"
    assert len(documented) >= 6


def test_every_command_named_in_the_docs_exists():
    from cnbi_devcluster.cli import SUBCOMMANDS as DEV_SUBCOMMANDS
    from cnbi_spawner.cli import SUBCOMMANDS

    commands = {"cnbi-hub": SUBCOMMANDS, "cnbi-devcluster": DEV_SUBCOMMANDS}
    texts = {**doc_texts(), "README.md": (ROOT / "README.md").read_text()}
    texts["devcluster/README.md"] = (ROOT / "devcluster" / "README.md").read_text()
    texts["benchmarks/README.md"] = (ROOT / "benchmarks" / "README.md").read_text()
    wrong = sorted(
        f"{page}: {prog} {sub}"
        for page, text in texts.items()
        for prog, sub in re.findall(r"\b(cnbi-hub|cnbi-devcluster) ([a-z][a-z-]*)", text)
        if sub not in commands[prog]
    )
    assert not wrong, "commands the docs name but the CLIs lack:\n" + "\n".join(wrong)


@pytest.mark.slow
def test_docs_build_without_warnings(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(DOCS), str(tmp_path / "html")],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "html" / "reference" / "configuration.html").is_file()
    html = (tmp_path / "html" / "reference" / "configuration.html").read_text()
    for option in (
        "known_images",
        "max_anonymous_users",
        "label_selector",
        "anonymous_idle_timeout",
    ):
        assert option in html, f"{option} missing from the generated reference"
