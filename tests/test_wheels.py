"""The two distributions as a new user gets them: built wheels in a fresh virtualenv.

Builds ``cnbi-spawner`` and ``cnbi-devcluster`` from this checkout, checks what each wheel
carries (the product: no dev code, its production ``jupyterhub_config.py``; the dev
cluster: the product's CRDs, the demo courses), installs both into a new virtualenv (their
dependencies resolved from the package index, as a user's would be), then runs
``cnbi-devcluster demo`` from there, in a folder outside the checkout, and launches a
course: the learner's JupyterLab opens on a home seeded from the installed course folder,
and no process of the demo refers to the checkout.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import aiohttp
import pytest
from harness import BROWSER_NAVIGATION, free_port

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
CHP = ROOT / "node_modules" / ".bin" / "configurable-http-proxy"


def run(*cmd: str | Path, cwd: Path, timeout: float = 600) -> str:
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    dist = tmp_path_factory.mktemp("dist")
    for project in (ROOT, ROOT / "devcluster"):
        run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, project,
            cwd=dist)  # fmt: skip
    found = {p.name.split("-")[0]: p for p in dist.glob("*.whl")}
    assert set(found) == {"cnbi_spawner", "cnbi_devcluster"}, found
    return found


def names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as z:
        return set(z.namelist())


def test_product_wheel_has_no_dev_code_and_ships_its_config(wheels):
    files = names(wheels["cnbi_spawner"])
    assert "cnbi_spawner/config/jupyterhub_config.py" in files
    assert not [f for f in files if "devcluster" in f or f.startswith("cnbi_spawner/demo")]
    metadata = (
        zipfile.ZipFile(wheels["cnbi_spawner"])
        .read(next(f for f in files if f.endswith(".dist-info/METADATA")))
        .decode()
    )
    assert "Requires-Dist: cnbi-devcluster; extra == 'test'" in metadata


def test_dev_cluster_wheel_carries_the_crds_and_the_demo(wheels):
    files = names(wheels["cnbi_devcluster"])
    crds = {f.rsplit("/", 1)[1] for f in files if f.startswith("cnbi_devcluster/crds/")}
    assert crds == {p.name for p in (ROOT / "helm-values" / "crds").glob("*.yaml")}
    assert "cnbi_devcluster/demo/imagestreams.yaml" in files
    assert "cnbi_devcluster/demo/courses/python-basics/intro/01-hello.ipynb" in files


def checkout_refs(pids: list[int]) -> list[str]:
    """Command lines and working folders of ``pids`` that point into the checkout."""
    out = []
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        # the proxy is the one tool taken from the checkout (node_modules), on purpose
        if "configurable-http-proxy" in cmdline:
            continue
        if str(ROOT) in cmdline or cwd.startswith(str(ROOT)):
            out.append(f"{pid}: {cmdline[:200]} (cwd {cwd})")
    return out


def descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


async def test_demo_from_the_installed_wheels_launches_a_course(wheels, tmp_path):
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    py = venv / "bin" / "python"
    run(py, "-m", "pip", "install", "-q", wheels["cnbi_spawner"], wheels["cnbi_devcluster"],
        cwd=tmp_path, timeout=900)  # fmt: skip
    where = run(py, "-c", "import cnbi_spawner, cnbi_devcluster as d; print(d.__file__)",
                cwd=tmp_path)  # fmt: skip
    assert where.startswith(str(venv)), where

    state, port = tmp_path / "state", free_port()
    env = {
        "PATH": os.pathsep.join([str(Path(shutil.which("node")).parent), "/usr/bin", "/bin"]),
        "HOME": str(tmp_path),
        "CNBI_PROXY_COMMAND": str(CHP),
        "NO_PROXY": "127.0.0.1,localhost",
    }
    demo = await asyncio.create_subprocess_exec(
        venv / "bin" / "cnbi-devcluster", "demo", "--port", str(port), "--state-dir", state,
        cwd=tmp_path, env=env, start_new_session=True,
        stdout=asyncio.subprocess.DEVNULL, stderr=open(tmp_path / "demo.log", "wb"),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not (state / "demo.json").exists():
            assert demo.returncode is None, (tmp_path / "demo.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "the demo did not come up"
            await asyncio.sleep(0.5)
        info = json.loads((state / "demo.json").read_text())
        hub = info["hub_url"]
        jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1
        async with aiohttp.ClientSession(cookie_jar=jar) as learner:
            link = f"{hub}/tmplogin?course=python-basics&notebook=intro/01-hello.ipynb"
            async with learner.get(link, headers=BROWSER_NAVIGATION) as r:  # a person's click
                assert r.status == 200, await r.text()
                parts = r.url.path.split("/")  # /hub/spawn-pending/NAME or /user/NAME/...
                name = parts[
                    parts.index("spawn-pending" if "spawn-pending" in parts else "user") + 1
                ]
            headers = {"Authorization": f"token {info['api_token']}"}
            while True:
                async with learner.get(f"{hub}/hub/api/users/{name}", headers=headers) as r:
                    server = (await r.json())["servers"].get("", {})
                if server.get("ready"):
                    break
                assert time.monotonic() < deadline, f"{name}'s server never got ready"
                await asyncio.sleep(0.5)
            async with learner.get(f"{hub}/user/{name}/lab/tree/intro/01-hello.ipynb") as r:
                assert r.status == 200, await r.text()
                assert "JupyterLab" in await r.text()
        # the learner's home was seeded from the installed wheel's course folder
        seeded = list((state / "cluster" / "pods").rglob("intro/01-hello.ipynb"))
        (installed,) = venv.glob("lib/python*/site-packages/cnbi_devcluster/demo/courses/"
                                 "python-basics/intro/01-hello.ipynb")  # fmt: skip
        assert seeded and all(p.read_bytes() == installed.read_bytes() for p in seeded)
        assert checkout_refs([demo.pid, *descendants(demo.pid)]) == []
    finally:
        if demo.returncode is None:
            os.kill(demo.pid, signal.SIGTERM)
        await asyncio.wait_for(demo.wait(), 60)
    assert demo.returncode == 0, (tmp_path / "demo.log").read_text()[-4000:]
