"""``GET <prefix>health``: is this service able to do its job? For readiness probes.

Three checks, run concurrently, each with a short timeout:

- ``hub``: the hub API answers and accepts our token (``GET /hub/api/user``);
- ``kubernetes``: the Kubernetes API answers a cheap list in our namespace;
- ``registry``: the image registry has synced and is not stale for longer than
  ``registry_stale_limit`` seconds (it keeps serving its last-known-good view
  while the watch reconnects; that is fine for a while, not for ever).

Answers 200 when all pass, 503 otherwise, with a JSON body either way. No
authentication (probes have no token); the body holds no user data.
"""

from __future__ import annotations

import asyncio
import json
import time

from tornado import web

from .context import ServiceContext
from .metrics import stale_seconds


async def _check(coro, timeout: float) -> dict:
    t0 = time.monotonic()
    try:
        await asyncio.wait_for(coro, timeout)
    except Exception as e:
        return {
            "ok": False,
            "error": f"{type(e).__name__}: {e}"[:200] or type(e).__name__,
            "seconds": round(time.monotonic() - t0, 3),
        }
    return {"ok": True, "seconds": round(time.monotonic() - t0, 3)}


def registry_check(registry, stale_limit: float) -> dict:
    if registry is None:
        return {"ok": True, "synced": False, "stale_seconds": 0, "note": "no registry"}
    synced = bool(registry.synced)
    stale = stale_seconds(registry)
    return {
        "ok": synced and stale <= stale_limit,
        "synced": synced,
        "stale_seconds": round(stale, 1),
    }


async def health_report(ctx: ServiceContext, timeout: float = 3.0) -> dict:
    """The health JSON for a service context (also used by tests and the CLI)."""
    hub_task = _check(ctx.hub.whoami(timeout=timeout, retries=0), timeout + 0.5)
    if ctx.storage is not None:
        kube_task = _check(ctx.storage.ping(timeout), timeout + 0.5)
    else:

        async def absent() -> dict:
            return {"ok": True, "note": "kubernetes not configured"}

        kube_task = absent()
    hub, kube = await asyncio.gather(hub_task, kube_task)
    parts = {
        "hub": hub,
        "kubernetes": kube,
        "registry": registry_check(ctx.registry, ctx.settings.registry_stale_limit),
    }
    return {**parts, "ok": all(part["ok"] for part in parts.values())}


class HealthHandler(web.RequestHandler):
    async def get(self) -> None:
        report = await health_report(self.settings["cnbi"])
        self.set_status(200 if report["ok"] else 503)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.write(json.dumps(report))
