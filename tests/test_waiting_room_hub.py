"""The waiting room against a real JupyterHub + proxy + dev cluster (stub runtime).

A full hub (``max_anonymous_users`` = 1, one learner's server running): browsers get the
waiting page (200) and a place, JSON clients get 503 + Retry-After, a reload keeps the place,
an abandoned place expires, a hub restart re-derives the places from their cookies in their
old order and creates nothing, and when the running server stops the first in line is
admitted first; only then is a user created for it.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid

import aiohttp
import pytest
import yarl
from harness import wait_for
from test_auth_hub import (
    COURSE,
    FLOW_IMAGES,
    IMAGE_REPO,
    api,
    browser,
    flow_config,
    maybe_await,
    metrics_text,
    poll,
    stop_server,
    tmplogin,
    user_names,
    wait_until_ready,
)

from cnbi_spawner.pool import POOL_GROUP

EXPIRE = 4.0  # seconds without a poll before a place is dropped (short for the test)
LINK = {"course": COURSE}


def room_config(images: list | None = None, **auth: object) -> str:
    auth = {"max_anonymous_users": 1, "capacity_retry_after": 11, **auth}
    config = flow_config(**auth)
    if images is not None:
        config = config.replace(repr(FLOW_IMAGES), repr(images))
    return config + (
        f"c.WaitingRoomSettings.expire_seconds = {EXPIRE}\n"
        "c.WaitingRoomSettings.max_poll_seconds = 1.0\n"
        "c.WaitingRoomSettings.admit_seconds = 20.0\n"
    )


def position_on_page(body: str) -> int:
    match = re.search(r'id="cnbi-position">(\d+)<', body)
    assert match, body[:3000]
    return int(match.group(1))


async def queue_metrics(hub) -> dict[str, float]:
    text = await metrics_text(hub)
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"^(cnbi_waiting_room_[\w{}=\"]+) (\S+)$", text, re.M)
    }


@pytest.mark.slow
async def test_waiting_room_at_a_full_hub(start_hub, stub_devcluster, tmp_path):
    await maybe_await(stub_devcluster.add_image(IMAGE_REPO, tmp_path))
    hub = await start_hub(room_config(), kubeconfig=stub_devcluster.kubeconfig)
    async with browser() as a, browser() as b, browser() as c, browser() as gone:
        # A fills the hub
        code, headers, _ = await tmplogin(a, hub, LINK)
        assert code == 302
        async with a.get(hub.url + headers["Location"]) as r:
            assert r.status == 200
        (first,) = await user_names(hub)
        await wait_until_ready(hub, first)

        # B and C: the waiting page (200, not an error), a place each, nothing created
        for session, expected in ((b, 1), (c, 2)):
            code, headers, body = await tmplogin(session, hub, LINK)
            assert code == 200, body[:2000]
            assert headers["Content-Type"].startswith("text/html")
            assert headers["Cache-Control"] == "no-store"
            assert position_on_page(body) == expected
            assert f'id="cnbi-launch">Waiting to start <strong>{COURSE}</strong>.' in body
            assert 'http-equiv="refresh"' in body  # works without JavaScript too
            assert "jupyterhub" in body.lower()  # the hub's page
            assert any(cookie.key == "cnbi-place" for cookie in session.cookie_jar)
        # a JSON client keeps getting the refusal, with Retry-After; it holds no place
        async with browser() as robot:
            code, headers, body = await tmplogin(robot, hub, LINK, json_=True)
            assert code == 503 and int(headers["Retry-After"]) >= 1
            assert json.loads(body)["error"] == "Throttled"
            assert not any(cookie.key == "cnbi-place" for cookie in robot.cookie_jar)
            assert (await poll(robot, hub))[0] == 404
        code, _, body = await tmplogin(gone, hub, LINK)  # joins, then never polls again
        assert (code, position_on_page(body)) == (200, 3)
        assert await user_names(hub) == {first}

        # a reload keeps the place; the poll says the same
        code, _, body = await tmplogin(b, hub, LINK)
        assert (code, position_on_page(body)) == (200, 1)
        assert f"Waiting to start <strong>{COURSE}</strong>" in body  # named on a reload too
        status, data = await poll(c, hub)
        assert status == 200 and data["state"] == "waiting" and data["position"] == 2
        assert 0 < data["poll_seconds"] <= 1.0

        # the abandoned place expires while B and C keep polling
        deadline = time.monotonic() + EXPIRE + 2.5
        while time.monotonic() < deadline:
            assert (await poll(b, hub))[1]["state"] == "waiting"
            assert (await poll(c, hub))[1]["state"] == "waiting"
            await asyncio.sleep(0.5)
        assert (await poll(gone, hub))[0] == 404
        counts = await queue_metrics(hub)
        assert counts['cnbi_waiting_room_expired_total{reason="abandoned"}'] == 1
        assert counts["cnbi_waiting_room_length"] == 2
        assert counts["cnbi_waiting_room_joined_total"] == 3

        # the hub restarts: places come back from their cookies, in their old order (C
        # polls first), and nothing is created for them
        pods = len(stub_devcluster.list("v1", "pods", namespace="default"))
        await hub.stop()
        await hub.start()
        status, data = await poll(c, hub)
        assert (status, data["state"]) == (200, "waiting")
        status, data = await poll(b, hub)
        assert (status, data["position"]) == (200, 1)
        assert (await poll(c, hub))[1]["position"] == 2
        assert await user_names(hub) == {first}
        assert len(stub_devcluster.list("v1", "pods", namespace="default")) == pods

        # A leaves: B (first in line) is admitted, C is not; still no user for B
        await stop_server(hub, first)

        async def b_admitted() -> bool:
            assert (await poll(c, hub))[1]["state"] == "waiting"
            return (await poll(b, hub))[1]["state"] == "admitted"

        await wait_for(b_admitted, "the first in line to be admitted", 60)
        assert (await poll(c, hub))[1]["position"] == 1
        assert await user_names(hub) == {first}
        # B's page reloads itself: now the launch goes ahead and the user is created
        code, headers, _ = await tmplogin(b, hub, LINK)
        assert code == 302 and headers["Location"].startswith(f"/hub/spawn?opt-course={COURSE}&")
        assert not any(cookie.key == "cnbi-place" for cookie in b.cookie_jar)
        (second,) = await user_names(hub) - {first}
        async with b.get(hub.url + headers["Location"]) as r:
            assert r.status == 200
        await wait_until_ready(hub, second)
        # C is still waiting: the hub is full again
        code, _, body = await tmplogin(c, hub, LINK)
        assert (code, position_on_page(body)) == (200, 1)
        counts = await queue_metrics(hub)
        assert counts["cnbi_waiting_room_admitted_total"] == 1
        assert counts["cnbi_waiting_room_wait_seconds_count"] == 1
        model = await api(hub, f"/users/{second}")
        assert model["groups"] == ["anonymous"]

    # a made-up place cookie (not signed by the hub) holds no place: the browser gets a
    # new one at the back, and the poll does not know it
    async with browser() as forger:
        forged = "A" * 24 + "|1.000|"
        forger.cookie_jar.update_cookies({"cnbi-place": forged}, response_url=yarl.URL(hub.url))
        assert (await poll(forger, hub))[0] == 404
        code, _, body = await tmplogin(forger, hub, LINK)
        assert (code, position_on_page(body)) == (200, 2)
        (cookie,) = [c for c in forger.cookie_jar if c.key == "cnbi-place" and c["path"] == "/hub/"]
        assert cookie.value != forged  # the hub's own signed place
    assert await user_names(hub) == {first, second}


async def admin(hub, method: str, path: str, body: object = None, expect: int = 0) -> int:
    """An admin's REST API call; it must succeed, or answer ``expect`` if given."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        headers = {"Authorization": f"token {hub.api_token}"}
        async with s.request(method, hub.api_url + path, headers=headers, json=body) as r:
            assert r.status == expect if expect else r.status < 300, await r.text()
            return r.status


