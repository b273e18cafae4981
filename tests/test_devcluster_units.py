"""Pure parts of the dev cluster, table-driven: selectors, patches, routes, image refs, and
what the kubelet decides and reports for a pod."""

from __future__ import annotations

import pytest

from cnbi_devcluster import podstatus
from cnbi_devcluster.patch import (
    PatchError,
    UnsupportedPatch,
    apply_patch,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)
from cnbi_devcluster.podspec import (
    container_argv,
    container_env,
    image_repository,
    is_image_reference,
    rewrite_service_url,
)
from cnbi_devcluster.routes import Route, parse_path
from cnbi_devcluster.schema import prune, validate
from cnbi_devcluster.selectors import (
    Selector,
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)

LABELS = {"app": "jupyterhub", "component": "singleuser-server", "tier": "gold"}


@pytest.mark.parametrize(
    "selector, matches",
    [
        ("", True),
        ("app=jupyterhub", True),
        ("app==jupyterhub", True),
        ("app=other", False),
        ("app!=other", True),
        ("missing!=x", True),  # != matches objects without the key
        ("app", True),
        ("!app", False),
        ("!missing", True),
        ("missing", False),
        ("tier in (gold, silver)", True),
        ("tier in (silver)", False),
        ("tier notin (silver,bronze)", True),
        ("missing notin (a)", True),
        ("missing in (a)", False),
        ("app=jupyterhub,component=singleuser-server", True),
        ("app=jupyterhub,component=other", False),
        ("app=jupyterhub, tier in (gold,silver), !missing", True),
        ("example.com/key=v", False),
    ],
)
def test_label_selector_matching(selector, matches):
    reqs = parse_label_selector(selector)
    assert Selector(labels=reqs).matches({"metadata": {"labels": LABELS}}) is matches


@pytest.mark.parametrize(
    "bad",
    ["app=(x", "a in (b", "a in b)", "=x", "a,,b", "a==b==c", "key with space=x", "a=" + "x" * 64],
)
def test_bad_label_selectors_raise(bad):
    with pytest.raises(SelectorError):
        parse_label_selector(bad)


EVENT = {
    "metadata": {"name": "e1", "namespace": "ns"},
    "involvedObject": {"kind": "Pod", "name": "jupyter-a"},
    "reason": "Started",
    "type": "Normal",
    "source": {"component": "kubelet"},
}


@pytest.mark.parametrize(
    "selector, kind, obj, matches",
    [
        ("involvedObject.kind=Pod", "Event", EVENT, True),
        ("involvedObject.kind=Pod,involvedObject.name=jupyter-a", "Event", EVENT, True),
        ("involvedObject.name!=jupyter-a", "Event", EVENT, False),
        ("metadata.name=e1", "Event", EVENT, True),
        ("metadata.namespace==ns", "Event", EVENT, True),
        ("source=kubelet", "Event", EVENT, True),
        ("status.phase=Running", "Pod", {"metadata": {}, "status": {"phase": "Running"}}, True),
        ("status.phase!=Running", "Pod", {"metadata": {}, "status": {"phase": "Pending"}}, True),
        ("", "Pod", {"metadata": {}}, True),
    ],
)
def test_field_selector_matching(selector, kind, obj, matches):
    sel = Selector(fields=parse_field_selector(selector, kind))
    assert sel.matches(obj) is matches


@pytest.mark.parametrize(
    "selector, kind",
    [("status.phase=Running", "ConfigMap"), ("spec.foo=1", "Pod"), ("nonsense", "Pod")],
)
def test_unsupported_field_selectors_raise(selector, kind):
    with pytest.raises(SelectorError):
        parse_field_selector(selector, kind)


@pytest.mark.parametrize(
    "target, patch, result",
    [
        ({"a": 1, "b": {"c": 2}}, {"b": {"d": 3}}, {"a": 1, "b": {"c": 2, "d": 3}}),
        ({"a": 1, "b": 2}, {"a": None}, {"b": 2}),
        ({"l": [1, 2]}, {"l": [3]}, {"l": [3]}),
        ({"a": {"b": 1}}, {"a": 5}, {"a": 5}),
        ({}, {"a": {"b": None}}, {"a": {}}),
    ],
)
def test_merge_patch(target, patch, result):
    before = repr(target)
    assert merge_patch(target, patch) == result
    assert repr(target) == before  # input untouched


