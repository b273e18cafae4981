"""Course-author builds end to end: real hub + proxy + cnbi service + dev cluster controller.

Stories: an author requests a build through the API (a spoofed ``creator`` is ignored),
follows its phases over Server-Sent Events, and the new image becomes launchable through
``/tmplogin?course=<image>``; a build that fails shows its message on the status page
(form flow through the hub's OAuth login); users without ``custom:cnbi:builds`` and
anonymous learners get 403; nobody sees or deletes other people's builds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from pathlib import Path
from urllib.parse import urlparse

import aiohttp
import pytest
import yaml
from harness import (
    BROWSER_NAVIGATION,
    browser_login,
    form_xsrf,
    free_port,
    hub_login,
    launch_chromium,
    service_command,
    wait_for,
)

from cnbi_devcluster.builds import DELAY_ENV

pytestmark = [pytest.mark.slow]

NS = "default"
WAIT = 90
BASE = "registry.example/courses/minimal:v1"


def hub_config(kubeconfig: str, port: int) -> str:
    service_cmd = service_command(
        "--cull-every=0", f"--namespace={NS}", f"--kubeconfig={kubeconfig}"
    )
    return f"""
from jupyterhub.auth import DummyAuthenticator
from cnbi_spawner.auth import TmpLoginMixin
from cnbi_spawner.service.app import service_role

class AuthorsAndLearners(TmpLoginMixin, DummyAuthenticator):
    pass

c.JupyterHub.authenticator_class = AuthorsAndLearners
c.Authenticator.allow_all = True
c.Authenticator.admin_users = {{"boss"}}
c.JupyterHub.spawner_class = "cnbi"
c.KubeSpawner.namespace = {NS!r}
c.KubeSpawner.start_timeout = {WAIT}
c.KubeSpawner.http_timeout = {WAIT}
c.ImageRegistry.namespaces = [{NS!r}]
c.JupyterHub.custom_scopes.update({{
    "custom:cnbi:builds": {{"description": "Request custom course images (CustomNBImage builds)"}},
}})
c.JupyterHub.services.append({{
    "name": "cnbi",
    "url": "http://127.0.0.1:{port}",
    "command": {service_cmd!r},
    "environment": {{"KUBECONFIG": {kubeconfig!r}, "CNBI_NAMESPACE": {NS!r}}},
    "oauth_no_confirm": True,
    "oauth_client_allowed_scopes": ["custom:cnbi:builds"],
}})
c.JupyterHub.load_groups.update({{"anonymous": {{"users": ["tricky-anon"]}}}})
c.JupyterHub.load_roles.extend([
    service_role("cnbi"),
    {{
        "name": "cnbi-author",
        "scopes": ["custom:cnbi:builds", "access:services!service=cnbi"],
        "users": ["author", "other-author", "tricky-anon", "boss"],
    }},
    {{"name": "cnbi-viewer", "scopes": ["access:services!service=cnbi"], "users": ["viewer"]}},
])
"""


@pytest.fixture
def fast_cluster(request, monkeypatch):
    """The shared ``devcluster`` fixture, its build controller stepping every 0.3 s."""
    monkeypatch.setenv(DELAY_ENV, "0.3")
    return request.getfixturevalue("devcluster")


@pytest.fixture
async def stack(fast_cluster, start_hub):
    cluster = fast_cluster
    port = free_port()
    hub = await start_hub(hub_config(str(cluster.kubeconfig), port), kubeconfig=cluster.kubeconfig)
    svc = f"{hub.url}/services/cnbi/"

    async def service_up():
        async with aiohttp.ClientSession() as s:
            try:
                async with s.get(svc + "health") as r:
                    return r.status < 500
            except aiohttp.ClientError:
                return False

    await wait_for(service_up, "the cnbi service", 60)
    return hub, cluster, svc


async def hub_api(hub, method: str, path: str, body=None):
    headers = {"Authorization": f"token {hub.api_token}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as s:
        kw = {"json": body} if body is not None else {}
        async with s.request(method, hub.api_url + path, headers=headers, **kw) as r:
            text = await r.text()
            return r.status, (json.loads(text) if text else {})


async def token_for(hub, user: str, scopes: list[str]) -> str:
    status, _ = await hub_api(hub, "POST", f"/users/{user}")
    assert status in (201, 409)
    status, body = await hub_api(hub, "POST", f"/users/{user}/tokens", {"scopes": scopes})
    assert status == 201, body
    return body["token"]


class Client:
    """Token-authenticated calls to the service API."""

    def __init__(self, svc: str, token: str) -> None:
        self.svc = svc
        self.headers = {"Authorization": f"token {token}"}

    async def call(self, method: str, path: str, headers=None, **kw) -> tuple[int, object]:
        headers = {**self.headers, **(headers or {})}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as s:
            async with s.request(method, self.svc + path, headers=headers, **kw) as r:
                text = await r.text()
                try:
                    return r.status, json.loads(text) if text else None
                except ValueError:
                    return r.status, text

    async def events(self, name: str) -> list[dict]:
        """Read the build's SSE stream to its end."""
        seen = []
        timeout = aiohttp.ClientTimeout(total=WAIT)
        async with aiohttp.ClientSession(timeout=timeout) as s:
            url = f"{self.svc}api/builds/{name}/events"
            async with s.get(url, headers=self.headers) as r:
                assert r.status == 200 and r.headers["Content-Type"] == "text/event-stream"
                event = ""
                async for raw in r.content:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "build":
                        seen.append(json.loads(line[6:]))
                    elif line.startswith("data: ") and event in ("end", "gone"):
                        break
        return seen