@pytest.mark.slow
async def test_with_ingress_stamps_the_room_keeps_the_order_learners_clicked(
    start_hub, stub_devcluster, tmp_path
):
    """The ingress stamps each request (``X-Request-Start``): the hub reads C's request
    before B's, but B clicked first, so B is first in line and admitted first, and not
    before its stamp is ``arrival_settle`` seconds old. A stamp far from the hub's clock is
    not believed: that browser queues at the back."""
    await maybe_await(stub_devcluster.add_image(IMAGE_REPO, tmp_path))
    settle = 8.0  # B clicked 3 s before it joined: it is held about 5 s after the slot frees
    config = room_config() + (
        'c.WaitingRoomSettings.arrival_header = "X-Request-Start"\n'
        f"c.WaitingRoomSettings.arrival_settle = {settle}\n"
    )
    hub = await start_hub(config, kubeconfig=stub_devcluster.kubeconfig)
    async with browser() as a, browser() as b, browser() as c, browser() as forger:
        code, headers, _ = await tmplogin(a, hub, LINK)  # A fills the hub
        async with a.get(hub.url + headers["Location"]) as r:
            assert r.status == 200
        (first,) = await user_names(hub)
        await wait_until_ready(hub, first)

        now = time.time()  # C clicked 2 s ago, B 3 s ago, the forger's stamp is an hour old
        for session, clicked, expected in (
            (c, now - 2, 1),
            (b, now - 3, 1),
            (forger, now - 3600, 3),
        ):
            stamp = {"X-Request-Start": f"t={clicked:.3f}"}
            code, _, body = await tmplogin(session, hub, LINK, extra=stamp)
            assert (code, position_on_page(body)) == (200, expected), body[:2000]
        assert (await poll(c, hub))[1]["position"] == 2  # B went in ahead of C
        assert await user_names(hub) == {first}
        lag = (await queue_metrics(hub))["cnbi_waiting_room_arrival_lag_seconds_count"]
        assert lag == 2  # B's and C's stamps; the forger's was not believed

        await stop_server(hub, first)

        async def b_admitted() -> bool:
            return (await poll(b, hub))[1]["state"] == "admitted"

        await wait_for(b_admitted, "the first to click to be admitted first", 30)
        assert time.time() >= now - 3 + settle  # held until its click was settle s old
        _, state = await poll(c, hub)
        assert (state["state"], state["position"]) == ("waiting", 1)


