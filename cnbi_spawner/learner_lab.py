"""The learner-lab extension on every learner's server, without rebuilding any course image.

Policy: when ``LearnerLab.enabled``, the spawner adds to each learner server's environment
the folder :data:`FILES` (``cnbi_spawner/learner-lab``: a prebuilt JupyterLab 4 extension,
built from ``labextension/`` with ``@jupyterlab/builder`` by ``make deps``, and its small
server extension ``cnbi_learner_lab``) as ``JUPYTER_PATH`` (``data/``: the labextension)
and ``JUPYTER_CONFIG_PATH`` (``config/``: enables the server extension and puts it on the
import path), plus the switches and the start time (``CNBI_LAB_*``, read by that server
extension). Deadlines are not passed: the extension asks the hub, which answers with the
culler's own rule (:mod:`cnbi_spawner.lab_deadline`).

Activity: with ``learner_activity`` the server reports only the learner's own activity to
the hub (not JupyterLab's background polling, which would keep an open tab's server active
for ever), every ``activity_interval`` seconds (``JUPYTERHUB_ACTIVITY_INTERVAL``); the
proxy's per-route activity, which counts the polling too, is left out by
:class:`cnbi_spawner.activity_proxy.LearnerActivityProxy`.

How the folder reaches the pod (one of two, chosen by ``LearnerLab.init_image``):

- **init container** (``init_image`` set, e.g. the hub image, which has this package): the
  pod gets an ``emptyDir`` volume, an init container of that image running
  ``cnbi-hub learner-lab <mount_path>`` (copies :data:`FILES` into the volume) and the volume
  mounted read-only at ``mount_path`` in the notebook container. Works with any course
  image on any cluster; costs the init container's start (the image is on the node once
  pulled) and about 100 kB per pod. :func:`pod_parts` builds the three objects.
- **a path the pod already sees** (``init_image`` empty): ``LearnerLab.path``, empty for
  this installation's own copy on the hub's file system (pods on the hub's machine, a
  hostPath or an image that has the hub's files at the same place).

An image that already has the extension installed keeps working: ``JUPYTER_PATH`` comes
first in Jupyter's search path, so JupyterLab loads this copy only (one extension of a
name), and the server extension is enabled once (one config key).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from traitlets import Bool, Dict, Integer, Unicode
from traitlets.config import Configurable

FILES = Path(__file__).with_name("learner-lab")
#: the built labextension's manifest: a copy without it is no extension
BUILT = Path("data", "labextensions", "cnbi-learner-lab", "package.json")
#: name of the init container and of its volume in the learner's pod
POD_NAME = "cnbi-learner-lab"
#: the init container's resources: the copy (``cnbi-hub learner-lab``) peaks at ~20 MB RSS
INIT_RESOURCES = {
    "requests": {"cpu": "10m", "memory": "32Mi"},
    "limits": {"cpu": "500m", "memory": "128Mi"},
}


class LearnerLab(Configurable):
    """The learner's JupyterLab extension (``c.LearnerLab.<option>``)."""

    enabled = Bool(
        True,
        help="""Put the learner-lab extension (temporary-session notice, Download my work,
        warning before an idle cull) on every learner server's path. False: servers get
        none of it.""",
    ).tag(config=True)

    notice = Bool(
        True,
        help="""Guests see a dismissible notice that the session is temporary and when it
        is removed (idle timeout and maximum age of the culler).""",
    ).tag(config=True)

    download = Bool(
        True,
        help="""Offer "Download my work": a zip of the files created or changed since the
        session started (hidden files and folders left out).""",
    ).tag(config=True)

    learner_activity = Bool(
        True,
        help="""The server reports only the learner's own activity to the hub: input in
        JupyterLab, running code, terminals; not the API requests an open JupyterLab tab
        makes every few seconds, which would keep an idle learner's server from ever being
        culled. False: jupyter_server's own activity (any API request) is reported.""",
    ).tag(config=True)

    activity_interval = Integer(
        60,
        help="""Seconds between the server's activity reports to the hub
        (JUPYTERHUB_ACTIVITY_INTERVAL; jupyterhub-singleuser's default is 300). Only a
        changed activity is sent. Keep it well below the idle timeouts and the culler's
        warn_lead.""",
    ).tag(config=True)

    path = Unicode(
        "",
        help="""Where the pod sees the learner-lab folder (cnbi_spawner/learner-lab of this
        installation). Empty: this installation's own path (pods on the hub's machine, or
        the hub image's files mounted at the same path).""",
    ).tag(config=True)

    init_image = Unicode(
        "",
        help="""Image of the init container that copies the learner-lab folder into each
        learner's pod (an emptyDir mounted at mount_path): an image with cnbi-spawner
        installed, normally your hub image. Empty: no init container; the pod must see the
        folder at `path`.""",
    ).tag(config=True)

    mount_path = Unicode(
        "/opt/cnbi-learner-lab",
        help="""Where the init container's copy is mounted (read-only) in the notebook
        container. Only used with init_image.""",
    ).tag(config=True)

    init_resources = Dict(
        default_value=INIT_RESOURCES,
        help="""Kubernetes resources of the init container ({"requests": {...}, "limits":
        {...}}). A namespace with a ResourceQuota on limits admits only pods whose every
        container, init containers included, has limits. The copy takes well under a
        second and about 20 MB; as the init container runs before the notebook container,
        these do not add to the pod's requests. {}: none set.""",
    ).tag(config=True)

    def folder(self) -> Path:
        """The learner-lab folder as the notebook container sees it."""
        if self.init_image:
            return Path(self.mount_path)
        return Path(self.path) if self.path else FILES

    def pod_parts(self) -> PodParts | None:
        """The init container, volume and mount delivering the folder; ``None`` without
        ``init_image`` (or when disabled)."""
        if not (self.enabled and self.init_image):
            return None
        return pod_parts(self.init_image, self.mount_path, self.init_resources)

    def environment(self) -> dict[str, str]:
        """The learner server's environment for this session (empty when disabled)."""
        if not self.enabled:
            return {}
        folder = self.folder()
        return {
            "JUPYTER_PATH": str(folder / "data"),
            "JUPYTER_CONFIG_PATH": str(folder / "config"),
            "JUPYTERHUB_ACTIVITY_INTERVAL": str(self.activity_interval),
            "CNBI_LAB_LEARNER_ACTIVITY": "1" if self.learner_activity else "0",
            "CNBI_LAB_NOTICE": "1" if self.notice else "0",
            "CNBI_LAB_DOWNLOAD": "1" if self.download else "0",
            "CNBI_LAB_STARTED": datetime.now(UTC).isoformat(),
        }