DOC = {"metadata": {"labels": {"a": "1"}}, "spec": {"tags": [{"name": "x"}, {"name": "y"}]}}


@pytest.mark.parametrize(
    "ops, check",
    [
        ([{"op": "add", "path": "/metadata/labels/b", "value": "2"}], ("metadata", "labels")),
        ([{"op": "remove", "path": "/spec/tags/0"}], ("spec", "tags")),
        ([{"op": "replace", "path": "/spec/tags/1/name", "value": "z"}], ("spec", "tags")),
        ([{"op": "add", "path": "/spec/tags/-", "value": {"name": "w"}}], ("spec", "tags")),
        ([{"op": "move", "from": "/metadata/labels/a", "path": "/metadata/x"}], ("metadata",)),
        ([{"op": "copy", "from": "/spec/tags/0", "path": "/spec/first"}], ("spec", "first")),
        ([{"op": "test", "path": "/metadata/labels/a", "value": "1"}], ("metadata", "labels")),
        ([{"op": "add", "path": "/metadata/labels/a~1b", "value": "3"}], ("metadata", "labels")),
    ],
)
def test_json_patch_ops(ops, check):
    out = json_patch(DOC, ops)
    node = out
    for key in check:
        node = node[key]
    assert node is not None
    assert DOC["spec"]["tags"] == [{"name": "x"}, {"name": "y"}]


def test_json_patch_results():
    assert json_patch(DOC, [{"op": "remove", "path": "/spec/tags/0"}])["spec"]["tags"] == [
        {"name": "y"}
    ]
    out = json_patch(DOC, [{"op": "add", "path": "/metadata/labels/a~1b", "value": "3"}])
    assert out["metadata"]["labels"] == {"a": "1", "a/b": "3"}
    out = json_patch(DOC, [{"op": "move", "from": "/metadata/labels/a", "path": "/metadata/x"}])
    assert out["metadata"] == {"labels": {}, "x": "1"}


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "test", "path": "/metadata/labels/a", "value": "2"}],
        [{"op": "remove", "path": "/nope"}],
        [{"op": "replace", "path": "/spec/tags/5", "value": 1}],
        [{"op": "frobnicate", "path": "/a"}],
        [{"op": "add", "path": "no-slash", "value": 1}],
        {"op": "add"},
    ],
)
def test_json_patch_errors(ops):
    with pytest.raises(PatchError):
        json_patch(DOC, ops)


def test_strategic_merge_by_key():
    pod = {
        "spec": {
            "containers": [
                {"name": "notebook", "image": "a", "env": [{"name": "X", "value": "1"}]},
                {"name": "sidecar", "image": "s"},
            ],
            "finalizers": ["a"],
        }
    }
    patch = {
        "spec": {
            "containers": [
                {"name": "notebook", "env": [{"name": "Y", "value": "2"}]},
                {"name": "sidecar", "$patch": "delete"},
                {"name": "new", "image": "n"},
            ],
            "finalizers": ["b"],
        }
    }
    out = strategic_merge_patch(pod, patch)
    assert out["spec"]["containers"] == [
        {
            "name": "notebook",
            "image": "a",
            "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}],
        },
        {"name": "new", "image": "n"},
    ]
    assert out["spec"]["finalizers"] == ["a", "b"]
    assert pod["spec"]["containers"][1] == {"name": "sidecar", "image": "s"}


def test_apply_patch_content_types():
    assert apply_patch({"a": 1}, {"b": 2}, "application/merge-patch+json") == {"a": 1, "b": 2}
    strategic = "application/strategic-merge-patch+json; charset=utf-8"
    assert apply_patch({"a": 1}, {"b": 2}, strategic) == {"a": 1, "b": 2}
    with pytest.raises(UnsupportedPatch):
        apply_patch({"a": 1}, {"b": 2}, strategic, strategic=False)
    with pytest.raises(UnsupportedPatch):
        apply_patch({"a": 1}, {"b": 2}, "text/plain")