@contextlib.asynccontextmanager
async def form_session(hub, svc: str):
    """A cookie session logged in as ``author`` on the build form: (session, XSRF, page)."""
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(
        cookie_jar=jar, timeout=aiohttp.ClientTimeout(total=WAIT)
    ) as browser:
        await hub_login(browser, hub.url, "author")
        async with browser.get(svc + "builds/new") as r:
            page = await r.text()
            assert r.status == 200, page
        yield browser, form_xsrf(page), page


async def test_author_builds_an_image_and_learners_can_launch_it(stack):
    hub, cluster, svc = stack
    author = Client(
        svc, await token_for(hub, "author", ["custom:cnbi:builds", "access:services!service=cnbi"])
    )
    body = {
        "displayName": "Pandas course 2026",
        "baseImage": BASE,
        "packageVersions": ["pandas>=2", "scikit-learn"],
        "creator": "someone-else",  # spoofed: ignored
    }
    status, build = await author.call("POST", "api/builds", json=body)
    assert status == 201, build
    assert build["creator"] == "author" and build["warnings"]
    name = build["name"]
    assert build["phase"] in ("Pending", "Preparing")

    events = await asyncio.wait_for(author.events(name), WAIT)
    phases = [e["phase"] for e in events]
    assert phases[-1] == "Success", phases
    # phases advance in design order (each at most once)
    order = ["Pending", "Preparing", "Resolving", "Building", "Success"]
    assert [p for p in order if p in phases] == list(dict.fromkeys(phases))
    assert len(set(phases)) >= 3
    final = events[-1]
    assert final["launchable"] and final["image"].startswith(f"cnbi-{name}-package-list:")
    assert "/tmplogin?course=" in final["launch_url"]

    status, got = await author.call("GET", f"api/builds/{name}")
    assert status == 200 and got["launch_url"] == final["launch_url"]
    status, listing = await author.call("GET", "api/builds")
    assert [b["name"] for b in listing["builds"]] == [name]

    # the CustomNBImage itself names the authenticated author, not the spoofed creator
    from kubernetes_asyncio import client as k8s

    from cnbi_spawner.kube import make_api_client

    api_client = await make_api_client(str(cluster.kubeconfig))
    try:
        cr = await k8s.CustomObjectsApi(api_client).get_namespaced_custom_object(
            "meteor.zone", "v1alpha1", NS, "customnbimages", name
        )
    finally:
        await api_client.close()
    assert cr["spec"]["creator"] == "author"
    assert "someone-else" not in json.dumps(cr)

    # a learner follows the launch link: a new anonymous user runs the new image
    path = urlparse(final["launch_url"])
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(
        cookie_jar=jar, timeout=aiohttp.ClientTimeout(total=WAIT), headers=BROWSER_NAVIGATION
    ) as learner:
        async with learner.get(f"{hub.url}{path.path}?{path.query}") as r:
            assert r.status < 400, await r.text()
            landed = str(r.url)
        user = re.search(r"/(?:user|spawn-pending|spawn)/([0-9a-f-]{36})", landed)
        assert user, landed
        user = user.group(1)

        async def ready():
            _, model = await hub_api(hub, "GET", f"/users/{user}")
            server = (model.get("servers") or {}).get("")
            return bool(server and server.get("ready"))

        await wait_for(ready, "the learner's server", WAIT)
        _, model = await hub_api(hub, "GET", f"/users/{user}")
        assert model["servers"][""]["user_options"]["course"] == final["image"]
        async with learner.get(f"{hub.url}/user/{user}/") as r:  # via the server's OAuth
            assert r.status == 200 and f"/user/{user}/lab" in str(r.url), r.url
        # the pod runs the digest-pinned reference the controller published
        api_client = await make_api_client(str(cluster.kubeconfig))
        try:
            pods = await k8s.CoreV1Api(api_client).list_namespaced_pod(NS)
        finally:
            await api_client.close()
        images = {
            p.spec.containers[0].image
            for p in pods.items
            if (p.metadata.annotations or {}).get("hub.jupyter.org/username") == user
        }
        assert len(images) == 1
        assert images.pop().startswith(f"registry.example/cnbi/cnbi-{name}-package-list@sha256:")

    # only the author may delete it; then it is gone
    other = Client(
        svc,
        await token_for(
            hub, "other-author", ["custom:cnbi:builds", "access:services!service=cnbi"]
        ),
    )
    assert (await other.call("GET", f"api/builds/{name}"))[0] == 404
    assert (await other.call("DELETE", f"api/builds/{name}"))[0] == 404
    assert (await other.call("GET", "api/builds"))[1]["builds"] == []
    assert (await author.call("DELETE", f"api/builds/{name}"))[0] == 204
    assert (await author.call("GET", f"api/builds/{name}"))[0] == 404


