"""``cnbi-devcluster demo`` stopped while its servers start leaves no process behind (and a
real kubectl reads its cluster with the kubeconfig it writes).

The demo keeps a warm pool of one server per course, so right after the hub answers its
servers are mid-start: that is when it is stopped here, by Ctrl-C's SIGTERM cousin, by
SIGHUP (its terminal closed), or by its hub dying (the proxy and the ``cnbi`` service run
in sessions of their own and used to outlive it).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from harness import free_port, kubectl_command

pytestmark = [pytest.mark.slow]


def processes_in(folder: Path) -> list[str]:
    """Processes whose working directory is ``folder`` or below (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if cwd == str(folder) or cwd.startswith(str(folder) + os.sep):
            found.append(f"{entry}: {cmdline.decode(errors='replace')[:200]}")
    return found


async def start_demo(state: Path, port: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cnbi_devcluster.cli", "demo", "--port", str(port),
        "--state-dir", str(state),
        stdout=asyncio.subprocess.DEVNULL, stderr=open(state.parent / "demo.log", "wb"),
        start_new_session=True,
    )  # fmt: skip


def hub_pid(state: Path) -> int:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                cwd = os.readlink(f"/proc/{entry}/cwd")
            except OSError:
                continue
            if cwd == str(state) and b"jupyterhub" in cmdline and b"-f" in cmdline:
                return int(entry)
    raise AssertionError("no hub process found")


@pytest.mark.parametrize("how", ["SIGTERM", "SIGHUP", "hub-killed"])
async def test_demo_stopped_while_servers_start_leaves_no_process(tmp_path, how):
    state = tmp_path / "demo"
    state.mkdir()
    proc = await start_demo(state, free_port())
    try:
        deadline = time.monotonic() + 120
        while not (state / "demo.json").exists():
            assert proc.returncode is None, (tmp_path / "demo.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the demo did not come up"
            await asyncio.sleep(0.3)
        kubeconfig = json.loads((state / "demo.json").read_text())["kubeconfig"]
        assert Path(kubeconfig).is_file()
        # wait until at least one server process runs (a pod home under the state dir; the
        # pod's learner-lab init container runs there first)
        pods = state / "cluster" / "pods"
        while not any("jupyterhub-singleuser" in p for p in processes_in(pods)):
            assert time.monotonic() < deadline, "no server process started"
            await asyncio.sleep(0.2)
        if how == "SIGTERM":  # the quickstart's "inspect the demo with kubectl", as written
            env = {**os.environ, "KUBECONFIG": kubeconfig, "HOME": str(tmp_path)}
            kubectl = await asyncio.create_subprocess_exec(
                kubectl_command(), "get", "pods", env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await asyncio.wait_for(kubectl.communicate(), 60)
            assert kubectl.returncode == 0, err.decode()
            header = out.decode().splitlines()[0].split()
            assert header == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
        if how == "hub-killed":
            os.kill(hub_pid(state), signal.SIGKILL)
        else:
            os.kill(proc.pid, getattr(signal, how))
        await asyncio.wait_for(proc.wait(), 60)
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 60)
    assert proc.returncode == 0, (tmp_path / "demo.log").read_text()[-3000:]
    assert processes_in(state) == []
