"""The waiting room in a real browser: a full hub, the waiting page, then JupyterLab by itself.

Its own stack (dev cluster with real JupyterLab pods, the production config with
``CNBI_MAX_ANONYMOUS_USERS=1``): one learner fills the hub, a second opens the MIT OL link in
Chromium and gets the waiting page with its place; when the first learner's server stops,
the page, untouched, continues through the hub's progress page into JupyterLab with the
notebook open. No user exists for the second learner until then. A second browser without
JavaScript keeps its place through the page's meta refresh.
"""

from __future__ import annotations

import re

import aiohttp
import pytest
import pytest_asyncio
from e2e_stack import MITOL_LINK, SCREENS, anon_users, start_stack, wait_for
from harness import BROWSER_NAVIGATION, launch_chromium

playwright_api = pytest.importorskip("playwright.async_api")

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

LAB_TIMEOUT = 150_000  # ms: JupyterLab in a real browser on 2 busy cores is slow
NOTEBOOK = "mod5_lec1.ipynb"
ROOM = """
c.WaitingRoomSettings.max_poll_seconds = 2.0
c.WaitingRoomSettings.expire_seconds = 30.0
"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def full_stack(tmp_path_factory):
    s = await start_stack(
        tmp_path_factory.mktemp("waiting-room"),
        env={"CNBI_MAX_ANONYMOUS_USERS": "1"},
        extra_config=ROOM,
    )
    try:
        yield s
    finally:
        await s.stop()


async def fill_the_hub(stack) -> str:
    """A first learner (plain HTTP) takes the hub's one place; its user name."""
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as s:
        headers = {"Accept": "text/html", **BROWSER_NAVIGATION}  # a person's click
        async with s.get(stack.url + MITOL_LINK, headers=headers) as r:
            assert r.status == 200, await r.text()
    (first,) = [u["name"] for u in anon_users(await stack.users())]
    await stack.wait_ready(first)
    return first


async def test_the_waiting_page_continues_into_jupyterlab_by_itself(full_stack):
    stack = full_stack
    first = await fill_the_hub(stack)
    async with playwright_api.async_playwright() as p:
        browser = await launch_chromium(p)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 800})
            page = await context.new_page()
            seen: list[str] = []
            page.on("framenavigated", lambda frame: seen.append(frame.url))
            response = await page.goto(stack.url + MITOL_LINK)
            assert response.status == 200
            await page.wait_for_selector("#cnbi-position")
            assert (await page.inner_text("#cnbi-position")) == "1"
            assert "place in line" in await page.inner_text("h1")
            SCREENS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SCREENS / "waiting-room.png"))

            # JavaScript off: the meta refresh reloads the page, the place is kept
            quiet = await (await browser.new_context(java_script_enabled=False)).new_page()
            await quiet.goto(stack.url + MITOL_LINK)
            assert (await quiet.inner_text("#cnbi-position")) == "2"
            reloads: list[str] = []
            quiet.on("load", lambda p: reloads.append(p.url))

            async def refreshed() -> bool:
                return len(reloads) >= 2

            await wait_for(refreshed, "two meta refreshes", 20)
            assert (await quiet.inner_text("#cnbi-position")) == "2"
            await quiet.context.close()

            # nothing was created for the waiting learners
            assert [u["name"] for u in anon_users(await stack.users())] == [first]

            status, _ = await stack.api("DELETE", f"/users/{first}/server")
            assert status in (202, 204)
            # untouched, the page continues: progress page, then JupyterLab with the notebook
            await page.wait_for_url(re.compile(r"/user/[0-9a-f-]{36}/lab"), timeout=LAB_TIMEOUT)
            await page.wait_for_selector(
                f".lm-TabBar-tabLabel:text-is('{NOTEBOOK}')", timeout=LAB_TIMEOUT
            )
            assert any("/hub/spawn-pending/" in u for u in seen), seen
            second = re.search(r"/user/([0-9a-f-]{36})/", page.url).group(1)
            assert second != first
            model = await stack.wait_ready(second)
            assert model["servers"][""]["user_options"]["notebook"].endswith(NOTEBOOK)
        finally:
            await browser.close()
