"""Fixtures for the end-to-end tests; the machinery is in ``e2e_stack.py``.

``stack`` is one stack per test module; ``browser`` one Chromium per module and ``page`` a
fresh browser context (cookies, storage) per test."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import pytest_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e_stack import STEP_TIMEOUT, start_stack  # noqa: E402
from harness import launch_chromium  # noqa: E402


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory):
    s = await start_stack(tmp_path_factory.mktemp("e2e-stack"))
    try:
        yield s
    finally:
        await s.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser():
    playwright_api = pytest.importorskip("playwright.async_api")
    async with playwright_api.async_playwright() as p:
        b = await launch_chromium(p)
        try:
            yield b
        finally:
            await b.close()


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser):
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    page.set_default_timeout(STEP_TIMEOUT)
    try:
        yield page
    finally:
        await context.close()
