"""The reservations page in a real browser (Chromium through Playwright).

Real hub + proxy + cnbi service + dev cluster; the instructor signs in at the hub's login
page and reaches the service through the hub's OAuth, like a person.

Story: the week grid shows the class's hours free; the instructor books through the
form and gets the class's launch link; the grid shows those hours booked with fewer
seats left; a booking that does not fit comes back as 409 with the message, the nearest
windows that fit and the form as filled in; nothing is stored for it.
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qs, urlsplit

import pytest
from harness import browser_login, launch_chromium
from playwright.async_api import async_playwright
from test_reservations_service import hub_extra, stack, stored, window  # noqa: F401 (fixtures)

from cnbi_spawner import reservations as R

pytestmark = [pytest.mark.slow]

WAIT_MS = 60_000


async def cell(page, start: str) -> tuple[str, str]:
    """The small size's grid cell of the hour starting at ``start``: (state, seats left)."""
    found = page.locator(f'table[data-size="small"] td[data-start="{start}"]')
    state = (await found.get_attribute("class")).removeprefix("cnbi-")
    seats_left = (await found.inner_text()).split()[-1]
    return state, seats_left


async def test_booking_through_the_page_in_a_browser(stack):  # noqa: F811 (fixture)
    hub, _cluster, svc, _config, api = stack
    when = window(24)  # 2 hours, a day from now
    day = R.parse_time(when["start"], "start").date().isoformat()
    grid = f"{svc}reservations?week={day}"
    async with async_playwright() as p:
        browser = await launch_chromium(p)
        try:
            page = await browser.new_page()
            page.set_default_timeout(WAIT_MS)
            await browser_login(page, hub.url, "prof")

            # the class's hours are free: 10 seats, 20 % kept for walk-ins -> 8 bookable
            await page.goto(grid)
            assert await cell(page, when["start"]) == ("free", "8")

            # book 5 seats through the form
            await page.fill("#course", "uai-intro")
            await page.select_option("#size", "small")
            await page.fill("#seats", "5")
            await page.fill("#start", when["start"])
            await page.fill("#end", when["end"])
            await page.fill("#note", "Lecture 3")
            async with page.expect_response(lambda r: r.request.method == "POST") as posted:
                await page.click("#reservation-form button[type=submit]")
            assert (await posted.value).status == 201
            link = await page.input_value("#created-link")
            query = parse_qs(urlsplit(link).query)
            (obj,) = await stored(api)
            assert query[R.LINK_PARAM] == [obj["metadata"]["name"]]
            assert "/tmplogin?" in link and query["course"] == ["uai-intro:2026.1"]
            row = page.locator(f'#mine tr[data-name="{obj["metadata"]["name"]}"]')
            assert "Lecture 3" in await row.inner_text()
            assert await row.locator("a").get_attribute("href") == link

            # the week grid changed: those hours are booked, 3 seats left
            await page.goto(grid)
            assert await cell(page, when["start"]) == ("booked", "3")
            second = R.rfc3339(R.parse_time(when["start"], "s") + dt.timedelta(hours=1))
            assert await cell(page, second) == ("booked", "3")
            assert await cell(page, when["end"]) == ("free", "8")  # the window ends at its hour

            # 4 more seats do not fit: 409, the message, windows that fit, the form kept
            await page.fill("#course", "uai-intro")
            await page.select_option("#size", "small")
            await page.fill("#seats", "4")
            await page.fill("#start", when["start"])
            await page.fill("#end", when["end"])
            async with page.expect_response(lambda r: r.request.method == "POST") as posted:
                await page.click("#reservation-form button[type=submit]")
            assert (await posted.value).status == 409
            message = await page.inner_text("#form-message")
            assert "do not fit" in message and "at most 3" in message, message
            alternatives = await page.locator("#alternatives li").all_inner_texts()
            assert alternatives and alternatives[0].startswith(window(22)["start"]), alternatives
            assert await page.input_value("#seats") == "4"
            assert await page.input_value("#size") == "small"
            assert await page.input_value("#start") == when["start"]
            assert len(await stored(api)) == 1
        finally:
            await browser.close()
