"""The deployment files in ``helm-values/``: parse, validate, and agree with the code.

- Every YAML file parses; every Kubernetes manifest validates against the Kubernetes
  OpenAPI schemas (``kubernetes-validate``, offline) for the oldest Kubernetes the
  Zero to JupyterHub chart supports and the newest known.
- RBAC grants exactly what the hub pod needs, namespaced only.
- The CRDs accept the example objects (their openAPIV3Schema, via jsonschema).
- The chart values validate against a subset of the z2jh chart's values schema that we
  wrote down here (key names and types of the parts we use; unknown keys are errors),
  alone and with the OpenShift overlay merged the way Helm merges values files.
- ``hub.extraEnv`` follows the chart's rendering rules, sets every knob that
  ``jupyterhub_config.py`` reads, and sets nothing that nobody reads.
- ``hub.extraConfig`` really loads ``jupyterhub_config.py`` in a config file laid out
  like the chart's (services/roles from ``hub.services``/``hub.loadRoles`` first).

No ``helm`` binary here (and the chart cannot be downloaded), so nothing is rendered
with ``helm template``.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from traitlets.config.loader import PyFileConfigLoader

ROOT = Path(__file__).resolve().parent.parent
HELM = ROOT / "helm-values"
VALUES = HELM / "values.yaml"
OPENSHIFT = HELM / "openshift" / "values.yaml"
CONFIG = ROOT / "cnbi_spawner" / "config" / "jupyterhub_config.py"
VALUES_FILES = {VALUES, OPENSHIFT}
K8S_VERSIONS = ("1.32.0", "1.37.0")  # z2jh's kubeVersion floor, newest schema bundled
# env the chart's hub container defines before hub.extraEnv (templates/hub/deployment.yaml)
CHART_HUB_ENV = ("PYTHONUNBUFFERED", "HELM_RELEASE_NAME", "POD_NAMESPACE", "CONFIGPROXY_AUTH_TOKEN")
# CNBI_* knobs of jupyterhub_config.py that do not apply under the chart
NOT_FOR_Z2JH = {
    "CNBI_HUB_IP": "the chart binds the hub itself (hub_bind_url)",
    "CNBI_HUB_PORT": "the chart binds the hub itself (hub_bind_url)",
    "CNBI_PROXY_COMMAND": "the chart runs the proxy in its own pod",
}
# optional knobs: documented in values.yaml as a commented example, not set by default
OPTIONAL = {"CNBI_LINK_SIGNING_KEY"}


def yaml_files() -> list[Path]:
    return sorted(HELM.rglob("*.yaml"))


def manifests() -> list[tuple[str, dict]]:
    out = []
    for path in yaml_files():
        if path in VALUES_FILES:
            continue
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc is not None:
                out.append((f"{path.relative_to(HELM)}#{i}", doc))
    return out


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def helm_merge(base: dict, overlay: dict) -> dict:
    """Merge values files like Helm: maps merge, other values replace, null deletes."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = helm_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def variants() -> dict[str, dict]:
    base = load(VALUES)
    return {"kubernetes": base, "openshift": helm_merge(base, load(OPENSHIFT))}


# --- parse + Kubernetes schemas -------------------------------------------------------


def test_helm_values_has_the_expected_files():
    names = {str(p.relative_to(HELM)) for p in yaml_files()}
    assert {
        "values.yaml",
        "rbac.yaml",
        "rbac-builds.yaml",
        "rbac-reservations.yaml",
        "rbac-reservations-nodes.yaml",
        "openshift/values.yaml",
        "openshift/route.yaml",
        "crds/customnbimages.meteor.zone.yaml",
        "crds/imagestreams.image.openshift.io.yaml",
        "crds/coursereservations.cnbi.meteor.zone.yaml",
    } <= names
    assert (HELM / "README.md").is_file()


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(HELM)))
def test_every_yaml_file_parses_to_mappings(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path} is empty"
    assert all(isinstance(d, dict) for d in docs)
    # container images are named with registry.example only (never a real registry)
    for ref in image_refs(docs):
        assert ref.startswith("registry.example/"), f"{path}: {ref}"


