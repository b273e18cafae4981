"""Pure pod-spec helpers for the kubelet: what to run, with which environment and mounts.

No I/O: the kubelet passes in the pod IP, folders and a ``lookup`` for Secret/ConfigMap data.
What the kubelet reports about a pod is ``podstatus``.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

#: lookup(kind "secret"|"configmap", namespace, name) -> decoded data ({} when missing)
Lookup = Callable[[str, str, str], dict[str, str]]

NODE = "devcluster-node"
DEFAULT_CMD = ["jupyterhub-singleuser"]


# The image reference grammar of the container runtimes (distribution/reference): an
# optional registry host[:port], slash-separated lowercase path components, then an
# optional :tag and an optional @algorithm:hex digest.
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_HOST = rf"(?:{_LABEL}(?:\.{_LABEL})*(?::[0-9]+)?)"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(
    rf"(?:{_HOST}/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[\w][\w.-]{0,127})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?"
)


def is_image_reference(ref: str) -> bool:
    """Whether ``ref`` is a well-formed image reference (what a runtime would try to pull);
    the name (without tag and digest) is at most 255 characters."""
    name = ref.split("@", 1)[0].rsplit(":", 1)[0] if ref else ref
    return bool(ref) and len(name) <= 255 and _REFERENCE.fullmatch(ref) is not None


def image_repository(ref: str) -> str:
    """``registry.example/a/b:tag`` or ``…@sha256:…`` -> ``registry.example/a/b``."""
    repo = ref.split("@", 1)[0]
    head, _, last = repo.rpartition("/")
    if ":" in last:
        last = last.split(":", 1)[0]
    return f"{head}/{last}" if head else last


def main_container(pod: dict) -> dict:
    containers = pod["spec"]["containers"]
    for c in containers:
        if serves_notebooks(c):
            return c
    return containers[0]


def container_port(c: dict) -> int:
    ports = c.get("ports") or []
    return int(ports[0].get("containerPort", 8888)) if ports else 8888


def rewrite_service_url(url: str, ip: str) -> str:
    """``http://0.0.0.0:8888/`` -> ``http://<ip>:8888/`` (the pod's own address)."""
    parts = urlsplit(url)
    netloc = ip + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def empty_dirs(pod: dict) -> list[str]:
    """Names of the pod's ``emptyDir`` volumes (the only volumes mounted at their
    ``mountPath``; a claim is the pod's home, see ``sandbox``)."""
    return [
        v["name"]
        for v in pod["spec"].get("volumes") or []
        if isinstance(v, dict) and v.get("name") and "emptyDir" in v
    ]


def mounts_of(c: dict, folders: dict[str, Path]) -> dict[str, Path]:
    """``{mountPath: folder}`` of container ``c`` for the volumes in ``folders`` (by name)."""
    return {
        m["mountPath"].rstrip("/") or "/": folders[m["name"]]
        for m in c.get("volumeMounts") or []
        if isinstance(m, dict) and m.get("name") in folders and m.get("mountPath")
    }


def in_mounts(value: str, mounts: dict[str, Path]) -> str:
    """``value`` (a path, a ``:``-separated path list, or ``--flag=path``) with each path under
    a mount path moved to the folder backing it: a process on this machine has no mount
    namespace, so ``/opt/x/data`` of a container is ``<pod folder>/volumes/x/data`` here."""
    if not mounts:
        return value
    flag, eq, rest = value.partition("=") if value.startswith("-") else ("", "", value)

    def move(path: str) -> str:
        for mount, folder in sorted(mounts.items(), key=lambda m: -len(m[0])):
            if path == mount or path.startswith(mount + "/"):
                return str(folder) + path[len(mount) :]
        return path

    return flag + eq + ":".join(move(part) for part in rest.split(":"))


def post_start_command(pod: dict) -> list[str] | None:
    """The main container's ``lifecycle.postStart.exec`` command, if it has one."""
    hook = (main_container(pod).get("lifecycle") or {}).get("postStart") or {}
    command = (hook.get("exec") or {}).get("command") if isinstance(hook, dict) else None
    return [str(a) for a in command] if command else None


def serves_notebooks(c: dict) -> bool:
    """Is the container a notebook server (KubeSpawner's port ``notebook-port``)?"""
    return any(p.get("name") == "notebook-port" for p in c.get("ports") or [])


def container_argv(
    c: dict, ip: str, port: int, *, bin_dir: Path, root: bool, mounts: dict[str, Path] | None = None
) -> list[str]:
    """The command line: command + args (default jupyterhub-singleuser), resolved in ``bin_dir``,
    paths under ``mounts`` moved (:func:`in_mounts`); jupyter commands also get
    ``--ip``/``--port`` (and ``--allow-root`` as root)."""
    argv = [
        in_mounts(str(a), mounts or {}) for a in (c.get("command") or []) + (c.get("args") or [])
    ] or list(DEFAULT_CMD)
    exe = argv[0]
    if "/" not in exe:
        local = bin_dir / exe
        argv[0] = str(local) if local.exists() else (shutil.which(exe) or exe)
    if Path(exe).name.startswith("jupyter"):
        argv += [f"--ip={ip}", f"--port={port}"]
        if root:
            argv.append("--allow-root")
    return argv


def container_env(
    pod: dict,
    c: dict,
    *,
    ip: str,
    home: Path,
    runtime_dir: Path,
    bin_dir: Path,
    lookup: Lookup,
    mounts: dict[str, Path] | None = None,
) -> dict[str, str]:
    """The container's environment: a clean base, ``envFrom``, ``env`` (values, fieldRef,
    secret/configmap keys via ``lookup(kind, namespace, name)``) with paths under ``mounts``
    moved (:func:`in_mounts`), and ``JUPYTERHUB_SERVICE_URL`` rebound to the pod's own IP."""
    meta = pod["metadata"]
    env = {
        "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "HOSTNAME": meta["name"],
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "JUPYTER_RUNTIME_DIR": str(runtime_dir),
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    fields = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta["uid"],
        "status.podIP": ip,
        "spec.nodeName": NODE,
        "status.hostIP": "127.0.0.1",
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
    }
    for src in c.get("envFrom") or []:
        ref = src.get("configMapRef") or src.get("secretRef")
        data = _ref(lookup, meta["namespace"], "secret" if "secretRef" in src else "configmap", ref)
        env.update({(src.get("prefix") or "") + k: v for k, v in data.items()})
    for item in c.get("env") or []:
        name = item.get("name")
        if not name:
            continue
        if "value" in item:
            env[name] = str(item["value"] if item["value"] is not None else "")
            continue
        source = item.get("valueFrom") or {}
        if "fieldRef" in source:
            env[name] = fields.get(source["fieldRef"].get("fieldPath", ""), "")
        for key in ("secretKeyRef", "configMapKeyRef"):
            if key in source:
                ref = source[key]
                data = _ref(lookup, meta["namespace"], key[: -len("KeyRef")].lower(), ref)
                if ref.get("key") in data:
                    env[name] = data[ref["key"]]
    if env.get("JUPYTERHUB_SERVICE_URL"):
        env["JUPYTERHUB_SERVICE_URL"] = rewrite_service_url(env["JUPYTERHUB_SERVICE_URL"], ip)
    if mounts:
        env = {name: in_mounts(value, mounts) for name, value in env.items()}
    return env


def _ref(lookup: Lookup, namespace: str, kind: str, ref: dict | None) -> dict[str, str]:
    if not ref or not ref.get("name"):
        return {}
    return lookup(kind, namespace, ref["name"])
