"""HTTP front of the dev cluster: the Kubernetes REST API over tornado.

Turns requests into ``Store`` calls and ``Store`` answers into the bodies, status codes and
watch streams kube-apiserver sends (see /work/shared/KUBE_API_SUBSET.md): JSON everywhere,
``Status`` objects for errors (single line, ``Content-Type: application/json``), watches
as chunked ``{"type":…,"object":…}\\n`` lines that end at ``timeoutSeconds``, 410 as a
200 stream with one ``ERROR`` event. Also: discovery, ``/version``, ``/healthz``,
``pods/{name}/log``, and the admin endpoints under ``/_devcluster/`` (faults, compaction,
images). Every request needs ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import random
from pathlib import Path
from typing import Protocol

import yaml
from tornado import web
from tornado.iostream import StreamClosedError

from . import openapi, tables
from . import resources as R
from .apply import apply
from .discovery import VERSION_INFO, discovery
from .faults import Faults
from .kubelet import Kubelet
from .routes import Route, parse_path
from .schema import unknown_fields
from .selectors import Selector, SelectorError
from .store import Store, dumps

log = logging.getLogger("cnbi.devcluster")

TRUE = ("true", "True", "1")
DEFAULT_WATCH_TIMEOUT = (1800, 3600)  # kube-apiserver: minRequestTimeout * [1, 2)


class Cluster(Protocol):
    """What the HTTP front needs of the cluster it serves (``cluster.DevCluster`` is one;
    naming it here, not importing it, keeps the imports pointing one way: cluster -> server)."""

    token: str
    store: Store
    faults: Faults
    kubelet: Kubelet
    bookmark_interval: float

    @property
    def missing_images(self) -> set[str]: ...

    def set_missing(self, repository: str, missing: bool = True) -> None: ...

    def add_image(self, repository: str, path: Path | str) -> None: ...


class BaseHandler(web.RequestHandler):
    @property
    def cluster(self) -> Cluster:
        return self.settings["devcluster"]

    def check_xsrf_cookie(self) -> None:  # an API, not a browser app
        pass

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-cache, private")

    def send_json(self, body: object, code: int = 200) -> None:
        self.set_status(code)
        self.finish(body if isinstance(body, bytes) else dumps(body))

    def send_error_status(self, err: R.ApiError) -> None:
        self.clear_header("Content-Encoding")
        self.set_header("Content-Type", "application/json")
        self.send_json(err.status(), err.code)

    def authorized(self) -> bool:
        token = self.cluster.token
        if not token:
            return True
        header = self.request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip(), token)

    def write_error(self, status_code: int, **kwargs) -> None:
        reason = {405: "MethodNotAllowed", 404: "NotFound"}.get(status_code, "InternalError")
        self.send_json(R.ApiError(status_code, reason, self._reason).status(), status_code)

    def body_json(self) -> object:
        if not self.request.body:
            raise R.bad_request("the request body is empty")
        try:
            return json.loads(self.request.body)
        except ValueError as e:
            raise R.bad_request(f"the request body is not valid JSON: {e}") from None

    def body_yaml(self) -> object:
        """The body as YAML (a superset of JSON), one document."""
        if not self.request.body:
            raise R.bad_request("the request body is empty")
        try:
            return yaml.safe_load(self.request.body)
        except yaml.YAMLError as e:
            raise R.bad_request(f"the request body is not valid YAML: {e}") from None


class ApiHandler(BaseHandler):
    """Everything under /api and /apis."""

    async def prepare(self) -> None:
        if not self.authorized():
            self.send_json(
                {**R.ApiError(401, "Unauthorized", "Unauthorized").status(), "details": None}, 401
            )
            return
        try:
            await self.cluster.faults.gate()
        except R.ApiError as e:
            self.send_error_status(e)

    async def _dispatch(self, method: str) -> None:
        route = parse_path(self.request.path)
        try:
            if route is None:
                raise R.ApiError(
                    404, "NotFound", "the server could not find the requested resource"
                )
            if route.discovery:
                if method != "GET":
                    raise R.ApiError(
                        405, "MethodNotAllowed", "the server does not allow this method"
                    )
                return self.send_json(self.discovery(route))
            rt = self.cluster.store.lookup(route.group, route.version, route.plural)
            if rt is None:
                raise R.ApiError(
                    404, "NotFound", "the server could not find the requested resource"
                )
            if rt.namespaced and route.namespace is None and route.name is not None:
                raise R.ApiError(
                    404, "NotFound", "the server could not find the requested resource"
                )
            await self.handle(method, route, rt)
        except R.ApiError as e:
            if not self._finished:
                self.send_error_status(e)
        except SelectorError as e:
            self.send_error_status(R.bad_request(str(e)))

    async def get(self) -> None:
        await self._dispatch("GET")

    async def post(self) -> None:
        await self._dispatch("POST")

    async def put(self) -> None:
        await self._dispatch("PUT")

    async def patch(self) -> None:
        await self._dispatch("PATCH")

    async def delete(self) -> None:
        await self._dispatch("DELETE")

    def arg(self, name: str, default: str | None = None) -> str | None:
        return self.get_query_argument(name, default)

    async def handle(self, method: str, route: Route, rt: R.ResourceType) -> None:
        store = self.cluster.store
        ns = route.namespace or ""
        sub = route.subresource
        if sub not in (None, "status", "log") or (sub == "status" and not rt.status):
            raise R.ApiError(404, "NotFound", "the server could not find the requested resource")
        if sub == "log":
            if rt.kind != "Pod" or method != "GET":
                raise R.ApiError(
                    404, "NotFound", "the server could not find the requested resource"
                )
            return await self.send_log(store.get(rt, ns, route.name))
        if route.name is None:
            if method == "GET":
                selector = Selector.parse(
                    self.arg("labelSelector"), self.arg("fieldSelector"), rt.kind
                )
                if route.watch or self.arg("watch") in TRUE:
                    return await self.watch(rt, route.namespace, selector)
                return self.send_list(rt, route.namespace, selector)
            if method == "POST":
                body = self.checked_body(rt)
                return self.send_json(
                    store.as_version(rt, store.create(rt, ns, body, dry_run=self.dry_run())),
                    201,
                )
            if method == "DELETE":
                return self.delete_collection(rt, route.namespace)
            raise R.ApiError(405, "MethodNotAllowed", f"{method} is not allowed on a collection")
        name = route.name
        if route.watch:
            selector = Selector.parse("", f"metadata.name={name}", rt.kind)
            return await self.watch(rt, route.namespace, selector)
        if method == "GET":
            obj = store.get(rt, ns, name)
            if self.table_wanted():
                return self.send_json(self.as_table(rt, [store.as_version(rt, obj)]))
            return self.send_json(store.raw(rt, obj))
        if method == "PUT":
            obj = store.replace(
                rt, ns, name, self.checked_body(rt), status=sub == "status", dry_run=self.dry_run()
            )
            return self.send_json(store.as_version(rt, obj))
        if method == "PATCH" and self.request.headers.get("Content-Type", "").startswith(
            "application/apply-patch"
        ):
            if sub is not None:
                raise R.ApiError(
                    415, "UnsupportedMediaType", "apply to a subresource is not served"
                )
            return self.server_side_apply(rt, ns, name)
        if method == "PATCH":
            ctype = self.request.headers.get("Content-Type", "")
            body = self.body_json() if "json-patch" in ctype else self.checked_body(rt)
            obj = store.patch(
                rt,
                ns,
                name,
                body,
                ctype,
                status=sub == "status",
                dry_run=self.dry_run(),
            )
            return self.send_json(store.as_version(rt, obj))
        if method == "DELETE" and sub is None:
            opts = self.delete_options()
            obj = store.delete(rt, ns, name, **opts, dry_run=self.dry_run())
            return self.send_json(self.deleted_body(rt, obj))
        raise R.ApiError(405, "MethodNotAllowed", f"{method} is not allowed here")

    def server_side_apply(self, rt: R.ResourceType, ns: str, name: str) -> None:
        """``kubectl apply --server-side``: create or update ``name`` (``apply.py``)."""
        store = self.cluster.store
        config = self.checked_body(rt, yaml_ok=True)
        if not isinstance(config, dict) or not isinstance(config.get("metadata"), dict):
            raise R.bad_request("an apply configuration must be an object with metadata")
        if config["metadata"].get("name") not in (None, name):
            raise R.bad_request(
                f"the name of the object ({config['metadata'].get('name')}) does not match "
                f"the name on the URL ({name})"
            )
        try:
            current = store.get(rt, ns, name)
        except R.ApiError as e:
            if e.code != 404:
                raise
            current = None
        merged = apply(
            current and store.as_version(rt, current),
            {**config, "metadata": {**config["metadata"], "name": name}},
            manager=self.arg("fieldManager") or "",
            force=self.arg("force") in TRUE,
            api_version=rt.api_version,
            now=R.now_rfc3339(),
        )
        if current is None:
            created = store.create(
                rt, ns, merged, dry_run=self.dry_run(),
                managed_fields=merged["metadata"]["managedFields"],
            )  # fmt: skip
            return self.send_json(store.as_version(rt, created), 201)
        merged["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        obj = store.replace(rt, ns, name, merged, dry_run=self.dry_run())
        self.send_json(store.as_version(rt, obj))

    def checked_body(self, rt: R.ResourceType, *, yaml_ok: bool = False) -> object:
        """The JSON body, its unknown fields handled per ``fieldValidation`` (Strict: 400;
        Warn, the default: a ``Warning`` header each; Ignore: nothing). ``yaml_ok``: the
        body may be YAML (apply configurations)."""
        body = self.body_yaml() if yaml_ok else self.body_json()
        mode = self.arg("fieldValidation") or "Warn"
        if mode not in ("Ignore", "Warn", "Strict"):
            raise R.bad_request(f"fieldValidation must be Ignore, Warn or Strict, not {mode!r}")
        if mode == "Ignore" or not isinstance(body, dict):
            return body
        field_schema, resolve = openapi.field_schema(rt)
        unknown = unknown_fields(body, field_schema, resolve, root=rt.custom)
        if unknown and mode == "Strict":
            detail = ", ".join(f'unknown field "{f}"' for f in unknown)
            raise R.bad_request(
                f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                f"strict decoding error: {detail}"
            )
        for f in unknown:
            self.add_header("Warning", f'299 - "unknown field \\"{f}\\""')
        return body

    def table_wanted(self) -> bool:
        return tables.wants_table(self.request.headers.get("Accept", ""))

    def as_table(
        self, rt: R.ResourceType, objects: list[dict], *, list_meta: dict | None = None
    ) -> dict:
        """``objects`` as a ``Table`` (each watch event carries a one-row Table)."""
        crd_columns = None
        if rt.custom:
            crd = self.cluster.store._objects[R.CRD_TYPE.key].get(("", f"{rt.plural}.{rt.group}"))
            crd_columns = tables.printer_columns(crd, rt.version)
        meta = {"resourceVersion": (list_meta or {}).get("resourceVersion", "")}
        if list_meta and list_meta.get("continue"):
            meta["continue"] = list_meta["continue"]
        return tables.table(
            rt, objects, crd_columns=crd_columns, list_meta=meta,
            include_object=self.arg("includeObject") or "Metadata",
        )  # fmt: skip

    def dry_run(self) -> bool:
        values = self.get_query_arguments("dryRun")
        if any(v != "All" for v in values):
            raise R.bad_request(f"Invalid dryRun value {values!r}: only 'All' is supported")
        return bool(values)

    def delete_options(self) -> dict:
        body: dict = {}
        if self.request.body:
            try:
                body = json.loads(self.request.body) or {}
            except ValueError:
                raise R.bad_request("the DeleteOptions body is not valid JSON") from None
            if not isinstance(body, dict):
                raise R.bad_request("the DeleteOptions body must be a JSON object")
        grace = self.arg("gracePeriodSeconds", body.get("gracePeriodSeconds"))
        try:
            grace = None if grace is None else int(grace)
        except (TypeError, ValueError):
            raise R.bad_request(f"invalid gracePeriodSeconds: {grace!r}") from None
        propagation = self.arg("propagationPolicy", body.get("propagationPolicy"))
        if propagation not in (None, "Orphan", "Background", "Foreground"):
            raise R.bad_request(f"unsupported propagationPolicy {propagation!r}")
        if body.get("orphanDependents") is True:
            propagation = "Orphan"
        return {
            "grace": grace,
            "propagation": propagation,
            "preconditions": body.get("preconditions"),
        }

    def deleted_body(self, rt: R.ResourceType, obj: dict) -> dict:
        """Pods, services, PVCs, namespaces and custom objects come back; the rest get Status."""
        if rt.custom or rt.kind in ("Pod", "Service", "PersistentVolumeClaim", "Namespace"):
            return obj
        details = {
            "name": obj["metadata"]["name"],
            "kind": rt.plural,
            "uid": obj["metadata"]["uid"],
        }
        if rt.group:
            details["group"] = rt.group
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details,
        }

    def delete_collection(self, rt: R.ResourceType, namespace: str | None) -> None:
        store = self.cluster.store
        selector = Selector.parse(self.arg("labelSelector"), self.arg("fieldSelector"), rt.kind)
        opts = self.delete_options()
        dry = self.dry_run()
        items, rv, _, _ = store.list(rt, namespace, selector)
        out = []
        for obj in list(items):
            meta = obj["metadata"]
            try:
                out.append(
                    store.delete(rt, meta.get("namespace", ""), meta["name"], **opts, dry_run=dry)
                )
            except R.ApiError:
                continue
        self.send_json(
            {
                "kind": rt.list_kind,
                "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": rv},
                "items": out,
            }
        )

    def send_list(self, rt: R.ResourceType, namespace: str | None, selector: Selector) -> None:
        store = self.cluster.store
        limit = self.arg("limit")
        try:
            limit_n = int(limit) if limit else 0
        except ValueError:
            raise R.bad_request(f"invalid limit {limit!r}") from None
        items, rv, cont, remaining = store.list(
            rt, namespace, selector, limit=max(limit_n, 0), continue_token=self.arg("continue")
        )
        meta: dict = {"resourceVersion": rv}
        if cont:
            meta["continue"] = cont
            meta["remainingItemCount"] = remaining
        if self.table_wanted():
            return self.send_json(
                self.as_table(rt, [store.as_version(rt, o) for o in items], list_meta=meta)
            )
        head = dumps({"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta})
        if items and items[0].get("apiVersion") != rt.api_version:
            raw = [dumps(store.as_version(rt, o)) for o in items]
        else:
            raw = [store.raw(rt, o) for o in items]
        self.send_json(head[:-1] + b',"items":[' + b",".join(raw) + b"]}")

    async def watch(self, rt: R.ResourceType, namespace: str | None, selector: Selector) -> None:
        store, faults = self.cluster.store, self.cluster.faults
        timeout_arg = self.arg("timeoutSeconds")
        try:
            timeout = float(timeout_arg) if timeout_arg else random.uniform(*DEFAULT_WATCH_TIMEOUT)
        except ValueError:
            raise R.bad_request(f"invalid timeoutSeconds {timeout_arg!r}") from None
        bookmarks = self.arg("allowWatchBookmarks") in TRUE
        as_table = self.table_wanted()
        self.set_header("Content-Type", "application/json")
        try:
            watcher = store.watch(rt, namespace, selector, self.arg("resourceVersion"))
        except R.ApiError as e:  # 410 and friends: a 200 stream with one ERROR event
            self.finish(dumps({"type": "ERROR", "object": e.status()}) + b"\n")
            return
        self._watcher = watcher
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            await self.flush()
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                every = self.cluster.bookmark_interval
                wait = min(remaining, every) if bookmarks else remaining
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), wait)
                except TimeoutError:
                    if bookmarks and loop.time() < deadline:
                        mark = {
                            "kind": rt.kind,
                            "apiVersion": rt.api_version,
                            "metadata": {"resourceVersion": str(store.rv)},
                        }
                        self.write(dumps({"type": "BOOKMARK", "object": mark}) + b"\n")
                        await self.flush()
                    continue
                await faults.stall()
                chunk = []
                while item is not None:
                    kind, obj = item
                    body = store.as_version(rt, obj)
                    if as_table:  # one row per event, as the real API streams them
                        body = self.as_table(rt, [body], list_meta=body["metadata"])
                    chunk.append(
                        b'{"type":"' + kind.encode() + b'","object":' + dumps(body) + b"}\n"
                    )
                    item = watcher.queue.get_nowait() if not watcher.queue.empty() else False
                    if item is False:
                        break
                if chunk:
                    self.write(b"".join(chunk))
                    await self.flush()
                if item is None:
                    break  # closed by the server (drop_watches, fault, shutdown)
        except StreamClosedError:
            pass
        finally:
            store.unwatch(watcher)
        if not self._finished:
            try:
                self.finish()
            except StreamClosedError:
                pass

    def on_connection_close(self) -> None:
        self._following = False
        watcher = getattr(self, "_watcher", None)
        if watcher is not None:
            watcher.close()

    async def send_log(self, pod: dict) -> None:
        text = self.cluster.kubelet.read_log(pod, self.arg("container"))
        if text is None:
            container = self.arg("container") or pod["spec"]["containers"][0]["name"]
            raise R.bad_request(
                f'container "{container}" in pod "{pod["metadata"]["name"]}" is waiting to start'
            )
        tail = self.arg("tailLines")
        if tail:
            try:
                n = int(tail)
            except ValueError:
                raise R.bad_request(f"invalid tailLines {tail!r}") from None
            text = "".join(text.splitlines(keepends=True)[-n:]) if n > 0 else ""
        limit = self.arg("limitBytes")
        data = text.encode()
        if limit and limit.isdigit():
            data = data[: int(limit)]
        self.set_header("Content-Type", "text/plain")
        if self.arg("follow") not in TRUE:
            return self.finish(data)
        await self.follow_log(pod, data, len(text.encode()))

    async def follow_log(self, pod: dict, first: bytes, offset: int) -> None:
        """``follow=true``: stream what the container writes until it stops running."""
        kubelet, uid = self.cluster.kubelet, pod["metadata"]["uid"]
        path = kubelet.log_path(pod, self.arg("container"))
        self._following = True
        try:
            self.write(first)
            await self.flush()
            while self._following and kubelet.running(uid):
                await asyncio.sleep(0.2)
                with open(path, "rb") as f:
                    f.seek(offset)
                    chunk = f.read()
                if chunk:
                    offset += len(chunk)
                    self.write(chunk)
                    await self.flush()
        except (StreamClosedError, OSError):
            pass
        if not self._finished:
            with contextlib.suppress(StreamClosedError):
                self.finish()

    def discovery(self, route: Route) -> dict:
        api = self.request.path.rstrip("/").endswith("/api")
        return discovery(self.cluster.store.versions, route, api_root=api, host=self.request.host)


class VersionHandler(BaseHandler):
    def get(self) -> None:
        if not self.authorized():
            return self.send_json(R.ApiError(401, "Unauthorized", "Unauthorized").status(), 401)
        self.send_json(VERSION_INFO)


class OpenAPIHandler(BaseHandler):
    """``/openapi/v3`` (index), ``/openapi/v3/{api/v1|apis/G/V}`` and ``/openapi/v2`` (JSON)."""

    def get(self, which: str, rest: str | None) -> None:
        if not self.authorized():
            return self.send_json(R.ApiError(401, "Unauthorized", "Unauthorized").status(), 401)
        groups = openapi.by_group_version(list(self.cluster.store.versions.values()))
        docs = {key: openapi.group_version_doc(types) for key, types in groups.items()}
        if which == "v2":
            accept = self.request.headers.get("Accept", "")
            if accept and "json" not in accept and "*/*" not in accept:
                err = R.ApiError(
                    406, "NotAcceptable", f"only application/json is served, not {accept}"
                )
                return self.send_json(err.status(), 406)
            return self.send_json(openapi.v2_doc(docs))
        if not rest:
            return self.send_json(openapi.v3_index(docs))
        doc = docs.get(rest.strip("/"))
        if doc is None:
            err = R.ApiError(404, "NotFound", f"no OpenAPI v3 document for {rest!r}")
            return self.send_json(err.status(), 404)
        self.send_json(doc)


class HealthHandler(BaseHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain")
        if self.cluster.faults.mode == "503":
            self.set_status(503)
            return self.finish("paused")
        self.finish("ok")


class AdminHandler(BaseHandler):
    """``/_devcluster/faults[/pause|/resume|/drop-watches|/latency]``, ``/compact``, ``/images``,
    ``/missing-images`` (``GET``: the list; ``POST {"repository", "missing": bool}``)."""

    def prepare(self) -> None:
        if not self.authorized():
            self.send_json(R.ApiError(401, "Unauthorized", "Unauthorized").status(), 401)

    def get(self, what: str) -> None:
        c = self.cluster
        if what == "faults":
            return self.send_json(c.faults.state())
        if what == "images":
            return self.send_json({k: str(v) for k, v in c.images.items()})
        if what == "pods":
            return self.send_json(c.kubelet.describe())
        if what == "missing-images":
            return self.send_json(sorted(c.missing_images))
        raise web.HTTPError(404)

    def post(self, what: str) -> None:
        c = self.cluster
        try:
            if what == "faults/pause":
                c.faults.pause(self.get_query_argument("mode", "hang"))
            elif what == "faults/resume":
                c.faults.resume()
            elif what == "faults/drop-watches":
                return self.send_json({"dropped": c.faults.drop_watches()})
            elif what == "faults/latency":
                c.faults.latency = max(0.0, float(self.get_query_argument("seconds")))
            elif what == "compact":
                c.store.compact()
            elif what == "images":
                body = json.loads(self.request.body or b"{}")
                c.add_image(str(body["repository"]), body["path"])
            elif what == "missing-images":
                body = json.loads(self.request.body or b"{}")
                c.set_missing(str(body["repository"]), bool(body.get("missing", True)))
                return self.send_json(sorted(c.missing_images))
            else:
                raise web.HTTPError(404)
        except (ValueError, KeyError, web.MissingArgumentError) as e:
            return self.send_json(R.bad_request(f"bad admin request: {e}").status(), 400)
        self.send_json(c.faults.state())

    put = post


def _log_request(handler: web.RequestHandler) -> None:
    """Access log: server errors loudly, everything else at debug (reflectors poll a lot)."""
    status = handler.get_status()
    level = logging.WARNING if status >= 500 else logging.DEBUG
    if log.isEnabledFor(level):
        req = handler.request
        ms = 1000.0 * req.request_time()
        log.log(level, "%d %s %s %.1fms", status, req.method, req.uri, ms)


def make_app(cluster: Cluster) -> web.Application:
    return web.Application(
        [
            (r"/_devcluster/(.+)", AdminHandler),
            (r"/version/?", VersionHandler),
            (r"/openapi/(v2|v3)/?(.+)?", OpenAPIHandler),
            (r"/(?:healthz|livez|readyz)/?", HealthHandler),
            (r"/apis?(?:/.*)?", ApiHandler),
        ],
        devcluster=cluster,
        compress_response=False,
        log_function=_log_request,
        default_handler_class=ApiHandler,
    )
