"""The build controller against the real dev cluster, over the real kubernetes_asyncio client."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest
import yaml
from harness import kubectl_command
from kubernetes_asyncio import client

from cnbi_devcluster import DevCluster
from cnbi_devcluster.build_steps import INJECT_FAILURE
from cnbi_devcluster.builds import DELAY_ENV
from cnbi_spawner.builds import GROUP, PLURAL, VERSION
from cnbi_spawner.builds.phases import normalise
from cnbi_spawner.builds.resource import customnbimage
from cnbi_spawner.builds.validate import validate_request
from cnbi_spawner.kube import make_api_client

NS = "default"
BASE = "registry.example/courses/minimal:v1"


@pytest.fixture
def cluster(request, monkeypatch):
    """The shared ``devcluster`` fixture, started with fast build steps."""
    monkeypatch.setenv(DELAY_ENV, "0.25")  # polled every 30 ms: no phase missed
    return request.getfixturevalue("devcluster")


@pytest.fixture
async def api(cluster):
    api_client = await make_api_client(str(cluster.kubeconfig))
    yield client.CustomObjectsApi(api_client)
    await api_client.close()


async def create(api, body: dict, annotations: dict | None = None) -> str:
    req = validate_request(body, creator="author")
    obj = customnbimage(req, NS)
    obj["metadata"]["annotations"].update(annotations or {})
    await api.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, obj)
    return req.name


async def phases_until_final(api, name: str, timeout: float = 15) -> tuple[list[str], dict]:
    """Poll the object; return the distinct design phases seen and the final object."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obj = await api.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)
        status = normalise(obj)
        if not seen or seen[-1] != status.phase:
            seen.append(status.phase)
        if status.finished:
            return seen, obj
        await asyncio.sleep(0.03)
    raise AssertionError(f"{name} did not finish in {timeout}s; phases {seen}")


async def test_package_list_build_publishes_launchable_stream(cluster, api):
    name = await create(
        api, {"displayName": "Pandas course", "baseImage": BASE, "packageVersions": ["pandas"]}
    )
    seen, obj = await phases_until_final(api, name)
    assert seen[-1] == "Success"
    # every phase is walked in order
    assert seen == ["Pending", "Preparing", "Resolving", "Building", "Success"]
    assert obj["status"]["phase"] == "Ready"  # seed dialect, written through /status
    stream_name = normalise(obj).imagestream
    stream = await api.get_namespaced_custom_object(
        "image.openshift.io", "v1", NS, "imagestreams", stream_name
    )
    assert stream["metadata"]["labels"]["opendatahub.io/notebook-image"] == "true"
    assert stream["metadata"]["annotations"]["opendatahub.io/notebook-image-creator"] == "author"
    ref = stream["status"]["tags"][0]["items"][0]["dockerImageReference"]
    repo = ref.split("@", 1)[0]
    assert repo == f"registry.example/cnbi/{stream_name}"
    assert repo in cluster.images  # registered in the image map: launchable by the runtime


async def test_import_walks_import_phases(cluster, api):
    name = await create(api, {"displayName": "Imported", "baseImage": BASE})
    seen, _ = await phases_until_final(api, name)
    assert seen == ["Importing", "Validating", "Success"]


@pytest.mark.parametrize(
    "body,annotations,message",
    [
        (
            {"displayName": "Bad pkg", "baseImage": BASE, "packageVersions": ["nonexistent-x"]},
            {},
            "Could not find a version that satisfies the requirement nonexistent-x",
        ),
        ({"displayName": "Injected", "baseImage": BASE}, {INJECT_FAILURE: "validation broke"},
         "validation broke"),
    ],
)  # fmt: skip
async def test_failures_carry_the_message(cluster, api, body, annotations, message):
    name = await create(api, body, annotations)
    seen, obj = await phases_until_final(api, name)
    status = normalise(obj)
    assert seen[-1] == "Failure" and status.message == message
    with pytest.raises(client.exceptions.ApiException) as info:
        await api.get_namespaced_custom_object(
            "image.openshift.io", "v1", NS, "imagestreams", status.imagestream
        )
    assert info.value.status == 404