async def test_refusals_failures_and_the_form(stack):
    hub, cluster, svc = stack
    scopes = ["custom:cnbi:builds", "access:services!service=cnbi"]
    author = Client(svc, await token_for(hub, "author", scopes))

    # no scope -> 403, nothing created
    viewer = Client(svc, await token_for(hub, "viewer", ["access:services!service=cnbi"]))
    good = {"displayName": "x", "baseImage": BASE}
    assert (await viewer.call("POST", "api/builds", json=good))[0] == 403
    assert (await viewer.call("GET", "api/builds"))[0] == 403
    # no token at all -> 403 (API, not a login redirect)
    anon = Client(svc, "")
    anon.headers = {}
    assert (await anon.call("GET", "api/builds"))[0] == 403
    # an anonymous learner, even one a role wrongly gave the scope -> 403
    tricky = Client(svc, await token_for(hub, "tricky-anon", scopes))
    status, body = await tricky.call("POST", "api/builds", json=good)
    assert status == 403, body
    assert (await author.call("GET", "api/builds"))[1]["builds"] == []

    # hostile bodies -> 4xx with field messages, nothing created
    for bad, code, field in [
        ({"displayName": "x", "baseImage": "registry.example/a b"}, 400, "baseImage"),
        ({"displayName": "x", "baseImage": BASE, "repoURL": "file:///etc"}, 400, "repoURL"),
        ({"displayName": "x", "baseImage": BASE, "packageVersions": ["a"] * 10000}, 400,
         "packageVersions"),
    ]:  # fmt: skip
        status, body = await author.call("POST", "api/builds", json=bad)
        assert (status, field in body["fields"]) == (code, True), body
    status, body = await author.call(
        "POST", "api/builds", data="{}", headers={"Content-Type": "text/plain"}
    )
    assert status == 415
    assert (await author.call("GET", "api/builds"))[1]["builds"] == []

    # failure path over the API: the message of the failed pipeline
    bad_pkg = {"displayName": "Broken", "baseImage": BASE, "packageVersions": ["nonexistent-x"]}
    status, build = await author.call("POST", "api/builds", json=bad_pkg)
    assert status == 201
    events = await asyncio.wait_for(author.events(build["name"]), WAIT)
    assert events[-1]["phase"] == "Failure"
    assert "nonexistent-x" in events[-1]["message"]
    assert events[-1]["launch_url"] is None

    # the form, through the hub's login + OAuth: server-side errors, then a failing build
    async with form_session(hub, svc) as (browser, xsrf, _):
        form = {
            "_xsrf": xsrf,
            "kind": "package-list",
            "displayName": "Form <b>build</b>",
            "baseImage": BASE,
            "packageVersions": "pandas\npandas>>1\n",
        }
        async with browser.post(svc + "builds/new", data=form) as r:
            page = await r.text()
            assert r.status == 400
            assert "Line 2:" in page and "is not a valid requirement" in page
        # no XSRF token -> refused, nothing created
        async with browser.post(svc + "builds/new", data={**form, "_xsrf": ""}) as r:
            assert r.status == 403
        form["packageVersions"] = "pandas\n"
        async with browser.post(svc + "builds/new", data=form) as r:
            assert r.status == 200
            status_url = str(r.url)
            assert "/services/cnbi/builds/form-b-build-b-" in status_url
            page = await r.text()
            assert "Form &lt;b&gt;build&lt;/b&gt;" in page and "<b>build" not in page
        name = status_url.rstrip("/").rsplit("/", 1)[1]
        status, got = await author.call("GET", f"api/builds/{name}")
        assert status == 200 and got["creator"] == "author"

        # quota: at most 3 unfinished builds per user (the default)
        statuses = []
        for i in range(4):
            status, body = await author.call(
                "POST", "api/builds", json={**good, "displayName": f"burst {i}"}
            )
            statuses.append(status)
            if status == 429:
                assert "limit 3" in body["message"]
                break
        assert statuses[-1] == 429 and set(statuses[:-1]) <= {201}, statuses

        # an admin author sees everyone's builds, but may not delete them
        boss = Client(svc, await token_for(hub, "boss", scopes))
        everyone = {b["name"] for b in (await boss.call("GET", "api/builds"))[1]["builds"]}
        mine = {b["name"] for b in (await author.call("GET", "api/builds"))[1]["builds"]}
        assert build["name"] in everyone and everyone == mine
        assert (await boss.call("GET", "api/builds?mine=1"))[1]["builds"] == []
        assert (await boss.call("DELETE", f"api/builds/{build['name']}"))[0] == 403

        # and the failed build's status page shows the message
        async with browser.get(svc + f"builds/{build['name']}") as r:
            page = await r.text()
            assert r.status == 200
            assert "Failure" in page and "nonexistent-x" in page