def image_refs(node: object, key: str = "") -> list[str]:
    """Image names in a YAML tree: ``image: ref`` and ``image: {name: ref}`` (z2jh)."""
    if isinstance(node, dict):
        if key in {"image", "extraImages_item"} and isinstance(node.get("name"), str):
            return [node["name"]]
        out = []
        for k, v in node.items():
            out += image_refs(v, "extraImages_item" if key == "extraImages" else k)
        return out
    if isinstance(node, list):
        return [r for item in node for r in image_refs(item, key)]
    return [node] if key == "image" and isinstance(node, str) else []


CORE_GROUPS = (
    "v1",
    "rbac.authorization.k8s.io/",
    "apiextensions.k8s.io/",
    "apps/",
    "networking.k8s.io/",
)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name,doc", manifests(), ids=[n for n, _ in manifests()])
def test_kubernetes_manifests_validate(name, doc, version):
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    api = doc.get("apiVersion", "")
    assert api and doc.get("kind"), f"{name} is not a Kubernetes object"
    if not api.startswith(CORE_GROUPS):
        assert api == "route.openshift.io/v1", f"{name}: no schema for {api}"
        return  # OpenShift Route: checked in test_openshift_route
    kv.validate(doc, version, strict=True)


def test_kubernetes_validate_rejects_a_broken_role():
    """The validator is live: a list written as a string is an error."""
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    role = next(d for _, d in manifests() if d["kind"] == "Role")
    bad = copy.deepcopy(role)
    bad["rules"][0]["resources"] = "imagestreams"
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, K8S_VERSIONS[-1], strict=True)


# --- RBAC -----------------------------------------------------------------------------


def hub_grants() -> dict[tuple[str, str], set[str]]:
    """(apiGroup, resource) -> verbs granted to the hub service account by our Roles."""
    docs = [d for _, d in manifests()]
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Role"}
    grants: dict[tuple[str, str], set[str]] = {}
    for binding in (d for d in docs if d["kind"] == "RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["roleRef"]["name"] in roles, binding["metadata"]["name"]
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "hub"}] or all(
            s["kind"] == "ServiceAccount" and s["name"] == "hub" for s in binding["subjects"]
        )
        for rule in roles[binding["roleRef"]["name"]]["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    grants.setdefault((group, resource), set()).update(rule["verbs"])
    return grants


def test_rbac_is_namespaced_only():
    """The one cluster-scoped grant is the optional, read-only node listing of
    reservations' capacity (rbac-reservations-nodes.yaml)."""
    cluster = [(n, d) for n, d in manifests() if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    assert {n.split("#")[0] for n, _ in cluster} == {"rbac-reservations-nodes.yaml"}
    (role,) = [d for _, d in cluster if d["kind"] == "ClusterRole"]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]}]


@pytest.mark.parametrize(
    "group,resource,verbs",
    [
        # registry (watch) + notebook index (service/indexer.py: JSON patch of a tag)
        ("image.openshift.io", "imagestreams", {"get", "list", "watch", "patch"}),
        # builds API (rbac-builds.yaml) + rebuild loop (service/rebuilds.py: GET + PUT)
        ("meteor.zone", "customnbimages", {"get", "list", "watch", "create", "delete", "update"}),
        ("meteor.zone", "customnbimages/status", {"update"}),
        # class reservations (rbac-reservations.yaml, service/reservations.py)
        ("cnbi.meteor.zone", "coursereservations", {"get", "list", "watch", "create", "delete"}),
        ("cnbi.meteor.zone", "coursereservations/status", {"get", "update", "patch"}),
        # the bookings' ledgers (service/reservation_ledger.py; get/update by name only)
        ("", "configmaps", {"create", "get", "update"}),
        ("", "persistentvolumeclaims", {"get", "list", "delete"}),
        # launch diagnostics (launch_guard.py), the sessions API (service/sessions.py) and
        # the notebook index's pods (service/indexer.py: create, read, delete)
        ("", "pods", {"get", "list", "create", "delete"}),
        ("", "pods/log", {"get"}),
        ("", "events", {"list", "create"}),
    ],
)
def test_hub_service_account_gets_exactly_what_it_needs(group, resource, verbs):
    assert hub_grants()[(group, resource)] == verbs


