"""Two cnbi service processes book against one cluster; a cluster without the CRD.

Real hub + two hub-managed cnbi service processes (``cnbi`` and ``cnbi-b``: separate
processes, separate in-process locks) + dev cluster + kubectl.

Stories:
- two bookers (separate API clients, as in two processes) both check the last seats
  before either stores its reservation: the first to commit its ledger version keeps its
  booking; the other's commit conflicts, its reservation is deleted and, checked again,
  it is refused (the interleaving is forced through the ledger's capacity-check hook);
- instructors fire bookings at both services at once for the last seats: the bookings are
  ordered by the capacity group's ledger ConfigMap (optimistic concurrency), so exactly
  the bookable seats are booked, never more, and every refusal is a 409 with windows;
- a cluster without the CourseReservation CRD: the API says so (503) and the service logs
  it once, however often it is asked; once the CRD is applied (kubectl) booking works and
  that is logged once too.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest
import test_reservations_service as stack
from harness import free_port, service_command, wait_for
from kubernetes_asyncio import client
from test_reservations_service import NS, SCOPE, booking, client_for, kubectl, stored

from cnbi_spawner import reservations as R
from cnbi_spawner.kube import make_api_client
from cnbi_spawner.service.reservation_ledger import BookingLedger, ledger_name

pytestmark = [pytest.mark.slow]

CRD = Path(__file__).resolve().parents[1] / "helm-values/crds"
CRD = CRD / "coursereservations.cnbi.meteor.zone.yaml"
SERVICE_CONFIG = """
c.ReservationSettings.seats = {"small": 10, "medium": 4}
c.ReservationSettings.walk_in_share = 0.2
c.ResourcePolicy.anonymous_max_size = "medium"  # classes of both sizes may be booked
"""


def second_service(kubeconfig: str, port: int, service_config: str) -> str:
    """Config lines for a second cnbi service process (``cnbi-b``) with the same settings."""
    cmd = service_command(
        f"--config={service_config}", "--cull-every=0", f"--namespace={NS}",
        f"--kubeconfig={kubeconfig}",
    )  # fmt: skip
    return f"""
