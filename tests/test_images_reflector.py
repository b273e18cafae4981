"""The list+watch protocol on the wire, against a scripted API server.

The API server is the one thing outside our control, so these tests script it
exactly as KUBE_API_SUBSET.md §2 describes real servers behaving (410 as a 200 +
ERROR event, 410 on an expired continue token, garbage lines, paging), and check
that the real registry with the real kubernetes_asyncio client recovers from each.
Normal create/modify/delete and outages run against the dev cluster in
test_images_live.py.
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path

import pytest
import yaml
from aiohttp import web

from cnbi_spawner.images.registry import ImageRegistry

FIXTURE = Path(__file__).parent / "fixtures" / "imagestreams" / "jupyter-datascience-notebook.yaml"
NS = "opendatahub"
PATH = f"/apis/image.openshift.io/v1/namespaces/{NS}/imagestreams"


def stream(name: str, rv: int) -> dict:
    obj = copy.deepcopy(yaml.safe_load(FIXTURE.read_text()))
    obj["metadata"].update(name=name, resourceVersion=str(rv))
    return obj


class Script:
    """Answers LIST/WATCH from a list of per-request behaviours; records every request."""

    def __init__(self):
        self.requests: list[dict] = []
        self.streams: dict[str, dict] = {}
        self.rv = 10
        self.watch_script: list = []  # each: list of lines to send, then hold open
        self.list_script: list = []  # each: a web.Response to send instead of the list

    async def handle(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        self.requests.append(query)
        if query.get("watch") == "True":
            lines = self.watch_script.pop(0) if self.watch_script else []
            resp = web.StreamResponse()
            await resp.prepare(request)
            for line in lines:
                await resp.write((line if isinstance(line, str) else json.dumps(line)).encode())
                await resp.write(b"\n")
            await asyncio.sleep(float(query.get("timeoutSeconds", 1)))
            return resp
        if self.list_script:
            return self.list_script.pop(0)
        items = sorted(self.streams.values(), key=lambda o: o["metadata"]["name"])
        limit, start = int(query.get("limit", 0) or 0), int(query.get("continue", 0) or 0)
        meta = {"resourceVersion": str(self.rv)}
        if limit:
            if start + limit < len(items):
                meta["continue"] = str(start + limit)
            items = items[start : start + limit]
        return web.json_response({"kind": "ImageStreamList", "metadata": meta, "items": items})

    def lists(self) -> list[dict]:
        return [r for r in self.requests if r.get("watch") != "True"]

    def watches(self) -> list[dict]:
        return [r for r in self.requests if r.get("watch") == "True"]


@pytest.fixture
async def scripted(tmp_path):
    script = Script()
    app = web.Application()
    app.router.add_get(PATH, script.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
        f"clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
    )
    regs: list[ImageRegistry] = []

    async def make(**kw) -> ImageRegistry:
        reg = ImageRegistry(
            kubeconfig=str(kubeconfig),
            namespaces=[NS],
            resync_period=1.0,
            request_timeout=1.0,
            backoff_max=0.2,
            **kw,
        )
        regs.append(reg)
        await reg.start()
        return reg

    yield script, make
    for reg in regs:
        await reg.stop()
    await runner.cleanup()


async def until(predicate, timeout=5.0):
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


GONE = {
    "type": "ERROR",
    "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"},
}


async def test_watch_410_relists_and_watches_from_the_new_rv(scripted):
    script, make = scripted
    script.streams["a"] = stream("a", 9)
    script.watch_script = [[GONE]]
    reg = await make()
    assert await reg.wait_synced(5)
    script.streams["b"] = stream("b", 19)  # only a relist can find it
    script.rv = 20
    await until(lambda: reg.get("b:2025.1") is not None)
    assert len(script.lists()) == 2
    await until(lambda: len(script.watches()) >= 2)
    assert [w["resourceVersion"] for w in script.watches()[:2]] == ["10", "20"]
    assert reg.stale_since is None  # 410 is routine, not an outage


async def test_expired_continue_token_restarts_the_list(scripted):
    script, make = scripted
    for i in range(5):
        script.streams[f"s{i}"] = stream(f"s{i}", i + 1)
    gone = web.json_response(
        {"kind": "Status", "code": 410, "reason": "Expired", "message": "continue expired"},
        status=410,
    )
    first_page = web.json_response(
        {
            "kind": "ImageStreamList",
            "metadata": {"resourceVersion": "10", "continue": "2"},
            "items": [script.streams["s0"], script.streams["s1"]],
        }
    )
    script.list_script = [first_page, gone]
    reg = await make(list_page_size=2)
    assert await reg.wait_synced(5)
    assert {i.stream for i in reg.images()} == {f"s{i}" for i in range(5)}
    assert [r.get("continue") for r in script.lists()][:2] == [None, "2"]


async def test_garbage_and_events_apply_incrementally(scripted):
    script, make = scripted
    script.streams["a"] = stream("a", 9)
    modified = stream("a", 11)
    modified["metadata"]["annotations"]["cnbi.meteor.zone/course-aliases"] = "alpha"
    script.watch_script = [
        [{"type": "MODIFIED", "object": modified}, {"type": "DELETED", "object": modified}],
        ["this is not json"],
    ]
    reg = await make()
    assert await reg.wait_synced(5)
    await until(lambda: reg.get("a:2025.1") is None)  # MODIFIED then DELETED applied
    # the non-JSON line forces a relist (with back-off), which brings "a" back
    await until(lambda: reg.get("a:2025.1") is not None)
    assert len(script.lists()) >= 2


async def test_list_error_marks_stale_and_keeps_serving(scripted):
    script, make = scripted
    script.streams["a"] = stream("a", 9)
    reg = await make()
    assert await reg.wait_synced(5)
    down = {"kind": "Status", "code": 503, "message": "down"}
    script.list_script = [web.json_response(down, status=503) for _ in range(3)]
    script.watch_script = [[json.dumps(down)]]  # the watch answers with a Status line
    await until(lambda: reg.stale_since is not None)
    assert reg.synced and reg.resolve("a").key == "a:2025.1"
    await until(lambda: reg.stale_since is None)  # after the scripted errors, lists work
