"""The warning before a cull, in a real browser, against the real culler.

Its own stack with shortened idle timeouts (45 s, guests and named users), a guest maximum
age of 150 s, a 35 s warning lead and a cull pass every 3 s; the hub collects activity every
5 s and servers report theirs every 5 s, so JupyterLab's background polling *would* keep an
open tab active if it counted (the stock hub and jupyter_server count it: see
docs/topics/culling.md). The open JupyterLab warns before the deadline; "Keep working"
reports activity that the culler sees (no cull at the old deadline); a learner who ignores
the warning is culled although the tab stays open; a named user is warned that the server
stops, not that files are deleted; a learner who keeps typing is never warned for being
idle, but is warned about, and culled at, the maximum age.
"""

from __future__ import annotations

import re
import time

import pytest
import pytest_asyncio
from e2e_stack import AUTHOR, AUTHOR_PASSWORD, SCREENS, start_stack, wait_for
from harness import browser_login

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

LAB_TIMEOUT = 150_000
IDLE = 45
LEAD = 35
MAX_AGE = 150
CULL_EVERY = 3
ACTIVITY_EVERY = 5
LINK = "/tmplogin?course=python-basics&notebook=intro%2F01-hello.ipynb"
USER_RE = re.compile(r"/user/([0-9a-f-]{36})/lab")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory):
    s = await start_stack(
        tmp_path_factory.mktemp("e2e-cull-warning"),
        env={
            "CNBI_CULL_EVERY": str(CULL_EVERY),
            "CNBI_ANONYMOUS_IDLE_TIMEOUT": str(IDLE),
            "CNBI_ANONYMOUS_MAX_AGE": str(MAX_AGE),
            "CNBI_NAMED_IDLE_TIMEOUT": str(IDLE),
            "CNBI_CULL_WARN_LEAD": str(LEAD),
        },
        extra_config=f"c.JupyterHub.last_activity_interval = {ACTIVITY_EVERY}\n"
        f"c.LearnerLab.activity_interval = {ACTIVITY_EVERY}",
    )
    try:
        yield s
    finally:
        await s.stop()


async def _lab(stack, page) -> str:
    await page.goto(stack.url + LINK)
    await page.wait_for_url(USER_RE, timeout=LAB_TIMEOUT)
    return USER_RE.search(page.url).group(1)


async def _server(stack, user: str) -> dict | None:
    status, model = await stack.api("GET", f"/users/{user}")
    if status != 200:
        return None
    return (model.get("servers") or {}).get("")


async def test_keep_working_prevents_the_cull(stack, page):
    user = await _lab(stack, page)
    warning = page.locator("#cnbi-warning")
    await warning.wait_for(timeout=(IDLE + 20) * 1000)
    text = await page.locator("#cnbi-warning-text").inner_text()
    assert "files are deleted" in text and "idle" in text, text
    SCREENS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENS / "learner-cull-warning.png"))
    before = (await _server(stack, user))["last_activity"]
    clicked = time.monotonic()
    await page.locator("#cnbi-keep-working").click()
    await warning.wait_for(state="detached")
    after = (await _server(stack, user))["last_activity"]
    assert after > before, (before, after)
    # past the deadline the warning announced (at most LEAD s after it showed): still running
    while time.monotonic() - clicked < LEAD + 3 * CULL_EVERY:
        assert await _server(stack, user) is not None, "culled although the learner kept working"
        await page.wait_for_timeout(1000)


async def test_ignoring_the_warning_lets_the_cull_happen(stack, page):
    """The tab stays open (JupyterLab polls all along), yet nothing moves the hub's
    last activity: the server is culled at the deadline the warning announced."""
    user = await _lab(stack, page)
    # the notebook's kernel starting (after the page) is activity; wait until it settled
    last, since = None, time.monotonic()
    while True:
        server = await _server(stack, user)
        assert server is not None, "culled before the test could watch the warning"
        if server["last_activity"] == last:
            break
        assert time.monotonic() - since < IDLE, "the hub's last activity keeps moving"
        last = server["last_activity"]
        await page.wait_for_timeout(2 * ACTIVITY_EVERY * 1000 + 1000)
    await page.locator("#cnbi-warning").wait_for(timeout=(IDLE + 20) * 1000)
    seen = (await _server(stack, user))["last_activity"]
    await page.wait_for_timeout(3 * ACTIVITY_EVERY * 1000)  # several hub and server rounds
    server = await _server(stack, user)
    assert server is None or server["last_activity"] == seen, "the open tab counted as activity"

    async def culled():
        return await _server(stack, user) is None

    await wait_for(culled, "the ignored learner's server culled", timeout=IDLE + 30, interval=1)


async def test_a_named_user_is_warned_that_the_server_stops_not_of_deletion(stack, page):
    await browser_login(page, stack.url, AUTHOR, AUTHOR_PASSWORD)
    await page.goto(stack.url + "/hub/spawn?course=python-basics&notebook=intro%2F01-hello.ipynb")
    await page.wait_for_url(re.compile(f"/user/{AUTHOR}/lab"), timeout=LAB_TIMEOUT)
    try:
        await page.locator("#cnbi-warning").wait_for(timeout=(IDLE + 20) * 1000)
        text = await page.locator("#cnbi-warning-text").inner_text()
        assert "Your server will be stopped" in text and "idle" in text, text
        assert "delete" not in text.lower() and "files" not in text.lower(), text
        assert await page.locator("#cnbi-keep-working").is_visible()
        assert await page.locator("#cnbi-download").count() == 0  # nothing is deleted
        assert await page.locator("#cnbi-notice").count() == 0  # the notice is for guests
        SCREENS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENS / "named-cull-warning.png"))
    finally:
        await stack.api("DELETE", f"/users/{AUTHOR}/server")


async def test_a_learner_who_keeps_typing_is_warned_about_and_culled_at_the_maximum_age(
    stack, page
):
    user = await _lab(stack, page)
    started = await _server(stack, user)
    warning = page.locator("#cnbi-warning")
    text, idle_since = "", None
    for _ in range(MAX_AGE * 2):  # at most MAX_AGE s of typing (a key every 0.5 s)
        await page.keyboard.press("Shift")  # the learner's input: activity, no edit
        await page.wait_for_timeout(500)
        if not await warning.count():
            idle_since = None
            continue
        text = await page.locator("#cnbi-warning-text").inner_text()
        if "maximum length" in text:
            break
        # an idle warning (e.g. due before the page had loaded): input keeps working at once
        idle_since = idle_since or time.monotonic()
        assert time.monotonic() - idle_since < 10, f"idle warning stays while typing: {text}"
    assert "maximum length" in text, "no warning before the maximum age"
    assert "files are deleted" in text, text
    assert await page.locator("#cnbi-keep-working").count() == 0  # activity cannot extend it
    server = await _server(stack, user)
    first = started["last_activity"] or started["started"]
    assert server is not None and server["last_activity"] > first  # the typing counted

    async def culled():
        return await _server(stack, user) is None

    await wait_for(culled, "the server culled at its maximum age", timeout=LEAD + 30, interval=1)