def test_the_booking_ledgers_are_the_only_configmaps_read_or_written():
    from cnbi_spawner.reservations import Capacity
    from cnbi_spawner.service.reservation_ledger import ledger_name

    rules = [
        r for n, d in manifests() if d["kind"] == "Role" for r in d["rules"]
        if "configmaps" in r["resources"]
    ]  # fmt: skip
    named = [r for r in rules if set(r["verbs"]) & {"get", "update"}]
    assert all(r["verbs"] == ["create"] for r in rules if r not in named)
    groups = {Capacity({}, {"gpu": "gpu"}).group(s) for s in ("small", "gpu")}
    assert [r["resourceNames"] for r in named] == [sorted(ledger_name(g) for g in groups)]


def test_notebook_index_pods_are_isolated():
    (policy,) = [d for _, d in manifests() if d["kind"] == "NetworkPolicy"]
    from cnbi_spawner.images.notebook_index import ROLE, ROLE_LABEL

    assert policy["spec"]["podSelector"] == {"matchLabels": {ROLE_LABEL: ROLE}}
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in policy["spec"] and "egress" not in policy["spec"]  # deny all


def test_hub_service_account_gets_nothing_else():
    assert set(hub_grants()) == {
        ("image.openshift.io", "imagestreams"),
        ("meteor.zone", "customnbimages"),
        ("meteor.zone", "customnbimages/status"),
        ("cnbi.meteor.zone", "coursereservations"),
        ("cnbi.meteor.zone", "coursereservations/status"),
        ("", "configmaps"),
        ("", "persistentvolumeclaims"),
        ("", "pods"),
        ("", "pods/log"),
        ("", "events"),
    }


# --- CRDs -----------------------------------------------------------------------------


def crd(group: str) -> dict:
    return next(
        d
        for _, d in manifests()
        if d["kind"] == "CustomResourceDefinition" and d["spec"]["group"] == group
    )


@pytest.mark.parametrize(
    "group,version,plural,kind",
    [
        ("meteor.zone", "v1alpha1", "customnbimages", "CustomNBImage"),
        ("image.openshift.io", "v1", "imagestreams", "ImageStream"),
        ("cnbi.meteor.zone", "v1alpha1", "coursereservations", "CourseReservation"),
    ],
)
def test_crds_serve_what_the_code_uses(group, version, plural, kind):
    spec = crd(group)["spec"]
    assert spec["scope"] == "Namespaced"
    assert (spec["names"]["plural"], spec["names"]["kind"]) == (plural, kind)
    served = {v["name"]: v for v in spec["versions"] if v["served"]}
    assert version in served and served[version]["storage"]
    assert "status" in served[version].get("subresources", {})


def crd_schema(group: str) -> dict:
    version = next(v for v in crd(group)["spec"]["versions"] if v["storage"])
    return version["schema"]["openAPIV3Schema"]


def fixture_objects(kind_dir: str) -> list[tuple[str, dict]]:
    out = []
    for path in sorted((ROOT / "tests" / "fixtures" / kind_dir).glob("*.yaml")):
        out += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return out


