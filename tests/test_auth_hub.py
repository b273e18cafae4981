"""/tmplogin against a real JupyterHub + configurable-http-proxy (and the dev cluster).

Every refusal is checked the way an operator would: status code, the hub's error page or
JSON, ``Retry-After``, and through the hub's REST API that no user was created.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import time
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import aiohttp
import pytest
from harness import BROWSER_NAVIGATION, wait_for

from cnbi_spawner.signing import sign_params

COURSE = "uai_source-uai.intro"
NOTEBOOK = "lectures/lecture1/mod5_lec1.ipynb"
IMAGE_REPO = "registry.example/courses/uai-intro"
KEY = "test-signing-key-0123456789abcdef"

STATIC_IMAGES = [
    {"name": COURSE, "image": IMAGE_REPO + ":1", "notebooks": [NOTEBOOK, "README.md"]},
    {"name": "datascience", "image": "registry.example/courses/ds:1", "aliases": ["ds"]},
]


def hub_config(**auth: object) -> str:
    lines = [
        'c.JupyterHub.authenticator_class = "tmplogin"',
        'c.JupyterHub.spawner_class = "cnbi"',
        "c.ImageRegistry.watch_imagestreams = False",
        f"c.ImageRegistry.static_images = {STATIC_IMAGES!r}",
    ]
    lines += [f"c.TmpLoginAuthenticator.{k} = {v!r}" for k, v in auth.items()]
    return "\n".join(lines) + "\n"


def browser() -> aiohttp.ClientSession:
    """A browser navigating to links: its own cookie jar (unsafe=True: the hub is on an IP
    address) and the fetch metadata of a person opening a link."""
    return aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True),
        timeout=aiohttp.ClientTimeout(total=30),
        headers=BROWSER_NAVIGATION,
    )


async def api(hub, path: str) -> object:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        headers = {"Authorization": f"token {hub.api_token}"}
        async with s.get(hub.api_url + path, headers=headers) as r:
            assert r.status == 200, await r.text()
            return await r.json()


async def user_names(hub) -> set[str]:
    return {u["name"] for u in await api(hub, "/users")}


async def metrics_text(hub) -> str:
    """The hub's /hub/metrics (Prometheus text)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        headers = {"Authorization": f"token {hub.api_token}"}
        async with s.get(hub.url + "/hub/metrics", headers=headers) as r:
            return await r.text()


async def metrics(hub) -> dict[str, float]:
    text = await metrics_text(hub)
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'^cnbi_tmplogin_total\{result="(\w+)"\} (\S+)$', text, re.M)
    }


async def tmplogin(
    session, hub, query: str | dict, *, json_: bool = False, xff: str = "", extra=None
):
    """One GET of /hub/tmplogin, not following redirects: (status, headers, body).
    ``extra``: more request headers (what an ingress adds)."""
    if isinstance(query, dict):
        query = urlencode(query, quote_via=quote)
    headers = {"Accept": "application/json"} if json_ else {"Accept": "text/html"}
    if xff:
        headers["X-Forwarded-For"] = xff
    headers.update(extra or {})
    url = f"{hub.url}/hub/tmplogin" + (f"?{query}" if query else "")
    async with session.get(url, headers=headers, allow_redirects=False) as r:
        return r.status, r.headers, await r.text()


async def whoami(session, hub) -> str:
    """The user the browser's hub cookie names (cookie-authenticated API call + XSRF)."""
    xsrf = next(c.value for c in session.cookie_jar if c.key == "_xsrf")
    async with session.get(hub.api_url + "/user", headers={"X-XSRFToken": xsrf}) as r:
        assert r.status == 200, await r.text()
        return (await r.json())["name"]


