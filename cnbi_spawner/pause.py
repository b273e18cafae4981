"""Pause a loop until an event is set or some seconds have passed, whichever comes first.

Owns the one sleep-or-wake of every background loop (culler, pool, reservations, rebuilds,
notebook indexer, the image registry's sync wait) and the rule behind it: a cancelled loop
ends cancelled, even when its event is set at the same moment.

That rule is why this is ``asyncio.timeout`` and not ``asyncio.wait_for``: on Python 3.11
``wait_for`` returns the awaitable's result when a cancellation arrives as that awaitable
finishes, and drops the cancellation (CPython gh-86296; 3.12 rebuilt ``wait_for`` on
``asyncio.timeout``). A loop that lost its cancellation that way went on to its next pass,
and whoever awaited the cancelled task waited for it; the dev cluster's kubelet hung CI for
80 minutes on the same bug. ``asyncio.timeout`` runs the wait in the caller's own task, so a
cancellation is never handed to a second task to lose.

Must not do anything but wait: no logging, no decision what to do after the pause.
"""

from __future__ import annotations

import asyncio


async def pause(seconds: float, until: asyncio.Event) -> None:
    """Return once ``until`` is set or after ``seconds``, whichever is first; a cancellation
    of the caller always propagates (see the module docstring)."""
    try:
        async with asyncio.timeout(seconds):
            await until.wait()
    except TimeoutError:
        pass