@pytest.mark.parametrize(
    "group,name,obj",
    [("meteor.zone", n, o) for n, o in fixture_objects("customnbimages")]
    + [("image.openshift.io", n, o) for n, o in fixture_objects("imagestreams")],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_crd_schema_accepts_the_example_objects(group, name, obj):
    jsonschema.validate(obj, crd_schema(group))


def test_customnbimage_crd_rejects_a_bad_object():
    obj = copy.deepcopy(fixture_objects("customnbimages")[0][1])
    obj["spec"]["packageVersions"] = "numpy"  # a list in the schema
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(obj, crd_schema("meteor.zone"))


# --- chart values against (our transcription of) the z2jh values schema ---------------

ANY: dict = {}
STR = {"type": "string"}
STR_OR_NULL = {"type": ["string", "null"]}
INT_OR_NULL = {"type": ["integer", "null"]}
BOOL = {"type": "boolean"}
QUANTITY = {"type": ["number", "string", "null"]}


def closed(properties: dict, **extra) -> dict:
    return {"type": "object", "additionalProperties": False, "properties": properties, **extra}


def keys(*names: str, **typed) -> dict:
    """Closed object: ``names`` allowed with any value, ``typed`` with a schema."""
    return closed({**{n: ANY for n in names}, **typed})


IMAGE = closed(
    {
        "name": STR,
        "tag": STR,
        "pullPolicy": {"enum": [None, "", "IfNotPresent", "Always", "Never"]},
        "pullSecrets": {"type": "array"},
    },
    required=["name", "tag"],
)
NETWORK_POLICY = keys(
    "egressAllowRules",
    "interNamespaceAccessLabels",
    "allowedIngressPorts",
    enabled=BOOL,
    ingress={"type": "array"},
    egress={"type": "array"},
)
SECURITY_CONTEXT = {"type": "object", "additionalProperties": True}
ENV_VALUE = {
    "anyOf": [
        STR,
        {
            "type": "object",
            "additionalProperties": False,
            "properties": {"name": STR, "value": STR, "valueFrom": {"type": "object"}},
        },
    ]
}
EXTRA_FILES = {
    "type": "object",
    "additionalProperties": closed(
        {
            "mountPath": STR,
            "data": {"type": "object"},
            "stringData": STR,
            "binaryData": STR,
            "mode": {"type": "integer"},
        },
        required=["mountPath"],
    ),
}
Z2JH_VALUES_SUBSET = closed(
    {
        **{
            k: ANY
            for k in (
                "fullnameOverride nameOverride enabled custom imagePullSecret imagePullSecrets "
                "httpRoute debug global"
            ).split()
        },
        "hub": keys(
            *(
                "revisionHistoryLimit service baseUrl cookieSecret initContainers nodeSelector "
                "tolerations consecutiveFailureLimit deploymentStrategy annotations command args "
                "extraContainers extraVolumes extraVolumeMounts resources lifecycle pdb "
                "allowNamedServers namedServerLimitPerUser authenticatePrometheus "
                "redirectToServer shutdownOnLogout templatePaths templateVars livenessProbe "
                "readinessProbe existingSecret serviceAccount extraPodSpec"
            ).split(),
            image=IMAGE,
            config={
                "type": "object",
                "additionalProperties": False,
                "patternProperties": {"^[A-Z]": {"type": "object"}},
            },
            concurrentSpawnLimit={"type": ["integer", "null"], "minimum": 0},
            activeServerLimit=INT_OR_NULL,
            extraFiles=EXTRA_FILES,
            extraConfig={"type": "object", "additionalProperties": STR},
            extraEnv={
                "anyOf": [
                    {"type": "object", "additionalProperties": ENV_VALUE},
                    {"type": "array", "items": {"type": "object", "required": ["name"]}},
                ]
            },
            # entries are open in the chart's schema (any JupyterHub service/role key)
            services={
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "properties": {
                        "display": BOOL,
                        "url": STR,
                        "command": {"type": ["array", "string"]},
                        "oauth_no_confirm": BOOL,
                    },
                },
            },
            loadRoles={
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "properties": {
                        k: {"type": "array", "items": STR}
                        for k in ("scopes", "users", "groups", "services")
                    },
                },
            },
            labels={"type": "object", "additionalProperties": STR},
            networkPolicy=NETWORK_POLICY,
            db=keys(
                "upgrade",
                "pvc",
                "url",
                "password",
                type={"enum": ["sqlite-pvc", "sqlite-memory", "mysql", "postgres", "other"]},
            ),
            podSecurityContext=SECURITY_CONTEXT,
            containerSecurityContext=SECURITY_CONTEXT,
        ),
        "rbac": keys(create=BOOL),
        "proxy": keys(
            "secretToken",
            "annotations",
            "deploymentStrategy",
            "traefik",
            "secretSync",
            "labels",
            "https",
            service=keys(
                "labels",
                "annotations",
                "nodePorts",
                "disableHttpPort",
                "extraPorts",
                "externalIPs",
                "loadBalancerIP",
                "loadBalancerSourceRanges",
                "ipFamilyPolicy",
                "ipFamilies",
                type={"enum": ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"]},
            ),
            chp=keys(
                "revisionHistoryLimit",
                "containerSecurityContext",
                "image",
                "command",
                "extraCommandLineFlags",
                "livenessProbe",
                "readinessProbe",
                "resources",
                "defaultTarget",
                "errorTarget",
                "extraEnv",
                "nodeSelector",
                "tolerations",
                "pdb",
                "extraPodSpec",
                networkPolicy=NETWORK_POLICY,
            ),
        ),
        "ingress": keys(
            "annotations",
            "ingressClassName",
            "pathSuffix",
            "pathType",
            "extraPaths",
            enabled=BOOL,
            hosts={"type": "array", "items": STR},
            tls={"type": "array", "items": keys("secretName", hosts={"type": "array"})},
        ),
        "singleuser": keys(
            *(
                "podNameTemplate extraTolerations nodeSelector extraNodeAffinity "
                "extraPodAffinity extraPodAntiAffinity networkTools events extraAnnotations "
                "extraLabels extraFiles extraEnv lifecycleHooks initContainers extraContainers "
                "allowPrivilegeEscalation serviceAccountName extraResource extraPodConfig "
                "profileList"
            ).split(),
            image=IMAGE,
            cmd={"type": ["array", "string", "null"]},
            defaultUrl=STR_OR_NULL,
            startTimeout={"type": "integer"},
            uid=INT_OR_NULL,
            fsGid=INT_OR_NULL,
            cpu=keys(limit={"type": ["number", "null"]}, guarantee={"type": ["number", "null"]}),
            memory=keys(limit=QUANTITY, guarantee=QUANTITY),
            storage=keys(
                "extraLabels",
                "extraVolumes",
                "extraVolumeMounts",
                "static",
                "capacity",
                "homeMountPath",
                "dynamic",
                type={"enum": ["dynamic", "static", "none"]},
            ),
            cloudMetadata=keys("ip", blockWithIptables=BOOL),
            networkPolicy=NETWORK_POLICY,
        ),
        "scheduling": keys(
            "podPriority",
            "corePods",
            "userPods",
            userScheduler={"type": "object", "properties": {"enabled": BOOL}},
            userPlaceholder={
                "type": "object",
                "properties": {"enabled": BOOL, "replicas": {"type": "integer"}},
            },
        ),
        "prePuller": keys(
            "revisionHistoryLimit",
            "labels",
            "annotations",
            "resources",
            "extraTolerations",
            "pullProfileListImages",
            containerSecurityContext=SECURITY_CONTEXT,
            hook={"type": "object", "properties": {"enabled": BOOL}},
            continuous={"type": "object", "properties": {"enabled": BOOL}},
            extraImages={
                "type": "object",
                "additionalProperties": closed(
                    {"name": STR, "tag": STR, "pullPolicy": ANY}, required=["name", "tag"]
                ),
            },
            pause=keys(containerSecurityContext=SECURITY_CONTEXT, image=IMAGE),
        ),
        "cull": keys(
            "users",
            "adminUsers",
            "removeNamedServers",
            "timeout",
            "every",
            "concurrency",
            "maxAge",
            enabled=BOOL,
        ),
    }
)