REFUSALS = [
    # (query, status, result, text the learner must see)
    ({"course": "no-such-course"}, 404, "unknown_course", "There is no course image"),
    ({"course": "uai_source-uai.intr"}, 404, "unknown_course", "Did you mean"),
    ({"course": COURSE, "notebook": "../../etc/passwd"}, 400, "bad_request", "may not contain"),
    ({"course": COURSE, "notebook": "/etc/passwd"}, 400, "bad_request", "relative"),
    ({"course": COURSE, "notebook": "other.ipynb"}, 400, "bad_request", "does not offer"),
    ({"course": COURSE, "tag": "latest"}, 400, "bad_request", "Unknown launch parameter"),
    ({"course": COURSE, "size": "enormous"}, 400, "bad_request", "no size with that name"),
    ({"image": IMAGE_REPO + ":evil"}, 404, "unknown_course", "There is no course image"),
    ({"course": "<script>alert(1)</script>"}, 400, "bad_request", "not a valid course name"),
    (f"course={COURSE}&course=datascience", 400, "bad_request", "more than once"),
    ({"notebook": NOTEBOOK}, 400, "bad_request", "which course"),
]


async def test_refusals_render_error_pages_and_create_nothing(start_hub):
    hub = await start_hub(hub_config())
    async with browser() as b:
        for query, status, _result, text in REFUSALS:
            code, headers, body = await tmplogin(b, hub, query)
            assert code == status, (query, body[:300])
            assert headers["Content-Type"].startswith("text/html")
            assert text in body, (query, body[:2000])
            assert "<script>alert(1)" not in body  # nothing reflected unescaped
            assert 'id="jupyterhub-logo"' in body  # the hub's own page, not a bare error

            code, headers, body = await tmplogin(b, hub, query, json_=True)
            assert code == status
            assert headers["Content-Type"].startswith("application/json")
            data = json.loads(body)
            assert data["status"] == status and text in data["message"]
            assert data["error"] in ("SelectionError", "UnknownImage")

        assert await user_names(hub) == set()
        counts = await metrics(hub)
        assert counts["unknown_course"] == 2 * sum(1 for r in REFUSALS if r[2] == "unknown_course")
        assert counts["bad_request"] == 2 * sum(1 for r in REFUSALS if r[2] == "bad_request")
        assert counts["ok"] == 0

        # /tmplogin outside /hub/ is redirected by the hub with the query kept
        query = urlencode({"course": COURSE, "notebook": NOTEBOOK}, quote_via=quote)
        async with b.get(f"{hub.url}/tmplogin?{query}", allow_redirects=False) as r:
            assert r.status == 302
            location = urlsplit(r.headers["Location"])
            assert location.path == "/hub/tmplogin"
            assert parse_qs(location.query) == {"course": [COURSE], "notebook": [NOTEBOOK]}

        # a good link: one UUID user in group "anonymous", redirected with validated options
        code, headers, _ = await tmplogin(
            b, hub, {"course": "UAI_Source-UAI.Intro", "notebook": "./" + NOTEBOOK}
        )
        assert code == 302
        assert headers["Location"] == (
            f"/hub/spawn?opt-course={COURSE}&opt-notebook={quote(NOTEBOOK, safe='')}&opt-size=small"
        )
        (name,) = await user_names(hub)
        assert re.fullmatch(
            r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", name
        )
        group = await api(hub, "/groups/anonymous")
        assert group["users"] == [name]
        assert (await metrics(hub))["ok"] == 1
        assert await whoami(b, hub) == name

        # again from the same browser (that user has no server: nothing to reuse):
        # a second user, and the browser's cookie now names it
        code, headers, _ = await tmplogin(b, hub, {"course": "ds"})
        assert (code, headers["Location"]) == (
            302,
            "/hub/spawn?opt-course=datascience&opt-size=small",
        )
        (second,) = await user_names(hub) - {name}
        assert await whoami(b, hub) == second

    # plain /hub/tmplogin (the hub's auto_login target) still works: fresh user, spawn page
    async with browser() as b:
        code, headers, _ = await tmplogin(b, hub, "")
        assert (code, headers["Location"]) == (302, "/hub/spawn")
    # auto_login: /hub/login sends a stranger to /hub/tmplogin, whose ?next= the hub validates
    async with browser() as b:
        async with b.get(f"{hub.url}/hub/login?next=%2Fhub%2Ftoken", allow_redirects=False) as r:
            assert r.status == 302
            location = urlsplit(r.headers["Location"])
        assert location.path == "/hub/tmplogin"
        code, headers, _ = await tmplogin(b, hub, location.query)
        assert (code, headers["Location"]) == (302, "/hub/token")
        code, headers, _ = await tmplogin(b, hub, {"next": "https://evil.example/"})
        assert code == 302 and not headers["Location"].startswith("https://evil")
    assert len(await user_names(hub)) == 5