async def test_deleted_build_stops(cluster, api):
    name = await create(
        api, {"displayName": "Gone", "baseImage": BASE, "packageVersions": ["pandas"]}
    )
    await asyncio.sleep(0.4)
    await api.delete_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)
    await asyncio.sleep(1.5)  # longer than the remaining steps
    items = (
        await api.list_namespaced_custom_object("image.openshift.io", "v1", NS, "imagestreams")
    )["items"]
    assert not [i for i in items if name in i["metadata"]["name"]]


async def test_survives_dropped_watches_and_an_api_outage(cluster, api):
    name = await create(
        api, {"displayName": "Resilient", "baseImage": BASE, "packageVersions": ["pandas"]}
    )
    cluster.faults.drop_watches()
    await asyncio.sleep(0.3)
    cluster.faults.pause("503")
    await asyncio.sleep(1.0)  # the controller's writes fail meanwhile
    cluster.faults.resume()
    cluster.faults.drop_watches()
    seen, obj = await phases_until_final(api, name, timeout=30)
    assert seen[-1] == "Success", seen


FIXTURES = Path(__file__).parent / "fixtures" / "customnbimages"


@pytest.fixture
async def https_cluster(tmp_path, monkeypatch):
    """A dev cluster over HTTPS (kubectl sends its token only over TLS), fast build steps."""
    monkeypatch.setenv(DELAY_ENV, "0.25")
    async with DevCluster(tmp_path / "dc", tls=True) as c:
        yield c


async def kubectl(cluster, home, *args: str) -> str:
    """Run the real kubectl against ``cluster`` (from this event loop); its stdout."""
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "HOME": str(home)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    proc = await asyncio.create_subprocess_exec(
        kubectl_command(), *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {err.decode()}"
    return out.decode()


@pytest.mark.parametrize(
    "file,phases,stream_suffix",
    [
        ("design-sample-package-list.yaml",
         ["Pending", "Preparing", "Resolving", "Building", "Success"], "package-list"),
        ("design-sample-import.yaml", ["Importing", "Validating", "Success"], "import"),
        ("design-draft-action-build.yaml",
         ["Pending", "Preparing", "Resolving", "Building", "Success"], "package-list"),
    ],
)  # fmt: skip
async def test_design_samples_applied_with_kubectl(https_cluster, tmp_path, file, phases,
                                                   stream_suffix):  # fmt: skip
    """``kubectl apply -f`` of the design's YAML as written (validated by the CRD, nothing
    pruned, the draft's ``action`` included), and the controller runs the whole flow."""
    cluster = https_cluster
    path = FIXTURES / file
    manifest = yaml.safe_load(path.read_text())
    name = manifest["metadata"]["name"]
    out = await kubectl(cluster, tmp_path, "apply", "-n", NS, "-f", str(path))
    assert f"customnbimage.meteor.zone/{name} created" in out
    created = json.loads(
        await kubectl(cluster, tmp_path, "get", "cnbi", name, "-n", NS, "-o", "json")
    )
    assert created["spec"] == manifest["spec"]  # nothing pruned
    api_client = await make_api_client(str(cluster.kubeconfig))
    try:
        api = client.CustomObjectsApi(api_client)
        seen, obj = await phases_until_final(api, name)
        assert seen == phases
        stream = await api.get_namespaced_custom_object(
            "image.openshift.io", "v1", NS, "imagestreams", f"cnbi-{name}-{stream_suffix}"
        )
    finally:
        await api_client.close()
    spec = manifest["spec"]
    annotations = stream["metadata"]["annotations"]
    display = spec.get("displayName", spec.get("name"))
    assert annotations["opendatahub.io/notebook-image-name"] == display
    assert annotations["opendatahub.io/notebook-image-creator"] == spec["creator"]
    if stream_suffix == "package-list":
        done = {c["type"] for c in obj["status"]["conditions"] if c["status"] == "True"}
        assert done == {"PipelineRunPrepare", "PipelineRunBuild"}
    listed = await kubectl(cluster, tmp_path, "get", "cnbi", "-n", NS)
    assert name in listed and ("Ready" in listed)