@pytest.mark.parametrize("variant", ["kubernetes", "openshift"])
def test_values_validate_against_the_z2jh_schema_subset(variant):
    jsonschema.validate(variants()[variant], Z2JH_VALUES_SUBSET)


@pytest.mark.parametrize(
    "path,value",
    [
        (("hub", "extraEnvs"), {}),  # misspelt key
        (("hub", "extraEnv", "CNBI_CULL_EVERY"), 60),  # the chart fails on a non-string
        (("hub", "image", "tag"), 1),
        (("hub", "config", "jupyterHub"), {"x": 1}),  # section names start upper-case
        (("hub", "db", "type"), "postgresql"),
        (("singleuser", "storage", "type"), "ephemeral"),
        (("prePuller", "extraImages", "x"), {"name": "registry.example/x"}),  # tag missing
        (("cull", "enable"), False),
    ],
)
def test_the_schema_subset_rejects_mistakes(path, value):
    values = copy.deepcopy(load(VALUES))
    node = values
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(values, Z2JH_VALUES_SUBSET)


def test_prepuller_output_of_cnbi_hub_images_fits_the_values():
    """``cnbi-hub images --prepuller`` output is a valid values file for the chart."""
    from cnbi_spawner.images.cli import prepuller_values
    from cnbi_spawner.images.imagestreams import parse_imagestream

    images = [i for _, obj in fixture_objects("imagestreams") for i in parse_imagestream(obj)]
    generated = prepuller_values(images)
    assert generated["prePuller"]["extraImages"], "the fixtures have launchable images"
    for variant in variants().values():
        jsonschema.validate(helm_merge(variant, generated), Z2JH_VALUES_SUBSET)


# --- hub.extraEnv: chart rendering rules and knob coverage -----------------------------


