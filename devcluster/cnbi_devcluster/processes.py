"""Stop a process and everything it started, for good, whatever sessions they moved to.

JupyterHub starts configurable-http-proxy and its services (our ``cnbi`` service) with
``start_new_session=True``, so signalling the hub's process group misses them, and a hub
that crashes or is killed leaves them running, reparented away where its tree no longer
shows them. The policy: a ``ProcessTree`` remembers every descendant it has seen (children
by parent pid, recursively, re-read while the leader runs); ``stop()`` SIGTERMs the
leader's group, waits, then SIGKILLs whatever it has seen that is still alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

import psutil


class ProcessTree:
    """``proc`` and every descendant seen since ``follow()`` started."""

    def __init__(self, proc: asyncio.subprocess.Process, every: float = 0.5) -> None:
        self.proc = proc
        self.every = every
        self.seen: dict[int, psutil.Process] = {}
        self._task: asyncio.Task | None = None

    def snapshot(self) -> None:
        with contextlib.suppress(psutil.Error):
            self.seen.update((p.pid, p) for p in psutil.Process(self.proc.pid).children(True))

    def follow(self) -> None:
        """Re-read the tree every ``every`` seconds while the leader runs."""

        async def loop() -> None:
            while self.proc.returncode is None:
                self.snapshot()
                await asyncio.sleep(self.every)

        self._task = asyncio.get_running_loop().create_task(loop())

    async def stop(self, grace: float = 10) -> None:
        """SIGTERM the leader's group, wait up to ``grace`` s, then SIGKILL all seen."""
        self.snapshot()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.proc.returncode is None and loop.time() < deadline:
            self.snapshot()  # started late, e.g. during shutdown
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 0.2)
        if self._task is not None:
            self._task.cancel()
        # a hub that stopped cleanly stops its proxy and services; give them a moment
        pause = 0.5 if self.proc.returncode == 0 else 0
        _, alive = psutil.wait_procs(list(self.seen.values()), timeout=pause)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()