async def test_status_page_updates_live_and_ends_with_launch(stack):
    """A real browser: the form's client-side hints, then the status page follows SSE."""
    playwright = pytest.importorskip("playwright.async_api")
    hub, _cluster, svc = stack
    async with playwright.async_playwright() as p:
        browser = await launch_chromium(p)
        try:
            page = await browser.new_page()
            page.set_default_timeout(WAIT * 1000)
            await browser_login(page, hub.url, "author")
            await page.goto(svc + "builds/new")
            # client-side: the git fields are hidden for a package-list build
            await page.check("#kind-package-list")
            assert await page.is_hidden("#repoURL")
            await page.fill("#displayName", "Browser build")
            await page.fill("#baseImage", BASE)
            await page.fill("#packageVersions", "pandas>>1")
            valid = await page.eval_on_selector("#packageVersions", "el => el.checkValidity()")
            assert valid is False  # the hint blocks an obviously bad requirement
            await page.fill("#packageVersions", "pandas\nnumpy>=1")
            await page.click("#submit-build")
            await page.wait_for_url("**/services/cnbi/builds/browser-build-*")
            url = page.url
            first = await page.text_content("#build-phase")
            assert first in ("Pending", "Preparing", "Resolving"), first
            await page.wait_for_selector("#build-launch:not([hidden])")
            assert page.url == url  # updated in place, not reloaded
            assert await page.text_content("#build-phase") == "Success"
            href = await page.get_attribute("#launch-link", "href")
            assert "/tmplogin?course=cnbi-browser-build-" in href
        finally:
            await browser.close()


