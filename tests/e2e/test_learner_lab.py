"""What a guest sees around and inside JupyterLab, in a real browser (Debian Chromium).

One stack for the module (process runtime: real ``jupyterhub-singleuser`` pods serving the
demo courses, the production ``jupyterhub_config.py``): the guest's progress page names the
course and notebook and shows none of the hub's machinery (user name, Token, Stop Server),
while a named user keeps the stock navigation bar.
"""

from __future__ import annotations

import pytest
from e2e_stack import AUTHOR, AUTHOR_PASSWORD, SCREENS, wait_for

playwright_api = pytest.importorskip("playwright.async_api")

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

DATA_SCIENCE = "registry.example/courses/data-science"


async def test_guest_progress_page_names_the_launch_and_hides_the_machinery(stack, page):
    """A pod that cannot be scheduled keeps the guest on the progress page: it names the
    course and notebook, and has no UUID, Token link, Logout or visible Stop Server."""
    stack.cluster.kubelet.pod_faults.set(DATA_SCIENCE, "Unschedulable")
    user = None
    try:
        await page.goto(
            stack.url + "/tmplogin?course=data-science&notebook=analysis%2Fexplore.ipynb"
        )
        await page.wait_for_url("**/hub/spawn-pending/**")
        user = page.url.split("/spawn-pending/", 1)[1].split("?", 1)[0]
        launch = page.locator("#cnbi-launch")
        await launch.wait_for()
        text = await launch.inner_text()
        assert "Data science" in text and "analysis/explore.ipynb" in text, text
        nav = await page.locator("nav").inner_text()
        assert user not in nav and "Token" not in nav and "Logout" not in nav, nav
        assert "Temporary guest session" in nav
        assert await page.locator("#stop-server-btn").is_hidden()
        assert user not in await page.locator("body").inner_text()
        SCREENS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENS / "guest-progress.png"))
    finally:
        stack.cluster.kubelet.pod_faults.set(DATA_SCIENCE, None)
        if user:
            await stack.api("DELETE", f"/users/{user}/server")


async def test_named_user_keeps_the_stock_navigation_bar(stack, page):
    await page.goto(stack.url + "/hub/login")
    await page.fill("#username_input", AUTHOR)
    await page.fill("#password_input", AUTHOR_PASSWORD)
    await page.click("#login_submit")
    await page.goto(stack.url + "/hub/token")
    nav = page.locator("nav")
    await wait_for(lambda: _has(nav, AUTHOR), "the author's name in the navigation bar")
    text = await nav.inner_text()
    assert "Token" in text and "Logout" in text and "Temporary guest session" not in text


async def _has(locator, text: str) -> bool:
    return text in await locator.inner_text()
