"""A small async client for the JupyterHub REST API, as the service uses it.

Owns: paging (``Accept: application/jupyterhub-pagination+json``, ``offset``/``limit``),
retries with exponential backoff on connection errors and 5xx, and idempotent
deletes (404 means "already gone" and counts as done). It knows nothing about
culling policy. Token and URL come from the hub-managed service environment
(``JUPYTERHUB_API_TOKEN``, ``JUPYTERHUB_API_URL``) unless given.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

log = logging.getLogger("cnbi.hubapi")

PAGINATION_MEDIA_TYPE = "application/jupyterhub-pagination+json"


class HubAPIError(Exception):
    def __init__(self, method: str, url: str, status: int, message: str = "") -> None:
        super().__init__(f"{method} {url} -> {status} {message}".strip())
        self.status = status


class HubClient:
    """Async JupyterHub API client with paging and retries.

    ``concurrency`` bounds the requests in flight from this client (the hub is a
    single process; thousands of simultaneous deletes would only slow it down).
    """

    def __init__(
        self,
        api_url: str | None = None,
        token: str | None = None,
        *,
        concurrency: int = 10,
        page_size: int = 200,
        retries: int = 4,
        backoff: float = 0.5,
        request_timeout: float = 60,
    ) -> None:
        self.api_url = (
            api_url or os.environ.get("JUPYTERHUB_API_URL") or "http://127.0.0.1:8081/hub/api"
        ).rstrip("/")
        self.token = token if token is not None else os.environ.get("JUPYTERHUB_API_TOKEN", "")
        self.page_size = page_size
        self.retries = retries
        self.backoff = backoff
        self.request_timeout = request_timeout
        self._semaphore = asyncio.Semaphore(max(1, concurrency))
        self._http = AsyncHTTPClient(force_instance=True, max_clients=max(1, concurrency) + 2)

    def close(self) -> None:
        self._http.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict | None = None,
        headers: dict | None = None,
        ok404: bool = False,
        timeout: float | None = None,
        retries: int | None = None,
        unlimited: bool = False,
    ) -> tuple[int, Any]:
        """One API call -> (status, parsed JSON or None). Retries 5xx and connection errors.

        ``unlimited`` skips the concurrency limit (health probes must not queue behind a
        cull pass; the HTTP client keeps two spare connections for them).
        """
        url = self.api_url + path
        if params:
            url += "?" + urlencode(params)
        hdrs = {"Authorization": f"token {self.token}", "Accept": "application/json"}
        hdrs.update(headers or {})
        data = None if body is None else json.dumps(body)
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        attempts = (self.retries if retries is None else retries) + 1
        for attempt in range(attempts):
            req = HTTPRequest(
                url,
                method=method,
                headers=hdrs,
                body=data,
                allow_nonstandard_methods=True,
                request_timeout=timeout or self.request_timeout,
                connect_timeout=min(10.0, timeout or self.request_timeout),
            )
            try:
                if unlimited:
                    resp = await self._http.fetch(req, raise_error=False)
                else:
                    async with self._semaphore:
                        resp = await self._http.fetch(req, raise_error=False)
            except (OSError, TimeoutError, HTTPClientError) as e:
                status, message = 599, str(e)
            else:
                status = resp.code
                message = resp.reason or ""
                if status == 599 and resp.error is not None:
                    message = str(resp.error)
                if status < 400:
                    text = resp.body.decode("utf8", "replace") if resp.body else ""
                    return status, (json.loads(text) if text.strip() else None)
                if status == 404 and ok404:
                    return 404, None
                if status < 500 and status != 429:
                    raise HubAPIError(method, path, status, _error_message(resp) or message)
            if attempt + 1 < attempts:
                delay = self.backoff * (2**attempt) * (0.5 + random.random())
                log.warning(
                    "%s %s failed (%s %s); retry %d in %.1fs",
                    method,
                    path,
                    status,
                    message,
                    attempt + 1,
                    delay,
                )
                await asyncio.sleep(delay)
        raise HubAPIError(method, path, status, message)

    # ---------------------------------------------------------------- reading

    async def version(self, timeout: float | None = None) -> str:
        _, model = await self.request("GET", "/", timeout=timeout, retries=0)
        return model["version"]

    async def whoami(self, timeout: float | None = None, retries: int | None = None) -> dict:
        _, model = await self.request(
            "GET", "/user", timeout=timeout, retries=retries, unlimited=True
        )
        return model

    async def get_user(self, name: str) -> dict | None:
        _, model = await self.request("GET", f"/users/{quote(name, safe='')}", ok404=True)
        return model

    async def group_members(self, group: str, *, missing_ok: bool = False) -> set[str]:
        """The member names of a hub group (none if it does not exist and ``missing_ok``)."""
        path = f"/groups/{quote(group, safe='')}"
        _, model = await self.request("GET", path, ok404=missing_ok)
        return set((model or {}).get("users") or ())

    async def list_users(self, state: str | None = None) -> AsyncIterator[dict]:
        """Every user model, page by page (``state``: active | ready | inactive | None).

        Pages are fetched one after another with ``offset``/``limit``: the listing is
        finished before the caller acts on it in a cull pass, so deletions do not
        shift the offsets under us.
        """
        offset = 0
        while True:
            params: dict[str, Any] = {"offset": offset, "limit": self.page_size}
            if state:
                params["state"] = state
            _, page = await self.request(
                "GET", "/users", params=params, headers={"Accept": PAGINATION_MEDIA_TYPE}
            )
            if isinstance(page, list):  # a hub without pagination: everything at once
                for item in page:
                    yield item
                return
            items = page.get("items", [])
            for item in items:
                yield item
            nxt = (page.get("_pagination") or {}).get("next")
            if not nxt or not items:
                return
            offset = int(nxt.get("offset", offset + len(items)))

    async def all_users(self, state: str | None = None) -> list[dict]:
        return [u async for u in self.list_users(state)]

    # ---------------------------------------------------------------- acting

    async def stop_server(self, user: str, server: str = "") -> bool:
        """Stop a server. True when it is stopped (or was gone), False when the hub
        answers 202 (still stopping: try again next pass)."""
        path = f"/users/{quote(user, safe='')}/server"
        if server:
            path = f"/users/{quote(user, safe='')}/servers/{quote(server, safe='')}"
        try:
            status, _ = await self.request("DELETE", path, ok404=True)
        except HubAPIError as e:
            if e.status == 400:  # "not running" / "stop pending": nothing to do now
                return False
            raise
        return status != 202

    async def delete_user(self, user: str) -> bool:
        """Delete a user (the hub stops its default server first). True when gone,
        False when the hub refuses because a stop is still pending (400)."""
        try:
            await self.request("DELETE", f"/users/{quote(user, safe='')}", ok404=True)
        except HubAPIError as e:
            if e.status == 400:
                return False
            raise
        return True

    # ---------------------------------------------------------------- used by tests / seeding

    async def create_users(self, names: list[str]) -> None:
        await self.request("POST", "/users", body={"usernames": names})

    async def add_group_members(self, group: str, names: list[str]) -> None:
        status, _ = await self.request("GET", f"/groups/{quote(group, safe='')}", ok404=True)
        if status == 404:
            await self.request("POST", f"/groups/{quote(group, safe='')}", body={})
        await self.request("POST", f"/groups/{quote(group, safe='')}/users", body={"users": names})

    async def start_server(
        self, user: str, options: dict | None = None, *, retries: int | None = None
    ) -> int:
        status, _ = await self.request(
            "POST", f"/users/{quote(user, safe='')}/server", body=options or {}, retries=retries
        )
        return status

    async def post_activity(self, user: str, when: str, servers: tuple[str, ...] = ("",)) -> None:
        body = {"last_activity": when, "servers": {s: {"last_activity": when} for s in servers}}
        await self.request("POST", f"/users/{quote(user, safe='')}/activity", body=body)


def _error_message(resp) -> str:
    try:
        return json.loads(resp.body.decode("utf8", "replace")).get("message", "")
    except Exception:
        return ""
