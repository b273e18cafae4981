"""The service's Kubernetes edge: user storage (PVCs) and a reachability probe.

Owns: listing KubeSpawner's user PVCs (``component=singleuser-storage``) in one
namespace, deleting one PVC idempotently (404 = already gone), and a cheap
"is the API answering" call for ``/health``. Clients come from
:func:`cnbi_spawner.kube.make_api_client` (one place builds them).

RBAC the service needs in its namespace: ``persistentvolumeclaims``: list, delete
(plus what the image registry needs: ``imagestreams``: list, watch).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from .cull_policy import PVC_COMPONENT_SELECTOR

log = logging.getLogger("cnbi.kube")


class UserStorage:
    """KubeSpawner user PVCs in ``namespace``, through a kubernetes_asyncio ApiClient."""

    def __init__(self, api_client: client.ApiClient, namespace: str, timeout: float = 30) -> None:
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.timeout = timeout

    async def list_pvcs(self) -> list[dict]:
        """Every user-storage PVC, as plain dicts (paged with limit/continue)."""
        out: list[dict] = []
        token = None
        while True:
            kwargs: dict[str, Any] = {"label_selector": PVC_COMPONENT_SELECTOR, "limit": 500}
            if token:
                kwargs["_continue"] = token
            async with asyncio.timeout(self.timeout):
                resp = await self.core.list_namespaced_persistent_volume_claim(
                    self.namespace, **kwargs
                )
            for item in resp.items or []:
                meta = item.metadata
                out.append(
                    {
                        "metadata": {
                            "name": meta.name,
                            "labels": dict(meta.labels or {}),
                            "annotations": dict(meta.annotations or {}),
                            "creationTimestamp": (
                                meta.creation_timestamp.isoformat()
                                if meta.creation_timestamp
                                else None
                            ),
                        }
                    }
                )
            token = resp.metadata._continue if resp.metadata else None
            if not token:
                return out

    async def delete_pvc(self, name: str) -> bool:
        """Delete one PVC. True if deleted now, False if it was already gone."""
        try:
            async with asyncio.timeout(self.timeout):
                await self.core.delete_namespaced_persistent_volume_claim(name, self.namespace)
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        return True

    async def ping(self, timeout: float = 3) -> None:
        """Raise unless the API answers a cheap list in time (used by /health)."""
        await asyncio.wait_for(
            self.core.list_namespaced_persistent_volume_claim(
                self.namespace, limit=1, _request_timeout=timeout
            ),
            timeout,
        )
