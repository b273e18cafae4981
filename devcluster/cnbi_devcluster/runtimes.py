"""Container runtimes for the dev cluster's kubelet: real processes, or cheap stubs.

``ProcessContainer`` runs the container's command as a real local process in its own
process group (so stopping it leaves no strays), with the pod's environment, stdout and
stderr going to the pod's log file. ``StubContainer`` binds ``podIP:port`` inside this
process and answers what JupyterHub and configurable-http-proxy need from a singleuser
server (``<prefix>api``, ``<prefix>api/status``, any page under the prefix), so hundreds
of pods cost a socket each.

``run_hook`` runs a command to its end (a ``postStart`` exec hook).

``IpPool`` hands each pod its own loopback address (127.A.B.C, A >= 16) starting at a
random point and skipping addresses whose port is already bound, so several dev
clusters on one machine (parallel test runs) do not collide.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import os
import random
import signal
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tornado import httpserver, web

log = logging.getLogger("cnbi.devcluster")

#: process groups still alive, killed at interpreter exit if nobody stopped them
_LIVE_GROUPS: set[int] = set()


@atexit.register
def _kill_leftovers() -> None:
    for pgid in list(_LIVE_GROUPS):
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)


class IpPool:
    """Unique loopback IPs, never reused within one pool."""

    SPACE = (254 - 16) * 256 * 254

    def __init__(self, seed: int | None = None) -> None:
        self._next = random.Random(seed).randrange(self.SPACE)
        self._issued = 0

    def _ip(self, n: int) -> str:
        n %= self.SPACE
        a, rest = divmod(n, 256 * 254)
        b, c = divmod(rest, 254)
        return f"127.{16 + a}.{b}.{c + 1}"

    def allocate(self, port: int) -> str:
        for _ in range(1000):
            ip = self._ip(self._next)
            self._next += 1
            self._issued += 1
            if _bindable(ip, port):
                return ip
        raise RuntimeError("no free loopback address found")


def _bindable(ip: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
        except OSError:
            return False
    return True


@dataclass
class LaunchSpec:
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    ip: str
    port: int
    log_path: Path
    meta: dict = field(default_factory=dict)


async def port_open(ip: str, port: int, timeout: float = 0.5) -> bool:
    try:
        # asyncio.timeout, not wait_for: in Python 3.11 wait_for drops a cancellation that
        # arrives as the connection opens, and the kubelet's stop then waited forever
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(ip, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return True


class ProcessContainer:
    """One real process (group) per container."""

    def __init__(self, spec: LaunchSpec) -> None:
        self.spec = spec
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    async def start(self) -> None:
        self.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.spec.log_path, "ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.spec.argv,
                env=self.spec.env,
                cwd=str(self.spec.cwd),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        _LIVE_GROUPS.add(self.proc.pid)

    async def ready(self) -> bool:
        return await port_open(self.spec.ip, self.spec.port)

    async def wait(self) -> int:
        assert self.proc is not None
        code = await self.proc.wait()
        self._reap()
        return code

    def _reap(self) -> None:
        if self.proc is None:
            return
        # the leader is gone; take down anything it left in its group
        with contextlib.suppress(OSError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        _LIVE_GROUPS.discard(self.proc.pid)

    async def stop(self, grace: float) -> int | None:
        """SIGTERM the group, SIGKILL after ``grace`` seconds; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), max(grace, 0.1))
            except TimeoutError:
                with contextlib.suppress(OSError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()
        self._reap()
        return self.proc.returncode


async def run_hook(
    command: list[str], env: dict[str, str], cwd: Path, timeout: float
) -> str | None:
    """Run ``command`` (at most ``timeout`` seconds); ``None`` if it exited 0, else what
    went wrong (the exit code and the start of its stderr, or why it did not run)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *command,
            env=env,
            cwd=cwd,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), timeout)
        failed = f"exit code {proc.returncode}: {err.decode(errors='replace')[:200]}"
        ok = proc.returncode == 0
    except (OSError, TimeoutError) as e:
        failed, ok = str(e) or "timed out", False
    return None if ok else failed


class _StubHandler(web.RequestHandler):
    def initialize(self, info: dict) -> None:
        self.info = info

    def check_xsrf_cookie(self) -> None:
        pass

    def _route(self) -> None:
        prefix = self.info["prefix"]
        path = self.request.path
        self.info["last_activity"] = _now()
        if not path.startswith(prefix) and path + "/" != prefix:
            self.set_status(404)
            return self.finish({"message": "Not Found"})
        rest = path[len(prefix) :]
        if rest == "api":
            return self.finish({"version": "2.14.0"})
        if rest == "api/status":
            return self.finish(
                {
                    "started": self.info["started"],
                    "last_activity": self.info["last_activity"],
                    "connections": 0,
                    "kernels": 0,
                }
            )
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(
            "<!doctype html><html><head><title>JupyterLab (stub)</title></head>"
            f"<body><h1>stub notebook server</h1><p>{self.info['pod']}</p>"
            f"<p id='path'>{json.dumps(rest)}</p></body></html>"
        )

    def get(self, *args) -> None:
        self._route()

    def post(self, *args) -> None:
        self._route()

    head = get


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class StubContainer:
    """A fake singleuser server: a socket on podIP:port in this process."""

    def __init__(self, spec: LaunchSpec) -> None:
        self.spec = spec
        self._server: httpserver.HTTPServer | None = None
        self._stopped = asyncio.Event()
        self.pid = None
        prefix = spec.env.get("JUPYTERHUB_SERVICE_PREFIX") or "/"
        self.info = {
            "prefix": prefix if prefix.endswith("/") else prefix + "/",
            "pod": spec.meta.get("pod", ""),
            "started": _now(),
            "last_activity": _now(),
        }

    async def start(self) -> None:
        app = web.Application([(r".*", _StubHandler, {"info": self.info})])
        self._server = httpserver.HTTPServer(app)
        self._server.listen(self.spec.port, address=self.spec.ip)
        self.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.spec.log_path.write_text(
            f"stub singleuser server on http://{self.spec.ip}:{self.spec.port}"
            f"{self.info['prefix']}\n"
        )

    async def ready(self) -> bool:
        return self._server is not None

    async def wait(self) -> int:
        await self._stopped.wait()
        return 0

    async def stop(self, grace: float) -> int | None:
        if self._server is not None:
            self._server.stop()
            await self._server.close_all_connections()
            self._server = None
        self._stopped.set()
        return 0


#: what the kubelet runs a container with
Container = ProcessContainer | StubContainer
