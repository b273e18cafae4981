"""Production JupyterHub configuration for cnbi-spawner.

Every value comes from an environment variable (``CNBI_*``) with a sane default, so
the same file serves the Helm chart (``hub.extraEnv``), a VM install and ``make demo``.
The ``cnbi`` service loads this file too (``--config``), so registry, size and
culling settings live in one place.
"""

import json
import os
import shlex

from cnbi_spawner.anonymous import ANONYMOUS_GROUP
from cnbi_spawner.guest_pages import TEMPLATE_VAR, TEMPLATES, GuestMark
from cnbi_spawner.hub_database import use_sqlite_wal
from cnbi_spawner.lab_deadline import HANDLERS as DEADLINE_HANDLERS
from cnbi_spawner.service.app import service_role
from cnbi_spawner.service.pool import pool_role
from cnbi_spawner.service.reservation_book import CUSTOM_SCOPES as RESERVATION_SCOPES
from cnbi_spawner.service.reservation_book import instructor_role
from cnbi_spawner.service.sessions import learner_role

c = get_config()  # noqa: F821 (provided by the traitlets config loader)


def env(name, default=""):
    return os.environ.get(name, default)


def env_int(name, default):
    return int(env(name, str(default)))


def env_float(name, default):
    return float(env(name, str(default)))


def env_bool(name, default):
    return env(name, "true" if default else "false").strip().lower() in ("1", "true", "yes")


def env_list(name, default):
    return [item for item in env(name, default).replace(",", " ").split() if item]


NAMESPACE = env("CNBI_NAMESPACE", "default")  # where pods, PVCs and CustomNBImages live
GUEST_GROUP = env("CNBI_ANONYMOUS_GROUP", ANONYMOUS_GROUP)  # the guests' hub group
SERVICE_URL = env("CNBI_SERVICE_URL", "http://127.0.0.1:10101")  # where the cnbi service listens

# --- Hub process -------------------------------------------------------------
c.JupyterHub.ip = env("CNBI_HUB_IP", "0.0.0.0")
c.JupyterHub.port = env_int("CNBI_HUB_PORT", 8000)
# SQLite is fine for a demo; use PostgreSQL in production:
#   CNBI_DB_URL=postgresql+psycopg://jupyterhub:secret@db:5432/jupyterhub
# Unset: the hub's default (SQLite, or the Helm chart's hub.db settings) is kept.
if env("CNBI_DB_URL"):
    c.JupyterHub.db_url = env("CNBI_DB_URL")
# SQLite commits without an fsync each (WAL; see cnbi_spawner.hub_database for the trade)
if env_bool("CNBI_SQLITE_WAL", True):
    use_sqlite_wal()
c.JupyterHub.spawner_class = "cnbi"
c.JupyterHub.authenticator_class = "tmplogin"
# Spawns in flight at once. A lecture hall arriving together needs hundreds: with the
# hub's stock 100, the launch-storm benchmark (1000 learners in 60 s) lost 41 % to 429s.
c.JupyterHub.concurrent_spawn_limit = env_int("CNBI_CONCURRENT_SPAWN_LIMIT", 500)
c.JupyterHub.active_server_limit = env_int("CNBI_ACTIVE_SERVER_LIMIT", 0)
c.JupyterHub.cleanup_servers = False  # pods outlive hub restarts; the hub re-attaches
if env("CNBI_PROXY_COMMAND"):
    c.ConfigurableHTTPProxy.command = shlex.split(env("CNBI_PROXY_COMMAND"))
# Activity comes from the servers (the learner's own, c.LearnerLab.learner_activity), not
# from every request the proxy forwards: an open JupyterLab tab would never be idle
if not env_bool("CNBI_PROXY_ACTIVITY", False):
    c.JupyterHub.proxy_class = "cnbi_spawner.activity_proxy.LearnerActivityProxy"

# --- Guests and signed links: read by the hub and the cnbi service alike -------------
c.GuestPolicy.anonymous_group = GUEST_GROUP
# CNBI_LINK_SIGNING_KEY (read by LinkSigning itself): when set, links must be signed.
# Guests' hub pages name the course and hide the hub's machinery (c.GuestPages.enabled)
c.JupyterHub.template_paths = [str(TEMPLATES), *c.JupyterHub.get("template_paths", [])]
c.JupyterHub.template_vars = {**c.JupyterHub.get("template_vars", {}), TEMPLATE_VAR: GuestMark(c)}

# --- Anonymous logins (/tmplogin); TmpLoginMixin settings apply to any authenticator using it
c.TmpLoginMixin.reuse_sessions = env_bool("CNBI_REUSE_SESSIONS", True)
c.TmpLoginMixin.per_client_rate = env_float("CNBI_PER_CLIENT_RATE", 300)
c.TmpLoginMixin.global_rate = env_float("CNBI_GLOBAL_RATE", 1200)
c.TmpLoginMixin.max_anonymous_users = env_int("CNBI_MAX_ANONYMOUS_USERS", 0)
# proxies in front of the hub that append to X-Forwarded-For (CHP is one; add ingress)
c.TmpLoginMixin.trusted_proxy_count = env_int("CNBI_TRUSTED_PROXY_COUNT", 1)

# --- Known images -------------------------------------------------------------
c.ImageRegistry.namespaces = env_list("CNBI_IMAGE_NAMESPACES", NAMESPACE)
c.ImageRegistry.label_selector = env("CNBI_IMAGE_LABEL", "opendatahub.io/notebook-image=true")
c.ImageRegistry.watch_imagestreams = env_bool("CNBI_WATCH_IMAGESTREAMS", True)