@pytest.mark.parametrize(
    "path, route",
    [
        ("/api", Route(discovery=True)),
        ("/api/v1", Route(version="v1", discovery=True)),
        ("/apis", Route(discovery=True)),
        ("/apis/meteor.zone", Route(group="meteor.zone", discovery=True)),
        ("/api/v1/pods", Route(version="v1", plural="pods")),
        ("/api/v1/namespaces", Route(version="v1", plural="namespaces")),
        ("/api/v1/namespaces/ns1", Route(version="v1", plural="namespaces", name="ns1")),
        (
            "/api/v1/namespaces/ns1/status",
            Route(version="v1", plural="namespaces", name="ns1", subresource="status"),
        ),
        ("/api/v1/namespaces/ns1/pods", Route(version="v1", plural="pods", namespace="ns1")),
        (
            "/api/v1/namespaces/ns1/pods/p/log",
            Route(version="v1", plural="pods", namespace="ns1", name="p", subresource="log"),
        ),
        (
            "/api/v1/watch/namespaces/ns1/pods",
            Route(version="v1", plural="pods", namespace="ns1", watch=True),
        ),
        (
            "/apis/meteor.zone/v1alpha1/namespaces/d/customnbimages/x/status",
            Route("meteor.zone", "v1alpha1", "customnbimages", "d", "x", "status"),
        ),
        ("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/x.y", None),
        ("/metrics", None),
        ("/api/v1/namespaces/a/pods/b/c/d", None),
    ],
)
def test_parse_path(path, route):
    if route is None and path.startswith("/apis/apiextensions"):
        got = parse_path(path)
        assert (got.group, got.plural, got.name) == (
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "x.y",
        )
        return
    assert parse_path(path) == route


@pytest.mark.parametrize(
    "ref, repo",
    [
        ("registry.example/courses/uai-intro:2026.1", "registry.example/courses/uai-intro"),
        (
            "registry.example/courses/uai-intro@sha256:" + "ab" * 32,
            "registry.example/courses/uai-intro",
        ),
        ("registry.example:5000/x/y:tag", "registry.example:5000/x/y"),
        ("registry.example:5000/x/y", "registry.example:5000/x/y"),
        ("busybox", "busybox"),
        ("busybox:1.36", "busybox"),
    ],
)
def test_image_repository(ref, repo):
    assert image_repository(ref) == repo


@pytest.mark.parametrize(
    "ref, ok",
    [
        ("quay.io/jupyterhub/singleuser", True),
        ("quay.io/jupyterhub/singleuser:5.2.1", True),
        ("python:3.12-slim", True),
        ("localhost:5000/a/b_c__d-e.f:1", True),
        ("registry.example/x@sha256:" + "ab" * 32, True),
        ("registry.example/x:1@sha256:" + "ab" * 32, True),
        ("", False),
        ("a b", False),
        ("UPPER", False),
        ("x:", False),
        (":tag", False),
        ("a//b", False),
        ("-a", False),
        ("http://registry.example/x", False),
        ("x@sha256:short", False),
        ("x:" + "t" * 129, False),
        ("a/" + "b" * 260, False),
        ("x;rm -rf /", False),
    ],
)
def test_is_image_reference(ref, ok):
    assert is_image_reference(ref) is ok


@pytest.mark.parametrize(
    "url, ip, out",
    [
        ("http://0.0.0.0:8888/", "127.20.1.2", "http://127.20.1.2:8888/"),
        ("http://0.0.0.0:8888/user/a/", "127.20.1.2", "http://127.20.1.2:8888/user/a/"),
        ("http://:8888", "127.20.1.2", "http://127.20.1.2:8888"),
    ],
)
def test_rewrite_service_url(url, ip, out):
    assert rewrite_service_url(url, ip) == out


