"""Server-side apply (``apply``): ownership, conflicts, force, removal — table-tested.

kubectl's ``apply --server-side`` against the running dev cluster is in test_kubectl.py.
"""

from __future__ import annotations

import pytest

from cnbi_devcluster import resources as R
from cnbi_devcluster.apply import apply, from_fields_v1, to_fields_v1

AV = "example.org/v1"
NOW = "2026-12-01T12:00:00Z"


def cfg(**spec):
    return {"apiVersion": AV, "kind": "Thing", "metadata": {"name": "t"}, "spec": spec}


def run(current, config, manager="a", force=False):
    return apply(current, config, manager=manager, force=force, api_version=AV, now=NOW)


def managers(obj):
    return {e["manager"]: from_fields_v1(e["fieldsV1"]) for e in obj["metadata"]["managedFields"]}


def test_fields_v1_round_trip():
    paths = {("spec", "x"), ("spec", "y", "z"), ("metadata", "labels", "app")}
    fields = to_fields_v1(paths)
    assert fields["f:spec"] == {"f:x": {}, "f:y": {"f:z": {}}}
    assert from_fields_v1(fields) == paths


def test_create_records_the_manager():
    obj = run(None, cfg(x=1, items=[1, 2]))
    assert obj["spec"] == {"x": 1, "items": [1, 2]}
    (entry,) = obj["metadata"]["managedFields"]
    keys = ("manager", "operation", "apiVersion", "fieldsType")
    assert [entry[k] for k in keys] == ["a", "Apply", AV, "FieldsV1"]
    assert from_fields_v1(entry["fieldsV1"]) == {("spec", "x"), ("spec", "items")}


def test_update_own_fields_and_drop_the_ones_left_out():
    first = run(None, cfg(x=1, y=2))
    second = run(first, cfg(x=5))
    assert second["spec"] == {"x": 5}
    assert managers(second) == {"a": {("spec", "x")}}


def test_conflict_is_409_unless_forced():
    first = run(None, cfg(x=1))
    with pytest.raises(R.ApiError) as e:
        run(first, cfg(x=2), manager="b")
    assert e.value.code == 409
    assert e.value.message == (
        'Apply failed with 1 conflict: conflict with "a" using example.org/v1: .spec.x'
    )
    assert e.value.details["causes"] == [{"type": "FieldManagerConflict",
        "message": 'conflict with "a" using example.org/v1', "field": ".spec.x"}]  # fmt: skip
    forced = run(first, cfg(x=2), manager="b", force=True)
    assert forced["spec"] == {"x": 2}
    assert managers(forced) == {"b": {("spec", "x")}}  # a's emptied entry is gone


def test_same_value_is_shared_and_kept_while_anyone_owns_it():
    first = run(None, cfg(x=1, y=1))
    shared = run(first, cfg(x=1), manager="b")
    assert managers(shared) == {"a": {("spec", "x"), ("spec", "y")}, "b": {("spec", "x")}}
    a_leaves_x = run(shared, cfg(y=1), manager="a")
    assert a_leaves_x["spec"] == {"x": 1, "y": 1}  # b still owns x


def test_a_manager_is_required():
    with pytest.raises(R.ApiError) as e:
        run(None, cfg(x=1), manager="")
    assert e.value.code == 400
