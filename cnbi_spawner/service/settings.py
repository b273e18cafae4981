"""The ``cnbi`` service's settings: ``ServiceSettings`` (the process: namespace, Kubernetes,
registry, public URL), ``CullerSettings`` (what the culler culls and how fast) and
``BuildSettings`` (the builds API).

Both are read from the config the service loads (``--config jupyterhub_config.py``, the
hub's own file). Who counts as a guest is ``c.GuestPolicy`` (:mod:`cnbi_spawner.anonymous`)
and how links are signed ``c.LinkSigning`` (:mod:`cnbi_spawner.signing`): the hub reads
those same sections, so the two processes cannot disagree. The image registry has its own
(``c.ImageRegistry``), rebuilds ``c.RebuildSettings``; the builds API's are ``BuildSettings``
below.

No I/O beyond reading the environment and the service-account namespace file for defaults.
"""

from __future__ import annotations

import os
from pathlib import Path

from traitlets import Bool, Float, Int, Unicode, default
from traitlets.config import Configurable

from .cull_policy import CullPolicy, Thresholds

SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _default_namespace() -> str:
    for var in ("CNBI_NAMESPACE", "POD_NAMESPACE"):
        if os.environ.get(var):
            return os.environ[var]
    if SA_NAMESPACE_FILE.exists():
        return SA_NAMESPACE_FILE.read_text().strip()
    return "default"


class ServiceSettings(Configurable):
    """The service process: where it works (namespace, Kubernetes) and what it runs."""

    namespace = Unicode(
        help="Kubernetes namespace of user pods and PVCs (default: $CNBI_NAMESPACE, "
        "$POD_NAMESPACE, the service account's namespace, else 'default')."
    ).tag(config=True)

    @default("namespace")
    def _namespace_default(self) -> str:
        return _default_namespace()

    kubeconfig = Unicode(
        "", help="Path to a kubeconfig file ('' : in-cluster, else $KUBECONFIG)."
    ).tag(config=True)
    kubernetes = Bool(
        True, help="Use the Kubernetes API (PVC deletion, health). Off: hub-only culling."
    ).tag(config=True)
    registry = Bool(True, help="Run the image registry (catalog, /api/images).").tag(config=True)
    registry_stale_limit = Float(
        300, help="/health fails when the registry has been stale for longer than this (s)."
    ).tag(config=True)
    public_hub_url = Unicode(
        help="Public hub root for launch links, e.g. https://hub.example.edu/ "
        "(default: $JUPYTERHUB_PUBLIC_URL, else the request's host + base URL)."
    ).tag(config=True)

    @default("public_hub_url")
    def _public_default(self) -> str:
        return os.environ.get("JUPYTERHUB_PUBLIC_URL", "")


class CullerSettings(Configurable):
    """What the culler stops and deletes, and how fast it works (:mod:`.cull_policy`)."""

    cull_every = Float(60, help="Seconds between cull passes (0: never cull).").tag(config=True)
    anonymous_idle_timeout = Float(
        600, help="Stop an anonymous learner's server idle for this many seconds (0: never)."
    ).tag(config=True)
    anonymous_max_age = Float(
        6 * 3600,
        help="Stop an anonymous learner's server this many seconds after it started, "
        "even if active (0: no limit). Also deletes server-less anonymous users this old.",
    ).tag(config=True)
    abandoned_grace = Float(
        600,
        help="Delete an anonymous user that has no server after this many seconds without "
        "activity (abandoned logins, failed spawns).",
    ).tag(config=True)
    named_idle_timeout = Float(
        3600, help="Stop a named (non-anonymous) user's server idle this long (0: never)."
    ).tag(config=True)
    named_max_age = Float(
        0, help="Stop a named user's server this many seconds after it started (0: no limit)."
    ).tag(config=True)
    warn_lead = Float(
        120,
        help="Seconds before a server's cull deadline (idle or maximum age) when its warn "
        "stage begins: the learner's open JupyterLab shows a warning (idle: with a Keep "
        "working button) and the culler logs it. 0: no warning.",
    ).tag(config=True)
    cull_named_users = Bool(
        False,
        help="Also delete named users whose servers are all gone and who were idle for "
        "named_idle_timeout. Off by default: named users are real people. Admins never.",
    ).tag(config=True)
    cull_named_servers = Bool(
        True, help="Cull named servers (user/server), not only default servers."
    ).tag(config=True)
    concurrency = Int(
        10, help="Hub API requests (and users handled) in flight at once during a cull pass."
    ).tag(config=True)
    dry_run = Bool(False, help="Log what would be culled, change nothing.").tag(config=True)

    def policy(self, *, anonymous_group: str, uuid_names: bool) -> CullPolicy:
        """The pure policy, with who-is-a-guest from ``c.GuestPolicy``."""
        return CullPolicy(
            anonymous=Thresholds(self.anonymous_idle_timeout, self.anonymous_max_age, True),
            named=Thresholds(self.named_idle_timeout, self.named_max_age, self.cull_named_users),
            abandoned_grace=self.abandoned_grace,
            anonymous_group=anonymous_group,
            uuid_names=uuid_names,
            cull_named_servers=self.cull_named_servers,
            warn_lead=self.warn_lead,
        )


class BuildSettings(Configurable):
    """Knobs of the builds API (``c.BuildSettings.*`` in the service config)."""

    max_in_progress = Int(
        3, help="Unfinished builds one user may have at once (-1: no limit)."
    ).tag(config=True)
    events_poll_interval = Float(
        0.5, help="Seconds between status checks behind the live events stream."
    ).tag(config=True)
    events_max_duration = Float(
        900, help="Close a live events stream after this many seconds (clients reconnect)."
    ).tag(config=True)
    launch_wait = Float(
        60,
        help="After Success, keep the events stream open this long for the image to "
        "reach the registry.",
    ).tag(config=True)
