"""OpenAPI documents (``openapi``) and unknown-field checks (``schema.unknown_fields``).

kubectl reads ``/openapi/v3`` for ``explain`` and to learn that the server validates
fields (the ``fieldValidation`` parameter on PATCH); kubectl itself runs against them in
test_kubectl.py. Here: their shape, from the real CRDs and the client's models.
"""

from __future__ import annotations

import aiohttp
import pytest

from cnbi_devcluster import DevCluster, openapi
from cnbi_devcluster import resources as R
from cnbi_devcluster.schema import unknown_fields


@pytest.fixture
async def cluster(tmp_path):
    async with DevCluster(tmp_path / "dc", runtime="stub", builds=False) as c:
        yield c


async def get(cluster, path: str, accept: str = "application/json"):
    headers = {"Authorization": f"Bearer {cluster.token}", "Accept": accept}
    async with aiohttp.ClientSession(headers=headers) as s:
        async with s.get(cluster.url + path) as r:
            return r.status, await r.json()


async def test_v3_index_lists_core_and_every_crd_group_version(cluster):
    status, index = await get(cluster, "/openapi/v3")
    assert status == 200
    assert {"api/v1", "apis/meteor.zone/v1alpha1", "apis/image.openshift.io/v1"} <= set(
        index["paths"]
    )
    url = index["paths"]["apis/meteor.zone/v1alpha1"]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/apis/meteor.zone/v1alpha1?hash=")
    status, doc = await get(cluster, url)
    assert status == 200 and doc["openapi"].startswith("3.")
    (name,) = [
        n
        for n, s in doc["components"]["schemas"].items()
        if {"group": "meteor.zone", "version": "v1alpha1", "kind": "CustomNBImage"}
        in s.get("x-kubernetes-group-version-kind", [])
    ]
    crd = cluster.get("apiextensions.k8s.io/v1", "customresourcedefinitions",
                      "customnbimages.meteor.zone")  # fmt: skip
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert doc["components"]["schemas"][name]["properties"]["spec"] == spec
    patch = doc["paths"]["/apis/meteor.zone/v1alpha1/namespaces/{namespace}/customnbimages/{name}"][
        "patch"
    ]
    assert {"name": "fieldValidation", "in": "query"}.items() <= patch["parameters"][0].items()
    assert (await get(cluster, "/openapi/v3/apis/nope/v1"))[0] == 404


async def test_v3_core_v1_from_the_client_models(cluster):
    _, doc = await get(cluster, "/openapi/v3/api/v1")
    schemas = doc["components"]["schemas"]
    pod = schemas["io.k8s.api.core.v1.Pod"]
    assert pod["x-kubernetes-group-version-kind"] == [{"group": "", "version": "v1", "kind": "Pod"}]
    containers = schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["type"] == "array"
    assert containers["items"] == {
        "allOf": [{"$ref": "#/components/schemas/io.k8s.api.core.v1.Container"}]
    }
    assert containers["description"].startswith("List of containers belonging to the pod.")
    assert "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta" in schemas


async def test_v2_json_and_406_for_protobuf_only(cluster):
    status, doc = await get(cluster, "/openapi/v2")
    assert status == 200 and doc["swagger"] == "2.0"
    assert doc["definitions"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"][
        "items"
    ] == {"allOf": [{"$ref": "#/definitions/io.k8s.api.core.v1.Container"}]}
    proto = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
    status, body = await get(cluster, "/openapi/v2", accept=proto)
    assert (status, body["reason"]) == (406, "NotAcceptable")


async def test_openapi_needs_the_token(cluster):
    async with aiohttp.ClientSession() as s:
        async with s.get(cluster.url + "/openapi/v3") as r:
            assert r.status == 401


SCHEMA = {
    "type": "object",
    "properties": {
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "properties": {
                "items": {"type": "array", "items": {"type": "object", "properties": {
                    "name": {"type": "string"}}}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        },
    },
}  # fmt: skip


@pytest.mark.parametrize(
    "body, unknown",
    [
        ({"metadata": {"name": "x", "labels": {}}, "spec": {"items": [{"name": "a"}]}}, []),
        ({"spec": {"bogus": 1}}, ["spec.bogus"]),
        ({"spec": {"items": [{"name": "a"}, {"nmae": "b"}]}}, ["spec.items[1].nmae"]),
        ({"spec": {"labels": {"any": "x"}, "free": {"any": {"thing": 1}}}}, []),
        ({"spec": {"$setElementOrder/items": [{"name": "a"}]}, "status": {}}, ["status"]),
    ],
)
def test_unknown_fields(body, unknown):
    assert unknown_fields(body, SCHEMA, root=True) == unknown


def test_unknown_fields_of_core_kinds_follow_references():
    schema, resolve = openapi.field_schema(R.POD_TYPE)
    body = {"metadata": {"name": "p", "labelz": {}}, "spec": {"containers": [
        {"name": "c", "image": "x", "ports": [{"containerPort": 1, "hostPortt": 2}]}]}}  # fmt: skip
    assert unknown_fields(body, schema, resolve) == [
        "metadata.labelz",
        "spec.containers[0].ports[0].hostPortt",
    ]
