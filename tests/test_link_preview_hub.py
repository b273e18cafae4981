"""Link previews against a real hub: unfurlers, mail scanners and prefetches create nothing.

Each request shape (as the sender documents it, see ``test_link_preview``) fetches a launch
link from a real JupyterHub (real KubeSpawner, stub dev cluster): 200, a page whose Open
Graph tags name the course (escaped), no user, no pod, and no rate-limit token used. A
navigation with a current browser's fetch metadata still launches in one step, and the page's
one button (a POST with the hub's XSRF token) launches for a browser too old to send it.
"""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qs, quote, urlencode

import aiohttp
import pytest
from harness import BROWSER_NAVIGATION
from test_link_preview import CHROME, CLICK, PREVIEWERS, USER

pytestmark = [pytest.mark.slow]

COURSE = "uai_source-uai.intro"
NOTEBOOK = "lectures/lecture1/mod5_lec1.ipynb"
DISPLAY = 'Intro to AI <b>2026</b> & "friends"'
IMAGES = [
    {
        "name": COURSE,
        "image": "registry.example/courses/uai-intro:1",
        "display_name": DISPLAY,
        "description": "Week 1: <script>alert(1)</script> search",
        "notebooks": [NOTEBOOK],
    }
]
QUERY = urlencode({"course": COURSE, "notebook": NOTEBOOK}, quote_via=quote)

# the named senders (user agents in test_link_preview), plus shapes that carry no agent
SHAPES = [(who, "GET", {"User-Agent": agent, "Accept": "*/*"}) for who, agent in PREVIEWERS] + [
    ("HEAD from a browser", "HEAD", {"User-Agent": CHROME, **CLICK, **USER}),
    ("Defender Safe Links scan (no fetch metadata)", "GET", {"User-Agent": CHROME}),
    ("Chromium prerender", "GET",
     {"User-Agent": CHROME, **CLICK, "Sec-Purpose": "prefetch;prerender"}),
    ("fetch() from another page", "GET", {"User-Agent": CHROME, "Sec-Fetch-Mode": "cors"}),
    ("embedded in an iframe", "GET", {"User-Agent": CHROME, **CLICK, "Sec-Fetch-Dest": "iframe"}),
]  # fmt: skip


def config() -> str:
    return "\n".join(
        [
            'c.JupyterHub.authenticator_class = "tmplogin"',
            'c.JupyterHub.spawner_class = "cnbi"',
            'c.KubeSpawner.namespace = "default"',
            "c.ImageRegistry.watch_imagestreams = False",
            f"c.ImageRegistry.static_images = {IMAGES!r}",
            # one launch per client and minute: a preview that used a token would show
            "c.TmpLoginAuthenticator.per_client_rate = 1.0",
            "c.TmpLoginAuthenticator.per_client_burst = 1",
        ]
    )


async def api(hub, path: str):
    async with aiohttp.ClientSession() as s:
        headers = {"Authorization": f"token {hub.api_token}"}
        async with s.get(hub.api_url + path, headers=headers) as r:
            assert r.status == 200
            return await r.json()


async def tmplogin_metrics(hub) -> dict[str, float]:
    async with aiohttp.ClientSession() as s:
        headers = {"Authorization": f"token {hub.api_token}"}
        async with s.get(hub.url + "/hub/metrics", headers=headers) as r:
            text = await r.text()
    found = re.finditer(r'^cnbi_tmplogin_total\{result="(\w+)"\} (\S+)$', text, re.M)
    return {m.group(1): float(m.group(2)) for m in found}


def jar_session(headers: dict | None = None) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True),
        timeout=aiohttp.ClientTimeout(total=30),
        headers=headers or {},
    )


