"""Class reservations end to end: real hub + proxy + cnbi service + dev cluster + kubectl.

Stories: an instructor books seats of a course and gets the class's signed launch link;
the booking is a CourseReservation that ``kubectl get coursereservations`` shows; a
booking that does not fit is refused with 409 and the nearest windows that do; hostile
bodies get 400 and nothing is stored; anonymous learners and users without the scope
get 403; another instructor can neither see nor cancel it, an admin can; the page shows
the week and books through its form (XSRF-checked); a hub restart keeps the bookings.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import time
from urllib.parse import parse_qs, parse_qsl, urlsplit

import aiohttp
import pytest
from harness import (
    HubProcess,
    form_xsrf,
    free_port,
    hub_login,
    kubectl_command,
    service_command,
    wait_for,
)
from test_auth_hub import browser, tmplogin
from test_builds_service import Client, hub_api
from test_spawner_hub import REPO, imagestream, put_imagestream

from cnbi_spawner import reservations as R
from cnbi_spawner.kube import make_api_client
from cnbi_spawner.signing import sign_params, verify_params

pytestmark = [pytest.mark.slow]

NS = "default"
KEY = "reservations-test-signing-key-0123"
WAIT = 60
SCOPE = "custom:cnbi:reservations"


def hub_config(
    kubeconfig: str, port: int, service_config: str, extra: str = "", command: list | None = None
) -> str:
    """The hub's config; ``command`` replaces the service's (default: no culling)."""
    cmd = command or service_command(
        f"--config={service_config}",
        "--cull-every=0",
        f"--namespace={NS}",
        f"--kubeconfig={kubeconfig}",
    )
    return f"""
from jupyterhub.auth import DummyAuthenticator
from cnbi_spawner.auth import TmpLoginMixin
from cnbi_spawner.service.app import service_role
from cnbi_spawner.service.reservation_book import CUSTOM_SCOPES, instructor_role

class InstructorsAndLearners(TmpLoginMixin, DummyAuthenticator):
    pass

c.JupyterHub.authenticator_class = InstructorsAndLearners
c.Authenticator.allow_all = True
c.Authenticator.admin_users = {{"boss"}}
c.LinkSigning.key = {KEY!r}
c.JupyterHub.spawner_class = "cnbi"
c.KubeSpawner.namespace = {NS!r}
c.ImageRegistry.namespaces = [{NS!r}]
c.ResourcePolicy.anonymous_max_size = "small"
c.JupyterHub.custom_scopes.update(CUSTOM_SCOPES)
c.JupyterHub.services.append({{
    "name": "cnbi",
    "url": "http://127.0.0.1:{port}",
    "command": {cmd!r},
    "environment": {{"KUBECONFIG": {kubeconfig!r}, "CNBI_LINK_SIGNING_KEY": {KEY!r}}},
    "oauth_no_confirm": True,
    "oauth_client_allowed_scopes": [{SCOPE!r}],
}})
c.JupyterHub.load_groups.update({{
    "instructors": {{"users": ["prof", "other-prof"]}},
    "anonymous": {{"users": ["tricky-anon"]}},
}})
c.JupyterHub.load_roles.extend([
    service_role("cnbi"),
    instructor_role(groups=["instructors"], users=["tricky-anon", "boss"]),
    {{"name": "cnbi-viewer", "scopes": ["access:services!service=cnbi"], "users": ["viewer"]}},
])
c.ReservationAdmission.namespace = {NS!r}
{extra}
"""


SERVICE_CONFIG = """
c.ReservationSettings.seats = {"small": 10, "medium": 4}
c.ReservationSettings.walk_in_share = 0.2
c.ResourcePolicy.anonymous_max_size = "small"
"""


FULL_AT_ONE = "c.TmpLoginMixin.max_anonymous_users = 1"


@pytest.fixture
def hub_extra() -> str:
    return ""


async def course_cluster(make_devcluster, tmp_path):
    """A dev cluster (HTTPS: kubectl sends its token over TLS only) serving the course
    image, and an API client for it."""
    cluster = await make_devcluster(runtime="stub", tls=True, builds=False)
    (tmp_path / "content").mkdir()
    cluster.add_image(REPO, tmp_path / "content")
    api = await make_api_client(str(cluster.kubeconfig))
    await put_imagestream(api, imagestream())
    return cluster, api


@pytest.fixture
async def stack(make_devcluster, start_hub, tmp_path, hub_extra):
    cluster, api = await course_cluster(make_devcluster, tmp_path)
    (tmp_path / "service_config.py").write_text(SERVICE_CONFIG)
    port = free_port()
    config = hub_config(
        str(cluster.kubeconfig), port, str(tmp_path / "service_config.py"), hub_extra
    )
    hub = await start_hub(config, kubeconfig=cluster.kubeconfig)
    svc = f"{hub.url}/services/cnbi/"
    await service_up(svc)
    yield hub, cluster, svc, config, api
    await api.close()


async def service_up(svc: str) -> None:
    async def up():
        async with aiohttp.ClientSession() as s:
            try:
                async with s.get(svc + "health") as r:
                    return r.status < 500
            except aiohttp.ClientError:
                return False

    await wait_for(up, "the cnbi service", WAIT)


async def client_for(hub, svc: str, user: str) -> Client:
    """A service API client with a token carrying all of ``user``'s permissions."""
    status, _ = await hub_api(hub, "POST", f"/users/{user}")
    assert status in (201, 409)
    status, body = await hub_api(hub, "POST", f"/users/{user}/tokens", {})
    assert status == 201, body
    return Client(svc, body["token"])


