"""The one place that builds ``kubernetes_asyncio`` API clients.

Order, as KubeSpawner's ``load_config`` does it, except that an explicit path wins:

1. ``kubeconfig`` argument (a file path), if given;
2. in-cluster service-account config, when ``KUBERNETES_SERVICE_HOST`` is set;
3. ``$KUBECONFIG`` read *now* (not at import time), else ``~/.kube/config``.

Each call returns a new ``ApiClient`` with its own ``Configuration`` (never the
library's global default), so a test or CLI run cannot leak settings into the hub.
The caller closes it (``await client.close()``).
"""

from __future__ import annotations

import os

from kubernetes_asyncio import client, config
from kubernetes_asyncio.config.config_exception import ConfigException


async def load_kube_config_into(
    configuration: client.Configuration, kubeconfig: str | None = None
) -> str:
    """Fill ``configuration`` from the first source that works; returns which one."""
    if kubeconfig:
        await config.load_kube_config(
            config_file=os.path.expanduser(kubeconfig), client_configuration=configuration
        )
        return kubeconfig
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            config.load_incluster_config(client_configuration=configuration)
            return "in-cluster"
        except ConfigException:
            pass
    path = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or os.path.expanduser(
        "~/.kube/config"
    )
    await config.load_kube_config(config_file=path, client_configuration=configuration)
    return path


async def make_api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """A fresh ``ApiClient`` configured by ``load_kube_config_into``."""
    configuration = client.Configuration()
    await load_kube_config_into(configuration, kubeconfig)
    return client.ApiClient(configuration=configuration)
