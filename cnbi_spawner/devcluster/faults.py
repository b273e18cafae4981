"""Fault injection for the dev cluster's API: outages, dropped watches, slow responses.

- ``pause(mode="hang")``: new requests wait (the connection is open, no answer) and open
  watches stop delivering events until ``resume()`` — a network partition.
- ``pause(mode="503")``: new requests get ``503 ServiceUnavailable`` Status bodies and open
  watches are closed — an API server that is down behind a load balancer.
- ``drop_watches()``: close every open watch now (clients must resume from their last rv).
- ``latency = seconds``: every API request is delayed by that much.

The admin endpoints under ``/_devcluster/`` are never affected, so a test can always
resume the API it paused.
"""

from __future__ import annotations

import asyncio
import logging

from .resources import ApiError

log = logging.getLogger("cnbi.devcluster")

MODES = ("hang", "503")


class Faults:
    def __init__(self, store) -> None:
        self._store = store
        self.mode: str | None = None
        self.latency: float = 0.0
        self._resumed = asyncio.Event()
        self._resumed.set()

    @property
    def paused(self) -> bool:
        return self.mode is not None

    def pause(self, mode: str = "hang") -> None:
        if mode not in MODES:
            raise ValueError(f"pause mode must be one of {MODES}, not {mode!r}")
        self.mode = mode
        self._resumed.clear()
        if mode == "503":
            self._store.drop_watches()
        log.info("devcluster: API paused (%s)", mode)

    def resume(self) -> None:
        if self.mode:
            log.info("devcluster: API resumed")
        self.mode = None
        self._resumed.set()

    def drop_watches(self) -> int:
        n = self._store.drop_watches()
        log.info("devcluster: dropped %d watches", n)
        return n

    async def gate(self) -> None:
        """Run before each API request: delay, hang or refuse as configured."""
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        if self.mode == "hang":
            await self._resumed.wait()
        elif self.mode == "503":
            raise ApiError(
                503, "ServiceUnavailable", "the dev cluster API is paused (fault injection)"
            )

    async def stall(self) -> None:
        """Run before each watch event: hold events while paused in hang mode."""
        if self.mode == "hang":
            await self._resumed.wait()

    def state(self) -> dict:
        return {"paused": self.mode is not None, "mode": self.mode, "latency": self.latency}
