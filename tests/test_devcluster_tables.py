"""Server-side printing (``tables``): the cells ``kubectl get`` shows, table-tested."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cnbi_devcluster import resources as R
from cnbi_devcluster.tables import (
    human_duration,
    json_path,
    pod_status,
    printer_columns,
    table,
    wants_table,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def ts(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    "seconds, text",
    [(-5, "<invalid>"), (0, "0s"), (119, "119s"), (120, "2m"), (312, "5m12s"), (600, "10m"),
     (3 * 3600, "3h"), (3 * 3600 + 60 * 7, "3h7m"), (30 * 3600, "30h"), (52 * 3600, "2d4h"),
     (48 * 3600, "2d"), (40 * 86400, "40d"), (3 * 365 * 86400 + 86400 * 4, "3y4d"),
     (9 * 365 * 86400, "9y")],
)  # fmt: skip
def test_human_duration(seconds, text):
    assert human_duration(seconds) == text


@pytest.mark.parametrize(
    "accept, yes",
    [
        ("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;"
         "g=meta.k8s.io,application/json", True),
        ("application/json", False),
        ("application/json, application/json;as=Table;v=v1;g=meta.k8s.io", False),
        ("", False),
    ],
)  # fmt: skip
def test_wants_table(accept, yes):
    assert wants_table(accept) is yes


def container(ready=False, restarts=0, **state):
    return {"name": "c", "ready": ready, "restartCount": restarts, "state": state}


@pytest.mark.parametrize(
    "status, meta, shown",
    [
        ({"phase": "Pending"}, {}, "Pending"),
        ({"phase": "Pending", "containerStatuses": [container(waiting={"reason": "ErrImagePull"})]},
         {}, "ErrImagePull"),
        ({"phase": "Running", "containerStatuses": [container(True, running={})]}, {}, "Running"),
        ({"phase": "Running", "containerStatuses": [
            container(restarts=2, waiting={"reason": "CrashLoopBackOff"})]}, {},
         "CrashLoopBackOff"),
        ({"phase": "Failed", "containerStatuses": [container(terminated={"exitCode": 3})]}, {},
         "ExitCode:3"),
        ({"phase": "Failed", "containerStatuses": [
            container(terminated={"exitCode": 137, "reason": "OOMKilled"})]}, {}, "OOMKilled"),
        ({"phase": "Running", "containerStatuses": [container(True, running={})]},
         {"deletionTimestamp": ts(1)}, "Terminating"),
    ],
)  # fmt: skip
def test_pod_status(status, meta, shown):
    assert pod_status({"metadata": meta, "status": status}) == shown


def test_pod_rows():
    pod = {
        "metadata": {"name": "jupyter-a", "creationTimestamp": ts(312)},
        "spec": {"containers": [{"name": "notebook"}, {"name": "side"}], "nodeName": "n1"},
        "status": {"phase": "Running", "podIP": "127.1.2.3", "containerStatuses": [
            container(True, 1, running={}), container(False, 2, running={})]},
    }  # fmt: skip
    out = table(R.POD_TYPE, [pod], list_meta={"resourceVersion": "7"}, now=NOW)
    assert (out["kind"], out["apiVersion"], out["metadata"]) == (
        "Table", "meta.k8s.io/v1", {"resourceVersion": "7"})  # fmt: skip
    names = [c["name"] for c in out["columnDefinitions"] if c["priority"] == 0]
    assert names == ["Name", "Ready", "Status", "Restarts", "Age"]
    (row,) = out["rows"]
    assert row["cells"] == ["jupyter-a", "1/2", "Running", "3", "5m12s", "127.1.2.3", "n1"]
    assert row["object"] == {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": pod["metadata"],
    }
    assert table(R.POD_TYPE, [pod], include_object="Object", now=NOW)["rows"][0]["object"] == pod
    assert table(R.POD_TYPE, [pod], include_object="None", now=NOW)["rows"][0]["object"] is None
    with pytest.raises(R.ApiError) as e:
        table(R.POD_TYPE, [pod], include_object="Everything")
    assert e.value.code == 400


@pytest.mark.parametrize(
    "path, value",
    [(".status.phase", "Ready"), (".spec.items[1].name", "b"), (".spec.items[5].name", None),
     (".metadata.annotations.a\\.b/c", "dotted"), ("{.status.phase}", "Ready"),
     (".missing.deeper", None)],
)  # fmt: skip
def test_json_path(path, value):
    obj = {
        "status": {"phase": "Ready"},
        "spec": {"items": [{"name": "a"}, {"name": "b"}]},
        "metadata": {"annotations": {"a.b/c": "dotted"}},
    }
    assert json_path(obj, path) == value


def test_json_path_outside_the_subset_is_an_error():
    with pytest.raises(ValueError):
        json_path({}, ".items[?(@.a)]")


def test_crd_printer_columns():
    crd = {"spec": {"versions": [{"name": "v1", "additionalPrinterColumns": [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Steps", "type": "integer", "jsonPath": ".status.steps", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]},
        {"name": "v2"}]}}  # fmt: skip
    rt = R.ResourceType("example.org", "v1", "things", "Thing", custom=True)
    obj = {"metadata": {"name": "t", "creationTimestamp": ts(7200)}, "status": {"steps": 4}}
    out = table(rt, [obj], crd_columns=printer_columns(crd, "v1"), now=NOW)
    assert [c["name"] for c in out["columnDefinitions"]] == ["Name", "Phase", "Steps", "Age"]
    assert out["columnDefinitions"][2]["priority"] == 1
    assert out["rows"][0]["cells"] == ["t", None, 4, "120m"]
    # a version without printer columns gets Age, as the real API defaults them
    assert printer_columns(crd, "v2") == [
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    ]
    assert printer_columns(None, "v1") is None