async def test_previews_create_nothing_and_a_click_still_launches(start_hub, stub_devcluster):
    cluster = stub_devcluster
    hub = await start_hub(config(), kubeconfig=cluster.kubeconfig)
    url = f"{hub.url}/hub/tmplogin?{QUERY}"

    for who, method, headers in SHAPES:
        async with jar_session() as bot:
            async with bot.request(method, url, headers=headers, allow_redirects=False) as r:
                body = await r.text()
                assert r.status == 200, (who, r.status, body[:300])
                assert r.headers["Content-Type"].startswith("text/html"), who
                assert r.headers["Cache-Control"] == "no-store"
                cookies = {c.key for c in bot.cookie_jar}
        assert not any(k.startswith("jupyterhub-hub-login") for k in cookies), who
        if method == "HEAD":
            assert body == "", who
            continue
        # a useful preview: the course's name and what the link opens, escaped
        title = re.search(r'<meta property="og:title" content="([^"]*)">', body)
        assert title and html.unescape(title.group(1)) == DISPLAY, who
        desc = re.search(r'<meta property="og:description" content="([^"]*)">', body)
        assert desc and f"Opens {NOTEBOOK} in JupyterLab" in html.unescape(desc.group(1)), who
        assert "<b>2026</b>" not in body and "<script>alert(1)" not in body, who
        assert 'id="cnbi-launch"' in body, who

    # a program asking for JSON (no fetch metadata) is told so in JSON
    async with jar_session() as program:
        headers = {"Accept": "application/json", "User-Agent": "python-requests/2.32"}
        async with program.get(url, headers=headers, allow_redirects=False) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("application/json")
            body = await r.json()
    assert body["launched"] is False and body["course"] == COURSE and body["title"] == DISPLAY
    assert body["reason"] == "no-fetch-metadata"

    # nothing was created: no user, no pod, and every fetch counted
    assert await api(hub, "/users") == []
    assert cluster.list("v1", "pods", namespace="default") == []
    counts = await tmplogin_metrics(hub)
    assert counts["preview"] + counts["confirm"] == len(SHAPES) + 1
    assert counts["ok"] == 0

    # a bad link is still refused as such (nothing created either)
    async with jar_session() as bot:
        headers = {"User-Agent": PREVIEWERS[0][1]}
        async with bot.get(f"{hub.url}/hub/tmplogin?course=no-such", headers=headers) as r:
            assert r.status == 404 and "no-such" in await r.text()

    # a person's click in a current browser: one step, straight to the spawn (and the
    # previews above used none of this client's single launch token)
    async with jar_session(BROWSER_NAVIGATION) as person:
        async with person.get(url, allow_redirects=False) as r:
            assert r.status == 302, await r.text()
            assert r.headers["Location"].startswith(f"/hub/spawn?opt-course={COURSE}&")
    users = await api(hub, "/users")
    assert len(users) == 1 and users[0]["groups"] == ["anonymous"]


async def test_the_button_launches_for_an_old_browser(start_hub, stub_devcluster):
    hub = await start_hub(config(), kubeconfig=stub_devcluster.kubeconfig)
    url = f"{hub.url}/hub/tmplogin?{QUERY}"
    old = "Mozilla/5.0 (iPhone; CPU iPhone OS 15_8 like Mac OS X) Version/15.6 Mobile Safari/604.1"
    async with jar_session({"User-Agent": old}) as browser:
        async with browser.get(url) as r:
            page = await r.text()
            assert r.status == 200
        form = re.search(r'<form method="post" action="([^"]+)"', page)
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page).group(1)
        action = html.unescape(form.group(1))
        path, _, query = action.partition("?")
        assert (path, parse_qs(query)) == ("/hub/tmplogin", parse_qs(QUERY))
        # without the page's XSRF token the POST is refused, nothing created
        async with browser.post(hub.url + action, data={}, allow_redirects=False) as r:
            assert r.status == 403
        assert await api(hub, "/users") == []
        # the button
        async with browser.post(hub.url + action, data={"_xsrf": xsrf}, allow_redirects=False) as r:
            assert r.status == 302, await r.text()
            assert r.headers["Location"].startswith(f"/hub/spawn?opt-course={COURSE}&")
    assert len(await api(hub, "/users")) == 1