def rendered_env(values: dict) -> list[dict]:
    """hub.extraEnv as the chart renders it into the hub container (sorted by name)."""
    extra = values["hub"]["extraEnv"]
    env = [{"name": n, "value": "x"} for n in CHART_HUB_ENV]
    for name in sorted(extra):
        value = extra[name]
        if isinstance(value, str):
            env.append({"name": name, "value": value})
        else:
            assert isinstance(value, dict), f"{name}: the chart accepts strings and maps only"
            env.append({"name": name, **value})
    return env


@pytest.mark.parametrize("variant", ["kubernetes", "openshift"])
def test_env_references_are_defined_before_use(variant):
    defined: set[str] = set()
    for item in rendered_env(variants()[variant]):
        for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", item.get("value", "")):
            assert ref in defined, f"{item['name']} uses $({ref}) before it is defined"
        defined.add(item["name"])


@pytest.mark.parametrize("variant", ["kubernetes", "openshift"])
def test_rendered_hub_env_is_a_valid_container_env(variant):
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hub"},
        "spec": {
            "containers": [
                {
                    "name": "hub",
                    "image": "registry.example/x:1",
                    "env": rendered_env(variants()[variant]),
                }
            ]
        },
    }
    kv.validate(pod, K8S_VERSIONS[-1], strict=True)


def config_env_names() -> set[str]:
    assert CONFIG.is_file(), "jupyterhub_config.py (the production config) is missing"
    return set(re.findall(r"""\benv\w*\(\s*["'](CNBI_\w+)["']""", CONFIG.read_text()))


def test_every_config_knob_is_set_in_hub_extra_env():
    names = config_env_names()
    assert names, "jupyterhub_config.py reads no CNBI_* variable?"
    values_text = VALUES.read_text()
    set_in_values = set(load(VALUES)["hub"]["extraEnv"])
    missing = names - set_in_values - set(NOT_FOR_Z2JH) - OPTIONAL
    assert not missing, f"knobs of jupyterhub_config.py without a value in hub.extraEnv: {missing}"
    for name in OPTIONAL:
        assert name in values_text, f"{name} is not even mentioned in values.yaml"


def test_hub_extra_env_sets_nothing_nobody_reads():
    package_text = "\n".join(p.read_text() for p in (ROOT / "cnbi_spawner").rglob("*.py"))
    for variant, values in variants().items():
        extra = values["hub"]["extraEnv"]
        refs = set(re.findall(r"\$\((\w+)\)", yaml.safe_dump(extra)))
        for name in extra:
            read = name in config_env_names() or f'"{name}"' in package_text
            assert read or name in refs, f"{variant}: {name} is set but read by nobody"


def env_value(values: dict, name: str) -> str:
    return values["hub"]["extraEnv"][name]


@pytest.mark.parametrize("variant", ["kubernetes", "openshift"])
def test_chart_keys_agree_with_the_cnbi_env_that_overrides_them(variant):
    v = variants()[variant]
    assert str(v["hub"]["concurrentSpawnLimit"]) == env_value(v, "CNBI_CONCURRENT_SPAWN_LIMIT")
    assert str(v["hub"]["activeServerLimit"]) == env_value(v, "CNBI_ACTIVE_SERVER_LIMIT")
    assert str(v["singleuser"]["startTimeout"]) == env_value(v, "CNBI_START_TIMEOUT")
    # storage: the chart mounts the PVC, KubeSpawner (CNBI_STORAGE) creates it
    dynamic = v["singleuser"]["storage"]["type"] == "dynamic"
    assert dynamic == (env_value(v, "CNBI_STORAGE") == "true")
    # our service culls; the chart's idle culler must not run too
    assert v["cull"]["enabled"] is False
    assert v["hub"]["config"]["JupyterHub"]["spawner_class"] == "cnbi"
    assert v["hub"]["config"]["JupyterHub"]["authenticator_class"] == "tmplogin"
    # proxies appending X-Forwarded-For: CHP, plus the ingress controller or the router
    fronted = v["ingress"]["enabled"] or variant == "openshift"
    assert env_value(v, "CNBI_TRUSTED_PROXY_COUNT") == str(1 + int(fronted))


