"""The learner-lab extension on every learner's server, without rebuilding any course image.

Policy: when ``LearnerLab.enabled``, the spawner adds to each learner server's environment
the folder :data:`FILES` (``cnbi_spawner/learner-lab``: a prebuilt JupyterLab 4 extension,
built from ``labextension/`` with ``@jupyterlab/builder`` by ``make deps``, and its small
server extension ``cnbi_learner_lab``) as ``JUPYTER_PATH`` (``data/``: the labextension)
and ``JUPYTER_CONFIG_PATH`` (``config/``: enables the server extension and puts it on the
import path), plus the session's facts (``CNBI_LAB_*``, read by that server extension):
guest or not (``c.GuestPolicy``), the idle timeout and maximum age the culler applies to this
kind of user (``c.CullerSettings``; ``0`` when culling is off), the warning lead, the
notice/download switches and the start time.

Where the folder is: ``LearnerLab.path`` as the pod sees it; empty means this package's own
copy on the hub's file system, right for pods on the hub's machine (the dev cluster) or a
pod that mounts the hub image's site-packages at the same path. An image that already has
the extension installed keeps working: JupyterLab loads one extension of a name.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from traitlets import Bool, Float, Unicode
from traitlets.config import Configurable

from .service.cull_policy import CullPolicy

FILES = Path(__file__).with_name("learner-lab")


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

    warn_lead = Float(
        120,
        help="""Seconds before the culler's idle deadline the open JupyterLab warns, with a
        "Keep working" button that reports activity to the hub. 0: no warning.""",
    ).tag(config=True)

    path = Unicode(
        "",
        help="""Where the pod sees the learner-lab folder (cnbi_spawner/learner-lab of this
        installation). Empty: this installation's own path (pods on the hub's machine, or
        the hub image's files mounted at the same path).""",
    ).tag(config=True)

    def environment(self, *, guest: bool, policy: CullPolicy, culling: bool) -> dict[str, str]:
        """The learner server's environment for this session (empty when disabled)."""
        if not self.enabled:
            return {}
        folder = Path(self.path) if self.path else FILES
        limits = policy.anonymous if guest else policy.named
        return {
            "JUPYTER_PATH": str(folder / "data"),
            "JUPYTER_CONFIG_PATH": str(folder / "config"),
            "CNBI_LAB_TEMPORARY": "1" if guest else "0",
            "CNBI_LAB_IDLE_TIMEOUT": f"{limits.idle_timeout if culling else 0:g}",
            "CNBI_LAB_MAX_AGE": f"{limits.max_age if culling else 0:g}",
            "CNBI_LAB_WARN_LEAD": f"{self.warn_lead:g}",
            "CNBI_LAB_NOTICE": "1" if self.notice else "0",
            "CNBI_LAB_DOWNLOAD": "1" if self.download else "0",
            "CNBI_LAB_STARTED": datetime.now(UTC).isoformat(),
        }
