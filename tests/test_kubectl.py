"""A real kubectl (v1.34) drives the dev cluster over HTTPS, as it would a real cluster.

kubectl comes from ``make deps`` (the official binary shipped in an npm package); it
sends its bearer token only over HTTPS, so the cluster runs with ``tls=True`` (a
throw-away CA in the kubeconfig). Covered: ``get`` (server-side Table columns, ``-o
wide``), ``get -w``, ``describe``, ``logs``, ``delete``, ``apply`` with validation (unknown
fields refused), ``apply --server-side`` (conflict, ``--force-conflicts``) and ``explain``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass

import pytest
from harness import kubectl_command

from cnbi_devcluster import DevCluster

pytestmark = [pytest.mark.slow]

SERVER = """
import os, socket, time
print("hello from the pod", os.environ.get("POD_IP"), flush=True)
s = socket.socket(); s.bind((os.environ["POD_IP"], 8888)); s.listen()
while True:
    s.accept()[0].close()
"""

CNBI = """\
apiVersion: meteor.zone/v1alpha1
kind: CustomNBImage
metadata:
  name: k-build
spec:
  buildType: {build_type}
  baseImage: quay.io/jupyter/minimal-notebook:latest
{extra}"""


@dataclass
class Result:
    returncode: int | None
    stdout: str
    stderr: str


@pytest.fixture
async def cluster(tmp_path):
    async with DevCluster(tmp_path / "dc", tls=True, builds=False) as c:
        yield c


@pytest.fixture
def kubectl(cluster, tmp_path):
    exe = kubectl_command()
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "HOME": str(tmp_path / "home")}
    env.pop("KUBERNETES_SERVICE_HOST", None)

    async def run(*args: str, stdin: str | None = None, ok: bool = True) -> Result:
        # asynchronously: the dev cluster answers from this test's event loop
        proc = await asyncio.create_subprocess_exec(
            exe, *args, env=env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate((stdin or "").encode()), 60)
        result = Result(proc.returncode, out.decode(), err.decode())
        if ok:
            assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
        return result

    run.env = env
    run.exe = exe
    return run


def pod_yaml(name: str) -> str:
    return f"""\
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: kubectl-test}}
spec:
  containers:
  - name: main
    image: python:3.12-slim
    command: {json.dumps([sys.executable, "-c", SERVER])}
    ports: [{{name: notebook-port, containerPort: 8888}}]
    env:
    - name: POD_IP
      valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}
"""


async def wait_for(fn, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while not (value := await fn()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.3)
    return value


async def test_get_describe_logs_delete_a_pod(kubectl):
    await kubectl("apply", "-f", "-", stdin=pod_yaml("web"))

    async def ready() -> bool:
        row = (await kubectl("get", "pod", "web", "--no-headers")).stdout.split()
        return row[1:3] == ["1/1", "Running"]

    await wait_for(ready, "web to be ready")
    lines = (await kubectl("get", "pods")).stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert lines[1].split()[:4] == ["web", "1/1", "Running", "0"]
    wide = (await kubectl("get", "pods", "-o", "wide")).stdout.splitlines()
    assert wide[0].split()[5:7] == ["IP", "NODE"]
    assert wide[1].split()[5].startswith("127.")

    described = (await kubectl("describe", "pod", "web")).stdout
    assert "Status:           Running" in described or "Status:" in described
    assert "Events:" in described and "Scheduled" in described and "Started" in described
    assert "hello from the pod" in (await kubectl("logs", "web")).stdout

    assert 'pod "web" deleted' in (await kubectl("delete", "pod", "web", "--wait=true")).stdout
    assert "NotFound" in (await kubectl("get", "pod", "web", ok=False)).stderr


async def test_get_watch_streams_table_rows(kubectl):
    watch = await asyncio.create_subprocess_exec(
        kubectl.exe, "get", "pods", "-w", env=kubectl.env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await asyncio.sleep(1.5)  # the watch is open
        await kubectl("apply", "-f", "-", stdin=pod_yaml("watched"))
        seen: list[list[str]] = []
        deadline = time.monotonic() + 30
        while not any(r[:3] == ["watched", "1/1", "Running"] for r in seen):
            assert time.monotonic() < deadline, f"watch rows: {seen}"
            line = await asyncio.wait_for(watch.stdout.readline(), 30)
            seen.append(line.decode().split())
        assert ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] in seen
        assert any(r[:3] == ["watched", "0/1", "Pending"] for r in seen), seen
    finally:
        watch.kill()
        await watch.wait()


async def test_apply_validates_and_get_prints_printer_columns(kubectl):
    out = await kubectl("apply", "-f", "-", stdin=CNBI.format(build_type="PackageList", extra=""))
    assert "customnbimage.meteor.zone/k-build created" in out.stdout
    lines = (await kubectl("get", "customnbimages")).stdout.splitlines()
    assert lines[0].split() == ["NAME", "PHASE", "AGE"]
    assert lines[1].split()[0] == "k-build"

    bad = CNBI.format(build_type="PackageList", extra="  bogusField: 1\n")
    refused = await kubectl("apply", "-f", "-", stdin=bad, ok=False)
    assert refused.returncode != 0
    assert 'strict decoding error: unknown field "spec.bogusField"' in refused.stderr
    invalid = await kubectl(
        "apply", "-f", "-", stdin=CNBI.format(build_type="Nope", extra=""), ok=False
    )
    assert "spec.buildType: Unsupported value" in invalid.stderr
    assert "PackageList" in (await kubectl("get", "cnbi", "k-build", "-o", "yaml")).stdout


async def test_apply_server_side_owns_fields_and_conflicts(kubectl):
    first = CNBI.format(build_type="PackageList", extra="")
    assert (
        "serverside-applied"
        in (await kubectl("apply", "--server-side", "-f", "-", stdin=first)).stdout
    )
    other = CNBI.format(build_type="GitRepository", extra="")
    conflict = await kubectl(
        "apply", "--server-side", "--field-manager=author", "-f", "-", stdin=other, ok=False
    )
    assert 'Apply failed with 1 conflict: conflict with "kubectl"' in conflict.stderr
    assert ".spec.buildType" in conflict.stderr
    force = ("--server-side", "--field-manager=author", "--force-conflicts")
    await kubectl("apply", *force, "-f", "-", stdin=other)
    shown = (await kubectl("get", "cnbi", "k-build", "-o", "yaml", "--show-managed-fields")).stdout
    assert "buildType: GitRepository" in shown
    assert "manager: author" in shown and "operation: Apply" in shown


async def test_explain_prints_the_crd_fields_and_core_docs(kubectl):
    spec = (await kubectl("explain", "customnbimage.spec")).stdout
    assert "KIND:       CustomNBImage" in spec
    assert "baseImage\t<string>" in spec and "buildType\t<string>" in spec
    ports = (await kubectl("explain", "pod.spec.containers.ports")).stdout
    assert "List of ports to expose from the container." in ports
