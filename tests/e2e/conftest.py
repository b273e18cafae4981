"""Fixtures for the end-to-end tests; the machinery is in ``e2e_stack.py``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e_stack import start_stack  # noqa: E402


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory):
    s = await start_stack(tmp_path_factory.mktemp("e2e-stack"))
    try:
        yield s
    finally:
        await s.stop()