FIXTURES = Path(__file__).parent / "fixtures" / "customnbimages"
# the CNBi design's samples, verbatim: (file, flow, ImageStream suffix)
DESIGN_SAMPLES = [
    ("design-sample-package-list.yaml", "build", "package-list"),
    ("design-sample-import.yaml", "import", "import"),
    ("design-draft-action-build.yaml", "build", "package-list"),
]


async def test_design_samples_through_the_api_and_the_form(stack):
    """Each design sample, as written, is accepted by the API (YAML and JSON) and the form,
    and runs its whole flow to a launchable image (``pipelines: [prepare]`` included)."""
    hub, cluster, svc = stack
    author = Client(
        svc, await token_for(hub, "author", ["custom:cnbi:builds", "access:services!service=cnbi"])
    )

    async def finishes(name: str, flow: str, suffix: str) -> dict:
        events = await asyncio.wait_for(author.events(name), WAIT)
        final = events[-1]
        assert final["phase"] == "Success" and final["flow"] == flow, events
        if flow == "build":  # the whole prepare-and-build flow ran, not just "prepare"
            done = {c["type"] for c in final["conditions"] if c["status"] == "True"}
            assert {"PipelineRunPrepare", "PipelineRunBuild"} <= done, final["conditions"]
        assert final["launchable"] and final["image"].startswith(f"cnbi-{name}-{suffix}:")
        assert (await author.call("DELETE", f"api/builds/{name}"))[0] == 204  # quota room
        return final

    for file, flow, suffix in DESIGN_SAMPLES:
        text = (FIXTURES / file).read_text()
        manifest = yaml.safe_load(text)
        expected_name = manifest["spec"].get("displayName") or manifest["spec"]["name"]
        for how, kw in [
            ("yaml", {"data": text, "headers": {"Content-Type": "application/yaml"}}),
            ("json", {"json": manifest}),
        ]:
            status, build = await author.call("POST", "api/builds", **kw)
            assert status == 201, (file, how, build)
            assert build["name"].startswith(manifest["metadata"]["name"] + "-")
            assert build["creator"] == "author" and build["display_name"] == expected_name
            if "action" in manifest["spec"]:  # read leniently, and told what to write
                assert any("pipelines: [prepare, build]" in w for w in build["warnings"])
            await finishes(build["name"], flow, suffix)

    # the form's "paste a CustomNBImage" choice, through the hub's login + OAuth
    async with form_session(hub, svc) as (browser, xsrf, page):
        assert 'value="manifest"' in page
        for file, flow, suffix in DESIGN_SAMPLES:
            text = (FIXTURES / file).read_text()
            data = {"_xsrf": xsrf, "kind": "manifest", "manifest": text}
            async with browser.post(svc + "builds/new", data=data) as r:
                assert r.status == 200, await r.text()
                name = str(r.url).rstrip("/").rsplit("/", 1)[1]
            assert name.startswith(yaml.safe_load(text)["metadata"]["name"] + "-")
            await finishes(name, flow, suffix)
        # a pasted manifest that is not one: the form again, with the reason, nothing created
        data = {"_xsrf": xsrf, "kind": "manifest", "manifest": "kind: Pod\nspec: {}\n"}
        async with browser.post(svc + "builds/new", data=data) as r:
            page = await r.text()
            assert r.status == 400 and "must be CustomNBImage" in page
    assert (await author.call("GET", "api/builds"))[1]["builds"] == []
