"""CNBiSpawner in a real JupyterHub against the dev cluster: one test per user story.

A real ``jupyterhub`` subprocess (``tests/harness.py``) with ``spawner_class = "cnbi"``
and the dummy authenticator, a real KubeSpawner and ImageRegistry talking over HTTP to
the dev cluster (``devcluster`` fixture, process runtime: pods are real
``jupyterhub-singleuser`` servers whose home is the image's content folder).
ImageStreams are seeded with the real kubernetes_asyncio client.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import uuid
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

import aiohttp
import pytest
from harness import BROWSER_NAVIGATION, hub_login, wait_for
from kubernetes_asyncio import client as k8s

from cnbi_spawner.kube import make_api_client

pytestmark = [pytest.mark.slow]

NS = "default"
REPO = "registry.example/courses/uai-intro"
DIGEST = "sha256:" + "1b" * 32
REF = f"{REPO}@{DIGEST}"
KEY = "uai-intro:2026.1"
NOTEBOOK = "lectures/lecture 1/mod5 & more.ipynb"  # spaces and '&' must survive the round trip
WAIT = 90  # seconds for one spawn on a busy 2-core machine

HUB_CONFIG = f"""
c.JupyterHub.spawner_class = "cnbi"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.allow_named_servers = True
c.KubeSpawner.namespace = {NS!r}
c.KubeSpawner.start_timeout = {WAIT}
c.KubeSpawner.http_timeout = {WAIT}
c.ImageRegistry.namespaces = [{NS!r}]
c.ResourcePolicy.anonymous_max_size = "small"
"""

NOTEBOOK_JSON = json.dumps(
    {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
).encode()


def imagestream(*, outdated: bool = False) -> dict:
    tag_annotations = {"opendatahub.io/workbench-image-recommended": "true"}
    if outdated:
        tag_annotations["opendatahub.io/image-tag-outdated"] = "true"
    return {
        "apiVersion": "image.openshift.io/v1",
        "kind": "ImageStream",
        "metadata": {
            "name": "uai-intro",
            "namespace": NS,
            "labels": {"opendatahub.io/notebook-image": "true"},
            "annotations": {
                "opendatahub.io/notebook-image-name": "Intro to AI",
                "opendatahub.io/notebook-image-desc": "Lectures <b>for</b> the AI course",
                "cnbi.meteor.zone/notebooks": json.dumps([NOTEBOOK]),
            },
        },
        "spec": {
            "tags": [
                {
                    "name": "2026.1",
                    "annotations": tag_annotations,
                    "from": {"kind": "DockerImage", "name": f"{REPO}:2026.1"},
                }
            ]
        },
        "status": {
            "dockerImageRepository": REPO,
            "tags": [
                {
                    "tag": "2026.1",
                    "items": [
                        {
                            "created": "2026-09-01T08:00:00Z",
                            "dockerImageReference": REF,
                            "image": DIGEST,
                            "generation": 1,
                        }
                    ],
                }
            ],
        },
    }


async def maybe_await(value):
    return await value if inspect.isawaitable(value) else value


@pytest.fixture
async def kube(devcluster):
    api = await make_api_client(str(devcluster.kubeconfig))
    yield api
    await api.close()


async def put_imagestream(kube, obj: dict) -> None:
    """Create or replace the stream, then its status (the CRD has a /status subresource)."""
    api = k8s.CustomObjectsApi(kube)
    args = ("image.openshift.io", "v1", NS, "imagestreams")
    name = obj["metadata"]["name"]
    try:
        current = await api.get_namespaced_custom_object(*args, name)
    except k8s.ApiException as e:
        assert e.status == 404, e
        current = await api.create_namespaced_custom_object(*args, obj)
    else:
        obj = {**obj, "metadata": {**obj["metadata"], **_rv(current)}}
        current = await api.replace_namespaced_custom_object(*args, name, obj)
    status = {**obj, "metadata": {**obj["metadata"], **_rv(current)}}
    await api.replace_namespaced_custom_object_status(*args, name, status)


def _rv(obj: dict) -> dict:
    return {"resourceVersion": obj["metadata"]["resourceVersion"]}


async def delete_imagestream(kube, name: str) -> None:
    api = k8s.CustomObjectsApi(kube)
    await api.delete_namespaced_custom_object("image.openshift.io", "v1", NS, "imagestreams", name)


async def user_pods(kube, user: str) -> list[k8s.V1Pod]:
    pods = await k8s.CoreV1Api(kube).list_namespaced_pod(NS)
    return [
        p
        for p in pods.items
        if (p.metadata.annotations or {}).get("hub.jupyter.org/username") == user
        and not p.metadata.deletion_timestamp
    ]


@pytest.fixture
async def course_cluster(devcluster, kube, tmp_path):
    """The dev cluster with the uai-intro stream and its content (the notebook)."""
    content = tmp_path / "uai-intro-content"
    (content / Path(NOTEBOOK).parent).mkdir(parents=True)
    (content / NOTEBOOK).write_bytes(NOTEBOOK_JSON)
    await maybe_await(devcluster.add_image(REPO, content))
    await put_imagestream(kube, imagestream())
    return devcluster


@pytest.fixture
async def hub(start_hub, course_cluster):
    return await start_hub(HUB_CONFIG, kubeconfig=course_cluster.kubeconfig)


class Browser:
    """A learner's browser: cookies, logged in through the dummy authenticator."""

    def __init__(self, hub, name: str) -> None:
        self.hub = hub
        self.name = name
        self.session = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            timeout=aiohttp.ClientTimeout(total=WAIT),
        )

    async def login(self) -> None:
        await hub_login(self.session, self.hub.url, self.name)

    async def get(self, path: str, **kw) -> tuple[int, str, str]:
        async with self.session.get(f"{self.hub.url}{path}", **kw) as r:
            return r.status, await r.text(), str(r.url)

    async def close(self) -> None:
        await self.session.close()


