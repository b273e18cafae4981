"""The dev cluster's kubelet: pods as real processes (or stubs), status, events, logs, stop.

Commands here are tiny Python programs instead of jupyterhub-singleuser (that one runs in
test_devcluster_kubespawner.py), so the process runtime's contract is pinned cheaply:
env incl. fieldRef, readiness only once the port answers, logs, exit codes, SIGTERM then
SIGKILL after the grace period, any well-formed image pulls (homes seeded only from
registered ones), ErrImagePull while an image is marked missing, InvalidImageName for a
malformed one, PVC homes, init containers run in order into an emptyDir the main container
mounts (restarted with back-off while they fail), and no process left after
``cluster.stop()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time

import aiohttp
import pytest
from kubernetes_asyncio import client as k8s

from cnbi_devcluster import DevCluster
from cnbi_spawner.kube import make_api_client

NS = "default"
REPO = "registry.example/test/tiny"

SERVER = """
import os, signal, socket, sys, time
def bye(*_):
    print("got SIGTERM", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, IGNORE_OR_BYE)
print("hello from", os.environ["POD_IP"], os.environ["GREETING"], os.getcwd(), flush=True)
time.sleep(float(os.environ.get("DELAY", "0")))
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((os.environ["POD_IP"], 8888))
s.listen()
while True:
    c, _ = s.accept()
    c.close()