def window(hours_from_now: int, length: int = 2) -> dict:
    start = R.floor_hour(dt.datetime.now(dt.UTC)) + dt.timedelta(hours=hours_from_now)
    return {"start": R.rfc3339(start), "end": R.rfc3339(start + dt.timedelta(hours=length))}


def booking(seats: int, hours_from_now: int = 24, **extra) -> dict:
    return {
        "course": "uai-intro",
        "size": "small",
        "seats": seats,
        **window(hours_from_now),
        **extra,
    }


async def stored(api) -> list[dict]:
    from kubernetes_asyncio import client

    listing = await client.CustomObjectsApi(api).list_namespaced_custom_object(
        R.GROUP, R.VERSION, NS, R.PLURAL
    )
    return listing["items"]


async def kubectl(cluster, *args: str) -> str:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    proc = await asyncio.create_subprocess_exec(
        kubectl_command(), *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_booking_authorization_and_capacity(stack):
    hub, cluster, svc, config, api = stack
    prof = await client_for(hub, svc, "prof")
    other = await client_for(hub, svc, "other-prof")
    boss = await client_for(hub, svc, "boss")

    # --- who may book at all
    for user in ("tricky-anon", "viewer"):  # anonymous (even with the scope), no scope
        status, body = await (await client_for(hub, svc, user)).call(
            "POST", "api/reservations", json=booking(1)
        )
        assert status == 403, (user, body)
    async with aiohttp.ClientSession() as s:  # no credentials at all
        async with s.get(svc + "api/reservations", allow_redirects=False) as r:
            assert r.status == 403
    assert await stored(api) == []

    # --- hostile bodies: 400 with a message naming the problem, nothing stored
    bad = [
        (booking(3, owner="boss"), "unknown field"),
        (booking(0), "seats"),
        (booking(3, size="huge"), "size must be one of"),
        ({**booking(3), "start": "tomorrow"}, "RFC 3339"),
        (booking(3, course="no-such-course"), ""),
        (booking(3, size="large"), "size"),  # larger than learners may get
    ]
    for body, message in bad:
        status, answer = await prof.call("POST", "api/reservations", json=body)
        assert status in (400, 403, 404), (body, status, answer)
        assert message in answer["message"], answer
    json_type = {"Content-Type": "application/json"}
    status, answer = await prof.call("POST", "api/reservations", data=b"{no", headers=json_type)
    assert status == 400 and "JSON" in answer["message"]
    status, answer = await prof.call("POST", "api/reservations", data=b"course: x")
    assert status == 415, answer
    assert await stored(api) == []

    # --- a booking: the owner is the caller, the link is signed and names the reservation
    status, mine = await prof.call("POST", "api/reservations", json=booking(5, note="Lecture 3"))
    assert status == 201, mine
    assert mine["owner"] == "prof" and mine["seats"] == 5 and mine["course"] == "uai-intro:2026.1"
    query = parse_qs(urlsplit(mine["launch_url"]).query)
    assert query[R.LINK_PARAM] == [mine["name"]] and query["course"] == [mine["course"]]
    verify_params(query, KEY, dt.datetime.now(dt.UTC).timestamp())
    (obj,) = await stored(api)
    assert obj["spec"]["owner"] == "prof" and obj["spec"]["start"].endswith("Z")
    # the hub takes the link: a signed launch of that course and size
    async with browser() as b:
        code, headers, body = await tmplogin(b, hub, urlsplit(mine["launch_url"]).query)
    assert code == 302, body
    assert "/hub/spawn?" in headers["Location"] and "opt-size=small" in headers["Location"]

    # --- kubectl shows it with our printer columns
    table = await kubectl(cluster, "get", "coursereservations", "-n", NS)
    header, row = table.strip().splitlines()
    assert header.split()[:7] == ["NAME", "COURSE", "SIZE", "SEATS", "START", "END", "OWNER"]
    assert row.split()[:4] == [mine["name"], "uai-intro:2026.1", "small", "5"]
    assert row.split()[6] == "prof"

    # --- capacity: 10 seats, 20 % for walk-ins -> 8 bookable; 5 taken, so 4 do not fit
    status, refused = await other.call("POST", "api/reservations", json=booking(4))
    assert status == 409, refused
    assert "at most 3" in refused["message"]
    assert refused["alternatives"][0]["start"] == window(22)["start"]  # 2 h earlier fits
    assert len(await stored(api)) == 1
    status, theirs = await other.call("POST", "api/reservations", json=booking(3))
    assert status == 201, theirs
    status, theirs_later = await other.call("POST", "api/reservations", json=booking(8, 26))
    assert status == 201, theirs_later  # back to back with prof's window

    # --- the calendar counts them
    status, cal = await prof.call("GET", "api/reservations/calendar?size=small&tz=Europe/Zurich")
    assert status == 200 and cal["tz"] == "Europe/Zurich"
    hours = {h["start"]: h for d in cal["sizes"]["small"]["days"] for h in d["hours"]}
    first = hours.get(window(24)["start"])
    if first is not None:  # the booking falls into this week
        assert (first["booked"], first["available"], first["state"]) == (8, 0, "full")
    status, answer = await prof.call("GET", "api/reservations/calendar?tz=Mars/Base")
    assert status == 400

    # --- who sees and cancels what
    status, listing = await prof.call("GET", "api/reservations")
    assert [r["name"] for r in listing["reservations"]] == [mine["name"]]
    status, _ = await other.call("GET", f"api/reservations/{mine['name']}")
    assert status == 404
    status, _ = await other.call("DELETE", f"api/reservations/{mine['name']}")
    assert status == 404
    assert mine["name"] in {o["metadata"]["name"] for o in await stored(api)}
    status, listing = await prof.call("GET", "api/reservations?all=1")  # not an admin
    assert len(listing["reservations"]) == 1
    status, listing = await boss.call("GET", "api/reservations?all=1")
    assert len(listing["reservations"]) == 3
    status, _ = await boss.call("DELETE", f"api/reservations/{theirs['name']}")
    assert status == 204
    status, _ = await other.call("GET", f"api/reservations/{theirs['name']}")
    assert status == 404
    status, _ = await prof.call("DELETE", f"api/reservations/{mine['name']}")
    assert status == 204
    assert {o["metadata"]["name"] for o in await stored(api)} == {theirs_later["name"]}

    # --- metrics
    async with aiohttp.ClientSession() as s:
        async with s.get(svc + "metrics") as r:
            text = await r.text()
    assert 'cnbi_service_reservation_requests_total{outcome="booked"} 3.0' in text
    assert 'cnbi_service_reservation_requests_total{outcome="refused"} 1.0' in text
    assert 'cnbi_service_reserved_seats{size="small"} 8.0' in text

    # --- a hub restart (and so a service restart) keeps the booking
    await hub.stop()
    again = HubProcess(config, workdir=hub.workdir, kubeconfig=cluster.kubeconfig)
    for attr in ("port", "hub_port", "proxy_api_port", "url", "api_url", "api_token"):
        setattr(again, attr, getattr(hub, attr))
    await again.start()
    try:
        await service_up(svc)
        status, listing = await other.call("GET", "api/reservations")
        assert status == 200, listing
        assert [r["name"] for r in listing["reservations"]] == [theirs_later["name"]]
    finally:
        await again.stop()


@contextlib.asynccontextmanager
async def logged_in(hub, user: str):
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(
        cookie_jar=jar, timeout=aiohttp.ClientTimeout(total=WAIT)
    ) as browser:
        await hub_login(browser, hub.url, user)
        yield browser


async def test_the_page_books_through_its_form(stack):
    hub, cluster, svc, config, api = stack
    async with logged_in(hub, "prof") as browser:
        async with browser.get(svc + "reservations") as r:
            page = await r.text()
            assert r.status == 200, page
        assert 'data-size="small"' in page and "cnbi-free" in page
        xsrf = form_xsrf(page)
        form = {"course": "uai-intro", "size": "small", "seats": "4", **window(30)}

        # without the XSRF token: refused, nothing stored
        async with browser.post(svc + "reservations", data=form) as r:
            assert r.status == 403
        assert await stored(api) == []

        async with browser.post(svc + "reservations", data={**form, "_xsrf": xsrf}) as r:
            page = await r.text()
            assert r.status == 201, page
        assert 'id="created-link"' in page and "reservation=resv-" in page
        (obj,) = await stored(api)
        assert obj["spec"]["owner"] == "prof" and obj["spec"]["seats"] == 4

        # too many: the form comes back with the message and the windows that fit
        async with browser.post(
            svc + "reservations", data={**form, "seats": "5", "_xsrf": xsrf}
        ) as r:
            page = await r.text()
            assert r.status == 409
        assert 'id="form-message"' in page and 'id="alternatives"' in page
        assert len(await stored(api)) == 1

        # cancel from the page
        data = {"action": "cancel", "name": obj["metadata"]["name"], "_xsrf": xsrf}
        async with browser.post(svc + "reservations", data=data) as r:
            assert r.status == 200
        assert await stored(api) == []

    async with logged_in(hub, "tricky-anon") as browser:
        async with browser.get(svc + "reservations") as r:
            assert r.status == 403


async def restarted(hub, config: str, cluster) -> HubProcess:
    await hub.stop()
    again = HubProcess(config, workdir=hub.workdir, kubeconfig=cluster.kubeconfig)
    for attr in ("port", "hub_port", "proxy_api_port", "url", "api_url", "api_token"):
        setattr(again, attr, getattr(hub, attr))
    await again.start()
    return again


@pytest.mark.parametrize("hub_extra", [FULL_AT_ONE])
async def test_a_full_hub_admits_exactly_the_seats_through_the_link(stack, caplog):
    hub, cluster, svc, config, api = stack
    caplog.set_level(logging.DEBUG, logger="cnbi.devcluster")  # the dev cluster's access log
    prof = await client_for(hub, svc, "prof")
    now = R.floor_hour(dt.datetime.now(dt.UTC))
    body = {"course": "uai-intro", "size": "small", "seats": 2}
    body.update(start=R.rfc3339(now), end=R.rfc3339(now + dt.timedelta(hours=2)))
    status, resv = await prof.call("POST", "api/reservations", json=body)
    assert status == 201, resv
    seat_link = dict(parse_qsl(urlsplit(resv["launch_url"]).query))
    plain = sign_params({"course": "uai-intro", "size": "small"}, KEY, int(time.time()) + 600)

    # fill the hub: one learner with a running server (max_anonymous_users = 1)
    async with browser() as first:
        code, headers, _ = await tmplogin(first, hub, plain)
        assert code == 302, headers
        async with first.get(hub.url + headers["Location"]) as r:
            assert r.status < 500

    async def full():
        async with browser() as b:
            code, _, _ = await tmplogin(b, hub, plain, json_=True)
        return code == 503

    await wait_for(full, "the hub at max_anonymous_users", WAIT)

    # the class's link admits exactly two learners, past the full hub; the third waits
    path = f"/apis/{R.GROUP}/{R.VERSION}/namespaces/{NS}/{R.PLURAL}/{resv['name']}"
    answers, calls = [], []
    for _ in range(3):
        caplog.clear()
        async with browser() as b:
            answers.append(await tmplogin(b, hub, seat_link, json_=True))
        log = [r.getMessage() for r in caplog.records]  # "200 GET <uri> 1.2ms"
        wanted = (("GET", path), ("PUT", path + "/status"))
        calls.append(tuple(sum(f" {verb} {uri} " in m for m in log) for verb, uri in wanted))
    codes = [code for code, _, _ in answers]
    assert codes == [302, 302, 503], [(c, body[:200]) for c, _, body in answers]
    # one read of the reservation per launch; the two seats are one status update each
    assert calls == [(1, 1), (1, 1), (1, 0)], calls
    assert all("/hub/spawn?" in h["Location"] for _, h, _ in answers[:2])
    (obj,) = await stored(api)
    assert obj["status"]["admitted"] == 2 and len(set(obj["status"]["admittedUsers"])) == 2
    async with browser() as b:  # the plain link still finds the hub full
        code, _, _ = await tmplogin(b, hub, plain, json_=True)
    assert code == 503

    # a restart keeps the count: still no third seat
    again = await restarted(hub, config, cluster)
    try:
        async with browser() as b:
            code, _, _ = await tmplogin(b, again, seat_link, json_=True)
        assert code == 503
        (obj,) = await stored(api)
        assert obj["status"]["admitted"] == 2
        status, listing = await prof.call("GET", "api/reservations")
        assert listing["reservations"][0]["admitted"] == 2
    finally:
        await again.stop()