@pytest.mark.slow
async def test_a_ready_pool_server_goes_to_the_first_in_line(start_hub, stub_devcluster, tmp_path):
    """A waiting learner is admitted for a ready warm-pool server of its course even though
    the hub is full (the server needs no new slot), and claims it; a newcomer meanwhile
    queues behind instead of taking it."""
    await maybe_await(stub_devcluster.add_image(IMAGE_REPO, tmp_path))
    hub = await start_hub(room_config(), kubeconfig=stub_devcluster.kubeconfig)
    async with browser() as a, browser() as b, browser() as c:
        code, headers, _ = await tmplogin(a, hub, LINK)
        async with a.get(hub.url + headers["Location"]) as r:
            assert r.status == 200
        (first,) = await user_names(hub)
        await wait_until_ready(hub, first)
        code, _, body = await tmplogin(b, hub, LINK)
        assert (code, position_on_page(body)) == (200, 1)

        # a ready pool server for the course turns up. (The hub refuses the cnbi service's
        # pool starts on a full hub, pool_starts.py; so an admin starts a server past the
        # limit here and then puts its user into the pool.)
        pooled = str(uuid.uuid4())
        await admin(hub, "POST", f"/users/{pooled}")
        await admin(hub, "POST", f"/users/{pooled}/server", {"course": COURSE, "size": "small"})
        await wait_until_ready(hub, pooled)
        await admin(hub, "POST", f"/groups/{POOL_GROUP}")
        await admin(hub, "POST", f"/groups/{POOL_GROUP}/users", {"users": [pooled]})
        # a newcomer now: someone waits, so it queues (it does not claim the pool server);
        # behind B, or first if this request's admission round already let B in for it
        code, _, body = await tmplogin(c, hub, LINK)
        assert code == 200 and position_on_page(body) in (1, 2)
        assert await user_names(hub) == {first, pooled}

        async def b_admitted() -> bool:
            return (await poll(b, hub))[1]["state"] == "admitted"

        await wait_for(b_admitted, "the first in line to be admitted for the pool server", 30)
        assert (await poll(c, hub))[1]["position"] == 1  # still waiting, now at the front
        code, headers, _ = await tmplogin(b, hub, LINK)
        assert code == 302 and headers["Location"].startswith(f"/user/{pooled}/")
        assert await user_names(hub) == {first, pooled}  # claimed: no user created
        assert (await api(hub, f"/users/{pooled}"))["groups"] == ["anonymous"]
        assert "pool=" in hub.log_text()