"""


def pod(name: str, script: str, *, image: str = f"{REPO}:1", env=None, volumes=None) -> dict:
    container = {
        "name": "notebook",
        "image": image,
        "command": [sys.executable, "-c", script],
        "ports": [{"name": "notebook-port", "containerPort": 8888}],
        "env": [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "GREETING", "value": "hi"},
            *(env or []),
        ],
    }
    spec = {"containers": [container], "terminationGracePeriodSeconds": 5}
    if volumes:
        spec["volumes"] = volumes
    return {"metadata": {"name": name, "labels": {"app": "t"}}, "spec": spec}


@pytest.fixture
async def cluster(tmp_path):
    content = tmp_path / "content"
    content.mkdir()
    (content / "seed.txt").write_text("seeded")
    async with DevCluster(tmp_path / "dc", builds=False, images={REPO: content}) as c:
        yield c


@pytest.fixture
async def core(cluster):
    api = await make_api_client(str(cluster.kubeconfig))
    yield k8s.CoreV1Api(api)
    await api.close()


async def until(fn, timeout: float = 15, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = await fn()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def read(core, name: str) -> k8s.V1Pod | None:
    try:
        return await core.read_namespaced_pod(name, NS)
    except k8s.ApiException as e:
        assert e.status == 404
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def ready(p: k8s.V1Pod | None) -> bool:
    return bool(
        p
        and p.status.phase == "Running"
        and p.status.container_statuses
        and all(c.ready for c in p.status.container_statuses)
    )


async def test_process_pod_lifecycle(cluster, core):
    script = SERVER.replace("IGNORE_OR_BYE", "bye")
    delayed = pod("life", script, env=[{"name": "DELAY", "value": "1"}])
    await core.create_namespaced_pod(NS, delayed)
    # Running with a podIP before the port answers, but not ready yet
    running = await until(lambda: _running_not_ready(core, "life"), what="Running but not ready")
    assert running.status.pod_ip.startswith("127.")
    got = await until(lambda: _ready(core, "life"), what="ready")
    ip = got.status.pod_ip
    assert got.spec.node_name and got.status.host_ip == "127.0.0.1"
    assert {c.type: c.status for c in got.status.conditions}["Ready"] == "True"
    info = cluster.pod_info("life")
    assert info["ip"] == ip and (info["home"] / "seed.txt").read_text() == "seeded"
    log = await core.read_namespaced_pod_log("life", NS)
    assert f"hello from {ip} hi {info['home']}" in log
    reasons = [
        e.reason
        for e in (
            await core.list_namespaced_event(NS, field_selector="involvedObject.name=life")
        ).items
    ]
    for r in ("Scheduled", "Pulling", "Pulled", "Created", "Started"):
        assert r in reasons
    await core.delete_namespaced_pod("life", NS, grace_period_seconds=5)
    await until(lambda: _gone(core, "life"), what="pod removal")
    assert not alive(info["pid"])
    assert "got SIGTERM" in (info["log"]).read_text()


async def test_sigkill_after_grace(cluster, core):
    script = SERVER.replace("IGNORE_OR_BYE", "signal.SIG_IGN")
    await core.create_namespaced_pod(NS, pod("stubborn", script))
    await until(lambda: _ready(core, "stubborn"))
    pid = cluster.pod_info("stubborn")["pid"]
    start = time.monotonic()
    await core.delete_namespaced_pod("stubborn", NS, grace_period_seconds=1)
    await until(lambda: _gone(core, "stubborn"), what="pod removal")
    assert 0.9 <= time.monotonic() - start < 5
    assert not alive(pid)


@pytest.mark.parametrize(
    "policy, code, phase, reason",
    [
        ("Never", 3, "Failed", "Error"),
        ("Never", 0, "Succeeded", "Completed"),
        ("OnFailure", 0, "Succeeded", "Completed"),
    ],
)
async def test_exit_is_reported(core, policy, code, phase, reason):
    body = pod("exits", f"raise SystemExit({code})")
    body["spec"]["restartPolicy"] = policy
    await core.create_namespaced_pod(NS, body)

    async def finished():
        p = await read(core, "exits")
        return p if p and p.status.phase in ("Failed", "Succeeded") else None

    p = await until(finished, what="exit")
    assert p.status.phase == phase
    state = p.status.container_statuses[0].state.terminated
    assert (state.exit_code, state.reason) == (code, reason)


@pytest.mark.parametrize("policy, code", [("OnFailure", 3), ("Always", 0)])
async def test_restart_with_crash_loop_back_off(cluster, core, policy, code):
    cluster.kubelet.restart_backoff = 0.2
    body = pod("crashy", f"raise SystemExit({code})")
    body["spec"]["restartPolicy"] = policy
    await core.create_namespaced_pod(NS, body)

    async def restarted_twice():
        p = await read(core, "crashy")
        cs = (p.status.container_statuses or [None])[0] if p else None
        return cs if cs and cs.restart_count >= 2 else None

    cs = await until(restarted_twice, what="two restarts")
    assert cs.last_state.terminated.exit_code == code
    p = await read(core, "crashy")
    assert p.status.phase == "Running"  # a crash-looping pod is still Running, never ready
    assert not cs.ready
    events = (
        await core.list_namespaced_event(NS, field_selector="involvedObject.name=crashy")
    ).items
    assert any(e.reason == "BackOff" for e in events)
    await core.delete_namespaced_pod("crashy", NS, grace_period_seconds=1)
    await until(lambda: _gone(core, "crashy"), what="pod removal")


async def waiting_reason(core, name: str):
    p = await read(core, name)
    statuses = (p.status.container_statuses or []) if p else []
    return statuses and statuses[0].state.waiting and statuses[0].state.waiting.reason


async def test_any_well_formed_image_pulls_with_an_empty_home(cluster, core):
    """The runtime decides what runs: an unregistered image pulls; its home is not seeded."""
    script = SERVER.replace("IGNORE_OR_BYE", "bye")
    image = "quay.io/jupyterhub/singleuser:5.2"
    await core.create_namespaced_pod(NS, pod("anyimage", script, image=image))
    p = await until(lambda: _ready(core, "anyimage"), what="an unregistered image to run")
    assert p.status.container_statuses[0].image == image
    events = (
        await core.list_namespaced_event(NS, field_selector="involvedObject.name=anyimage")
    ).items
    assert "Pulled" in {e.reason for e in events}
    assert not any(cluster.pod_info("anyimage", NS)["home"].iterdir())


async def test_missing_image_fails_to_pull_until_added(cluster, core, tmp_path):
    script = SERVER.replace("IGNORE_OR_BYE", "bye")
    cluster.set_missing("registry.example/nope/x")
    await core.create_namespaced_pod(NS, pod("pull", script, image="registry.example/nope/x:1"))
    assert await until(lambda: waiting_reason(core, "pull")) in (
        "ErrImagePull",
        "ImagePullBackOff",
    )
    p = await read(core, "pull")
    assert p.status.phase == "Pending"
    events = (await core.list_namespaced_event(NS, field_selector="involvedObject.name=pull")).items
    assert any(e.reason == "Failed" and e.type == "Warning" for e in events)
    later = tmp_path / "later"
    later.mkdir()
    (later / "pushed.txt").write_text("pushed")
    cluster.add_image("registry.example/nope/x", later)  # pushed: pulls from now on
    await until(lambda: _ready(core, "pull"), timeout=20, what="pull after add_image")
    assert (cluster.pod_info("pull", NS)["home"] / "pushed.txt").read_text() == "pushed"


async def test_missing_image_over_the_admin_api(cluster, core):
    headers = {"Authorization": f"Bearer {cluster.token}"}
    url = f"{cluster.url}/_devcluster/missing-images"
    async with aiohttp.ClientSession(headers=headers) as s:
        async with s.post(url, json={"repository": "registry.example/gone/x"}) as r:
            assert (r.status, await r.json()) == (200, ["registry.example/gone/x"])
        script = SERVER.replace("IGNORE_OR_BYE", "bye")
        await core.create_namespaced_pod(NS, pod("gone", script, image="registry.example/gone/x"))
        assert await until(lambda: waiting_reason(core, "gone")) in (
            "ErrImagePull",
            "ImagePullBackOff",
        )
        body = {"repository": "registry.example/gone/x", "missing": False}
        async with s.post(url, json=body) as r:
            assert (r.status, await r.json()) == (200, [])
        await until(lambda: _ready(core, "gone"), timeout=20, what="pull once no longer missing")
        async with s.post(url, json={}) as r:
            assert r.status == 400


async def test_malformed_image_is_invalid_image_name(cluster, core):
    script = SERVER.replace("IGNORE_OR_BYE", "bye")
    await core.create_namespaced_pod(NS, pod("badref", script, image="Not A/Valid::Image"))
    assert await until(lambda: waiting_reason(core, "badref")) == "InvalidImageName"
    events = (
        await core.list_namespaced_event(NS, field_selector="involvedObject.name=badref")
    ).items
    assert {"InspectFailed", "Failed"} <= {e.reason for e in events}
    assert "Pulled" not in {e.reason for e in events}
    assert (await read(core, "badref")).status.phase == "Pending"


async def test_pvc_bound_and_used_as_home(cluster, core):
    pvc = {
        "metadata": {"name": "claim-a"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    await core.create_namespaced_persistent_volume_claim(NS, pvc)

    async def bound():
        c = await core.read_namespaced_persistent_volume_claim("claim-a", NS)
        return c.status.phase == "Bound" and c

    claim = await until(bound, what="Bound")
    assert claim.status.capacity == {"storage": "1Gi"} and claim.spec.volume_name
    vols = [{"name": "home", "persistentVolumeClaim": {"claimName": "claim-a"}}]
    script = SERVER.replace("IGNORE_OR_BYE", "bye")
    await core.create_namespaced_pod(NS, pod("p1", script, volumes=vols))
    p1 = await until(lambda: _ready(core, "p1"))
    assert p1.status.init_container_statuses is None
    home = cluster.pod_info("p1")["home"]
    (home / "mine.txt").write_text("kept")
    await core.delete_namespaced_pod("p1", NS, grace_period_seconds=1)
    await until(lambda: _gone(core, "p1"))
    body = pod("p2", script, volumes=vols)
    body["spec"]["initContainers"] = [{"name": "setup", "image": f"{REPO}:1", "command": ["true"]}]
    await core.create_namespaced_pod(NS, body)
    p2 = await until(lambda: _ready(core, "p2"))
    (init,) = p2.status.init_container_statuses
    assert (init.name, init.state.terminated.reason) == ("setup", "Completed")
    assert (cluster.pod_info("p2")["home"] / "mine.txt").read_text() == "kept"
    await core.delete_namespaced_persistent_volume_claim("claim-a", NS)


COPY_IN = """
import os, pathlib, sys
target = pathlib.Path(sys.argv[1])
marker = target / "tries"
tries = int(marker.read_text()) + 1 if marker.exists() else 1
marker.write_text(str(tries))
if tries < int(os.environ["SUCCEED_AT"]):
    sys.exit(3)
