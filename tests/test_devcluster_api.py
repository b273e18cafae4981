"""Conformance of the dev cluster's API with the real kubernetes_asyncio client over HTTP.

CRUD, server-set metadata, optimistic concurrency, generateName, the three patch dialects,
label/field selectors, limit/continue, Status error bodies, graceful deletion, finalizers,
ownerReference cascade, namespaces, CRDs (served at once, /status split), discovery.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from kubernetes_asyncio import client as k8s

from cnbi_devcluster import DevCluster
from cnbi_spawner.kube import make_api_client

NS = "default"


@pytest.fixture
async def cluster(tmp_path):
    async with DevCluster(tmp_path / "dc", runtime="stub", builds=False) as c:
        yield c


@pytest.fixture
async def kube(cluster):
    api = await make_api_client(str(cluster.kubeconfig))
    yield api
    await api.close()


@pytest.fixture
def core(kube):
    return k8s.CoreV1Api(kube)


@pytest.fixture
def custom(kube):
    return k8s.CustomObjectsApi(kube)


def cm(name: str, labels: dict | None = None, **data) -> dict:
    return {"metadata": {"name": name, "labels": labels or {}}, "data": data}


async def status_of(coro) -> tuple[int, dict]:
    with pytest.raises(k8s.ApiException) as info:
        await coro
    return info.value.status, json.loads(info.value.body)


async def test_create_get_replace_delete_with_server_metadata(core):
    created = await core.create_namespaced_config_map(NS, cm("one", a="1"))
    meta = created.metadata
    assert meta.uid and meta.creation_timestamp and meta.resource_version and meta.namespace == NS
    got = await core.read_namespaced_config_map("one", NS)
    assert got.metadata.resource_version == meta.resource_version
    got.data["a"] = "2"
    replaced = await core.replace_namespaced_config_map("one", NS, got)
    assert replaced.data == {"a": "2"}
    assert int(replaced.metadata.resource_version) > int(meta.resource_version)
    assert replaced.metadata.uid == meta.uid
    # a stale resourceVersion is a Conflict with a Kubernetes Status body
    got.data["a"] = "3"
    code, body = await status_of(core.replace_namespaced_config_map("one", NS, got))
    assert (code, body["kind"], body["reason"], body["code"]) == (409, "Status", "Conflict", 409)
    assert body["details"] == {"name": "one", "kind": "configmaps"}
    # delete of a configmap answers a Status Success; then it is gone (404 NotFound)
    deleted = await core.delete_namespaced_config_map("one", NS)
    assert deleted.status == "Success"
    code, body = await status_of(core.read_namespaced_config_map("one", NS))
    assert (code, body["reason"], body["message"]) == (
        404,
        "NotFound",
        'configmaps "one" not found',
    )


async def test_create_errors_are_status_bodies(core):
    await core.create_namespaced_config_map(NS, cm("dup"))
    code, body = await status_of(core.create_namespaced_config_map(NS, cm("dup")))
    assert (code, body["reason"]) == (409, "AlreadyExists")
    code, body = await status_of(core.create_namespaced_config_map(NS, cm("Bad_Name")))
    assert (code, body["reason"]) == (422, "Invalid")
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    code, body = await status_of(core.create_namespaced_config_map(NS, {"metadata": {}}))
    assert (code, body["reason"]) == (422, "Invalid")
    code, body = await status_of(core.create_namespaced_config_map("nope", cm("x")))
    assert (code, body["message"]) == (404, 'namespaces "nope" not found')
    bad_label = cm("x", labels={"a": "not valid!"})
    assert (await status_of(core.create_namespaced_config_map(NS, bad_label)))[0] == 422
    pod = {"metadata": {"name": "p"}, "spec": {"containers": []}}
    assert (await status_of(core.create_namespaced_pod(NS, pod)))[0] == 422


async def test_generate_name(core):
    body = {"metadata": {"generateName": "build-"}, "data": {}}
    names = {(await core.create_namespaced_config_map(NS, body)).metadata.name for _ in range(5)}
    assert len(names) == 5
    assert all(n.startswith("build-") and len(n) == len("build-") + 5 for n in names)


async def test_patch_dialects(core):
    await core.create_namespaced_config_map(NS, cm("p", labels={"keep": "1"}, a="1", b="2"))
    # strategic merge (the client's default for a dict on core APIs)
    out = await core.patch_namespaced_config_map("p", NS, {"data": {"c": "3", "a": None}})
    assert out.data == {"b": "2", "c": "3"}
    # JSON patch (a list body)
    ops = [{"op": "add", "path": "/metadata/labels/new", "value": "x"}]
    out = await core.patch_namespaced_config_map("p", NS, ops)
    assert out.metadata.labels == {"keep": "1", "new": "x"}
    # merge patch on request
    out = await core.patch_namespaced_config_map(
        "p",
        NS,
        {"metadata": {"labels": {"keep": None}}},
        _content_type="application/merge-patch+json",
    )
    assert out.metadata.labels == {"new": "x"}
    # a failing JSON patch test op changes nothing
    ops = [{"op": "test", "path": "/data/b", "value": "nope"}, {"op": "remove", "path": "/data"}]
    code, body = await status_of(core.patch_namespaced_config_map("p", NS, ops))
    assert code == 422
    assert (await core.read_namespaced_config_map("p", NS)).data == {"b": "2", "c": "3"}
    # a patch carrying a stale resourceVersion conflicts
    stale = {"metadata": {"resourceVersion": "1"}, "data": {"z": "1"}}
    code, body = await status_of(core.patch_namespaced_config_map("p", NS, stale))
    assert (code, body["reason"]) == (409, "Conflict")


async def test_label_and_field_selectors(core):
    for i in range(6):
        labels = {"app": "a" if i % 2 else "b", "idx": str(i)}
        if i < 2:
            labels["special"] = "yes"
        await core.create_namespaced_config_map(NS, cm(f"s{i}", labels=labels))

    async def names(**kw) -> list[str]:
        return [o.metadata.name for o in (await core.list_namespaced_config_map(NS, **kw)).items]

    assert await names(label_selector="app=a") == ["s1", "s3", "s5"]
    assert await names(label_selector="app!=a") == ["s0", "s2", "s4"]
    assert await names(label_selector="idx in (1,2,9)") == ["s1", "s2"]
    assert await names(label_selector="idx notin (1,2),app=b") == ["s0", "s4"]
    assert await names(label_selector="special") == ["s0", "s1"]
    assert await names(label_selector="!special,app=a") == ["s3", "s5"]
    assert await names(field_selector="metadata.name=s4") == ["s4"]
    assert await names(field_selector="metadata.name!=s4", label_selector="app=b") == ["s0", "s2"]
    code, body = await status_of(core.list_namespaced_config_map(NS, label_selector="a in (b"))
    assert (code, body["reason"]) == (400, "BadRequest")
    code, body = await status_of(core.list_namespaced_config_map(NS, field_selector="data.x=1"))
    assert (code, body["reason"]) == (400, "BadRequest")


async def test_limit_and_continue(core):
    for i in range(7):
        await core.create_namespaced_config_map(NS, cm(f"l{i}", labels={"page": "y"}))
    await core.create_namespaced_config_map(NS, cm("other"))
    seen, token, pages = [], None, 0
    while True:
        page = await core.list_namespaced_config_map(
            NS, label_selector="page=y", limit=3, _continue=token
        )
        pages += 1
        seen += [o.metadata.name for o in page.items]
        token = page.metadata._continue
        if not token:
            break
        assert page.metadata.remaining_item_count == 7 - len(seen)
    assert seen == [f"l{i}" for i in range(7)] and pages == 3
    code, body = await status_of(core.list_namespaced_config_map(NS, _continue="garbage"))
    assert code == 400


async def test_pod_graceful_delete_and_owner_cascade(cluster, core, tmp_path):
    (tmp_path / "content").mkdir()
    cluster.add_image("registry.example/x", tmp_path / "content")
    pod = {
        "metadata": {"name": "owner"},
        "spec": {"containers": [{"name": "notebook", "image": "registry.example/x:1"}]},
    }
    created = await core.create_namespaced_pod(NS, pod)
    assert created.status.phase == "Pending"
    ref = {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": "owner",
        "uid": created.metadata.uid,
        "blockOwnerDeletion": True,
        "controller": False,
    }
    svc = {
        "kind": "Service",
        "metadata": {"name": "owner", "ownerReferences": [ref]},
        "spec": {"ports": [{"port": 8888}]},
    }  # like KubeSpawner: no apiVersion
    assert (await core.create_namespaced_service(NS, svc)).spec.cluster_ip
    secret = {"metadata": {"name": "owned", "ownerReferences": [ref]}, "stringData": {"k": "v"}}
    assert (await core.create_namespaced_secret(NS, secret)).data == {"k": "dg=="}
    await wait_for(lambda: _phase(core, "owner"), "Running")
    # KubeSpawner's delete: query + body grace; the answer is the Pod with deletionTimestamp
    deleted = await core.delete_namespaced_pod(
        "owner", NS, grace_period_seconds=1, body=k8s.V1DeleteOptions(grace_period_seconds=1)
    )
    assert deleted.kind == "Pod" and deleted.metadata.deletion_timestamp is not None
    await wait_for(lambda: _exists(core.read_namespaced_pod("owner", NS)), False)
    await wait_for(lambda: _exists(core.read_namespaced_service("owner", NS)), False)
    await wait_for(lambda: _exists(core.read_namespaced_secret("owned", NS)), False)


async def test_finalizers_hold_deletion(core):
    body = cm("fin")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    await core.create_namespaced_config_map(NS, body)
    await core.delete_namespaced_config_map("fin", NS)
    held = await core.read_namespaced_config_map("fin", NS)
    assert held.metadata.deletion_timestamp is not None
    await core.patch_namespaced_config_map(
        "fin", NS, {"metadata": {"finalizers": None}}, _content_type="application/merge-patch+json"
    )
    assert not await _exists(core.read_namespaced_config_map("fin", NS))


async def test_namespace_lifecycle(core):
    ns = await core.create_namespace({"metadata": {"name": "course-a"}})
    assert ns.status.phase == "Active"
    await core.create_namespaced_config_map("course-a", cm("inside"))
    await core.delete_namespace("course-a")
    await wait_for(lambda: _exists(core.read_namespace("course-a")), False)
    assert not await _exists(core.read_namespaced_config_map("inside", "course-a"))


async def test_crd_objects_and_status_subresource(custom):
    args = ("image.openshift.io", "v1", NS, "imagestreams")
    obj = {
        "apiVersion": "image.openshift.io/v1",
        "kind": "ImageStream",
        "metadata": {"name": "s", "labels": {"opendatahub.io/notebook-image": "true"}},
        "spec": {"tags": [{"name": "1"}]},
        "status": {"dockerImageRepository": "ignored-on-create"},
    }
    created = await custom.create_namespaced_custom_object(*args, obj)
    assert "status" not in created and created["metadata"]["generation"] == 1
    # PUT without resourceVersion is Invalid for custom resources
    code, body = await status_of(custom.replace_namespaced_custom_object(*args, "s", obj))
    assert (code, body["reason"]) == (422, "Invalid")
    # status is written through /status only; spec changes bump generation
    created["status"] = {"tags": [{"tag": "1", "items": [{"image": "sha256:1"}]}]}
    with_status = await custom.replace_namespaced_custom_object_status(*args, "s", created)
    assert with_status["status"]["tags"][0]["tag"] == "1"
    assert with_status["metadata"]["generation"] == 1
    with_status["spec"]["tags"].append({"name": "2"})
    with_status["status"] = {"tags": []}  # ignored on the main resource
    updated = await custom.replace_namespaced_custom_object(*args, "s", with_status)
    assert updated["metadata"]["generation"] == 2
    assert updated["status"]["tags"][0]["tag"] == "1"
    # CustomObjectsApi sends a dict as JSON patch unless told merge-patch
    merged = await custom.patch_namespaced_custom_object(
        *args,
        "s",
        {"metadata": {"annotations": {"a": "b"}}},
        _content_type="application/merge-patch+json",
    )
    assert merged["metadata"]["annotations"] == {"a": "b"}
    ops = [{"op": "replace", "path": "/spec/tags/0/name", "value": "one"}]
    patched = await custom.patch_namespaced_custom_object(*args, "s", ops)
    assert patched["spec"]["tags"][0]["name"] == "one"
    listed = await custom.list_namespaced_custom_object(
        *args, label_selector="opendatahub.io/notebook-image=true"
    )
    assert [o["metadata"]["name"] for o in listed["items"]] == ["s"]
    assert listed["kind"] == "ImageStreamList"
    deleted = await custom.delete_namespaced_custom_object(*args, "s")
    assert deleted["metadata"]["name"] == "s"
    code, _ = await status_of(custom.get_namespaced_custom_object(*args, "s"))
    assert code == 404


async def test_new_crd_is_served_at_once(kube, custom):
    ext = k8s.ApiextensionsV1Api(kube)
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object"}},
                }
            ],
        },
    }
    await ext.create_custom_resource_definition(crd)
    got = await ext.read_custom_resource_definition("widgets.example.com")
    assert {c.type: c.status for c in got.status.conditions}["Established"] == "True"
    args = ("example.com", "v1", NS, "widgets")
    w = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {}}
    await custom.create_namespaced_custom_object(*args, w)
    # no status subresource on this CRD: status is written with the object
    code, _ = await status_of(custom.get_namespaced_custom_object_status(*args, "w"))
    assert code == 404
    await ext.delete_custom_resource_definition("widgets.example.com")
    code, _ = await status_of(custom.get_namespaced_custom_object(*args, "w"))
    assert code == 404


async def test_preloaded_crds_and_discovery(cluster, kube):
    groups = await k8s.ApisApi(kube).get_api_versions()
    names = {g.name for g in groups.groups}
    assert {"image.openshift.io", "meteor.zone", "apiextensions.k8s.io"} <= names
    res = await k8s.CustomObjectsApi(kube).get_api_resources("meteor.zone", "v1alpha1")
    by_name = {r.name: r for r in res.resources}
    assert by_name["customnbimages"].short_names == ["cnbi"]
    assert "customnbimages/status" in by_name
    core = await k8s.CoreApi(kube).get_api_versions()
    assert core.versions == ["v1"]
    version = await k8s.VersionApi(kube).get_code()
    assert version.major == "1"


async def test_token_is_required(cluster):
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{cluster.url}/api/v1/namespaces/default/pods") as r:
            assert r.status == 401
            assert (await r.json())["reason"] == "Unauthorized"
        headers = {"Authorization": f"Bearer {cluster.token}"}
        async with s.get(f"{cluster.url}/api/v1/namespaces/default/pods", headers=headers) as r:
            assert r.status == 200


async def test_in_process_api_round_trip(cluster, core):
    made = cluster.create("v1", "configmaps", cm("inproc", a="1"))
    got = await core.read_namespaced_config_map("inproc", NS)
    assert got.metadata.uid == made["metadata"]["uid"]
    made["data"]["a"] = "mutated locally"  # callers get copies
    assert cluster.get("v1", "configmaps", "inproc")["data"] == {"a": "1"}
    assert [o["metadata"]["name"] for o in cluster.list("v1", "configmaps", NS)] == ["inproc"]
    cluster.patch("v1", "configmaps", "inproc", {"data": {"b": "2"}})
    assert (await core.read_namespaced_config_map("inproc", NS)).data == {"a": "1", "b": "2"}
    cluster.delete("v1", "configmaps", "inproc")
    assert cluster.list("v1", "configmaps", NS) == []


async def _phase(core, name: str) -> str | None:
    try:
        return (await core.read_namespaced_pod(name, NS)).status.phase
    except k8s.ApiException:
        return None


async def _exists(coro) -> bool:
    try:
        await coro
    except k8s.ApiException as e:
        assert e.status == 404
        return False
    return True


async def wait_for(make_coro, expected, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        value = await make_coro()
        if value == expected:
            return
        assert time.monotonic() < deadline, f"still {value!r}, expected {expected!r}"
        await asyncio.sleep(0.05)


async def test_dry_run_changes_nothing(core):
    made = await core.create_namespaced_config_map(NS, cm("dry", a="1"), dry_run="All")
    assert made.metadata.name == "dry"
    assert not await _exists(core.read_namespaced_config_map("dry", NS))
    await core.create_namespaced_config_map(NS, cm("dry", a="1"))
    patched = await core.patch_namespaced_config_map("dry", NS, {"data": {"a": "2"}}, dry_run="All")
    assert patched.data == {"a": "2"}
    await core.delete_namespaced_config_map("dry", NS, dry_run="All")
    assert (await core.read_namespaced_config_map("dry", NS)).data == {"a": "1"}
    code, body = await status_of(core.delete_namespaced_config_map("dry", NS, dry_run="Some"))
    assert (code, body["reason"]) == (400, "BadRequest")


async def test_https_with_the_kubeconfig_ca(make_devcluster):
    cluster = await make_devcluster(runtime="stub", builds=False, tls=True)
    assert cluster.url.startswith("https://127.0.0.1:")
    api = await make_api_client(str(cluster.kubeconfig))
    try:
        names = [n.metadata.name for n in (await k8s.CoreV1Api(api).list_namespace()).items]
        assert "default" in names
    finally:
        await api.close()
    async with aiohttp.ClientSession() as s:  # an unknown CA is refused
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await s.get(f"{cluster.url}/version")


async def test_pod_spec_is_immutable_but_labels_are_not(core):
    pod = {
        "metadata": {"name": "imm"},
        "spec": {"containers": [{"name": "notebook", "image": "registry.example/none:1"}]},
    }
    await core.create_namespaced_pod(NS, pod)
    out = await core.patch_namespaced_pod("imm", NS, {"metadata": {"labels": {"a": "b"}}})
    assert out.metadata.labels == {"a": "b"}
    out = await core.patch_namespaced_pod(
        "imm", NS, {"spec": {"containers": [{"name": "notebook", "image": "registry.example/n:2"}]}}
    )
    assert out.spec.containers[0].image == "registry.example/n:2"
    change = {"spec": {"containers": [{"name": "notebook", "args": ["--evil"]}]}}
    code, body = await status_of(core.patch_namespaced_pod("imm", NS, change))
    assert (code, body["reason"]) == (422, "Invalid")
    # status cannot be written through the main resource
    await core.patch_namespaced_pod("imm", NS, {"status": {"phase": "Succeeded"}})
    assert (await core.read_namespaced_pod("imm", NS)).status.phase != "Succeeded"


async def test_custom_resources_are_pruned_and_validated(custom):
    args = ("meteor.zone", "v1alpha1", NS, "customnbimages")
    body = {
        "apiVersion": "meteor.zone/v1alpha1",
        "kind": "CustomNBImage",
        "metadata": {"name": "c1"},
        "spec": {"displayName": "X", "pipelines": ["build"], "notInSchema": "dropped"},
    }
    created = await custom.create_namespaced_custom_object(*args, body)
    assert created["spec"] == {"displayName": "X", "pipelines": ["build"]}
    bad = {**body, "metadata": {"name": "c2"}, "spec": {"buildType": "Docker", "ttl": "soon"}}
    code, out = await status_of(custom.create_namespaced_custom_object(*args, bad))
    assert (code, out["reason"]) == (422, "Invalid")
    fields = {c["field"] for c in out["details"]["causes"]}
    assert fields == {"spec.buildType", "spec.ttl"}
    # the status subresource is validated too
    created["status"] = {"phase": "Exploded"}
    code, out = await status_of(
        custom.replace_namespaced_custom_object_status(*args, "c1", created)
    )
    assert code == 422


async def test_system_namespaces_cannot_be_deleted(core):
    for ns in ("default", "kube-system"):
        code, body = await status_of(core.delete_namespace(ns))
        assert (code, body["reason"]) == (403, "Forbidden")
    assert (await core.read_namespace("default")).status.phase == "Active"


HOSTILE = [
    ("configmaps", b"not json"),
    ("configmaps", b"[1, 2]"),
    ("configmaps", b'{"metadata": {"name": 5}}'),
    ("configmaps", b'{"metadata": {"name": "x", "labels": ["a"]}}'),
    ("configmaps", b'{"metadata": {"name": "x", "labels": {"a": 1}}}'),
    ("configmaps", b'{"metadata": {"name": "x", "annotations": "a"}}'),
    ("configmaps", b'{"metadata": {"name": "x", "finalizers": "a"}}'),
    ("configmaps", b'{"metadata": {"name": "x", "ownerReferences": [1]}}'),
    ("configmaps", b'{"metadata": {"name": "x"}, "data": {"a": {"b": 1}}}'),
    ("configmaps", b'{"metadata": {"name": "../x"}}'),
    ("configmaps", b'{"metadata": {"name": "' + b"a" * 300 + b'"}}'),
    ("pods", b'{"metadata": {"name": "x"}, "spec": "no"}'),
    ("pods", b'{"metadata": {"name": "x"}, "spec": {"containers": {"name": "a"}}}'),
    ("pods", b'{"metadata": {"name": "x"}, "spec": {"containers": [{"name": "a"}]}}'),
    (
        "pods",
        b'{"metadata": {"name": "x"}, "spec": {"containers": [{"name": "a", "image": "i",'
        b' "command": "rm -rf /"}]}}',
    ),
    (
        "pods",
        b'{"metadata": {"name": "x"}, "spec": {"containers": [{"name": "a", "image": "i",'
        b' "ports": [{"containerPort": 99999}]}]}}',
    ),
    ("pods", b'{"kind": "Secret", "metadata": {"name": "x"}}'),
    ("pods", b'{"metadata": {"name": "x", "namespace": "other"}, "spec": {}}'),
]


@pytest.mark.parametrize("plural, body", HOSTILE)
async def test_hostile_bodies_get_4xx_status_and_create_nothing(cluster, plural, body):
    headers = {"Authorization": f"Bearer {cluster.token}", "Content-Type": "application/json"}
    url = f"{cluster.url}/api/v1/namespaces/{NS}/{plural}"
    async with aiohttp.ClientSession(headers=headers) as s:
        async with s.post(url, data=body) as r:
            assert 400 <= r.status < 500, await r.text()
            status = await r.json()
            assert status["kind"] == "Status" and status["code"] == r.status
    assert cluster.list("v1", plural, NS) == []
