"""JupyterLab defaults for learners' servers, set from the pod spec (no image rebuild).

JupyterLab 4 asks every new user "Would you like to get notified about official Jupyter
news?" (the ``@jupyterlab/apputils-extension:announcements`` plugin shows it while the
``fetchNews`` setting of ``@jupyterlab/apputils-extension:notification`` is ``"none"``). A
throw-away learner sees it on every launch. JupyterLab only takes such defaults from files
(``overrides.json`` in the image's ``share/jupyter/lab/settings``, or the user's settings
folder); ``LabApp.news_url=None`` stops the fetching but not the question, and page-config
``disabledExtensions`` passed on the command line is replaced by the on-disk list.

Policy: the spawner adds a Kubernetes ``postStart`` exec hook to the server's container that
writes each setting in ``LabSettings.user_settings`` as the user's own settings file
(``$JUPYTERLAB_SETTINGS_DIR``, else ``${JUPYTER_CONFIG_DIR:-$HOME/.jupyter}/lab/user-settings``,
``<package>/<plugin>.jupyterlab-settings``) **only when that file does not exist**, so a
choice the user made later is kept. Kubernetes marks the container running only after
``postStart`` finished, so the file is there before the first page load. An operator's own
``postStart`` hook (``KubeSpawner.lifecycle_hooks``) is left alone (then these defaults are
not written; say so in the log). Needs ``/bin/sh`` in the image (every Jupyter image has it).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping

from traitlets import Dict
from traitlets.config import Configurable

#: ``@scope/package:plugin`` as JupyterLab names plugins
PLUGIN_RE = re.compile(r"(@[a-z0-9][a-z0-9._-]*/)?[a-z0-9][a-z0-9._-]*:[a-z0-9][a-z0-9._-]*")
SETTINGS_DIR = (
    '"${JUPYTERLAB_SETTINGS_DIR:-${JUPYTER_CONFIG_DIR:-$HOME/.jupyter}/lab/user-settings}"'
)
NO_NEWS = {"@jupyterlab/apputils-extension:notification": {"fetchNews": "false"}}


class LabSettings(Configurable):
    """JupyterLab settings a learner's server starts with (``c.LabSettings.*``)."""

    user_settings = Dict(
        default_value=NO_NEWS,
        help="""
        {plugin id: {setting: value}} written as the user's JupyterLab settings when the
        server starts, unless the user already has a settings file for that plugin. The
        default answers JupyterLab's "get notified about official Jupyter news?" question
        with "no" (fetchNews "false"). {} writes nothing.
        """,
    ).tag(config=True)


def post_start_command(settings: Mapping[str, Mapping]) -> list[str]:
    """The ``postStart`` exec command writing ``settings`` (see the module docstring)."""
    lines = ["set -e", f"base={SETTINGS_DIR}"]
    for plugin, values in sorted(settings.items()):
        if not PLUGIN_RE.fullmatch(plugin) or not isinstance(values, Mapping):
            raise ValueError(f"not a JupyterLab plugin id with settings: {plugin!r}")
        package, _, name = plugin.partition(":")
        folder = shlex.quote(package)
        path = f'"$base"/{folder}/{shlex.quote(name + ".jupyterlab-settings")}'
        body = shlex.quote(json.dumps(dict(values), sort_keys=True))
        lines.append(
            f'[ -e {path} ] || {{ mkdir -p "$base"/{folder} && printf %s {body} > {path}; }}'
        )
    return ["/bin/sh", "-c", "\n".join(lines)]


def with_lab_settings(hooks: Mapping, settings: Mapping[str, Mapping]) -> dict | None:
    """``KubeSpawner.lifecycle_hooks`` with our ``postStart`` added; ``None`` when the
    operator has a ``postStart`` of their own (kept as is) or there is nothing to write."""
    if not settings:
        return dict(hooks)
    ours = {"exec": {"command": post_start_command(settings)}}
    current = hooks.get("postStart")
    if current is not None and current != ours:
        return None
    return {**hooks, "postStart": ours}
