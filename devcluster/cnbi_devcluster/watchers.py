"""Watch plumbing: the ``Change`` record kept in history and the per-watch ``Watcher`` queue.

A ``Watcher`` filters changes by namespace and selector and turns a MODIFIED that moves
an object into or out of its selector into ADDED / DELETED, like kube-apiserver's
watch cache does. ``None`` on the queue means "closed by the server".
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from . import resources as R
from .selectors import Selector


def dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class Change:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    obj: dict
    old: dict | None


class Watcher:
    """One open watch: receives ``(type, obj)`` tuples; ``None`` means "closed by server"."""

    def __init__(self, rt: R.ResourceType, namespace: str | None, selector: Selector):
        self.rt, self.namespace, self.selector = rt, namespace, selector
        self.queue: asyncio.Queue = asyncio.Queue()

    def wants(self, obj: dict | None) -> bool:
        if obj is None:
            return False
        if self.namespace and obj["metadata"].get("namespace") != self.namespace:
            return False
        return self.selector.empty or self.selector.matches(obj)

    def offer(self, change: Change) -> None:
        now = self.wants(change.obj)
        if change.type == "MODIFIED":
            before = self.wants(change.old)
            if now and before:
                self.queue.put_nowait(("MODIFIED", change.obj))
            elif now:
                self.queue.put_nowait(("ADDED", change.obj))
            elif before:
                self.queue.put_nowait(("DELETED", change.obj))
        elif now:
            self.queue.put_nowait((change.type, change.obj))

    def close(self) -> None:
        self.queue.put_nowait(None)