# --- Pods -----------------------------------------------------------------------
c.KubeSpawner.namespace = NAMESPACE
c.KubeSpawner.start_timeout = env_int("CNBI_START_TIMEOUT", 300)
c.KubeSpawner.http_timeout = env_int("CNBI_HTTP_TIMEOUT", 120)
# KubeSpawner's 3 s per pod create/delete is spent in the hub's own busy event loop during a
# lecture-hall burst: the create is retried, finds its own pod (409), deletes it and starts
# over (benchmarks/README.md: B1 headline with --api-timeout 30, session 6)
K8S_REQUEST_TIMEOUT = env_int("CNBI_K8S_REQUEST_TIMEOUT", 30)
c.KubeSpawner.k8s_api_request_timeout = K8S_REQUEST_TIMEOUT
c.KubeSpawner.k8s_api_request_retry_timeout = 4 * K8S_REQUEST_TIMEOUT
c.KubeSpawner.storage_pvc_ensure = env_bool("CNBI_STORAGE", False)
c.KubeSpawner.storage_capacity = env("CNBI_STORAGE_CAPACITY", "1Gi")
# The learner-lab extension reaches each pod through an init container of this image (an
# image with cnbi-spawner, normally the hub's own); unset: c.LearnerLab.path instead
c.LearnerLab.init_image = env("CNBI_LEARNER_LAB_IMAGE", "")
c.ResourcePolicy.default_size = env("CNBI_DEFAULT_SIZE", "small")
c.ResourcePolicy.anonymous_max_size = env("CNBI_ANONYMOUS_MAX_SIZE", "medium")

# --- The cnbi service: culler, catalog, builds, health, metrics -----------------
c.ServiceSettings.namespace = NAMESPACE
c.CullerSettings.cull_every = env_float("CNBI_CULL_EVERY", 60)
c.CullerSettings.anonymous_idle_timeout = env_float("CNBI_ANONYMOUS_IDLE_TIMEOUT", 600)
c.CullerSettings.anonymous_max_age = env_float("CNBI_ANONYMOUS_MAX_AGE", 6 * 3600)
c.CullerSettings.named_idle_timeout = env_float("CNBI_NAMED_IDLE_TIMEOUT", 3600)
c.CullerSettings.dry_run = env_bool("CNBI_CULL_DRY_RUN", False)
c.CullerSettings.warn_lead = env_float("CNBI_CULL_WARN_LEAD", 120)
# the learner's JupyterLab asks the hub for the culler's deadline of its server
c.JupyterHub.extra_handlers = [*c.JupyterHub.get("extra_handlers", []), *DEADLINE_HANDLERS]

# --- Warm pools: ready servers per course, handed out at /tmplogin (docs: lecture hall)
# CNBI_POOL_TARGETS is JSON, e.g. {"uai-intro": 20} or {"uai-intro": {"small": 20}}.
POOL_TARGETS = json.loads(env("CNBI_POOL_TARGETS", "{}"))
c.PoolSettings.targets = POOL_TARGETS
c.PoolSettings.max_concurrent_starts = env_int("CNBI_POOL_MAX_STARTS", 10)

# --- Class reservations: instructors book seats of a course (docs: reservations)
# CNBI_RESERVATION_SEATS is JSON, e.g. {"small": 200, "gpu": 8}; sizes not listed get
# their seats from the cluster's nodes (rbac-reservations-nodes.yaml).
c.ReservationSettings.seats = json.loads(env("CNBI_RESERVATION_SEATS", "{}"))
RESERVATIONS_WARM_POOL = env_bool("CNBI_RESERVATION_WARM_POOL", False)
c.ReservationSettings.warm_pool = RESERVATIONS_WARM_POOL
c.ReservationAdmission.namespace = NAMESPACE  # the hub reads them where the service writes

c.JupyterHub.custom_scopes = {
    "custom:cnbi:builds": {"description": "Request and follow custom course image builds."},
    **RESERVATION_SCOPES,
}
service_env = {
    name: value
    for name, value in os.environ.items()
    if name.startswith("CNBI_") or name in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST",
                                           "KUBERNETES_SERVICE_PORT", "NO_PROXY", "PATH")
}  # fmt: skip
c.JupyterHub.services = [
    {
        "name": "cnbi",
        "url": SERVICE_URL,
        "command": ["cnbi-hub", "service", "--config", __file__],
        "environment": service_env,
        "oauth_no_confirm": True,
        # browser logins to the service carry these scopes (for users who have them)
        "oauth_client_allowed_scopes": ["custom:cnbi:builds", *RESERVATION_SCOPES],
        "display": True,
    }
]
c.JupyterHub.load_roles = [
    service_role("cnbi"),
    {
        # course authors (members of this group) may browse the catalog and request builds
        "name": "cnbi-course-authors",
        "scopes": ["access:services!service=cnbi", "custom:cnbi:builds"],
        "groups": [env("CNBI_AUTHORS_GROUP", "course-authors")],
    },
    # learners may ask the service why their own server failed (api/sessions/me[/logs])
    learner_role(groups=[GUEST_GROUP]),
    # instructors may book classes; JupyterHub's admin role cannot carry custom scopes,
    # so admins get this role by name (helm-values' extraConfig adds hub.config's
    # Authenticator.admin_users; elsewhere pass users=[...] or use the group)
    instructor_role(groups=[env("CNBI_INSTRUCTORS_GROUP", "instructors")]),
]
if POOL_TARGETS or RESERVATIONS_WARM_POOL:  # the service creates pool users, starts servers
    c.JupyterHub.load_roles.append(pool_role("cnbi", anonymous_group=GUEST_GROUP))
