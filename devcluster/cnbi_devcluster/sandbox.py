"""A pod's sandbox on this node: its folders, home, address, log and running containers.

A process here has no mount namespace, so a pod's file system is folders under the state
dir: ``pods/<namespace>/<name>-<uid[:8]>/`` holds one log per container, ``runtime/`` (the
``JUPYTER_RUNTIME_DIR``), ``volumes/<volume>/`` per ``emptyDir`` volume and ``home/``;
a pod that mounts a PersistentVolumeClaim has the claim's folder
``volumes/<namespace>/<claim>/`` as its home instead. A home still empty when the main
container first starts is seeded with the content folder of the image's repository.

This module owns those paths, the per-pod record (``PodSandbox``) and the ``LaunchSpec`` a
container starts from. It creates folders and copies files; it must not touch the store
or start processes (the kubelet does both).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from .podspec import Lookup, container_argv, container_env, empty_dirs, mounts_of
from .runtimes import Container, LaunchSpec, ProcessContainer


def pod_root(state_dir: Path, pod: dict) -> Path:
    """The pod's own folder (logs, runtime dir, emptyDir volumes, home without a claim)."""
    meta = pod["metadata"]
    return state_dir / "pods" / meta["namespace"] / f"{meta['name']}-{meta['uid'][:8]}"


def claim_dir(state_dir: Path, namespace: str, name: str) -> Path:
    """The folder of a PersistentVolumeClaim (the home of every pod that mounts it)."""
    return state_dir / "volumes" / namespace / name


@dataclass(frozen=True)
class PodFolders:
    root: Path
    home: Path
    #: emptyDir volume name -> its folder
    volumes: dict[str, Path]


@dataclass
class PodSandbox:
    """What this node holds for one pod, from its ADDED event until it is gone."""

    #: the pod is being deleted: its task stops what it waits for and ends
    deleting: bool = False
    folders: PodFolders | None = None
    #: the pod IP and the main container's log, once the main container was created
    ip: str | None = None
    log: Path | None = None
    #: the main container's launch spec (a restart reuses it: same IP, home and log)
    spec: LaunchSpec | None = None
    container: Container | None = None
    #: the init container running now
    init: ProcessContainer | None = None

    @property
    def home(self) -> Path | None:
        return self.folders.home if self.folders else None

    async def until_deleted(self) -> None:
        while not self.deleting:
            await asyncio.sleep(0.1)

    def prepare(self, pod: dict, state_dir: Path) -> PodFolders:
        """The pod's folders, created on the first call."""
        if self.folders is None:
            root = pod_root(state_dir, pod)
            volumes = {name: root / "volumes" / name for name in empty_dirs(pod)}
            self.folders = PodFolders(root, _home(pod, root, state_dir), volumes)
            for folder in volumes.values():
                folder.mkdir(parents=True, exist_ok=True)
        return self.folders


def _home(pod: dict, root: Path, state_dir: Path) -> Path:
    for vol in pod["spec"].get("volumes") or []:
        claim = (vol.get("persistentVolumeClaim") or {}).get("claimName")
        if claim:
            home = claim_dir(state_dir, pod["metadata"]["namespace"], claim)
            home.mkdir(parents=True, exist_ok=True)
            return home
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    return home


def seed_home(home: Path, content: Path | None, state_dir: Path) -> None:
    """Copy the image's ``content`` folder into ``home`` if that is still empty."""
    if content and Path(content).is_dir() and not any(home.iterdir()):
        state = state_dir.resolve()

        def skip_state_dir(folder: str, names: list[str]) -> list[str]:
            # a content folder may contain the state dir (e.g. both under tmp_path)
            return [n for n in names if (Path(folder) / n).resolve() == state]

        shutil.copytree(content, home, dirs_exist_ok=True, symlinks=True, ignore=skip_state_dir)


def launch_spec(
    pod: dict,
    c: dict,
    folders: PodFolders,
    *,
    ip: str,
    port: int,
    lookup: Lookup,
    command: bool = True,
    as_root: bool = False,
) -> LaunchSpec:
    """How container ``c`` of ``pod`` starts on ``ip:port``: environment, home, log and (with
    ``command``; a stub runs in this process) its command line, paths under its emptyDir
    mounts moved to their folders."""
    runtime_dir = folders.root / "runtime"
    runtime_dir.mkdir(parents=True, exist_ok=True)
    mounts = mounts_of(c, folders.volumes)
    bin_dir = Path(sys.executable).parent
    argv = (
        container_argv(c, ip, port, bin_dir=bin_dir, root=as_root, mounts=mounts) if command else []
    )
    env = container_env(
        pod,
        c,
        ip=ip,
        home=folders.home,
        runtime_dir=runtime_dir,
        bin_dir=bin_dir,
        lookup=lookup,
        mounts=mounts,
    )
    return LaunchSpec(
        argv=argv,
        env=env,
        cwd=folders.home,
        ip=ip,
        port=port,
        log_path=folders.root / f"{c['name']}.log",
        meta={"pod": pod["metadata"]["name"]},
    )