@pytest.mark.slow
async def test_the_hubs_spawn_limit_sends_browsers_to_the_waiting_room(start_hub, stub_devcluster):
    """At the hub's concurrent_spawn_limit a browser waits instead of meeting the hub's 429
    at /hub/spawn; it is admitted when the pending spawn ends."""
    # an image the cluster cannot pull: the first spawn stays pending until it is stopped
    stub_devcluster.set_missing("registry.example/courses/not-pulled")
    images = [{"name": "slow-course", "image": "registry.example/courses/not-pulled:1"}]
    config = room_config(images, max_anonymous_users=0)
    hub = await start_hub(
        config + "c.JupyterHub.concurrent_spawn_limit = 1\n",
        kubeconfig=stub_devcluster.kubeconfig,
    )
    slow = {"course": "slow-course"}
    async with browser() as a, browser() as b:
        code, headers, _ = await tmplogin(a, hub, slow)
        async with a.get(hub.url + headers["Location"], allow_redirects=False) as r:
            assert r.status == 302  # the spawn started and is pending
        (first,) = await user_names(hub)
        await asyncio.sleep(1.2)  # the next admission round sees the pending spawn
        code, _, body = await tmplogin(b, hub, slow)
        assert (code, position_on_page(body)) == (200, 1)
        async with browser() as robot:
            code, headers, body = await tmplogin(robot, hub, slow, json_=True)
            assert code == 503 and int(headers["Retry-After"]) >= 1
            assert "Learners are waiting" in json.loads(body)["message"]
        assert await user_names(hub) == {first}

        await stop_server(hub, first)

        async def b_admitted() -> bool:
            return (await poll(b, hub))[1]["state"] == "admitted"

        await wait_for(b_admitted, "the waiting browser to be admitted", 60)
        code, headers, _ = await tmplogin(b, hub, slow)
        assert code == 302 and headers["Location"].startswith("/hub/spawn?opt-course=slow-course")
        assert len(await user_names(hub)) == 2
        (second,) = await user_names(hub) - {first}
        await stop_server(hub, second)


