"""``DevCluster``: store + API server + kubelet + controllers, started and stopped as one.

Also owns the kubeconfig it writes, the image map (repository -> content folder), the
preloaded CRDs (``crds/`` in this package: the product's ``helm-values/crds/``) and the
in-process object API for tests (``create``/``get``/``list``/``replace``/``patch``/
``delete``; synchronous, they hand out deep copies). CRDs created through the API (or
``create``) start being served at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
import logging
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from pathlib import Path

import yaml
from tornado.httpserver import HTTPServer

from . import resources as R
from .faults import Faults
from .kubelet import Kubelet
from .selectors import Selector
from .server import make_app
from .store import Store

log = logging.getLogger("cnbi.devcluster")

CRD_DIR = Path(__file__).parent / "crds"
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public")


class DevCluster:
    """An embedded Kubernetes API + node; see the package docstring."""

    def __init__(
        self,
        state_dir: Path | str,
        *,
        port: int = 0,
        runtime: str = "process",
        images: dict[str, Path] | None = None,
        missing_images: Iterable[str] = (),
        token: str | None = None,
        tls: bool = False,
        history: int = 1000,
        crd_dir: Path | None = CRD_DIR,
        builds: bool = True,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.port = port
        self.runtime = runtime
        self.images: dict[str, Path] = {k: Path(v) for k, v in (images or {}).items()}
        self.token = token if token is not None else secrets.token_urlsafe(24)
        self.tls = tls
        self.store = Store(history=history)
        self.faults = Faults(self.store)
        self.kubelet = Kubelet(self.store, self.state_dir, self.images, runtime)
        self.kubelet.missing_images.update(missing_images)
        self.kubeconfig = self.state_dir / "kubeconfig.yaml"
        self.url = ""
        self._crd_dir = crd_dir
        self._builds = builds
        self._server: HTTPServer | None = None
        self._controllers: list[Callable[..., Awaitable]] = []
        self._tasks: list[asyncio.Task] = []
        self.started = False
        self.bookmark_interval = 5.0  # seconds between BOOKMARKs on watches that allow them
        self.event_ttl = 3600.0  # Events are deleted this long after they were last seen
        self.max_events = 20_000  # and the oldest beyond this many (kube-apiserver: --event-ttl)
        self._builds_added = False
        for ns in DEFAULT_NAMESPACES:
            self.store.create(R.NAMESPACE_TYPE, "", {"metadata": {"name": ns}})
        self.store.listeners.append(self._on_change)
        if crd_dir is not None and Path(crd_dir).is_dir():
            for path in sorted(Path(crd_dir).glob("*.yaml")):
                for doc in yaml.safe_load_all(path.read_text()):
                    if doc and doc.get("kind") == "CustomResourceDefinition":
                        self.store.create(R.CRD_TYPE, "", doc)

    # ---- lifecycle ---------------------------------------------------------------------
    async def start(self) -> DevCluster:
        if self.started:
            return self
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ssl_ctx = None
        if self.tls:
            from .tls import server_context  # cryptography only when TLS is asked for

            ssl_ctx, self._ca_pem = server_context(self.state_dir / "tls")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(512)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._server = HTTPServer(make_app(self), ssl_options=ssl_ctx, idle_connection_timeout=3600)
        self._server.add_sockets([sock])
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"
        self.write_kubeconfig(self.kubeconfig)
        self.kubelet.start()
        self.started = True
        if self._builds and not self._builds_added:
            with contextlib.suppress(ImportError):
                from .builds import controller_for

                self._controllers.append(controller_for(self))  # started just below
                self._builds_added = True
        for factory in self._controllers:
            self._start_controller(factory)
        self._tasks.append(asyncio.get_running_loop().create_task(self._expire_events()))
        log.info(
            "devcluster: API at %s (runtime %s), kubeconfig %s",
            self.url,
            self.runtime,
            self.kubeconfig,
        )
        return self

    async def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self.faults.resume()
        self.store.drop_watches()
        if self._server is not None:
            self._server.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.close_all_connections(), 5)
        await self.kubelet.stop()
        log.info("devcluster: stopped")

    async def __aenter__(self) -> DevCluster:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    # ---- configuration -----------------------------------------------------------------
    def write_kubeconfig(self, path: Path | str) -> Path:
        """Write a kubeconfig for this cluster (``load_kube_config`` accepts it)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        cluster: dict = {"server": self.url}
        if self.tls:
            import base64

            cluster["certificate-authority-data"] = base64.b64encode(self._ca_pem).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "devcluster",
            "clusters": [{"name": "devcluster", "cluster": cluster}],
            "users": [{"name": "devcluster", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "devcluster",
                    "context": {
                        "cluster": "devcluster",
                        "user": "devcluster",
                        "namespace": "default",
                    },
                }
            ],
            "preferences": {},
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    @property
    def missing_images(self) -> set[str]:
        """Repositories that fail to pull (ErrImagePull); every other well-formed image pulls."""
        return self.kubelet.missing_images

    def set_missing(self, repository: str, missing: bool = True) -> None:
        """Make ``repository`` (ref without tag/digest) fail to pull, or pull again."""
        if missing:
            self.missing_images.add(repository)
        else:
            self.missing_images.discard(repository)
        log.info("devcluster: image %s %s", repository, "missing" if missing else "pullable")

    def add_image(self, repository: str, path: Path | str) -> None:
        """Seed the homes of pods running ``repository`` (ref without tag/digest) from
        ``path``; a repository marked missing pulls from now on (it was "pushed")."""
        self.images[repository] = Path(path)
        self.missing_images.discard(repository)
        log.info("devcluster: image %s -> %s", repository, path)

    def add_controller(self, factory: Callable[..., Awaitable]) -> None:
        """Run ``await factory()`` (or ``factory(cluster)``) as a task while the cluster runs.

        A controller that crashes is logged and restarted after a second; it is cancelled
        on ``stop()``.
        """
        self._controllers.append(factory)
        if self.started:
            self._start_controller(factory)

    def _start_controller(self, factory: Callable[..., Awaitable]) -> None:
        takes_cluster = bool(inspect.signature(factory).parameters)

        async def supervise() -> None:
            while True:
                try:
                    await (factory(self) if takes_cluster else factory())
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("devcluster: controller %r crashed; restarting", factory)
                    await asyncio.sleep(1)

        self._tasks.append(asyncio.get_running_loop().create_task(supervise()))

    async def _expire_events(self, every: float = 30.0) -> None:
        """Delete Events older than ``event_ttl`` and beyond ``max_events`` (oldest first)."""
        while True:
            await asyncio.sleep(every)
            self.expire_events()

    def expire_events(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        events = self.store.list(R.EVENT_TYPE, None)[0]

        def seen(e: dict) -> float:
            stamp = (
                e.get("lastTimestamp") or e.get("eventTime") or e["metadata"]["creationTimestamp"]
            )
            return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()

        events.sort(key=seen)
        excess = max(0, len(events) - self.max_events)
        doomed = [e for i, e in enumerate(events) if i < excess or now - seen(e) > self.event_ttl]
        for e in doomed:
            with contextlib.suppress(R.ApiError):
                self.store.delete(R.EVENT_TYPE, e["metadata"]["namespace"], e["metadata"]["name"])
        return len(doomed)

    # ---- CRDs and namespaces -----------------------------------------------------------
    def _on_change(self, kind: str, rt: R.ResourceType, obj: dict, old: dict | None) -> None:
        if rt is R.CRD_TYPE:
            if kind == "DELETED":
                spec = obj.get("spec") or {}
                self.store.unregister(
                    spec.get("group", ""), (spec.get("names") or {}).get("plural", "")
                )
            else:
                for t in R.crd_resource_types(obj):
                    self.store.register(t)
                if kind == "ADDED":
                    self.store.update_internal(
                        R.CRD_TYPE, "", obj["metadata"]["name"], _established
                    )
        elif (
            rt is R.NAMESPACE_TYPE
            and kind == "MODIFIED"
            and obj["metadata"].get("deletionTimestamp")
        ):
            if not (old or {}).get("metadata", {}).get("deletionTimestamp"):
                with contextlib.suppress(RuntimeError):
                    asyncio.get_running_loop().create_task(
                        self._drain_namespace(obj["metadata"]["name"])
                    )

    async def _drain_namespace(self, ns: str) -> None:
        """Namespace controller: delete everything in ``ns``, then the namespace."""
        for _ in range(600):
            left = 0
            for rt in list(self.store.types.values()):
                if not rt.namespaced:
                    continue
                for obj in self.store.list(rt, ns)[0]:
                    left += 1
                    if not obj["metadata"].get("deletionTimestamp"):
                        with contextlib.suppress(R.ApiError):
                            self.store.delete(rt, ns, obj["metadata"]["name"])
            if not left:
                break
            await asyncio.sleep(0.1)
        self.store.finalize(R.NAMESPACE_TYPE, "", ns)

    # ---- in-process object API (tests, seeding) ----------------------------------------
    def resource(self, api_version: str, plural: str) -> R.ResourceType:
        group, _, version = api_version.rpartition("/")
        rt = self.store.lookup(group, version, plural)
        if rt is None:
            raise KeyError(f"no resource {plural} in {api_version}")
        return rt

    def create(self, api_version: str, plural: str, obj: dict, namespace: str = "") -> dict:
        rt = self.resource(api_version, plural)
        ns = (
            namespace
            or (obj.get("metadata") or {}).get("namespace")
            or ("default" if rt.namespaced else "")
        )
        return copy.deepcopy(self.store.create(rt, ns, obj))

    def get(self, api_version: str, plural: str, name: str, namespace: str = "default") -> dict:
        return copy.deepcopy(self.store.get(self.resource(api_version, plural), namespace, name))

    def list(
        self,
        api_version: str,
        plural: str,
        namespace: str | None = None,
        *,
        label_selector: str = "",
        field_selector: str = "",
    ) -> list[dict]:
        rt = self.resource(api_version, plural)
        sel = Selector.parse(label_selector, field_selector, rt.kind)
        return copy.deepcopy(self.store.list(rt, namespace, sel)[0])

    def replace(
        self,
        api_version: str,
        plural: str,
        obj: dict,
        namespace: str = "default",
        *,
        status: bool = False,
    ) -> dict:
        rt = self.resource(api_version, plural)
        return copy.deepcopy(
            self.store.replace(rt, namespace, obj["metadata"]["name"], obj, status=status)
        )

    def patch(
        self,
        api_version: str,
        plural: str,
        name: str,
        body: object,
        namespace: str = "default",
        *,
        content_type: str = "application/merge-patch+json",
        status: bool = False,
    ) -> dict:
        rt = self.resource(api_version, plural)
        return copy.deepcopy(
            self.store.patch(rt, namespace, name, body, content_type, status=status)
        )

    def delete(
        self,
        api_version: str,
        plural: str,
        name: str,
        namespace: str = "default",
        *,
        grace: int | None = None,
    ) -> dict:
        rt = self.resource(api_version, plural)
        return copy.deepcopy(self.store.delete(rt, namespace, name, grace=grace))

    def pod_info(self, name: str, namespace: str = "default") -> dict | None:
        """Where a running pod lives: ``{"ip", "home", "log", "pid"}`` (None if not running)."""
        return self.kubelet.pod_info(namespace, name)


def _established(crd: dict) -> None:
    now = R.now_rfc3339()
    names = (crd.get("spec") or {}).get("names") or {}
    crd["status"] = {
        "acceptedNames": names,
        "storedVersions": [
            v["name"] for v in (crd.get("spec") or {}).get("versions") or [] if v.get("storage")
        ],
        "conditions": [
            {
                "type": "NamesAccepted",
                "status": "True",
                "reason": "NoConflicts",
                "message": "no conflicts found",
                "lastTransitionTime": now,
            },
            {
                "type": "Established",
                "status": "True",
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
                "lastTransitionTime": now,
            },
        ],
    }