async def test_signed_links_required_when_a_key_is_set(start_hub):
    hub = await start_hub(
        hub_config() + "c.LinkSigning.max_ttl = 3600\n", env={"CNBI_LINK_SIGNING_KEY": KEY}
    )
    now = int(time.time())
    good = sign_params({"course": COURSE, "notebook": NOTEBOOK}, KEY, now + 600)
    cases = [
        ({"course": COURSE, "notebook": NOTEBOOK}, "not signed"),
        ({**good, "course": "datascience"}, "not valid"),
        ({**good, "size": "small"}, "not valid"),
        (sign_params({"course": COURSE}, "another key", now + 600), "not valid"),
        (sign_params({"course": COURSE}, KEY, now - 5), "expired"),
        (sign_params({"course": COURSE}, KEY, now + 7200), "longer than"),
        ({"course": COURSE, "exp": str(now + 60), "sig": "x" * 43}, "not valid"),
        ({}, "not signed"),  # even the plain login needs a signature on such a hub
    ]
    async with browser() as b:
        for query, text in cases:
            code, _, body = await tmplogin(b, hub, query)
            assert code == 403 and text in body, (query, body[:500])
            code, _, body = await tmplogin(b, hub, query, json_=True)
            assert code == 403 and json.loads(body)["error"] == "BadSignature"
        assert await user_names(hub) == set()
        assert KEY not in hub.log_text()

        code, headers, _ = await tmplogin(b, hub, good)
        assert code == 302 and headers["Location"].startswith(f"/hub/spawn?opt-course={COURSE}&")
        assert "sig=" not in headers["Location"]
    assert len(await user_names(hub)) == 1
    counts = await metrics(hub)
    assert (counts["bad_signature"], counts["ok"]) == (2 * len(cases), 1)


async def test_rate_limit_per_client_while_others_get_in(start_hub):
    # the test client plays an ingress in front of configurable-http-proxy: 2 trusted hops
    hub = await start_hub(
        hub_config(
            per_client_rate=6.0, per_client_burst=2, trusted_proxy_count=2, manage_groups=True
        )
    )
    query = {"course": "ds"}
    async with browser() as b:
        for _ in range(2):
            code, _, _ = await tmplogin(b, hub, query, xff="203.0.113.7")
            assert code == 302
        code, headers, body = await tmplogin(b, hub, query, xff="203.0.113.7")
        assert code == 429
        assert 1 <= int(headers["Retry-After"]) <= 10
        assert "Too many launches" in body
        # entries left of the trusted hops are the client's own words: still charged to it
        code, headers, body = await tmplogin(b, hub, query, json_=True, xff="6.6.6.6, 203.0.113.7")
        assert code == 429
        assert json.loads(body)["retry_after"] == int(headers["Retry-After"])
        # another client behind the same ingress is not affected
        code, _, _ = await tmplogin(b, hub, query, xff="198.51.100.23")
        assert code == 302
    names = await user_names(hub)
    assert len(names) == 3
    # with manage_groups the hub itself applies the auth model's groups
    assert set((await api(hub, "/groups/anonymous"))["users"]) == names
    counts = await metrics(hub)
    assert (counts["rate_limited"], counts["ok"]) == (2, 3)