@pytest.mark.parametrize("variant", ["kubernetes", "openshift"])
def test_proxy_may_reach_the_cnbi_service_port(variant):
    v = variants()[variant]
    port = int(env_value(v, "CNBI_SERVICE_URL").rsplit(":", 1)[1].strip("/"))
    rules = v["hub"]["networkPolicy"]["ingress"]
    allowed = [
        rule["from"] for rule in rules if any(p.get("port") == port for p in rule.get("ports", []))
    ]
    assert any(
        {"podSelector": {"matchLabels": {"component": "proxy"}}} in sources for sources in allowed
    )


# --- hub.extraConfig really loads jupyterhub_config.py ---------------------------------


def z2jh_like_config_file(values: dict, tmp_path: Path, config_path: Path) -> Path:
    """A config file laid out like the chart's jupyterhub_config.py, for what we use.

    The chart first builds c.JupyterHub.services / load_roles from hub.services and
    hub.loadRoles (adding a name and an api_token), applies hub.config, then runs each
    hub.extraConfig entry in its own namespace (``exec``).
    """
    hub = values["hub"]
    extra_files = {f["mountPath"]: config_path for f in hub["extraFiles"].values()}
    services = [
        {"name": k, **v, "api_token": f"chart-token-{k}"} for k, v in hub["services"].items()
    ]
    roles = [{"name": k, **v} for k, v in hub["loadRoles"].items()]
    lines = [
        "c = get_config()",
        f"c.JupyterHub.services = {services!r}",
        f"c.JupyterHub.load_roles = {roles!r}",
    ]
    for section, cfg in hub["config"].items():
        lines.append(f"c[{section!r}].update({cfg!r})")
    for key, code in sorted(hub["extraConfig"].items()):
        for mount, real in extra_files.items():
            code = code.replace(mount, str(real))
        lines.append(f"exec({code!r})  # hub.extraConfig.{key}")
    path = tmp_path / "z2jh_jupyterhub_config.py"
    path.write_text("\n".join(lines) + "\n")
    return path


def resolved_env(values: dict) -> dict[str, str]:
    fields = {"metadata.namespace": "jhub", "status.podIP": "10.1.2.3"}
    env = {"POD_NAMESPACE": "jhub"}
    for item in rendered_env(values):
        if item["name"] in CHART_HUB_ENV:
            continue
        if "valueFrom" in item:
            env[item["name"]] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], item["value"])
    return env


@pytest.mark.parametrize("variant", ["kubernetes", "openshift"])
def test_extra_config_loads_the_production_config(variant, tmp_path, monkeypatch):
    values = variants()[variant]
    for name in [n for n in __import__("os").environ if n.startswith("CNBI_")]:
        monkeypatch.delenv(name)
    for name, value in resolved_env(values).items():
        monkeypatch.setenv(name, value)
    path = z2jh_like_config_file(values, tmp_path, CONFIG)
    cfg = PyFileConfigLoader(path.name, path=str(tmp_path)).load_config()

    assert cfg.JupyterHub.spawner_class == "cnbi"
    assert cfg.JupyterHub.authenticator_class == "tmplogin"
    assert cfg.KubeSpawner.namespace == "jhub"
    assert cfg.ImageRegistry.namespaces == ["jhub"]
    services = {s["name"]: s for s in cfg.JupyterHub.services}
    assert len(services) == len(cfg.JupyterHub.services), "duplicate service names"
    cnbi = services["cnbi"]
    assert cnbi["url"] == "http://10.1.2.3:10101"
    assert cnbi["command"][:2] == ["cnbi-hub", "service"] and str(CONFIG) in cnbi["command"]
    assert cnbi["api_token"] == "chart-token-cnbi"  # hub.services entry merged in
    assert cnbi["environment"]["CNBI_NAMESPACE"] == "jhub"
    roles = {r["name"]: r for r in cfg.JupyterHub.load_roles}
    assert "cnbi" in roles["cnbi-service"]["services"]
    authors = roles["cnbi-course-authors"]
    assert "custom:cnbi:builds" in authors["scopes"]
    assert authors["groups"] == ["course-authors"] and authors["users"] == []
    assert "custom:cnbi:builds" in cfg.JupyterHub.custom_scopes