@dataclass(frozen=True, slots=True)
class PodParts:
    """What a pod needs to get the learner-lab folder from an init container."""

    init_container: dict
    volume: dict
    volume_mount: dict


def pod_parts(image: str, mount_path: str, resources: Mapping | None = None) -> PodParts:
    """Pure: the init container (``image`` copies :data:`FILES` to ``mount_path``, with
    ``resources``), the ``emptyDir`` it fills and the read-only mount for the notebook
    container."""
    if not mount_path.startswith("/") or "{" in mount_path or "}" in mount_path:
        raise ValueError(f"LearnerLab.mount_path must be an absolute path: {mount_path!r}")
    resources = dict(resources or {})
    if set(resources) - {"requests", "limits"} or not all(
        isinstance(v, Mapping) for v in resources.values()
    ):
        raise ValueError(
            f"LearnerLab.init_resources takes only 'requests' and 'limits' maps: {resources!r}"
        )
    init_container: dict[str, object] = {
        "name": POD_NAME,
        "image": image,
        "command": ["cnbi-hub", "learner-lab", mount_path],
        "volumeMounts": [{"name": POD_NAME, "mountPath": mount_path}],
    }
    if resources:
        init_container["resources"] = {k: dict(v) for k, v in resources.items()}
    return PodParts(
        init_container=init_container,
        volume={"name": POD_NAME, "emptyDir": {"sizeLimit": "64Mi"}},
        volume_mount={"name": POD_NAME, "mountPath": mount_path, "readOnly": True},
    )


def with_named(items: list[dict], item: dict) -> list[dict]:
    """``items`` with ``item`` in place of any entry of the same ``name`` (else appended)."""
    return [*(i for i in items if i.get("name") != item["name"]), item]


def copy_files(destination: Path) -> int:
    """Copy :data:`FILES` (without caches) into ``destination``; the number of files."""
    if not (FILES / BUILT).is_file():
        raise FileNotFoundError(
            f"{FILES} has no built extension ({BUILT}): install a cnbi-spawner wheel, or run "
            "`make deps` in a source checkout"
        )
    shutil.copytree(
        FILES, destination, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
    )
    return sum(1 for p in destination.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    """``cnbi-hub learner-lab DESTINATION``: the init container's copy step."""
    parser = argparse.ArgumentParser(
        prog="cnbi-hub learner-lab",
        description="Copy the learner-lab extension folder (what LearnerLab.init_image's "
        "init container does in every learner pod).",
    )
    parser.add_argument("destination", type=Path, help="folder to copy into (created)")
    args = parser.parse_args(argv)
    try:
        count = copy_files(args.destination)
    except OSError as e:
        print(f"cnbi-hub learner-lab: {e}", file=sys.stderr)
        return 1
    print(f"cnbi-hub learner-lab: copied {count} files to {args.destination}")
    return 0