@pytest.fixture
async def browsers():
    made: list[Browser] = []

    async def make(hub, name: str | None = None) -> Browser:
        b = Browser(hub, name or str(uuid.uuid4()))  # a UUID name counts as anonymous
        made.append(b)
        await b.login()
        return b

    yield make
    for b in made:
        await b.close()


async def api(hub, method: str, path: str, body=None, base=None) -> tuple[int, dict | str]:
    """A request with the admin token to the hub API (or, with ``base``, anywhere)."""
    headers = {"Authorization": f"token {hub.api_token}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as s:
        kw = {"json": body} if body is not None else {}
        url = f"{base or hub.api_url}{path}"
        async with s.request(method, url, headers=headers, **kw) as r:
            text = await r.text()
            try:
                return r.status, json.loads(text) if text else {}
            except ValueError:
                return r.status, text


async def progress_events(hub, user: str, server: str = "") -> list[dict]:
    """Read the hub's progress event stream until ready/failed."""
    path = f"/users/{user}/server/progress"
    if server:
        path = f"/users/{user}/servers/{server}/progress"
    headers = {"Authorization": f"token {hub.api_token}"}
    events = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as s:
        async with s.get(f"{hub.api_url}{path}", headers=headers) as r:
            assert r.status == 200, await r.text()
            async for line in r.content:
                line = line.decode().strip()
                if not line.startswith("data:"):
                    continue
                event = json.loads(line[5:])
                events.append(event)
                if event.get("ready") or event.get("failed"):
                    break
    return events


async def stop_server(hub, user: str, server: str = "") -> None:
    path = f"/users/{user}/server" if not server else f"/users/{user}/servers/{server}"
    status, body = await api(hub, "DELETE", path)
    assert status in (202, 204), body

    async def stopped():
        _, model = await api(hub, "GET", f"/users/{user}")
        return server not in model.get("servers", {})

    await wait_for(stopped, f"{user}/{server} to stop", WAIT)


def error_message(page: str) -> str:
    found = re.search(r'class="spawn-error-msg[^"]*">\s*(.*?)\s*</p>', page, re.S)
    return found.group(1) if found else ""


# --- the stories ------------------------------------------------------------------------


async def test_launch_link_starts_the_pinned_image_on_the_notebook(hub, kube, browsers):
    learner = await browsers(hub)
    query = "course=UAI-Intro&notebook=" + quote(NOTEBOOK, safe="")
    status, _, url = await learner.get(f"/hub/spawn?{query}", allow_redirects=False)
    assert status == 302, url

    events = await asyncio.wait_for(progress_events(hub, learner.name), WAIT)
    assert [e["message"] for e in events[:2]] == [
        "Server requested",  # the hub's
        f"Starting course image Intro to AI ({KEY})",  # ours, before KubeSpawner's events
    ]
    assert events[-1].get("ready"), events

    [pod] = await user_pods(kube, learner.name)
    container = pod.spec.containers[0]
    assert container.image == REF  # digest-pinned, from the registry
    env = {e.name: e.value for e in container.env}
    assert env["JUPYTERHUB_DEFAULT_URL"] == "/lab/tree/lectures/lecture%201/mod5%20%26%20more.ipynb"
    assert pod.metadata.labels["cnbi.meteor.zone/anonymous"] == "true"
    assert pod.metadata.labels["cnbi.meteor.zone/size"] == "small"
    assert pod.metadata.annotations["cnbi.meteor.zone/image"] == KEY
    assert pod.metadata.annotations["cnbi.meteor.zone/notebook"] == NOTEBOOK
    assert container.resources.limits["memory"] in ("1G", "1073741824")

    _, model = await api(hub, "GET", f"/users/{learner.name}")
    assert model["servers"][""]["user_options"] == {
        "course": KEY,
        "notebook": NOTEBOOK,
        "size": "small",
    }

    # the learner lands in JupyterLab on the notebook, which is in their home
    status, _, url = await learner.get(f"/user/{learner.name}/")
    assert status == 200
    assert unquote(urlparse(url).path) == f"/user/{learner.name}/lab/tree/{NOTEBOOK}"
    contents = f"/user/{learner.name}/api/contents/{quote(NOTEBOOK)}?content=0"
    status, body = await api(hub, "GET", contents, base=hub.url)
    assert status == 200 and body["type"] == "notebook", body
    # JupyterLab will not ask the learner about "Jupyter news": the server's settings API
    # says fetchNews is "false" (written by the pod's postStart hook, LabSettings)
    assert container.lifecycle.post_start._exec.command[0] == "/bin/sh"
    plugin = "@jupyterlab/apputils-extension:notification"
    settings = f"/user/{learner.name}/lab/api/settings/{plugin}"
    status, body = await api(hub, "GET", settings, base=hub.url)
    assert status == 200, body
    assert body["settings"]["fetchNews"] == "false", body["settings"]


BAD_LINKS = [
    ("course=nope", 404, "There is no course image named &#39;nope&#39;."),
    ("course=uai-intro&notebook=../../etc/passwd", 400, "may not contain &#39;..&#39;"),
    ("course=uai-intro&notebook=other.ipynb", 400, "This course does not offer that notebook."),
    ("course=uai-intro&tag=latest", 400, "Unknown launch parameter &#39;tag&#39;"),
    ("course=uai-intro&course=other", 400, "given more than once"),
    ("course=uai-intro&size=large", 403, "Guest users may use sizes up to"),
    ("image=registry.example%2Fevil%3Alatest", 404, "There is no course image"),
]


async def test_bad_links_show_a_clear_page_and_start_nothing(hub, kube, browsers):
    learner = await browsers(hub)
    for query, status, words in BAD_LINKS:
        got, page, _ = await learner.get(f"/hub/spawn?{query}", allow_redirects=False)
        assert (got, words) == (status, words) and words in error_message(page), (query, page)
        assert "Traceback" not in page
    assert await user_pods(kube, learner.name) == []
    _, model = await api(hub, "GET", f"/users/{learner.name}")
    assert model["servers"] == {}
    # the form (no query) lists the image, escaped
    status, page, _ = await learner.get("/hub/spawn")
    assert status == 200
    assert f'value="{KEY}"' in page and "Lectures &lt;b&gt;for&lt;/b&gt;" in page


async def test_api_spawn_restart_outdated_and_removed(hub, kube, browsers):
    learner = await browsers(hub)  # creates the user
    name = learner.name

    for body, status, words in [
        ({"image": "registry.example/evil:latest"}, 404, "There is no course image"),
        ({"course": "uai-intro", "tag": "x"}, 400, "Unknown launch parameter"),
        ({"course": ["uai-intro", "x"]}, 400, "more than once"),
        ({"course": 42}, 400, "must be text"),
        ({}, 400, "which course"),
    ]:
        got, reply = await api(hub, "POST", f"/users/{name}/server", {"user_options": body})
        assert got == status and words in reply["message"], (body, reply)
        assert await user_pods(kube, name) == []

    got, reply = await api(
        hub,
        "POST",
        f"/users/{name}/server",
        {"user_options": {"course": "uai-intro", "size": "tiny"}},
    )
    assert got in (201, 202), reply
    events = await asyncio.wait_for(progress_events(hub, name), WAIT)
    assert events[-1].get("ready"), events
    [pod] = await user_pods(kube, name)
    assert pod.spec.containers[0].image == REF
    assert pod.spec.containers[0].resources.limits["cpu"] == "0.5"
    _, model = await api(hub, "GET", f"/users/{name}")
    assert model["servers"][""]["user_options"] == {"course": KEY, "size": "tiny"}
    await stop_server(hub, name)

    # outdated: hidden from new launches, but the server restarts on it
    await put_imagestream(kube, imagestream(outdated=True))

    async def form_lacks_key():
        _, page, _ = await learner.get("/hub/spawn")
        return f'value="{KEY}"' not in page

    await wait_for(form_lacks_key, "the registry to hide the outdated tag")
    got, reply = await api(hub, "POST", f"/users/{name}/server")  # no body: stored options
    assert got in (201, 202), reply
    events = await asyncio.wait_for(progress_events(hub, name), WAIT)
    assert events[-1].get("ready"), events
    [pod] = await user_pods(kube, name)
    assert pod.spec.containers[0].image == REF
    await stop_server(hub, name)

    # removed after it was planned: the restart fails cleanly, nothing is created
    await delete_imagestream(kube, "uai-intro")
    await asyncio.sleep(2)  # the watch event; the failure below proves it arrived
    got, reply = await api(hub, "POST", f"/users/{name}/server")
    assert got == 404 and reply["message"].startswith("There is no course image"), reply
    assert await user_pods(kube, name) == []


async def test_named_server_from_a_link(hub, kube, browsers):
    learner = await browsers(hub)
    query = "course=uai-intro:2026.1&size=tiny&notebook=" + quote(NOTEBOOK)
    status, _, _ = await learner.get(
        f"/hub/spawn/{learner.name}/lab1?{query}", allow_redirects=False
    )
    assert status == 302
    events = await asyncio.wait_for(progress_events(hub, learner.name, "lab1"), WAIT)
    assert events[-1].get("ready"), events
    [pod] = await user_pods(kube, learner.name)
    assert pod.metadata.annotations.get("hub.jupyter.org/servername") == "lab1"
    assert pod.spec.containers[0].image == REF
    status, _, url = await learner.get(f"/user/{learner.name}/lab1/")
    assert status == 200
    assert urlparse(url).path.startswith(f"/user/{learner.name}/lab1/lab/tree/lectures/")
    _, model = await api(hub, "GET", f"/users/{learner.name}")
    assert model["servers"]["lab1"]["user_options"]["size"] == "tiny"
    assert "" not in model["servers"]


async def test_mit_one_line_migration_with_tmplogin(start_hub, course_cluster, kube):
    """KNOWN_IMAGES handed to the spawner: an MIT OL link lands on its notebook."""
    config = f"""
c.JupyterHub.spawner_class = "cnbi"
c.JupyterHub.authenticator_class = "tmplogin"
c.KubeSpawner.namespace = {NS!r}
c.KubeSpawner.start_timeout = {WAIT}
c.KubeSpawner.http_timeout = {WAIT}
c.CNBiSpawner.known_images = {{"UAI_Source-UAI.Intro": {REF!r}}}
"""
    hub = await start_hub(config, kubeconfig=course_cluster.kubeconfig)
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar, headers=BROWSER_NAVIGATION) as browser:
        link = f"{hub.url}/tmplogin?course=uai_source-uai.intro&notebook={quote(NOTEBOOK, safe='')}"
        async with browser.get(link) as r:
            assert r.status == 200, await r.text()
            path = r.url.path  # the spawn-pending page of the new anonymous user
        assert path.startswith("/hub/spawn-pending/"), path
        name = path.split("/")[3]
        events = await asyncio.wait_for(progress_events(hub, name), WAIT)
        assert events[-1].get("ready"), events
        [pod] = await user_pods(kube, name)
        assert pod.spec.containers[0].image == REF
        assert pod.metadata.annotations["cnbi.meteor.zone/image"] == "uai_source-uai.intro"
        async with browser.get(f"{hub.url}/user/{name}/") as r:
            assert r.status == 200
            assert unquote(r.url.path) == f"/user/{name}/lab/tree/{NOTEBOOK}"
