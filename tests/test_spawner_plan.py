"""CNBiSpawner's hooks on a real KubeSpawner and a real (static) ImageRegistry, in process.

No hub and no cluster: the spawner is built the way KubeSpawner's own tests build it
(``_mock=True`` supplies the hub object), the registry serves ``static_images`` with the
ImageStream watch off, and the pod is what KubeSpawner's ``get_pod_manifest`` builds
from the traits the plan set. The kubeconfig KubeSpawner insists on loading points at a
port nothing listens on; no request is made.
"""

from __future__ import annotations

import types
import uuid

import pytest
from kubernetes_asyncio.client import Configuration
from kubernetes_asyncio.config import kube_config
from tornado import web
from traitlets import TraitError
from traitlets.config import Config

from cnbi_spawner.images.registry import ImageRegistry
from cnbi_spawner.spawner import CNBiSpawner

DIGEST = "sha256:" + "c" * 64
STATIC = [
    {
        "name": "intro",
        "image": f"registry.example/courses/intro@{DIGEST}",
        "display_name": "Intro {course}",
        "aliases": ["uai_source-uai.intro"],
    },
    {"name": "cuda", "image": f"registry.example/courses/cuda@{DIGEST}", "requires_gpu": True},
]
PACKAGES = {
    "small": {"cpu_limit": 1, "mem_limit": "1G"},
    "big": {"cpu_limit": 4, "mem_limit": "4G"},
    "gpu": {
        "cpu_limit": 2,
        "mem_limit": "8G",
        "extra_resource_limits": {"nvidia.com/gpu": "1"},
        "node_selector": {"gpu": "yes"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
}


@pytest.fixture(autouse=True)
def offline_kubeconfig(tmp_path, monkeypatch):
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
        "contexts: [{name: x, context: {cluster: x, user: x}}]\n"
        "clusters: [{name: x, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: x, user: {token: t}}]\n"
    )
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    saved = Configuration.get_default_copy()
    yield
    Configuration.set_default(saved)


def make_spawner(*, anonymous=True, known_images=None, **spawner_config) -> CNBiSpawner:
    config = Config(
        {
            "ResourcePolicy": {
                "resource_packages": PACKAGES,
                "default_size": "small",
                "anonymous_max_size": "small",
            },
            "KubeSpawner": {
                "node_selector": {"pool": "users"},
                "tolerations": [{"key": "users", "operator": "Exists"}],
                "extra_labels": {"team": "courses"},
                **spawner_config,
            },
        }
    )
    groups = [types.SimpleNamespace(name="anonymous")] if anonymous else []
    user = types.SimpleNamespace(
        name=str(uuid.uuid4()) if anonymous else "teacher", id=7, url="/user/x/", groups=groups
    )
    if known_images is not None:  # the hub's registry, as its authenticator builds it
        config.CNBiSpawner.known_images = known_images
    spawner = CNBiSpawner(_mock=True, user=user, config=config)
    if known_images is not None:
        spawner.image_registry = ImageRegistry.for_hub(config)
    else:
        spawner.image_registry = ImageRegistry(
            config=Config({"ImageRegistry": {"static_images": STATIC, "watch_imagestreams": False}})
        )
    return spawner


async def test_plan_becomes_kubespawner_traits_and_pod():
    spawner = make_spawner()
    options = await spawner.options_from_query(
        {"course": ["UAI_SOURCE-UAI.INTRO"], "notebook": ["week {1}/a b.ipynb"]}
    )
    assert options == {"course": "intro", "notebook": "week {1}/a b.ipynb", "size": "small"}
    spawner.user_options = options
    await spawner.load_user_options()
    assert spawner.image == f"registry.example/courses/intro@{DIGEST}"
    assert spawner.default_url == "/lab/tree/week%20%7B1%7D/a%20b.ipynb"
    assert (spawner.cpu_limit, spawner.mem_limit) == (1.0, 2**30)

    pod = await spawner.get_pod_manifest()
    container = pod.spec.containers[0]
    assert container.image == f"registry.example/courses/intro@{DIGEST}"
    assert container.resources.limits == {"cpu": 1.0, "memory": 2**30}
    assert pod.metadata.labels["team"] == "courses"
    assert pod.metadata.labels["cnbi.meteor.zone/image"] == "intro"
    assert pod.metadata.annotations["cnbi.meteor.zone/notebook"] == "week {1}/a b.ipynb"
    assert pod.spec.node_selector == {"pool": "users"}
    env = {e.name: e.value for e in container.env}
    assert env["JUPYTERHUB_DEFAULT_URL"] == "/lab/tree/week%20%7B1%7D/a%20b.ipynb"
    assert spawner._starting_message() == "Starting course image Intro {course} (intro)"


async def test_sizes_replace_each_other_on_top_of_the_configured_values():
    spawner = make_spawner(anonymous=False)
    spawner.user_options = {"course": "cuda"}
    await spawner.load_user_options()
    assert spawner.extra_resource_limits == {"nvidia.com/gpu": "1"}
    assert spawner.node_selector == {"pool": "users", "gpu": "yes"}
    assert [t["key"] for t in spawner.tolerations] == ["users", "nvidia.com/gpu"]
    assert spawner.user_options == {"course": "cuda", "size": "gpu"}  # canonical now
    pod = await spawner.get_pod_manifest()
    assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"

    spawner.user_options = {"course": "intro", "size": "big"}  # a later start, another size
    await spawner.load_user_options()
    assert spawner.extra_resource_limits == {}
    assert spawner.node_selector == {"pool": "users"}
    assert [t["key"] for t in spawner.tolerations] == ["users"]
    assert spawner.cpu_limit == 4.0


@pytest.mark.parametrize(
    "options,status,words",
    [
        ({"course": ["intro"], "size": ["big"]}, 403, "Guest users"),
        ({"course": ["nope"]}, 404, "There is no course image"),
        ({"course": [b"\xff"]}, 400, "UTF-8"),
        ({"image": ["registry.example/evil:latest"]}, 404, "There is no course image"),
        ({"course": ["intro"], "notebook": ["/etc/passwd"]}, 400, "relative"),
    ],
)
async def test_refusals_are_http_errors_with_our_message(options, status, words):
    spawner = make_spawner()
    with pytest.raises(web.HTTPError) as info:
        await spawner.options_from_query(options)
    assert info.value.status_code == status
    assert words in info.value.jupyterhub_message
    spawner.user_options = {k: v[0] for k, v in options.items()}  # the same, via the REST API
    with pytest.raises(web.HTTPError) as info:
        await spawner.load_user_options()
    assert info.value.status_code == status
    assert spawner.image != f"registry.example/courses/intro@{DIGEST}"  # nothing applied


async def test_form_lists_only_what_this_user_may_pick():
    html = await make_spawner().get_options_form()
    assert 'value="intro"' in html and 'value="cuda"' in html
    assert 'value="small"' in html and 'value="big"' not in html  # guest cap
    assert "Intro {course}" in html
    html = await make_spawner(anonymous=False).get_options_form()
    assert 'value="big"' in html and 'value="gpu"' in html


async def test_known_images_is_a_one_line_migration():
    spawner = make_spawner(
        known_images={"Clustering_And_Descriptive_AI": f"registry.example/ol@{DIGEST}"}
    )
    options = await spawner.options_from_query({"course": ["clustering_and_descriptive_ai"]})
    assert options["course"] == "clustering_and_descriptive_ai"
    assert spawner.image_registry.watch_imagestreams is False
    spawner.user_options = options
    await spawner.load_user_options()
    assert spawner.image == f"registry.example/ol@{DIGEST}"


async def test_registry_not_synced_is_503_with_retry_after(tmp_path):
    spawner = make_spawner()
    kubeconfig = kube_config.KUBE_CONFIG_DEFAULT_LOCATION  # port 9: the LIST never succeeds
    registry = ImageRegistry(
        config=Config({"ImageRegistry": {"kubeconfig": kubeconfig, "first_sync_timeout": 0.3}})
    )
    spawner.image_registry = registry
    try:
        with pytest.raises(web.HTTPError) as info:
            await spawner.options_from_query({"course": ["intro"]})
        assert info.value.status_code == 503
        assert info.value.headers == {"Retry-After": "5"}
        assert "still loading" in info.value.jupyterhub_message
        assert "still loading" in await spawner.get_options_form()  # never an empty form
    finally:
        await registry.stop()


async def test_bad_resource_config_is_a_plain_500_and_a_clear_log_line():
    spawner = make_spawner()
    spawner.config.ResourcePolicy.default_size = "nope"
    with pytest.raises(web.HTTPError) as info:
        await spawner.options_from_query({"course": ["intro"]})
    assert info.value.status_code == 500
    assert "operator" in info.value.jupyterhub_message


async def test_known_images_apply_when_the_hub_builds_its_registry():
    """The authenticator builds the hub's registry at start, before any spawner exists; a
    spawner of that hub gets the same object, and nothing reconfigures it per launch."""
    config = Config()
    config.CNBiSpawner.known_images = {"Intro_Course": f"registry.example/ol@{DIGEST}"}
    ImageRegistry.forget_hub_registries()
    try:
        registry = ImageRegistry.for_hub(config)
        assert registry.watch_imagestreams is False and registry.synced
        assert registry.resolve("INTRO_COURSE").image == f"registry.example/ol@{DIGEST}"
        assert "ImageRegistry" not in config  # the hub's config is left alone
        user = types.SimpleNamespace(name="teacher", id=7, url="/user/x/", groups=[])
        spawner = CNBiSpawner(_mock=True, user=user, config=config)
        assert spawner._registry() is registry
        other = Config({"ImageRegistry": {"watch_imagestreams": False}})
        assert ImageRegistry.for_hub(other) is not registry  # other settings: not ignored
    finally:
        ImageRegistry.forget_hub_registries()


async def test_moved_spawner_setting_is_refused_with_its_new_place():
    config = Config({"CNBiSpawner": {"registry_wait_timeout": 1.0}})
    user = types.SimpleNamespace(name="teacher", id=7, url="/user/x/", groups=[])
    with pytest.raises(TraitError, match="ImageRegistry.first_sync_timeout"):
        CNBiSpawner(_mock=True, user=user, config=config)


async def test_events_are_kubespawners_events_picked_before_sorting(monkeypatch):
    """``CNBiSpawner.events`` (filter, then sort) returns exactly KubeSpawner's list (sort
    everything, then filter), with the ``_last_event`` marker, for a namespace full of
    other pods' events with equal and mixed timestamps."""
    import random

    from kubespawner import KubeSpawner
    from kubespawner.spawner import EventReflector

    spawner = make_spawner()
    rng = random.Random(7)
    pods = [spawner.pod_name, "jupyter-other", "jupyter-third"]
    resources = {}
    for i in range(300):
        stamp = f"2026-12-01T10:00:{rng.randrange(60):02d}Z"
        low_res = rng.random() < 0.5  # KubeSpawner sorts by lastTimestamp, else eventTime
        resources[f"uid-{i}"] = {
            "metadata": {"uid": f"uid-{i}"},
            "involvedObject": {"name": rng.choice(pods)},
            "lastTimestamp": stamp if low_res else None,
            "eventTime": None if low_res else stamp.replace("Z", ".000000Z"),
        }
    reflector = EventReflector.__new__(EventReflector)
    reflector.resources = resources
    monkeypatch.setitem(CNBiSpawner.reflectors, spawner._get_reflector_key("events"), reflector)

    stock = KubeSpawner.events.fget(spawner)
    assert stock and len(stock) < len(resources)  # this pod's, not the namespace's
    assert spawner.events == stock
    spawner._last_event = stock[len(stock) // 2]["metadata"]["uid"]  # what start() sets
    after = KubeSpawner.events.fget(spawner)
    assert 0 < len(after) < len(stock)
    assert spawner.events == after
