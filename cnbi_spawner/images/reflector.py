"""List + watch ImageStreams in one namespace, forever, feeding a sink.

The loop (the same protocol as client-go's reflector and KubeSpawner's):

    LIST (paged: limit/continue) -> sink replaces the namespace's streams
    WATCH from the list's resourceVersion, timeoutSeconds = resync_period
        each ADDED/MODIFIED/DELETED -> sink applies that one stream
        clean end -> WATCH again from the last resourceVersion seen
    410 Gone (watch or a LIST continue token) -> LIST again at once
    any other error -> sink marks the namespace failing (last-known-good keeps
        serving), sleep a jittered exponential back-off, then LIST again
        (that LIST is the resync after the outage)

A hanging API is noticed when the watch request's client timeout
(resync_period + request_timeout) fires. This module owns the protocol only: what
a stream means is the sink's business (``ImageRegistry``).
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from .imagestreams import ParseResult, stream_source

GROUP, VERSION, PLURAL = "image.openshift.io", "v1", "imagestreams"
YIELD_EVERY = 50  # streams parsed between two yields to the event loop


@dataclass(frozen=True)
class ReflectorSettings:
    label_selector: str
    page_size: int = 1000
    resync_period: float = 30.0
    request_timeout: float = 30.0
    backoff_max: float = 30.0


class Sink(Protocol):
    def _parse(self, obj: dict) -> ParseResult: ...
    def _stream_rv_of(self, source: str) -> str | None: ...
    def _replace_namespace(
        self, ns: str, listed: set[str], parsed: list[tuple[ParseResult, str | None]]
    ) -> None: ...
    def _apply_event(self, ns: str, kind: str, obj: dict) -> None: ...
    def _mark_ok(self, ns: str) -> None: ...
    def _mark_failing(self, ns: str, error: BaseException) -> None: ...


def describe(error: BaseException) -> str:
    """One short line for a log: no multi-line API bodies."""
    if isinstance(error, ApiException):
        return f"HTTP {error.status} {error.reason or ''}".strip()[:200]
    text = str(error).splitlines()[0][:200] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def backoff(failures: int, cap: float) -> float:
    """0.2 s doubling per failure up to ``cap``, with jitter (half to full delay)."""
    delay = min(cap, 0.2 * 2 ** min(max(failures, 1) - 1, 16))
    return random.uniform(delay / 2, delay)


async def list_namespace(
    api: client.CustomObjectsApi, ns: str, settings: ReflectorSettings, sink: Sink
) -> str:
    """LIST every page, parse what changed, hand it to the sink; returns the list rv.

    Pages are parsed as they arrive (only parsed images are kept, not raw objects),
    while the next page is already being fetched; parsing yields to the event loop
    every ``YIELD_EVERY`` streams so a 10,000-stream sync never stalls the hub. The sink
    gets nothing until the last page is in, so a LIST failing half-way changes nothing.
    """
    listed: set[str] = set()
    parsed: list[tuple[ParseResult, str | None]] = []

    def fetch(cont: str | None) -> asyncio.Future:
        kwargs: dict[str, Any] = {
            "label_selector": settings.label_selector,
            "limit": settings.page_size,
        }
        if cont:
            kwargs["_continue"] = cont
        return asyncio.ensure_future(
            api.list_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, _request_timeout=settings.request_timeout, **kwargs
            )
        )

    pending: asyncio.Future | None = fetch(None)
    try:
        while pending is not None:
            page = await pending
            metadata = page.get("metadata") or {}
            cont = metadata.get("continue")
            rv = metadata.get("resourceVersion") or ""
            pending = fetch(cont) if cont else None
            items = page.get("items") or []
            del page
            for i, obj in enumerate(items):
                if i % YIELD_EVERY == 0:
                    await asyncio.sleep(0)  # sends the next page's request, serves the hub
                if not isinstance(obj, dict):
                    continue
                meta = obj.get("metadata") or {}
                source = stream_source(ns, meta.get("name", ""))
                listed.add(source)
                obj_rv = meta.get("resourceVersion")
                if obj_rv and sink._stream_rv_of(source) == obj_rv:
                    continue  # unchanged since we parsed it
                meta.setdefault("namespace", ns)
                parsed.append((sink._parse(obj), obj_rv))
    finally:
        if pending is not None:
            pending.cancel()
        # the generated client keeps the last response body (a whole page) alive
        api.api_client.last_response = None  # type: ignore[attr-defined]
    sink._replace_namespace(ns, listed, parsed)
    return rv


async def reflect(
    api_client: client.ApiClient,
    ns: str,
    settings: ReflectorSettings,
    sink: Sink,
    log: logging.Logger | logging.LoggerAdapter,
) -> None:
    """Run the list+watch loop for ``ns`` until cancelled."""
    api = client.CustomObjectsApi(api_client)
    rv: str | None = None
    failures = 0
    while True:
        try:
            if rv is None:
                rv = await list_namespace(api, ns, settings, sink)
                sink._mark_ok(ns)
                failures = 0
            async with watch.Watch() as w:
                async for event in w.stream(
                    api.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    ns,
                    PLURAL,
                    label_selector=settings.label_selector,
                    resource_version=rv,
                    timeout_seconds=max(1, int(settings.resync_period)),
                    _request_timeout=settings.resync_period + settings.request_timeout,
                ):
                    obj = event.get("raw_object")
                    if not isinstance(obj, dict):
                        raise ValueError(f"malformed watch event: {str(obj)[:100]}")
                    rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                    sink._mark_ok(ns)
                    kind = event.get("type")
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        sink._apply_event(ns, kind, obj)
            sink._mark_ok(ns)  # a clean end of the watch proves the API is up
        except asyncio.CancelledError:
            raise
        except Exception as e:
            rv = None
            if isinstance(e, ApiException) and e.status == 410:
                log.info("ImageStream watch in %s expired (410 Gone); listing again", ns)
                await asyncio.sleep(random.uniform(0, 0.2))
                continue
            failures += 1
            sink._mark_failing(ns, e)
            delay = backoff(failures, settings.backoff_max)
            log.debug("ImageStreams in %s: %s; retry in %.1fs", ns, describe(e), delay)
            await asyncio.sleep(delay)