(target / "sub").mkdir(exist_ok=True)
(target / "sub" / "tool.txt").write_text("copied in")
"""

SHOW_TOOL = SERVER.replace(
    'print("hello from"',
    'print("tool:", open(os.environ["TOOL"]).read(), flush=True)\nprint("hello from"',
)


async def test_init_containers_fill_an_empty_dir_the_main_container_mounts(cluster, core):
    """The init container runs (retried with back-off after a failure) before the main one;
    its ``/opt/tools`` mount and the main container's are the same per-pod folder, and a
    path under the mount in the main container's env points into it."""
    cluster.kubelet.restart_backoff = 0.2
    body = pod("p-init", SHOW_TOOL.replace("IGNORE_OR_BYE", "bye"),
               env=[{"name": "TOOL", "value": "/opt/tools/sub/tool.txt"}])  # fmt: skip
    body["spec"]["volumes"] = [{"name": "tools", "emptyDir": {}}]
    body["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "tools", "mountPath": "/opt/tools", "readOnly": True}
    ]
    body["spec"]["initContainers"] = [
        {
            "name": "copy-tools",
            "image": f"{REPO}:1",
            "command": [sys.executable, "-c", COPY_IN, "/opt/tools"],
            "env": [{"name": "SUCCEED_AT", "value": "2"}],
            "volumeMounts": [{"name": "tools", "mountPath": "/opt/tools"}],
        }
    ]
    await core.create_namespaced_pod(NS, body)
    p = await until(lambda: _ready(core, "p-init"))
    (init,) = p.status.init_container_statuses
    assert (init.name, init.state.terminated.exit_code, init.restart_count) == ("copy-tools", 0, 1)
    conditions = {c.type: c.status for c in p.status.conditions}
    assert conditions["Initialized"] == "True"
    log = await core.read_namespaced_pod_log("p-init", NS)
    assert "tool: copied in" in log, log
    events = await core.list_namespaced_event(NS, field_selector="involvedObject.name=p-init")
    assert "BackOff" in [e.reason for e in events.items]  # the first try failed


