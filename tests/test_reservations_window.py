"""A reservation's window on the real stack, with the service's clock injected.

Real hub + proxy + CNBiSpawner + cnbi service (pool manager, culler, reservations) + dev
cluster. The service runs as the hub's managed service, started through
``cnbi_spawner.service.app.main(clock=...)`` with a clock the test sets by writing a file,
so the window's phases are reached without sleeping through them. The hub's admission
uses the real clock: the window is booked around the real "now".

Story: a course has a normal pool target of 1. An instructor books 4 seats.
- Before ``start - lead_time`` the pool stays at 1 and ``status.warmed`` is 0.
- From ``start - lead_time`` the pool grows to 4 ready servers; the service writes
  ``status.warmed`` = 4 (``kubectl get resv`` shows it).
- Two learners open the class's link: each gets a ready pool server and a seat; what the
  reservation still asks is 2, and warmed follows.
- After the end the pool returns to its normal target (1: the surplus is drained) and
  warmed goes to 0; the two class servers keep running (they are not idle long enough)
  until the culler's usual idle timeout has passed on the clock, then they are culled
  and their users deleted, while the normal pool server is left alone.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from urllib.parse import parse_qsl, urlsplit

import pytest
from harness import free_port, wait_for
from test_auth_hub import browser, tmplogin
from test_pool_hub import Admin, user_in, wait_ready
from test_reservations_service import (
    NS,
    client_for,
    course_cluster,
    hub_config,
    kubectl,
    service_up,
    stored,
)

from cnbi_spawner import reservations as R

pytestmark = [pytest.mark.slow]

LEAD = 900
IDLE = 3600  # the culler's anonymous idle timeout (on the injected clock)
WAIT = 90

SERVICE_CONFIG = f"""
c.ReservationSettings.seats = {{"small": 10}}
c.ReservationSettings.walk_in_share = 0.2
c.ReservationSettings.warm_pool = True
c.ReservationSettings.lead_time = {LEAD}
c.ReservationSettings.refresh_every = 0.5
c.PoolSettings.targets = {{"uai-intro": 1}}
c.PoolSettings.check_every = 0.5
c.CullerSettings.anonymous_idle_timeout = {IDLE}
c.ResourcePolicy.anonymous_max_size = "small"
"""


class FileClock:
    """The service's "now": an RFC 3339 time in a file (written atomically by the test)."""

    def __init__(self, path) -> None:
        self.path = path

    def set(self, when: dt.datetime) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(when.isoformat())
        os.replace(tmp, self.path)

    def command(self, *flags: str) -> list[str]:
        """The cnbi service, as the hub starts it, reading its clock from the file."""
        code = (
            "import datetime as dt, pathlib, sys\n"
            "from cnbi_spawner.service.app import main\n"
            f"path = pathlib.Path({str(self.path)!r})\n"
            "sys.exit(main(clock=lambda: dt.datetime.fromisoformat(path.read_text())))\n"
        )
        return [sys.executable, "-c", code, *flags]


@pytest.fixture
async def window_stack(make_devcluster, start_hub, tmp_path):
    cluster, api = await course_cluster(make_devcluster, tmp_path)
    (tmp_path / "service_config.py").write_text(SERVICE_CONFIG)
    clock = FileClock(tmp_path / "clock")
    # the window: open now in real time (the hub admits), one hour long
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=1)
    end = start + dt.timedelta(hours=1)
    clock.set(start - dt.timedelta(seconds=LEAD + 120))  # before the pool warms
    kubeconfig = str(cluster.kubeconfig)
    command = clock.command(
        f"--config={tmp_path / 'service_config.py'}",
        "--cull-every=0.5",
        f"--namespace={NS}",
        f"--kubeconfig={kubeconfig}",
    )
    extra = (
        "from cnbi_spawner.service.pool import pool_role\n"
        "c.JupyterHub.load_roles.append(pool_role('cnbi'))\n"
    )
    port = free_port()
    config = hub_config(kubeconfig, port, str(tmp_path / "service_config.py"), extra, command)
    hub = await start_hub(config, kubeconfig=cluster.kubeconfig)
    svc = f"{hub.url}/services/cnbi/"
    await service_up(svc)
    yield hub, cluster, svc, api, clock, (start, end)
    await api.close()


async def warmed_of(api) -> int:
    (obj,) = await stored(api)
    return (obj.get("status") or {}).get("warmed", 0)


async def test_the_pool_warms_for_the_window_and_returns_to_normal_after_it(window_stack):
    hub, cluster, svc, api, clock, (start, end) = window_stack
    admin = Admin(hub)
    prof = await client_for(hub, svc, "prof")
    body = {"course": "uai-intro", "size": "small", "seats": 4}
    body.update(start=R.rfc3339(start), end=R.rfc3339(end))
    status, resv = await prof.call("POST", "api/reservations", json=body)
    assert status == 201, resv

    # before start - lead_time: the normal target only, nothing warm for the class
    normal = await wait_ready(admin, 1)
    assert len(await admin.ready_pool()) == 1 and await warmed_of(api) == 0

    # from start - lead_time: the pool holds the class's seats, and says so in the status
    clock.set(start - dt.timedelta(seconds=LEAD))
    warm = await wait_ready(admin, 4, WAIT)
    assert normal <= warm

    async def warmed_is(n: int):
        return await warmed_of(api) == n

    await wait_for(lambda: warmed_is(4), "status.warmed = 4", WAIT)
    table = await kubectl(cluster, "get", "resv", "-n", NS)
    header, row = table.strip().splitlines()
    at = header.index("WARMED")  # kubectl leaves an unset column (ADMITTED) blank
    assert header.split()[7:9] == ["ADMITTED", "WARMED"], header
    assert row[at:].split()[0] == "4", table

    # two learners through the class's link: each gets a ready pool server and a seat
    seat_link = dict(parse_qsl(urlsplit(resv["launch_url"]).query))
    learners = []
    for _ in range(2):
        async with browser() as b:
            code, headers, answer = await tmplogin(b, hub, seat_link)
        assert code == 302, answer
        learners.append(user_in(headers["Location"]))
    assert set(learners) <= warm, (learners, warm)
    (obj,) = await stored(api)
    assert sorted(obj["status"]["admittedUsers"]) == sorted(learners)
    await wait_for(lambda: warmed_is(2), "status.warmed = 2 (4 seats, 2 taken)", WAIT)

    async def pool_of(n: int):
        return len(await admin.pool()) == n

    await wait_for(lambda: pool_of(2), "the pool at what the reservation still asks", WAIT)

    # after the end: the normal target again, the surplus drained, nothing warm for it
    clock.set(end)

    await wait_for(lambda: pool_of(1), "the pool back at its normal target", WAIT)
    await wait_for(lambda: warmed_is(0), "status.warmed = 0 after the end", WAIT)
    # the class's servers are learners' servers now: not drained, not culled at the end
    for name in learners:
        user = await admin.get(f"/users/{name}")
        assert user is not None and user["servers"][""]["ready"], user
    assert "Culling server" not in hub.log_text()

    # the usual idle timeout later (on the service's clock) the culler takes them
    clock.set(end + dt.timedelta(seconds=IDLE))

    async def culled():
        return all([await admin.get(f"/users/{name}") is None for name in learners])

    await wait_for(culled, "the idle class servers culled and their users deleted", WAIT)
    assert len(await admin.ready_pool()) == 1  # the normal pool server is never culled
