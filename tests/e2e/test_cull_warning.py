"""The warning before an idle cull, in a real browser, against the real culler.

Its own stack with a shortened guest idle timeout (45 s), a 35 s warning lead and a cull
pass every 3 s: the open JupyterLab warns before the deadline; "Keep working" reports
activity that the culler sees (no cull at the old deadline); a learner who ignores the
warning is culled.
"""

from __future__ import annotations

import re
import time

import pytest
import pytest_asyncio
from e2e_stack import SCREENS, start_stack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

LAB_TIMEOUT = 150_000
IDLE = 45
LEAD = 35
CULL_EVERY = 3
LINK = "/tmplogin?course=python-basics&notebook=intro%2F01-hello.ipynb"
USER_RE = re.compile(r"/user/([0-9a-f-]{36})/lab")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory):
    s = await start_stack(
        tmp_path_factory.mktemp("e2e-cull-warning"),
        env={"CNBI_CULL_EVERY": str(CULL_EVERY), "CNBI_ANONYMOUS_IDLE_TIMEOUT": str(IDLE)},
        extra_config=f"c.LearnerLab.warn_lead = {LEAD}",
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
    user = await _lab(stack, page)
    await page.locator("#cnbi-warning").wait_for(timeout=(IDLE + 20) * 1000)

    async def culled():
        return await _server(stack, user) is None

    await wait_for(culled, "the ignored learner's server culled", timeout=IDLE + 30, interval=1)