@pytest.mark.slow
async def test_a_pool_start_leaves_a_login_on_its_way_its_spawn_slot(
    start_hub, stub_devcluster, tmp_path
):
    """At ``concurrent_spawn_limit`` = 1 a learner logged in by /tmplogin, not yet at
    /hub/spawn, holds the only spawn slot: a warm-pool start meanwhile is refused (503,
    nothing started), so the learner's spawn gets the slot instead of the hub's 429; once
    that spawn is done, the pool start goes through."""
    await maybe_await(stub_devcluster.add_image(IMAGE_REPO, tmp_path))
    config = room_config(max_anonymous_users=0) + "c.JupyterHub.concurrent_spawn_limit = 1\n"
    hub = await start_hub(config, kubeconfig=stub_devcluster.kubeconfig)
    pooled = str(uuid.uuid4())  # a pool user, as the cnbi service makes them
    await admin(hub, "POST", f"/users/{pooled}")
    await admin(hub, "POST", f"/groups/{POOL_GROUP}")
    await admin(hub, "POST", f"/groups/{POOL_GROUP}/users", {"users": [pooled]})
    options = {"course": COURSE, "size": "small"}
    async with browser() as a:
        code, headers, _ = await tmplogin(a, hub, LINK)
        assert code == 302 and headers["Location"].startswith("/hub/spawn?")
        (learner,) = await user_names(hub) - {pooled}

        await admin(hub, "POST", f"/users/{pooled}/server", options, expect=503)
        assert "concurrent_spawn_limit (1) is taken by pending spawns and 1 login" in (
            hub.log_text()
        )
        assert not (await api(hub, f"/users/{pooled}"))["servers"]  # nothing started

        async with a.get(hub.url + headers["Location"]) as r:
            assert r.status == 200  # the learner's spawn, not the hub's 429
        await wait_until_ready(hub, learner)
    await admin(hub, "POST", f"/users/{pooled}/server", options)  # the slot is free again
    await wait_until_ready(hub, pooled)


@pytest.mark.slow
async def test_a_login_on_its_way_holds_its_slot_until_its_user_is_gone(
    start_hub, stub_devcluster, tmp_path
):
    """A learner logged in by /tmplogin but not yet at /hub/spawn keeps its slot (a slow
    redirect must not hand it to the next in line, who would meet the hub's 429); when its
    user is deleted (what the culler does with an abandoned login) the slot is freed. Polls
    are logged at DEBUG, joins and admissions at INFO."""
    await maybe_await(stub_devcluster.add_image(IMAGE_REPO, tmp_path))
    hub = await start_hub(room_config(), kubeconfig=stub_devcluster.kubeconfig)
    async with browser() as a, browser() as b:
        code, headers, _ = await tmplogin(a, hub, LINK)  # A never follows to /hub/spawn
        assert code == 302 and headers["Location"].startswith("/hub/spawn?")
        (first,) = await user_names(hub)
        code, _, body = await tmplogin(b, hub, LINK)
        assert (code, position_on_page(body)) == (200, 1)
        for _ in range(3):  # admission rounds run on these polls: A still holds the slot
            await asyncio.sleep(1.1)
            assert (await poll(b, hub))[1]["state"] == "waiting"
        code, _, body = await tmplogin(b, hub, LINK)  # a reload: the waiting page again
        assert (code, position_on_page(body)) == (200, 1)

        await admin(hub, "DELETE", f"/users/{first}")

        async def b_admitted() -> bool:
            return (await poll(b, hub))[1]["state"] == "admitted"

        await wait_for(b_admitted, "the slot of the deleted login to be freed", 30)
        code, headers, _ = await tmplogin(b, hub, LINK)
        assert code == 302 and headers["Location"].startswith("/hub/spawn?")
        async with b.get(hub.url + headers["Location"]) as r:
            assert r.status == 200
        (second,) = await user_names(hub)
        await wait_until_ready(hub, second)

    log = hub.log_text().splitlines()
    polls = [line for line in log if " GET /hub/waiting-room " in line]
    assert polls and all(line.startswith("[D ") for line in polls), polls[:3]
    pages = [line for line in log if "200 GET /hub/tmplogin" in line]
    assert [line[:3] for line in pages] == ["[I ", "[D "], pages  # the join, then the reload
    assert sum(1 for line in log if "tmplogin waiting place=" in line) == 1
    admitted = [line for line in log if "waiting-room admitted place=" in line]
    assert len(admitted) == 1 and admitted[0].startswith("[I ")
