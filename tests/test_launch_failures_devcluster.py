"""Injected pod faults in the dev cluster, read back over the real Kubernetes API and
diagnosed by ``launch_failures.diagnose`` (no hub: the pod and its events only)."""

from __future__ import annotations

import asyncio

import pytest
from kubernetes_asyncio import client as k8s

from cnbi_devcluster.faults import POD_FAULT_ANNOTATION
from cnbi_spawner.kube import make_api_client
from cnbi_spawner.launch_failures import REASONS, diagnose

NS = "default"
REPO = "registry.example/test/faulty"


def pod(name: str, annotations: dict | None = None) -> dict:
    return {
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {
            "containers": [
                {
                    "name": "notebook",
                    "image": f"{REPO}@sha256:{'a' * 64}",
                    "ports": [{"name": "notebook-port", "containerPort": 8888}],
                }
            ]
        },
    }


async def settle(core, name: str, want: str, timeout: float = 10) -> tuple[dict, list]:
    """Poll the pod + its events until ``diagnose`` says ``want`` (or time out)."""
    deadline = asyncio.get_running_loop().time() + timeout
    found = None
    while asyncio.get_running_loop().time() < deadline:
        resp = await core.read_namespaced_pod(name, NS, _preload_content=False)
        p = await resp.json()
        events = await core.list_namespaced_event(
            NS, field_selector=f"involvedObject.name={name}", _preload_content=False
        )
        items = (await events.json())["items"]
        found = diagnose(p, items, timed_out=want == "Timeout")
        if (
            found is not None
            and found.reason == want
            and (want != "Timeout" or p["status"].get("podIP"))
        ):
            return p, items
        await asyncio.sleep(0.2)
    raise AssertionError(f"{name}: wanted {want}, got {found}")


CASES = [
    ("ErrImagePull", "annotation"),
    ("ImagePullBackOff", "map"),
    ("OOMKilled", "annotation"),
    ("CrashLoopBackOff", "file"),
    ("Unschedulable", "annotation"),
    ("Timeout", "map"),
]


@pytest.mark.parametrize(("fault", "how"), CASES)
async def test_injected_fault_is_diagnosed(stub_devcluster, tmp_path, fault, how):
    cluster = stub_devcluster
    content = tmp_path / "content"
    content.mkdir()
    if how == "file":
        (content / ".devcluster-fault").write_text(fault + "\n")
    cluster.add_image(REPO, content)
    if how == "map":
        cluster.kubelet.pod_faults.set(REPO, fault)
    annotations = {POD_FAULT_ANNOTATION: fault} if how == "annotation" else {}
    api = await make_api_client(str(cluster.kubeconfig))
    try:
        core = k8s.CoreV1Api(api)
        name = f"p-{fault.lower()}"
        await core.create_namespaced_pod(NS, pod(name, annotations))
        want = "ErrImagePull" if fault == "ErrImagePull" else fault
        if fault == "ErrImagePull":  # the pod goes on to ImagePullBackOff, like a kubelet
            want = "ImagePullBackOff"
        p, events = await settle(core, name, want)
        result = diagnose(p, events, timed_out=fault == "Timeout")
        assert result.message == REASONS[want][0]
        if fault == "Unschedulable":
            assert result.hint.startswith("Insufficient cpu")
            assert any(e["reason"] == "FailedScheduling" for e in events)
        if fault in ("OOMKilled", "CrashLoopBackOff"):
            log = await core.read_namespaced_pod_log(name, NS)
            assert "Starting jupyterhub-singleuser" in log
        await core.delete_namespaced_pod(name, NS, grace_period_seconds=0)
    finally:
        await api.close()


async def test_no_fault_without_injection(stub_devcluster, tmp_path):
    stub_devcluster.add_image(REPO, tmp_path)
    api = await make_api_client(str(stub_devcluster.kubeconfig))
    try:
        core = k8s.CoreV1Api(api)
        await core.create_namespaced_pod(NS, pod("healthy"))
        for _ in range(50):
            p = await core.read_namespaced_pod("healthy", NS)
            if p.status.container_statuses and p.status.container_statuses[0].ready:
                break
            await asyncio.sleep(0.1)
        assert p.status.container_statuses[0].ready
        raw = api.sanitize_for_serialization(p)
        assert diagnose(raw, []) is None
    finally:
        await api.close()