async def test_registry_not_synced_is_503_with_retry_after(start_hub, tmp_path):
    # a Kubernetes API that never answers (closed port): the registry cannot sync
    kubeconfig = tmp_path / "dead-kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "dead", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "dead", "context": {"cluster": "dead", "user": "u"}}],
                "current-context": "dead",
            }
        )
    )
    config = (hub_config() + "c.ImageRegistry.first_sync_timeout = 0.5\n").replace(
        "c.ImageRegistry.watch_imagestreams = False", 'c.ImageRegistry.namespaces = ["default"]'
    )
    hub = await start_hub(config, env={"KUBECONFIG": str(kubeconfig)})
    async with browser() as b:
        code, headers, body = await tmplogin(b, hub, {"course": COURSE}, json_=True)
        assert (code, headers["Retry-After"]) == (503, "5")
        assert json.loads(body)["error"] == "RegistryNotReady"
    assert await user_names(hub) == set()
    assert (await metrics(hub))["not_ready"] == 1


async def test_global_rate_then_waiting_learners_refuse_json_with_retry_after(start_hub):
    hub = await start_hub(
        hub_config(global_rate=6.0, global_burst=3, max_anonymous_users=4, capacity_retry_after=17)
    )
    async with browser() as b:
        for _ in range(3):
            assert (await tmplogin(b, hub, {"course": "ds"}))[0] == 302
        # the hub-wide budget (3 at once, then one per 10 s) is spent: 429 for a JSON client
        code, headers, body = await tmplogin(b, hub, {"course": "ds"}, json_=True)
        assert code == 429 and 1 <= int(headers["Retry-After"]) <= 10
        assert json.loads(body)["message"].startswith("The hub is handling too many launches")
    async with browser() as other:  # a browser waits instead (test_waiting_room_hub.py)
        code, _, body = await tmplogin(other, hub, {"course": "ds"})
        assert code == 200 and "place in line" in body
    async with browser() as robot:  # someone is waiting: a JSON client may not overtake
        code, headers, body = await tmplogin(robot, hub, {"course": "ds"}, json_=True)
        assert (code, headers["Retry-After"]) == (503, "17")
        assert "Learners are waiting" in json.loads(body)["message"]
    assert len(await user_names(hub)) == 3
    counts = await metrics(hub)
    assert (counts["ok"], counts["rate_limited"], counts["at_capacity"]) == (3, 1, 1)
    assert counts["waiting"] == 1


# --- the whole story with real servers: dev cluster (process runtime) ---------------------

FLOW_NOTEBOOK = "lectures/lecture 1/mod5 & more.ipynb"  # spaces and '&' survive the trip
WAIT = 90  # seconds for one spawn on a busy 2-core machine
FLOW_IMAGES = [
    {"name": COURSE, "image": IMAGE_REPO + ":1", "notebooks": [FLOW_NOTEBOOK]},
    {"name": "datascience", "image": IMAGE_REPO + ":1"},
]


def flow_config(**auth: object) -> str:
    lines = [
        'c.JupyterHub.authenticator_class = "tmplogin"',
        'c.JupyterHub.spawner_class = "cnbi"',
        'c.KubeSpawner.namespace = "default"',
        f"c.KubeSpawner.start_timeout = {WAIT}",
        f"c.KubeSpawner.http_timeout = {WAIT}",
        "c.ImageRegistry.watch_imagestreams = False",
        f"c.ImageRegistry.static_images = {FLOW_IMAGES!r}",
    ]
    lines += [f"c.TmpLoginAuthenticator.{k} = {v!r}" for k, v in auth.items()]
    return "\n".join(lines) + "\n"


async def maybe_await(value):
    return await value if inspect.isawaitable(value) else value


async def wait_until_ready(hub, name: str) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        server = (await api(hub, f"/users/{name}")).get("servers", {}).get("")
        if server and server.get("ready"):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"server of {name} not ready after {WAIT}s")