POD = {
    "metadata": {"name": "jupyter-a", "namespace": "ns", "uid": "u-1"},
    "spec": {"containers": [{"name": "notebook", "image": "registry.example/x:1"}]},
}


@pytest.mark.parametrize(
    "container, root, argv",
    [
        ({}, False, ["/venv/bin/jupyterhub-singleuser", "--ip=127.16.0.1", "--port=8888"]),
        (
            {"args": ["jupyterhub-singleuser", "--debug"]},
            True,
            [
                "/venv/bin/jupyterhub-singleuser",
                "--debug",
                "--ip=127.16.0.1",
                "--port=8888",
                "--allow-root",
            ],
        ),
        ({"command": ["/bin/sh", "-c", "true"]}, True, ["/bin/sh", "-c", "true"]),
    ],
)
def test_container_argv(tmp_path, container, root, argv):
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "jupyterhub-singleuser").touch()
    got = container_argv(container, "127.16.0.1", 8888, bin_dir=bin_dir, root=root)
    assert [a.replace(str(tmp_path), "") for a in got] == argv


def test_container_env(tmp_path):
    c = {
        "name": "notebook",
        "image": "x",
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
        "env": [
            {"name": "JUPYTERHUB_SERVICE_URL", "value": "http://0.0.0.0:8888/user/a/"},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "t"}}},
            {"name": "MISSING", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "t"}}},
            {"name": "EMPTY", "value": None},
        ],
    }
    data = {("secret", "sec"): {"t": "s3cret"}, ("configmap", "cfg"): {"A": "1"}}
    env = container_env(
        POD,
        c,
        ip="127.16.0.9",
        home=tmp_path / "home",
        runtime_dir=tmp_path / "rt",
        bin_dir=tmp_path / "bin",
        lookup=lambda kind, ns, name: data.get((kind, name), {}) if ns == "ns" else {},
    )
    assert env["JUPYTERHUB_SERVICE_URL"] == "http://127.16.0.9:8888/user/a/"
    assert (env["IP"], env["NAME"], env["TOKEN"], env["CFG_A"]) == (
        "127.16.0.9",
        "jupyter-a",
        "s3cret",
        "1",
    )
    assert "MISSING" not in env and env["EMPTY"] == ""
    assert env["HOME"] == str(tmp_path / "home")
    assert env["JUPYTER_RUNTIME_DIR"] == str(tmp_path / "rt")
    assert env["PATH"].startswith(str(tmp_path / "bin"))
    assert "KUBECONFIG" not in env  # a pod sees no host environment


SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 1, "pattern": "^[a-z]+$"},
                "kind": {"type": "string", "enum": ["A", "B"]},
                "count": {"type": "integer", "minimum": 0},
                "tags": {"type": "array", "items": {"type": "string"}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "when": {"type": "string", "format": "date-time"},
                "port": {"x-kubernetes-int-or-string": True},
            },
        },
    },
}


def test_prune_drops_undeclared_fields_only():
    obj = {
        "apiVersion": "g/v1",
        "kind": "K",
        "metadata": {"name": "x", "anything": 1},
        "spec": {
            "name": "ok",
            "unknown": 1,
            "labels": {"a": "b"},
            "free": {"deep": {"x": 1}},
        },
        "extra": True,
    }
    assert prune(obj, SCHEMA, root=True) == {
        "apiVersion": "g/v1",
        "kind": "K",
        "metadata": {"name": "x", "anything": 1},
        "spec": {"name": "ok", "labels": {"a": "b"}, "free": {"deep": {"x": 1}}},
    }


