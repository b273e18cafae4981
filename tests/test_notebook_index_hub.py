"""Notebook index end to end: real hub + proxy + cnbi service + dev cluster.

A new ImageStream digest appears; the service runs an indexing pod of that image (the dev
cluster runs its command against the image's seeded home), stores the list on the tag; the
hub's registry picks it up, so ``/tmplogin`` refuses a wrong notebook path with close
matches before anything is created, and the right one launches. A new digest makes the
index stale (launches behave as without one) until it is indexed again.
"""

from __future__ import annotations

import json
from urllib.parse import quote, urlencode

import aiohttp
import pytest
from harness import BROWSER_NAVIGATION, free_port, service_command, wait_for

from cnbi_spawner.images.notebook_index import ANNOTATION, ROLE, ROLE_LABEL

pytestmark = [pytest.mark.slow]

NS = "default"
REPO = "registry.example/courses/indexed"
DIGEST_1 = "sha256:" + "1" * 64
DIGEST_2 = "sha256:" + "2" * 64
NOTEBOOKS = ["lectures/week1/intro.ipynb", "lectures/week2/pandas.ipynb", "README-first.ipynb"]


def hub_config(kubeconfig: str, port: int) -> str:
    service_cmd = service_command(
        "--cull-every=0", f"--namespace={NS}", f"--kubeconfig={kubeconfig}"
    )
    return f"""
from cnbi_spawner.service.app import service_role
c.JupyterHub.authenticator_class = "tmplogin"
c.JupyterHub.spawner_class = "cnbi"
c.KubeSpawner.namespace = {NS!r}
c.ImageRegistry.namespaces = [{NS!r}]
c.JupyterHub.services.append({{
    "name": "cnbi",
    "url": "http://127.0.0.1:{port}",
    "command": {service_cmd!r},
    "environment": {{"KUBECONFIG": {kubeconfig!r}, "CNBI_NAMESPACE": {NS!r}}},
}})
c.JupyterHub.load_roles.append(service_role("cnbi"))
"""


def stream(digest: str) -> tuple[dict, dict]:
    body = {
        "apiVersion": "image.openshift.io/v1",
        "kind": "ImageStream",
        "metadata": {
            "name": "indexed-course",
            "namespace": NS,
            "labels": {"opendatahub.io/notebook-image": "true"},
            "annotations": {"opendatahub.io/notebook-image-name": "Indexed course"},
        },
        "spec": {"tags": [{"name": "v1", "from": {"kind": "DockerImage", "name": REPO + ":v1"}}]},
    }
    status = {
        "dockerImageRepository": "",
        "tags": [
            {
                "tag": "v1",
                "items": [
                    {
                        "created": "2026-11-30T10:00:00Z",
                        "dockerImageReference": f"{REPO}@{digest}",
                        "image": digest,
                        "generation": 1,
                    }
                ],
            }
        ],
    }
    return body, status


def index_of(cluster) -> dict | None:
    obj = cluster.get("image.openshift.io/v1", "imagestreams", "indexed-course", NS)
    value = (obj["spec"]["tags"][0].get("annotations") or {}).get(ANNOTATION)
    return json.loads(value) if value else None


async def test_new_digest_is_indexed_and_wrong_paths_are_refused(
    start_hub, stub_devcluster, tmp_path
):
    cluster = stub_devcluster
    content = tmp_path / "course"
    for path in NOTEBOOKS + [".ipynb_checkpoints/intro-checkpoint.ipynb", "data/notes.md"]:
        (content / path).parent.mkdir(parents=True, exist_ok=True)
        (content / path).write_text("{}")
    cluster.add_image(REPO, content)
    hub = await start_hub(
        hub_config(str(cluster.kubeconfig), free_port()), kubeconfig=cluster.kubeconfig
    )

    body, status = stream(DIGEST_1)
    created = cluster.create("image.openshift.io/v1", "imagestreams", body, NS)
    cluster.replace("image.openshift.io/v1", "imagestreams", {**created, "status": status}, NS,
                    status=True)  # fmt: skip

    async def indexed():
        index = index_of(cluster)
        return index is not None and index["digest"] == DIGEST_1

    await wait_for(indexed, "the notebook index of the new digest", 90)
    index = index_of(cluster)
    assert sorted(index["notebooks"]) == sorted(NOTEBOOKS)  # .ipynb only, no hidden folders
    assert index["truncated"] is False
    # the indexing pod ran that digest, bounded, and is gone
    assert cluster.list("v1", "pods", NS, label_selector=f"{ROLE_LABEL}={ROLE}") == []

    async def tmplogin(session, notebook: str):
        query = urlencode({"course": "indexed-course", "notebook": notebook}, quote_via=quote)
        async with session.get(f"{hub.url}/hub/tmplogin?{query}", allow_redirects=False) as r:
            return r.status, r.headers, await r.text()

    async def users():
        headers = {"Authorization": f"token {hub.api_token}"}
        async with (
            aiohttp.ClientSession() as s,
            s.get(hub.api_url + "/users", headers=headers) as r,
        ):
            return await r.json()

    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar, headers=BROWSER_NAVIGATION) as learner:
        # the hub's registry has the index: a wrong path is refused with close matches,
        # before any user or pod exists
        async def refused():
            code, _, _ = await tmplogin(learner, "lectures/week1/intro2.ipynb")
            return code == 400

        await wait_for(refused, "the hub to use the index", 30)
        code, _, page = await tmplogin(learner, "lectures/week1/intro2.ipynb")
        assert code == 400 and "Did you mean: lectures/week1/intro.ipynb" in page
        assert await users() == []
        assert [p for p in cluster.list("v1", "pods", NS)] == []
        # the right path launches
        code, headers, _ = await tmplogin(learner, "lectures/week2/pandas.ipynb")
        assert code == 302 and headers["Location"].startswith(
            "/hub/spawn?opt-course=indexed-course"
        )
        assert len(await users()) == 1

    # a new digest: the index is stale, so launches behave as without one, until re-indexed
    obj = cluster.get("image.openshift.io/v1", "imagestreams", "indexed-course", NS)
    obj["status"] = stream(DIGEST_2)[1]
    cluster.replace("image.openshift.io/v1", "imagestreams", obj, NS, status=True)

    async def reindexed():
        index = index_of(cluster)
        return index is not None and index["digest"] == DIGEST_2

    await wait_for(reindexed, "the notebook index of the second digest", 90)
    assert sorted(index_of(cluster)["notebooks"]) == sorted(NOTEBOOKS)