async def test_failing_init_container_keeps_the_pod_pending(cluster, core):
    body = pod("p-bad-init", SERVER.replace("IGNORE_OR_BYE", "bye"))
    body["spec"]["initContainers"] = [
        {"name": "fails", "image": f"{REPO}:1", "command": [sys.executable, "-c", "exit(2)"]}
    ]
    body["spec"]["restartPolicy"] = "Never"
    await core.create_namespaced_pod(NS, body)

    async def failed():
        p = await core.read_namespaced_pod("p-bad-init", NS)
        return p.status.phase == "Failed" and p

    p = await until(failed, what="Failed")
    (init,) = p.status.init_container_statuses
    assert (init.state.terminated.exit_code, init.state.terminated.reason) == (2, "Error")
    assert not p.status.container_statuses or not p.status.container_statuses[0].ready


async def test_stop_leaves_no_process(tmp_path):
    content = tmp_path / "content"
    content.mkdir()
    cluster = DevCluster(tmp_path / "dc", builds=False, images={REPO: content})
    await cluster.start()
    api = await make_api_client(str(cluster.kubeconfig))
    try:
        core = k8s.CoreV1Api(api)
        script = SERVER.replace("IGNORE_OR_BYE", "signal.SIG_IGN")
        for name in ("a", "b"):
            await core.create_namespaced_pod(NS, pod(name, script))
        for name in ("a", "b"):
            await until(lambda n=name: _ready(core, n))
        pids = [cluster.pod_info(n)["pid"] for n in ("a", "b")]
    finally:
        await api.close()
        await cluster.stop()
    assert not any(alive(p) for p in pids)