@pytest.mark.parametrize(
    "spec, field, words",
    [
        ({"name": "ok"}, None, None),
        ({}, "spec.name", "Required value"),
        ({"name": 5}, "spec.name", "must be of type string"),
        ({"name": ""}, "spec.name", "at least 1 chars"),
        ({"name": "NO"}, "spec.name", "should match"),
        ({"name": "ok", "kind": "C"}, "spec.kind", 'Unsupported value: "C"'),
        ({"name": "ok", "count": -1}, "spec.count", "greater than or equal to 0"),
        ({"name": "ok", "count": True}, "spec.count", "must be of type integer"),
        ({"name": "ok", "tags": ["a", 2]}, "spec.tags[1]", "must be of type string"),
        ({"name": "ok", "labels": {"a": 1}}, "spec.labels.a", "must be of type string"),
        ({"name": "ok", "when": "yesterday"}, "spec.when", "date-time"),
        ({"name": "ok", "when": "2026-01-01T00:00:00Z"}, None, None),
        ({"name": "ok", "port": "http"}, None, None),
        ({"name": "ok", "port": [1]}, "spec.port", "integer or a string"),
    ],
)
def test_schema_validation(spec, field, words):
    problems = validate({"spec": spec}, SCHEMA)
    if field is None:
        assert problems == []
    else:
        assert any(f == field and words in m for f, m in problems), problems


def a_pod(*images: str, policy: str | None = None) -> dict:
    """A pod whose containers run ``images``; the second one is the notebook server."""
    containers = [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]
    if len(containers) > 1:
        containers[1]["ports"] = [{"name": "notebook-port", "containerPort": 8888}]
    spec = {"containers": containers} | ({"restartPolicy": policy} if policy else {})
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "spec": spec}


@pytest.mark.parametrize(
    "policy, code, again",
    [
        (None, 0, True),  # Always is the default
        ("Always", 0, True),
        ("Always", 1, True),
        ("OnFailure", 0, False),
        ("OnFailure", 137, True),
        ("Never", 0, False),
        ("Never", 1, False),
    ],
)
def test_restart_policy(policy, code, again):
    pod = a_pod("x", policy=policy)
    assert podstatus.restarts_after(pod, code) is again
    # a failed init container is restarted under any policy but Never
    assert podstatus.restarts_failed_init(pod) is (policy != "Never")


@pytest.mark.parametrize(
    "first, restarts, delay", [(10, 0, 10), (10, 1, 20), (10, 4, 160), (10, 5, 300), (0.2, 3, 1.6)]
)
def test_restart_back_off_doubles_up_to_five_minutes(first, restarts, delay):
    assert podstatus.restart_delay(first, restarts) == pytest.approx(delay)


@pytest.mark.parametrize("code, reason", [(0, "Completed"), (1, "Error"), (137, "Error")])
def test_exit_reason(code, reason):
    state = podstatus.exited(code, "2026-01-01T00:00:00Z")
    assert (state["exitCode"], state["reason"], state["startedAt"]) == (
        code,
        reason,
        "2026-01-01T00:00:00Z",
    )


@pytest.mark.parametrize(
    "images, malformed, missing",
    [
        (("a/b:1", "c/d:2"), None, None),
        (("a/b:1", "Bad Image"), "Bad Image", None),
        (("gone/x:1", "c/d:2"), None, "gone/x:1"),
        (("c/d:2", "gone/x@sha256:" + "0" * 64), None, "gone/x@sha256:" + "0" * 64),
    ],
)
def test_pull_decisions(images, malformed, missing):
    pod = a_pod(*images)
    assert podstatus.malformed_image(pod) == malformed
    assert podstatus.missing_image(pod, {"gone/x"}) == missing


def test_only_the_main_container_carries_the_turn():
    pod = a_pod("side/car:1", "course/nb:1")
    last = {"terminated": podstatus.exited(1, "2026-01-01T00:00:00Z")}
    waiting = podstatus.crash_loop(pod, 20)
    side, main = podstatus.container_statuses(pod, waiting, turn=podstatus.Turn(2, last))
    assert waiting["waiting"]["message"] == "back-off 20s restarting failed container=c1 pod=p"
    assert (main["state"], main["restartCount"], main["lastState"]) == (waiting, 2, last)
    assert main["imageID"].startswith("course/nb@sha256:") and not main["ready"]
    assert (side["restartCount"], side["lastState"], "running" in side["state"]) == (0, {}, True)
    # before its first start a waiting container has pulled no image yet
    (first,) = podstatus.container_statuses(a_pod("a/b:1"), {"waiting": {}})
    assert first["imageID"] == ""