def test_the_charts_admin_users_may_book_classes(tmp_path, monkeypatch):
    """JupyterHub's admin role has no custom scopes and cannot be given any
    (jupyterhub/roles.py), so the admins named in hub.config get the instructors' role."""
    for name in [n for n in __import__("os").environ if n.startswith("CNBI_")]:
        monkeypatch.delenv(name)
    values = copy.deepcopy(variants()["kubernetes"])
    values["hub"]["config"]["Authenticator"] = {"admin_users": ["boss", "ada"]}
    path = z2jh_like_config_file(values, tmp_path, CONFIG)
    cfg = PyFileConfigLoader(path.name, path=str(tmp_path)).load_config()
    roles = {r["name"]: r for r in cfg.JupyterHub.load_roles}
    instructors = roles["cnbi-instructor"]
    assert "custom:cnbi:reservations" in instructors["scopes"]
    assert instructors["users"] == ["ada", "boss"] and instructors["groups"] == ["instructors"]


def test_forgotten_set_file_stops_the_hub_with_a_clear_message(tmp_path):
    values = load(VALUES)
    placeholder = tmp_path / "placeholder.py"
    placeholder.write_text(values["hub"]["extraFiles"]["cnbi-config"]["stringData"])
    path = z2jh_like_config_file(values, tmp_path, placeholder)
    with pytest.raises(RuntimeError, match="--set-file hub.extraFiles.cnbi-config.stringData"):
        PyFileConfigLoader(path.name, path=str(tmp_path)).load_config()


# --- OpenShift ------------------------------------------------------------------------


def test_openshift_route_points_at_the_proxy():
    route = load(HELM / "openshift" / "route.yaml")
    assert route["apiVersion"] == "route.openshift.io/v1" and route["kind"] == "Route"
    assert route["spec"]["to"] == {"kind": "Service", "name": "proxy-public", "weight": 100}
    assert route["spec"]["port"] == {"targetPort": "http"}
    assert route["spec"]["tls"]["termination"] in {"edge", "reencrypt"}


# where the z2jh chart's defaults pin a UID/GID or a privileged container (its values.yaml),
# for the parts that run with our values (userScheduler is off on OpenShift)
CHART_FIXED_IDS = [
    ("hub", "podSecurityContext", "fsGroup"),
    ("hub", "containerSecurityContext", "runAsUser"),
    ("hub", "containerSecurityContext", "runAsGroup"),
    ("proxy", "chp", "containerSecurityContext", "runAsUser"),
    ("proxy", "chp", "containerSecurityContext", "runAsGroup"),
    ("singleuser", "uid"),
    ("singleuser", "fsGid"),
    ("scheduling", "userPlaceholder", "containerSecurityContext", "runAsUser"),
    ("prePuller", "containerSecurityContext", "runAsUser"),
    ("prePuller", "pause", "containerSecurityContext", "runAsUser"),
]


@pytest.mark.parametrize("path", CHART_FIXED_IDS, ids=".".join)
def test_openshift_overlay_removes_the_charts_fixed_ids(path):
    node = load(OPENSHIFT)
    for key in path[:-1]:
        node = node[key]
    assert path[-1] in node and node[path[-1]] is None  # null deletes the chart default


def test_openshift_overlay_has_no_privileged_init_and_no_ingress():
    v = variants()["openshift"]
    assert v["singleuser"]["cloudMetadata"]["blockWithIptables"] is False
    assert v["scheduling"]["userScheduler"]["enabled"] is False
    assert v["ingress"]["enabled"] is False


def test_readme_names_every_file():
    readme = (HELM / "README.md").read_text()
    for path in yaml_files():
        assert str(path.relative_to(HELM)) in readme, path


def test_coursereservation_crd_takes_what_the_service_writes():
    from cnbi_spawner import reservations as R

    r = R.Reservation(
        "resv-1", "uai-intro", "small", 30,
        R.parse_time("2026-03-02T09:00:00Z", "start"), R.parse_time("2026-03-02T11:00Z", "end"),
        "prof", "Lecture 3",
    )  # fmt: skip
    obj = R.to_resource(r, "jhub")
    obj["status"] = {"admitted": 2, "warmed": 30, "admittedUsers": ["a", "b"]}
    schema = crd_schema(R.GROUP)
    jsonschema.validate(obj, schema)
    bad = copy.deepcopy(obj)
    bad["spec"]["seats"] = 0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    assert R.PLURAL == crd(R.GROUP)["spec"]["names"]["plural"]