async def poll(session, hub) -> tuple[int, dict]:
    """What the waiting page's JavaScript does."""
    url = f"{hub.url}/hub/waiting-room"
    async with session.get(url, headers={"Accept": "application/json"}) as r:
        assert r.headers["Cache-Control"] == "no-store"
        return r.status, json.loads(await r.text())


async def stop_server(hub, name: str) -> None:
    """The learner leaves: stop its server through the REST API."""
    async with aiohttp.ClientSession() as s:
        url = f"{hub.api_url}/users/{name}/server"
        async with s.delete(url, headers={"Authorization": f"token {hub.api_token}"}) as r:
            assert r.status in (202, 204)


async def follow(session, hub, url: str) -> tuple[int, str]:
    """What a browser does: follow redirects; on the progress page, wait, then reload it.

    Returns the final status and the final URL's (decoded) path.
    """
    async with session.get(url, headers={"Accept": "text/html"}) as r:
        status, final = r.status, r.url
    if final.path.startswith("/hub/spawn-pending/"):
        await wait_until_ready(hub, final.path.rstrip("/").rsplit("/", 1)[-1])
        async with session.get(str(final), headers={"Accept": "text/html"}) as r:
            status, final = r.status, r.url
    return status, final.path


@pytest.mark.slow
async def test_full_flow_to_the_notebook_reuse_and_capacity(start_hub, devcluster, tmp_path):
    content = tmp_path / "uai-intro-content"
    (content / "lectures" / "lecture 1").mkdir(parents=True)
    (content / FLOW_NOTEBOOK).write_text(
        json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    )
    await maybe_await(devcluster.add_image(IMAGE_REPO, content))
    hub = await start_hub(
        flow_config(max_anonymous_users=1, capacity_retry_after=9),
        kubeconfig=devcluster.kubeconfig,
    )
    query = urlencode({"course": COURSE.upper(), "notebook": FLOW_NOTEBOOK}, quote_via=quote)
    notebook_path = "/lab/tree/" + quote(FLOW_NOTEBOOK)

    async with browser() as learner, browser() as other:
        # 1. the link from the LMS, outside /hub/, all the way to the open notebook
        status, path = await follow(learner, hub, f"{hub.url}/tmplogin?{query}")
        (name,) = await user_names(hub)
        assert (status, path) == (200, f"/user/{name}/lab/tree/{FLOW_NOTEBOOK}")  # decoded
        model = await api(hub, f"/users/{name}")
        assert model["groups"] == ["anonymous"]
        # the validated, canonical options reached the spawner (and are stored for restarts)
        assert model["servers"][""]["user_options"] == {
            "course": COURSE,
            "notebook": FLOW_NOTEBOOK,
            "size": "small",
        }

        # 2. the same browser, same course: back to its server, no new user
        code, headers, _ = await tmplogin(learner, hub, query)
        assert (code, headers["Location"]) == (302, f"/user/{name}{notebook_path}")
        assert await user_names(hub) == {name}
        assert (await follow(learner, hub, hub.url + headers["Location"]))[0] == 200

        # 3. the hub is at capacity (one live anonymous server): a JSON client is refused,
        # another learner's browser waits (test_waiting_room_hub.py has the whole story)
        code, headers, body = await tmplogin(other, hub, query, json_=True)
        assert (code, headers["Retry-After"]) == (503, "9")
        assert "at capacity" in body
        code, headers, body = await tmplogin(other, hub, query)
        assert code == 200 and "place in line" in body
        assert await user_names(hub) == {name}

        # 4. the first learner leaves: the slot is free again, the waiting browser gets it
        # (as the waiting page does: poll until the next admission round lets it in)
        await stop_server(hub, name)

        async def admitted() -> bool:
            return (await poll(other, hub))[1]["state"] == "admitted"

        await wait_for(admitted, "the waiting browser to be admitted", WAIT)
        code, headers, _ = await tmplogin(other, hub, query)
        assert code == 302 and headers["Location"].startswith(f"/hub/spawn?opt-course={COURSE}&")
        assert len(await user_names(hub)) == 2

    counts = await metrics(hub)
    assert (counts["ok"], counts["reused"], counts["at_capacity"], counts["waiting"]) == (
        2,
        1,
        1,
        1,
    )