c.JupyterHub.services.append({{
    "name": "cnbi-b",
    "url": "http://127.0.0.1:{port}",
    "command": {cmd!r},
    "environment": {{"KUBECONFIG": {kubeconfig!r}}},
    "oauth_no_confirm": True,
    "oauth_client_allowed_scopes": [{SCOPE!r}],
}})
c.JupyterHub.load_roles.append(
    {{"name": "cnbi-b-access", "scopes": ["access:services!service=cnbi-b"],
      "groups": ["instructors"]}}
)
"""


async def test_of_two_bookers_checking_at_once_only_the_first_to_commit_keeps_it(
    make_devcluster,
):
    cluster = await make_devcluster(runtime="stub", builds=False)
    clients = [await make_api_client(str(cluster.kubeconfig)) for _ in range(2)]
    try:
        now = dt.datetime.now(dt.UTC)
        start = R.floor_hour(now) + dt.timedelta(hours=2)
        cap = R.Capacity({"small": 10})
        requests = [
            R.Reservation(f"resv-{who}", "uai", "small", 6, start, start + dt.timedelta(hours=1))
            for who in ("a", "b")
        ]
        both_checked = asyncio.Barrier(2)
        checks = {r.name: 0 for r in requests}

        def checker(api, request):
            async def check() -> None:  # the book's check: list, then the capacity rule
                listing = await objects(api).list_namespaced_custom_object(
                    R.GROUP, R.VERSION, NS, R.PLURAL
                )
                checks[request.name] += 1
                if checks[request.name] == 1:
                    await both_checked.wait()  # neither has stored its reservation yet
                found = [R.from_resource(o) for o in listing["items"]]
                R.check_fit(request, [r for r in found if r], cap, now)

            return check

        ledgers = [BookingLedger(api, NS) for api in clients]
        outcomes = await asyncio.gather(
            *(
                ledger.book(request, "cpu", checker(api, request), lambda: now)
                for ledger, api, request in zip(ledgers, clients, requests, strict=True)
            ),
            return_exceptions=True,
        )
        refused = [o for o in outcomes if isinstance(o, R.NoCapacity)]
        assert len(refused) == 1 and outcomes.count(None) == 1, outcomes
        assert sum(ledger.conflicts for ledger in ledgers) == 1
        assert sorted(checks.values()) == [1, 2]  # the loser was checked again
        listing = await objects(clients[0]).list_namespaced_custom_object(
            R.GROUP, R.VERSION, NS, R.PLURAL
        )
        winner = requests[outcomes.index(None)].name
        assert [o["metadata"]["name"] for o in listing["items"]] == [winner]
        ledger = await client.CoreV1Api(clients[0]).read_namespaced_config_map(
            ledger_name("cpu"), NS
        )
        assert ledger.data["commits"] == "1" and ledger.data["last"] == winner
    finally:
        for api in clients:
            await api.close()


def objects(api) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


async def start(make_devcluster, start_hub, tmp_path, *, crd: bool = True):
    cluster, api = await stack.course_cluster(make_devcluster, tmp_path)
    if not crd:
        await kubectl(cluster, "delete", "crd", "coursereservations.cnbi.meteor.zone")
    config_path = str(tmp_path / "service_config.py")
    (tmp_path / "service_config.py").write_text(SERVICE_CONFIG)
    kubeconfig = str(cluster.kubeconfig)
    extra = second_service(kubeconfig, free_port(), config_path)
    hub = await start_hub(
        stack.hub_config(kubeconfig, free_port(), config_path, extra),
        kubeconfig=cluster.kubeconfig,
    )
    services = [f"{hub.url}/services/{name}/" for name in ("cnbi", "cnbi-b")]
    for svc in services:
        await stack.service_up(svc)
    return hub, cluster, api, services


async def test_two_service_processes_never_book_more_than_the_seats(
    make_devcluster, start_hub, tmp_path
):
    hub, cluster, api, (svc_a, svc_b) = await start(make_devcluster, start_hub, tmp_path)
    try:
        # 10 small seats, 20 % for walk-ins: 8 bookable in the hour; 3 of them go first
        prof = await client_for(hub, svc_a, "prof")
        status, first = await prof.call("POST", "api/reservations", json=booking(3))
        assert status == 201, first
        clients = []
        for user in ("prof", "other-prof"):
            for svc in (svc_a, svc_b):
                clients.append(await client_for(hub, svc, user))
        # 24 bookings of one seat at once, through both processes, for the last 5 seats;
        # medium shares the CPU nodes: 1 medium seat of 4 is a quarter, i.e. 2.5 small
        attempts = [c.call("POST", "api/reservations", json=booking(1)) for c in clients * 5]
        attempts += [c.call("POST", "api/reservations", json=booking(1, size="medium"))
                     for c in clients]  # fmt: skip
        # a slow API (every request 0.2 s late) makes the two processes' bookings overlap:
        # each lists, checks and creates while the other is doing the same
        cluster.faults.latency = 0.2
        answers = await asyncio.gather(*attempts)
        cluster.faults.latency = 0.0
        codes = sorted(code for code, _ in answers)
        assert set(codes) <= {201, 409}, answers
        booked = [body for code, body in answers if code == 201]
        refused = [body for code, body in answers if code == 409]
        assert all(r["alternatives"] for r in refused), refused
        small = sum(b["seats"] for b in booked if b["size"] == "small")
        medium = sum(b["seats"] for b in booked if b["size"] == "medium")
        # never more than the capacity: 8 small-seat equivalents in the hour
        assert 3 + small + medium * 10 / 4 <= 8, (small, medium)
        assert booked, answers

        # what is stored is what was answered (losers of a race left nothing behind)
        names = {o["metadata"]["name"] for o in await stored(api)}
        assert names == {first["name"], *(b["name"] for b in booked)}
        listed = await kubectl(cluster, "get", "configmap", ledger_name("cpu"), "-n", NS,
                               "-o", "jsonpath={.data.commits}")  # fmt: skip
        assert int(listed) == 1 + len(booked)
        races = hub.log_text().count("another booking of the cpu sizes came first")
        print(f"ledger conflicts (bookings that started over): {races}")
    finally:
        await api.close()


async def test_without_the_crd_reservations_say_so_once_and_come_on_with_it(
    make_devcluster, start_hub, tmp_path
):
    hub, cluster, api, (svc, _) = await start(make_devcluster, start_hub, tmp_path, crd=False)
    try:
        prof = await client_for(hub, svc, "prof")
        for _ in range(3):
            status, body = await prof.call("GET", "api/reservations")
            assert status == 503, body
            assert "CourseReservation CRD" in body["message"], body
        status, body = await prof.call("POST", "api/reservations", json=booking(1))
        assert status == 503 and "not installed" in body["message"], body

        # one line per process that noticed (cnbi and cnbi-b list at start), not per request
        async def both_noticed():
            return hub.log_text().count("Class reservations are off") >= 2

        await wait_for(both_noticed, "both services logging that reservations are off", 60)
        for _ in range(3):
            status, body = await prof.call("GET", "api/reservations")
            assert status == 503, body
        log = hub.log_text()
        assert log.count("Class reservations are off") == 2, log[-3000:]

        await kubectl(cluster, "apply", "--validate=false", "-f", str(CRD))
        status, body = await prof.call("POST", "api/reservations", json=booking(1))
        assert status == 201, body
        status, body = await prof.call("GET", "api/reservations")
        assert status == 200 and len(body["reservations"]) == 1
        assert hub.log_text().count("CourseReservation CRD found") == 1
    finally:
        await api.close()