def processes_with(marker: str) -> list[int]:
    """PIDs whose command line contains ``marker`` (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(int(entry))
    return found


@contextlib.asynccontextmanager
async def stubborn_pods(tmp_path, label: str):
    """A dev cluster with a client, and the script of a pod that ignores SIGTERM, marked so
    that its processes can be found; on exit the cluster is stopped (30 s at most: a stop
    that hangs fails the test)."""
    marker = f"devcluster-{label}-{os.getpid()}-{tmp_path.name}"
    cluster = DevCluster(tmp_path / "dc", builds=False)
    await cluster.start()
    api = await make_api_client(str(cluster.kubeconfig))
    script = f"# {marker}\n" + SERVER.replace("IGNORE_OR_BYE", "signal.SIG_IGN")
    try:
        yield k8s.CoreV1Api(api), script, marker
    finally:
        await api.close()
        async with asyncio.timeout(30):
            await cluster.stop()


@pytest.mark.parametrize("stop_after", [0.0, 0.05, 0.15, 0.4, 0.8, 1.5])
async def test_stop_while_pods_start_leaves_no_process(tmp_path, stop_after):
    """Stopped at any moment of a pod's start (before its process exists, while it spawns,
    before and after it turns ready), the dev cluster leaves none of its processes behind."""
    async with stubborn_pods(tmp_path, f"stop-race-{stop_after}") as (core, script, marker):
        for name in ("r1", "r2", "r3"):
            delay = {"name": "DELAY", "value": "0.3"}
            await core.create_namespaced_pod(NS, pod(name, script, env=[delay]))
        await asyncio.sleep(stop_after)
    assert processes_with(marker) == []


async def test_stop_ends_a_pod_whose_cancellation_was_lost(tmp_path, monkeypatch):
    """A pod task whose cancellation is lost still ends at ``cluster.stop()``, and its
    process with it. Python 3.11's ``asyncio.wait_for`` drops a cancellation that arrives as
    its awaitable completes (the readiness probe's connect, in a CI run that then hung for
    80 minutes); here the probe drops every cancellation, so the kubelet's task goes on to
    wait for the exit of a process that ignores SIGTERM (before the fix: a stop forever)."""
    from cnbi_devcluster import runtimes

    async def probe_that_loses_cancellation(self) -> bool:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass  # swallowed, as wait_for can
        return True

    monkeypatch.setattr(runtimes.ProcessContainer, "ready", probe_that_loses_cancellation)
    async with stubborn_pods(tmp_path, "lost-cancel") as (core, script, marker):
        await core.create_namespaced_pod(NS, pod("lost", script))

        async def running():
            p = await read(core, "lost")
            return p is not None and p.status.phase == "Running"

        await until(running, what="the pod running, its kubelet task in the probe")
        assert processes_with(marker)
    assert processes_with(marker) == []


async def test_stub_runtime_serves_many_pods(tmp_path):
    async with DevCluster(
        tmp_path / "dc", runtime="stub", builds=False, images={REPO: tmp_path}
    ) as cluster:
        api = await make_api_client(str(cluster.kubeconfig))
        core = k8s.CoreV1Api(api)
        try:
            n = 40
            for i in range(n):
                body = pod(f"s{i}", "unused")
                # a Jupyter server (the default command) is what the stub runtime fakes
                del body["spec"]["containers"][0]["command"]
                body["spec"]["containers"][0]["env"].append(
                    {"name": "JUPYTERHUB_SERVICE_PREFIX", "value": f"/user/u{i}/"}
                )
                await core.create_namespaced_pod(NS, body)

            async def all_ready():
                items = (await core.list_namespaced_pod(NS)).items
                return len(items) == n and all(ready(p) for p in items) and items

            pods = await until(all_ready, what="all stub pods ready")
            ips = {p.status.pod_ip for p in pods}
            assert len(ips) == n
            async with aiohttp.ClientSession() as s:
                for p in pods[:5]:
                    i = p.metadata.name[1:]
                    base = f"http://{p.status.pod_ip}:8888/user/u{i}/"
                    async with s.get(base + "api") as r:
                        assert r.status == 200 and "version" in await r.json()
                    async with s.get(base + "api/status") as r:
                        assert "last_activity" in await r.json()
                    async with s.get(base + "lab/tree/x.ipynb") as r:
                        assert r.status == 200 and "text/html" in r.headers["Content-Type"]
                    async with s.get(f"http://{p.status.pod_ip}:8888/elsewhere") as r:
                        assert r.status == 404
            await core.delete_collection_namespaced_pod(NS, label_selector="app=t")
            await until(lambda: _none_left(core), what="all pods deleted")
        finally:
            await api.close()


async def _none_left(core) -> bool:
    return not (await core.list_namespaced_pod(NS)).items


async def _ready(core, name: str):
    p = await read(core, name)
    return p if ready(p) else None


async def _running_not_ready(core, name: str):
    p = await read(core, name)
    if p and p.status.phase == "Running" and p.status.pod_ip and not ready(p):
        return p
    return None


async def _gone(core, name: str) -> bool:
    return await read(core, name) is None


async def test_log_follow_streams_until_the_container_exits(cluster, core):
    script = (
        "import time\nfor i in range(8):\n    print('tick', i, flush=True)\n    time.sleep(0.15)"
    )
    body = pod("ticker", script)
    body["spec"]["restartPolicy"] = "Never"
    await core.create_namespaced_pod(NS, body)

    async def started():
        p = await read(core, "ticker")
        return p and p.status.phase in ("Running", "Succeeded")

    await until(started, what="start")
    url = f"{cluster.url}/api/v1/namespaces/{NS}/pods/ticker/log?follow=true"
    headers = {"Authorization": f"Bearer {cluster.token}"}
    async with aiohttp.ClientSession(headers=headers) as s:
        async with s.get(url, timeout=aiohttp.ClientTimeout(total=15)) as r:
            assert r.status == 200
            text = (await r.read()).decode()
    assert [line for line in text.splitlines() if line.startswith("tick")] == [
        f"tick {i}" for i in range(8)
    ]
    tail = await core.read_namespaced_pod_log("ticker", NS, tail_lines=2)
    assert tail.splitlines() == ["tick 6", "tick 7"]


async def test_pods_created_before_start_run(tmp_path):
    content = tmp_path / "content"
    content.mkdir()
    cluster = DevCluster(tmp_path / "dc", runtime="stub", builds=False, images={REPO: content})
    cluster.create("v1", "pods", pod("early", "unused"))
    cluster.create("v1", "persistentvolumeclaims", {"metadata": {"name": "early"}, "spec": {}})
    await cluster.start()
    try:

        async def running():
            p = cluster.get("v1", "pods", "early")
            c = cluster.get("v1", "persistentvolumeclaims", "early")
            return p["status"].get("podIP") and c["status"]["phase"] == "Bound"

        await until(running, what="the early pod to run and the claim to bind")
    finally:
        await cluster.stop()


async def test_events_expire_after_ttl_and_beyond_the_cap(cluster, core):
    body = pod("evt", "raise SystemExit(0)")
    body["spec"]["restartPolicy"] = "Never"
    await core.create_namespaced_pod(NS, body)

    async def done():
        p = await read(core, "evt")
        return p.status.phase == "Succeeded"

    await until(done, what="the pod to finish")
    events = cluster.list("v1", "events", NS)
    assert len(events) >= 5  # Scheduled, Pulling, Pulled, Created, Started
    cluster.max_events = len(events) - 2
    assert cluster.expire_events() == 2  # the oldest beyond the cap
    assert len(cluster.list("v1", "events", NS)) == len(events) - 2
    assert cluster.expire_events(now=time.time() + cluster.event_ttl / 2) == 0
    assert cluster.expire_events(now=time.time() + cluster.event_ttl + 60) == len(events) - 2
    assert cluster.list("v1", "events", NS) == []