@pytest.mark.slow
async def test_second_click_while_the_server_starts_goes_to_its_progress_page(
    start_hub, devcluster
):
    # an image the cluster cannot pull: the spawn stays pending (ErrImagePull) until stopped
    devcluster.set_missing("registry.example/courses/not-pulled")
    images = [{"name": "slow-course", "image": "registry.example/courses/not-pulled:1"}]
    config = flow_config().replace(repr(FLOW_IMAGES), repr(images))
    hub = await start_hub(config, kubeconfig=devcluster.kubeconfig)
    async with browser() as learner:
        code, headers, _ = await tmplogin(learner, hub, {"course": "slow-course"})
        assert code == 302
        async with learner.get(hub.url + headers["Location"], allow_redirects=False) as r:
            assert r.status == 302  # the hub started the spawn and sends us to its progress
        (name,) = await user_names(hub)
        assert (await api(hub, f"/users/{name}"))["servers"][""]["pending"] == "spawn"

        code, headers, _ = await tmplogin(learner, hub, {"course": "slow-course"})
        assert code == 302
        location = urlsplit(headers["Location"])
        assert location.path == f"/hub/spawn-pending/{name}"
        assert parse_qs(location.query) == {"next": [f"/user/{name}/lab"]}
        assert await user_names(hub) == {name}
        assert (await metrics(hub))["reused"] == 1

        await stop_server(hub, name)


@pytest.mark.slow
async def test_signed_launch_binds_the_guest_to_its_course(start_hub, stub_devcluster, tmp_path):
    """With link signing on, a guest starts only what its signed link planned: swapping the
    course afterwards (spawn page query, REST API) is refused and starts nothing."""
    await maybe_await(stub_devcluster.add_image(IMAGE_REPO, tmp_path))
    hub = await start_hub(
        flow_config() + "c.LinkSigning.max_ttl = 3600\n",
        env={"CNBI_LINK_SIGNING_KEY": KEY},
        kubeconfig=stub_devcluster.kubeconfig,
    )
    link = sign_params({"course": COURSE, "notebook": FLOW_NOTEBOOK}, KEY, int(time.time()) + 600)
    async with browser() as learner:
        code, headers, _ = await tmplogin(learner, hub, link)
        assert code == 302 and "opt-ticket=" in headers["Location"]
        (name,) = await user_names(hub)
        # the signed launch itself starts
        async with learner.get(hub.url + headers["Location"]) as r:
            assert r.status == 200
        await wait_until_ready(hub, name)
        options = (await api(hub, f"/users/{name}"))["servers"][""]["user_options"]
        assert options["course"] == COURSE and options["ticket"]

        async with aiohttp.ClientSession() as s:  # the learner leaves that server
            auth = {"Authorization": f"token {hub.api_token}"}
            async with s.delete(f"{hub.api_url}/users/{name}/server", headers=auth) as r:
                assert r.status in (202, 204)
            deadline = time.monotonic() + WAIT
            while (await api(hub, f"/users/{name}"))["servers"] and time.monotonic() < deadline:
                await asyncio.sleep(0.5)

            # another course through the spawn page: refused, nothing starts
            swap = "/hub/spawn?opt-course=datascience"
            async with learner.get(hub.url + swap, allow_redirects=False) as r:
                body = await r.text()
                assert r.status == 403, body[:500]
                assert "may only start the course its link was made for" in body
            # ... or through the REST API with a made-up ticket
            body = {"course": "datascience", "ticket": "x" * 43}
            url = f"{hub.api_url}/users/{name}/server"
            async with s.post(url, headers=auth, json=body) as r:
                assert r.status == 403, await r.text()
        assert not (await api(hub, f"/users/{name}"))["servers"]
        assert stub_devcluster.list("v1", "pods", namespace="default") == []
